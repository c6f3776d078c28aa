"""Exact and stratified rank tests: small samples and comparisons within prompts.

Why a module of its own: large-sample approximations fail where featurepath's comparisons are
small. A dose response has 3-5 scale levels, and Spearman's t approximation then gives a perfect
trend p = 0, where the exact permutation p is 1/3, 1/12 and 1/60. Bet sizes depend on the prompt
(its balance sets the scale, and which prompts end in a bet differs by arm), so pooling bets over
prompts compares prompts rather than patches; van Elteren's stratified rank-sum test compares
bets only within a prompt and sums the evidence over prompts.

Both tests here return exact permutation p-values whenever the number of arrangements is small
enough to enumerate, and the usual normal approximation otherwise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

__all__ = ["EXACT_SPEARMAN_MAX_N", "EXACT_MAX_ARRANGEMENTS", "spearman_exact_p", "VanElteren",
           "van_elteren"]

EXACT_SPEARMAN_MAX_N = 8
"""Up to this many pairs Spearman's p is exact (8! = 40320 orderings)."""
EXACT_MAX_ARRANGEMENTS = 50_000
"""Van Elteren's p is exact when the within-stratum label arrangements number at most this."""


def _rank_corr(rx: NDArray[np.float64], ry: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pearson correlation of ``rx`` [n] with every row of ``ry`` [k, n]."""
    cx = rx - rx.mean()
    cy = ry - ry.mean(axis=-1, keepdims=True)
    return (cy @ cx) / (np.sqrt((cx**2).sum()) * np.sqrt((cy**2).sum(axis=-1)))


def spearman_exact_p(x: ArrayLike, y: ArrayLike) -> float:
    """Two-sided exact permutation p of Spearman's rho for n <= :data:`EXACT_SPEARMAN_MAX_N`.

    Every ordering of ``y`` against ``x`` is equally likely under independence, so
    p = #{orderings with |rho| >= |rho_obs|} / n! (ties handled by midranks in every ordering).
    """
    rx = sps.rankdata(np.asarray(x, dtype=float))
    ry = sps.rankdata(np.asarray(y, dtype=float))
    n = rx.size
    if n > EXACT_SPEARMAN_MAX_N:
        raise ValueError(f"exact Spearman p enumerates n! orderings; n = {n} is too many")
    obs = abs(float(_rank_corr(rx, ry[None, :])[0]))
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    rho = _rank_corr(rx, ry[perms])
    return float(np.mean(np.abs(rho) >= obs - 1e-12))


@dataclass
class VanElteren:
    """Van Elteren's test of group ``a`` against ``b`` within strata.

    ``statistic`` is the standardised z (positive: ``a`` ranks higher); ``effect`` the
    within-stratum rank-biserial r = P(a > b) - P(a < b) over all (a, b) pairs that share a
    stratum (Kerby 2014); ``n_strata`` counts the strata holding both groups; ``exact`` says
    whether ``p`` comes from enumerating every within-stratum arrangement.
    """

    statistic: float
    p: float
    effect: float
    n_a: int
    n_b: int
    n_strata: int
    exact: bool
    degenerate: bool


def van_elteren(a: ArrayLike, b: ArrayLike, strata_a: Sequence[Hashable],
                strata_b: Sequence[Hashable]) -> VanElteren:
    """Van Elteren (1960) stratified Wilcoxon rank-sum test, two-sided.

    In each stratum s (here: a prompt) holding n_s values of ``a`` and m_s of ``b`` (N_s in all),
    W_s is the midrank sum of ``a``; T = sum_s W_s / (N_s + 1) weights strata "locally best"
    (van Elteren 1960; Lehmann 1975, "Nonparametrics", sec. 3.3). Under H0, E(T) = sum_s n_s / 2
    and Var(T) = sum_s n_s m_s / (12 (N_s + 1)^2) * (N_s + 1 - sum_t (t^3 - t) / (N_s (N_s - 1)))
    (ties t of the stratum). z = (T - E) / sqrt(Var). p is exact (every assignment of the labels
    within each stratum equally likely) when there are at most
    :data:`EXACT_MAX_ARRANGEMENTS` assignments, else 2 (1 - Phi(|z|)). With one stratum this is
    the Mann–Whitney test, exact for small samples. Non-finite values are dropped; strata
    lacking either group carry no information and are left out. Degenerate when no stratum
    holds both groups or every value within every stratum ties.
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    sa, sb = list(strata_a), list(strata_b)
    if len(sa) != xa.size or len(sb) != xb.size:
        raise ValueError("one stratum label per value is needed")
    by: dict[Hashable, tuple[list[float], list[float]]] = {}
    for v, s in zip(xa, sa, strict=True):
        if math.isfinite(v):
            by.setdefault(s, ([], []))[0].append(v)
    for v, s in zip(xb, sb, strict=True):
        if math.isfinite(v):
            by.setdefault(s, ([], []))[1].append(v)
    t = e = var = 0.0
    wins = pairs = 0.0
    n_a = n_b = n_strata = 0
    per_stratum: list[tuple[NDArray[np.float64], int, float]] = []
    for va, vb in by.values():
        n, m = len(va), len(vb)
        if n == 0 or m == 0:
            continue
        vals = np.asarray(va + vb)
        big_n = n + m
        r = sps.rankdata(vals)
        _, tie = np.unique(vals, return_counts=True)
        t += r[:n].sum() / (big_n + 1)
        e += n / 2
        var += n * m / (12 * (big_n + 1) ** 2) * (
            big_n + 1 - float((tie**3 - tie).sum()) / (big_n * (big_n - 1)))
        diff = np.sign(np.asarray(va)[:, None] - np.asarray(vb)[None, :])
        wins += float(diff.sum())
        pairs += n * m
        n_a, n_b, n_strata = n_a + n, n_b + m, n_strata + 1
        per_stratum.append((r, n, big_n))
    nan = float("nan")
    if n_strata == 0 or var <= 0:
        return VanElteren(nan, nan, wins / pairs if pairs else nan, n_a, n_b, n_strata, False,
                          True)
    z = (t - e) / math.sqrt(var)
    n_arr = math.prod(math.comb(int(bn), n) for _, n, bn in per_stratum)
    if n_arr <= EXACT_MAX_ARRANGEMENTS:
        dist = np.zeros(1)
        for r, n, bn in per_stratum:
            sums = np.array([r[list(c)].sum() for c in itertools.combinations(range(int(bn)), n)])
            dist = (dist[:, None] + sums[None, :] / (bn + 1)).ravel()
        p = float(np.mean(np.abs(dist - e) >= abs(t - e) - 1e-9))
        return VanElteren(z, p, wins / pairs, n_a, n_b, n_strata, True, False)
    return VanElteren(z, float(2 * sps.norm.sf(abs(z))), wins / pairs, n_a, n_b, n_strata,
                      False, False)
