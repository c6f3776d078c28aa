"""Static figures for papers: behaviour bars, SAE quality per layer, the layered pathway graph,
each feature's causal effect against its null band, each feature's dose-response against the
same ladder along random directions.

Each figure is written as PNG (embedded in the HTML report as a data URI) and SVG (vector, for
papers) into ``RUN_DIR/figures/``. We use :class:`matplotlib.figure.Figure` directly rather than
``pyplot`` so that no global backend or figure registry is touched: the report can be built from
a notebook, a server or a worker thread without a display and without leaking figures. SVG output
uses a fixed hash salt and no date so that rebuilding a report gives the same files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from featurepath.report.controls import arms, has_band, verdict
from featurepath.report.data import MetricView, RunData, graph_payload
from featurepath.report.dose import (
    MAX_DOSE_PANELS,
    DosePanel,
    dose_panels,
    slope_rows,
)
from featurepath.report.format import feature_order, fmt

POS = "#2563eb"  # blue: patching the source raises the target
NEG = "#dc2626"  # red: lowers it
# (label, column): the keys of sae_quality.json that sae.quality writes (play's metrics and
# the causal metrics are the task's: MetricView)
BEATS, INSIDE, BAND_DOT = "#2563eb", "#f97316", "#9ca3af"  # beats its band / inside / null arm
SAE_METRICS = (("fvu", "fvu"), ("l0", "l0"), ("dead fraction", "dead_fraction"),
               ("loss increase", "loss_increase"))


@dataclass(frozen=True)
class FigureFiles:
    """Where one figure was written."""

    png: Path
    svg: Path


def _save(fig: Figure, out_dir: Path, stem: str) -> FigureFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
    with matplotlib.rc_context({"svg.hashsalt": "featurepath", "svg.fonttype": "path"}):
        fig.savefig(png, dpi=110, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(svg, bbox_inches="tight", metadata={"Date": None})
    return FigureFiles(png=png, svg=svg)


def _col(df: pd.DataFrame, name: str) -> str | None:
    """``name`` when ``df`` has it as a numeric column (a figure draws only what is there)."""
    if name not in df.columns or not pd.api.types.is_numeric_dtype(df[name]):
        return None
    return name


def behaviour_figure(metrics: pd.DataFrame, out_dir: Path,
                     view: MetricView | None = None) -> FigureFiles | None:
    """Grouped bars per condition (bars per bet type) for the task's headline play metrics
    (``MetricView.summary``: how games ended, the mean stake)."""
    found = [(label, c) for label, name in (view or MetricView.of()).summary
             if (c := _col(metrics, name)) is not None]
    if not found or metrics.empty:
        return None
    cond = "condition" if "condition" in metrics.columns else None
    hue = "bet_type" if "bet_type" in metrics.columns else None
    df = metrics.copy()
    df["_cond"] = df[cond].astype(str) if cond else [str(i) for i in range(len(df))]
    df["_hue"] = df[hue].astype(str) if hue else "all"
    conds = list(dict.fromkeys(df["_cond"]))
    hues = list(dict.fromkeys(df["_hue"]))
    fig = Figure(figsize=(max(5.0, 1.0 + 0.55 * len(conds) * len(found)), 3.4),
                 layout="constrained")
    axes = fig.subplots(1, len(found), squeeze=False)[0]
    width = 0.8 / max(1, len(hues))
    x = np.arange(len(conds))
    palette = ["#64748b", "#f59e0b", "#10b981", "#8b5cf6", "#ec4899"]
    for ax, (label, c) in zip(axes, found, strict=True):
        for j, h in enumerate(hues):
            sub = df[df["_hue"] == h].set_index("_cond")[c]
            vals = [float(sub.get(k, np.nan)) if k in sub.index else np.nan for k in conds]
            ax.bar(x + (j - (len(hues) - 1) / 2) * width, vals, width, label=h,
                   color=palette[j % len(palette)])
        ax.set_xticks(x, conds, rotation=45 if len(conds) > 4 else 0, ha="right"
                      if len(conds) > 4 else "center", fontsize=8)
        ax.set_title(label.replace("_", " "), fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        if "rate" in label:
            ax.set_ylim(0, 1)
    if hue and len(hues) > 1:
        axes[-1].legend(title=hue.replace("_", " "), fontsize=8, title_fontsize=8, frameon=False)
    return _save(fig, out_dir, "behaviour")


def sae_quality_figure(quality: dict[str, Any], out_dir: Path) -> FigureFiles | None:
    """One small panel per quality figure (fvu, L0, dead share, loss increase) against layer."""
    rows = []
    for layer, vals in quality.items():
        try:
            lay = int(layer)
        except (TypeError, ValueError):
            continue
        if isinstance(vals, dict):
            rows.append({"layer": lay, **vals})
    if not rows:
        return None
    df = pd.DataFrame(rows).sort_values("layer")
    found = [(label, c) for label, name in SAE_METRICS if (c := _col(df, name)) is not None]
    if not found:
        return None
    fig = Figure(figsize=(2.6 * len(found) + 0.5, 2.8), layout="constrained")
    axes = fig.subplots(1, len(found), squeeze=False)[0]
    for ax, (label, c) in zip(axes, found, strict=True):
        ax.plot(df["layer"], df[c], marker="o", color="#334155")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("layer", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
    return _save(fig, out_dir, "sae_quality")


def _num(v: Any, default: float = 0.0) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(f) else f


def _edge_sign(e: dict[str, Any]) -> float:
    s = e.get("sign")
    if isinstance(s, str):
        return -1.0 if s.strip() in {"-", "−", "neg", "negative"} else 1.0
    if isinstance(s, (int, float)) and not (isinstance(s, float) and math.isnan(s)):
        return -1.0 if s < 0 else 1.0
    return -1.0 if _num(e.get("d")) < 0 else 1.0


def pathway_figure(graph: dict[str, Any], out_dir: Path) -> FigureFiles | None:
    """Layered drawing: one column per layer, blue/red edges for +/−, width by |d|."""
    nodes = graph.get("nodes") or []
    if not nodes:
        return None
    layers = sorted({int(n["layer"]) for n in nodes if n.get("layer") is not None})
    col = {lay: i for i, lay in enumerate(layers)}
    pos: dict[str, tuple[float, float]] = {}
    by_layer: dict[int, list[dict[str, Any]]] = {}
    for n in nodes:
        by_layer.setdefault(int(n["layer"]) if n.get("layer") is not None else -1, []).append(n)
    tallest = max(len(v) for v in by_layer.values())
    for lay, ns in by_layer.items():
        ns = sorted(ns, key=lambda n: _num(n.get("feature")))
        for i, n in enumerate(ns):
            x = col.get(lay, -1)
            y = (tallest - 1) / 2 - (i - (len(ns) - 1) / 2)
            pos[str(n["id"])] = (float(x), float(y))
    fig = Figure(figsize=(max(4.0, 1.8 * len(layers) + 1), max(2.5, 0.45 * tallest + 1.2)),
                 layout="constrained")
    ax = fig.subplots()
    dmax = max([abs(_num(e.get("d"), _num(e.get("weight")))) for e in graph.get("edges", [])]
               + [1e-9])
    for e in graph.get("edges", []):
        a, b = pos.get(str(e.get("source"))), pos.get(str(e.get("target")))
        if a is None or b is None:
            continue
        w = 0.6 + 3.4 * abs(_num(e.get("d"), _num(e.get("weight")))) / dmax
        ax.annotate("", xy=b, xytext=a, arrowprops=dict(
            arrowstyle="-|>", color=POS if _edge_sign(e) > 0 else NEG, lw=w, alpha=0.75,
            shrinkA=7, shrinkB=7, connectionstyle="arc3,rad=0.08"))
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.scatter(xs, ys, s=90, color="#f8fafc", edgecolors="#0f172a", zorder=3, linewidths=1.2)
    for nid, (x, y) in pos.items():
        ax.text(x + 0.08, y + 0.18, nid, fontsize=7, color="#0f172a", zorder=4)
    ax.set_xticks(range(len(layers)), [f"L{lay}" for lay in layers])
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(layers) - 0.3)
    ax.set_ylim(-0.8, tallest - 0.2)
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.set_title("Feature pathways (blue +, red −, width ∝ |d|)", fontsize=10)
    return _save(fig, out_dir, "pathways")


def _plain(text: str) -> str:
    """``text`` for matplotlib as written: a ``$`` in a file's string must not start mathtext."""
    return str(text).replace("$", r"\$")


