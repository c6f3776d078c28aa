"""Tests of featurepath.analysis.stats against scipy, statsmodels and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep

from featurepath.analysis import stats as fs
from featurepath.errors import DataError

finite_floats = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ t-tests


def test_welch_t_matches_scipy() -> None:
    rng = _rng(1)
    a, b = rng.normal(1.0, 1.0, 25), rng.normal(0.0, 2.0, 40)
    res = fs.welch_t(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-8)
    sp = math.sqrt((24 * np.var(a, ddof=1) + 39 * np.var(b, ddof=1)) / 63)
    assert res.effect == pytest.approx((a.mean() - b.mean()) / sp)
    assert res.ci_low < res.effect < res.ci_high
    assert (res.n1, res.n2, res.degenerate, res.method) == (25, 40, False, "welch_t")


def test_welch_t_matrix_matches_scipy_per_column() -> None:
    rng = _rng(2)
    A, B = rng.normal(0, 1, (20, 50)), rng.normal(0.3, 1.5, (33, 50))
    t, p, d, ma, mb, deg = fs.welch_t_matrix(A, B)
    ref = sps.ttest_ind(A, B, axis=0, equal_var=False)
    np.testing.assert_allclose(t, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-8)
    np.testing.assert_allclose(ma, A.mean(0))
    np.testing.assert_allclose(mb, B.mean(0))
    np.testing.assert_allclose(d[7], fs.cohens_d(A[:, 7], B[:, 7]))
    assert not deg.any()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy warns on the constant reference
def test_welch_t_matrix_flags_constant_columns() -> None:
    A = np.column_stack([np.full(30, 0.1), np.full(30, 2.0), np.linspace(0, 1, 30)])
    B = np.column_stack([np.full(30, 0.1), np.full(30, 5.0), np.full(30, 0.2)])
    t, p, d, ma, mb, deg = fs.welch_t_matrix(A, B)
    assert deg.tolist() == [True, True, False]
    assert np.isnan(p[:2]).all() and np.isnan(t[:2]).all() and np.isnan(d[:2]).all()
    # one constant group next to a varying one is a valid Welch test
    ref = sps.ttest_ind(A[:, 2], B[:, 2], equal_var=False)
    assert p[2] == pytest.approx(ref.pvalue)
    assert mb[1] == 5.0


def test_welch_t_matrix_ignores_nans_per_column() -> None:
    rng = _rng(3)
    A, B = rng.normal(0, 1, (15, 3)), rng.normal(1, 1, (12, 3))
    A[[0, 4], 1] = np.nan
    _, p, _, ma, _, _ = fs.welch_t_matrix(A, B)
    col = A[:, 1][~np.isnan(A[:, 1])]
    assert p[1] == pytest.approx(sps.ttest_ind(col, B[:, 1], equal_var=False).pvalue)
    assert ma[1] == pytest.approx(col.mean())


@pytest.mark.parametrize(
    "a,b",
    [([1.0, 1.0, 1.0], [1.0, 1.0]), ([3.0], [1.0, 2.0, 4.0]), ([], [1.0, 2.0]), ([2, 2], [5, 5])],
)
def test_welch_t_degenerate_does_not_raise(a: list[float], b: list[float]) -> None:
    res = fs.welch_t(a, b)
    assert res.degenerate and math.isnan(res.p)


def test_paired_t_matches_scipy() -> None:
    rng = _rng(4)
    a = rng.normal(0, 1, 30)
    b = a + rng.normal(0.4, 0.5, 30)
    res = fs.paired_t(a, b)
    ref = sps.ttest_rel(a, b)
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.p == pytest.approx(ref.pvalue)
    diff = a - b
    assert res.effect == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert res.effect == pytest.approx(fs.cohens_d_paired(a, b))


def test_paired_t_matrix_matches_scipy_and_flags_identical_differences() -> None:
    rng = _rng(5)
    A = rng.normal(0, 1, (18, 6))
    B = A + rng.normal(0.2, 1, (18, 6))
    B[:, 0] = A[:, 0] + 0.5  # every difference identical -> degenerate
    t, p, d, ma, mb, deg = fs.paired_t_matrix(A, B)
    ref = sps.ttest_rel(A[:, 1:], B[:, 1:], axis=0)
    np.testing.assert_allclose(p[1:], ref.pvalue, rtol=1e-8)
    np.testing.assert_allclose(t[1:], ref.statistic, rtol=1e-8)
    assert deg.tolist() == [True] + [False] * 5
    assert np.isnan(p[0]) and np.isnan(d[0])
    np.testing.assert_allclose(mb, B.mean(0))


def test_paired_t_degenerate_and_length_mismatch() -> None:
    assert fs.paired_t([1, 2, 3], [1, 2, 3]).degenerate
    assert fs.paired_t([1.0], [2.0]).degenerate
    with pytest.raises(DataError):
        fs.paired_t([1, 2, 3], [1, 2])


# ------------------------------------------------------------------ rank tests


def test_wilcoxon_matches_scipy_and_rank_biserial_by_hand() -> None:
    a = np.array([5.0, 3.0, 8.0, 6.0, 7.0, 2.0])
    b = np.array([4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    res = fs.wilcoxon_signed(a, b)
    ref = sps.wilcoxon(a, b)
    assert res.p == pytest.approx(ref.pvalue)
    # diffs 1,-1,4,2,3,-2 -> |d| ranks 1.5,1.5,6,3.5,5,3.5; W+ = 1.5+6+3.5+5 = 16, W- = 5
    assert res.effect == pytest.approx((16 - 5) / 21)
    assert fs.wilcoxon_signed([1, 2], [1, 2]).degenerate


def test_mann_whitney_matches_scipy_and_rank_biserial() -> None:
    rng = _rng(6)
    a, b = rng.normal(1, 1, 20), rng.normal(0, 1, 25)
    res = fs.mann_whitney(a, b)
    ref = sps.mannwhitneyu(a, b, alternative="two-sided")
    assert res.p == pytest.approx(ref.pvalue)
    greater = (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
    assert res.effect == pytest.approx(2 * greater / (20 * 25) - 1)
    assert fs.mann_whitney([1, 2, 3], [4, 5, 6]).effect == pytest.approx(-1.0)
    assert fs.mann_whitney([1, 1], [1, 1, 1]).degenerate
    assert fs.mann_whitney([], [1, 2]).degenerate


def test_spearman_matches_scipy() -> None:
    rng = _rng(7)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    res = fs.spearman(x, y)
    ref = sps.spearmanr(x, y)
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.p == pytest.approx(ref.pvalue)
    assert res.ci_low < res.effect < res.ci_high
    assert fs.spearman([1, 2, 3, 4], [5, 5, 5, 5]).degenerate
    assert fs.spearman([1, 2], [3, 4]).degenerate


# ------------------------------------------------------------------ counts


def test_fisher_exact_matches_scipy_and_newcombe_matches_statsmodels() -> None:
    res = fs.fisher_exact(12, 30, 4, 30)
    ref = sps.fisher_exact([[12, 18], [4, 26]])
    assert res.p == pytest.approx(ref.pvalue)
    assert res.effect == pytest.approx(12 / 30 - 4 / 30)
    lo, hi = confint_proportions_2indep(12, 30, 4, 30, method="newcomb", compare="diff")
    assert (res.ci_low, res.ci_high) == (pytest.approx(lo), pytest.approx(hi))


def test_fisher_exact_degenerate_and_invalid() -> None:
    assert fs.fisher_exact(0, 30, 0, 30).degenerate
    assert fs.fisher_exact(30, 30, 5, 5).degenerate
    assert fs.fisher_exact(0, 0, 2, 5).degenerate
    with pytest.raises(DataError):
        fs.fisher_exact(5, 3, 1, 4)


def test_chi_square_matches_scipy_and_cramers_v() -> None:
    table = np.array([[10, 20, 30], [25, 15, 5]])
    res = fs.chi_square(table)
    chi2, p, _, _ = sps.chi2_contingency(table)
    assert res.statistic == pytest.approx(chi2) and res.p == pytest.approx(p)
    assert res.effect == pytest.approx(math.sqrt(chi2 / (table.sum() * 1)))
    assert (res.n1, res.n2) == (60, 45)
    assert fs.chi_square([[5, 0], [7, 0]]).degenerate
    assert fs.chi_square([[0, 0], [3, 4]]).degenerate


# ------------------------------------------------------------------ effect sizes, bootstrap


def test_cohens_d_hand_value() -> None:
    # means 2 and 5, variances 1 and 1 -> d = -3
    assert fs.cohens_d([1, 2, 3], [4, 5, 6]) == pytest.approx(-3.0)
    assert math.isnan(fs.cohens_d([1, 1], [1, 1]))
    assert fs.cohens_d_paired([1, 2, 3], [0, 0, 0]) == pytest.approx(2.0)


def test_bootstrap_ci_deterministic_and_covers_mean() -> None:
    rng = _rng(8)
    x = rng.normal(3.0, 1.0, 200)
    ci1 = fs.bootstrap_ci(np.mean, x, n_boot=500, seed=42)
    ci2 = fs.bootstrap_ci(np.mean, x, n_boot=500, seed=42)
    assert ci1 == ci2
    assert ci1[0] < x.mean() < ci1[1]
    assert ci1[1] - ci1[0] == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.3)


def test_bootstrap_ci_paired_keeps_pairs() -> None:
    a = np.arange(50, dtype=float)
    b = a + 1.0  # paired differences are constant, so the paired CI is a point
    lo, hi = fs.bootstrap_ci(lambda u, v: float(np.mean(u - v)), a, b, n_boot=200, paired=True)
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(-1.0)
    lo2, hi2 = fs.bootstrap_ci(lambda u, v: float(np.mean(u - v)), a, b, n_boot=200)
    assert hi2 - lo2 > 1.0
    with pytest.raises(DataError):
        fs.bootstrap_ci(np.mean, a, b[:10], paired=True)


def test_bootstrap_ci_all_nan() -> None:
    lo, hi = fs.bootstrap_ci(lambda u: float("nan"), [1.0, 2.0], n_boot=10)
    assert math.isnan(lo) and math.isnan(hi)


# ------------------------------------------------------------------ BH FDR


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 60), elements=st.floats(0.0, 1.0)))
def test_bh_matches_statsmodels(p: np.ndarray) -> None:
    q = fs.bh_fdr(p)
    ref = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(q, ref, rtol=1e-10, atol=1e-15)


def test_bh_nan_kept_and_not_counted() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03, np.nan])
    q = fs.bh_fdr(p)
    assert np.isnan(q[[1, 4]]).all()
    ref = multipletests([0.01, 0.04, 0.03], method="fdr_bh")[1]
    np.testing.assert_allclose(q[[0, 2, 3]], ref)
    assert np.isnan(fs.bh_fdr([np.nan, np.nan])).all()
    assert fs.bh_fdr([]).shape == (0,)
    assert fs.bh_fdr(np.full((2, 3), 0.5)).shape == (2, 3)


# ------------------------------------------------------------------ degenerate handling


def test_is_degenerate() -> None:
    assert fs.is_degenerate([1, 1, 1], [2, 2])
    assert fs.is_degenerate([1.0], [1.0, 2.0])
    assert fs.is_degenerate([np.nan, 1.0], [1.0, 2.0])
    assert not fs.is_degenerate([1, 1, 1], [1, 2])
    assert fs.is_degenerate()


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.float64, st.integers(0, 12), elements=finite_floats),
    arrays(np.float64, st.integers(0, 12), elements=finite_floats),
)
def test_tests_never_raise_and_p_in_range(a: np.ndarray, b: np.ndarray) -> None:
    for res in (fs.welch_t(a, b), fs.mann_whitney(a, b)):
        assert res.degenerate == math.isnan(res.p)
        if not res.degenerate:
            assert 0.0 <= res.p <= 1.0
    n = min(a.size, b.size)
    for res in (fs.paired_t(a[:n], b[:n]), fs.wilcoxon_signed(a[:n], b[:n]),
                fs.spearman(a[:n], b[:n])):
        assert res.degenerate == math.isnan(res.p)
    if fs.is_degenerate(a, b):
        assert fs.welch_t(a, b).degenerate


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=50, deadline=None)
@given(st.integers(2, 10), st.integers(2, 10), st.integers(1, 6), st.data())
def test_welch_matrix_agrees_with_scalar(n1: int, n2: int, m: int, data: st.DataObject) -> None:
    A = data.draw(arrays(np.float64, (n1, m), elements=st.integers(-5, 5).map(float)))
    B = data.draw(arrays(np.float64, (n2, m), elements=st.integers(-5, 5).map(float)))
    t, p, d, _, _, deg = fs.welch_t_matrix(A, B)
    for j in range(m):
        res = fs.welch_t(A[:, j], B[:, j])
        assert res.degenerate == bool(deg[j])
        if not res.degenerate:
            assert res.p == pytest.approx(p[j], nan_ok=True)
            ref = sps.ttest_ind(A[:, j], B[:, j], equal_var=False)
            assert p[j] == pytest.approx(ref.pvalue, rel=1e-6)
