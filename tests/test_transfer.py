"""Cross-task transfer (``patch.direction_from``, issue 23 item 4) on the tiny model: a slot
machine run's continue-minus-stop direction patched into a mystery-wheel run, with its null arms;
the run records and says where the direction came from, nothing is written into the source run,
and bad sources get one line."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from featurepath.config import RunConfig
from featurepath.errors import ConfigError, DataError

SAMPLING = {"answer": "constrained", "max_new_tokens": 8}


def _source_cfg() -> RunConfig:
    return RunConfig.model_validate({
        "task": "slot_machine", "seed": 3,
        "play": {"conditions": ["BASE", "G"], "bet_types": ["fixed"], "games_per_condition": 24,
                 "max_rounds": 8, "batch_size": 48, "sampling": SAMPLING,
                 "rules": {"initial_balance": 20.0, "fixed_bet": 10}}})


def _target_cfg(source: Path, **patch) -> RunConfig:
    return RunConfig.model_validate({
        "task": "mystery_wheel", "seed": 5,
        "patch": {"trials": 4, "batch_size": 64, "null_directions": 3, "prompt_set": "states",
                  "n_prompts": 4, "features": ["L1-3"], "record": ["L1-3", "L2-5"],
                  "direction_from": str(source), "sampling": SAMPLING,
                  "conditions": [{"name": "risky_baseline", "context": "risky"},
                                 {"name": "risky_amplified", "context": "risky",
                                  "patch": "scale", "scale": 3.0}], **patch},
        "analysis": {"n_boot": 0}})


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def source_run(tiny, tiny_saes, tmp_path_factory) -> Path:
    from featurepath.pipeline.play import run_play
    from featurepath.pipeline.runtime import Runtime

    root = tmp_path_factory.mktemp("slot")
    model, tok = tiny
    run_play(root, _source_cfg(), runtime=Runtime(model, tok, tiny_saes), progress=False)
    return root


def test_the_slot_machine_direction_moves_the_wheel_run_against_its_band(
        tiny, tiny_saes, source_run, tmp_path) -> None:
    from featurepath.analysis.causal import run_causal
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.controls import behavioural_directions, load_directions
    from featurepath.pipeline.patch import prepare
    from featurepath.report.controls import controls_section
    from featurepath.report.data import RunData
    from featurepath.rundir import RunDir
    from featurepath.tasks import get_task

    model, tok = tiny
    before = _files(source_run)
    cfg = _target_cfg(source_run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        job = prepare(tmp_path, cfg, model, tok, tiny_saes)
        run_local(job, runtime=(model, tok, tiny_saes), progress=False)
        res = run_causal(tmp_path, cfg)
    assert _files(source_run) == before  # nothing written into the source run
    # the vector patched is the slot machine's continue-minus-stop direction, built from its
    # play decisions with its own task (the wheel run played nothing)
    got = load_directions(RunDir(tmp_path).directions)
    want = behavioural_directions(model, tok, source_run, [1], task=get_task("slot_machine"),
                                  work_dir=tmp_path)
    assert torch.equal(got[1], want[1])
    assert not RunDir(tmp_path).decisions.exists()
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    direction = trials[trials["arm"] == "direction"]
    nulls = trials[(trials["arm"] == "null") & (trials["feature_id"] == -1)]
    assert len(direction) > 0 and nulls["null_index"].nunique() == 3  # its own band
    src = RunDir(tmp_path).direction_source.read_text()
    assert '"task": "slot_machine"' in src and str(source_run.resolve()) in src
    line = res.controls_line()
    assert "behavioural direction (transferred from the slot_machine run" in line
    html = controls_section(RunData.load(tmp_path))
    assert 'class="direction-source"' in html and "slot_machine" in html


def test_a_stored_direction_is_taken_as_that_run_patched_it(tiny, tiny_saes, source_run,
                                                            tmp_path) -> None:
    """Where the source run patched its own direction, that stored vector is what transfers
    (not a recomputation)."""
    from featurepath.pipeline.controls import save_directions
    from featurepath.pipeline.transfer import transferred_directions
    from featurepath.rundir import RunDir

    src = tmp_path / "src"
    src.mkdir()
    (src / "config.yaml").write_text((source_run / "config.yaml").read_text())
    RunDir(src).patch.mkdir()
    v = torch.zeros(tiny[0].config.hidden_size)
    v[7] = 1.0
    save_directions(RunDir(src).directions, {2: v})
    out, prov = transferred_directions(src, _target_cfg(src), *tiny, [2], tmp_path)
    assert torch.equal(out[2], v) and prov["layers"]["2"].startswith("stored")
    with pytest.raises(DataError, match="no play decisions"):
        transferred_directions(src, _target_cfg(src), *tiny, [1], tmp_path)


def test_bad_sources_are_refused(tiny, tiny_saes, source_run, tmp_path) -> None:
    from featurepath.pipeline.patch import prepare

    model, tok = tiny
    with pytest.raises(ConfigError, match="is not a directory"):
        prepare(tmp_path / "a", _target_cfg(tmp_path / "nope"), model, tok, tiny_saes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a featurepath run"):
        prepare(tmp_path / "b", _target_cfg(tmp_path / "empty"), model, tok, tiny_saes)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(yaml.safe_dump({"model": "gpt2", "task": "slot_machine"}))
    with pytest.raises(ConfigError, match="only transfers within one model"):
        prepare(tmp_path / "c", _target_cfg(other), model, tok, tiny_saes)
    with pytest.raises(DataError, match="no confirmation"):
        prepare(tmp_path / "d", _target_cfg(source_run, transfer_features=True), model, tok,
                tiny_saes)
    with pytest.raises(ValueError, match="transfer_features needs direction_from"):
        RunConfig.model_validate({"patch": {"transfer_features": True}})


def test_transfer_features_adds_the_confirmed_ones(source_run, tmp_path) -> None:
    from featurepath.pipeline.candidates import choose_candidates
    from featurepath.rundir import RunDir

    src = tmp_path / "src"
    src.mkdir()
    (src / "config.yaml").write_text((source_run / "config.yaml").read_text())
    RunDir(src).verdicts.parent.mkdir()
    # a confirmed behavioural direction is not an SAE feature: it transfers through
    # direction_from, not as a patched feature
    pd.DataFrame({"feature": ["L2-5", "L1-9", "L0-1", "L1~direction"],
                  "significant": [True, False, True, True]}).to_parquet(RunDir(src).verdicts)
    got = choose_candidates(tmp_path / "t", _target_cfg(src, transfer_features=True))
    assert got.features == ["L1-3", "L0-1", "L2-5"]
    assert got.sources == {"L1-3": "user", "L0-1": "transfer", "L2-5": "transfer"}


def test_cli_names_a_missing_source_in_one_line(tmp_path) -> None:
    from featurepath.testing import write_tiny_inputs

    write_tiny_inputs(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(
        {"task": "mystery_wheel", "patch": {"direction_from": str(tmp_path / "missing"),
                                            "prompt_set": "states", "n_prompts": 2,
                                            "components": "GW"}}))
    r = subprocess.run([sys.executable, "-m", "featurepath", "patch", str(tmp_path / "run"),
                        "--config", str(tmp_path / "c.yaml"), "--model",
                        str(tmp_path / "model"), "--saes", str(tmp_path / "saes"),
                        "--features", "L1-3", "--trials", "2", "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    err = [x for x in r.stderr.strip().splitlines() if x.startswith("error")]
    assert len(err) == 1 and "direction_from" in err[0] and "missing" in err[0], r.stderr
    assert "Traceback" not in r.stderr


def test_demo_refuses_a_missing_source_before_any_work(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "featurepath", "demo", "--task", "mystery_wheel",
                        "--direction-from", str(tmp_path / "nowhere"), "--out",
                        str(tmp_path / "wheel")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: patch.direction_from: {tmp_path / 'nowhere'} is not a directory"]
    assert not (tmp_path / "wheel").exists()


def test_plans_stored_before_the_transfer_keys_still_resume() -> None:
    """The new patch keys stay out of the plan's digest at their defaults: the default
    config's digest is the one featurepath computed before they existed (frozen from commit
    81a735e), so a run planned then resumes."""
    from featurepath.pipeline.patch import _digest

    assert _digest(RunConfig()) == "1c1060bd1eae632e"
    # patch.components now defaults to the task's own (None); the digest spells it as before
    spelled = RunConfig.model_validate({"patch": {"components": "GHWP"}})
    assert _digest(spelled) == "1c1060bd1eae632e"
    moved = RunConfig.model_validate({"patch": {"direction_from": "runs/slot"}})
    assert _digest(moved) != "1c1060bd1eae632e"
