"""CLI commands of the pipeline stages: discover, patch, words (play lives in play_commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from featurepath.cli import app
from featurepath.errors import ConfigError

RUN_DIR = typer.Argument(..., help="Run directory (created if missing); every stage reads and "
                                   "writes here.")
CONFIG = typer.Option(None, "--config", "-c", help="YAML config (default: RUN_DIR/config.yaml, "
                                                   "else built-in defaults).")


@app.command("discover", short_help="Candidate features: bankrupt vs stopped games, Welch t, Cohen's d, BH-FDR.")
def discover_cmd(
    run_dir: Path = RUN_DIR,
    config: Path = CONFIG,
    alpha: float = typer.Option(None, help="FDR level for candidates (default 0.05)."),
    min_d: float = typer.Option(None, "--min-d", help="Minimum |Cohen's d| (default 0.3)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Find candidate features: SAE activations at every decision point recorded by `play`,
    bankrupt vs voluntarily-stopped games, Welch t-test + Cohen's d per feature, BH-FDR across
    all features of all layers. Writes RUN_DIR/discover.parquet; the candidates carry the two
    patch values (mean in safe games, mean in bankrupt games) that `patch` uses."""
    from featurepath.pipeline.discover import run_discover
    from featurepath.pipeline.runtime import load_runtime, record_config, resolve_config

    cfg = resolve_config(run_dir, config, **{"discover.alpha": alpha, "discover.min_d": min_d})
    model, tok, saes = load_runtime(cfg, progress)
    table = run_discover(run_dir, cfg, model, tok, saes, progress)
    record_config(run_dir, cfg)
    cands = table[table["candidate"]]
    typer.echo(f"{table.attrs['n_points']} decision points ({table.attrs['n_bankrupt']} from "
               f"bankrupt games), {len(table)} features tested, {len(cands)} candidates "
               f"(q < {cfg.discover.alpha}, |d| > {cfg.discover.min_d})")
    if not cands.empty:
        typer.echo(cands.head(10)[["feature", "d", "q", "mean_safe", "mean_bankrupt"]]
                   .to_string(index=False))
    typer.echo(f"wrote {run_dir / 'discover.parquet'}")


