"""Statistical tests shared by every analysis stage (discover, causal, pathways, words).

Why one module: the stages must agree on what counts as a *degenerate* comparison. Greedy decoding
or one fixed prompt makes every trial identical, and the original study tested such zero-variance
samples as if they carried evidence. Here every test checks its input first and returns
``degenerate=True`` with ``p=NaN`` instead of raising or inventing a p-value, so a run over
thousands of features never stops on one constant column and never reports it as significant.

Conventions
-----------
- Non-finite values (NaN, inf) are dropped before testing; in paired tests the whole pair goes.
- ``effect`` is signed so that it is positive when the first sample (``a``) is larger.
- ``ci_low``/``ci_high`` are a 95% confidence interval of ``effect`` (NaN where none is defined).
- The ``*_matrix`` functions are vectorised over columns, because discover and pathways run them
  over thousands of features at once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from featurepath.analysis import stats_exact as _exact
from featurepath.errors import DataError

__all__ = [
    "TestResult",
    "MatrixResult",
    "welch_t",
    "welch_t_matrix",
    "paired_t",
    "paired_t_matrix",
    "wilcoxon_signed",
    "mann_whitney",
    "fisher_exact",
    "chi_square",
    "spearman",
    "cohens_d",
    "cohens_d_paired",
    "bootstrap_ci",
    "bh_fdr",
    "is_degenerate",
]

_NAN = float("nan")
_Z95 = float(sps.norm.ppf(0.975))
_REL_TOL = 1e-12  # relative range below which a column is treated as constant (rounding noise)


@dataclass
class TestResult:
    """Outcome of one two-sample (or paired, or contingency) test.

    ``degenerate`` is True when the input carries no variance to test (constant samples, too few
    values); then ``p`` is NaN so that FDR correction skips it rather than counting it.
    """

    __test__ = False  # keep pytest from collecting this class when a test module imports it

    statistic: float
    p: float
    effect: float
    ci_low: float
    ci_high: float
    n1: int
    n2: int
    degenerate: bool
    method: str


class MatrixResult(NamedTuple):
    """Column-wise results of ``welch_t_matrix`` / ``paired_t_matrix``; unpacks as a 6-tuple."""

    t: NDArray[np.float64]
    p: NDArray[np.float64]
    d: NDArray[np.float64]
    mean_a: NDArray[np.float64]
    mean_b: NDArray[np.float64]
    degenerate: NDArray[np.bool_]


# --------------------------------------------------------------------------------------------
# helpers


def _clean(x: ArrayLike) -> NDArray[np.float64]:
    """Flatten to float and drop non-finite values (a missing trial is not a zero)."""
    arr = np.asarray(x, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _clean_pairs(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Keep only pairs where both members are finite; a pair with one side missing is unusable."""
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise DataError(f"paired samples differ in length: {x.size} vs {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _is_constant(x: NDArray[np.float64]) -> bool:
    # A range test, not var == 0: the variance of a constant can come out as 1e-33 in floating
    # point. Same relative tolerance as the matrix functions so scalar and matrix agree.
    if x.size == 0:
        return True
    hi, lo = float(np.max(x)), float(np.min(x))
    return hi - lo <= _REL_TOL * max(abs(hi), abs(lo))


def _degenerate_result(method: str, n1: int, n2: int, statistic: float = _NAN,
                       effect: float = _NAN) -> TestResult:
    return TestResult(statistic, _NAN, effect, _NAN, _NAN, n1, n2, True, method)


def is_degenerate(*samples: ArrayLike) -> bool:
    """True when the samples carry no variance a t-type test could use.

    That is: some sample has fewer than two finite values, or every sample is constant (identical
    greedy trials, one fixed prompt). One constant sample next to a varying one is *not*
    degenerate: Welch's test handles it.
    """
    cleaned = [_clean(s) for s in samples]
    if not cleaned:
        return True
    if any(c.size < 2 for c in cleaned):
        return True
    return all(_is_constant(c) for c in cleaned)


# --------------------------------------------------------------------------------------------
# effect sizes


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's d with the pooled SD (Cohen 1988): (mean_a - mean_b) / s_pooled.

    s_pooled = sqrt(((n1-1) s1^2 + (n2-1) s2^2) / (n1 + n2 - 2)), sample variances (ddof=1).
    NaN when the pooled SD is zero or undefined.
    """
    x, y = _clean(a), _clean(b)
    n1, n2 = x.size, y.size
    if n1 < 2 or n2 < 2:
        return _NAN
    v1 = 0.0 if _is_constant(x) else float(np.var(x, ddof=1))
    v2 = 0.0 if _is_constant(y) else float(np.var(y, ddof=1))
    sp = math.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    if sp == 0.0:
        return _NAN
    return float((np.mean(x) - np.mean(y)) / sp)


def cohens_d_paired(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's d_z for paired samples: mean(a - b) / sd(a - b) (ddof=1); NaN if sd is zero."""
    x, y = _clean_pairs(a, b)
    diff = x - y
    if diff.size < 2 or _is_constant(diff):
        return _NAN
    return float(np.mean(diff) / np.std(diff, ddof=1))


def _d_ci(d: float, se: float) -> tuple[float, float]:
    if not math.isfinite(d) or not math.isfinite(se):
        return _NAN, _NAN
    return d - _Z95 * se, d + _Z95 * se


# --------------------------------------------------------------------------------------------
# t-tests


def welch_t(a: ArrayLike, b: ArrayLike) -> TestResult:
    """Welch's unequal-variance t-test (Welch 1947), two-sided; effect = Cohen's d (pooled SD).

    Why Welch: the two groups of games differ in size and spread, so Student's equal-variance
    assumption does not hold. The CI of d uses the large-sample SE of Hedges & Olkin (1985, eq.
    5.14): se(d) = sqrt((n1+n2)/(n1 n2) + d^2 / (2 (n1+n2))).
    """
    x, y = _clean(a), _clean(b)
    n1, n2 = int(x.size), int(y.size)
    t, p, d, _, _, deg = welch_t_matrix(x[:, None], y[:, None])
    if bool(deg[0]):
        return _degenerate_result("welch_t", n1, n2)
    d0 = float(d[0])
    se = math.sqrt((n1 + n2) / (n1 * n2) + d0**2 / (2 * (n1 + n2))) if math.isfinite(d0) else _NAN
    lo, hi = _d_ci(d0, se)
    return TestResult(float(t[0]), float(p[0]), d0, lo, hi, n1, n2, False, "welch_t")


def _col_stats(
    X: NDArray[np.float64], scale: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Per-column finite count, mean, sample variance (ddof=1) and constancy, NaN-aware.

    A column counts as constant when its range is within ``_REL_TOL`` of ``scale`` (by default
    its own largest magnitude): differences such as ``(a + 0.5) - a`` are not exactly equal in
    floating point, and a variance that is pure rounding noise must not yield t = 1e15.
    """
    finite = np.isfinite(X)
    n = finite.sum(axis=0).astype(float)
    Xz = np.where(finite, X, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = Xz.sum(axis=0) / n
        dev = np.where(finite, X - mean, 0.0)
        var = (dev**2).sum(axis=0) / (n - 1)
    hi = np.where(finite, X, -np.inf).max(axis=0, initial=-np.inf)
    lo = np.where(finite, X, np.inf).min(axis=0, initial=np.inf)
    if scale is None:
        scale = np.maximum(np.abs(hi), np.abs(lo))
    with np.errstate(invalid="ignore"):
        const = (n == 0) | (hi - lo <= _REL_TOL * scale) | (var == 0)
    var = np.where(const & (n >= 2), 0.0, var)
    return n, mean, var, const


def _as_2d(X: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(X, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D array [samples, features], got shape {arr.shape}")
    return arr


def welch_t_matrix(A: ArrayLike, B: ArrayLike) -> MatrixResult:
    """Welch t-tests of every column of ``A`` [n1, m] against the same column of ``B`` [n2, m].

    Returns ``(t, p, d, mean_a, mean_b, degenerate)``, each of length m. A column is degenerate
    (t, p, d = NaN) when either group has fewer than two finite values or both groups are
    constant; one constant group next to a varying one is tested normally. NaNs are ignored
    column by column. Welch–Satterthwaite degrees of freedom (Welch 1947).
    """
    Xa, Xb = _as_2d(A, "A"), _as_2d(B, "B")
    if Xa.shape[1] != Xb.shape[1]:
        raise DataError(f"A and B have different numbers of columns: {Xa.shape[1]} vs {Xb.shape[1]}")
    return _welch_from_stats(_col_stats(Xa), _col_stats(Xb))


def _welch_from_stats(a, b) -> MatrixResult:
    n1, m1, v1, c1 = a
    n2, m2, v2, c2 = b
    degenerate = (n1 < 2) | (n2 < 2) | (c1 & c2)
    with np.errstate(invalid="ignore", divide="ignore"):
        s1, s2 = v1 / n1, v2 / n2
        se = np.sqrt(s1 + s2)
        t = (m1 - m2) / se
        df = (s1 + s2) ** 2 / (s1**2 / (n1 - 1) + s2**2 / (n2 - 1))
        p = 2.0 * sps.t.sf(np.abs(t), df)
        sp = np.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
        d = (m1 - m2) / sp
    degenerate = degenerate | ~np.isfinite(p)  # e.g. variances that underflow to zero
    t = np.where(degenerate, np.nan, t)
    p = np.where(degenerate, np.nan, p)
    d = np.where(degenerate | (sp == 0), np.nan, d)
    return MatrixResult(t, p, d, m1, m2, degenerate)


def paired_t(a: ArrayLike, b: ArrayLike) -> TestResult:
    """Paired t-test on a - b (two-sided); effect = Cohen's d_z = mean(diff)/sd(diff).

    Degenerate when fewer than two pairs remain or all differences are identical (then the
    SD of the differences is zero and t is undefined). CI of d_z from the large-sample SE
    sqrt(1/n + d_z^2 / (2n)) (Hedges & Olkin 1985, one-sample case).
    """
    x, y = _clean_pairs(a, b)
    n = int(x.size)
    t, p, d, _, _, deg = paired_t_matrix(x[:, None], y[:, None])
    if bool(deg[0]):
        return _degenerate_result("paired_t", n, n)
    d0 = float(d[0])
    lo, hi = _d_ci(d0, math.sqrt(1.0 / n + d0**2 / (2 * n)))
    return TestResult(float(t[0]), float(p[0]), d0, lo, hi, n, n, False, "paired_t")


def paired_t_matrix(A: ArrayLike, B: ArrayLike) -> MatrixResult:
    """Paired t-tests of every column of ``A`` [n, m] against ``B`` [n, m] (rows are pairs).

    Used by pathways: row i of A and B is the same prompt with and without the source patch.
    Returns ``(t, p, d, mean_a, mean_b, degenerate)``; d is Cohen's d_z. A pair with a
    non-finite member is dropped for that column only; means are over the kept pairs. Degenerate
    where fewer than two pairs remain or all differences are identical.
    """
    Xa, Xb = _as_2d(A, "A"), _as_2d(B, "B")
    if Xa.shape != Xb.shape:
        raise DataError(f"paired arrays differ in shape: {Xa.shape} vs {Xb.shape}")
    keep = np.isfinite(Xa) & np.isfinite(Xb)
    Xa = np.where(keep, Xa, np.nan)
    Xb = np.where(keep, Xb, np.nan)
    # rounding error of a - b scales with |a| and |b|, not with the differences themselves
    mag = np.where(keep, np.maximum(np.abs(Xa), np.abs(Xb)), 0.0)
    n, md, vd, cd = _col_stats(Xa - Xb, scale=mag.max(axis=0, initial=0.0))
    _, ma, _, _ = _col_stats(Xa)
    _, mb, _, _ = _col_stats(Xb)
    degenerate = (n < 2) | cd
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(vd)
        t = md / (sd / np.sqrt(n))
        p = 2.0 * sps.t.sf(np.abs(t), n - 1)
        d = md / sd
    degenerate = degenerate | ~np.isfinite(p)
    t = np.where(degenerate, np.nan, t)
    p = np.where(degenerate, np.nan, p)
    d = np.where(degenerate, np.nan, d)
    return MatrixResult(t, p, d, ma, mb, degenerate)


# --------------------------------------------------------------------------------------------
# rank tests


def wilcoxon_signed(a: ArrayLike, b: ArrayLike) -> TestResult:
    """Wilcoxon signed-rank test on a - b (scipy, zero differences dropped, two-sided).

    effect = matched-pairs rank-biserial correlation (Kerby 2014): (W+ - W-) / (W+ + W-), from
    the average ranks of |a - b| over non-zero differences; +1 means every pair has a > b.
    Degenerate when no non-zero difference remains.
    """
    x, y = _clean_pairs(a, b)
    n = int(x.size)
    diff = x - y
    nz = diff[diff != 0]
    if nz.size == 0:
        return _degenerate_result("wilcoxon_signed", n, n)
    ranks = sps.rankdata(np.abs(nz))
    w_plus = float(ranks[nz > 0].sum())
    w_minus = float(ranks[nz < 0].sum())
    effect = (w_plus - w_minus) / (w_plus + w_minus)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    return TestResult(float(res.statistic), float(res.pvalue), effect, _NAN, _NAN, n, n, False,
                      "wilcoxon_signed")


def mann_whitney(a: ArrayLike, b: ArrayLike) -> TestResult:
    """Mann–Whitney U test (two-sided); effect = rank-biserial correlation.

    p is exact (all splits of the pooled values, ties included) when there are at most
    ``stats_exact.EXACT_MAX_ARRANGEMENTS`` splits, else scipy's asymptotic p.

    r = 2 U_a / (n1 n2) - 1 (Wendt 1972; Kerby 2014), where U_a counts pairs with a > b plus half
    the ties: +1 means every value of a exceeds every value of b. Degenerate when a sample is
    empty or all pooled values are identical (two different constants are *not* degenerate here:
    ranks separate them perfectly).
    """
    x, y = _clean(a), _clean(b)
    n1, n2 = int(x.size), int(y.size)
    if n1 == 0 or n2 == 0 or _is_constant(np.concatenate([x, y])):
        return _degenerate_result("mann_whitney", n1, n2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.mannwhitneyu(x, y, alternative="two-sided")
    u = float(res.statistic)
    p = float(res.pvalue)
    if math.comb(n1 + n2, n1) <= _exact.EXACT_MAX_ARRANGEMENTS:
        p = _exact.van_elteren(x, y, [0] * n1, [0] * n2).p
    effect = 2.0 * u / (n1 * n2) - 1.0
    return TestResult(u, p, effect, _NAN, _NAN, n1, n2, False, "mann_whitney")


def spearman(x: ArrayLike, y: ArrayLike) -> TestResult:
    """Spearman rank correlation (scipy); statistic = effect = rho.

    p is the exact permutation p for n <= 8 (``stats_exact.spearman_exact_p``): a dose response has few levels, and the t approximation then calls a
    perfect trend of 3, 4 or 5 levels p = 0 where the exact p is 1/3, 1/12, 1/60.

    The CI uses Fisher's z with the Fieller, Hartley & Pearson (1957) variance 1.06/(n-3). Pairs
    with a non-finite member are dropped. Degenerate when fewer than three pairs remain or
    either variable is constant (rho undefined).
    """
    a, b = _clean_pairs(x, y)
    n = int(a.size)
    if n < 3 or _is_constant(a) or _is_constant(b):
        return _degenerate_result("spearman", n, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.spearmanr(a, b)
    rho = float(res.statistic)
    p = _exact.spearman_exact_p(a, b) if n <= _exact.EXACT_SPEARMAN_MAX_N else float(res.pvalue)
    lo = hi = _NAN
    if n > 3 and abs(rho) < 1.0:
        z = math.atanh(rho)
        se = math.sqrt(1.06 / (n - 3))
        lo, hi = math.tanh(z - _Z95 * se), math.tanh(z + _Z95 * se)
    elif abs(rho) == 1.0:
        lo = hi = rho
    return TestResult(rho, p, rho, lo, hi, n, n, False, "spearman")


# --------------------------------------------------------------------------------------------
# counts


def _wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927)."""
    p = k / n
    z2 = _Z95**2
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = _Z95 / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> TestResult:
    """Fisher's exact test of k1/n1 vs k2/n2 (e.g. stop rates), two-sided.

    statistic = the sample odds ratio (scipy); effect = k1/n1 - k2/n2. The CI of the difference is
    Newcombe's hybrid score interval built from two Wilson intervals (Newcombe 1998, method 10),
    chosen over Wald because stop rates near 0 or 1 are common and Wald collapses there.
    Degenerate (p=NaN) when a group is empty or both groups are all-success or all-failure.
    """
    k1, n1, k2, n2 = int(k1), int(n1), int(k2), int(n2)
    if min(k1, n1, k2, n2) < 0 or k1 > n1 or k2 > n2:
        raise DataError(f"invalid counts for fisher_exact: {k1}/{n1} vs {k2}/{n2}")
    if n1 == 0 or n2 == 0:
        return _degenerate_result("fisher_exact", n1, n2)
    p1, p2 = k1 / n1, k2 / n2
    effect = p1 - p2
    l1, u1 = _wilson(k1, n1)
    l2, u2 = _wilson(k2, n2)
    lo = effect - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = effect + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    if k1 + k2 == 0 or k1 + k2 == n1 + n2:
        return TestResult(_NAN, _NAN, effect, lo, hi, n1, n2, True, "fisher_exact")
    res = sps.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided")
    return TestResult(float(res.statistic), float(res.pvalue), effect, lo, hi, n1, n2, False,
                      "fisher_exact")


def chi_square(table: ArrayLike, correction: bool = True) -> TestResult:
    """Pearson chi-square test of independence on an r x c table (rows = groups).

    effect = Cramér's V = sqrt(chi2 / (N (min(r, c) - 1))) (Cramér 1946). ``correction`` is
    Yates' continuity correction, applied by scipy to 2 x 2 tables only. n1 is the count in row 0
    and n2 the count in all other rows. Degenerate when, after dropping empty rows and columns,
    fewer than two rows or two columns remain (nothing varies).
    """
    tab = np.asarray(table, dtype=float)
    if tab.ndim != 2 or np.any(~np.isfinite(tab)) or np.any(tab < 0):
        raise DataError("chi_square needs a 2-D table of non-negative counts")
    n1 = int(tab[0].sum()) if tab.shape[0] else 0
    n2 = int(tab[1:].sum()) if tab.shape[0] > 1 else 0
    tab = tab[tab.sum(axis=1) > 0][:, tab.sum(axis=0) > 0]
    if tab.shape[0] < 2 or tab.shape[1] < 2:
        return _degenerate_result("chi_square", n1, n2)
    chi2, p, _, _ = sps.chi2_contingency(tab, correction=correction)
    v = math.sqrt(chi2 / (tab.sum() * (min(tab.shape) - 1)))
    return TestResult(float(chi2), float(p), v, _NAN, _NAN, n1, n2, False, "chi_square")


# --------------------------------------------------------------------------------------------
# resampling and multiplicity


def bootstrap_ci(
    stat_fn: Callable[..., float],
    *samples: ArrayLike,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    paired: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat_fn(*samples)`` (Efron & Tibshirani 1993, ch. 13).

    Deterministic for a given ``seed`` (numpy PCG64). ``paired=True`` resamples the same row
    indices in every sample (they must have equal length), keeping pairs together; otherwise
    each sample is resampled on its own. Replicates where ``stat_fn`` returns NaN are dropped;
    if none is finite the interval is (NaN, NaN).
    """
    if not samples:
        raise DataError("bootstrap_ci needs at least one sample")
    arrs: list[NDArray[np.float64]] = [np.asarray(s, dtype=float) for s in samples]
    if any(a.shape[0] == 0 for a in arrs):
        return _NAN, _NAN
    if paired and len({a.shape[0] for a in arrs}) != 1:
        raise DataError("paired bootstrap needs samples of equal length")
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for i in range(n_boot):
        if paired:
            idx = rng.integers(0, arrs[0].shape[0], arrs[0].shape[0])
            boot = [a[idx] for a in arrs]
        else:
            boot = [a[rng.integers(0, a.shape[0], a.shape[0])] for a in arrs]
        with np.errstate(all="ignore"):
            reps[i] = float(stat_fn(*boot))
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return _NAN, _NAN
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bh_fdr(pvals: ArrayLike | Sequence[float]) -> NDArray[np.float64]:
    """Benjamini–Hochberg (1995) adjusted q-values, same shape as the input.

    q_(i) = min_{j >= i} min(1, p_(j) m / j) over the sorted p-values. NaN p-values (degenerate
    tests) stay NaN and are *not* counted in m: a comparison that could not be tested must not
    dilute, nor pretend to join, the family.
    """
    p = np.asarray(pvals, dtype=float)
    flat = p.ravel()
    q = np.full(flat.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(flat))
    m = ok.size
    if m == 0:
        return q.reshape(p.shape)
    order = ok[np.argsort(flat[ok], kind="mergesort")]
    ranked = flat[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q[order] = np.clip(ranked, 0.0, 1.0)
    return q.reshape(p.shape)
