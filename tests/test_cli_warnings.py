"""Warnings from the command line are one ``warning: <message>`` line; library users keep
Python's own format.

The CLI runs in a real subprocess (``python -m featurepath`` and, when installed, the
``featurepath`` executable), so what is checked is what a user sees on stderr.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurepath.cli import show_warning

REPEATED = "comparison(s) have more trials than distinct prompts"


def _repeated_prompt_run(root: Path) -> Path:
    """A run directory whose trials show each of 3 prompts twice: causal warns about repeats."""
    rng = np.random.default_rng(0)
    rows = []
    for feature, patch in (("", "none"), ("L2-7", "safe")):
        for t in range(6):
            rows.append({
                "row": len(rows), "feature": feature, "layer": 2 if feature else -1,
                "feature_id": 7 if feature else -1, "condition": "c" if feature else "b",
                "context": "safe", "patch": patch, "trial": t, "prompt_id": f"p{t % 3}",
                "action": "bet" if t % 2 else "stop", "bet": 10.0, "valid": True,
                "method": "delta", "p_stop": float(rng.uniform(0.2, 0.8)),
            })
    run = root / "run"
    run.mkdir()
    pd.DataFrame(rows).to_parquet(run / "trials.parquet")
    return run


def _commands() -> list[list[str]]:
    cmds = [[sys.executable, "-m", "featurepath"]]
    exe = Path(sys.executable).parent / "featurepath"
    if exe.is_file() and os.access(exe, os.X_OK):
        cmds.append([str(exe)])
    return cmds


@pytest.mark.parametrize("cmd", _commands(), ids=lambda c: Path(c[-1]).name)
def test_cli_prints_a_warning_as_one_line(cmd, tmp_path) -> None:
    run = _repeated_prompt_run(tmp_path)
    env = {**os.environ, "PYTHONWARNINGS": ""}
    r = subprocess.run([*cmd, "causal", str(run), "--n-boot", "0"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if REPEATED in ln]
    assert lines == [
        "warning: 1 of 1 comparison(s) have more trials than distinct prompts: a prompt's "
        "repeats carry no new information at the decision token, so paired tests use one value "
        "per distinct prompt (raise patch.n_prompts for more power)"
    ], r.stderr
    assert "UserWarning" not in r.stderr and ".py:" not in r.stderr, r.stderr
    assert "warnings.warn(" not in r.stderr, r.stderr  # Python's echo of the source line


def test_library_users_keep_pythons_format(tmp_path) -> None:
    """Importing featurepath (the CLI package included) does not change how warnings print."""
    code = ("import warnings, featurepath.cli\n"
            "from featurepath.analysis.run_data import warn_repeated_prompts\n"
            "warn_repeated_prompts(2, 3)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONWARNINGS": ""})
    assert r.returncode == 0, r.stderr
    assert "UserWarning: 2 of 3 comparison(s)" in r.stderr
    assert not r.stderr.startswith("warning:")


def test_show_warning_joins_lines_and_respects_file() -> None:
    buf = io.StringIO()
    show_warning(UserWarning("first\n  second\n"), UserWarning, "/x/y.py", 12, file=buf)
    assert buf.getvalue() == "warning: first second\n"
    err = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(err):  # restores showwarning
        warnings.simplefilter("always")
        warnings.showwarning = show_warning
        warnings.warn("to stderr", UserWarning, stacklevel=1)
    assert err.getvalue() == "warning: to stderr\n"
