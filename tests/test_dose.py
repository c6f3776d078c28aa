"""Dose slopes: cluster-robust OLS against statsmodels, and the slope's null band."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from featurepath.analysis.dose import cluster_ols_slope, dose_slopes, dose_tables


def test_cluster_slope_matches_statsmodels() -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(8), 6)
    x = np.tile([-2.0, -1, 0, 1, 2, 3], 8)
    y = 0.3 * x + rng.normal(0, 1, 8)[groups] + rng.normal(0, 0.5, x.size)
    fit = sm.OLS(y, sm.add_constant(x)).fit(cov_type="cluster", cov_kwds={"groups": groups})
    slope, se = cluster_ols_slope(x, y, groups)
    assert slope == pytest.approx(fit.params[1])
    assert se == pytest.approx(fit.bse[1])


def test_slope_p_is_statsmodels_cluster_t() -> None:
    """dose_slopes' p: statsmodels' cluster-robust OLS with ``use_t=True`` (t on G - 1 df,
    G = prompts), fitted to the feature's ladder with the baseline as dose 1."""
    trials = _trials(0.01, [0.0, 0.02], n_prompts=7)
    out = dose_slopes(trials)
    f = out[(out["arm"] == "feature") & (out["metric"] == "p_stop")].iloc[0]
    ladder = trials[trials["arm"].isin(["feature", "baseline"])]
    x = ladder["scale"].fillna(1.0).to_numpy()
    fit = sm.OLS(ladder["p_stop"].to_numpy(), sm.add_constant(x)).fit(
        cov_type="cluster", cov_kwds={"groups": ladder["trial"].to_numpy()}, use_t=True)
    assert f["slope"] == pytest.approx(fit.params[1])
    assert f["p"] == pytest.approx(fit.pvalues[1], rel=1e-6)


def test_degenerate_without_two_clusters() -> None:
    s, se = cluster_ols_slope(np.array([0.0, 1, 2]), np.array([1.0, 2, 3]), np.zeros(3))
    assert np.isnan(s) and np.isnan(se)


