"""``featurepath play``: the first stage of a run, the model playing slot-machine games.

Importing this module registers the command on :data:`featurepath.cli.app`. The config is
resolved and checked (component letters, bet range vs balance, game count) *before* the model is
loaded, so a typo costs a second, not a model load.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from featurepath.cli import app
from featurepath.config import RunConfig, base_config, with_overrides
from featurepath.errors import ConfigError

__all__ = ["play_command", "resolve_play_config"]


class _Protocol(str, Enum):
    completion = "completion"
    chat = "chat"


_HELP = (
    "Play slot-machine games with the model and record every decision point.\n\n"
    "Games are every condition x bet type x game index; each game's seed (its wins and losses "
    "and its sampling) derives from the run seed, condition, bet type and index, so a rerun gives "
    "the same games. Live games advance one round per batched forward pass. Unreadable answers "
    "are resampled up to play.max_retries times with a format reminder; after that the game ends "
    "as 'invalid'.\n\n"
    "Writes RUN_DIR/play/decisions.parquet (one row per decision point), "
    "metrics.parquet/.csv (bankruptcy rate, stop rate, bet size, loss chasing, irrationality "
    "index per condition x bet type) and RUN_DIR/config.yaml if absent. Finished batches of "
    "games are committed as they end: after a kill, rerun with --resume.\n\n"
    "Config: --config FILE, else RUN_DIR/config.yaml if present, else defaults; the options "
    "below override it. Example: featurepath play runs/a --games 20 --conditions BASE,GMHWP"
)


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"empty list {value!r}; give comma-separated names")
    return items


def resolve_play_config(run_dir: Path, config: Path | None = None,
                        overrides: dict[str, Any] | None = None) -> RunConfig:
    """Base config (``--config``, else ``RUN/config.yaml``, else defaults) with command-line
    overrides applied; validated as a whole so errors name the key (``play.max_rounds``)."""
    return with_overrides(base_config(run_dir, config), overrides)


@app.command("play", help=_HELP)
def play_command(
    run_dir: Path = typer.Argument(..., help="Run directory (created if missing)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML run config."),
    model: str | None = typer.Option(None, "--model",
                                     help="'embedded' (SmolLM2-135M-Instruct), a local HF model "
                                          "directory or a cached HF id."),
    games: int | None = typer.Option(None, "--games", "-n",
                                     help="Games per condition x bet type."),
    conditions: str | None = typer.Option(None, "--conditions",
                                          help="Comma-separated prompt components, e.g. "
                                               "BASE,G,GM,GMHWP (letters from GMHWP)."),
    bet_types: str | None = typer.Option(None, "--bet-types",
                                         help="Comma-separated: fixed, variable."),
    max_rounds: int | None = typer.Option(None, "--max-rounds", help="Round limit per game."),
    protocol: _Protocol | None = typer.Option(None, "--protocol",
                                              help="completion: 'Choice: ' prompts (P(stop) from "
                                                   "the decision token); chat: chat template."),
    batch_size: int | None = typer.Option(None, "--batch-size",
                                          help="Games played together (one work unit)."),
    seed: int | None = typer.Option(None, "--seed", help="Run seed."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ..."),
    dtype: str | None = typer.Option(None, "--dtype", help="float32, bfloat16, float16."),
    resume: bool = typer.Option(False, "--resume",
                                help="Finish an interrupted play stage in RUN_DIR, keeping its "
                                     "committed games."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    from featurepath.models import load_model
    from featurepath.pipeline.play import read_metrics, run_play, summary_table, validate_play

    cfg = resolve_play_config(run_dir, config, {
        "model": model, "seed": seed, "device": device, "dtype": dtype,
        "play.games_per_condition": games, "play.conditions": _csv(conditions),
        "play.bet_types": _csv(bet_types), "play.max_rounds": max_rounds,
        "play.protocol": protocol.value if protocol else None, "play.batch_size": batch_size,
    })
    validate_play(cfg)
    play_dir = run_dir / "play"
    if not resume and play_dir.exists() and any(play_dir.iterdir()):
        raise ConfigError(f"{play_dir} already holds play results; pass --resume to finish them "
                          "or use a new run directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    mdl, tok = load_model(cfg.model, cfg.device, cfg.dtype)
    decisions = run_play(mdl, tok, cfg, run_dir, resume=resume, progress=not quiet)
    typer.echo(summary_table(read_metrics(run_dir)))
    typer.echo(f"{decisions['game_id'].nunique()} games, {len(decisions)} decision points -> "
               f"{play_dir / 'decisions.parquet'}")
