"""Tests of featurepath.analysis.discover against scipy/statsmodels and planted features."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from featurepath.analysis.discover import DISCOVER_COLUMNS, discover_features
from featurepath.errors import DataError


def _planted(seed: int = 0):
    """60 bankrupt and 90 safe points; f0 up before bankruptcy, f1 down, f2 null, f3 constant."""
    rng = np.random.default_rng(seed)
    n_b, n_s = 60, 90
    y = np.r_[np.ones(n_b, bool), np.zeros(n_s, bool)]
    X = rng.normal(0.0, 1.0, (n_b + n_s, 6))
    X[y, 0] += 1.5
    X[y, 1] -= 1.0
    X[:, 3] = 2.0  # dead / constant latent
    X[y, 4] += 0.1  # tiny shift: may be significant but below min_d
    layers = np.array([9, 9, 17, 17, 26, 26])
    ids = np.array([1, 2, 3, 4, 5, 6])
    return X, y, layers, ids


def test_columns_and_known_values() -> None:
    X, y, layers, ids = _planted()
    df = discover_features(X, y, layers, ids)
    assert list(df.columns) == DISCOVER_COLUMNS
    row = df.set_index("feature").loc["L9-1"]
    ref = sps.ttest_ind(X[y, 0], X[~y, 0], equal_var=False)
    assert row["t"] == pytest.approx(ref.statistic)
    assert row["p"] == pytest.approx(ref.pvalue)
    assert row["mean_risky"] == pytest.approx(X[y, 0].mean())
    assert row["mean_safe"] == pytest.approx(X[~y, 0].mean())
    n1, n2 = y.sum(), (~y).sum()
    sp = np.sqrt(((n1 - 1) * X[y, 0].var(ddof=1) + (n2 - 1) * X[~y, 0].var(ddof=1)) / (n1 + n2 - 2))
    assert row["d"] == pytest.approx((X[y, 0].mean() - X[~y, 0].mean()) / sp)


def test_bh_over_all_layers_and_degenerate_excluded() -> None:
    X, y, layers, ids = _planted()
    df = discover_features(X, y, layers, ids).set_index("feature")
    tested = df[~df["degenerate"]]
    ref = multipletests(tested["p"].to_numpy(), method="fdr_bh")[1]
    np.testing.assert_allclose(tested["q"].to_numpy(), ref)
    const = df.loc["L17-4"]
    assert const["degenerate"] and np.isnan(const["q"]) and not const["candidate"]
    assert const["direction"] == "none"


def test_candidates_direction_and_sorting() -> None:
    X, y, layers, ids = _planted()
    df = discover_features(X, y, layers, ids, alpha=0.05, min_d=0.3)
    by = df.set_index("feature")
    assert by.loc["L9-1", "candidate"] and by.loc["L9-1", "direction"] == "risky"
    assert by.loc["L9-2", "candidate"] and by.loc["L9-2", "direction"] == "safe"
    assert not by.loc["L26-5", "candidate"]  # |d| ~ 0.1 < min_d
    assert set(df[df["candidate"]]["feature"]) == {"L9-1", "L9-2"}
    q = df["q"].to_numpy()
    finite = q[np.isfinite(q)]
    assert np.all(np.diff(finite) >= 0)
    assert df["degenerate"].iloc[-1]  # untested features last


def test_input_errors() -> None:
    X, y, layers, ids = _planted()
    with pytest.raises(DataError):
        discover_features(X, y[:-1], layers, ids)
    with pytest.raises(DataError):
        discover_features(X, y, layers[:-1], ids)
    with pytest.raises(DataError):
        discover_features(X, np.zeros_like(y), layers, ids)  # no bankrupt games


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 8))
def test_q_bounds_and_candidate_rule(seed: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20, m))
    y = np.arange(20) % 2 == 0
    df = discover_features(X, y, np.zeros(m, int), np.arange(m), alpha=0.1, min_d=0.2)
    q, p = df["q"].to_numpy(), df["p"].to_numpy()
    ok = np.isfinite(q)
    assert np.all(q[ok] >= p[ok] - 1e-12) and np.all(q[ok] <= 1)
    expect = ok & (q < 0.1) & (np.abs(df["d"].to_numpy()) > 0.2)
    assert np.array_equal(df["candidate"].to_numpy(), expect)
