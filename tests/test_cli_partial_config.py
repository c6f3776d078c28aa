"""``--config`` replaces the run's config rather than merging into it; a file that leaves out
settings in which the run differs gets one warning naming them (through the installed CLI)."""

from __future__ import annotations

import subprocess
import sys


def _causal(tmp_path, config: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featurepath", "causal", str(tmp_path / "run"),
                           "-c", str(tmp_path / config)], capture_output=True, text=True,
                          timeout=120)


def test_a_partial_config_is_warned_about_and_a_full_one_is_not(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("analysis:\n  alpha: 0.01\npatch:\n"
                                                  "  trials: 7\n")
    (tmp_path / "part.yaml").write_text("patch:\n  trials: 3\n")
    (tmp_path / "full.yaml").write_text("analysis:\n  alpha: 0.01\npatch:\n  trials: 3\n")
    r = _causal(tmp_path, "part.yaml")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 2, r.stderr  # the warning, then the stage's error
    assert lines[0].startswith("warning: --config") and "analysis.alpha: 0.01 -> 0.05" in \
        lines[0] and "patch.trials" not in lines[0]
    assert lines[1].startswith("error: no trials.parquet")
    r = _causal(tmp_path, "full.yaml")
    assert [x for x in r.stderr.splitlines() if x.startswith("warning")] == []
