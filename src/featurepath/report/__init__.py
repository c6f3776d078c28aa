"""The HTML report: one self-contained page over a run directory, plus static figures.

``build_report(run_dir)`` writes ``run_dir/report.html`` and ``run_dir/figures/*.{png,svg}``.
"""

from __future__ import annotations

from featurepath.report.html import build_report, render_html, run_report

__all__ = ["build_report", "render_html", "run_report"]
