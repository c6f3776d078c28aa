"""The two new games through the library on the tiny model: play -> discover -> patch (null arms
and the behavioural direction) -> causal, with nothing but ``task:`` changed in the config.

Why fixed $10 stakes from $20: the tiny random model mostly exits at once, and a game that can
go broke in two losses gives discover both of its groups in a few dozen games.
"""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from featurepath.config import RunConfig
from featurepath.tasks import get_task


def _cfg(task: str) -> RunConfig:
    sampling = {"answer": "constrained", "max_new_tokens": 16}
    return RunConfig.model_validate({
        "task": task, "seed": 3,
        "play": {"conditions": ["BASE", "G"], "bet_types": ["fixed"], "games_per_condition": 24,
                 "max_rounds": 8, "batch_size": 48, "sampling": sampling,
                 "rules": {"initial_balance": 20.0, "bet_cap": 10}},
        "discover": {"max_candidates": 2, "min_d": 0.0, "alpha": 0.99},
        "patch": {"trials": 3, "batch_size": 64, "null_directions": 2,
                  "behavioural_direction": True, "prompt_set": "play", "sampling": sampling},
        "analysis": {"n_boot": 0}})


@pytest.mark.parametrize("name", ["investment_choice", "mystery_wheel"])
def test_a_new_task_runs_play_discover_patch_causal(name, tiny, tiny_saes, tmp_path) -> None:
    from featurepath.analysis.causal import run_causal
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.discover import run_discover
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.play import run_play
    from featurepath.pipeline.runtime import Runtime
    from featurepath.rundir import RunDir, decision_columns

    task, cfg = get_task(name), _cfg(name)
    model, tok = tiny
    decisions = run_play(tmp_path, cfg, runtime=Runtime(model, tok, tiny_saes), progress=False)
    assert list(decisions.columns) == decision_columns(task)
    assert set(decisions["action"].dropna()) <= set(task.actions)
    ends = decisions.groupby("game_id")["end_reason"].first().map(task.split.group)
    assert {"a", "b"} <= set(ends.dropna())  # both groups of the split were played
    metrics = pd.read_parquet(tmp_path / "play" / "metrics.parquet")
    assert list(metrics.columns) == list(task.summary_columns)
    table = run_discover(tmp_path, cfg, runtime=Runtime(model, tok, tiny_saes), progress=False)
    assert {"mean_safe", "mean_risky"} <= set(table.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        job = prepare(tmp_path, cfg, model, tok, tiny_saes)
        run_local(job, runtime=(model, tok, tiny_saes), progress=False)
        res = run_causal(tmp_path, cfg)
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert set(trials["action"].dropna()) <= set(task.actions)
    assert trials["readout"].between(0, 1).all()  # P(exit) read at every decision token
    assert set(res.tests["metric"]) == {m.name for m in task.metrics}
    assert RunDir(tmp_path).directions.exists()  # continue-minus-exit, from play's decisions
    label = task.metric(next(m.name for m in task.metrics if m.kind == "readout")).label
    assert label in res.controls_line()
