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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurepath.errors import DataError
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
        atomic_write(self.dir.plan, plan.to_json())

    def claim_planning(self) -> bool:
        """True when this process may plan the run (it exists already, or we hold the lock).

        Shards of a job array often start together on a new run directory; without the lock
        each would plan and recreate ``activations.zarr``, wiping the others' work.
        """
        if self.exists():
            return True
        self.patch_dir.mkdir(parents=True, exist_ok=True)
        lock = self.dir.planning_lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self.exists()
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True

    def release_planning(self) -> None:
        self.dir.planning_lock.unlink(missing_ok=True)

    def wait_for_plan(self, timeout: float = 600.0) -> None:
        import time

        deadline = time.time() + timeout
        while not self.exists():
            if time.time() > deadline:
                raise DataError(f"{self.patch_dir} is being planned by another process that "
                                "never finished; remove patch/.planning and rerun")
            time.sleep(0.5)

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
            if exc.errno == errno.ENOSPC:
                raise DiskFullError("disk full; finished units are kept — free space and rerun "
                                    "with --resume") from None
            raise

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
