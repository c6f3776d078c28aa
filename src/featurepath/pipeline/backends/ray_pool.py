"""The driver's machinery of the Ray backend (see :mod:`.ray` for why it is shaped so): the
actor class, the pool that starts and replaces actors, the marker files of units in flight, the
retry ledger, and the dispatch loop that feeds the actors and commits what they return.

Nothing here imports Ray at module level; ``ray`` is passed in by :func:`.ray.run_ray`.
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
from featurepath.pipeline.store import RunStore, Unit

IN_FLIGHT_PER_ACTOR = 2


@dataclass
class ActorSlot:
    """One actor position in the pool; its handle is replaced when the actor dies."""

    index: int
    handle: Any = None
    pid: int | None = None
    host: str = ""
    info_ref: Any = None
    inflight: deque = field(default_factory=deque)   # ObjectRefs, oldest first


@dataclass
class UnitTask:
    """A unit on its way through the pool: attempts charged so far and the last error."""

    unit: Unit
    attempts: int = 0
    error: str = ""


def actor_class(ray):
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


def error_text(exc: BaseException) -> str:
    """One line for failed.json and the terminal: the root cause, not Ray's wrapping."""
    cause = getattr(exc, "cause", None)
    base = cause if isinstance(cause, BaseException) else exc
    text = str(base).strip().splitlines()
    first = text[-1] if isinstance(cause, BaseException) and text else (text[0] if text else "")
    return f"{type(base).__name__}: {first}"[:500]


class ActorPool:
    """The actors of one :func:`run_ray` call: started together, each replaced when it dies,
    within a restart budget of ``max_retries + 1`` per actor (so a model that kills every worker
    cannot respawn forever)."""

    def __init__(self, ray, job, n_actors: int, per_actor: dict[str, float],
                 threads: int | None, max_retries: int):
        self.ray = ray
        self.job = job
        self.threads = threads
        self.worker = actor_class(ray).options(**per_actor)
        self.slots = [ActorSlot(i) for i in range(n_actors)]
        self.restart_budget = n_actors * (max_retries + 1)
        self.restarts = 0
        for slot in self.slots:
            self.spawn(slot)

    def spawn(self, slot: ActorSlot) -> None:
        """Start a fresh actor in ``slot``; its ``info`` call resolves once the model is loaded."""
        slot.handle = self.worker.remote(self.job, self.threads)
        slot.info_ref = slot.handle.info.remote()
        slot.pid, slot.host = None, ""
        slot.inflight.clear()

    def refresh(self, slot: ActorSlot) -> None:
        """Learn a (re)started actor's pid once its model is loaded, without waiting."""
        from ray.exceptions import RayError

        if slot.pid is None and slot.info_ref is not None:
            ready, _ = self.ray.wait([slot.info_ref], timeout=0)
            if ready:
                try:
                    info = self.ray.get(slot.info_ref)
                    slot.pid, slot.host = info["pid"], info["host"]
                except RayError:
                    pass  # its death shows up on its next unit

    def wait_loaded(self) -> list[dict[str, Any]]:
        """Block until every actor has loaded the model; their ``info`` dicts. A model that
        cannot load fails here, once, with its own message, instead of as a retry storm."""
        from ray.exceptions import RayError

        infos = []
        for slot in self.slots:
            try:
                info = self.ray.get(slot.info_ref)
            except RayError as exc:
                raise ConfigError(f"a Ray worker could not load the model/SAEs: "
                                  f"{error_text(exc)}") from None
            slot.pid, slot.host = info["pid"], info["host"]
            infos.append(info)
        return infos

    def replace(self, slot: ActorSlot) -> None:
        """Kill the actor of ``slot`` (it died or is unusable) and start another while the
        restart budget lasts; past it the slot stays empty (``handle`` None)."""
        self._kill(slot)
        if self.restarts < self.restart_budget:
            self.restarts += 1
            self.spawn(slot)
        else:
            slot.handle = None

    def close(self) -> None:
        """Kill every live actor (their models' memory goes back to the devices)."""
        for slot in self.slots:
            if slot.handle is not None:
                self._kill(slot)

    def _kill(self, slot: ActorSlot) -> None:
        try:
            self.ray.kill(slot.handle, no_restart=True)
        except Exception:  # the actor may already be gone
            pass


