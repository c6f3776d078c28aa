"""Sequential Monte Carlo p-values (Besag & Clifford 1991) against their exact distribution.

Under the null the observed statistic is exchangeable with the null draws, so its rank R among
the ``cap`` draws (how many draws exceed it) is uniform on 0..cap, and given R the exceedance
flags are a random arrangement of R ones: the draw at which the h-th exceedance arrives is a
hypergeometric count. ``p <= h/k`` exactly when fewer than h of the first k - 1 draws exceed,
so ``P(p <= h/k) = E_R[hypergeom(cap, R, k - 1).cdf(h - 1)]``, computed here with scipy; Besag &
Clifford's theorem says it equals h/k exactly (a hand value).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from featurepath.analysis.confirm import (
    Paired,
    SequentialTest,
    baseline_test,
    default_cap,
    run_rounds,
    verdict_rows,
)

H, CAP = 10, 319


def _simulate(effect_shift: float, n: int, rng: np.random.Generator, h: int = H,
              cap: int = CAP) -> tuple[np.ndarray, np.ndarray]:
    ps, draws = np.empty(n), np.empty(n, dtype=int)
    for i in range(n):
        t = SequentialTest(float(rng.normal() + effect_shift), 0, h, cap)
        while not t.decided:  # rounds of 16 shared draws, as the pipeline draws them
            t.add(rng.normal(size=16))
        ps[i], draws[i] = t.p_value, t.draws
    return ps, draws


def _exact_cdf(x_k: int, h: int = H, cap: int = CAP) -> float:
    """P(p <= h/k) under the null: fewer than h exceedances among the first k - 1 draws, with
    R = #exceeding draws uniform on 0..cap (scipy's hypergeometric)."""
    r = np.arange(cap + 1)
    return float(np.mean(stats.hypergeom(cap, r, x_k - 1).cdf(h - 1)))


def test_exact_distribution_is_uniform_on_its_support() -> None:
    for k in (10, 20, 50, 100, 200, 319):
        assert _exact_cdf(k) == pytest.approx(H / k, rel=1e-9)


def test_sequential_p_is_uniform_under_the_null() -> None:
    rng = np.random.default_rng(7)
    ps, draws = _simulate(0.0, 4000, rng)
    for k in (12, 20, 40, 80, 160, 300):
        x = H / k
        emp = float(np.mean(ps <= x + 1e-12))
        res = stats.binomtest(int(np.sum(ps <= x + 1e-12)), len(ps), _exact_cdf(k))
        assert res.pvalue > 1e-3, (x, emp, _exact_cdf(k))
    # at the cap: P(p <= (g+1)/(cap+1)) = (g+1)/(cap+1) too (the ordinary Monte Carlo p)
    for g in (0, 3, 9):
        x = (g + 1) / (CAP + 1)
        assert stats.binomtest(int(np.sum(ps <= x + 1e-12)), len(ps), x).pvalue > 1e-3
    # a uniform p: its mean is about 1/2 (the support is discrete, so within a few hundredths)
    assert abs(ps.mean() - 0.5) < 0.03
    # the note's figure: the mean number of null draws under the null (h=10, cap=319)
    assert 30 < draws.mean() < 80, draws.mean()


def test_a_strong_effect_pays_for_the_cap_and_gets_the_smallest_p() -> None:
    rng = np.random.default_rng(8)
    ps, draws = _simulate(8.0, 200, rng)
    assert np.all(draws == CAP) and np.all(ps == 1 / (CAP + 1))
    ps3, draws3 = _simulate(3.0, 400, rng)  # a moderate effect: in between
    assert 100 < draws3.mean() < CAP


def test_signed_exceedance_and_ties() -> None:
    t = SequentialTest(0.5, 1, h=2, cap=99)
    t.add([-5.0, 0.6, 0.49, 0.4999995])  # -5 is extreme the other way; a tie within 1e-6 counts
    assert (t.draws, t.exceed, t.decided, t.p_value) == (4, 2, True, 0.5)
    two = SequentialTest(0.5, 0, h=2, cap=99)
    two.add([-5.0, 0.6])
    assert (two.draws, two.exceed, two.p_value) == (2, 2, 1.0)
    aa = SequentialTest(0.0, 0, h=10, cap=99)  # A/A: every null draw is zero, so every one ties
    aa.add(np.zeros(16))
    assert aa.p_value == 1.0 and aa.draws == 10


def test_default_cap_matches_the_issue() -> None:
    assert default_cap(8, 0.05) == 319 and default_cap(1, 0.05) == 99


def test_rounds_are_shared_per_layer_and_stop_where_the_rule_stops() -> None:
    asked = []
    tests = {"a": SequentialTest(0.0, 0, 3, 40), "b": SequentialTest(9.0, 0, 3, 40),
             "c": SequentialTest(0.0, 0, 3, 40)}

    def draw(layer, r, n, keys):
        asked.append((layer, r, n, tuple(keys)))
        return {k: np.full(n, 1.0) for k in keys}

    run_rounds(tests, {"a": 1, "b": 1, "c": 2}, 16, draw)
    assert asked == [(1, 0, 16, ("a", "b")), (1, 1, 16, ("b",)), (1, 2, 8, ("b",)),
                     (2, 0, 16, ("c",))]
    assert tests["a"].p_value == 1.0 and tests["b"].p_value == 1 / 41


def test_baseline_test_is_scipys_paired_t_and_zero_size_is_degenerate() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=12), rng.normal(size=12)
    p, t, why = baseline_test(Paired(a, b), 0)
    ref = stats.ttest_rel(a, b)
    assert why == "" and p == pytest.approx(ref.pvalue) and t == pytest.approx(ref.statistic)
    p1, _, _ = baseline_test(Paired(a, b), 1)
    assert p1 == pytest.approx(stats.ttest_rel(a, b, alternative="greater").pvalue)
    assert baseline_test(Paired(b + 1e-8, b), 0)[2] == "zero-size intervention"
    assert baseline_test(Paired(a[:1], b[:1]), 0)[2] == "fewer than 2 prompts"


def test_verdict_is_the_intersection_union_p_with_bh_over_the_tests() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.5, size=16)
    pairs = {"strong": Paired(base + 0.2 + rng.normal(0, 0.01, 16), base),
             "weak": Paired(base + 0.005 + rng.normal(0, 0.01, 16), base),
             "aa": Paired(base.copy(), base)}
    seq = {k: SequentialTest(float(np.mean(p.patched - p.baseline)), 0, 10, 99)
           for k, p in pairs.items()}
    seq["strong"].add(np.zeros(99))
    seq["weak"].add(np.full(20, 1.0))
    seq["aa"].add(np.zeros(10))
    rows = dict(zip(pairs, verdict_rows(list(pairs), pairs, seq, 0.05, 0.01), strict=True))
    s = rows["strong"]
    assert s["p"] == max(s["p_baseline"], s["p_null"]) and s["p_null"] == 1 / 100
    # BH over the two tested (the A/A test is degenerate and outside the family): scipy's
    from scipy.stats import false_discovery_control

    q = false_discovery_control([s["p"], rows["weak"]["p"]])
    assert s["q"] == pytest.approx(q[0]) and rows["weak"]["q"] == pytest.approx(q[1])
    assert s["significant"] and not rows["weak"]["significant"]
    assert rows["aa"]["degenerate"] and not rows["aa"]["significant"]
