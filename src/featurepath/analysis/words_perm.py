"""Permutation p-values for the word analysis: responses, not tokens, are the unit.

Why: Monroe et al.'s z (see :mod:`featurepath.analysis.words`) treats every token as an
independent draw, but a sampled response repeats itself ("Total amount: $100" eight times) and
the words of one response move together. Turning z into a normal p-value then calls noise
significant: in a null simulation 52 of 300 comparisons had "significant" words. Here z is only
the *statistic*: its null distribution comes from shuffling whole responses between the patched
and the baseline group (a Monte Carlo permutation test; Good 2005, "Permutation, Parametric and
Bootstrap Tests of Hypotheses", ch. 3), so whatever dependence the tokens of a response have,
it travels with the response.

Cheap because counts are a sparse matrix: for a block of permutations, the patched group's word
totals are one sparse product of a 0/1 selection matrix with the response-by-word counts.
p = (1 + #{|z_perm| >= |z_obs|}) / (1 + n_perm) (Phipson & Smyth 2010, "Permutation p-values
should never be zero"), so the smallest p a word can reach is 1 / (1 + n_perm).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

__all__ = ["permutation_p"]

_BLOCK = 256  # permutations per sparse product: bounds memory at _BLOCK x words floats


def permutation_p(
    counts: sparse.csr_matrix,
    tokens: NDArray[np.float64],
    n_patched: int,
    z_obs: NDArray[np.float64],
    alpha: NDArray[np.float64],
    alpha0: float,
    n_perm: int,
    statistic: Callable[..., tuple[NDArray[np.float64], NDArray[np.float64]]],
    seed: int = 0,
) -> NDArray[np.float64]:
    """Two-sided permutation p of each word's z.

    ``counts`` [n_responses, words tested] holds the tested words' counts per response, the
    first ``n_patched`` rows being the patched group; ``tokens`` [n_responses] is each
    response's total token count over the *whole* vocabulary (the group totals n_i, n_j of the
    statistic); ``alpha`` the prior of the tested words; ``statistic`` is
    :func:`featurepath.analysis.words.log_odds_dirichlet` (passed in to keep the modules free of
    an import cycle). Deterministic for a given ``seed``.
    """
    n = counts.shape[0]
    total = np.asarray(counts.sum(axis=0)).ravel()
    n_tok = float(tokens.sum())
    ref = np.abs(z_obs) * (1.0 - 1e-12)  # ties count as extreme, float noise aside
    hits = np.zeros(z_obs.size)
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_perm:
        b = min(_BLOCK, n_perm - done)
        pick = np.argsort(rng.random((b, n)), axis=1)[:, :n_patched]
        sel = sparse.csr_matrix(
            (np.ones(b * n_patched), pick.ravel(), np.arange(0, b * n_patched + 1, n_patched)),
            shape=(b, n),
        )
        y_i = np.asarray((sel @ counts).todense())
        n_i = sel @ tokens
        _, z = statistic(y_i, total - y_i, alpha, alpha0,
                                  n_i=n_i[:, None], n_j=(n_tok - n_i)[:, None])
        hits += (np.abs(z) >= ref).sum(axis=0)
        done += b
    return (1.0 + hits) / (1.0 + n_perm)
