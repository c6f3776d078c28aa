"""Plan a patch run before spending GPU-days on it: trials, tokens, units, bytes, wall time.

The counts come from the config alone (the same ``plan_units`` the patch stage uses). The rates
come from a short **calibration** on the actual hardware: a few real units of the planned run
(one warm-up unit, then units spread over the plan — baselines and patched conditions cost
differently) in a scratch directory, timed one by one, with the store's real bytes per trial.
Nothing is extrapolated from another machine.

The wall-time model: units are independent and all the same size (``batch_size`` rows, the
last one shorter), so one device takes ``units × seconds_per_unit``; N devices (sharded runs
or Ray workers on N GPUs) take ``ceil(units / N)`` unit-times plus loading the model once per
worker. On a CPU, workers share the cores: N workers go at most ``cores / threads`` times as
fast as one. ``featurepath status`` uses the same per-unit time for its ETA before a run has
committed enough units to measure its own speed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from featurepath.config import RunConfig, feature_key
from featurepath.errors import ConfigError

__all__ = ["Calibration", "Estimate", "EstimateResult", "run_estimate", "calibrate", "plan_counts", "estimate", "format_estimate",
           "save_calibration", "load_calibration", "spread_features"]

CALIBRATION_FILE = "calibration.json"


@dataclass
class Calibration:
    """Measured on this machine: seconds per unit of ``batch_size`` rows (after a warm-up unit),
    mean generated tokens and stored bytes per trial, and the time to load the model."""

    batch_size: int
    units_timed: int
    seconds_per_unit: float
    seconds_per_trial: float
    new_tokens_per_trial: float
    bytes_per_trial: float
    warmup_s: float
    load_s: float
    device: str
    threads: int
    n_record: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass
class Estimate:
    """A planned run's size and its wall time on 1 device, N devices and N Ray workers."""

    n_features: int
    n_conditions: int
    trials: int
    units: int
    batch_size: int
    n_record: int
    max_new_tokens: int
    new_tokens: float
    bytes_per_trial: float
    bytes_total: float
    disk_free: int
    seconds_one: float
    workers: int
    seconds_devices: float
    seconds_ray: float
    calibration: Calibration


