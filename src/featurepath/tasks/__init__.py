"""Behavioural tasks a model is studied on, and their registry.

A task is one folder here whose ``task.py`` calls :func:`register_task` when imported; a folder
``featurepath/tasks/<name>/`` under any ``sys.path`` entry that is not itself a featurepath
installation (no ``featurepath/__init__.py`` there) counts too, so a task can live outside the
source tree. Why discovery by folder: adding a task then takes one new folder and no edit
anywhere else, and nothing is imported until a task is asked for (listing the names imports
only the ``task`` modules, which keep their heavy imports inside methods).

Built in: ``slot_machine`` (Lee et al. 2025), ``investment_choice`` and ``mystery_wheel`` (the
study's 2026 alternative paradigms, the same -10% expected value).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from featurepath.errors import ConfigError

if TYPE_CHECKING:
    from featurepath.tasks.base import Task

DEFAULT_TASK = "slot_machine"
_REGISTRY: dict[str, Task] = {}
_discovered = False


def register_task(task: Task) -> Task:
    """Add ``task`` under ``task.name`` (registering the same name again replaces it, so a
    re-imported module does not fail); returns it, so ``TASK = register_task(MyTask())``."""
    from featurepath.tasks.base import Task

    if not isinstance(task, Task):
        raise TypeError(f"register_task needs a featurepath.tasks.base.Task, got {task!r}")
    _REGISTRY[task.name] = task
    return task


def _discover() -> None:
    """Import ``<folder>.task`` of every task folder once; folders starting with ``_`` are
    shared helpers, not tasks."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for entry in sys.path:
        root = Path(entry or ".") / "featurepath"
        extra = root / "tasks"
        if extra.is_dir() and not (root / "__init__.py").exists() and str(extra) not in __path__:
            __path__.append(str(extra))
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.ispkg or info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{info.name}.task")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{info.name}.task":
                raise


def task_names() -> list[str]:
    """Names of every registered task, sorted."""
    _discover()
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    """The task called ``name``; one-line :class:`ConfigError` naming the known tasks."""
    _discover()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


__all__ = ["DEFAULT_TASK", "get_task", "register_task", "task_names"]
