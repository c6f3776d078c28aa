"""``featurepath estimate``: the plan's counts equal the patch stage's plan, the time model is
the arithmetic the docs state, and the command runs end to end on the tiny model."""

from __future__ import annotations

import dataclasses
import math

import pytest
import yaml

from featurepath.cli import main
from featurepath.config import RunConfig
from featurepath.errors import ConfigError
from featurepath.pipeline.estimate import (
    Calibration,
    estimate,
    load_calibration,
    plan_counts,
    spread_features,
)
from featurepath.pipeline.status import run_status


def _cal(**kw) -> Calibration:
    base = dict(batch_size=64, units_timed=3, seconds_per_unit=10.0, seconds_per_trial=10 / 64,
                new_tokens_per_trial=80.0, bytes_per_trial=20_000.0, warmup_s=5.0, load_s=30.0,
                device="cuda:0", threads=16, n_record=2787)
    base.update(kw)
    return Calibration(**base)


def test_seed_exp1_counts():
    """The seed plan: 2,787 features x 6 conditions x 30 trials, counting a baseline per feature
    (the seed writes 502,260; the product is 501,660). featurepath runs each context's baseline once, so the run is
    30 x (2 + 2,787 x 4) = 334,500 trials, in ceil(334,500 / 64) = 5,227 units of 64."""
    cfg = RunConfig()
    cfg.patch.trials = 30
    cfg.patch.batch_size = 64
    feats = [f"L{i % 32}-{i}" for i in range(2787)]
    assert 2787 * 6 * 30 == 501_660
    assert plan_counts(cfg, feats) == (334_500, 5_227)


def test_counts_include_dose_ladder_null_arms_and_direction():
    """Hand count for 3 features on layers 3, 3 and 8, 10 trials, default conditions (2
    baselines + 4 patched) plus doses 0.5 and 2 (2 contexts x 2 = 4 scale conditions), 5 null
    directions in the 2 dose-2 conditions, and the behavioural direction on layers {3, 8}
    under every scale condition, with its own 5 null arms in the 2 null conditions:
    10 x (2 + 3 x 8 + 3 x 2 x 5 + 2 x 4 + 2 x 2 x 5) = 840 rows, 27 units of 32; without the
    direction's null arms 640 rows, 20 units. (The demo's plan of the previous release, which
    its patch stage printed as 2,256 trials, is the same arithmetic without them:
    24 x (2 + 4 x 6 + 4 x 1 x 16 + 2 x 2) = 2,256.)"""
    cfg = RunConfig()
    cfg.patch.trials = 10
    cfg.patch.batch_size = 32
    cfg.patch.doses = [0.5, 2.0]
    cfg.patch.null_directions = 5
    cfg.patch.null_conditions = ["safe_dose2", "risky_dose2"]
    cfg.patch.behavioural_direction = True
    assert plan_counts(cfg, ["L3-1", "L3-2", "L8-7"]) == (840, 27)
    cfg.patch.direction_nulls = False
    assert plan_counts(cfg, ["L3-1", "L3-2", "L8-7"]) == (640, 20)


def test_time_model_is_hand_arithmetic(tmp_path):
    cfg = RunConfig()
    cfg.patch.trials = 30
    cfg.patch.batch_size = 64
    feats = [f"L{i % 32}-{i}" for i in range(2787)]
    e = estimate(cfg, feats, _cal(), workers=4, disk_path=tmp_path)
    # 334,500 trials = 5,226 full units + 36 rows; 10 s a unit
    assert e.seconds_one == pytest.approx((5226 + 36 / 64) * 10.0 + 5.0 + 30.0)
    assert e.seconds_devices == pytest.approx(math.ceil(5227 / 4) * 10.0 + 5.0 + 30.0)
    assert e.seconds_ray > e.seconds_devices
    assert e.new_tokens == pytest.approx(334_500 * 80.0)
    assert e.bytes_total == pytest.approx(334_500 * 20_000.0)
    assert e.disk_free > 0
    # on a CPU, workers share the cores: no more speed-up than cores / threads
    cpu = estimate(cfg, feats, _cal(device="cpu", threads=10**6), workers=4, disk_path=tmp_path)
    assert cpu.seconds_devices == pytest.approx(5227 * 10.0 + 35.0)
    with pytest.raises(ConfigError, match="batch size"):
        estimate(cfg, feats, _cal(batch_size=32), disk_path=tmp_path)


