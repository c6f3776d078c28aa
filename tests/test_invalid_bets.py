"""Issue 11, item 4: invalid bets stay in the stop-rate denominator and get a test of their own.

Expected values are hand counts checked with scipy's Fisher test, not the implementation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from featurepath.analysis.causal import causal_table

N = 40


def _trials() -> pd.DataFrame:
    """Baseline: half stop, half bet $10 (valid). Patched: the same half stops, the other half
    goes all in over the balance ($500 with $100 left: parsed as a bet, invalid); a third arm
    gives no readable answer at all on 4 trials."""
    rows = []

    def add(feature, patch, action, bet, valid):
        for i in range(N):
            stop = i % 2 == 0
            rows.append({
                "row": len(rows), "feature": feature, "layer": 3 if feature else -1,
                "feature_id": 4 if feature else -1, "condition": patch, "context": "risky",
                "patch": patch, "trial": i, "prompt_id": f"p{i}", "method": "delta",
                "action": "stop" if stop else action(i), "bet": np.nan if stop else bet,
                "valid": True if stop else valid(i), "p_stop": 0.5,
            })

    add("", "none", lambda i: "bet", 10.0, lambda i: True)
    add("L3-4", "risky", lambda i: "bet", 500.0, lambda i: False)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def result():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return causal_table(_trials(), n_boot=0)


def test_all_in_over_balance_patch_is_not_safe(result) -> None:
    tests, features = result
    sr = tests[tests.metric == "stop_rate"].iloc[0]
    # 20 stops of 40 parsed decisions in both arms: no change (was 20/20 = 1.0 vs 0.5)
    assert sr["patched_value"] == pytest.approx(0.5) and sr["baseline_value"] == pytest.approx(0.5)
    assert sr["n_patched"] == N and sr["effect"] == pytest.approx(0.0)
    assert sr["p"] == pytest.approx(sps.fisher_exact([[20, 20], [20, 20]]).pvalue)
    assert features.iloc[0]["class"] == "invalid"


def test_invalid_rate_is_tested_with_fisher(result) -> None:
    tests, _ = result
    r = tests[tests.metric == "invalid_rate"].iloc[0]
    assert (r["patched_value"], r["baseline_value"]) == (0.5, 0.0)
    assert r["p"] == pytest.approx(sps.fisher_exact([[20, 20], [0, 40]]).pvalue)
    assert r["test"] == "fisher_exact" and r["q"] <= 0.05


def test_requested_amounts_of_invalid_bets_are_reported(result) -> None:
    tests, _ = result
    r = tests.iloc[0]
    assert r["invalid_bet_patched"] == 500.0 and np.isnan(r["invalid_bet_baseline"])
    assert r["n_invalid_patched"] == 20 and r["n_invalid_baseline"] == 0
    bet = tests[tests.metric == "bet"].iloc[0]
    assert bet["degenerate"]  # no valid patched bet is left to compare
