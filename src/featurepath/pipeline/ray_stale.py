"""The backstop of :mod:`featurepath.pipeline.ray_reaper`: a private Ray left behind by a dead
driver of a run is ended by that run's next ``patch --backend ray`` or ``status``.

Why a second line of defence: the watchdog can die with its driver (the OOM killer or a
``kill -9`` of every process of the job), and it sees a Ray process only if it was the
driver's descendant at one of its scans, half a second apart. What slips through — typically
Ray's dashboard and runtime-env agents, which outlive the raylet — keeps memory and ports until
someone finds it by hand.

How: a driver that starts a private Ray for a run first writes a :class:`DriverRecord` to
``RUN/patch/ray_drivers/``: its host, pid and start time (a recycled pid is not the driver),
its user, a random token that it puts in the environment while ``ray.init()`` runs, and then
Ray's session directory (unique to the driver: its name holds the pid and the time). Every
process of that Ray — GCS and raylet, which the driver starts, and the workers and agents,
which the raylet starts — inherits the token, and nothing else has it; the agents, whose
process titles blank what ``/proc`` shows of their environment, are known by their log files
open in the session directory instead. A clean shutdown removes the record.
:func:`sweep_stale` reads the records of this host, user and PID namespace whose driver is
gone, ends those processes (SIGTERM, SIGKILL after 3 s), says what it ended, and drops the
records. A Ray cluster joined with ``--address`` gets no record and no token, so it is never
touched. Linux only (``/proc``), like the watchdog.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from featurepath.pipeline.ray_reaper import end_processes, is_ray, proc_entry, proc_table
from featurepath.rundir import atomic_write

TOKEN_ENV = "FEATUREPATH_RAY_DRIVER"


@dataclass
class DriverRecord:
    """A driver that started a private Ray for a run, as written to ``RUN/patch/ray_drivers``."""

    pid: int
    start: int | None      # start time in clock ticks (/proc): tells a recycled pid apart
    host: str
    uid: int
    token: str             # in the environment of every process of its Ray
    started: float
    session_dir: str = ""  # Ray's session directory, once ray.init() has made it
    pidns: str = ""        # PID namespace: the same host name may hold several (containers)

    @property
    def filename(self) -> str:
        return f"{self.host}-{self.pid}-{self.token[:12]}.json"

    def alive(self) -> bool:
        """Whether the driver still runs: the same pid with the same start time."""
        now = proc_entry(self.pid)
        return now is not None and (self.start is None or now[1] == self.start)


def new_record() -> DriverRecord:
    """A record of this process, with a fresh token."""
    me = proc_entry(os.getpid()) if _has_proc() else None
    return DriverRecord(pid=os.getpid(), start=me[1] if me else None,
                        host=socket.gethostname(), uid=_uid(), token=uuid.uuid4().hex,
                        started=time.time(), pidns=_pidns())


def _pidns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1


def save_record(folder: Path, rec: DriverRecord) -> None:
    """Write ``rec``, whole or not at all (temp file and rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / rec.filename, json.dumps(asdict(rec)))


def forget_record(folder: Path, rec: DriverRecord) -> None:
    with contextlib.suppress(OSError):
        (folder / rec.filename).unlink()


@contextlib.contextmanager
def token_in_env(rec: DriverRecord) -> Iterator[None]:
    """Put the record's token in this process's environment for as long as the block runs (the
    processes ``ray.init()`` starts copy it; the raylet passes it on to what it starts)."""
    old = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = rec.token
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = old


def _has_proc() -> bool:
    return Path("/proc/self/stat").exists()


def _records(folder: Path) -> list[tuple[Path, DriverRecord]]:
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append((path, DriverRecord(**json.loads(path.read_text()))))
        except (OSError, ValueError, TypeError):
            continue  # unreadable or foreign: not ours to judge
    return out


def carrying(token: str, session_dir: str = "") -> dict[int, int]:
    """``{pid: start time}`` of the Ray processes of one driver: those whose environment holds
    ``token``, and those titled ``ray::...`` with a file open in ``session_dir``. The second
    test is needed because setting a process title (Ray's agents do) blanks
    ``/proc/PID/environ``; the title keeps, say, a ``tail -f`` of the session's logs safe."""
    needle = f"{TOKEN_ENV}={token}".encode()
    me = os.getpid()
    found = {}
    for pid, (_, start) in proc_table().items():
        if pid == me or not is_ray(pid):
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if needle in env.split(b"\0") or (session_dir and _name(pid).startswith("ray::")
                                           and _has_open_file_in(pid, session_dir)):
            found[pid] = start
    return found


def _has_open_file_in(pid: int, folder: str) -> bool:
    prefix = folder.rstrip("/") + "/"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                return True
        except OSError:
            continue
    return False


def _name(pid: int) -> str:
    """A short name for the message: ``raylet``, ``gcs_server``, ``ray::DashboardAgent``,
    ``log_monitor.py`` (Ray's workers and agents set ``ray::`` titles; its helpers are scripts)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return str(pid)
    words = args.replace("\0", " ").split()
    if not words:
        return str(pid)
    titles = [w for w in words if w.startswith("ray::")]
    scripts = [w for w in words if w.endswith(".py")]
    if titles:
        return titles[0]
    if os.path.basename(words[0]).startswith("python") and scripts:
        return os.path.basename(scripts[0])
    return os.path.basename(words[0])


def sweep_stale(folder: Path) -> list[str]:
    """End the private Ray of every dead driver recorded in ``folder`` (this host, user and
    PID namespace only) and drop their records; one message per driver whose Ray had
    processes left."""
    if not _has_proc():
        return []
    messages = []
    here = (socket.gethostname(), _uid(), _pidns())
    for path, rec in _records(folder):
        if (rec.host, rec.uid, rec.pidns) != here or rec.alive():
            continue  # not ours to judge, or still running
        left = carrying(rec.token, rec.session_dir)
        if left:
            names = sorted({_name(pid) for pid in left})
            end_processes(left)
            session = f", session {Path(rec.session_dir).name}" if rec.session_dir else ""
            messages.append(
                f"stopped {len(left)} Ray process{'es' if len(left) > 1 else ''} "
                f"({', '.join(names)}) left running by a dead `patch --backend ray` driver "
                f"of this run (pid {rec.pid}{session})")
        with contextlib.suppress(OSError):
            path.unlink()
    return messages


__all__ = ["DriverRecord", "TOKEN_ENV", "new_record", "save_record", "forget_record",
           "token_in_env", "carrying", "sweep_stale"]
