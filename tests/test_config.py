"""The run config: round-trips through YAML, refuses unknown keys, names the bad key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurepath.config import (
    ConditionSpec,
    RunConfig,
    base_config,
    config_from_dict,
    diff_configs,
    load_config,
    parse_feature_key,
    save_config,
    with_overrides,
)
from featurepath.errors import ConfigError


@settings(max_examples=40, deadline=None)
@given(trials=st.integers(1, 500), temp=st.floats(0, 2), seed=st.integers(0, 2**31),
       feats=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 70000)), max_size=5),
       method=st.sampled_from(["delta", "reconstruct"]))
def test_config_round_trips(tmp_path_factory, trials, temp, seed, feats, method):
    cfg = RunConfig(seed=seed)
    cfg.patch.trials = trials
    cfg.patch.sampling.temperature = temp
    cfg.patch.features = [f"L{a}-{b}" for a, b in feats]
    cfg.patch.method = method
    cfg.patch.conditions = [*cfg.patch.conditions,
                            ConditionSpec(name="x2", context="risky", patch="scale", scale=2.0)]
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg


def test_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="patch.colour: unknown key"):
        config_from_dict({"patch": {"colour": "red"}})
    with pytest.raises(ConfigError, match="play.games_per_condition"):
        config_from_dict({"play": {"games_per_condition": 0}})
    with pytest.raises(ConfigError, match="needs a scale"):
        config_from_dict({"patch": {"conditions": [{"name": "a", "context": "safe",
                                                    "patch": "scale"}]}})
    with pytest.raises(ConfigError, match="L<layer>-<id>"):
        parse_feature_key("12:345")
    bad = tmp_path / "bad.yaml"
    bad.write_text("patch: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_and_base(tmp_path):
    assert base_config(tmp_path) == RunConfig()
    cfg = with_overrides(RunConfig(), {"patch.trials": 7, "model": None})
    assert cfg.patch.trials == 7 and cfg.model == "embedded"
    save_config(cfg, tmp_path / "config.yaml")
    assert base_config(tmp_path).patch.trials == 7
    diffs = diff_configs(RunConfig().model_dump(), cfg.model_dump())
    assert diffs == ["patch.trials: 30 -> 7"]
