"""Planted calibration of ``featurepath confirm`` on the tiny model.

- Features whose decoder rows point along the readout direction (the final norm's gain times the
  unembedding of the stop option minus the continue option), and mixtures of it with a random
  direction at decreasing weight, are confirmed down to a stated cosine.
- Features whose decoder rows are fresh random directions of the same norm (unrelated to their
  encoder, so under the null they are exchangeable with the null directions) are confirmed at
  no more than the nominal rate.
- An A/A confirmation (scale 1: the clamp writes zero) confirms nothing.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from featurepath.config import ConditionSpec, RunConfig
from featurepath.errors import ConfigError
from featurepath.pipeline.confirm import run_confirm
from featurepath.rundir import RunDir

LAYER = 2
#: cosine of each planted decoder row with the readout direction
WEIGHTS = (1.0, 0.5, 0.3, 0.1, 0.05)
PLANTED = tuple(range(100, 100 + len(WEIGHTS)))
RANDOM = tuple(range(20, 44))  # 24 features whose decoder rows are fresh random directions


def _readout_direction(model, tok) -> torch.Tensor:
    from featurepath.tasks.slot_machine.readout import option_token_ids

    ids = option_token_ids(tok)
    W, g = model.lm_head.weight.detach(), model.model.norm.weight.detach()
    r = g * (W[ids["stop"]].mean(0) - W[ids["bet"]].mean(0))
    return r / r.norm()


@pytest.fixture(scope="module")
def planted():
    from featurepath.testing import tiny_llama, tiny_saes

    model, tok = tiny_llama()
    saes = tiny_saes(model)
    r = _readout_direction(model, tok)
    gen = torch.Generator().manual_seed(5)
    W = saes[LAYER].W_dec
    for f, w in zip(PLANTED, WEIGHTS, strict=True):
        z = torch.randn(W.shape[1], generator=gen)
        z = z - (z @ r) * r
        W[f] = (w * r + (1 - w * w) ** 0.5 * z / z.norm()) * W[f].norm()
    for f in RANDOM:
        z = torch.randn(W.shape[1], generator=gen)
        W[f] = z / z.norm() * W[f].norm()
    return model, tok, saes


def _cfg(**cond) -> RunConfig:
    cfg = RunConfig()
    cfg.patch.prompt_set = "states"
    cfg.patch.n_prompts = 6
    cfg.patch.components = "BASE"
    cfg.patch.conditions = [ConditionSpec(name="risky_baseline", context="risky"),
                            ConditionSpec(name="risky_up", context="risky", **cond)]
    return cfg


def _keys(ids) -> list[str]:
    return [f"L{LAYER}-{f}" for f in ids]


def test_planted_readout_features_are_confirmed(planted, tmp_path) -> None:
    res = run_confirm(tmp_path, _cfg(patch="value", value=2.0), runtime=planted,
                      features=_keys(PLANTED), progress=False)
    v = res.verdicts.set_index("feature")
    conf = [bool(v.loc[k, "significant"]) for k in _keys(PLANTED)]
    # measured: cos 1.0, 0.5, 0.3 confirmed (effects +0.47, +0.32, +0.23 in P(stop), at most 1
    # of 199 random directions as extreme); cos 0.1 and 0.05 (+0.14, +0.12) sit in the band
    assert conf[:3] == [True, True, True], v[["effect", "p_null", "q"]]
    assert conf[3:] == [False, False]
    assert list(v["effect"]) == sorted(v["effect"], reverse=True)
    assert (v.loc[_keys(PLANTED[:2]), "null_draws"] == 199).all()  # the cap for N = 5 tests
    # the pre-registration came first and its hash is in the verdicts
    pre = json.loads(RunDir(tmp_path).preregistration.read_text())
    sha = pre.pop("sha256")
    from featurepath.pipeline.confirm_plan import digest

    assert digest(pre) == sha == res.sha256 and (v["prereg_sha256"] == sha).all()
    assert pre["null_design"]["cap"] == 199 and pre["prompts"]["half"] == "confirm"
    import pandas as pd

    assert pd.read_parquet(RunDir(tmp_path).verdicts).attrs.get("prereg_sha256") == sha
    # confirm prompts are the held-out half, recorded as such
    split = pd.read_parquet(RunDir(tmp_path).split("confirm"))
    assert set(split["half"]) == {"confirm"} and len(split) == 6 * 2

    # resuming after a kill (verdicts and the last rounds lost) gives identical verdicts
    RunDir(tmp_path).verdicts.unlink()
    rounds = sorted((RunDir(tmp_path).confirm / "rounds").glob("*.parquet"))
    for p in rounds[-3:]:
        p.unlink()
    again = run_confirm(tmp_path, _cfg(patch="value", value=2.0), runtime=planted,
                        features=_keys(PLANTED), progress=False)
    assert again.resumed
    pd.testing.assert_frame_equal(again.verdicts, res.verdicts)
    # a changed pre-registration is a new confirmation: refused, the old one untouched
    with pytest.raises(ConfigError, match="new confirmation"):
        run_confirm(tmp_path, _cfg(patch="value", value=3.0), runtime=planted,
                    features=_keys(PLANTED), progress=False)


def test_random_decoder_rows_are_confirmed_at_no_more_than_the_nominal_rate(planted,
                                                                            tmp_path) -> None:
    res = run_confirm(tmp_path, _cfg(patch="value", value=2.0), runtime=planted,
                      features=_keys(RANDOM), progress=False)
    v = res.verdicts
    assert len(v) == 24 and not v["significant"].any(), v[["feature", "p_null", "q"]]
    # the null p-values are uniform: as many at or below 0.1 as a binomial(24, 0.1) allows
    k = int((v["p_null"] <= 0.1).sum())
    assert stats.binomtest(k, 24, 0.1, alternative="greater").pvalue > 0.01, k
    # most stop early: a null test settles in tens of draws, not the cap (959 for N = 24)
    assert v["null_draws"].median() < 80


def test_aa_confirmation_confirms_nothing(planted, tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # states prompts are held out: no builtin warning
        res = run_confirm(tmp_path, _cfg(patch="scale", scale=1.0), runtime=planted,
                          features=_keys(PLANTED[:2] + RANDOM[:2]), progress=False)
    v = res.verdicts
    assert not v["significant"].any()
    assert v["degenerate"].all() and set(v["test"]) == {"zero-size intervention"}
    assert (v["null_draws"] == 10).all() and (v["p_null"] == 1.0).all()
    assert np.all(np.abs(v["effect"]) <= 1e-6)


def test_planted_check_confirms_the_readout_direction_at_the_top_layer(planted, tmp_path) -> None:
    from featurepath.pipeline.confirm_check import planted_check, planted_feature

    cfg = _cfg(patch="scale", scale=3.0)
    feature = planted_feature(cfg, tmp_path, planted, "risky")
    assert feature.startswith("L3-")  # the tiny model's top SAE layer
    row = planted[2][3].W_dec[int(feature.split("-")[1])].clone()
    res = planted_check(tmp_path, cfg, planted, feature)
    v = res.verdicts.iloc[0]
    assert v["significant"] and v["null_draws"] == 99, v
    assert (tmp_path / "planted_check" / "confirm" / "verdicts.parquet").exists()
    assert not (tmp_path / "confirm").exists()  # the real confirmation's files are untouched
    assert torch.equal(planted[2][3].W_dec[int(feature.split("-")[1])], row)  # originals kept


def test_demo_confirm_stage_prints_verdicts_and_the_planted_check(planted, tmp_path) -> None:
    from featurepath.pipeline.demo import confirm_stage

    cfg = _cfg(patch="value", value=2.0)
    cfg.patch.features = _keys(RANDOM[:2])
    lines: list[str] = []
    confirm_stage(tmp_path, cfg, planted, False, lines.append)
    text = "\n".join(lines)
    assert "none of 2 pre-registered tests confirmed" in text, text
    assert "planted check: L3-" in text and "CONFIRMED" in text.split("planted check")[1]
    pre = json.loads(RunDir(tmp_path).preregistration.read_text())
    assert pre["candidates_from"] == "discover (the patched candidates)"


def test_top_n_from_the_real_screen_with_its_predicted_signs(planted, tmp_path) -> None:
    """The screen stage ranks every feature on the screen half; confirm takes its top 3 with
    the screen's signs and confirms the planted readout features among them (one-sided)."""
    from featurepath.pipeline.screen import run_screen

    cfg = _cfg(patch="value", value=2.0)
    run_screen(tmp_path, cfg, runtime=planted, progress=False)
    res = run_confirm(tmp_path, cfg, runtime=planted, top=3, progress=False)
    v = res.verdicts
    assert res.source == "screen" and len(v) == 3 and set(v["sign_source"]) == {"screen"}
    planted_top = v[v["feature"].isin(_keys(PLANTED[:2]))]
    assert len(planted_top) == 2 and (planted_top["predicted_sign"] == 1).all()
    assert planted_top["significant"].all(), v[["feature", "effect", "p_null", "q"]]
