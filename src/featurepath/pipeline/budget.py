"""Size checks made before a stage plans anything: refuse a plan that cannot fit.

Why: plans are built in memory (every game of ``play``, every work unit of ``patch``) and
written to disk before the first forward pass. A typo such as ``--trials 1000000000`` used to
grow the process past several GB of memory within seconds (and then die, or take the machine
with it). Each stage now estimates, from counts alone and before allocating anything, the memory
its plan needs and the disk its store can grow to, and refuses with one line when either exceeds
what this machine has free.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from featurepath.errors import ConfigError

#: Fraction of the currently available memory a plan may take (the model needs the rest).
MEMORY_SHARE = 0.5


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``, else free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse on a guess


def free_disk(path: str | Path) -> int:
    """Free bytes on the file system that will hold ``path`` (its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return 1 << 62


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_fits(what: str, memory_bytes: float, disk_bytes: float, where: str | Path,
               hint: str) -> None:
    """Raise one :class:`ConfigError` line when ``what`` needs more memory or disk than free.

    ``memory_bytes`` is held while planning/running; ``disk_bytes`` is the most the output can
    grow to under ``where``. ``hint`` says which setting to lower.
    """
    mem = available_memory()
    if memory_bytes > MEMORY_SHARE * mem:
        raise ConfigError(f"{what} would need about {_gb(memory_bytes)} of memory to plan, but "
                          f"only {_gb(mem)} is available; {hint}")
    disk = free_disk(where)
    if disk_bytes > disk:
        raise ConfigError(f"{what} can grow to {_gb(disk_bytes)} on disk, but {where} has only "
                          f"{_gb(disk)} free; {hint}")
