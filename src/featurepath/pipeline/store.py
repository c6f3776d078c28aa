"""The run store: a run directory that survives kills, resumes and concurrent writers.

Paths and columns are defined in :mod:`featurepath.rundir` (its docstring is the schema).

A unit owns the fixed row range ``[unit * batch_size, unit * batch_size + n)`` of the Zarr
arrays, and Zarr chunks are ``batch_size`` rows, so units never share a chunk: concurrent
writers (Ray workers, SLURM shards) cannot clobber each other. A unit counts as done only when
its commit record exists *and* the checksums of its parquet part and its Zarr rows still match:
a half-written or corrupted unit is detected and redone. The commit record is written last,
atomically (temp file + rename), so a kill at any point leaves either a committed unit or one
that will be redone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurepath.errors import DataError, StorageError, storage_error
from featurepath.rundir import (
    SIGNALS,
    TRIAL_COLUMNS,
    DiskFullError,
    PlanItem,
    RunDir,
    atomic_write,
    feature_key,
    parquet_bytes,
)

__all__ = ["DiskFullError", "Plan", "PlanItem", "RunStore", "Unit"]

RESUME_HINT = "finished units are kept — fix this and rerun with --resume"
#: How long a process waits for another one that holds the planning lock (it is alive: a dead
#: holder's lock is released by the operating system at once).
PLANNING_WAIT_S = 600.0


@dataclass
class Unit:
    """A work unit: one forward batch of fixed composition, owning rows
    ``[row_start, row_start + n_rows)`` of the Zarr arrays."""

    index: int
    items: list[PlanItem]
    row_start: int

    @property
    def n_rows(self) -> int:
        return sum(it.n for it in self.items)


@dataclass
class Plan:
    units: list[Unit]
    batch_size: int
    record: list[str]
    config_digest: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(self.units) * self.batch_size

    def to_json(self) -> str:
        return json.dumps({"batch_size": self.batch_size, "record": self.record,
                           "config_digest": self.config_digest, "extra": self.extra,
                           "units": [asdict(u) for u in self.units]})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            d = json.loads(text)
            units = [Unit(u["index"], [PlanItem(**it) for it in u["items"]], u["row_start"])
                     for u in d["units"]]
            return cls(units, d["batch_size"], d["record"], d["config_digest"],
                       d.get("extra", {}))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"patch/plan.json is unreadable or from another featurepath version "
                            f"({type(exc).__name__}: {exc}); start the patch stage in a new run "
                            "directory") from None


def _store_error(exc: OSError) -> OSError | StorageError:
    """The one-line error for a write the disk refused (``atomic_write`` already converts its
    own; this covers the Zarr rows written in place)."""
    if exc.errno == errno.ENOSPC:
        return DiskFullError(f"disk full; {RESUME_HINT.replace('fix this', 'free space')}")
    return storage_error(exc, RESUME_HINT) or exc


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RunStore:
    """Reads and writes one run directory's patch stage."""

    def __init__(self, run_dir: str | Path):
        self.dir = RunDir(run_dir)
        self.root = self.dir.root
        self.patch_dir = self.dir.patch
        self.parts = self.dir.parts
        self.commits = self.dir.commits
        self.zarr_path = self.dir.activations

    # ------------------------------------------------------------ creation
    def exists(self) -> bool:
        return self.dir.plan.exists()

    def create(self, plan: Plan, rec_layers: list[int], rec_features: list[int],
               store_dtype: str = "float16", carry: np.ndarray | None = None) -> None:
        """Create the Zarr arrays and write the plan (last: the plan marks a created store).

        ``carry`` [n_patched_features, n_rec] (the plan's feature order): ``W_dec[S] ·
        W_enc[:, T]``, the pre-activation shift of recorded feature T per unit clamp of S if the
        delta travelled up the residual stream unchanged (0 where T is not above S)."""
        import zarr

        self.parts.mkdir(parents=True, exist_ok=True)
        self.commits.mkdir(parents=True, exist_ok=True)
        # Without a plan.json nothing here was ever committed against *this* plan: files left
        # by a planner killed half-way (or a plan removed by hand) must not count as done.
        for stale in (*self.commits.glob("u*.json"), *self.parts.glob("u*.parquet")):
            stale.unlink(missing_ok=True)
        n_rec = len(rec_layers)
        g = zarr.open_group(str(self.zarr_path), mode="w")
        for name in SIGNALS:
            g.create_array(name, shape=(plan.n_rows, max(n_rec, 1)),
                           chunks=(plan.batch_size, max(n_rec, 1)), dtype=store_dtype,
                           fill_value=np.nan)
        g.create_array("rec_layer", data=np.asarray(rec_layers, dtype="int32").reshape(-1))
        g.create_array("rec_feature", data=np.asarray(rec_features, dtype="int32").reshape(-1))
        g.attrs["rec"] = [feature_key(a, b) for a, b in zip(rec_layers, rec_features, strict=True)]
        if carry is not None:
            g.create_array("carry", data=np.asarray(carry, dtype="float32"))
            g.attrs["carry_sources"] = list(plan.extra.get("features", []))
        from featurepath.faults import pause_point

        pause_point("patch-store-created")  # tests kill here: store made, plan not yet written
        atomic_write(self.dir.plan, plan.to_json())

    @contextmanager
    def planning_lock(self, timeout: float = PLANNING_WAIT_S) -> Iterator[bool]:
        """Hold the run's planning lock; yields True when another process held it first.

        Shards of a job array often start together on a new run directory; without the lock
        each would plan and recreate ``activations.zarr``, wiping the others' work. The lock is
        ``flock`` on ``patch/.planning.lock``: the kernel drops it when its holder exits or is
        killed, so a planner killed half-way never blocks the next run, while a live one makes
        the others wait (and then join its plan). The holder removes the file before it lets
        go, and a waiter that then gets the lock of a removed file tries again on the current
        one (the usual lock-file protocol), so a failed plan leaves no file behind.
        ``pid host time`` in the file only serve the timeout message.
        """
        path = self.dir.planning_lock
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                self.patch_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # a finishing holder removed the empty directory
                continue
            locked, blocked = self._flock(fd, deadline)
            waited = waited or blocked
            if not locked or self._same_file(fd, path):
                break
            os.close(fd)  # the holder removed this file while we waited: take the new one
        try:
            (self.patch_dir / ".planning").unlink(missing_ok=True)  # the old, stale-prone marker
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode(), 0)
            yield waited
        finally:
            try:
                path.unlink(missing_ok=True)
                if not self.exists():  # planning failed: leave no empty patch/ behind
                    self.patch_dir.rmdir()
            except OSError:  # not empty, or a read-only file system
                pass
            os.close(fd)  # releases the lock

    def _flock(self, fd: int, deadline: float) -> tuple[bool, bool]:
        """``(locked, had to wait)``; waits while a live process holds the lock."""
        import fcntl

        blocked = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True, blocked
            except BlockingIOError:
                blocked = True
                if time.monotonic() > deadline:
                    holder = self._lock_holder(fd)
                    os.close(fd)
                    raise DataError(
                        f"{self.patch_dir} is still being planned by another live process "
                        f"({holder}); wait for it or stop it, then rerun") from None
                time.sleep(0.2)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                import warnings

                warnings.warn(f"{self.patch_dir}: the file system has no locks; do not start "
                              "several shards on a new run at once", stacklevel=4)
                return False, blocked

    @staticmethod
    def _same_file(fd: int, path: Path) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def _lock_holder(fd: int) -> str:
        try:
            pid, host, _ = os.pread(fd, 200, 0).decode().split()
            return f"pid {pid} on {host}"
        except (OSError, ValueError, UnicodeDecodeError):
            return "unknown pid"

    def plan(self) -> Plan:
        p = self.dir.plan
        if not p.exists():
            raise DataError(f"{self.root} has no patch plan; run `featurepath patch` first")
        return Plan.from_json(p.read_text())

    # ------------------------------------------------------------ commits
    def _region(self, unit: Unit) -> slice:
        return slice(unit.row_start, unit.row_start + unit.n_rows)

    def _arrays_digest(self, g, region: slice) -> str:
        h = hashlib.sha256()
        for name in SIGNALS:
            h.update(np.ascontiguousarray(g[name][region]).tobytes())
        return h.hexdigest()

    def commit(self, unit: Unit, trials: pd.DataFrame, arrays: dict[str, np.ndarray]) -> None:
        """Write one unit: parquet part, Zarr rows, then the commit record (last, atomic)."""
        import zarr

        region = self._region(unit)
        try:
            g = zarr.open_group(str(self.zarr_path), mode="r+")
            for name in SIGNALS:
                g[name][region] = arrays[name].astype(g[name].dtype)
            part = parquet_bytes(trials)
            atomic_write(self.dir.part(unit.index), part)
            record = {"unit": unit.index, "rows": [region.start, region.stop],
                      "parquet_sha256": _sha(part),
                      "arrays_sha256": self._arrays_digest(g, region)}
            atomic_write(self.dir.commit(unit.index), json.dumps(record))
        except OSError as exc:
            err = _store_error(exc)
            if err is exc:
                raise
            raise err from None

    def is_done(self, unit: Unit, verify: bool = True) -> bool:
        rec_path = self.dir.commit(unit.index)
        part = self.dir.part(unit.index)
        if not rec_path.exists() or not part.exists():
            return False
        try:
            record = json.loads(rec_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        if not verify:
            return True
        if _sha(part.read_bytes()) != record.get("parquet_sha256"):
            return False
        import zarr

        try:
            g = zarr.open_group(str(self.zarr_path), mode="r")
            return self._arrays_digest(g, self._region(unit)) == \
                record.get("arrays_sha256")
        except Exception:  # unreadable chunk = corrupt unit
            return False

    def pending(self, verify: bool = True) -> list[Unit]:
        plan = self.plan()
        todo = []
        for u in plan.units:
            if not self.is_done(u, verify):
                self.dir.commit(u.index).unlink(missing_ok=True)
                todo.append(u)
        return todo

    def done_units(self) -> list[int]:
        return sorted(int(p.stem[1:]) for p in self.commits.glob("u*.json"))

    # ------------------------------------------------------------ reading
    def consolidate(self) -> Path:
        """Rebuild ``trials.parquet`` from the committed parts, in unit order."""
        parts = sorted(self.parts.glob("u*.parquet"))
        done = set(self.done_units())
        frames = [pd.read_parquet(p) for p in parts if int(p.stem[1:]) in done]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=TRIAL_COLUMNS)
        df = df.sort_values(["unit", "row"]).reset_index(drop=True)
        return atomic_write(self.dir.trials, parquet_bytes(df))

    def trials(self) -> pd.DataFrame:
        p = self.dir.trials
        if not p.exists():
            raise DataError(f"{self.root} has no trials.parquet; run `featurepath patch` first")
        return pd.read_parquet(p)

    def activations(self, name: str = "decision") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import zarr

        if not self.zarr_path.exists():
            raise DataError(f"{self.root} has no activations.zarr")
        g = zarr.open_group(str(self.zarr_path), mode="r")
        return g[name][:], g["rec_layer"][:], g["rec_feature"][:]

    def bytes_stored(self) -> int:
        total = 0
        for base in (self.zarr_path, self.parts):
            for dirpath, _, files in os.walk(base):
                total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
        return total
