"""Issue 11, items 5, 7 and 8 (exact small-sample tests): exact Spearman p and van Elteren's
stratified rank-sum test, against scipy and brute-force enumeration."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from featurepath.analysis.causal import causal_table, scale_trend
from featurepath.analysis.stats import spearman
from featurepath.analysis.stats_exact import van_elteren


@pytest.mark.parametrize(("n", "p"), [(3, 1 / 3), (4, 1 / 12), (5, 1 / 60)])
def test_perfect_trend_of_few_levels_has_the_exact_p(n: int, p: float) -> None:
    # two-sided: orderings with |rho| = 1 are the identity and its reverse, 2 of n!
    assert spearman(np.arange(n), np.arange(n) ** 2).p == pytest.approx(p)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=4, max_size=6))
def test_spearman_exact_p_matches_scipy_permutation_test(pairs) -> None:
    x = np.array([a for a, _ in pairs], dtype=float)
    y = np.array([b for _, b in pairs], dtype=float)
    res = spearman(x, y)
    if res.degenerate:
        return
    # brute force with scipy's rho: every ordering of y against x
    obs = abs(sps.spearmanr(x, y).statistic)
    rhos = [abs(sps.spearmanr(x, y[list(o)]).statistic)
            for o in itertools.permutations(range(x.size))]
    assert res.p == pytest.approx(np.mean(np.asarray(rhos) >= obs - 1e-12), abs=1e-12)


def test_dose_response_with_four_levels_is_not_p_zero() -> None:
    rows = []
    for scale, stop in ((0.0, 0.1), (1.0, 0.3), (2.0, 0.5), (4.0, 0.9)):
        for i in range(20):
            rows.append({"row": len(rows), "feature": "L2-7", "layer": 2, "feature_id": 7,
                         "condition": f"s{scale}", "context": "safe", "patch": "scale",
                         "scale": scale, "trial": i, "prompt_id": f"p{i}", "method": "delta",
                         "action": "stop" if i < stop * 20 else "bet", "bet": 10.0 + scale,
                         "valid": True, "p_stop": 0.5})
    dose = scale_trend(pd.DataFrame(rows)).set_index("metric")
    assert dose.loc["stop_rate", "rho"] == pytest.approx(1.0)
    assert dose.loc["stop_rate", "p"] == pytest.approx(1 / 12)


def test_van_elteren_one_stratum_small_is_the_exact_mann_whitney() -> None:
    a, b = [3.1, 4.5, 6.0, 7.2, 9.9], [1.0, 2.2, 3.5, 5.1]
    r = van_elteren(a, b, [0] * 5, [0] * 4)
    ref = sps.mannwhitneyu(a, b, method="exact")
    assert r.exact and r.p == pytest.approx(ref.pvalue)
    assert r.effect == pytest.approx(2 * ref.statistic / 20 - 1)


def test_van_elteren_one_stratum_large_is_the_asymptotic_mann_whitney_with_ties() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 10, 30).astype(float), rng.integers(1, 11, 25).astype(float)
    r = van_elteren(a, b, [0] * 30, [0] * 25)
    ref = sps.mannwhitneyu(a, b, method="asymptotic", use_continuity=False)
    assert not r.exact and r.p == pytest.approx(ref.pvalue)


def test_van_elteren_several_strata_exact_by_enumeration() -> None:
    strata = {"p1": ([10.0, 20.0, 20.0], [5.0, 20.0]), "p2": ([100.0, 150.0], [90.0, 80.0, 95.0]),
              "p3": ([1.0], [2.0, 3.0])}
    a = [v for va, _ in strata.values() for v in va]
    b = [v for _, vb in strata.values() for v in vb]
    sa = [k for k, (va, _) in strata.items() for _ in va]
    sb = [k for k, (_, vb) in strata.items() for _ in vb]
    r = van_elteren(a, b, sa, sb)

    def stat(assign: list[tuple[int, ...]]) -> float:  # sum over strata of W_s / (N_s + 1)
        out = 0.0
        for (va, vb), chosen in zip(strata.values(), assign, strict=True):
            ranks = sps.rankdata(va + vb)
            out += sum(ranks[i] for i in chosen) / (len(va) + len(vb) + 1)
        return out

    choices = [list(itertools.combinations(range(len(va) + len(vb)), len(va)))
               for va, vb in strata.values()]
    null = np.array([stat(list(c)) for c in itertools.product(*choices)])
    obs = stat([tuple(range(len(va))) for va, _ in strata.values()])
    centre = sum(len(va) for va, _ in strata.values()) / 2
    exact = float(np.mean(np.abs(null - centre) >= abs(obs - centre) - 1e-9))
    assert r.exact and r.p == pytest.approx(exact)
    assert r.n_strata == 3


def test_bets_compared_within_prompt_not_pooled() -> None:
    # A/A: two prompts, balance $200 (bets ~100) and $20 (bets ~10); within a prompt both arms
    # bet alike, but the baseline bets mostly on the rich prompt and the patch mostly on the
    # poor one. Pooled, that looks like "the patch lowers bets".
    rng = np.random.default_rng(7)
    rows = []
    for feature, share_rich in (("", 0.8), ("L4-2", 0.2)):
        for t in range(80):
            rich = t % 2 == 0
            bets = (rng.random() < (share_rich if rich else 1 - share_rich))
            rows.append({"row": len(rows), "feature": feature, "layer": 4 if feature else -1,
                         "feature_id": 2 if feature else -1, "condition": "c", "context": "risky",
                         "patch": "risky" if feature else "none", "trial": t,
                         "prompt_id": "rich" if rich else "poor", "method": "delta",
                         "action": "bet" if bets else "stop",
                         "bet": float(rng.normal(100 if rich else 10, 5)) if bets else np.nan,
                         "valid": True, "p_stop": 0.5})
    df = pd.DataFrame(rows)
    pooled = sps.mannwhitneyu(df.loc[df.feature != "", "bet"].dropna(),
                              df.loc[df.feature == "", "bet"].dropna())
    assert pooled.pvalue < 1e-4  # the artefact the pooled test produced
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tests, _ = causal_table(df, n_boot=0)
    bet = tests[tests.metric == "bet"].iloc[0]
    assert bet["test"] == "van_elteren" and bet["p"] > 0.05 and not bet["significant"]


def test_small_mann_whitney_with_ties_is_exact() -> None:
    from featurepath.analysis.stats import mann_whitney

    a, b = [1.0, 2.0, 2.0, 3.0, 5.0], [2.0, 3.0, 3.0, 4.0, 6.0, 6.0]
    pooled = np.array(a + b)
    u_obs = sps.mannwhitneyu(a, b).statistic
    centre = len(a) * len(b) / 2
    us = [sps.mannwhitneyu(pooled[list(c)], np.delete(pooled, list(c))).statistic
          for c in itertools.combinations(range(pooled.size), len(a))]
    exact = float(np.mean(np.abs(np.asarray(us) - centre) >= abs(u_obs - centre) - 1e-9))
    assert mann_whitney(a, b).p == pytest.approx(exact)
    assert mann_whitney(a, b).p != pytest.approx(sps.mannwhitneyu(a, b).pvalue)  # asymptotic
