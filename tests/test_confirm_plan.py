"""What a confirmation tests: the ranking it takes the top N from, the predicted signs, and the
pre-registration's hash (no model needed)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from featurepath.config import ConditionSpec, RunConfig
from featurepath.errors import ConfigError
from featurepath.pipeline import confirm_plan as cp
from featurepath.rundir import RunDir

AMP = ConditionSpec(name="risky_amplified", context="risky", patch="scale", scale=3.0)


def _screen(run) -> None:
    pd.DataFrame({
        "feature": ["L3-1", "L3-2", "L8-4", "L3-1", "L8-9"],
        "context": ["risky", "risky", "risky", "safe", "risky"],
        "intervention": ["risky_amplified", "risky_amplified", "risky_amplified",
                         "safe_ablated", "risky_amplified"],
        "attribution": [0.02, -0.05, 0.01, 0.3, 0.0],
        "rank": [2, 1, 3, 1, 4]}).to_parquet(cp.screen_path(run))


def test_top_n_prefers_the_screen_then_discover_then_causal(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--top needs a ranking"):
        cp.top_features(tmp_path, 2)
    pd.DataFrame({"feature": ["L3-7", "L3-5"], "effect": [0.01, -0.2], "arm": "feature",
                  "metric": "p_stop"}).to_parquet(RunDir(tmp_path).causal_tests)
    assert cp.top_features(tmp_path, 1) == (["L3-5"], "causal")
    pd.DataFrame({"layer": [8, 3], "feature_id": [2, 9], "candidate": [True, True],
                  "mean_safe": 0.0, "mean_risky": 1.0}).to_parquet(RunDir(tmp_path).discover)
    assert cp.top_features(tmp_path, 5) == (["L8-2", "L3-9"], "discover")
    _screen(tmp_path)
    # rank within the confirmed intervention; the safe_ablated row does not count for it
    assert cp.top_features(tmp_path, 2, ["risky_amplified"]) == (["L3-2", "L3-1"], "screen")
    assert cp.top_features(tmp_path, 2)[0] == ["L3-1", "L3-2"]  # rank 1s first, by |attr|


def test_predicted_sign_from_the_screen_or_the_first_round(tmp_path) -> None:
    _screen(tmp_path)
    assert cp.predicted_sign(tmp_path, "L3-2", AMP) == (-1, "screen")
    assert cp.predicted_sign(tmp_path, "L8-9", AMP) == (0, "none")  # attribution exactly 0
    pd.DataFrame({"feature": ["L5-5"], "condition": ["risky_amplified"], "metric": ["p_stop"],
                  "arm": ["feature"], "effect": [0.04]}).to_parquet(
        RunDir(tmp_path).causal_tests)
    assert cp.predicted_sign(tmp_path, "L5-5", AMP) == (1, "patch")
    other = ConditionSpec(name="risky_x", context="risky", patch="scale", scale=0.0)
    assert cp.predicted_sign(tmp_path, "L3-1", other) == (1, "screen")  # context rows agree


def test_preregistration_hash_and_refusal(tmp_path) -> None:
    cfg = RunConfig()
    cfg.patch.conditions = [ConditionSpec(name="risky_baseline", context="risky"), AMP]
    tests = cp.build_tests(tmp_path, ["L3-1"], cp.confirm_conditions(cfg), {})
    pre = cp.preregistration(cfg, tests, "explicit", {"risky": ["a", "b"]}, True)
    assert pre["null_design"]["cap"] == 99 and pre["n_tests"] == 1
    sha, resumed = cp.write_or_check(tmp_path, pre)
    assert not resumed and cp.write_or_check(tmp_path, pre) == (sha, True)
    on_disk = json.loads(RunDir(tmp_path).preregistration.read_text())
    assert on_disk.pop("sha256") == sha == cp.digest(on_disk)
    cfg.analysis.alpha = 0.01
    with pytest.raises(ConfigError, match="alpha: 0.05 -> 0.01"):
        cp.write_or_check(tmp_path, cp.preregistration(cfg, tests, "explicit",
                                                        {"risky": ["a", "b"]}, True))
    cfg.patch.method = "reconstruct"
    with pytest.raises(ConfigError, match="method delta"):
        cp.check_design(cfg)
