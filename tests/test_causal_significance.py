"""Issue 11, item 8: what counts as significant in causal — q <= alpha and a practical minimum.

Expected outcomes follow from the definition of Benjamini–Hochberg (reject where q <= alpha)
and from the configured minimum effects, on tables whose effects are known by construction.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from featurepath.analysis.causal import causal_table, run_causal
from featurepath.config import RunConfig


def _tiny_shift_trials(shift: float, n: int = 40) -> pd.DataFrame:
    """P(stop) of n distinct prompts; the patch adds ``shift`` (+ a little per-prompt jitter)."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, n)
    jitter = rng.normal(0, shift / 10, n)
    rows = []
    for feature, add in (("", np.zeros(n)), ("L2-7", shift + jitter)):
        for i in range(n):
            rows.append({
                "row": len(rows), "feature": feature, "layer": 2 if feature else -1,
                "feature_id": 7 if feature else -1, "condition": "c", "context": "safe",
                "patch": "safe" if feature else "none", "trial": i, "prompt_id": f"p{i}",
                "action": None, "bet": np.nan, "valid": False, "method": "delta",
                "p_stop": base[i] + add[i],
            })
    return pd.DataFrame(rows)


def _table(trials, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return causal_table(trials, n_boot=0, **kw)


def test_tiny_p_stop_shift_is_not_a_finding() -> None:
    tests, features = _table(_tiny_shift_trials(0.002))
    r = tests[tests.metric == "p_stop"].iloc[0]
    assert r["q"] < 1e-6  # statistically clear ...
    assert not r["significant"]  # ... but 0.002 is below the 0.01 practical minimum
    assert features.iloc[0]["class"] == "none"
    tests, features = _table(_tiny_shift_trials(0.002), min_effect={"p_stop": 0.0})
    assert tests[tests.metric == "p_stop"].iloc[0]["significant"]
    assert features.iloc[0]["class"] == "safe"


def test_min_effect_comes_from_the_run_config(tmp_path) -> None:
    _tiny_shift_trials(0.002).to_parquet(tmp_path / "trials.parquet")
    cfg = RunConfig()
    cfg.analysis.n_boot = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_causal(tmp_path, cfg).n_significant == 0
        cfg.analysis.min_effect_p_stop = 0.001
        assert run_causal(tmp_path, cfg).n_significant == 1


@pytest.mark.parametrize("shift", [0.03, 0.05])
def test_q_equal_to_alpha_is_significant(shift: float) -> None:
    # BH rejects H_(i) where q_(i) <= alpha: with alpha set to a test's own q it must count
    trials = _tiny_shift_trials(shift)
    q = float(_table(trials)[0].query("metric == 'p_stop'")["q"].iloc[0])
    tests, features = _table(trials, alpha=q)
    assert tests.query("metric == 'p_stop'")["significant"].iloc[0]
    assert features.iloc[0]["n_significant"] == 1 and features.iloc[0]["class"] == "safe"
