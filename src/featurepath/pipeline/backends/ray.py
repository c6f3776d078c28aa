"""The Ray backend of ``featurepath patch``: work units on a pool of actors, each holding the model.

Why it is shaped this way:

* **One actor per GPU** (or per group of CPU cores): loading the model and SAEs is the expensive
  part, so each actor loads them once and then runs many units.
* **A driver-side queue, at most two units in flight per actor**: fast actors take more units,
  the device never waits for the driver between units, and a dead actor loses little.
* **The driver commits.** Actors return ``(trials, arrays)``; the driver, one thread, writes
  each unit through :meth:`RunStore.commit`. A unit is therefore committed exactly once, and
  workers need neither the run directory nor a shared disk (Kubernetes pods often have none).
  The arrays are small (rows x recorded features), so the transfer costs little.
* **Retries**: an actor that dies (SIGKILL, OOM killer, lost node) is replaced by a fresh one;
  the unit it was running is retried up to ``max_retries`` times, units merely queued behind it
  are requeued free of charge. A unit that keeps failing is recorded in
  ``RUN/patch/failed.json`` with its last error, the rest of the run goes on, and ``--resume``
  tries it again (failed units are never committed, so they stay pending).
* **Localhost only**: a Ray started here binds every server to 127.0.0.1 (Ray would otherwise
  listen on all interfaces); joining a cluster (``address=``) uses that cluster's settings.

Ray is an optional extra, imported only here and only when this backend is used. The
driver's machinery lives in :mod:`.ray_pool`: :class:`ActorPool` (starting and replacing
actors), :class:`RunningMarks` (``RUN/patch/running``), :class:`RetryLedger` (the retry rule
and ``failed``) and :class:`Dispatcher` (the submit/collect/commit loop); :func:`run_ray` wires
them together between :func:`start_ray` and :func:`shutdown_ray`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featurepath.errors import ConfigError
from featurepath.pipeline.backends import BackendSummary
from featurepath.pipeline.backends.ray_pool import (
    ActorPool,
    Dispatcher,
    RetryLedger,
    RunningMarks,
    UnitTask,
)
from featurepath.pipeline.store import RunStore, Unit
from featurepath.rundir import RunDir, atomic_write

DEFAULT_CPU_WORKERS = 2


def running_dir(run_dir: str | Path) -> Path:
    """Where the driver keeps one marker file per unit in flight (read by ``status``)."""
    return RunDir(run_dir).running


def failed_path(run_dir: str | Path) -> Path:
    return RunDir(run_dir).failed


def release_memory() -> None:
    """Return the driver's freed model memory to the device, so that the Ray workers placed on
    the same GPU get all of it (call after dropping the last reference to the model)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _import_ray():
    """Import Ray, or say how to get it: the package works without this optional extra."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'featurepath[ray]'") from None
    return ray


def _bind_localhost(ray) -> None:
    """Make a Ray started by this process listen on 127.0.0.1 only.

    Ray resolves a loopback ``_node_ip_address`` to the machine's routable address unless its
    single-node mode is on (the default on macOS/Windows). Switching that mode on makes the GCS,
    raylet, workers and agents bind to loopback; the environment variable carries it to the
    processes Ray spawns, the attribute to this already-imported module.
    """
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


_OWNED: dict[str, Any] = {}  # what the private Ray of this process leaves to clean up:
# "reaper" (its watchdog) and "record" ((folder, DriverRecord) in the run directory)


def start_ray(address: str | None = None, num_cpus: int | None = None, *,
              run_dir: str | Path | None = None) -> bool:
    """Connect to ``address`` or start a private local Ray; True when this call started it (so
    the caller should call :func:`shutdown_ray`). A Ray already initialised in this process is
    reused. A private Ray is watched by :mod:`featurepath.pipeline.ray_reaper`, which ends its
    processes if this process dies without shutting it down.

    With ``run_dir``, a private Ray that a dead driver of that run left behind is ended first
    (one ``warning:`` line on stderr says what), and a private Ray started now is recorded there
    so that the next start can do the same for it (:mod:`featurepath.pipeline.ray_stale`)."""
    ray = _import_ray()
    if run_dir is not None:
        from featurepath.pipeline.ray_stale import sweep_stale

        for line in sweep_stale(RunDir(run_dir).ray_drivers):
            print(f"warning: {line}", file=sys.stderr)
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True,
                              "configure_logging": True, "logging_level": "warning"}
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {address}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              ) from None
        return True
    _bind_localhost(ray)
    from featurepath.pipeline.ray_reaper import start_reaper

    if "reaper" not in _OWNED:
        reaper = start_reaper()
        if reaper is not None:
            _OWNED["reaper"] = reaper
    kwargs = dict(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                  **common)
    if run_dir is None:
        ray.init(**kwargs)
    else:
        _init_recorded(ray, RunDir(run_dir).ray_drivers, kwargs)
    return True


def _init_recorded(ray, folder: Path, kwargs: dict[str, Any]) -> None:
    """``ray.init(**kwargs)`` with this driver recorded in ``folder`` before any Ray process
    exists, and its token in the environment those processes copy."""
    from featurepath.pipeline.ray_stale import (
        forget_record,
        new_record,
        save_record,
        token_in_env,
    )

    rec = new_record()
    save_record(folder, rec)
    try:
        with token_in_env(rec):
            ctx = ray.init(**kwargs)
    except BaseException:
        forget_record(folder, rec)
        raise
    session = getattr(ctx, "address_info", {}).get("session_dir") or ""
    rec.session_dir = os.path.realpath(session) if session else ""  # as /proc/PID/fd shows it
    save_record(folder, rec)
    _OWNED["record"] = (folder, rec)


def shutdown_ray() -> None:
    """Shut down the Ray this process started, let its watchdog sweep what is left, and drop
    this driver's record from the run directory."""
    ray = _import_ray()
    ray.shutdown()
    reaper = _OWNED.pop("reaper", None)
    if reaper is not None:
        reaper.stop()
    record = _OWNED.pop("record", None)
    if record is not None:
        from featurepath.pipeline.ray_stale import forget_record

        forget_record(*record)


