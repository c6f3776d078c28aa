"""Where a patch run stands, read only from its run directory.

``featurepath status`` must work from any shell on any machine that sees the run directory —
while a local, Ray or SLURM-sharded run is writing to it, or after it was killed — so it reads
files only and never talks to Ray: the plan (all units), commit records (done; their file times
give the speed, since :meth:`RunStore.commit` stores no timestamp), the Ray driver's markers in
``patch/running`` (in flight) and ``patch/failed.json`` (given up on).

One side effect, on the driver's host only: a private Ray that a dead ``--backend ray`` driver
of this run left running is ended, with a warning line saying so
(:func:`featurepath.pipeline.ray_stale.sweep_stale`; it needs no Ray, only ``/proc``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from featurepath.errors import DataError
from featurepath.pipeline.formatting import _fmt_bytes, _fmt_seconds
from featurepath.pipeline.ray_stale import sweep_stale
from featurepath.pipeline.store import RunStore
from featurepath.rundir import RunDir

DISK_WARN_FRACTION = 0.8
# A pause longer than this (and much longer than usual between commits) starts a new session:
# speed is measured on the latest session only, so a run resumed after a night off does not
# look slow.
SESSION_GAP_S = 120.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _running(run_dir: Path, done: set[int]) -> list[int]:
    """Units in flight per the Ray driver's markers. A marker whose driver process is known to
    be dead (same host, pid gone) is stale — the driver was killed — and is ignored."""
    marks = RunDir(run_dir).running
    out = []
    here = socket.gethostname()
    for m in marks.glob("u*") if marks.exists() else []:
        try:
            rec = json.loads(m.read_text())
            unit = int(rec["unit"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        pid = rec.get("driver_pid")
        if rec.get("driver_host") == here and isinstance(pid, int) and not _pid_alive(pid):
            continue
        if unit not in done:
            out.append(unit)
    return sorted(out)


def _failed(run_dir: Path, done: set[int]) -> dict[int, dict[str, Any]]:
    path = RunDir(run_dir).failed
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}
    return {int(k): v for k, v in data.items() if int(k) not in done}


def _speed(commits: list[tuple[float, int]]) -> tuple[float, float]:
    """``(trials/s, units/s)`` over the latest session of commits (mtime, rows). The first
    commit of a session only marks its start (its own work began before anything was seen)."""
    if len(commits) < 2:
        return 0.0, 0.0
    commits = sorted(commits)
    times = [t for t, _ in commits]
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    median = gaps[len(gaps) // 2]
    start = 0
    for i in range(1, len(times)):
        if times[i] - times[i - 1] > max(SESSION_GAP_S, 20 * median):
            start = i
    sess = commits[start:]
    span = sess[-1][0] - sess[0][0]
    if len(sess) < 2 or span <= 0:
        return 0.0, 0.0
    return sum(n for _, n in sess[1:]) / span, (len(sess) - 1) / span


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """Progress, speed, ETA and disk of a patch run, as plain values (the CLI formats them)."""
    root = Path(run_dir)
    store = RunStore(root)
    if not store.exists():
        raise DataError(f"{root} has no patch plan; run `featurepath patch` first")
    plan = store.plan()
    warnings = sweep_stale(RunDir(root).ray_drivers)
    rows = {u.index: u.n_rows for u in plan.units}
    commits: list[tuple[float, int]] = []
    done: set[int] = set()
    for p in store.commits.glob("u*.json"):
        try:
            uid = int(p.stem[1:])
            mtime = p.stat().st_mtime
        except (ValueError, OSError):
            continue
        if uid in rows:
            done.add(uid)
            commits.append((mtime, rows[uid]))
    trials_total = sum(rows.values())
    trials_done = sum(rows[u] for u in done)
    trials_left = trials_total - trials_done
    tps, ups = _speed(commits)
    running = _running(root, done)
    failed = _failed(root, done)
    written = store.bytes_stored()
    per_unit = written / len(done) if done else 0.0
    left = len(plan.units) - len(done)
    parts_bytes = sum(p.stat().st_size for p in store.parts.glob("u*.parquet")) \
        if store.parts.exists() else 0
    # the rest of the units, plus trials.parquet rebuilt from all parts at the end
    needed = 0.0 if left == 0 else \
        per_unit * left + (parts_bytes / len(done) * len(plan.units) if done else 0.0)
    disk = shutil.disk_usage(root)
    used_frac = disk.used / disk.total if disk.total else 0.0
    if used_frac > DISK_WARN_FRACTION:
        warnings.append(f"disk {used_frac:.0%} full")
    if done and disk.free < needed:
        warnings.append(f"free space {_fmt_bytes(disk.free)} will not hold the rest of the run "
                        f"(~{_fmt_bytes(needed)})")
    last = max((t for t, _ in commits), default=None)
    eta, eta_source = _eta(root, trials_left, tps)
    return {
        "run_dir": str(root), "units": len(plan.units), "done": len(done),
        "running": running, "failed": sorted(failed),
        "failed_errors": {u: r.get("error", "") for u, r in failed.items()},
        "left": left, "trials_total": trials_total, "trials_done": trials_done,
        "trials_per_second": tps, "units_per_second": ups,
        "eta_seconds": eta, "eta_source": eta_source,
        "last_commit_age_s": (time.time() - last) if last is not None else None,
        "bytes_written": written, "bytes_per_unit": per_unit, "bytes_needed": needed,
        "disk_free": disk.free, "disk_total": disk.total, "disk_used_fraction": used_frac,
        "warnings": warnings,
    }


def _eta(root: Path, trials_left: int, tps: float) -> tuple[float | None, str | None]:
    """The run's own speed once two commits measured it; before that, the rate that
    ``featurepath estimate`` calibrated on this machine (``RUN/patch/calibration.json``)."""
    from featurepath.pipeline.estimate import eta_from_calibration, load_calibration

    if trials_left == 0:
        return 0.0, "done"
    if tps > 0:
        return trials_left / tps, "measured"
    cal = load_calibration(root)
    if cal is not None:
        return eta_from_calibration(cal, trials_left), "calibration"
    return None, None


def format_status(st: dict[str, Any]) -> str:
    """Human-readable lines for the CLI."""
    def ids(xs: list[int]) -> str:
        return ", ".join(map(str, xs[:12])) + (" ..." if len(xs) > 12 else "")

    lines = [
        f"run {st['run_dir']}",
        f"units  {st['done']}/{st['units']} done, {len(st['running'])} running, "
        f"{len(st['failed'])} failed, {st['left']} left",
        f"trials {st['trials_done']}/{st['trials_total']}; "
        f"{st['trials_per_second']:.2f} trials/s; ETA {_fmt_seconds(st['eta_seconds'])}"
        + (" (from `featurepath estimate`)" if st.get("eta_source") == "calibration" else ""),
        f"disk   {_fmt_bytes(st['bytes_written'])} written "
        f"({_fmt_bytes(st['bytes_per_unit'])}/unit, ~{_fmt_bytes(st['bytes_needed'])} more "
        f"needed); {_fmt_bytes(st['disk_free'])} free ({st['disk_used_fraction']:.0%} used)",
    ]
    if st["running"]:
        lines.append(f"running units: {ids(st['running'])}")
    for u in st["failed"][:12]:
        lines.append(f"failed unit {u}: {st['failed_errors'].get(u, '')}")
    if st["failed"]:
        lines.append("rerun `featurepath patch RUN --resume` to retry failed units")
    lines += [f"warning: {w}" for w in st["warnings"]]
    return "\n".join(lines)
