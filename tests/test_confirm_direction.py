"""Confirming a behavioural direction (``--features L2~direction``): the patch round's
direction of a layer (own or transferred, ``patch/directions.safetensors``) goes through the
same pre-registered sequential test as a feature, its null arms the same per-row push along
random directions. On the tiny model a direction along the readout is confirmed, a random one
is not; a missing direction or a condition a direction cannot take is one clear error."""

from __future__ import annotations

import pytest
import torch
from test_confirm_planted import _cfg, _readout_direction

from featurepath.config import ConditionSpec, RunConfig
from featurepath.errors import ConfigError, DataError
from featurepath.pipeline.confirm import run_confirm
from featurepath.pipeline.controls import save_directions
from featurepath.rundir import RunDir


@pytest.fixture(scope="module")
def tiny_runtime():
    from featurepath.testing import tiny_llama, tiny_saes

    model, tok = tiny_llama()
    return model, tok, tiny_saes(model)


def _directions(run, model, tok) -> None:
    g = torch.Generator().manual_seed(11)
    z = torch.randn(model.config.hidden_size, generator=g)
    RunDir(run).patch.mkdir(parents=True)
    save_directions(RunDir(run).directions, {2: _readout_direction(model, tok),
                                             1: z / z.norm()})


def test_a_readout_direction_is_confirmed_and_a_random_one_is_not(tiny_runtime,
                                                                  tmp_path) -> None:
    model, tok, _ = tiny_runtime
    _directions(tmp_path, model, tok)
    res = run_confirm(tmp_path, _cfg(patch="value", value=3.0), runtime=tiny_runtime,
                      features=["L2~direction", "L1~direction"], progress=False)
    v = res.verdicts.set_index("feature")
    shown = v[["effect", "p_baseline", "null_draws", "null_exceed", "p_null", "q"]].to_string()
    assert v.loc["L2~direction", "significant"], shown
    assert not v.loc["L1~direction", "significant"], shown
    assert v.loc["L2~direction", "effect"] > 0 and (v["feature_id"] == -1).all()
    assert list(v["layer"]) == [2, 1]


def test_directions_need_the_patch_round_and_a_condition_they_can_take(tiny_runtime,
                                                                      tmp_path) -> None:
    with pytest.raises(DataError, match="needs the patch round's behavioural directions"):
        run_confirm(tmp_path / "a", _cfg(patch="scale", scale=3.0), runtime=tiny_runtime,
                    features=["L2~direction"], progress=False)
    model, tok, _ = tiny_runtime
    _directions(tmp_path / "b", model, tok)
    with pytest.raises(DataError, match=r"no direction for layer\(s\) \[3\]"):
        run_confirm(tmp_path / "b", _cfg(patch="scale", scale=3.0), runtime=tiny_runtime,
                    features=["L3~direction"], progress=False)
    with pytest.raises(ConfigError, match="is a direction, which has no risky mean"):
        run_confirm(tmp_path / "b", _cfg(patch="risky"), runtime=tiny_runtime,
                    features=["L2~direction"], progress=False)
    with pytest.raises(ConfigError, match="bad feature"):
        RunConfig.model_validate({"confirm": {"features": ["L2~directions"]}})
    assert RunConfig.model_validate({"confirm": {"features": ["L2~direction"]}})


def test_a_directions_sign_is_predicted_by_the_patch_round(tmp_path) -> None:
    import pandas as pd

    from featurepath.pipeline import confirm_plan as cp

    pd.DataFrame({"feature": ["L2~direction", "L2-5"], "condition": ["risky_up"] * 2,
                  "metric": ["p_stop"] * 2, "arm": ["direction", "feature"],
                  "effect": [-0.2, 0.3]}).to_parquet(RunDir(tmp_path).causal_tests)
    cond = ConditionSpec(name="risky_up", context="risky", patch="scale", scale=3.0)
    assert cp.predicted_sign(tmp_path, "L2~direction", cond) == (-1, "patch")
    assert cp.predicted_sign(tmp_path, "L2-5", cond) == (1, "patch")
