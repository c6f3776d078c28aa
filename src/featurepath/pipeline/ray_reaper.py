"""A watchdog that ends the private local Ray when the driver that started it dies.

Why: ``ray.init()`` in the driver starts a GCS server, a raylet, workers and per-node agents as
the driver's descendants. A clean exit runs ``ray.shutdown()``, but a SIGKILLed driver (OOM
killer, ``kill -9``, a SLURM time limit) leaves some of them running: the raylet and workers
notice and exit, while ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` were still alive
minutes later, holding memory and ports.

How: before ``ray.init()`` the driver starts this module as a small separate process, connected
by a pipe whose write end only the driver holds. The watchdog records the driver's descendants
that are Ray processes every half second (pid and start time, so a recycled pid is never hit). When the pipe reaches
end-of-file — the kernel closes it however the driver ended — it sends SIGTERM to every recorded
process still alive, waits briefly, then SIGKILL. It reads ``/proc``, so it runs on Linux only;
elsewhere the driver goes without it.

What the watchdog misses (it died with the driver, or a process appeared between two scans) the
run's next start or ``featurepath status`` ends: see :mod:`featurepath.pipeline.ray_stale`.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SCAN_INTERVAL_S = 0.5
GRACE_S = 3.0


def proc_entry(pid: int | str) -> tuple[int, int] | None:
    """``(parent pid, start time in clock ticks)`` of a running process, from ``/proc/PID/stat``;
    None when it is gone or a zombie: a zombie has ended already (only its parent can reap it,
    and in a container that parent may be an init that never does), so waiting for it is
    pointless."""
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:  # exited meanwhile
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[19]))


def proc_table() -> dict[int, tuple[int, int]]:
    """:func:`proc_entry` of every process (Linux ``/proc``)."""
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (row := proc_entry(entry.name)) is not None:
            out[int(entry.name)] = row
    return out


def descendants(root: int, table: dict[int, tuple[int, int]] | None = None
                ) -> dict[int, int]:
    """``{pid: start time}`` of every descendant of ``root``."""
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found[pid] = table[pid][1]
        todo += children.get(pid, [])
    return found


def is_ray(pid: int) -> bool:
    """Ray's processes (gcs_server, raylet, ``ray::`` workers and agents, its Python helpers)
    name Ray in their command line; the driver's other children are none of our business."""
    try:
        return b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pids: dict[int, int]) -> dict[int, int]:
    """The recorded processes that still run (same pid *and* start time)."""
    table = proc_table()
    return {pid: st for pid, st in pids.items() if pid in table and table[pid][1] == st}


def end_processes(pids: dict[int, int]) -> None:
    """SIGTERM the recorded processes, then SIGKILL whatever still runs after the grace time."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 0.0)):
        for pid in _alive(pids):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while wait and _alive(pids) and time.monotonic() < deadline:
            time.sleep(0.1)


def watch(driver: int, pipe_fd: int) -> None:
    """Record ``driver``'s descendants until ``pipe_fd`` hits end-of-file, then end them."""
    me = os.getpid()
    seen: dict[int, int] = {}
    checked: set[tuple[int, int]] = set()
    while True:
        for pid, st in descendants(driver).items():
            if pid != me and (pid, st) not in checked:
                checked.add((pid, st))
                if is_ray(pid):
                    seen[pid] = st
        ready, _, _ = select.select([pipe_fd], [], [], SCAN_INTERVAL_S)
        if ready and not os.read(pipe_fd, 1024):
            break  # the driver is gone (exited or killed)
    end_processes(seen)


@dataclass
class Reaper:
    """A running watchdog: closing ``fd`` (or exiting) makes it end Ray's processes."""

    fd: int
    proc: subprocess.Popen

    def stop(self) -> None:
        """Close the pipe and wait for the watchdog's sweep (a few seconds at most)."""
        os.close(self.fd)
        try:
            self.proc.wait(timeout=GRACE_S + 5)
        except subprocess.TimeoutExpired:
            pass


def start_reaper() -> Reaper | None:
    """Start the watchdog for this process (keep the result for as long as Ray should live), or
    return None off Linux."""
    if not Path("/proc/self/stat").exists():
        return None
    read_end, write_end = os.pipe()
    os.set_inheritable(read_end, True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "featurepath.pipeline.ray_reaper", str(os.getpid()), str(read_end)],
        pass_fds=(read_end,), start_new_session=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(read_end)
    # Ray's own children must not inherit the write end, or the pipe would outlive the driver
    os.set_inheritable(write_end, False)
    return Reaper(write_end, proc)


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]))
