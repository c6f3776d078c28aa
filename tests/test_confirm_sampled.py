"""A sampled primary metric in ``featurepath confirm`` (issue 22 item 4): the task's stop rate
over ``trials`` sampled answers per prompt, instead of the readout P(stop).

Planted on the tiny model (the same planted decoder rows as ``test_confirm_planted``): the
feature along the readout direction is confirmed on the sampled stop rate too, a random decoder
row is not; trials are seed-matched across arms (an arm that writes nothing reproduces the
baseline answer for answer); each draw costs ``trials`` sampled answers per prompt, and the
pre-registration and ``estimate`` say so.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_confirm_planted import PLANTED, RANDOM, _keys, planted  # noqa: F401 (fixture)

from featurepath.config import ConditionSpec, RunConfig
from featurepath.errors import ConfigError
from featurepath.pipeline.confirm import run_confirm
from featurepath.rundir import RunDir

TRIALS = 6


def _cfg(metric: str = "stop_rate", **cond) -> RunConfig:
    cfg = RunConfig()
    cfg.patch.prompt_set = "states"
    cfg.patch.n_prompts = 8
    cfg.patch.components = "BASE"
    cfg.patch.sampling.answer = "constrained"
    cfg.patch.sampling.max_new_tokens = 10  # a bet needs its amount to be a valid answer
    # the safe context's fixed bets: the tiny tokenizer cannot spell a variable amount, so
    # there a bet would be an invalid answer
    cfg.patch.conditions = [ConditionSpec(name="safe_baseline", context="safe"),
                            ConditionSpec(name="safe_up", context="safe", **cond)]
    cfg.confirm.metric = metric
    cfg.confirm.trials = TRIALS
    cfg.confirm.cap = 39
    cfg.confirm.round_size = 13
    return cfg


def test_sampled_stop_rate_confirms_the_planted_feature(planted, tmp_path) -> None:  # noqa: F811
    feats = _keys(PLANTED[:1] + RANDOM[:1])
    res = run_confirm(tmp_path, _cfg(patch="value", value=4.0), runtime=planted,
                      features=feats, progress=False)
    v = res.verdicts.set_index("feature")
    assert (v["metric"] == "stop_rate").all()
    planted_row, random_row = v.loc[feats[0]], v.loc[feats[1]]
    shown = v[["effect", "p_baseline", "null_draws", "null_exceed", "p_null", "q"]].to_string()
    assert planted_row["significant"] and planted_row["effect"] > 0.2, shown
    assert not random_row["significant"], v
    # every row is a sampled answer: (baseline + 2 arms + the null draws, whole rounds of 13)
    # x prompts x trials
    n_prompts = 8  # the confirm half of 8 + 8 states per context
    draws = int(v["null_draws"].sum())
    per = n_prompts * TRIALS
    assert res.rows % per == 0 and (3 + draws) * per <= res.rows < (3 + draws + 2 * 13) * per
    assert res.row_kind == "sampled answers"
    pre = json.loads(RunDir(tmp_path).preregistration.read_text())
    assert pre["metric"] == "stop_rate" and pre["metric_kind"] == "rate"
    assert pre["rows_per_prompt"] == TRIALS and pre["actions"] == ["stop"]
    assert pre["min_effect"] == RunConfig().analysis.min_effect_rate
    assert "common random numbers" in pre["trial_seeds"]


def test_trials_are_seed_matched_across_arms(planted, tmp_path) -> None:  # noqa: F811
    """Arms that write nothing (no clamp, and a scale-1 clamp) give the baseline's answers
    exactly; a real clamp changes some."""
    from featurepath.engine.hooks import Intervention
    from featurepath.pipeline import confirm_plan as cp
    from featurepath.pipeline.confirm import _Engine
    from featurepath.pipeline.prompt_sets import prompt_sets

    cfg = _cfg(patch="scale", scale=1.0)
    model, tok, saes = planted
    sets, _ = prompt_sets(cfg, tmp_path, tok, "confirm")
    eng = _Engine(tmp_path, cfg, model, tok, saes, None, sets, [], False, cp.primary(cfg))
    f = PLANTED[0]
    arms = [None, None, Intervention(2, f, scale=1.0, method="delta", positions="last"),
            Intervention(2, f, value=4.0, method="delta", positions="last")]
    out = eng._read("safe", arms)
    assert out.shape == (4, 8) and np.all((out >= 0) & (out <= 1))
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[0], out[2])
    assert out[3].mean() > out[0].mean()
    assert eng.rows == 4 * 8 * TRIALS


def test_a_metric_that_cannot_be_primary_is_named(planted, tmp_path) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match=r"confirm.metric 'bet' .* use one of stop_rate, "
                                          r"p_stop"):
        run_confirm(tmp_path, _cfg("bet", patch="value", value=4.0), runtime=planted,
                    features=_keys(PLANTED[:1]), progress=False)


def test_estimate_counts_sampled_answers() -> None:
    from featurepath.pipeline.confirm_cost import cost_of_config

    readout = cost_of_config(_cfg("p_stop", patch="value", value=1.0))
    sampled = cost_of_config(_cfg(patch="value", value=1.0))
    assert sampled.rows_per_prompt == TRIALS and readout.rows_per_prompt == 1
    assert sampled.rows_cap == TRIALS * readout.rows_cap
    assert "sampled trials" in sampled.lines()[1]
    assert "decision-token rows" in readout.lines()[1]


def test_the_readout_preregistration_is_unchanged() -> None:
    """A readout confirmation pre-registers exactly the keys it always did (so confirmations
    made before sampled metrics resume under the same hash)."""
    from featurepath.pipeline import confirm_plan as cp

    cfg = _cfg("p_stop", patch="value", value=1.0)
    pre = cp.preregistration(cfg, [], "explicit", {"safe": ["a"]}, True, cp.primary(cfg))
    assert set(pre) == {"format", "model", "saes", "seed", "candidates_from", "metric",
                        "n_tests", "alpha", "min_effect", "tests", "intervention",
                        "null_design", "verdict", "prompts"}
    assert pre["intervention"]["positions"] == "decision token"


def test_the_screen_predicts_a_rate_of_the_continuing_actions_the_other_way(tmp_path) -> None:
    """The screen ranks by the readout (P(exit)); for investment choice's rate of the high-risk
    options (toward the risky group) a feature that raises P(exit) is predicted to lower it."""
    import pandas as pd

    from featurepath.pipeline import confirm_plan as cp

    cfg = RunConfig.model_validate({"task": "investment_choice",
                                    "confirm": {"metric": "high_risk_rate"}})
    m = cp.primary(cfg)
    assert (m.kind, m.screen_sign, m.actions) == ("rate", -1, ("high", "very_high"))
    assert cp.primary(RunConfig.model_validate(
        {"task": "investment_choice", "confirm": {"metric": "exit_rate"}})).screen_sign == 1
    pd.DataFrame({"feature": ["L1-3"], "context": ["risky"], "intervention": ["up"],
                  "attribution": [0.4]}).to_parquet(tmp_path / "screen.parquet")
    cond = ConditionSpec(name="up", context="risky", patch="scale", scale=3.0)
    assert cp.predicted_sign(tmp_path, "L1-3", cond, m.name, m.screen_sign) == (-1, "screen")
    assert cp.predicted_sign(tmp_path, "L1-3", cond) == (1, "screen")
