"""``featurepath demo``: the whole pipeline on the embedded default, in one run directory.

SAEs (trained once, cached) -> play -> discover -> patch with caching -> causal -> pathways ->
words -> report. Presets size every stage: ``quick`` fits a 2-core CPU in minutes, ``full`` is
a larger run for a workstation or GPU. Each stage is skipped when its output already exists
(resume a killed demo by running it again).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import typer

from featurepath import __version__
from featurepath.cli import app
from featurepath.config import ConditionSpec, RunConfig, feature_key, save_config
from featurepath.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # The embedded 135M model rarely writes a readable free answer, so play uses constrained
    # answers (option tokens, then a legal amount, sampled from the model) at temperature 1.
    # Patch samples free text, so the word analysis has something to read; causal also uses
    # P(stop), which needs no parsing.
    "quick": {
        "sae_preset": "quick", "n_features": 4, "trials": 24, "max_candidates": 8,
        "record_per_layer": 8,
        "play": {"conditions": ["BASE", "G", "M", "GMHWP"], "bet_types": ["variable"],
                 "games_per_condition": 16, "max_rounds": 10, "batch_size": 32,
                 "sampling": {"max_new_tokens": 8, "answer": "constrained",
                              "temperature": 1.0}},
        "patch_tokens": 16,
    },
    "full": {
        "sae_preset": "full", "n_features": 16, "trials": 30, "max_candidates": 32,
        "record_per_layer": 32,
        "play": {"conditions": ["BASE", "G", "M", "H", "W", "P", "GM", "GMHWP"],
                 "bet_types": ["fixed", "variable"], "games_per_condition": 32,
                 "max_rounds": 20, "batch_size": 32,
                 "sampling": {"max_new_tokens": 8, "answer": "constrained",
                              "temperature": 1.0}},
        "patch_tokens": 24,
    },
}


def demo_config(preset: str, seed: int = 0) -> RunConfig:
    if preset not in PRESETS:
        raise ConfigError(f"unknown demo preset {preset!r}; use quick or full")
    p = PRESETS[preset]
    cfg = RunConfig(seed=seed, saes=f"embedded:{p['sae_preset']}")
    play = cfg.play.model_dump()
    play.update({k: v for k, v in p["play"].items() if k != "sampling"})
    play["sampling"].update(p["play"]["sampling"])
    cfg.play = type(cfg.play).model_validate(play)
    cfg.discover.max_candidates = p["max_candidates"]
    cfg.patch.trials = p["trials"]
    cfg.patch.prompt_set = "states"  # a population of distinct prompts per context
    cfg.patch.n_prompts = p["trials"]
    # Beside the six standard conditions (patch values = the feature's mean in stopped and in
    # bankrupt games), an ablation and an amplification: clamping to a population mean moves a
    # feature up on some prompts and down on others, while these move it one way on every
    # prompt, which is what a pathway test needs to see downstream shifts.
    cfg.patch.conditions = [*cfg.patch.conditions,
                            ConditionSpec(name="safe_ablated", context="safe", patch="scale",
                                          scale=0.0),
                            ConditionSpec(name="risky_amplified", context="risky",
                                          patch="scale", scale=3.0)]
    cfg.patch.sampling.max_new_tokens = p["patch_tokens"]
    return cfg


def _stage(name: str, timings: dict[str, float]):
    class _T:
        def __enter__(self):
            typer.secho(f"\n== {name} ==", bold=True)
            self.t0 = time.time()

        def __exit__(self, *exc):
            timings[name] = round(time.time() - self.t0, 1)
            if exc[0] is None:
                typer.echo(f"   ({timings[name]:.1f}s)")

    return _T()


def _sae_quality(saes) -> dict[str, Any]:
    out = {}
    for layer, sae in saes.items():
        q = dict(sae.meta.get("quality") or {})
        q["d_sae"] = sae.d_sae
        out[str(layer)] = q
    return out


def run_demo(out: Path, preset: str = "quick", seed: int = 0, progress: bool = True) -> Path:
    from featurepath.analysis.causal import causal_table
    from featurepath.analysis.commands import _write
    from featurepath.pipeline.discover import run_discover
    from featurepath.pipeline.patch import describe, prepare, run_local
    from featurepath.pipeline.play import run_play, summary_table
    from featurepath.pipeline.runtime import load_runtime
    from featurepath.pipeline.store import RunStore
    from featurepath.report import build_report

    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(preset, seed)
    if (out / "config.yaml").exists():
        from featurepath.config import load_config

        if load_config(out / "config.yaml") != cfg:
            raise ConfigError(f"{out} holds a run with another config; use a new --out")
    save_config(cfg, out / "config.yaml")
    timings: dict[str, float] = {}
    t_all = time.time()

    with _stage("model and SAEs (trained once, then cached)", timings):
        model, tok, saes = load_runtime(cfg, progress)
        quality = _sae_quality(saes)
        (out / "sae_quality.json").write_text(json.dumps(quality, indent=2))
        for layer, q in quality.items():
            typer.echo(f"   L{layer}: d_sae {q['d_sae']}, FVU {q.get('fvu', float('nan')):.3f}, "
                       f"L0 {q.get('l0', float('nan')):.1f}, dead "
                       f"{q.get('dead_fraction', float('nan')):.1%}, loss +"
                       f"{q.get('loss_increase', float('nan')):.3f}")

    with _stage("play", timings):
        if not (out / "play" / "metrics.parquet").exists():
            run_play(model, tok, cfg, out, resume=(out / "play").exists(), progress=progress)
        import pandas as pd

        typer.echo(summary_table(pd.read_parquet(out / "play" / "metrics.parquet")))

    with _stage("discover", timings):
        if not (out / "discover.parquet").exists():
            run_discover(out, cfg, model, tok, saes, progress)
        import pandas as pd

        table = pd.read_parquet(out / "discover.parquet")
        cands = table[table["candidate"]]
        typer.echo(f"   {len(table)} features tested, {len(cands)} candidates")
        # The demo patches the strongest features even when few pass FDR on a small run, from
        # the lower SAE layers so that there are layers above them to carry a pathway; it
        # records those plus the most active features of every layer (features that are zero
        # at every decision token cannot shift and would only be reported as degenerate).
        tested = table[~table["degenerate"]].copy()
        tested["absd"] = tested["d"].abs()
        tested["activity"] = tested[["mean_safe", "mean_bankrupt"]].max(axis=1)
        layers = sorted(table["layer"].unique())
        low = tested[tested["layer"] < layers[len(layers) // 2]]
        # Among the features that best separate the endings, the most active ones: ablating
        # or amplifying a feature that is zero on most prompts moves nothing.
        n = PRESETS[preset]["n_features"]
        pool = low.sort_values(["q", "absd"], ascending=[True, False]).head(max(4 * n, 16))
        top = pool.sort_values("activity", ascending=False)
        feats = [feature_key(int(r.layer), int(r.feature_id)) for r in top.head(n).itertuples()]
        active = tested.sort_values("activity", ascending=False).groupby("layer").head(
            PRESETS[preset]["record_per_layer"])
        record = [feature_key(int(r.layer), int(r.feature_id)) for r in active.itertuples()]
        typer.echo("   patching " + ", ".join(feats))

    with _stage("patch + cache", timings):
        cfg.patch.features = feats
        cfg.patch.record = sorted(set(record) | set(feats),
                                  key=lambda k: tuple(int(x) for x in k[1:].split("-")))
        store = RunStore(out)
        job = prepare(out, cfg, model, tok, saes, resume=store.exists())
        typer.echo("   " + describe(job))
        summary = run_local(job, model, tok, saes, progress=progress)
        n_trials = len(store.trials())
        typer.echo(f"   {summary['trials']} trials this time; {n_trials} stored, "
                   f"{store.bytes_stored() / max(n_trials, 1):.0f} bytes per trial")

    with _stage("causal", timings):
        trials = store.trials()
        tests, features = causal_table(trials, alpha=cfg.analysis.alpha, n_boot=200)
        _write(tests, out, "causal_tests")
        _write(features, out, "causal_features")
        for line in features["summary"].head(6):
            typer.echo(f"   {line}")

    with _stage("pathways", timings):
        from featurepath.analysis.pathways import (
            build_graph,
            export,
            find_chains,
            pathway_edges,
        )
        from featurepath.analysis.run_data import load_activations

        frames, graphs, chains = [], {}, []
        for signal in ("decision", "gen_mean"):
            acts, rl, rf = load_activations(out, signal)
            e = pathway_edges(trials, acts, rl, rf, signal=signal, alpha=cfg.analysis.alpha,
                              min_d=cfg.analysis.min_d)
            frames.append(e)
            graphs[signal] = build_graph(e, signal=signal)
            chains.append(find_chains(graphs[signal], signal=signal))
        edges = pd.concat(frames, ignore_index=True)
        export(edges, graphs, pd.concat(chains, ignore_index=True), out)
        for signal in ("decision", "gen_mean"):
            sub = edges[edges["signal"] == signal]
            typer.echo(f"   {signal}: {int(sub['edge'].sum())} edges among {len(sub)} pairs "
                       f"({int(sub['degenerate'].sum())} degenerate)")

    with _stage("words", timings):
        from featurepath.analysis.words_run import run_words_store

        try:
            res = run_words_store(out, out)
            typer.echo("   " + "\n   ".join(res["summary"].splitlines()[:6]))
        except Exception as exc:  # noqa: BLE001 - a demo with no usable words still reports
            typer.echo(f"   words skipped: {exc}")

    with _stage("report", timings):
        run = {"model": cfg.model, "saes": cfg.saes, "preset": preset, "seed": seed,
               "featurepath": __version__, "python": platform.python_version(),
               "timings_s": timings, "n_trials": n_trials,
               "bytes_stored": store.bytes_stored(), "total_s": round(time.time() - t_all, 1)}
        try:
            import torch
            import transformers

            run["torch"] = torch.__version__
            run["transformers"] = transformers.__version__
        except ImportError:
            pass
        (out / "run.json").write_text(json.dumps(run, indent=2))
        path = build_report(out)
    typer.secho(f"\nreport: {path.resolve()}", bold=True)
    return path


@app.command("demo", short_help="The whole pipeline on the embedded default; prints the report path.")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory to fill."),
    preset: str = typer.Option("quick", help="quick (minutes on 2 CPU cores) or full."),
    seed: int = typer.Option(0, help="Run seed."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Run the whole pipeline on the embedded default (SmolLM2-135M-Instruct, SAEs trained and
    cached by featurepath): SAEs, play, discover, patch + cache, causal, pathways, words and
    the HTML report, whose path it prints last. Rerunning continues where it stopped."""
    run_demo(out, preset, seed, progress)
