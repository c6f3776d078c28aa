"""``featurepath confirm``: the pre-registered confirmation of a few candidates on held-out
prompts (see docs/confirm.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from featurepath.cli import app
from featurepath.cli.options import CONFIG, PROGRESS, config_for, csv_list
from featurepath.errors import ConfigError


@app.command("confirm", short_help="Pre-registered confirmation on held-out prompts against "
                                   "sequentially drawn random directions.")
def confirm_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (with --features and prompt_set "
                                             "states it needs no earlier stage)."),
    config: Path = CONFIG,
    model: str = typer.Option(None, help="'embedded', a local HF directory or a HF id."),
    saes: str = typer.Option(None, help="'embedded', a directory of SAE directories, or a "
                                        "comma-separated list of SAE directories."),
    top: int = typer.Option(None, "--top", help="Confirm the N best-ranked candidates (the "
                                                "screen, else discover, else the first patch "
                                                "round; confirm.top_n)."),
    features: str = typer.Option(
        None, "--features", help="Features to confirm instead, e.g. L12-345,L20-7; "
        "L13~direction is the patch round's behavioural direction at layer 13 (scale or value "
        "conditions)."),
    progress: bool = PROGRESS,
) -> None:
    """Writes RUN_DIR/confirm/preregistration.json (features, conditions, the primary metric,
    predicted signs, N, alpha, the null design, the confirm prompts; with its SHA-256) before
    the first trial, then reads P(exit) on the held-out confirm prompts under each feature's
    clamp and under random directions of the same per-row size, drawn in rounds until each
    test is decided (Besag & Clifford sequential p-values), and writes
    RUN_DIR/confirm/verdicts.parquet: p = max(p_baseline, p_null), BH over the tests. A killed
    run resumes from its stored rounds; a changed pre-registration is refused."""
    from featurepath.pipeline.confirm import run_confirm

    if top is not None and top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    cfg = config_for(run_dir, config, model=model, saes=saes)
    res = run_confirm(run_dir, cfg, features=csv_list(features), top=top, progress=progress,
                      say=typer.echo)
    for line in res.lines():
        typer.echo(line)
    typer.echo(f"{res.cost_line()}; wrote {run_dir / 'confirm'}")
