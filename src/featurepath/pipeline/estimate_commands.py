"""``featurepath estimate``: the size and wall time of a patch run, before running it."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from featurepath.cli import app
from featurepath.errors import ConfigError


@app.command("estimate", short_help="Trials, tokens, units, bytes and wall time of a patch run, "
                                    "from a calibration on this machine.")
def estimate_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (its patch/config.yaml or "
                                             "config.yaml is the plan; need not exist)."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config to plan instead."),
    n_features: int = typer.Option(None, "--n-features", help="Plan this many features "
                                   "(stand-ins spread over the SAE layers) instead of the "
                                   "config's or discover's."),
    n_record: int = typer.Option(None, "--n-record", help="Record this many features "
                                 "(stand-ins, including the patched ones)."),
    trials: int = typer.Option(None, help="Trials per feature x condition."),
    batch_size: int = typer.Option(None, "--batch-size", help="Rows per work unit."),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", help="New-token budget."),
    units: int = typer.Option(3, help="Units timed after one warm-up unit."),
    workers: int = typer.Option(4, help="N in 'N GPUs' and 'N Ray workers'."),
    progress: bool = typer.Option(True, help="Show a progress bar while loading."),
) -> None:
    """Counts come from the config (the same plan the patch stage makes); rates from a short
    calibration of real units of that plan on this machine, in a scratch directory. Prints
    trials, generated tokens, units, bytes per trial and in all, free disk, and the wall time
    on 1 device, N devices and N Ray workers; keeps the calibration in RUN/patch/ for
    `featurepath status`."""
    from featurepath.pipeline.estimate import (
        calibrate,
        estimate,
        format_estimate,
        save_calibration,
    )
    from featurepath.pipeline.runtime import load_runtime, resolve_config

    if units < 1:
        raise ConfigError("--units must be at least 1")
    planned = run_dir / "patch" / "config.yaml"
    if config is None and planned.exists():
        config = planned
    cfg = resolve_config(run_dir, config, **{
        "patch.trials": trials, "patch.batch_size": batch_size,
        "patch.sampling.max_new_tokens": max_new_tokens})
    t0 = time.time()
    model, tok, saes = load_runtime(cfg, progress)
    load_s = time.time() - t0
    feats, record = planned_features(run_dir, cfg, saes, n_features, n_record)
    typer.echo(f"calibrating: {units + 1} units of {cfg.patch.batch_size} rows ...")
    cal = calibrate(cfg, model, tok, saes, feats, record, units=units, load_s=load_s,
                    work_dir=run_dir if run_dir.exists() else None)
    est = estimate(cfg, feats, cal, workers=workers, disk_path=run_dir)
    typer.echo(format_estimate(est))
    typer.echo(f"calibration kept in {save_calibration(run_dir, cal)}")


def planned_features(run_dir: Path, cfg, saes, n_features: int | None,
                     n_record: int | None) -> tuple[list[str], list[str]]:
    """The features the run would patch and record: stand-ins when counts are given, else the
    config's, else discover's candidates (as ``prepare`` chooses them)."""
    from featurepath.config import parse_feature_key
    from featurepath.pipeline.estimate import spread_features
    from featurepath.pipeline.patch import candidate_features

    if n_features is not None:
        if n_features < 1:
            raise ConfigError("--n-features must be at least 1")
        feats = spread_features(saes, n_features)
    else:
        feats = list(cfg.patch.features)
        if not feats:
            cands = candidate_features(run_dir, cfg.discover.max_candidates) \
                if run_dir.exists() else None
            if cands is None or cands.empty:
                raise ConfigError("no features to plan: give --n-features N, features in the "
                                  "config, or run `featurepath discover` first")
            feats = [f"L{int(r.layer)}-{int(r.feature_id)}" for r in cands.itertuples()]
    if n_record is not None:
        if n_record < len(feats):
            raise ConfigError(f"--n-record {n_record} is fewer than the {len(feats)} features")
        extra = [k for k in spread_features(saes, n_record + len(feats), offset=1)
                 if k not in set(feats)]
        record = feats + extra[:n_record - len(feats)]
    else:
        record = list(cfg.patch.record) or list(feats)
    return feats, sorted(set(record), key=parse_feature_key)
