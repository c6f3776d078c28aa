"""Each effect against the band of the same intervention along random directions.

Why: a patch of any direction of the same size may move behaviour (any large perturbation makes
a model more erratic), so "significant against the baseline" does not say the *feature* did it.
The original study's SAE direction sat inside the band of 20 norm-matched random directions
(z = +0.75) and its claims were withdrawn. Here every test of a feature arm is compared with the
same test of its null arms (same feature magnitude, same condition, same prompts and seeds,
other directions):

- ``null_n``, ``null_mean``, ``null_sd`` (ddof 1) of the null arms' effects;
- ``null_z = (effect - null_mean) / null_sd``;
- ``null_p``: the empirical two-sided p with the +1 correction (Phipson & Smyth 2010),
  ``(1 + #{k : |e_k - m| >= |e - m|}) / (1 + K)`` with ``m = null_mean`` — the rank of the
  feature's distance from the band's centre among the K null distances. Its smallest value is
  ``1 / (K + 1)``: with K null directions nothing can beat the band at a level below that;
- ``null_q``: Benjamini–Hochberg over every feature test that has a band;
- ``beats_null``: ``null_q <= alpha``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from featurepath.analysis.stats import bh_fdr

BAND_COLUMNS = ["null_n", "null_mean", "null_sd", "null_z", "null_p", "null_q", "beats_null"]
KEYS = ["feature", "context", "condition", "metric"]


def controlled_verdict(tests: pd.DataFrame, controlled: bool) -> pd.Series:
    """What a test needs beside beating the baseline. In a run with null arms a feature test
    must beat its band — one whose condition got no null arms is not verified against random
    directions and does not count; the behavioural direction (the positive control) and runs
    without null arms are judged against the baseline alone."""
    if not controlled:
        return pd.Series(True, index=tests.index)
    return (tests["arm"] == "direction") | tests["beats_null"].astype(bool)


def empirical_p(effect: float, band: np.ndarray) -> float:
    """``(1 + #{|band - m| >= |effect - m|}) / (1 + len(band))``, ``m`` the band's mean; NaN
    without a band or a finite effect."""
    band = band[np.isfinite(band)]
    if band.size == 0 or not np.isfinite(effect):
        return float("nan")
    m = band.mean()
    return float((1 + np.sum(np.abs(band - m) >= abs(effect - m))) / (1 + band.size))


def null_band(tests: pd.DataFrame, alpha: float, keys: list[str] | None = None,
              effect: str = "effect") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(tests of the non-null arms with BAND_COLUMNS added, the null arms' own tests)``.

    ``tests`` holds one row per arm × ``keys`` (default: feature × context × condition ×
    metric) with ``arm``, the ``effect`` column and ``degenerate``. Arms without null rows get
    ``null_n = 0`` and NaN band columns (``beats_null`` False)."""
    keys = keys or KEYS
    is_null = tests["arm"] == "null"
    real, nulls = tests[~is_null].copy(), tests[is_null].copy()
    ok = nulls[~nulls["degenerate"].astype(bool) & np.isfinite(nulls[effect])]
    bands = {k: g[effect].to_numpy(float) for k, g in ok.groupby(keys, sort=False)}
    cols: dict[str, list[float]] = {c: [] for c in BAND_COLUMNS[:5]}
    for key, eff, deg in zip(zip(*(real[k] for k in keys), strict=True), real[effect],
                             real["degenerate"], strict=True):
        band = bands.get(key if len(keys) > 1 else key[0], np.array([]))
        n = band.size
        mean = float(band.mean()) if n else float("nan")
        sd = float(band.std(ddof=1)) if n > 1 else float("nan")
        eff = float(eff) if not deg else float("nan")
        cols["null_n"].append(n)
        cols["null_mean"].append(mean)
        cols["null_sd"].append(sd)
        cols["null_z"].append((eff - mean) / sd if sd and np.isfinite(sd) and sd > 0
                              else float("nan"))
        cols["null_p"].append(empirical_p(eff, band))
    for c, v in cols.items():
        real[c] = v
    real["null_n"] = real["null_n"].astype(int)
    real["null_q"] = bh_fdr(real["null_p"].to_numpy(float))
    real["beats_null"] = (real["null_q"] <= alpha).fillna(False).astype(bool)
    return real.reset_index(drop=True), nulls.reset_index(drop=True)