def _trials(slope_feature: float, slopes_null: list[float], n_prompts: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    prompt_effect = rng.normal(0, 0.05, n_prompts)

    def add(arm, feature, k, dose, slope):
        for t in range(n_prompts):
            rows.append(dict(feature=feature, layer=1 if feature else -1,
                             feature_id=2 if feature else -1, condition=f"d{dose}",
                             context="ctx", patch="scale" if arm != "baseline" else "none",
                             method="delta", trial=t, prompt_id=f"p{t}", action="bet",
                             valid=True, value=np.nan,
                             scale=dose if arm != "baseline" else np.nan,
                             p_stop=0.4 + slope * (dose - 1) + prompt_effect[t]
                             + rng.normal(0, 0.002), arm=arm, null_index=k))

    for d in (0.0, 2.0, 3.0):
        add("feature", "L1-2", -1, d, slope_feature)
        for k, s in enumerate(slopes_null):
            add("null", "L1-2", k, d, s)
    add("baseline", "", -1, 1.0, 0.0)
    return pd.DataFrame(rows)


def test_feature_slope_against_its_null_slopes() -> None:
    nulls = list(np.linspace(-0.01, 0.01, 39))
    out = dose_slopes(_trials(0.1, nulls))
    f = out[(out["arm"] == "feature") & (out["metric"] == "p_stop")].iloc[0]
    assert f["slope"] == pytest.approx(0.1, abs=0.01)
    assert f["null_n"] == 39 and f["null_p"] == pytest.approx(1 / 40)
    assert bool(f["beats_null"])
    inside = dose_slopes(_trials(0.005, nulls))
    g = inside[(inside["arm"] == "feature") & (inside["metric"] == "p_stop")].iloc[0]
    assert not bool(g["beats_null"])


def test_inactive_feature_slope_is_degenerate_not_inside_the_band() -> None:
    """A feature that never fires reproduces its baseline at every dose (P(stop) up to
    rounding), and so does each of its null arms (their clamps are zero too): its slope of ~0
    is no dose response, so it is degenerate (no p, never beats or sits inside a band); its
    null arms still form a band. Causal's rule: a feature whose own arm changes nothing while
    its null arms move behaviour is a real null result, tested as usual."""
    trials = _trials(0.0, [0.02, -0.01, 0.03])
    base = trials[trials["arm"] == "baseline"].set_index("trial")
    moved = trials.copy()
    patched = trials["arm"] != "baseline"
    rounding = np.random.default_rng(7).normal(0, 1e-8, int(patched.sum()))
    trials.loc[patched, "p_stop"] = (base.loc[trials.loc[patched, "trial"], "p_stop"].to_numpy()
                                     + rounding)
    feat = moved["arm"] == "feature"
    moved.loc[feat, "p_stop"] = trials.loc[feat, "p_stop"]
    m = dose_slopes(moved)
    m = m[(m["arm"] == "feature") & (m["metric"] == "p_stop")].iloc[0]
    assert not m["degenerate"] and m["se"] > 0 and m["null_n"] == 3
    out = dose_slopes(trials)
    f = out[out["arm"] == "feature"]
    assert (f.loc[f["metric"] == "p_stop", "se"] > 0).all()  # degenerate by the rule, not SE
    assert f["degenerate"].all() and f["p"].isna().all() and f["null_p"].isna().all()
    assert not f["beats_null"].any()
    assert (f.loc[f["metric"] == "p_stop", "null_n"] == 3).all()
    # the same ladder with a real (small) dose response is not degenerate
    live = dose_slopes(_trials(0.005, [0.02, -0.01, 0.03]))
    assert not live.loc[(live["arm"] == "feature") & (live["metric"] == "p_stop"),
                        "degenerate"].any()


def test_curves_are_the_ladders_means_per_dose() -> None:
    trials = _trials(0.1, [0.0, 0.02])
    _, curves = dose_tables(trials)
    base = trials[trials["arm"] == "baseline"]
    for (arm, k), g in trials[trials["arm"] != "baseline"].groupby(["arm", "null_index"]):
        hand = pd.concat([g.assign(d=g["scale"]), base.assign(d=1.0)]).groupby("d")["p_stop"]
        got = curves[(curves["arm"] == arm) & (curves["null_index"] == k)
                     & (curves["metric"] == "p_stop")].sort_values("dose")
        np.testing.assert_allclose(got["dose"], [0.0, 1.0, 2.0, 3.0])
        np.testing.assert_allclose(got["mean"], hand.mean().to_numpy())
        assert got["n_trials"].tolist() == hand.size().tolist()
    stop = curves[(curves["metric"] == "stop_rate") & (curves["arm"] == "feature")]
    assert (stop["mean"] == 0.0).all()  # every decision of _trials is a bet


def test_causal_removes_dose_tables_a_rerun_no_longer_has(tmp_path) -> None:
    from featurepath.analysis.causal import run_causal
    from featurepath.config import RunConfig
    from featurepath.rundir import RunDir

    rd = RunDir(tmp_path)
    trials = _trials(0.1, [0.0, 0.01, -0.01])
    trials.to_parquet(rd.trials)
    cfg = RunConfig()
    cfg.analysis.n_boot = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_causal(tmp_path, cfg)
        assert rd.dose_slopes.exists() and rd.dose_curves.exists()
        one = trials[(trials["arm"] == "baseline") | (trials["scale"] == 2.0)].copy()
        one.loc[one["arm"] != "baseline", ["patch", "scale", "value"]] = ["value", np.nan, 3.0]
        one.to_parquet(rd.trials)
        run_causal(tmp_path, cfg)
    for path in (rd.dose_slopes, rd.dose_curves, rd.dose_response):
        assert not path.exists() and not path.with_suffix(".csv").exists(), path
