"""Statistics of the discover stage: which SAE features separate the task's two groups of games.

The lead's pipeline computes one activation per decision point and feature; this module tests,
feature by feature, whether games of group A (the behaviour under study, ``Task.split``) differ
from games of group B (its opposite).

Why these choices:
- The unit is the *game*, not the decision point: a game has many decision points, and the
  same game state (the opening balance, say) recurs across games, so counting points as
  independent observations made a null feature "significant" in 55% of runs. Given ``games``,
  each game contributes one observation, the mean activation over its decision points.
- Welch's t-test (Welch 1947): the two groups differ in size and spread.
- Benjamini–Hochberg FDR (Benjamini & Hochberg 1995) over *all* features of *all* layers at once:
  correcting layer by layer would let the number of layers inflate the false discoveries.
- Cohen's d (Cohen 1988) next to q: with thousands of decision points tiny shifts are
  "significant", and a patch at a value barely different from the natural one does nothing.
- Constant features (dead latents, or identical states) are degenerate: not tested, q NaN, so
  they neither dilute nor join the FDR family.

Each row keeps the two patch values used later: ``mean_safe`` (group B's mean, the safe patch
value) and ``mean_risky`` (group A's mean, the risky patch value).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import sparse

from featurepath.analysis.moments import welch_t_from_moments
from featurepath.analysis.stats import MatrixResult, bh_fdr, welch_t_matrix
from featurepath.errors import DataError
from featurepath.rundir import DISCOVER_COLUMNS, feature_key

__all__ = ["DISCOVER_COLUMNS", "discover_features", "discover_from_moments"]


def _per_game(X: np.ndarray, y: np.ndarray, games: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean activation of each game over its decision points, and the game's label."""
    if games.size != y.size:
        raise DataError(f"games has {games.size} entries for {y.size} decision points")
    codes, _ = pd.factorize(pd.Series(games, dtype=object), sort=True)
    n_games = int(codes.max()) + 1 if codes.size else 0
    label_sum = np.bincount(codes, weights=y.astype(float), minlength=n_games)
    size = np.bincount(codes, minlength=n_games).astype(float)
    if np.any((label_sum > 0) & (label_sum < size)):
        raise DataError("a game has decision points labelled both group A and group B")
    mean = sparse.csr_matrix((1.0 / size[codes], (codes, np.arange(codes.size))),
                             shape=(n_games, codes.size))
    return np.asarray(mean @ X), label_sum > 0



def discover_features(
    acts: ArrayLike,
    in_a: ArrayLike,
    layers: ArrayLike,
    feature_ids: ArrayLike,
    alpha: float = 0.05,
    min_d: float = 0.3,
    games: ArrayLike | None = None,
) -> pd.DataFrame:
    """Test every feature (column of ``acts`` [n_points, n_feat]) for group A vs group B games.

    ``in_a`` [n_points] is True for decision points of games of group A (e.g. ruined) and False
    for group B (e.g. exited on their own). ``t`` and ``d`` are signed A minus B, so
    ``direction`` is "risky" when the feature is higher in group A (d > 0), "safe" when
    lower, and "none" for degenerate (untested) features. ``candidate`` = q <= alpha and
    |d| >= min_d. Sorted by q, then |d| descending; degenerate features come last.

    ``games`` [n_points] names the game of each decision point; the test then runs on one mean
    activation per game (see the module docstring), and a game whose points disagree on
    ``in_a`` is an error. Without it every point counts as its own game (only right when
    each game contributed one point).
    """
    X = np.asarray(acts, dtype=np.float64)
    y = np.asarray(in_a)
    lay = np.asarray(layers).astype(np.int64).ravel()
    fid = np.asarray(feature_ids).astype(np.int64).ravel()
    if X.ndim != 2:
        raise DataError(f"activations must be [points, features], got shape {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise DataError(f"in_a has {y.size} labels for {X.shape[0]} decision points")
    if lay.size != X.shape[1] or fid.size != X.shape[1]:
        raise DataError(
            f"{X.shape[1]} feature columns but {lay.size} layers and {fid.size} feature ids"
        )
    _check_thresholds(alpha, min_d)
    y = y.astype(bool)
    unit = "decision points"
    if games is not None:
        X, y = _per_game(X, y, np.asarray(games).ravel())
        unit = "games"
    _check_groups(int(y.sum()), int((~y).sum()), unit)
    return _table(welch_t_matrix(X[y], X[~y]), lay, fid, alpha, min_d)


def discover_from_moments(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...],
                          n_a: int, n_b: int, layers: ArrayLike,
                          feature_ids: ArrayLike, alpha: float = 0.05,
                          min_d: float = 0.3) -> pd.DataFrame:
    """``discover_features`` from per-feature ``(n, mean, m2, lo, hi)`` of the group A and the
    group B observations (``analysis.moments.ColumnMoments``), for the streaming discover stage
    that never holds the ``[points, features]`` matrix; the same table."""
    lay = np.asarray(layers).astype(np.int64).ravel()
    fid = np.asarray(feature_ids).astype(np.int64).ravel()
    if not all(len(m) == lay.size == fid.size for m in (*a, *b)):
        raise DataError("moments, layers and feature ids must have one entry per feature")
    _check_thresholds(alpha, min_d)
    _check_groups(n_a, n_b)
    return _table(welch_t_from_moments(a, b), lay, fid, alpha, min_d)


def _check_thresholds(alpha: float, min_d: float) -> None:
    if not (0.0 < alpha < 1.0) or min_d < 0:
        raise DataError("alpha must lie in (0, 1) and min_d must be non-negative")


def _check_groups(n_a: int, n_b: int, unit: str = "decision points") -> None:
    if n_a < 2 or n_b < 2:
        raise DataError(
            f"discover needs at least two {unit} from each group of games "
            f"(got {n_a} in group A, {n_b} in group B)"
        )


def _table(res: MatrixResult, lay: np.ndarray, fid: np.ndarray, alpha: float,
           min_d: float) -> pd.DataFrame:
    t, p, d, mean_a, mean_b, deg = res
    q = bh_fdr(p)
    with np.errstate(invalid="ignore"):
        candidate = (~deg) & (q <= alpha) & (np.abs(d) >= min_d)
    direction = np.where(deg | ~np.isfinite(d), "none", np.where(d > 0, "risky", "safe"))
    df = pd.DataFrame({
        "feature": [feature_key(a, b) for a, b in zip(lay, fid, strict=True)],
        "layer": lay,
        "feature_id": fid,
        "mean_safe": mean_b,
        "mean_risky": mean_a,
        "t": t,
        "p": p,
        "q": q,
        "d": d,
        "degenerate": deg.astype(bool),
        "candidate": candidate.astype(bool),
        "direction": direction,
    })
    df["_absd"] = -np.abs(df["d"])
    df = df.sort_values(["q", "_absd"], na_position="last", kind="mergesort")
    return df.drop(columns="_absd").reset_index(drop=True)
