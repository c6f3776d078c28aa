"""Issue 11, item 3: discover's unit is the game, not the decision point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from featurepath.analysis.discover import discover_features
from featurepath.errors import DataError


def _games(n_games: int = 40, points: int = 10, n_feat: int = 400, seed: int = 0):
    """Null features with a game-level effect: points of one game share most of their value."""
    rng = np.random.default_rng(seed)
    game = np.repeat(np.arange(n_games), points)
    bankrupt_game = rng.permutation(np.arange(n_games) < n_games // 2)
    X = rng.normal(0, 1, (n_games, n_feat))[game] + rng.normal(0, 0.3, (game.size, n_feat))
    return X, bankrupt_game[game], game


def test_one_observation_per_game_against_scipy() -> None:
    X, y, game = _games(n_feat=3)
    df = discover_features(X, y, np.full(3, 5), np.arange(3), games=[f"g{g}" for g in game])
    means = pd.DataFrame(X).groupby(game).mean().to_numpy()
    lab = pd.Series(y).groupby(game).first().to_numpy()
    for j in range(3):
        ref = sps.ttest_ind(means[lab, j], means[~lab, j], equal_var=False)
        r = df.set_index("feature_id").loc[j]
        assert r["p"] == pytest.approx(ref.pvalue) and r["t"] == pytest.approx(ref.statistic)
        assert r["mean_risky"] == pytest.approx(means[lab, j].mean())


def test_null_type_one_error_is_alpha_with_games() -> None:
    X, y, game = _games(seed=1)
    per_point = discover_features(X, y, np.full(400, 5), np.arange(400))
    per_game = discover_features(X, y, np.full(400, 5), np.arange(400), games=game)
    assert float((per_point["p"] < 0.05).mean()) > 0.3  # the pseudo-replicated version
    assert float((per_game["p"] < 0.05).mean()) < 0.09
    assert not per_game["candidate"].any()


def test_a_game_with_both_labels_is_an_error() -> None:
    X, y, game = _games(n_feat=2)
    y = y.copy()
    y[0] = not y[1]
    with pytest.raises(DataError, match="both group"):
        discover_features(X, y, np.full(2, 5), np.arange(2), games=game)