class RunningMarks:
    """The driver's marker files in ``RUN/patch/running``, one per unit in flight, which
    ``featurepath status`` reads (and which tests read to find a worker's pid)."""

    def __init__(self, path: Path):
        self.path = path

    def open(self) -> None:
        """Create the folder and drop markers a killed driver left behind."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.clear()

    def clear(self) -> None:
        for stale in self.path.glob("u*"):
            stale.unlink(missing_ok=True)

    def _file(self, task: UnitTask) -> Path:
        return self.path / f"u{task.unit.index:05d}"

    def add(self, task: UnitTask, slot: ActorSlot) -> None:
        self._file(task).write_text(json.dumps({
            "unit": task.unit.index, "worker": slot.index, "pid": slot.pid,
            "host": slot.host, "driver_pid": os.getpid(),
            "driver_host": socket.gethostname(), "started": time.time()}))

    def drop(self, task: UnitTask) -> None:
        self._file(task).unlink(missing_ok=True)


@dataclass
class RetryLedger:
    """Units still to run and units given up on, with the retry rule: a unit is charged an
    attempt when it was running as it failed, and is given up on after ``max_retries + 1``
    charged attempts; units merely queued behind a dead actor go back to the queue free."""

    queue: deque[UnitTask]
    max_retries: int
    on_fail: Callable[[int], None] = lambda n_failed: None  # the progress bar's count
    failures: dict[int, UnitTask] = field(default_factory=dict)
    requeued: int = 0

    def retry(self, task: UnitTask, exc: BaseException, charge: bool) -> None:
        """Put ``task`` back at the front of the queue, or give up on it."""
        task.error = error_text(exc)
        if charge:
            task.attempts += 1
        if task.attempts > self.max_retries:
            self.give_up(task)
        else:
            self.requeued += 1
            self.queue.appendleft(task)

    def give_up(self, task: UnitTask) -> None:
        self.failures[task.unit.index] = task
        self.on_fail(len(self.failures))

    def give_up_on_queue(self) -> None:
        """No live actor is left: what is still queued fails with the last error seen."""
        while self.queue:
            task = self.queue.popleft()
            task.error = task.error or "no Ray worker left"
            self.give_up(task)

    def succeeded(self, task: UnitTask) -> None:
        self.failures.pop(task.unit.index, None)


@dataclass
class Dispatcher:
    """The driver's loop: keep every live actor fed with up to :data:`IN_FLIGHT_PER_ACTOR`
    units, collect whatever finishes, commit it, and route failures to the ledger and the pool.
    Only this one thread commits, so each unit is committed exactly once."""

    pool: ActorPool
    ledger: RetryLedger
    store: RunStore
    marks: RunningMarks
    bar: Any
    on_unit: Callable[[int], None] | None = None
    where: dict[Any, tuple[ActorSlot, UnitTask]] = field(default_factory=dict)  # ref -> its unit
    n_done: int = 0
    n_trials: int = 0
    t_work: float = field(default_factory=time.time)  # speed shown excludes start-up

    def run(self) -> None:
        """Until every unit is committed or given up on."""
        ray = self.pool.ray
        while self.ledger.queue or self.where:
            self._submit()
            if not self.where:
                self.ledger.give_up_on_queue()
                break
            ready, _ = ray.wait(list(self.where), num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in self.where:  # else already requeued with its dead actor
                    self._collect(ref)

    def _submit(self) -> None:
        queue = self.ledger.queue
        for s in self.pool.slots:
            while s.handle is not None and queue and len(s.inflight) < IN_FLIGHT_PER_ACTOR:
                task = queue.popleft()
                if self.store.is_done(task.unit, verify=False):
                    self.bar.update(1)  # committed meanwhile by another shard: never redo
                    continue
                ref = s.handle.run.remote(task.unit)
                s.inflight.append(ref)
                self.where[ref] = (s, task)
                self.pool.refresh(s)
                self.marks.add(task, s)

    def _collect(self, ref: Any) -> None:
        """Fetch one finished call: commit its unit, or requeue it (and replace a dead actor)."""
        from ray.exceptions import GetTimeoutError, RayActorError, RayError

        slot, task = self.where[ref]
        try:
            df, arrays = self.pool.ray.get(ref, timeout=60)
        except RayActorError as exc:
            self._actor_died(slot, exc)
            return
        except (RayError, GetTimeoutError) as exc:  # task raised, object lost, ...
            self._forget(ref, slot, task)
            self.ledger.retry(task, exc, charge=True)
            return
        self.where.pop(ref)
        slot.inflight.remove(ref)
        self.store.commit(task.unit, df, arrays)
        self.marks.drop(task)
        self.ledger.succeeded(task)
        self.n_done += 1
        self.n_trials += len(df)
        el = time.time() - self.t_work
        self.bar.set_postfix(trials_per_s=f"{self.n_trials / max(el, 1e-9):.2f}",
                             failed=len(self.ledger.failures))
        self.bar.update(1)
        if self.on_unit is not None:
            self.on_unit(task.unit.index)

    def _forget(self, ref: Any, slot: ActorSlot, task: UnitTask) -> None:
        self.where.pop(ref)
        slot.inflight.remove(ref)
        self.marks.drop(task)

    def _actor_died(self, slot: ActorSlot, exc: BaseException) -> None:
        """Requeue everything the dead actor held: the oldest call is the one it was running
        (actor calls execute in order) and is charged an attempt. Then replace the actor."""
        for i, ref in enumerate(list(slot.inflight)):
            _, task = self.where.pop(ref)
            self.marks.drop(task)
            self.ledger.retry(task, exc, charge=(i == 0))
        slot.inflight.clear()
        self.pool.replace(slot)


__all__ = ["ActorPool", "ActorSlot", "Dispatcher", "RetryLedger", "RunningMarks", "UnitTask",
           "actor_class", "error_text", "IN_FLIGHT_PER_ACTOR"]
