"""The report's "Screen check" section: the attribution screen against the real patch.

Why a scatter: whether a first-order ranking can be trusted is easier to see than to read —
points along a rising line mean the screen ranks what patching confirms; a cloud means it does
not, and its top N should not be trusted beyond the patched sample. The two numbers that sum it
up (Spearman's ρ, top-N recall against chance) sit in each panel's title and in a table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from featurepath.report.blocks import _absent, _figure, _section, _table
from featurepath.report.data import RunData
from featurepath.rundir import RunDir

#: colours by source (rundir.SOURCES)
SOURCE_COLOURS = {"screen": "#2563eb", "both": "#7c3aed", "discover": "#f97316",
                  "random-check": "#6b7280", "user": "#059669", "": "#9ca3af"}
MAX_PANELS = 8


def _num(x: Any, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def screen_figure(points: pd.DataFrame, summary: pd.DataFrame, out_dir: Path):
    """One panel per context × intervention: attribution (x) vs patched effect on P(stop) (y),
    coloured by source, ρ and recall in the title; None without points."""
    from featurepath.report.plots import _save

    if points.empty:
        return None
    groups = list(points.groupby(["context", "intervention"], sort=True))[:MAX_PANELS]
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
            title += (f"\nρ {_num(s['spearman'], '+.2f')}, recall@{int(s['top_n'])} "
                      f"{_num(s['recall'], '.2f')} (chance {_num(s['recall_chance'], '.2f')})")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("attribution (first-order ΔP(stop))", fontsize=8)
        ax.set_ylabel("patched ΔP(stop)", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save(fig, out_dir, "screen_check")


def screen_section(data: RunData, figs: dict[str, Any]) -> str:
    title = "Screen check: attribution vs patched effect"
    summary = data.screen_check
    if not summary.ok and not RunDir(data.run_dir).screen.exists():
        return _section("screen", title, '<p class="not-run">this run has no screen '
                        "(<code>featurepath screen</code> ranks every feature before patching)"
                        "</p>")
    if not summary.ok:
        return _section("screen", title, _absent(summary, "screen_check.parquet"))
    body = _table(summary.value, "screen-check-table") + _figure(
        figs.get("screen_check"), "Attribution vs patched effect on P(stop)",
        "screen-check-figure")
    note = ("The screen ranks every feature by the first-order effect of its clamp on P(stop) "
            "(attribution patching); patching then measures the real effect of its top N, of "
            "discover's candidates and of features drawn at random across the ranking. "
            "ρ: Spearman's rank correlation of the two; recall: the share of the k largest "
            "patched effects that the screen had in its top N (chance: the same share for a "
            "random ranking). The screen chooses what to patch, never what to claim.")
    return _section("screen", title, body, note)
