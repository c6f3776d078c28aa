"""The null band: empirical p with the +1 correction, z against the band, BH over the family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from featurepath.analysis.null_band import empirical_p, null_band


def test_empirical_p_by_hand() -> None:
    band = np.array([-1.0, 0.0, 1.0, 2.0])  # mean 0.5; distances 1.5, 0.5, 0.5, 1.5
    assert empirical_p(3.5, band) == pytest.approx(1 / 5)   # farther than all four
    assert empirical_p(2.0, band) == pytest.approx(3 / 5)   # ties count: 1 + 2
    assert empirical_p(0.5, band) == pytest.approx(5 / 5)   # at the centre
    assert np.isnan(empirical_p(1.0, np.array([])))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=30), st.floats(-5, 5))
def test_empirical_p_range(band, effect) -> None:
    p = empirical_p(effect, np.array(band))
    assert 1 / (len(band) + 1) - 1e-12 <= p <= 1.0


def _tests(effects_null: dict[str, list[float]], effects: dict[str, float]) -> pd.DataFrame:
    rows = []
    for f, e in effects.items():
        rows.append(dict(feature=f, context="risky", condition="amp", metric="p_stop",
                         arm="feature", null_index=-1, effect=e, degenerate=False))
        for k, en in enumerate(effects_null[f]):
            rows.append(dict(feature=f, context="risky", condition="amp", metric="p_stop",
                             arm="null", null_index=k, effect=en, degenerate=False))
    return pd.DataFrame(rows)


def test_band_columns_against_numpy_and_statsmodels() -> None:
    rng = np.random.default_rng(0)
    nulls = {"L1-1": list(rng.normal(0, 1, 39)), "L1-2": list(rng.normal(0, 1, 39))}
    real, null_rows = null_band(_tests(nulls, {"L1-1": 10.0, "L1-2": 0.1}), alpha=0.05)
    assert len(null_rows) == 78 and len(real) == 2
    a = real.set_index("feature")
    band = np.array(nulls["L1-1"])
    assert a.loc["L1-1", "null_mean"] == pytest.approx(band.mean())
    assert a.loc["L1-1", "null_sd"] == pytest.approx(band.std(ddof=1))
    assert a.loc["L1-1", "null_z"] == pytest.approx((10 - band.mean()) / band.std(ddof=1))
    assert a.loc["L1-1", "null_p"] == pytest.approx(1 / 40)
    q = multipletests(a["null_p"].to_numpy(), method="fdr_bh")[1]
    assert a["null_q"].to_numpy() == pytest.approx(q)
    assert bool(a.loc["L1-1", "beats_null"]) and not bool(a.loc["L1-2", "beats_null"])


def test_no_band_no_verdict() -> None:
    df = _tests({"L1-1": []}, {"L1-1": 3.0})
    real, _ = null_band(df, 0.05)
    assert real.loc[0, "null_n"] == 0 and np.isnan(real.loc[0, "null_p"])
    assert not real.loc[0, "beats_null"]
