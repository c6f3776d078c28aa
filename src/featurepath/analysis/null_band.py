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

A feature whose intervention had size zero (a scale clamp of a feature inactive on the prompts:
``scale × 0 = 0``) has null arms of size zero too, so its band is a point (sd 0, no z) that
tests nothing. :class:`ZeroSizeCheck` finds such feature × condition pairs — the feature arm and
every one of its (at least one) null arms reproduce the baseline trial for trial — and marks
their tests degenerate with ``test`` = ``"zero-size intervention"``: never significant, and
counted apart in the controls. Without null arms a no-op clamp is tested against the baseline
as usual (an A/A run must find nothing there, and does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from featurepath.analysis.run_data import PatchedGroup, reproduces_baseline
from featurepath.analysis.stats import bh_fdr
from featurepath.rundir import ZERO_SIZE_TEST

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


@dataclass
class ZeroSizeCheck:
    """Collects, group by group, which feature × context × condition interventions had size
    zero: the feature arm reproduces its baseline trial for trial
    (:func:`~featurepath.analysis.run_data.reproduces_baseline`) and so does every null arm of
    it, of which there is at least one: K random directions that all change nothing confirm
    that the size, not the direction, is zero. A null arm is compared only while its feature
    arm is still a candidate, so a run pays for the check only where the feature changed
    nothing. :func:`~featurepath.analysis.run_data.patched_groups` yields a feature arm before
    its null arms (sorted keys); a null arm seen without one (the behavioural direction's)
    rules its key out."""

    _feature: dict[tuple[str, str, str], bool] = field(default_factory=dict)
    _nulls: set[tuple[str, str, str]] = field(default_factory=set)
    _moved: set[tuple[str, str, str]] = field(default_factory=set)

    def add(self, g: PatchedGroup) -> None:
        """Look at one patched group (any arm; those without a baseline are ignored)."""
        if g.baseline is None or g.arm not in ("feature", "null"):
            return
        key = (g.feature, g.context, g.condition)
        if g.arm == "feature":
            self._feature[key] = reproduces_baseline(g.patched, g.baseline)
            return
        self._nulls.add(key)
        same = self._feature.get(key)
        if same is None or (same and key not in self._moved
                            and not reproduces_baseline(g.patched, g.baseline)):
            self._moved.add(key)

    @property
    def keys(self) -> set[tuple[str, str, str]]:
        """``(feature, context, condition)`` of every zero-size intervention."""
        return ({k for k, same in self._feature.items() if same} & self._nulls) - self._moved

    def mark(self, tests: pd.DataFrame) -> pd.DataFrame:
        """``tests`` (one row per arm × group × metric) with the feature-arm rows of zero-size
        interventions made degenerate: ``p`` NaN and ``test`` = :data:`ZERO_SIZE_TEST`."""
        zero = self.keys
        if not zero:
            return tests
        hit = (tests["arm"] == "feature").to_numpy() & np.fromiter(
            ((f, c, k) in zero for f, c, k in zip(tests["feature"], tests["context"],
                                                   tests["condition"], strict=True)),
            dtype=bool, count=len(tests))
        tests = tests.copy()
        tests.loc[hit, "degenerate"] = True
        tests.loc[hit, "p"] = float("nan")
        tests.loc[hit, "test"] = ZERO_SIZE_TEST
        return tests
