"""Dose–response slopes against the null directions' slopes (issue 12, the revised study's test).

For every arm that was patched at two or more doses (``scale`` conditions, e.g. the
``patch.doses`` ladder) in one context, the outcome is regressed on the dose at the trial level
— P(exit) from the decision token, and each rate metric's indicator over every parsed decision — with the
context's baseline rows as dose 1 (a scale-1 clamp is a no-op). Trials of one prompt are not
independent (they share the decision-token state), so the slope's standard error is
cluster-robust with prompts as clusters (Liang & Zeger 1986; CR1 small-sample factor
``G/(G-1) · (N-1)/(N-k)``, as statsmodels' ``cov_type="cluster"``), and its p comes from a t
distribution with ``G - 1`` degrees of freedom, G the number of prompts (the usual few-cluster
reference, Cameron & Miller 2015; statsmodels' ``use_t=True``): the demo's 24 prompts would
otherwise give normal p-values like 1e-66 for a slope a paired test puts at 1e-13.

A feature's slope is then placed in the band of its null arms' slopes (same doses, same
prompts): ``null_z`` and the empirical ``null_p`` of :mod:`featurepath.analysis.null_band`, BH
over the feature slopes. A feature "has a dose response" when its slope beats the band.

Beside the slopes, the mean outcome at each dose of every ladder (``dose_curves``, null arms
included): what the report draws, so the reader sees the feature's line against the lines of
the random directions, not only a number.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from featurepath.analysis.null_band import ZeroSizeCheck, null_band
from featurepath.analysis.run_data import (
    PatchedGroup,
    action_counts,
    normalise_trials,
    valid_amounts,
)
from featurepath.analysis.stats import bh_fdr, spearman
from featurepath.rundir import DOSE_COLUMNS, DOSE_CURVE_COLUMNS, SLOPE_COLUMNS


def cluster_ols_slope(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """``(slope, cluster-robust SE)`` of ``y ~ 1 + x`` with CR1 correction; NaN when fewer than
    two clusters or two distinct x."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, groups = x[ok], y[ok], groups[ok]
    n = x.size
    uniq = pd.unique(groups)
    if n < 3 or np.unique(x).size < 2 or uniq.size < 2:
        return float("nan"), float("nan")
    X = np.column_stack([np.ones(n), x])
    XtX_inv = np.linalg.inv(X.T @ X)
    beta = XtX_inv @ X.T @ y
    resid = y - X @ beta
    meat = np.zeros((2, 2))
    for g in uniq:
        m = groups == g
        s = X[m].T @ resid[m]
        meat += np.outer(s, s)
    G, k = uniq.size, 2
    c = G / (G - 1) * (n - 1) / (n - k)
    cov = c * XtX_inv @ meat @ XtX_inv
    return float(beta[1]), float(np.sqrt(max(cov[1, 1], 0.0)))


def _outcome(df: pd.DataFrame, spec) -> np.ndarray:
    """Per-trial outcome of a metric: the readout, or for a rate 1/0 over parsed decisions."""
    if spec.kind == "readout":
        return df["readout"].to_numpy(dtype=float)
    parsed = df["action"].notna().to_numpy()
    return np.where(parsed, df["action"].isin(list(spec.actions)).to_numpy(dtype=float), np.nan)


def _default_metrics() -> tuple:
    from featurepath.config import task_of

    return tuple(task_of().metrics)


LADDER_KEYS = ["arm", "feature", "layer", "feature_id", "null_index", "context"]


def outcomes(metrics) -> list:
    """The metrics a dose ladder is fitted on: the readout, then the rates (``MetricSpec``s of
    kind ``readout`` and ``rate``, in that order)."""
    return ([m for m in metrics if m.kind == "readout"]
            + [m for m in metrics if m.kind == "rate"])


def _ladders(trials: pd.DataFrame) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """Each arm × feature × null index × context patched at a scale, with its trials and its
    context's baseline trials as dose 1 (column ``_dose``); skipped when it has one scale and
    no baseline (one dose: no slope)."""
    df = normalise_trials(trials)
    scaled = df[np.isfinite(df["scale"]) & (df["arm"] != "baseline")]
    if scaled.empty:
        return
    base = df[(df["arm"] == "baseline") & (df["method"] == "delta")]
    for key, g in scaled.groupby(LADDER_KEYS, sort=True):
        b = base[base["context"] == key[5]]
        if len(set(g["scale"])) < 2 and b.empty:
            continue
        yield key, pd.concat([g.assign(_dose=g["scale"]), b.assign(_dose=1.0)],
                             ignore_index=True)


def _zero_size(ladders: list[tuple[tuple, pd.DataFrame]]) -> set[tuple[str, str]]:
    """``(feature, context)`` of the ladders whose intervention had size zero at every dose, by
    causal's rule (:class:`~featurepath.analysis.null_band.ZeroSizeCheck`: the feature arm and
    every one of its null arms reproduce the baseline trial for trial), applied dose by dose:
    a feature that never fires. Its slope of ~1e-17 is rounding, not a dose response."""
    check, doses = ZeroSizeCheck(), {}
    for (arm, feature, layer, fid, k, ctx), data in ladders:  # feature arms before null arms
        base = data[data["arm"] == "baseline"]
        if base.empty:
            continue
        for scale, g in data[data["arm"] != "baseline"].groupby("scale"):
            dose = f"dose{scale:g}"
            check.add(PatchedGroup(feature, int(layer), int(fid), ctx, dose, "scale", "delta",
                                   float("nan"), float(scale), g, base, "", arm, int(k)))
            if arm == "feature":
                doses.setdefault((feature, ctx), set()).add(dose)
    zero = check.keys
    return {fc for fc, ds in doses.items() if all((*fc, d) in zero for d in ds)}


