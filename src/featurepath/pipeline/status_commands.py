"""``featurepath status``: progress of a patch run, from any shell that sees the run directory."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from featurepath.cli import app
from featurepath.errors import ConfigError


@app.command("status")
def status_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory of a patch run (running or not)."),
    watch: float = typer.Option(None, "--watch", help="Refresh every SECONDS until the run is "
                                                      "done (Ctrl-C stops watching, not the run)."),
) -> None:
    """Units done / running / failed / left, trials per second, ETA, bytes written and free
    disk, with a warning when the disk passes 80% or will not hold the rest of the run. Reads
    files only, so it works beside local, Ray and sharded SLURM runs alike."""
    from featurepath.pipeline.status import format_status, run_status

    if watch is not None and watch <= 0:
        raise ConfigError(f"--watch must be a positive number of seconds, got {watch}")
    while True:
        st = run_status(run_dir)
        text = format_status(st)
        if watch is None:
            typer.echo(text)
            return
        typer.echo(f"\x1b[2J\x1b[H{time.strftime('%H:%M:%S')}\n{text}")
        if st["left"] == 0 or (st["left"] == len(st["failed"]) and not st["running"]):
            return
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return
