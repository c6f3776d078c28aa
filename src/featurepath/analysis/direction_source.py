"""Where a run's behavioural direction came from: its own play decisions, or another run's
(``patch.direction_from``, written by :mod:`featurepath.pipeline.transfer`).

Why a reader of its own: causal's controls line and the report must both say it, and a
transferred direction judged as if it were the run's own would mislead (it answers "does the
other game's direction move this game?", not "does this game's own direction move it?").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from featurepath.rundir import RunDir


def read_source(run_dir: str | Path) -> dict[str, Any] | None:
    """The recorded provenance of a transferred direction, or None (the run's own, or an
    unreadable record)."""
    path = RunDir(run_dir).direction_source
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def source_text(provenance: dict[str, Any] | None) -> str:
    """``"transferred from the <task> run /x (seed 0)"``, or ``""`` for the run's own
    direction."""
    if not provenance:
        return ""
    return (f"transferred from the {provenance.get('task', '?')} run "
            f"{provenance.get('run', '?')} (seed {provenance.get('seed', '?')})")


__all__ = ["read_source", "source_text"]