def _plan_pool(ray, workers: int | None) -> tuple[int, dict[str, float], int | None]:
    """``(n_actors, resources per actor, torch threads per actor)`` from the cluster's size:
    one actor per GPU by default; on CPU, the cores split evenly so actors do not oversubscribe
    them (each actor's torch gets its share as threads)."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    cpus = float(res.get("CPU", 1))
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if gpus:
        n = workers or gpus
        per = {"num_gpus": min(1.0, gpus / n), "num_cpus": min(1.0, cpus / n)}
        return n, per, max(1, int(cpus // n))
    n = workers or DEFAULT_CPU_WORKERS
    share = cpus / n
    return n, {"num_cpus": share}, max(1, int(share))


def _write_failed(run_dir: str, store: RunStore, failures: dict[int, UnitTask],
                  attempted: set[int]) -> None:
    """Merge this run's failures into failed.json: units committed since, or retried and now
    fine, drop out; failures of units this run did not touch are kept."""
    path = failed_path(run_dir)
    old: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
    done = set(store.done_units())
    merged = {k: v for k, v in old.items() if int(k) not in done and int(k) not in attempted}
    for uid, task in failures.items():
        merged[str(uid)] = {"error": task.error, "attempts": task.attempts, "time": time.time()}
    if merged:
        atomic_write(path, json.dumps(merged, indent=1, sort_keys=True))
    else:
        path.unlink(missing_ok=True)


def run_ray(job, units: list[Unit] | None = None, *, workers: int | None = None,
            address: str | None = None, progress: bool = True, max_retries: int = 2,
            on_unit: Callable[[int], None] | None = None) -> BackendSummary:
    """Run ``units`` (default: every pending unit) of ``job`` on Ray actors and commit each to
    the run store exactly once.

    ``failed`` of the summary lists unit ids that failed ``max_retries + 1`` times (their errors
    are in ``RUN/patch/failed.json``). ``on_unit(unit_id)`` is called after each commit.
    """
    from tqdm.auto import tqdm

    from featurepath.faults import pause_point

    ray = _import_ray()
    store = RunStore(job.run_dir)
    if units is None:
        units = store.pending()
    if not units:  # nothing to do: do not pay for starting Ray
        store.consolidate()
        return BackendSummary(units=0, trials=0, seconds=0.0)
    marks = RunningMarks(running_dir(job.run_dir))
    marks.open()
    t0 = time.time()
    started = start_ray(address, run_dir=job.run_dir)
    try:
        n_actors, per_actor, threads = _plan_pool(ray, workers)
        pool = ActorPool(ray, job, max(1, min(n_actors, len(units))), per_actor, threads,
                         max_retries)
        infos = pool.wait_loaded()
        pause_point("ray-workers-ready")  # tests kill the driver here
        bar = tqdm(total=len(units), desc="patch units (ray)", unit="unit",
                   disable=not progress, dynamic_ncols=True)
        ledger = RetryLedger(deque(UnitTask(u) for u in units), max_retries,
                             on_fail=lambda n: bar.set_postfix(failed=n))
        dispatch = Dispatcher(pool, ledger, store, marks, bar, on_unit)
        dispatch.run()
        bar.close()
        pool.close()
    finally:
        if started:
            shutdown_ray()
        marks.clear()
    _write_failed(job.run_dir, store, ledger.failures, {u.index for u in units})
    store.consolidate()
    return BackendSummary(units=dispatch.n_done, trials=dispatch.n_trials,
                          seconds=time.time() - t0, failed=sorted(ledger.failures),
                          requeued=ledger.requeued, restarts=pool.restarts, workers=infos)


__all__ = ["run_ray", "start_ray", "shutdown_ray", "running_dir", "failed_path", "release_memory"]
