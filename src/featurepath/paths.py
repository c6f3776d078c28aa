"""Where featurepath keeps what it builds once and reuses (converted models, trained SAEs)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache root: ``$FEATUREPATH_HOME`` or ``~/.cache/featurepath``."""
    root = os.environ.get("FEATUREPATH_HOME")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "featurepath"
    path.mkdir(parents=True, exist_ok=True)
    return path