@app.command("patch", short_help="Clamp features per batch row and record every candidate feature in one pass.")
def patch_cmd(
    run_dir: Path = RUN_DIR,
    config: Path = CONFIG,
    features: str = typer.Option(None, help="Features to patch, e.g. L12-345,L20-7 (default: "
                                            "the candidates from `discover`)."),
    trials: int = typer.Option(None, help="Trials per feature x condition (default 30)."),
    model: str = typer.Option(None, help="'embedded', a local HF directory or a HF id."),
    saes: str = typer.Option(None, help="'embedded', a directory of SAE directories, or a "
                                        "comma-separated list of SAE directories."),
    mode: str = typer.Option(None, help="sample (generate answers) or replay (teacher-forced, "
                                        "no sampling; exact and cheap, for pathways)."),
    method: str = typer.Option(None, help="delta (default: keep the SAE error) or reconstruct "
                                          "(the original study's replacement)."),
    prompt_set: str = typer.Option(None, "--prompt-set", help="builtin (the study's two "
                                   "prompts) or play (decision points recorded by play)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Rows per work unit."),
    resume: bool = typer.Option(False, help="Continue a killed run: finished units are kept, "
                                            "unfinished or corrupt ones redone."),
    backend: str = typer.Option("local", help="local (this process) or ray."),
    workers: int = typer.Option(None, help="Ray workers (default: one per GPU, else 2)."),
    address: str = typer.Option(None, help="Ray cluster address to join (default: start a "
                                           "local Ray, dashboard on localhost only)."),
    shard: str = typer.Option(None, help="I/N: run only the I-th of N deterministic slices of "
                                         "the units (SLURM job arrays); same store."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Patch and cache in one pass: for each feature and condition, N trials with the feature
    clamped (per-row interventions, batched), recording every recorded feature at every SAE
    layer and P(stop) at the decision token. Results go to RUN_DIR/trials.parquet and
    RUN_DIR/activations.zarr; a killed run continues with --resume."""
    from featurepath.pipeline.patch import describe, prepare, run_local
    from featurepath.pipeline.runtime import load_runtime, record_config, resolve_config
    from featurepath.pipeline.store import RunStore

    feats = [f.strip() for f in features.split(",") if f.strip()] if features else None
    planned = run_dir / "patch" / "config.yaml"
    if config is None and planned.exists():  # resuming: start from what the plan was made with
        config = planned
    cfg = resolve_config(run_dir, config, model=model, saes=saes, **{
        "patch.trials": trials, "patch.mode": mode, "patch.method": method,
        "patch.prompt_set": prompt_set, "patch.batch_size": batch_size,
        "patch.features": feats})
    shard_spec = _parse_shard(shard)
    m, tok, sae_set = load_runtime(cfg, progress)
    if not RunStore(run_dir).exists():  # a fresh plan: a batch size that fits the device
        from featurepath.pipeline.memory import choose_batch_size

        cfg.patch.batch_size, why = choose_batch_size(m, cfg, batch_size)
        if why:
            typer.echo(why)
    job = prepare(run_dir, cfg, m, tok, sae_set, resume=resume or shard_spec is not None)
    record_config(run_dir, cfg)
    typer.echo(describe(job))
    store = RunStore(run_dir)
    todo = store.pending()
    if shard_spec is not None:
        i, n = shard_spec
        todo = [u for u in todo if u.unit % n == i]
    if backend == "ray":
        from featurepath.pipeline.parallel import release_memory, run_ray

        # the workers load their own copies: do not keep this one on a GPU they need
        del m, sae_set
        release_memory()
        summary = run_ray(job, todo, workers=workers, address=address, progress=progress)
    elif backend == "local":
        summary = run_local(job, m, tok, sae_set, todo, progress=progress)
    else:
        raise ConfigError(f"unknown backend {backend!r}; use local or ray")
    left = len(store.pending(verify=False))
    typer.echo(f"{summary['trials']} trials in {summary['seconds']:.1f}s "
               f"({summary['trials'] / max(summary['seconds'], 1e-9):.2f} trials/s); "
               f"{left} units left; {store.bytes_stored() / 1e6:.2f} MB stored")
    if summary.get("failed"):
        typer.echo(f"failed units: {summary['failed']} — rerun with --resume to retry", err=True)
        raise typer.Exit(1)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return i, n


@app.command("words", short_help="Words each feature's patch adds to or removes from the answers.")
def words_cmd(
    run_dir: Path = typer.Argument(None, help="Run directory with trials.parquet."),
    jsonl: Path = typer.Option(None, "--jsonl", help="An Exp2-style JSONL log instead of a run "
                                                     "directory (baseline = scale 1.0)."),
    out: Path = typer.Option(None, help="Output directory (default: the run directory, or the "
                                        "current directory for --jsonl)."),
    alpha0: float = typer.Option(1000.0, help="Dirichlet prior strength (Monroe et al. 2008)."),
    fdr: float = typer.Option(0.05, help="BH-FDR level within each comparison."),
    pool_scales: bool = typer.Option(False, "--pool-scales", help="JSONL only: pool scales "
                                     "below 1 and above 1 into two comparisons (more power)."),
    token_pattern: str = typer.Option(None, help="Regex for tokens (default: "
                                                 r"'\$?\d+|\b[a-z]+\b' on lowercased text)."),
) -> None:
    """Which words each feature's patch adds to, or removes from, the model's answers compared
    with the baseline condition: log-odds with an informative Dirichlet prior ("Fightin'
    Words"), z-scores and BH-FDR. Writes words.parquet, words.csv and words_summary.md."""
    if (run_dir is None) == (jsonl is None):
        raise ConfigError("give either a RUN_DIR or --jsonl FILE")
    if jsonl is not None:
        from featurepath.analysis.jsonl_log import run_words_jsonl

        res = run_words_jsonl(jsonl, out or Path("."), alpha0=alpha0, token_pattern=token_pattern,
                              fdr_alpha=fdr, pool_scales=pool_scales)
        typer.echo(res["report"] if isinstance(res.get("report"), str) else "")
        typer.echo(res["summary"])
        typer.echo(f"({res['seconds']:.1f}s) wrote " + ", ".join(str(p) for p in
                                                              res["paths"].values()))
        return
    from featurepath.analysis.words_run import run_words_store

    res = run_words_store(run_dir, out or run_dir, alpha0=alpha0, token_pattern=token_pattern,
                          fdr_alpha=fdr)
    typer.echo(res["summary"])
    typer.echo("wrote " + ", ".join(str(p) for p in res["paths"].values()))