def test_stand_in_features_are_distinct_and_valid(tiny_saes):
    keys = spread_features(tiny_saes, 300)
    assert len(set(keys)) == 300
    with pytest.raises(ConfigError):
        spread_features(tiny_saes, 10**6)


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    from featurepath.testing import write_tiny_inputs

    root = tmp_path_factory.mktemp("tiny_est")
    write_tiny_inputs(root)
    cfg = {"model": str(root / "model"), "saes": str(root / "saes"),
           "patch": {"trials": 4, "batch_size": 4, "sampling": {"max_new_tokens": 3}}}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root / "cfg.yaml"


def test_estimate_command_prints_the_plan_and_status_uses_it(tiny_cfg, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["estimate", str(run), "-c", str(tiny_cfg), "--n-features", "3",
                 "--n-record", "10", "--units", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    # 4 trials x (2 baselines + 3 features x 4 patched conditions) = 56 trials, 14 units of 4
    assert "3 features x 6 conditions -> 56 trials in 14 units of <= 4" in out
    assert "recording 10 features" in out and "Ray workers" in out and "free" in out
    # the screen beside it: every feature of the 4 tiny SAEs, one builtin prompt per context,
    # 4 patched conditions, one pass of both prompts (screen.batch_size 16)
    assert "screen   512 features x 4 interventions over 2 prompts -> 1 forward+backward" in out
    cal = load_calibration(run)
    assert cal is not None and cal.batch_size == 4 and cal.n_record == 10
    assert not list(run.glob(".estimate-*"))  # the scratch run is gone
    # status, before any unit is committed, gives the calibrated ETA
    cfg = yaml.safe_load(tiny_cfg.read_text())
    cfg["patch"].update(features=["L1-3", "L2-5"], record=["L0-1", "L1-3"])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["patch", str(run), "-c", str(tmp_path / "c.yaml"), "--no-progress",
                 "--shard", "0/1000"]) == 0  # plans, runs only unit 0
    st = run_status(run)
    left = st["trials_total"] - st["trials_done"]
    assert st["eta_source"] == "calibration"
    assert st["eta_seconds"] == pytest.approx(left * cal.seconds_per_trial)


def test_estimate_calibrates_a_run_with_controls(tiny_cfg, tmp_path, capsys):
    """A plan with null arms and the behavioural direction: the count includes them, and the
    calibration (in a scratch directory) finds the run's played decisions it needs."""
    from featurepath.testing import write_play_decisions

    run = tmp_path / "run"
    write_play_decisions(run)
    cfg = yaml.safe_load(tiny_cfg.read_text())
    cfg["patch"].update(features=["L1-3", "L2-5"], null_directions=2,
                        null_conditions=["risky_with_risky_patch"], doses=[2.0],
                        behavioural_direction=True)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["estimate", str(run), "-c", str(tmp_path / "c.yaml"), "--units", "1",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    # 4 x (2 baselines + 2 features x 6 patched + 2 x 1 x 2 null + 2 layers x 2 doses) = 88
    assert "2 features x 8 conditions -> 88 trials in 22 units of <= 4" in out
    assert not list(run.glob(".estimate-*"))


def test_estimate_needs_features(tiny_cfg, tmp_path, capsys):
    assert main(["estimate", str(tmp_path / "r"), "-c", str(tiny_cfg), "--no-progress"]) == 2
    assert "error: no features to plan" in capsys.readouterr().err


def test_calibration_roundtrip(tmp_path):
    from featurepath.pipeline.estimate import save_calibration

    save_calibration(tmp_path, _cal())
    assert dataclasses.asdict(load_calibration(tmp_path)) == dataclasses.asdict(_cal())
    (tmp_path / "patch" / "calibration.json").write_text("{broken")
    assert load_calibration(tmp_path) is None
