"""``featurepath report RUN_DIR``: the HTML report of a run."""

from __future__ import annotations

from pathlib import Path

import typer

from featurepath.cli import app


@app.command("report", short_help="One self-contained HTML page over every stage of a run.")
def report(
    run_dir: Path = typer.Argument(..., help="Run directory (holds play/, discover.parquet, …)."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Where to write the page (default RUN_DIR/report.html)."),
    figures: bool = typer.Option(True, "--figures/--no-figures",
                                 help="Also write PNG/SVG figures to RUN_DIR/figures/."),
) -> None:
    """Write one self-contained HTML page (works offline) and print its path.

    Significance marks use analysis.alpha of the run's config. Stages that have not run yet show
    as such, so the report can be built at any point.
    """
    from featurepath.report.html import run_report

    typer.echo(str(run_report(run_dir, out=out, figures=figures)))
