"""``featurepath confirm`` through a real subprocess: a small confirmation end to end, and bad
input as one ``error:`` line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> Path:
    from featurepath.testing import write_tiny_inputs

    root = tmp_path_factory.mktemp("tiny")
    write_tiny_inputs(root)
    cfg = {"patch": {"prompt_set": "states", "n_prompts": 3, "components": "BASE",
                     "conditions": [{"name": "risky_baseline", "context": "risky"},
                                    {"name": "risky_up", "context": "risky", "patch": "value",
                                     "value": 2.0}]},
           "confirm": {"h": 2, "cap": 8, "round_size": 4}}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _run(tiny_dirs: Path, run: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["confirm", str(run), "--config", str(tiny_dirs / "cfg.yaml"), "--model",
            str(tiny_dirs / "model"), "--saes", str(tiny_dirs / "saes"), "--no-progress", *extra]
    return subprocess.run([sys.executable, "-m", "featurepath", *args], capture_output=True,
                          text=True, timeout=300)


def _one_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]  # (transformers' loading bar aside)
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert "Traceback" not in r.stderr
    return errors[0]


def test_confirm_runs_with_features_and_no_earlier_stage(tiny_dirs, tmp_path) -> None:
    run = tmp_path / "run"
    r = _run(tiny_dirs, run, "--features", "L1-3,L2-5")
    assert r.returncode == 0, r.stderr
    assert "pre-registered 2 tests (explicit)" in r.stdout and "null draws/s" in r.stdout
    v = pd.read_parquet(run / "confirm" / "verdicts.parquet")
    assert list(v["feature"]) == ["L1-3", "L2-5"] and (v["null_draws"] <= 8).all()
    assert yaml.safe_load((run / "config.yaml").read_text())["confirm"]["cap"] == 8
    # the report opens with the summary, then the Confirmation section and its figure
    from featurepath.report import build_report

    page = build_report(run).read_text()
    assert page.index('<section id="summary">') < page.index('<section id="confirmation">') \
        < page.index('<section id="provenance">')
    conf = page.split('<section id="confirmation">')[1].split("</section>")[0]
    assert "L1-3" in conf and "L2-5" in conf and 'id="confirm-figure"' in conf
    assert (run / "figures" / "confirm.svg").exists()


def test_unknown_feature_is_one_error_line(tiny_dirs, tmp_path) -> None:
    line = _one_error(_run(tiny_dirs, tmp_path / "run", "--features", "L9-5"))
    assert "L9-5" in line and "no SAE for layer 9" in line
    assert not (tmp_path / "run" / "confirm").exists()  # nothing pre-registered
    assert "L<layer>-<id>" in _one_error(_run(tiny_dirs, tmp_path / "run", "--features", "x"))


def test_top_without_a_ranking_is_one_error_line(tiny_dirs, tmp_path) -> None:
    line = _one_error(_run(tiny_dirs, tmp_path / "run", "--top", "3"))
    assert "--top needs a ranking" in line and "--features" in line
