"""The patch command end to end on the tiny model: a SIGKILLed run, resumed, ends identical to an
uninterrupted one; bad input gets one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from featurepath.cli import main
from featurepath.pipeline.store import RunStore


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from featurepath.testing import write_tiny_inputs

    root = tmp_path_factory.mktemp("tiny")
    write_tiny_inputs(root)
    cfg = {"patch": {"record": ["L0-1", "L1-3", "L2-5", "L3-7"],
                     "sampling": {"max_new_tokens": 6, "temperature": 1.0}}}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _args(tiny_dirs: Path, run: Path) -> list[str]:
    return ["patch", str(run), "--config", str(tiny_dirs / "cfg.yaml"), "--model",
            str(tiny_dirs / "model"), "--saes", str(tiny_dirs / "saes"), "--features",
            "L1-3,L2-5,L0-9", "--trials", "4", "--batch-size", "4", "--no-progress"]


def _cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "featurepath", *args]


def test_killed_run_resumes_to_identical_store(tiny_dirs, tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    ref = tmp_path / "ref"
    subprocess.run(_cmd(_args(tiny_dirs, ref)), check=True, env=env, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(_args(tiny_dirs, run)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    commits = run / "patch" / "commits"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if commits.exists() and len(list(commits.glob("u*.json"))) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_plan = len(RunStore(run).plan().units)
    done_before = len(list(commits.glob("u*.json")))
    assert 0 < done_before < n_plan, "the kill should land mid-run"
    r = subprocess.run(_cmd([*_args(tiny_dirs, run), "--resume"]), env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    a, b = RunStore(ref), RunStore(run)
    pd.testing.assert_frame_equal(a.trials(), b.trials())
    for name in ("decision", "gen_mean", "gen_max"):
        assert np.array_equal(a.activations(name)[0], b.activations(name)[0], equal_nan=True)


def test_bad_inputs_give_one_line(tiny_dirs, tmp_path, capsys):
    args = _args(tiny_dirs, tmp_path / "r")
    bad_feature = [*args]
    bad_feature[bad_feature.index("L1-3,L2-5,L0-9")] = "L1-3,banana"
    assert main(bad_feature) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "banana" in err[0]
    no_layer = [*args]
    no_layer[no_layer.index("L1-3,L2-5,L0-9")] = "L9-1"
    assert main(no_layer) == 2
    assert "no SAE for layer 9" in capsys.readouterr().err
    assert not (tmp_path / "r" / "config.yaml").exists()  # a failed command writes no config
    bad_model = [*args]
    bad_model[bad_model.index(str(tiny_dirs / "model"))] = str(tmp_path / "nope")
    assert main(bad_model) == 2
    assert "does not exist" in capsys.readouterr().err
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("patch:\n  trials: -3\n  colour: red\n")
    cfg_args = [*args]
    cfg_args[cfg_args.index(str(tiny_dirs / "cfg.yaml"))] = str(bad_cfg)
    assert main(cfg_args) == 2
    err = capsys.readouterr().err
    assert "patch.trials" in err and "colour" in err
