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

Ray is an optional extra, imported only here and only when this backend is used.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurepath.errors import ConfigError
from featurepath.pipeline.backends import BackendSummary
from featurepath.pipeline.store import RunStore, Unit
from featurepath.rundir import RunDir, atomic_write

IN_FLIGHT_PER_ACTOR = 2
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


_REAPER: dict[str, Any] = {}  # "reaper": the watchdog of the Ray this process started


def start_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` or start a private local Ray; True when this call started it (so
    the caller should call :func:`shutdown_ray`). A Ray already initialised in this process is
    reused. A private Ray is watched by :mod:`featurepath.pipeline.ray_reaper`, which ends its
    processes if this process dies without shutting it down."""
    ray = _import_ray()
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

    if "reaper" not in _REAPER:
        reaper = start_reaper()
        if reaper is not None:
            _REAPER["reaper"] = reaper
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **common)
    return True


def shutdown_ray() -> None:
    """Shut down the Ray this process started, and let its watchdog sweep what is left."""
    ray = _import_ray()
    ray.shutdown()
    reaper = _REAPER.pop("reaper", None)
    if reaper is not None:
        reaper.stop()


@dataclass
class _Slot:
    """One actor position in the pool; its handle is replaced when the actor dies."""

    index: int
    handle: Any = None
    pid: int | None = None
    host: str = ""
    info_ref: Any = None
    inflight: deque = field(default_factory=deque)   # ObjectRefs, oldest first


@dataclass
class _Task:
    unit: Unit
    attempts: int = 0
    error: str = ""


def _actor_class(ray):
    """The worker actor, defined lazily so that importing this module never needs Ray."""

    class PatchWorker:
        """Holds the model and SAEs of one run and computes units on request."""

        def __init__(self, job, threads: int | None):
            import torch

            from featurepath.pipeline.runtime import load_runtime

            if threads:
                torch.set_num_threads(threads)
            self.job = job
            cfg = job.cfg
            if cfg.device and cfg.device.startswith("cuda:"):
                # Ray shows each actor only its own GPU(s), renumbered from 0
                cfg = cfg.model_copy(update={"device": "cuda"})
            self.model, self.tok, self.saes = load_runtime(cfg, progress=False)

        def info(self) -> dict[str, Any]:
            import torch

            return {"pid": os.getpid(), "host": socket.gethostname(),
                    "threads": torch.get_num_threads(),
                    "device": str(next(self.model.parameters()).device)}

        def run(self, unit: Unit):
            from featurepath.pipeline.patch import run_unit

            return run_unit(self.job, unit, self.model, self.tok, self.saes)

    return ray.remote(PatchWorker)


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


def _error_text(exc: BaseException) -> str:
    """One line for failed.json and the terminal: the root cause, not Ray's wrapping."""
    cause = getattr(exc, "cause", None)
    base = cause if isinstance(cause, BaseException) else exc
    text = str(base).strip().splitlines()
    first = text[-1] if isinstance(cause, BaseException) and text else (text[0] if text else "")
    return f"{type(base).__name__}: {first}"[:500]


def _write_failed(run_dir: str, store: RunStore, failures: dict[int, _Task],
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

    ray = _import_ray()
    from ray.exceptions import GetTimeoutError, RayActorError, RayError

    store = RunStore(job.run_dir)
    if units is None:
        units = store.pending()
    if not units:  # nothing to do: do not pay for starting Ray
        store.consolidate()
        return BackendSummary(units=0, trials=0, seconds=0.0)
    marks = running_dir(job.run_dir)
    marks.mkdir(parents=True, exist_ok=True)
    for stale in marks.glob("u*"):
        stale.unlink(missing_ok=True)
    t0 = time.time()
    started = start_ray(address)
    try:
        n_actors, per_actor, threads = _plan_pool(ray, workers)
        n_actors = max(1, min(n_actors, len(units)))
        Worker = _actor_class(ray).options(**per_actor)
        slots = [_Slot(i) for i in range(n_actors)]
        restart_budget = n_actors * (max_retries + 1)
        restarts = 0

        def spawn(slot: _Slot) -> None:
            slot.handle = Worker.remote(job, threads)
            slot.info_ref = slot.handle.info.remote()
            slot.pid, slot.host = None, ""
            slot.inflight.clear()

        def refresh(slot: _Slot) -> None:
            """Learn a (re)started actor's pid once its model is loaded, without waiting."""
            if slot.pid is None and slot.info_ref is not None:
                ready, _ = ray.wait([slot.info_ref], timeout=0)
                if ready:
                    try:
                        info = ray.get(slot.info_ref)
                        slot.pid, slot.host = info["pid"], info["host"]
                    except RayError:
                        pass  # its death shows up on its next unit

        for s in slots:
            spawn(s)
        # Wait for every actor to load the model: a model that cannot load fails here, once,
        # with its own message, instead of as a retry storm.
        infos = []
        for s in slots:
            try:
                info = ray.get(s.info_ref)
            except RayError as exc:
                raise ConfigError(f"a Ray worker could not load the model/SAEs: "
                                  f"{_error_text(exc)}") from None
            s.pid, s.host = info["pid"], info["host"]
            infos.append(info)
        from featurepath.faults import pause_point

        pause_point("ray-workers-ready")  # tests kill the driver here

        queue: deque[_Task] = deque(_Task(u) for u in units)
        where: dict[Any, tuple[_Slot, _Task]] = {}
        failures: dict[int, _Task] = {}
        requeued = 0
        n_done = n_trials = 0
        bar = tqdm(total=len(units), desc="patch units (ray)", unit="unit",
                   disable=not progress, dynamic_ncols=True)
        t_work = time.time()  # the speed shown excludes Ray's start-up and model loading

        def mark(task: _Task, slot: _Slot, on: bool) -> None:
            p = marks / f"u{task.unit.index:05d}"
            if on:
                refresh(slot)
                p.write_text(json.dumps({
                    "unit": task.unit.index, "worker": slot.index, "pid": slot.pid,
                    "host": slot.host, "driver_pid": os.getpid(),
                    "driver_host": socket.gethostname(), "started": time.time()}))
            else:
                p.unlink(missing_ok=True)

        def give_up(task: _Task) -> None:
            failures[task.unit.index] = task
            bar.set_postfix(failed=len(failures))

        def retry(task: _Task, exc: BaseException, charge: bool) -> None:
            nonlocal requeued
            task.error = _error_text(exc)
            if charge:
                task.attempts += 1
            if task.attempts > max_retries:
                give_up(task)
            else:
                requeued += 1
                queue.appendleft(task)

        def actor_died(slot: _Slot, exc: BaseException) -> None:
            """Requeue everything the dead actor held: the oldest call is the one it was
            running (actor calls execute in order) and is charged an attempt."""
            nonlocal restarts
            for i, ref in enumerate(list(slot.inflight)):
                _, task = where.pop(ref)
                mark(task, slot, False)
                retry(task, exc, charge=(i == 0))
            slot.inflight.clear()
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception:  # already gone
                pass
            if restarts < restart_budget:
                restarts += 1
                spawn(slot)
            else:
                slot.handle = None

        while queue or where:
            for s in slots:
                while s.handle is not None and queue and len(s.inflight) < IN_FLIGHT_PER_ACTOR:
                    task = queue.popleft()
                    if store.is_done(task.unit, verify=False):
                        bar.update(1)  # committed meanwhile by another shard: never redo
                        continue
                    ref = s.handle.run.remote(task.unit)
                    s.inflight.append(ref)
                    where[ref] = (s, task)
                    mark(task, s, True)
            if not where:
                # no live actor left: what is still queued fails with the last error seen
                while queue:
                    task = queue.popleft()
                    task.error = task.error or "no Ray worker left"
                    give_up(task)
                break
            ready, _ = ray.wait(list(where), num_returns=1, timeout=1.0)
            for ref in ready:
                if ref not in where:
                    continue  # already requeued with its dead actor
                slot, task = where[ref]
                try:
                    df, arrays = ray.get(ref, timeout=60)
                except RayActorError as exc:
                    actor_died(slot, exc)
                    continue
                except (RayError, GetTimeoutError) as exc:  # task raised, object lost, ...
                    where.pop(ref)
                    slot.inflight.remove(ref)
                    mark(task, slot, False)
                    retry(task, exc, charge=True)
                    continue
                where.pop(ref)
                slot.inflight.remove(ref)
                store.commit(task.unit, df, arrays)
                mark(task, slot, False)
                failures.pop(task.unit.index, None)
                n_done += 1
                n_trials += len(df)
                el = time.time() - t_work
                bar.set_postfix(trials_per_s=f"{n_trials / max(el, 1e-9):.2f}",
                                failed=len(failures))
                bar.update(1)
                if on_unit is not None:
                    on_unit(task.unit.index)
        bar.close()
        for s in slots:
            if s.handle is not None:
                try:
                    ray.kill(s.handle, no_restart=True)
                except Exception:  # the actor may already be gone
                    pass
    finally:
        if started:
            shutdown_ray()
        for stale in marks.glob("u*"):
            stale.unlink(missing_ok=True)
    _write_failed(job.run_dir, store, failures, {u.index for u in units})
    store.consolidate()
    return BackendSummary(units=n_done, trials=n_trials, seconds=time.time() - t0,
                          failed=sorted(failures), requeued=requeued, restarts=restarts,
                          workers=infos)


__all__ = ["run_ray", "start_ray", "shutdown_ray", "running_dir", "failed_path", "release_memory"]