def plan_counts(cfg: RunConfig, features: list[str]) -> tuple[int, int]:
    """``(trials, units)`` of a patch run of ``features`` under ``cfg``: the very plan the
    patch stage would make (``pipeline.patch.plan_units``)."""
    from featurepath.pipeline.patch import count_rows, plan_shape

    trials = count_rows(features, **plan_shape(cfg, features))
    return trials, -(-trials // cfg.patch.batch_size)


def spread_features(saes: dict, n: int, offset: int = 0) -> list[str]:
    """``n`` distinct feature keys spread over the SAE layers (stand-ins when a plan counts
    features that are not chosen yet, e.g. before ``discover``)."""
    layers = sorted(saes)
    total = sum(saes[la].d_sae for la in layers)
    if n > total:
        raise ConfigError(f"asked for {n} features but the SAEs have {total}")
    out = []
    for i in range(n):
        layer = layers[i % len(layers)]
        fid = (offset + (i // len(layers)) * 7919) % saes[layer].d_sae
        out.append(feature_key(layer, fid))
    seen: set[str] = set()
    uniq = []
    for i, k in enumerate(out):  # the stride can collide on small SAEs: walk to a free id
        layer = layers[i % len(layers)]
        fid = int(k.split("-")[1])
        while k in seen:
            fid = (fid + 1) % saes[layer].d_sae
            k = feature_key(layer, fid)
        seen.add(k)
        uniq.append(k)
    return uniq


def calibrate(cfg: RunConfig, model, tok, saes, features: list[str], record: list[str],
              units: int = 3, load_s: float = 0.0, work_dir: Path | None = None,
              source_run: Path | None = None) -> Calibration:
    """Run one warm-up unit and ``units`` timed units of the planned run in a scratch run
    directory, and measure them.

    The scratch directory sees ``source_run``'s earlier stages (``play/``, ``discover.parquet``;
    linked read-only) when they exist, so a plan that draws its prompts from played games or
    builds the behavioural direction from them calibrates on the same rows it will run."""
    import torch

    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.store import RunStore

    c = cfg.model_copy(deep=True)
    c.patch.features = list(features)
    c.patch.record = list(record)
    # the timed units need at least as many rows as the plan has in one unit
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".estimate-") as d:
        _link_inputs(source_run, Path(d))
        job = prepare(d, c, model, tok, saes)
        plan = job.plan.units
        full = [u for u in plan if u.n_rows == c.patch.batch_size] or plan
        picks = [full[round(i * (len(full) - 1) / max(1, units))] for i in range(units + 1)]
        seen: list[int] = []
        for u in picks:
            if u.index not in seen:
                seen.append(u.index)
        todo = [next(u for u in plan if u.index == k) for k in seen]
        stamps: list[float] = []
        t0 = time.time()
        run_local(job, todo, runtime=(model, tok, saes), progress=False,
                  on_unit=lambda _u: stamps.append(time.time()))
        warm = stamps[0] - t0
        timed = len(stamps) - 1
        per_unit = (stamps[-1] - stamps[0]) / timed if timed else warm
        st = RunStore(d)
        df = st.trials()
        rows_timed = [u.n_rows for u in todo[1:]] or [todo[0].n_rows]
        return Calibration(
            batch_size=c.patch.batch_size, units_timed=timed, seconds_per_unit=per_unit,
            seconds_per_trial=per_unit * timed / sum(rows_timed) if timed else
            warm / todo[0].n_rows,
            new_tokens_per_trial=float(df["n_new_tokens"].mean()),
            bytes_per_trial=st.bytes_stored() / len(df), warmup_s=warm, load_s=load_s,
            device=str(next(model.parameters()).device), threads=torch.get_num_threads(),
            n_record=len(record))


def _link_inputs(source: Path | None, scratch: Path) -> None:
    """Symlink the source run's ``play/`` and ``discover.parquet`` into ``scratch`` (the patch
    stage only reads them)."""
    if source is None:
        return
    from featurepath.rundir import RunDir

    src, dst = RunDir(source), RunDir(scratch)
    for a, b in ((src.play, dst.play), (src.discover, dst.discover)):
        if a.exists() and not b.exists():
            b.symlink_to(a.resolve(), target_is_directory=a.is_dir())


def estimate(cfg: RunConfig, features: list[str], cal: Calibration, workers: int = 4,
             disk_path: str | Path = ".") -> Estimate:
    """The plan's size and wall times from ``cfg`` and a calibration at the same batch size."""
    if cal.batch_size != cfg.patch.batch_size:
        raise ConfigError(f"the calibration ran at batch size {cal.batch_size}, the config "
                          f"plans {cfg.patch.batch_size}; calibrate again")
    if workers < 1:
        raise ConfigError("workers must be at least 1")
    trials, units = plan_counts(cfg, features)
    full_units, rest = divmod(trials, cfg.patch.batch_size)
    unit_equiv = full_units + rest / cfg.patch.batch_size
    one = unit_equiv * cal.seconds_per_unit + cal.warmup_s + cal.load_s
    speedup = workers
    if cal.device == "cpu":
        speedup = max(1, min(workers, (os.cpu_count() or 1) // max(1, cal.threads)))
    per_worker = math.ceil(units / speedup) * cal.seconds_per_unit
    devices = per_worker + cal.warmup_s + cal.load_s
    ray = devices + _RAY_START_S
    path = Path(disk_path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return Estimate(
        n_features=len(features), n_conditions=len(cfg.patch.all_conditions()), trials=trials,
        units=units, batch_size=cfg.patch.batch_size, n_record=cal.n_record,
        max_new_tokens=cfg.patch.sampling.max_new_tokens,
        new_tokens=trials * cal.new_tokens_per_trial, bytes_per_trial=cal.bytes_per_trial,
        bytes_total=trials * cal.bytes_per_trial, disk_free=shutil.disk_usage(path).free,
        seconds_one=one, workers=workers, seconds_devices=devices, seconds_ray=ray,
        calibration=cal)


# starting a local Ray and its actors, before the workers load the model (measured ~10 s)
_RAY_START_S = 10.0


def save_calibration(run_dir: Path, cal: Calibration) -> Path:
    path = Path(run_dir) / "patch" / CALIBRATION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cal.to_json())
    return path


def load_calibration(run_dir: Path) -> Calibration | None:
    path = Path(run_dir) / "patch" / CALIBRATION_FILE
    try:
        return Calibration(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def format_estimate(e: Estimate) -> str:
    """Human-readable lines for the CLI."""
    from featurepath.pipeline.formatting import _fmt_bytes, _fmt_seconds

    c = e.calibration
    where = "GPUs" if c.device.startswith("cuda") else f"{c.device} devices"
    lines = [
        f"plan     {e.n_features} features x {e.n_conditions} conditions -> {e.trials:,} trials "
        f"in {e.units:,} units of <= {e.batch_size}; recording {e.n_record:,} features",
        f"tokens   ~{e.new_tokens:,.0f} generated ({c.new_tokens_per_trial:.1f} per trial "
        f"measured, at most {e.max_new_tokens})",
        f"disk     {_fmt_bytes(e.bytes_per_trial)} per trial -> {_fmt_bytes(e.bytes_total)} in "
        f"all; {_fmt_bytes(e.disk_free)} free"
        + ("  (NOT ENOUGH)" if e.bytes_total > e.disk_free else ""),
        f"measured {c.seconds_per_unit:.2f} s per unit ({1 / c.seconds_per_trial:.2f} trials/s) "
        f"on {c.device} with {c.threads} threads, over {c.units_timed} units after a "
        f"{c.warmup_s:.1f} s warm-up unit; model load {c.load_s:.1f} s",
        f"time     1 device: {_fmt_seconds(e.seconds_one)}; {e.workers} {where}: "
        f"{_fmt_seconds(e.seconds_devices)}; {e.workers} Ray workers: "
        f"{_fmt_seconds(e.seconds_ray)}",
    ]
    if e.bytes_total > e.disk_free:
        lines.append("warning: the store will not fit on this disk")
    return "\n".join(lines)


def eta_from_calibration(cal: Calibration, trials_left: int) -> float:
    """Seconds for ``trials_left`` more trials at the calibrated rate (one worker)."""
    return trials_left * cal.seconds_per_trial


def describe_calibration(cal: Calibration) -> dict[str, Any]:
    return asdict(cal)


def planned_features(run_dir: Path, cfg, saes, n_features: int | None,
                     n_record: int | None) -> tuple[list[str], list[str]]:
    """The features the run would patch and record: stand-ins when counts are given, else the
    config's, else discover's candidates (as ``prepare`` chooses them)."""
    from featurepath.pipeline.candidates import discover_candidates
    from featurepath.rundir import feature_key, parse_feature_key

    if n_features is not None:
        if n_features < 1:
            raise ConfigError("--n-features must be at least 1")
        feats = spread_features(saes, n_features)
    else:
        feats = list(cfg.patch.features)
        if not feats:
            cands = discover_candidates(run_dir, cfg.discover.max_candidates) \
                if run_dir.exists() else None
            if cands is None or cands.empty:
                raise ConfigError("no features to plan: give --n-features N, features in the "
                                  "config, or run `featurepath discover` first")
            feats = [feature_key(r.layer, r.feature_id) for r in cands.itertuples()]
    if n_record is not None:
        if n_record < len(feats):
            raise ConfigError(f"--n-record {n_record} is fewer than the {len(feats)} features")
        extra = [k for k in spread_features(saes, n_record + len(feats), offset=1)
                 if k not in set(feats)]
        record = feats + extra[:n_record - len(feats)]
    else:
        record = list(cfg.patch.record) or list(feats)
    return feats, sorted(set(record), key=parse_feature_key)


@dataclass
class EstimateResult:
    """What :func:`run_estimate` measured: the patch plan's estimate (with its calibration),
    the screen's timed passes (or why they could not be timed) and where the calibration is
    kept."""

    estimate: Estimate
    screen: Any  # ScreenEstimate | None
    screen_problem: str | None
    calibration_path: Path


def run_estimate(run_dir: str | Path, cfg: RunConfig | None = None, *, runtime=None,
                 n_features: int | None = None, n_record: int | None = None, units: int = 3,
                 workers: int = 4, progress: bool = True,
                 say: Any = None) -> EstimateResult:
    """The estimate stage: calibrate ``units`` real units of the planned patch run (after one
    warm-up) on this machine, estimate the whole run on 1 device, ``workers`` devices and
    ``workers`` Ray workers, time the screen's passes, and keep the calibration in
    ``RUN/patch/`` for ``featurepath status``. ``cfg`` None plans the run's patch config
    (``RUN/patch/config.yaml``, else ``RUN/config.yaml``, else defaults); ``runtime`` is loaded
    from it when not given (its load time counts as a worker's start-up)."""
    from featurepath.config import resolve_config
    from featurepath.errors import FeaturepathError
    from featurepath.pipeline.estimate_screen import calibrate_screen
    from featurepath.pipeline.memory import with_batch_size
    from featurepath.pipeline.prompt_sets import prompt_sets
    from featurepath.pipeline.runtime import ensure_runtime
    from featurepath.rundir import RunDir

    run_dir = Path(run_dir)
    if units < 1:
        raise ConfigError("--units must be at least 1")
    if cfg is None:
        planned = RunDir(run_dir).patch_config
        cfg = resolve_config(run_dir, planned if planned.exists() else None)
    rt = ensure_runtime(runtime, cfg, progress=progress)
    model, tok, saes = rt
    cfg = with_batch_size(model, cfg)[0]  # a number: the calibration runs at the plan's size
    feats, record = planned_features(run_dir, cfg, saes, n_features, n_record)
    if say is not None:
        say(f"calibrating: {units + 1} units of {cfg.patch.batch_size} rows ...")
    here = run_dir if run_dir.exists() else None
    cal = calibrate(cfg, model, tok, saes, feats, record, units=units, load_s=rt.load_seconds,
                    work_dir=here, source_run=here)
    est = estimate(cfg, feats, cal, workers=workers, disk_path=run_dir)
    screen, problem = None, None
    try:
        sets, _ = prompt_sets(cfg, run_dir, tok, "screen")
    except FeaturepathError as exc:
        problem = str(exc)
    else:
        texts = [r.text for recs in sets.values() for r in recs]
        screen = calibrate_screen(cfg, model, tok, saes, texts, len(texts))
    return EstimateResult(est, screen, problem, save_calibration(run_dir, cal))
