"""The dose–response part of the report: each feature's slope of P(exit) (and of the stop rate)
on the dose, against the slopes of random directions of the same size.

Why a section of its own: this is the test that undid the original study — its SAE direction's
dose-response lay inside the band of random directions. A feature that moves behaviour at one
dose may do no more than any push of its size; the ladder asks whether the feature's *slope* is
one a random direction would not give. The numbers come from ``dose_slopes`` and the figure's
points from ``dose_curves`` (both written by ``featurepath causal``, :mod:`featurepath.analysis.
dose`); nothing is refitted here. Every string from a file goes through :func:`esc`, and a run
without a ladder gets one line, as a run without null arms does in the Controls section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from featurepath.report.blocks import _figure, _section, _table
from featurepath.report.controls import band_limit, k_text, min_p_text
from featurepath.report.data import NOT_RUN, MetricView, RunData
from featurepath.report.format import _is_missing, esc, feature_order, fmt

MAX_DOSE_PANELS = 24
TITLE = "Dose–response against random directions"


def _yes(value: Any) -> bool:
    """A flag from a file: missing (NaN, None) is no, not ``bool(nan)``."""
    return not _is_missing(value) and bool(value)


def slope_verdict(rec: dict[str, Any]) -> str:
    """``outside band`` (``beats_null``), ``inside band``, ``no band`` or ``degenerate``."""
    if _yes(rec.get("degenerate")) or _is_missing(rec.get("slope")):
        return "degenerate"
    n = rec.get("null_n")
    if _is_missing(n) or int(n) == 0:
        return "no band"
    return "outside band" if _yes(rec.get("beats_null")) else "inside band"


def slope_rows(slopes: pd.DataFrame, view: MetricView | None = None) -> pd.DataFrame:
    """The feature and direction slopes of the known readouts, P(exit) first, features by
    layer and id, directions last; ``verdict_`` added. Null arms' rows are never in
    ``dose_slopes`` (they are the bands), but a hand-made table may carry some."""
    df = slopes
    if "arm" in df.columns:
        df = df[df["arm"].astype(str) != "null"]
    dose = (view or MetricView.of()).dose
    df = df[df["metric"].astype(str).isin(dose)].copy()
    if df.empty:
        return df.assign(verdict_=pd.Series(dtype=object))
    df["verdict_"] = [slope_verdict(r) for r in df.to_dict(orient="records")]
    keys = [(dose.index(str(m)), feature_order(str(f)), str(c))
            for m, f, c in zip(df["metric"], df["feature"], df["context"], strict=True)]
    return df.iloc[sorted(range(len(df)), key=keys.__getitem__)]


def _is_direction(arm: Any, feature: Any) -> bool:
    return str(arm) == "direction" or "~direction" in str(feature)


# --------------------------------------------------------------------------------------------
# the summary


@dataclass
class DoseSummary:
    """What the sentences above the table say, counted from ``dose_slopes``."""

    alpha: float
    band_sizes: list[int] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # metric -> verdict -> n
    outside: list[str] = field(default_factory=list)  # features outside their band, any readout
    directions: list[dict[str, Any]] = field(default_factory=list)  # the direction's P(exit)
    max_doses: int = 0
    short_nulls: list[str] = field(default_factory=list)  # nulls patched at fewer doses
    view: MetricView = field(default_factory=MetricView.of)  # the task's metric names

    def headline(self) -> str:
        """The plain sentence: which features have a dose response beyond random directions."""
        n_banded = sum(c.get("outside band", 0) + c.get("inside band", 0)
                       for c in self.counts.values())
        n_slopes = sum(sum(c.values()) for c in self.counts.values())
        if not n_slopes:
            return "No feature was patched along a ladder (only the behavioural direction)."
        if self.outside:
            names = ", ".join(self.outside[:8]) + (", …" if len(self.outside) > 8 else "")
            verb = "has" if len(self.outside) == 1 else "have"
            return f"{names} {verb} a dose response outside the band of random directions."
        if n_banded:
            return ("No feature's dose response lies outside the band of random directions: a "
                    "random direction of the same size changes behaviour with the dose as much.")
        if n_slopes == sum(c.get("degenerate", 0) for c in self.counts.values()):
            return "No feature slope could be estimated: every one is degenerate."
        return ("No feature slope has a band of random directions (patch.null_directions, or "
                "patch.null_conditions without the ladder's conditions), so the ladder cannot "
                "tell a feature from any push of its size.")


def _null_doses(curves: pd.DataFrame | None) -> dict[tuple[str, str], set[str]]:
    """The doses every null arm of a feature and context was patched at (their intersection),
    written as ``dose_slopes.doses`` writes them."""
    out: dict[tuple[str, str], set[str]] = {}
    if curves is None or not {"arm", "feature", "context", "null_index", "dose"} <= set(
            curves.columns):
        return out
    nulls = curves[curves["arm"].astype(str) == "null"]
    for (f, c, _k), g in nulls.groupby([nulls["feature"].astype(str),
                                        nulls["context"].astype(str), "null_index"]):
        doses = {f"{d:g}" for d in pd.to_numeric(g["dose"], errors="coerce").dropna()}
        out[(f, c)] = out.get((f, c), doses) & doses
    return out


def summarise_doses(rows: pd.DataFrame, alpha: float,
                    curves: pd.DataFrame | None = None,
                    view: MetricView | None = None) -> DoseSummary:
    """Count verdicts per readout among the feature slopes; note the direction's P(exit)
    slopes, the band sizes, the longest ladder and features whose null arms missed doses."""
    s = DoseSummary(alpha=alpha, view=view or MetricView.of())
    nulls = _null_doses(curves)
    for rec in rows.to_dict(orient="records"):
        metric, name = str(rec["metric"]), str(rec["feature"])
        if _is_direction(rec.get("arm"), name):
            if metric == s.view.readout:
                s.directions.append(rec)
            continue
        verdict = rec["verdict_"]
        s.counts.setdefault(metric, {}).setdefault(verdict, 0)
        s.counts[metric][verdict] += 1
        if verdict == "outside band" and name not in s.outside:
            s.outside.append(name)
        if verdict in ("outside band", "inside band"):
            s.band_sizes.append(int(rec["null_n"]))
        if not _is_missing(rec.get("n_doses")):
            s.max_doses = max(s.max_doses, int(rec["n_doses"]))
        own = {d for d in str(rec.get("doses", "")).split(",") if d}
        have = nulls.get((name, str(rec["context"])))
        if have is not None and own - have and name not in s.short_nulls:
            s.short_nulls.append(name)
    s.band_sizes = sorted(set(s.band_sizes))
    return s


def _sentences(s: DoseSummary) -> list[str]:
    """The summary as escaped HTML sentences (one list item each)."""
    items = []
    for metric in s.view.dose:
        c = s.counts.get(metric)
        if not c:
            continue
        n = sum(c.values())
        text = (f"{s.view.labels.get(metric, metric)}: {c.get('outside band', 0)} of {n} feature slopes "
                f"(feature × context) lie outside their band of random directions (null q ≤ "
                f"{s.alpha:g}), {c.get('inside band', 0)} inside it")
        extra = [f"{c[v]} {v}" for v in ("no band", "degenerate") if c.get(v)]
        items.append(esc(text + (", " + ", ".join(extra) if extra else "") + "."))
    if s.band_sizes:
        text = (f"Each band holds {k_text(s.band_sizes)} null slopes (the same ladder along "
                "random directions of the feature's size); the smallest possible null p is "
                f"{min_p_text(s.band_sizes)}.")
        limit = band_limit(s.band_sizes, s.alpha)
        items.append(esc(text + (f" {limit}" if limit else "")))
    if s.short_nulls:
        items.append(esc("The null arms of " + ", ".join(s.short_nulls[:8]) + " were patched "
                         "at fewer doses than the feature (patch.null_conditions leaves out "
                         "some of the ladder), so their slopes come from other doses: add the "
                         "ladder's conditions to patch.null_conditions."))
    if s.max_doses and s.max_doses <= 2:
        items.append(esc("Every ladder here has two doses (the baseline and one scale): a slope "
                         "is then the effect divided by the dose step. Three or more doses "
                         "(patch.doses) show whether the response grows with the dose."))
    for rec in s.directions[:4]:
        lo, hi = _ci(rec)
        if rec["verdict_"] in ("outside band", "inside band"):
            band = (f"against its own band of K = {int(rec['null_n'])} random directions of "
                    f"its size null z = {fmt(rec.get('null_z'))}, null p = "
                    f"{fmt(rec.get('null_p'))}: {rec['verdict_']}")
        else:
            band = "no band of its own (patch.direction_nulls)"
        items.append(esc(f"The behavioural direction ({rec['feature']}, {rec['context']}), the "
                         f"positive control, has a {s.view.labels.get(s.view.readout, 'P(exit)')}"
                         f" slope of {fmt(rec['slope'])} per unit "
                         f"of dose (95% CI {fmt(lo)} to {fmt(hi)}, q = {fmt(rec.get('q'))}); "
                         f"{band}."))
    items.append(f"<strong>{esc(s.headline())}</strong>")
    return items


# --------------------------------------------------------------------------------------------
# the table


def _ci(rec: dict[str, Any]) -> tuple[float, float]:
    """95% CI with the t quantile on prompts − 1 degrees of freedom (``dose_slopes``' p)."""
    from scipy.stats import t as student_t

    slope, se, g = rec.get("slope"), rec.get("se"), rec.get("n_prompts")
    if _is_missing(slope) or _is_missing(se) or _is_missing(g) or int(g) < 2:
        return math.nan, math.nan
    q = float(student_t.ppf(0.975, int(g) - 1))
    return float(slope) - q * float(se), float(slope) + q * float(se)


TABLE_COLUMNS = (("feature", "Feature"), ("context", "Context"), ("readout", "Readout"),
                 ("verdict", "Verdict"), ("slope", "Slope"), ("se", "SE (cluster)"),
                 ("ci", "95% CI"), ("p", "p"), ("q", "q"), ("null_n", "K"),
                 ("null_mean", "Null slope mean"), ("null_sd", "Null slope sd"),
                 ("null_z", "null z"), ("null_p", "null p"), ("null_q", "null q"),
                 ("doses", "Doses"), ("n_prompts", "Prompts"))
"""The table's columns and headers: the verdict and the slope first, where a narrow window
shows them."""


def slope_table(rows: pd.DataFrame, view: MetricView | None = None) -> str:
    """One row per feature × context × readout, every number as ``dose_slopes`` has it (the
    CI is slope ± t₀.₉₇₅(prompts − 1) · SE, the interval of the table's p)."""
    labels = (view or MetricView.of()).labels
    out = []
    for rec in rows.to_dict(orient="records"):
        lo, hi = _ci(rec)
        ci = "–" if math.isnan(lo) else f"[{fmt(lo)}, {fmt(hi)}]"
        out.append({**{c: rec.get(c) for c, _ in TABLE_COLUMNS},
                    "readout": labels.get(str(rec["metric"]), str(rec["metric"])),
                    "ci": ci, "verdict": rec["verdict_"]})
    df = pd.DataFrame(out, columns=[c for c, _ in TABLE_COLUMNS])

    def verdict_class(col: str, value: Any) -> str:
        return f"verdict-{str(value).split()[0]}" if col == "verdict" else ""

    return _table(df, "dose-table", "data sortable", dict(TABLE_COLUMNS), verdict_class)


# --------------------------------------------------------------------------------------------
# the figure's data


@dataclass
class DosePanel:
    """One panel of the dose figure: a feature (or the direction) in one context."""

    feature: str
    context: str
    direction: bool
    verdict: str
    slope: float
    null_p: float
    doses: np.ndarray
    means: np.ndarray
    null_doses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    null_means: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [K, doses]


def dose_panels(rows: pd.DataFrame, curves: pd.DataFrame, metric: str) -> list[DosePanel]:
    """A panel per row of ``rows`` (:func:`slope_rows`) for ``metric`` whose ladder is in
    ``curves``: the feature's mean per dose and each null arm's, as the causal stage wrote
    them."""
    need = {"arm", "feature", "context", "metric", "null_index", "dose", "mean"}
    if curves is None or not need <= set(curves.columns):
        return []
    cur = curves[curves["metric"].astype(str) == metric]
    by = dict(list(cur.groupby([cur["feature"].astype(str), cur["context"].astype(str),
                                cur["arm"].astype(str)])))
    panels = []
    for rec in rows[rows["metric"].astype(str) == metric].to_dict(orient="records"):
        name, ctx, arm = str(rec["feature"]), str(rec["context"]), str(rec.get("arm", "feature"))
        own = by.get((name, ctx, arm))
        if own is None or not np.isfinite(own["mean"].to_numpy(float)).any():
            continue  # e.g. the stop rate of a replay run: no parsed decision to count
        own = own.sort_values("dose")
        panel = DosePanel(name, ctx, _is_direction(arm, name), rec["verdict_"],
                          float(rec["slope"]), float(rec.get("null_p", math.nan)),
                          own["dose"].to_numpy(float), own["mean"].to_numpy(float))
        nulls = by.get((name, ctx, "null"))
        if nulls is not None and not nulls.empty:
            wide = nulls.pivot_table(index="null_index", columns="dose", values="mean",
                                     aggfunc="mean").sort_index(axis=1)
            panel.null_doses = wide.columns.to_numpy(float)
            panel.null_means = wide.to_numpy(float)
        panels.append(panel)
    return panels


# --------------------------------------------------------------------------------------------
# the section


def _no_slopes(data: RunData) -> str:
    """Why there is no ``dose_slopes`` table, in one line."""
    if data.dose_slopes.problem != NOT_RUN:
        return f"dose_slopes.parquet: {data.dose_slopes.problem}"
    if not data.causal_tests.ok:
        return f"dose_slopes.parquet: {NOT_RUN} (run featurepath causal)"
    cfg = data.run_config()
    if cfg is not None and cfg.patch.doses:
        return (f"patch.doses is {[float(d) for d in cfg.patch.doses]} but the run has no "
                "dose_slopes.parquet: run featurepath causal again (runs analysed before "
                "featurepath wrote dose slopes lack it).")
    return ("No dose ladder in this run: no feature was patched at a scale (patch.doses is "
            "empty), so there are no dose slopes.")


def dose_figures(figs: dict[str, Any], data: RunData, n_panels: dict[str, int]) -> str:
    """The P(exit) dose figure, and the stop rate's folded under it, with a caption that says
    what the grey lines are and that the verdict is on the slope."""
    out = []
    view = data.view()
    for i, metric in enumerate(m for m in view.dose if figs.get(f"dose_{m}")):
        label = view.labels.get(metric, metric)
        n = n_panels.get(metric, 0)
        first = f" The first {MAX_DOSE_PANELS} of {n} are drawn." if n > MAX_DOSE_PANELS else ""
        caption = esc(
            f"Mean {label} at each dose (1 = the context's baseline, no patch) for each feature "
            "and context (panels). Thin grey lines: the same ladder along each random direction "
            "of the feature's size; grey band: from their lowest to their highest mean at each "
            "dose. Coloured line: the feature — blue when its slope lies outside the band of "
            f"null slopes (null q ≤ {data.alpha:g}), orange inside it, dark grey without a band; "
            "diamonds: the behavioural direction. The verdict is on the slope (the table), "
            f"not on single doses.{first}")
        fig = _figure(figs[f"dose_{metric}"], f"{label} per dose against random directions",
                      f"dose_{metric}-figure", caption)
        out.append(fig if i == 0 else f'<details class="static-fig"><summary>The same for '
                                      f"{esc(label)}</summary>{fig}</details>")
    return "".join(out)


def dose_section(data: RunData, figs: dict[str, Any] | None = None) -> str:
    """The "Dose–response" section: summary sentences, the figure and the slope table."""
    if not data.dose_slopes.ok:
        return _section("dose", TITLE, f'<p class="not-run">{esc(_no_slopes(data))}</p>')
    view = data.view()
    rows = slope_rows(data.dose_slopes.value, view)
    if rows.empty:
        return _section("dose", TITLE, '<p class="not-run">dose_slopes.parquet holds no '
                                       "feature slope.</p>")
    curves = data.dose_curves.value if data.dose_curves.ok else None
    s = summarise_doses(rows, data.alpha, curves, view)
    items = "".join(f"<li>{t}</li>" for t in _sentences(s))
    body = f'<ul id="dose-summary" class="summary">{items}</ul>'
    if curves is None:
        body += (f'<p class="not-run">dose_curves.parquet: {esc(data.dose_curves.problem)} — '
                 "run featurepath causal again to draw the figure.</p>")
    n_panels = {m: int((rows["metric"].astype(str) == m).sum()) for m in view.dose}
    body += dose_figures(figs or {}, data, n_panels) + slope_table(rows, view)
    note = ("Per feature and context, the trial-level least-squares slope of the readout on the "
            "dose, the context's baseline counted as dose 1; its SE is cluster-robust with "
            "prompts as clusters (CR1), p and q (BH over the feature slopes) test it against "
            "zero. The band: the same slope for each null arm (the feature's ladder along a "
            "random direction); null p is the feature's empirical two-sided p among them, null "
            "q its BH. Outside band = null q ≤ α.")
    return _section("dose", TITLE, body, note)