def _band_panels(tests: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(conditions, labels)`` of a band figure: conditions where some test has a band or the
    behavioural direction was tested; labels = features by layer and id, directions last."""
    arm = arms(tests)
    conds = tests.loc[has_band(tests) | (arm == "direction"), "condition"].astype(str)
    conditions = list(dict.fromkeys(conds))
    shown = tests[tests["condition"].astype(str).isin(conditions)]
    labels = sorted(dict.fromkeys(shown["feature"].astype(str)), key=feature_order)
    return conditions, labels


def null_band_figure(tests: pd.DataFrame, nulls: pd.DataFrame | None, out_dir: Path,
                     metric: str | None = None, alpha: float = 0.05,
                     view: MetricView | None = None) -> FigureFiles | None:
    """Each feature's effect on ``metric`` against its null band, one panel per condition.

    Grey dots: the null arms' effects (``causal_null``); without that file, a grey bar of the
    band's mean ± 2 sd. Marker: blue when the test beats its band, orange when inside, hollow
    when it has no band; a black ring marks the verdict ``significant``; a diamond is the
    behavioural direction. All panels share the x axis, so effects compare across conditions.
    ``metric`` defaults to the task's readout (``view``: default task).
    """
    view = view or MetricView.of()
    metric = metric or view.readout
    need = {"feature", "condition", "metric", "effect", "null_n"}
    if tests is None or not need <= set(tests.columns):
        return None
    t = tests[(tests["metric"].astype(str) == metric) & arms(tests).isin(["feature",
                                                                          "direction"])]
    if t.empty or not has_band(t).any():
        return None
    t = t.assign(band_=has_band(t), sig_=verdict(t, alpha),
                 beats_=t["beats_null"].astype("boolean").fillna(False).astype(bool)
                 if "beats_null" in t.columns else False,
                 dir_=arms(t) == "direction")
    conditions, labels = _band_panels(t)
    band: dict[tuple[str, str], np.ndarray] = {}
    if nulls is not None and need - {"null_n"} <= set(nulls.columns):
        nm = nulls[nulls["metric"].astype(str) == metric]
        if "degenerate" in nm.columns:
            nm = nm[~nm["degenerate"].astype("boolean").fillna(False).astype(bool)]
        for (f, c), g in nm.groupby([nm["feature"].astype(str), nm["condition"].astype(str)]):
            band[(f, c)] = pd.to_numeric(g["effect"], errors="coerce").dropna().to_numpy(float)
    ncols = min(len(conditions), 4)
    nrows = math.ceil(len(conditions) / ncols)
    height = 0.3 * len(labels) + 1.0
    fig = Figure(figsize=(min(11.0, 2.5 * ncols + 1.8), height * nrows + 0.6),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    ypos = {name: i for i, name in enumerate(labels)}
    rng = np.random.default_rng(0)  # fixed jitter: a rebuilt report draws the same figure
    for ax, cond in zip(axes.flat, conditions, strict=False):
        sub = t[t["condition"].astype(str) == cond]
        for rec in sub.itertuples(index=False):
            name = str(rec.feature)
            y = ypos[name]
            dots = band.get((name, cond))
            if dots is not None and dots.size:
                ax.scatter(dots, y + rng.uniform(-0.22, 0.22, dots.size), s=7, color=BAND_DOT,
                           alpha=0.6, linewidths=0, zorder=2)
            elif rec.band_ and "null_mean" in t.columns and "null_sd" in t.columns:
                m, sd = _num(rec.null_mean, math.nan), _num(rec.null_sd, 0.0)
                if math.isfinite(m):
                    ax.plot([m - 2 * sd, m + 2 * sd], [y, y], color=BAND_DOT, lw=6, alpha=0.45,
                            solid_capstyle="butt", zorder=2)
            eff = _num(rec.effect, math.nan)
            if not math.isfinite(eff):
                continue
            colour = (BEATS if rec.beats_ else INSIDE) if rec.band_ else "white"
            ax.scatter([eff], [y], s=60 if rec.dir_ else 44, marker="D" if rec.dir_ else "o",
                       color=colour, edgecolors="black" if rec.sig_ else "#475569",
                       linewidths=1.8 if rec.sig_ else 0.8, zorder=4)
        ax.axvline(0.0, color="#334155", ls="--", lw=0.8, zorder=1)
        ax.set_title(_plain(cond), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", color="#f1f5f9", lw=0.8)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes.flat[len(conditions):]:
        ax.set_visible(False)
    axes[0, 0].set_yticks(range(len(labels)), [_plain(x) for x in labels])
    axes[0, 0].set_ylim(len(labels) - 0.5, -0.5)
    label = view.labels.get(metric, metric)
    for col in range(ncols):  # the lowest panel of each column, also above an empty slot
        ax = axes[(len(conditions) - 1 - col) // ncols, col]
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel(f"effect on {label} (patched − baseline)", fontsize=8)

    def key(marker: str, face: str, edge: str = "#475569", lw: float = 0.8) -> Line2D:
        return Line2D([], [], marker=marker, ls="", color=face, markeredgecolor=edge,
                      markeredgewidth=lw, markersize=7)

    handles = [key("o", BAND_DOT, BAND_DOT), key("o", BEATS), key("o", INSIDE),
               key("o", "white"), key("o", "white", "black", 1.8)]
    names = ["null arm", "beats its band", "inside its band", "no band", "significant (ring)"]
    if t["dir_"].any():
        handles.append(key("D", "white"))
        names.append("behavioural direction")
    fig.legend(handles, names, loc="outside lower center", ncols=min(6, len(names)),
               fontsize=8, frameon=False)
    return _save(fig, out_dir, f"null_band_{metric}")


def draw_dose(panels: list[DosePanel], metric: str | None = None,
              view: MetricView | None = None) -> Figure:
    """Each feature's mean ``metric`` per dose against the same ladder along its null arms.

    Thin grey lines (gid ``null``): one per null arm; grey band (gid ``null-range``): from the
    lowest to the highest null mean at each dose; the feature's line (gid ``feature``): blue
    when its slope lies outside the band of null slopes, orange inside, dark grey without a
    band, diamonds for the behavioural direction. A dotted line marks dose 1 (the baseline).
    """
    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(min(11.0, 2.7 * ncols + 0.6), 2.4 * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    view = view or MetricView.of()
    metric = metric or view.readout
    label = view.labels.get(metric, metric)
    colour = {"outside band": BEATS, "inside band": INSIDE}
    for ax, p in zip(axes.flat, panels, strict=False):
        for row in p.null_means:
            ok = np.isfinite(row)
            ax.plot(p.null_doses[ok], row[ok], color=BAND_DOT, lw=0.7, alpha=0.55, zorder=2,
                    gid="null")
        if p.null_means.size:
            seen = np.isfinite(p.null_means).any(axis=0)
            lo = np.nanmin(p.null_means[:, seen], axis=0)
            hi = np.nanmax(p.null_means[:, seen], axis=0)
            ax.fill_between(p.null_doses[seen], lo, hi, color=BAND_DOT, alpha=0.25, lw=0,
                            zorder=1, gid="null-range")
        ok = np.isfinite(p.means)
        ax.plot(p.doses[ok], p.means[ok], color=colour.get(p.verdict, "#334155"), lw=2,
                marker="D" if p.direction else "o", ms=5, zorder=4, gid="feature")
        ax.axvline(1.0, color="#334155", ls=":", lw=0.8, zorder=0)
        band = f"null p {fmt(p.null_p)}" if p.verdict in colour else p.verdict
        ax.set_title(f"{_plain(p.feature)} · {_plain(p.context)}\nslope {fmt(p.slope)}, {band}",
                     fontsize=8)
        ax.set_xlabel("dose", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for r in range(nrows):
        axes[r, 0].set_ylabel(f"mean {label}", fontsize=8)
    handles = [Line2D([], [], color=BAND_DOT, lw=0.9), Patch(color=BAND_DOT, alpha=0.35),
               Line2D([], [], color=BEATS, lw=2, marker="o"),
               Line2D([], [], color=INSIDE, lw=2, marker="o"),
               Line2D([], [], color="#334155", lw=2, marker="o")]
    names = ["null direction", "null range", "slope outside band", "slope inside band",
             "no band"]
    if any(p.direction for p in panels):
        handles.append(Line2D([], [], color="#334155", lw=2, marker="D"))
        names.append("behavioural direction")
    fig.legend(handles, names, loc="outside lower center", ncols=min(6, len(names)),
               fontsize=8, frameon=False)
    return fig


def dose_figure(slopes: pd.DataFrame, curves: pd.DataFrame, out_dir: Path,
                metric: str | None = None, view: MetricView | None = None
                ) -> FigureFiles | None:
    """:func:`draw_dose` for the first :data:`MAX_DOSE_PANELS` slopes of ``metric``."""
    view = view or MetricView.of()
    metric = metric or view.readout
    panels = dose_panels(slope_rows(slopes, view), curves, metric)[:MAX_DOSE_PANELS]
    if not panels:
        return None
    return _save(draw_dose(panels, metric, view), out_dir, f"dose_{metric}")


#: colours by source (rundir.SOURCES)
SOURCE_COLOURS = {"screen": "#2563eb", "both": "#7c3aed", "discover": "#f97316",
                  "random-check": "#6b7280", "user": "#059669", "transfer": "#db2777",
                  "": "#9ca3af"}
MAX_SCREEN_PANELS = 8


def screen_figure(points: pd.DataFrame, summary: pd.DataFrame, out_dir: Path,
                  readout: str = "P(exit)"):
    """One panel per context × intervention: attribution (x) vs patched effect on the task's
    readout (y; ``readout`` is its label), coloured by source, ρ and recall in the title; None
    without points."""
    if points.empty:
        return None
    groups = list(points.groupby(["context", "intervention"], sort=True))[:MAX_SCREEN_PANELS]
    cols = min(len(groups), 3)
    rows = -(-len(groups) // cols)
    fig = Figure(figsize=(4.0 * cols, 3.4 * rows))
    summ = summary.set_index(["context", "intervention"]) if not summary.empty else None
    for i, ((ctx, name), g) in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        for src, sub in g.groupby("source"):
            ax.scatter(sub["attribution"], sub["effect"], s=18, label=src or "other",
                       color=SOURCE_COLOURS.get(str(src), "#9ca3af"), alpha=0.85)
        ax.axhline(0, color="#d1d5db", lw=0.8)
        ax.axvline(0, color="#d1d5db", lw=0.8)
        title = str(name)
        if summ is not None and (ctx, name) in summ.index:
            s = summ.loc[(ctx, name)]
            title += (f"\nρ {_na(s['spearman'], '+.2f')}, recall@{int(s['top_n'])} "
                      f"{_na(s['recall'], '.2f')} (chance {_na(s['recall_chance'], '.2f')})")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"attribution (first-order Δ{readout})", fontsize=8)
        ax.set_ylabel(f"patched Δ{readout}", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save(fig, out_dir, "screen_check")


def _na(x: Any, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def write_figures(data: RunData, out_dir: Path) -> dict[str, FigureFiles]:
    """Every figure whose input exists; a figure that fails is skipped, not fatal.

    Why not fatal: figures are a convenience next to the tables, which carry the same numbers,
    so one odd input column must not cost the user the whole report.
    """
    out: dict[str, FigureFiles] = {}
    view = data.view()
    jobs = []
    if data.metrics.ok:
        jobs.append(("behaviour", lambda: behaviour_figure(data.metrics.value, out_dir, view)))
    if data.sae_quality.ok and isinstance(data.sae_quality.value, dict):
        jobs.append(("sae_quality", lambda: sae_quality_figure(data.sae_quality.value, out_dir)))
    if data.causal_tests.ok:
        nulls = data.causal_null.value if data.causal_null.ok else None
        for metric in view.dose:
            jobs.append((f"null_band_{metric}", lambda m=metric: null_band_figure(
                data.causal_tests.value, nulls, out_dir, m, data.alpha, view)))
    if data.dose_slopes.ok and data.dose_curves.ok:
        for metric in view.dose:
            jobs.append((f"dose_{metric}", lambda m=metric: dose_figure(
                data.dose_slopes.value, data.dose_curves.value, out_dir, m, view)))
    graph = graph_payload(data)
    if graph:
        jobs.append(("pathways", lambda: pathway_figure(graph, out_dir)))
    check, pts = data.screen_check, data.screen_points
    if check.ok and pts.ok:
        label = view.labels.get(view.readout, "P(exit)")
        jobs.append(("screen_check", lambda: screen_figure(pts.value, check.value, out_dir,
                                                           label)))
    for name, job in jobs:
        try:
            fig = job()
        except Exception as exc:  # noqa: BLE001 - see docstring
            data.extra.setdefault("figure_errors", {})[name] = f"{type(exc).__name__}: {exc}"
            continue
        if fig is not None:
            out[name] = fig
    return out
