"""The report's "Screen check" section: the attribution screen against the real patch.

Why a scatter: whether a first-order ranking can be trusted is easier to see than to read —
points along a rising line mean the screen ranks what patching confirms; a cloud means it does
not, and its top N should not be trusted beyond the patched sample. The two numbers that sum it
up (Spearman's ρ, top-N recall against chance) sit in each panel's title and in a table.
"""

from __future__ import annotations

from typing import Any

from featurepath.report.blocks import _absent, _figure, _section, _table
from featurepath.report.data import RunData
from featurepath.rundir import RunDir


def screen_section(data: RunData, figs: dict[str, Any]) -> str:
    """The section: the check table per context x intervention and the scatter (its figure
    is drawn by ``plots.screen_figure``)."""
    title = "Screen check: attribution vs patched effect"
    summary = data.screen_check
    if not summary.ok and not RunDir(data.run_dir).screen.exists():
        return _section("screen", title, '<p class="not-run">this run has no screen '
                        "(<code>featurepath screen</code> ranks every feature before patching)"
                        "</p>")
    if not summary.ok:
        return _section("screen", title, _absent(summary, "screen_check.parquet"))
    view = data.view()
    readout = view.labels.get(view.readout, "P(exit)")
    body = _table(summary.value, "screen-check-table") + _figure(
        figs.get("screen_check"), f"Attribution vs patched effect on {readout}",
        "screen-check-figure")
    note = (f"The screen ranks every feature by the first-order effect of its clamp on {readout} "
            "(attribution patching); patching then measures the real effect of its top N, of "
            "discover's candidates and of features drawn at random across the ranking. "
            "ρ: Spearman's rank correlation of the two; recall: the share of the k largest "
            "patched effects that the screen had in its top N (chance: the same share for a "
            "random ranking). The screen chooses what to patch, never what to claim.")
    return _section("screen", title, body, note)
