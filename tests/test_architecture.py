"""The layering the docs promise (docs/architecture.md), checked on the source itself.

Data flows task -> engine -> store -> analysis -> report with the CLI on top: the engine, the SAE
package and the analysis stages must not know a task or the command line, no two
modules may import each other (directly or round a loop), and no module grows past ~500 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "featurepath"


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every featurepath module or third-party top name imported anywhere in the file
    (function-level imports included: a lazy import is still a dependency)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


MODULES = {_module(p): p for p in SRC.rglob("*.py")}


def _graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for name, path in MODULES.items():
        g.add_node(name)
        for imp in _imports(path):
            if imp in MODULES and imp != name and not name.startswith(imp + "."):
                g.add_edge(name, imp)
    return g


@pytest.mark.parametrize("package", ["featurepath.engine", "featurepath.sae",
                                     "featurepath.analysis"])
def test_lower_layers_know_no_task_and_no_cli(package: str) -> None:
    bad = []
    for name, path in MODULES.items():
        if name == package or name.startswith(package + "."):
            for imp in _imports(path):
                if imp.startswith(("featurepath.tasks", "featurepath.cli", "typer")):
                    bad.append(f"{name} imports {imp}")
    assert not bad, bad


def test_library_packages_do_not_import_typer() -> None:
    bad = [f"{n} imports {i}" for n, p in MODULES.items() if not n.startswith("featurepath.cli")
           for i in _imports(p) if i == "typer" or i.startswith("typer.")]
    assert not bad, bad


def test_no_import_cycle() -> None:
    cycles = list(nx.simple_cycles(_graph()))
    assert not cycles, cycles[:5]


def test_no_module_over_500_lines() -> None:
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in long.items() if k > 520} == {}


def test_importing_an_analysis_stage_loads_neither_task_nor_cli() -> None:
    code = ("import sys, featurepath.analysis.causal, featurepath.analysis.pathways, "
            "featurepath.engine.generate, featurepath.sae.registry; "
            "print(sorted(m for m in sys.modules if m.startswith(('featurepath.tasks', "
            "'featurepath.cli', 'typer'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_no_module_outside_tasks_imports_a_task_package() -> None:
    """Stages reach a task through ``featurepath.tasks.get_task`` and ``tasks.base`` only, so a
    new task is one folder and nothing outside ``tasks/`` knows it."""
    packages = sorted(p.name for p in (SRC / "tasks").iterdir()
                      if p.is_dir() and (p / "__init__.py").exists())
    bad = []
    for name, path in MODULES.items():
        if name == "featurepath.tasks" or name.startswith("featurepath.tasks."):
            continue
        for imp in _imports(path):
            for pkg in packages:
                full = f"featurepath.tasks.{pkg}"
                if imp == full or imp.startswith(full + "."):
                    bad.append(f"{name} imports {imp}")
    assert not bad, bad


#: Modules outside ``tasks/`` that may spell a task's word, with the word and why. Keep short.
VOCABULARY_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("featurepath.importers.exp2_jsonl", "*"):
        "imports the original study's slot-machine logs (its columns and its wording), so it "
        "asks for that task by name",
    ("featurepath.importers", "slot-machine"): "the importer package says what it imports",
    ("featurepath.config", "slot_machine"): "the default of the config key `task:`",
    ("featurepath.config", "p_stop"): "the config key analysis.min_effect_p_stop (users' "
                                      "configs spell it)",
    ("featurepath.analysis.run_data", "p_stop"):
        "reads trials tables written before the columns were renamed (LEGACY_COLUMNS)",
}
"""``(module, word)`` -> why; word ``"*"``: every task word."""


def _vocabulary() -> dict[str, str]:
    """``{word: task}`` over every registered task's ``vocabulary``."""
    from featurepath.tasks import get_task, task_names

    return {w.lower(): n for n in task_names() for w in get_task(n).vocabulary}


def test_no_module_outside_tasks_names_a_tasks_words() -> None:
    """Docstrings and comments count: a module that explains itself in one game's words is
    written for that game. A stage that needs such a word asks the task (docs/tasks.md)."""
    words = _vocabulary()
    assert {"bankrupt", "p_stop", "slot_machine"} <= set(words)
    bad = []
    for name, path in MODULES.items():
        if name == "featurepath.tasks" or name.startswith("featurepath.tasks."):
            continue
        text = path.read_text().lower()
        for w in words:
            if w in text and not {(name, w), (name, "*")} & set(VOCABULARY_EXCEPTIONS):
                line = next(i for i, x in enumerate(text.splitlines(), 1) if w in x)
                bad.append(f"{name}:{line} names {w!r} ({words[w]})")
    assert not bad, bad


def test_registry_lists_the_built_in_tasks() -> None:
    from featurepath.tasks import task_names

    assert task_names() == ["investment_choice", "mystery_wheel", "slot_machine"]