def dose_tables(trials: pd.DataFrame, alpha: float = 0.05, metrics=None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(slopes, curves)`` in one pass over the ladders (``metrics``: the task's
    ``MetricSpec``s, default the default task's).

    ``slopes`` (:data:`SLOPE_COLUMNS`): one row per arm × feature × null index × context ×
    metric patched at ≥ 2 doses, the null arms' rows folded into each feature's band.
    ``curves`` (:data:`DOSE_CURVE_COLUMNS`): the mean outcome at each dose of the same ladders,
    null arms included — the points each slope is the (trial-weighted) least-squares line
    through, so a figure of them shows the data the slope was fitted to.
    """
    from scipy.stats import t as student_t

    rows, points = [], []
    ladders = list(_ladders(trials))
    zero_size = _zero_size(ladders)
    for key, data in ladders:
        arm, feature, layer, fid, k, ctx = key
        ids = dict(arm=arm, feature=feature, layer=int(layer), feature_id=int(fid),
                   null_index=int(k), context=ctx)
        x = data["_dose"].to_numpy(dtype=float)
        doses = np.unique(x)  # sorted
        zero = arm == "feature" and (feature, ctx) in zero_size
        clusters = data["prompt_id"].astype(str).to_numpy()
        for spec in outcomes(metrics if metrics is not None else _default_metrics()):
            metric = spec.name
            y = _outcome(data, spec)
            slope, se = cluster_ols_slope(x, y, clusters)
            deg = zero or not (np.isfinite(se) and se > 0)
            z = slope / se if not deg else float("nan")
            df_t = pd.unique(clusters[np.isfinite(y)]).size - 1
            rows.append(dict(**ids, metric=metric, n_doses=len(doses),
                             doses=",".join(f"{d:g}" for d in doses),
                             n_trials=int(np.isfinite(y).sum()),
                             n_prompts=int(data["prompt_id"].nunique()), slope=slope, se=se,
                             z=z, p=float(2 * student_t.sf(abs(z), df_t)) if not deg
                             else float("nan"),
                             degenerate=deg, condition="dose"))
            for d in doses:
                at = np.isfinite(y) & (x == d)
                points.append(dict(**ids, metric=metric, dose=float(d), n_trials=int(at.sum()),
                                   mean=float(y[at].mean()) if at.any() else float("nan")))
    curves = pd.DataFrame(points, columns=DOSE_CURVE_COLUMNS)
    if not rows:
        return pd.DataFrame(columns=SLOPE_COLUMNS), curves
    out = pd.DataFrame(rows)
    real = (out["arm"] != "null").to_numpy()
    q = np.full(len(out), np.nan)
    q[real] = bh_fdr(out.loc[real, "p"].to_numpy(dtype=float))
    out["q"] = q
    out, _ = null_band(out, alpha, keys=["feature", "context", "condition", "metric"],
                       effect="slope")
    return out[SLOPE_COLUMNS], curves


def dose_slopes(trials: pd.DataFrame, alpha: float = 0.05, metrics=None) -> pd.DataFrame:
    """The slopes of :func:`dose_tables`."""
    return dose_tables(trials, alpha, metrics)[0]


def scale_trend(trials: pd.DataFrame, metrics=None) -> pd.DataFrame:
    """Spearman correlation of patch scale with each rate metric and with the mean amount, per
    feature x context (``metrics``: the task's ``MetricSpec``s, default the default task's).

    Uses the patched conditions that carry a finite ``scale`` (one level per distinct scale,
    aggregated over its valid trials); needs three or more levels, else degenerate. BH-FDR over
    all features x contexts x metrics. Empty (with :data:`DOSE_COLUMNS`) when no condition has a
    scale.
    """
    metrics = metrics if metrics is not None else _default_metrics()
    trend = ([m for m in metrics if m.kind == "rate"]
             + [m for m in metrics if m.kind == "amount"])
    df = normalise_trials(trials)
    df = df[np.isfinite(df["scale"]) & df["arm"].isin(["feature", "direction"])]
    rows: list[dict[str, object]] = []
    for (feature, layer, fid, ctx, method), g in df.groupby(
        ["feature", "layer", "feature_id", "context", "method"], sort=True
    ):
        levels: list[list[float]] = []
        for scale, lv in g.groupby("scale", sort=True):
            row = [float(scale)]
            for spec in trend:
                if spec.kind == "rate":
                    k, n_ok = action_counts(lv, spec.actions)
                    row.append(k / n_ok if n_ok else float("nan"))
                else:
                    amounts = valid_amounts(lv)
                    row.append(float(amounts.mean()) if amounts.size else float("nan"))
            levels.append(row)
        arr = np.array(levels, dtype=float)
        for j, metric in enumerate((m.name for m in trend), start=1):
            ok = np.isfinite(arr[:, j])
            res = spearman(arr[ok, 0], arr[ok, j])
            rows.append({
                "feature": feature, "layer": int(layer), "feature_id": int(fid), "context": ctx,
                "method": method, "metric": metric, "n_levels": int(ok.sum()),
                "scales": ",".join(f"{s:g}" for s in arr[ok, 0]),
                "values": ",".join(f"{v:.4g}" for v in arr[ok, j]),
                "rho": res.effect, "ci_low": res.ci_low, "ci_high": res.ci_high,
                "p": res.p, "degenerate": bool(res.degenerate),
            })
    if not rows:
        return pd.DataFrame(columns=DOSE_COLUMNS)
    out = pd.DataFrame(rows)
    out["q"] = bh_fdr(out["p"].to_numpy(dtype=float))
    return out[DOSE_COLUMNS]


