"""Commands of the stages that run the model: play, discover, patch, status, demo."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from featurepath.cli import app
from featurepath.cli.options import (
    CONFIG,
    MODEL,
    PROGRESS,
    RUN_DIR,
    SAES,
    TASK,
    Backend,
    Method,
    Mode,
    Positions,
    PromptSet,
    Protocol,
    config_for,
    csv_list,
    value,
)
from featurepath.config import task_of
from featurepath.errors import ConfigError

_PLAY_HELP = (
    "Play the run's game (--task, config: task) with the model and record every decision "
    "point.\n\n"
    "Games are every condition x bet type x game index; each game's seed (its wins and losses "
    "and its sampling) derives from the run seed, condition, bet type and index, so a rerun gives "
    "the same games. Live games advance one round per batched forward pass. Unreadable answers "
    "are resampled up to play.max_retries times with a format reminder; after that the game ends "
    "as 'invalid'.\n\n"
    "Writes RUN_DIR/play/decisions.parquet (one row per decision point), "
    "metrics.parquet/.csv (the task's behaviour metrics per condition x bet type: how games "
    "ended, stakes, invalid answers) and RUN_DIR/config.yaml. Finished batches of "
    "games are committed as they end: after a kill, rerun with --resume.\n\n"
    "Config: --config FILE, else RUN_DIR/config.yaml if present, else defaults; the options "
    "below override it. Example: featurepath play runs/a --games 20 --conditions BASE,GMHWP"
)


@app.command("play", help=_PLAY_HELP,
             short_help="Games of the run's task: every decision point and behavioural metrics.")
def play_command(
    run_dir: Path = RUN_DIR,
    config: Path | None = CONFIG,
    task: str | None = TASK,
    model: str | None = MODEL,
    games: int | None = typer.Option(None, "--games", "-n",
                                     help="Games per condition x bet type."),
    conditions: str | None = typer.Option(None, "--conditions",
                                          help="Comma-separated prompt components, e.g. "
                                               "BASE,G,GM,GMHWP (letters from GMHWP)."),
    bet_types: str | None = typer.Option(None, "--bet-types",
                                         help="Comma-separated: fixed, variable."),
    max_rounds: int | None = typer.Option(None, "--max-rounds", help="Round limit per game."),
    protocol: Protocol | None = typer.Option(None, "--protocol",
                                             help="completion: 'Choice: ' prompts (P(exit) from "
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
    from featurepath.pipeline.play import read_metrics, run_play, summary_table
    from featurepath.rundir import RunDir

    cfg = config_for(run_dir, config, **{
        "task": task, "model": model, "seed": seed, "device": device, "dtype": dtype,
        "play.games_per_condition": games, "play.conditions": csv_list(conditions),
        "play.bet_types": csv_list(bet_types), "play.max_rounds": max_rounds,
        "play.protocol": value(protocol), "play.batch_size": batch_size,
    })
    # run_play checks the config and the play directory before it loads the model
    decisions = run_play(run_dir, cfg, resume=resume, progress=not quiet)
    typer.echo(summary_table(read_metrics(run_dir), task_of(cfg)))
    typer.echo(f"{decisions['game_id'].nunique()} games, {len(decisions)} decision points -> "
               f"{RunDir(run_dir).decisions}")


@app.command("discover",
             short_help="Candidate features: the task's two groups of games, Welch t, Cohen's d, "
                        "BH-FDR.")
def discover_cmd(
    run_dir: Path = RUN_DIR,
    config: Path = CONFIG,
    model: str = MODEL,
    saes: str = SAES,
    alpha: float = typer.Option(None, help="FDR level for candidates (discover.alpha; "
                                           "default 0.05)."),
    min_d: float = typer.Option(None, "--min-d", help="Minimum |Cohen's d| of a candidate "
                                                      "(discover.min_d; default 0.3)."),
    progress: bool = PROGRESS,
) -> None:
    """Find candidate features: SAE activations at every decision point recorded by `play`,
    the task's two groups of ended games (its split, e.g. ruined vs stopped on its own), Welch
    t-test + Cohen's d per feature, BH-FDR across all features of all layers. Writes
    RUN_DIR/discover.parquet; the candidates carry the two patch values (mean in group B's
    games, the safe value; mean in group A's, the risky value) that `patch` uses."""
    from featurepath.pipeline.discover import run_discover
    from featurepath.rundir import RunDir

    cfg = config_for(run_dir, config, model=model, saes=saes,
                     **{"discover.alpha": alpha, "discover.min_d": min_d})
    table = run_discover(run_dir, cfg, progress=progress)
    cands = table[table["candidate"]]
    split = task_of(cfg).split
    typer.echo(f"{table.attrs['n_points']} decision points ({table.attrs['n_a']} from "
               f"'{split.label_a}' games), {len(table)} features tested, {len(cands)} candidates "
               f"(q <= {cfg.discover.alpha}, |d| > {cfg.discover.min_d})")
    if not cands.empty:
        typer.echo(cands.head(10)[["feature", "d", "q", "mean_safe", "mean_risky"]]
                   .to_string(index=False))
    typer.echo(f"wrote {RunDir(run_dir).discover}")


@app.command("patch",
             short_help="Clamp features per batch row and record every candidate feature in one pass.")
def patch_cmd(
    run_dir: Path = RUN_DIR,
    config: Path = CONFIG,
    features: str = typer.Option(None, help="Features to patch, e.g. L12-345,L20-7 (default: "
                                            "the candidates from `discover`)."),
    trials: int = typer.Option(None, help="Trials per feature x condition (default 30)."),
    model: str = MODEL,
    saes: str = SAES,
    mode: Mode = typer.Option(None, help="sample (generate answers) or replay (teacher-forced, "
                                         "no sampling; exact and cheap, for pathways)."),
    method: Method = typer.Option(None, help="delta (default: keep the SAE error) or "
                                             "reconstruct (the original study's replacement)."),
    positions: Positions = typer.Option(None, help="last (decision token, then every new "
                                                   "token; default), prompt (decision token "
                                                   "only) or all."),
    prompt_set: PromptSet = typer.Option(None, "--prompt-set", help="builtin (the study's two "
                                         "prompts), play (decision points recorded by play) or "
                                         "states (patch.n_prompts distinct game states per "
                                         "context)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Rows per work unit."),
    resume: bool = typer.Option(False, help="Continue a killed run: finished units are kept, "
                                            "unfinished or corrupt ones redone."),
    backend: Backend = typer.Option(Backend.local, help="local (this process) or ray."),
    workers: int = typer.Option(None, help="Ray workers (default: one per GPU, else 2)."),
    address: str = typer.Option(None, help="Ray cluster address to join (default: start a "
                                           "local Ray, dashboard on localhost only)."),
    shard: str = typer.Option(None, help="I/N: run only the I-th of N deterministic slices of "
                                         "the units (SLURM job arrays); same store."),
    progress: bool = PROGRESS,
) -> None:
    """Patch and cache in one pass: for each feature and condition, N trials with the feature
    clamped (per-row interventions, batched), recording every recorded feature at every SAE
    layer and P(exit) at the decision token. Results go to RUN_DIR/trials.parquet and
    RUN_DIR/activations.zarr; a killed run continues with --resume."""
    from featurepath.pipeline.patch import describe
    from featurepath.pipeline.patch_stage import parse_shard, run_patch
    from featurepath.rundir import RunDir

    planned = RunDir(run_dir).patch_config
    if config is None and planned.exists():  # resuming: start from what the plan was made with
        config = planned
    cfg = config_for(run_dir, config, model=model, saes=saes, **{
        "patch.trials": trials, "patch.mode": value(mode), "patch.method": value(method),
        "patch.positions": value(positions), "patch.prompt_set": value(prompt_set),
        "patch.batch_size": batch_size, "patch.features": csv_list(features)})
    res = run_patch(run_dir, cfg, resume=resume, backend=backend.value, workers=workers,
                    address=address, shard=parse_shard(shard), progress=progress,
                    on_plan=lambda job: typer.echo(describe(job)),
                    batch_size_given=batch_size, say=typer.echo)
    s = res.summary
    typer.echo(f"{s.trials} trials in {s.seconds:.1f}s ({s.trials_per_s:.2f} trials/s); "
               f"{res.left} units left; {res.bytes_stored / 1e6:.2f} MB stored")
    if s.failed:
        typer.echo(f"failed units: {s.failed} — rerun with --resume to retry", err=True)
        raise typer.Exit(1)


@app.command("estimate", short_help="Trials, tokens, units, bytes and wall time of a patch run, "
                                    "from a calibration on this machine.")
def estimate_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (its patch/config.yaml or "
                                             "config.yaml is the plan; need not exist)."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config to plan instead."),
    model: str = MODEL,
    saes: str = SAES,
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
    compare_exp1: bool = typer.Option(False, "--compare-exp1", help="Print the seed's Exp1 "
                                      "planned today and as screen -> patch top N -> confirm "
                                      "(null arms, trials, GPU-hours), and stop."),
) -> None:
    """Counts come from the config (the same plan the patch stage makes); rates from a short
    calibration of real units of that plan on this machine, in a scratch directory. Prints
    trials, generated tokens, units, bytes per trial and in all, free disk, and the wall time
    on 1 device, N devices and N Ray workers; keeps the calibration in RUN/patch/ for
    `featurepath status`."""
    from featurepath.pipeline.confirm_cost import compare_designs, cost_of_config
    from featurepath.pipeline.estimate import format_estimate, run_estimate
    from featurepath.pipeline.estimate_screen import format_screen_estimate
    from featurepath.rundir import RunDir

    if compare_exp1:
        typer.echo("\n".join(compare_designs().lines()))
        return
    if units < 1:
        raise ConfigError("--units must be at least 1")
    planned = RunDir(run_dir).patch_config
    if config is None and planned.exists():
        config = planned
    cfg = config_for(run_dir, config, model=model, saes=saes, **{
        "patch.trials": trials, "patch.batch_size": batch_size,
        "patch.sampling.max_new_tokens": max_new_tokens})
    confirm_lines = cost_of_config(cfg).lines()  # a bad confirm section fails before calibrating
    res = run_estimate(run_dir, cfg, n_features=n_features, n_record=n_record, units=units,
                       workers=workers, progress=progress, say=typer.echo)
    typer.echo(format_estimate(res.estimate))
    typer.echo(f"screen   not timed: {res.screen_problem}" if res.screen is None else
               format_screen_estimate(res.screen, res.estimate.calibration.seconds_per_trial))
    typer.echo("\n".join(confirm_lines))
    typer.echo(f"calibration kept in {res.calibration_path}")


@app.command("status", short_help="Units done / running / failed / left, trials/s, ETA, disk.")
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


@app.command("demo", short_help="The whole pipeline on the embedded default; prints the report path.")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory to fill."),
    preset: str = typer.Option("quick", help="quick (minutes on 2 CPU cores) or full."),
    seed: int = typer.Option(0, help="Run seed."),
    task: str | None = TASK,
    direction_from: Path | None = typer.Option(
        None, "--direction-from", metavar="RUN",
        help="Cross-task transfer: patch the behavioural direction of another run of the same "
             "model (e.g. another game's demo) instead of this run's own "
             "(patch.direction_from)."),
    progress: bool = PROGRESS,
) -> None:
    """Run the whole pipeline on the embedded default (SmolLM2-135M-Instruct, SAEs trained and
    cached by featurepath) for one task (--task; its demo preset): SAEs, play, discover,
    screen, patch + cache, causal, confirm, pathways, words and the HTML report, whose path it
    prints last. Rerunning continues where it stopped."""
    from featurepath.config import DEFAULT_TASK
    from featurepath.pipeline.demo import run_demo
    from featurepath.tasks import get_task

    name = get_task(task or DEFAULT_TASK).name  # an unknown task: one line, before any work
    if direction_from is not None:  # a wrong source: one line, before any work
        from featurepath.pipeline.transfer import source_config

        source_config(direction_from)
    run_demo(out, preset, seed, progress, echo=typer.echo, task=name,
             direction_from=None if direction_from is None else str(direction_from))
