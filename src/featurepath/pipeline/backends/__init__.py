"""Where patch work units run: ``local`` (this process) or ``ray`` (actors on one machine or a
cluster). Both take ``(job, units, *, progress, on_unit, ...)``, commit each unit to the run store
exactly once, rebuild ``trials.parquet`` at the end and return a :class:`BackendSummary`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BackendSummary:
    """What one backend call did: units and trials committed, wall time, and (Ray) the units
    given up on, retries, actor restarts and the workers' descriptions."""

    units: int
    trials: int
    seconds: float
    failed: list[int] = field(default_factory=list)
    requeued: int = 0
    restarts: int = 0
    workers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def trials_per_s(self) -> float:
        return self.trials / max(self.seconds, 1e-9)


__all__ = ["BackendSummary"]
