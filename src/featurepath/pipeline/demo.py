"""The whole pipeline on the embedded default, in one run directory (``featurepath demo``).

SAEs (trained once, cached) -> play -> discover -> screen -> patch with caching -> causal ->
confirm (pre-registered, on the held-out prompts, with a planted check when nothing is
confirmed) -> pathways -> words -> report, each through the stage's own ``run_<stage>`` function (the demo holds no copy
of a stage). Presets (``featurepath.embedded``) size every stage: ``quick`` fits a 2-core CPU in
minutes, ``full`` is a larger run for a workstation or GPU. Each stage is skipped when its output
already exists (resume a killed demo by running it again).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from featurepath import __version__
from featurepath.config import DEFAULT_TASK, load_config, record_config, task_of
from featurepath.embedded import DEMO_PRESETS, demo_config
from featurepath.errors import ConfigError
from featurepath.rundir import RunDir, atomic_write, feature_key, parse_feature_key

Echo = Callable[[str], None]


class _Stage:
    """Times one stage and prints its header and duration."""

    def __init__(self, name: str, timings: dict[str, float], echo: Echo):
        self.name, self.timings, self.echo = name, timings, echo

    def __enter__(self) -> _Stage:
        self.echo(f"\n== {self.name} ==")
        self.t0 = time.time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = round(time.time() - self.t0, 1)
        if exc[0] is None:
            self.echo(f"   ({self.timings[self.name]:.1f}s)")


def _sae_quality(saes) -> dict[str, Any]:
    out = {}
    for layer, sae in saes.items():
        q = dict(sae.meta.get("quality") or {})
        q["d_sae"] = sae.d_sae
        out[str(layer)] = q
    return out


def _accumulated(rd: RunDir, timings: dict[str, float], total: float) -> dict[str, Any]:
    """``timings_s`` and ``total_s`` summed over every invocation of the demo in this run
    directory (a resumed demo skips finished stages in a fraction of a second; overwriting
    would report the resume, not the work), with the count of ``invocations``."""
    old: dict[str, Any] = {}
    try:
        old = json.loads(rd.run_json.read_text(encoding="utf-8")) if rd.run_json.exists() \
            else {}
    except (OSError, ValueError):
        old = {}
    before = old.get("timings_s") if isinstance(old.get("timings_s"), dict) else {}
    summed = {k: round(float(before.get(k, 0.0)) + v, 1) for k, v in timings.items()}
    return {"timings_s": summed, "total_s": round(float(old.get("total_s", 0.0)) + total, 1),
            "invocations": int(old.get("invocations", 1 if before else 0)) + 1}


def choose_features(table: pd.DataFrame, preset: str) -> tuple[list[str], list[str]]:
    """``(patch, record)`` for the demo from discover's table.

    The demo patches the strongest features even when few pass FDR on a small run, from the
    lower SAE layers so that there are layers above them to carry a pathway; among the features
    that best separate the endings, the most active ones (ablating or amplifying a feature that
    is zero on most prompts moves nothing). It records those plus the most active features of
    every layer (features that are zero at every decision token cannot shift).
    """
    p = DEMO_PRESETS[preset]
    tested = table[~table["degenerate"]].copy()
    tested["absd"] = tested["d"].abs()
    tested["activity"] = tested[["mean_safe", "mean_risky"]].max(axis=1)
    layers = sorted(table["layer"].unique())
    low = tested[tested["layer"] < layers[len(layers) // 2]]
    n = p["n_features"]
    pool = low.sort_values(["q", "absd"], ascending=[True, False]).head(max(4 * n, 16))
    top = pool.sort_values("activity", ascending=False)
    feats = [feature_key(int(r.layer), int(r.feature_id)) for r in top.head(n).itertuples()]
    active = tested.sort_values("activity", ascending=False).groupby("layer").head(
        p["record_per_layer"])
    record = {feature_key(int(r.layer), int(r.feature_id)) for r in active.itertuples()}
    return feats, sorted(record | set(feats), key=parse_feature_key)


def confirm_stage(out: Path, cfg, runtime, progress: bool, echo: Echo) -> None:
    """Confirm the top candidates on the held-out prompts (the screen's ranking when the run
    has one, else the candidates discover chose for patching) and print every verdict; when
    nothing is confirmed, run the planted check (:mod:`featurepath.pipeline.confirm_check`)
    and say whether the same code would have found a feature that writes the readout
    direction."""
    from featurepath.pipeline.confirm import run_confirm
    from featurepath.pipeline.confirm_check import planted_check, planted_feature
    from featurepath.pipeline.confirm_plan import screen_path

    if screen_path(out).exists():
        res = run_confirm(out, cfg, runtime=runtime, top=cfg.confirm.top_n, progress=progress)
    else:
        res = run_confirm(out, cfg, runtime=runtime, features=cfg.patch.features,
                          progress=progress, source="discover (the patched candidates)")
    for line in res.lines():
        echo(f"   {line}")
    echo(f"   {res.cost_line()}")
    v = res.verdicts
    if v["significant"].any():
        return
    feature = planted_feature(cfg, out, runtime, str(v["context"].iloc[0]))
    pc = planted_check(out, cfg, runtime, feature, progress=progress).verdicts.iloc[0]
    from featurepath.report.data import MetricView

    view = MetricView.of(cfg)  # the task's readout label, as the report spells it
    readout = view.labels.get(view.readout, "the readout")
    found = f"CONFIRMED: the same code finds a feature that writes {readout}" \
        if pc["significant"] else "not confirmed either: this setup could not have found it"
    echo(f"   planted check: {feature} (the top SAE layer's most active feature) with its "
         f"decoder row along the readout direction (in-memory SAE copy): effect {pc['effect']:+.4f}, p_null {pc['p_null']:.3g} after "
         f"{pc['null_draws']} null directions, q {pc['q']:.3g}: {found}")


def run_demo(out: Path, preset: str = "quick", seed: int = 0, progress: bool = True,
             echo: Echo = print, task: str = DEFAULT_TASK,
             direction_from: str | None = None) -> Path:
    """Run every stage into ``out`` for ``task`` (its demo preset, ``Task.demo``) and return
    the report's path; ``echo`` prints progress. ``direction_from``: another run whose
    behavioural direction is patched instead of this run's own (cross-task transfer,
    :mod:`featurepath.pipeline.transfer`)."""
    from featurepath.analysis.causal import run_causal
    from featurepath.analysis.pathways import run_pathways
    from featurepath.analysis.words_run import run_words
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.discover import run_discover
    from featurepath.pipeline.patch import describe, prepare
    from featurepath.pipeline.play import run_play, summary_table
    from featurepath.pipeline.runtime import Runtime
    from featurepath.pipeline.store import RunStore
    from featurepath.report import run_report

    out = Path(out)
    rd = RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(preset, seed, task)
    if direction_from:
        cfg.patch.direction_from = str(Path(direction_from).resolve())
    if rd.config.exists():
        old = load_config(rd.config)
        old.patch.features, old.patch.record = cfg.patch.features, cfg.patch.record
        if old != cfg:
            raise ConfigError(f"{out} holds a run with another config; use a new --out")
    timings: dict[str, float] = {}
    t_all = time.time()

    with _Stage("model and SAEs (trained once, then cached)", timings, echo):
        rt = Runtime.load(cfg, progress=progress, saes=True)  # one runtime for every stage
        model, tok, saes = rt
        quality = _sae_quality(saes)
        atomic_write(rd.sae_quality, json.dumps(quality, indent=2))
        for layer, q in quality.items():
            echo(f"   L{layer}: d_sae {q['d_sae']}, FVU {q.get('fvu', float('nan')):.3f}, "
                 f"L0 {q.get('l0', float('nan')):.1f}, dead "
                 f"{q.get('dead_fraction', float('nan')):.1%}, loss +"
                 f"{q.get('loss_increase', float('nan')):.3f}")

    with _Stage("play", timings, echo):
        if not rd.metrics.exists():
            run_play(out, cfg, runtime=rt, resume=rd.play.exists(), progress=progress)
        echo(summary_table(pd.read_parquet(rd.metrics), task_of(cfg)))

    with _Stage("discover", timings, echo):
        if not rd.discover.exists():
            run_discover(out, cfg, runtime=rt, progress=progress)
        table = pd.read_parquet(rd.discover)
        echo(f"   {len(table)} features tested, {int(table['candidate'].sum())} candidates")
        picked, cfg.patch.record = choose_features(table, preset)
        echo("   discover's picks: " + ", ".join(picked))

    with _Stage("screen", timings, echo):
        from featurepath.pipeline.screen import run_screen

        if not rd.screen.exists():
            scr = run_screen(out, cfg, runtime=rt, progress=progress)
            echo(f"   {scr.n_features} features x {scr.table['intervention'].nunique()} "
                 f"interventions in {scr.seconds:.1f}s")
        top = pd.read_parquet(rd.screen).query("rank == 1")
        for r in top.itertuples():
            echo(f"   top of {r.intervention}: {r.feature} ({r.attribution:+.4f})")

    with _Stage("patch + cache", timings, echo):
        store = RunStore(out)
        job = prepare(out, cfg, model, tok, saes, resume=store.exists(),
                      discover_features=picked)
        echo("   " + describe(job))
        if cfg.patch.direction_from:
            from featurepath.analysis.direction_source import read_source, source_text

            echo(f"   behavioural direction {source_text(read_source(out))}")
        summary = run_local(job, runtime=rt, progress=progress)
        record_config(out, cfg)
        n_trials = len(store.trials())
        echo(f"   {summary.trials} trials this time; {n_trials} stored, "
             f"{store.bytes_stored() / max(n_trials, 1):.0f} bytes per trial")

    with _Stage("causal", timings, echo):
        causal = run_causal(out, cfg)
        for line in causal.features["summary"].head(6):
            echo(f"   {line}")
        echo("   " + causal.controls_line())
        if causal.screen_check is not None:
            from featurepath.analysis.screen_check import check_line

            echo("   " + check_line(causal.screen_check))

    with _Stage("confirm (pre-registered, held-out prompts)", timings, echo):
        confirm_stage(out, cfg, (model, tok, saes), progress, echo)

    with _Stage("pathways", timings, echo):
        pw = run_pathways(out, cfg)
        for signal in pw.graphs:
            sub = pw.edges[pw.edges["signal"] == signal]
            edges = sub[sub["edge"]]
            echo(f"   {signal}: {len(edges)} edges among {len(sub)} pairs "
                 f"({int(sub['degenerate'].sum())} degenerate; "
                 f"{int((sub['vs_baseline'] & ~sub['edge']).sum())} beat the baseline but not "
                 f"the null band; {int((edges['mechanism'] == 'direct').sum())} direct, "
                 f"{int((edges['mechanism'] == 'mediated').sum())} mediated)")

    with _Stage("words", timings, echo):
        from featurepath.errors import DataError

        try:
            words = run_words(out, cfg)
            echo("   " + "\n   ".join(words.summary.splitlines()[:6]))
        except DataError as exc:  # a demo with no usable words still reports
            echo(f"   words skipped: {exc}")

    with _Stage("report", timings, echo):
        run = {"model": cfg.model, "saes": cfg.saes, "preset": preset, "seed": seed,
               "featurepath": __version__, "python": platform.python_version(),
               **_accumulated(rd, timings, round(time.time() - t_all, 1)),
               "n_trials": n_trials, "bytes_stored": store.bytes_stored()}
        import torch
        import transformers

        run["torch"] = torch.__version__
        run["transformers"] = transformers.__version__
        atomic_write(rd.run_json, json.dumps(run, indent=2))
        path = run_report(out)
    echo(f"\nreport: {path.resolve()}")
    return path
