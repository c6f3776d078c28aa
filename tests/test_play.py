"""Batched play: determinism, resume after a kill, config errors, outputs (tiny random LLaMA).

A random tiny model almost never writes a readable answer, so most tests wrap the real engine
``generate`` (keeping its batching and per-row seeds) and map each row's first sampled token to
an answer: stop, a bet, an out-of-range bet or garbage. Games then run several rounds, retries
and every ending happen, and everything still depends only on the seeds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from featurepath.cli import main
from featurepath.config import RunConfig
from featurepath.engine.generate import GenResult, generate
from featurepath.errors import ConfigError
from featurepath.pipeline.play import (
    StepInfo,
    plan_games,
    run_play,
    validate_play,
)
from featurepath.pipeline.runtime import Runtime
from featurepath.rundir import decision_columns
from featurepath.tasks import get_task
from featurepath.tasks.slot_machine import GameConfig, GameState, build_prompt, parse_response

SLOT = get_task("slot_machine")

SMALL = dict(conditions=["BASE", "GMHWP"], bet_types=["fixed", "variable"],
             games_per_condition=2, max_rounds=3, max_retries=1, batch_size=4,
             sampling=dict(temperature=1.0, max_new_tokens=4))


def small_cfg(**play) -> RunConfig:
    return RunConfig.model_validate({"seed": 7, "play": {**SMALL, **play}})


def forced(calls: list[list[int]] | None = None):
    """A ``generate`` that runs the real engine, then turns each row's first token into an
    answer, so tiny-model games are long enough to test."""

    def fn(model, tok, prompts, seeds, sampling, **kw) -> GenResult:
        res = generate(model, tok, prompts, seeds, sampling, **kw)
        if calls is not None:
            calls.append([int(x) for x in seeds])
        texts = []
        for toks in res.tokens:
            k = sum(toks)
            texts.append(["2", "1\nAmount: $10", "1, 5", "1\nAmount: $500", "banana",
                          "1\nBet: $20"][k % 6])
        res.texts = texts
        return res

    return fn


def read(run: Path) -> pd.DataFrame:
    from featurepath.pipeline.play import _nulls

    return _nulls(pd.read_parquet(run / "play" / "decisions.parquet"), SLOT)


def test_outputs_and_semantics(tiny, tmp_path):
    model, tok = tiny
    df = run_play(tmp_path, small_cfg(), runtime=Runtime(model, tok),
                  progress=False, generate_fn=forced())
    assert list(df.columns) == decision_columns(SLOT)
    pd.testing.assert_frame_equal(df, read(tmp_path))
    assert df["game_id"].nunique() == 8
    assert (tmp_path / "config.yaml").exists()
    metrics = pd.read_parquet(tmp_path / "play" / "metrics.parquet")
    assert (tmp_path / "play" / "metrics.csv").exists()
    assert set(zip(metrics["condition"], metrics["bet_type"], strict=True)) == {
        ("BASE", "fixed"), ("BASE", "variable"), ("GMHWP", "fixed"), ("GMHWP", "variable")}
    assert (metrics["n_games"] == 2).all()
    # every game ends, and the reason is on all its rows
    assert df["end_reason"].notna().all()
    assert (df.groupby("game_id")["end_reason"].nunique() == 1).all()
    for _, g in df.groupby("game_id"):
        g = g.sort_values("round")
        assert list(g["round"]) == list(range(1, len(g) + 1))
        # balances chain from round to round
        assert (g["balance_before"].iloc[1:].to_numpy() == g["balance_after"].iloc[:-1]).all()
        last = g.iloc[-1]
        if last["end_reason"] == "stop":
            assert last["action"] == "stop" and last["outcome"] is None
        if last["end_reason"] == "invalid":
            assert not last["valid"] and last["retries"] == 1
        assert g.iloc[:-1]["valid"].all()
    played = df[df["outcome"].notna()]
    assert played["valid"].all() and (played["action"] == "bet").all()
    assert df["readout"].between(0, 1).all()
    retried = df[df["retries"] > 0]
    assert len(retried) and retried["prompt"].str.contains("Answer with 1").all()
    assert set(df["end_reason"]) >= {"stop", "invalid"}


def test_deterministic(tiny, tmp_path):
    model, tok = tiny
    a = run_play(tmp_path / "a", small_cfg(), runtime=Runtime(model, tok),
                 progress=False, generate_fn=forced())
    run_play(tmp_path / "b", small_cfg(), runtime=Runtime(model, tok),
             progress=False, generate_fn=forced())
    pd.testing.assert_frame_equal(read(tmp_path / "a"), read(tmp_path / "b"))
    assert a["round"].max() > 1


class Killed(Exception):
    pass


def test_resume_after_kill(tiny, tmp_path):
    model, tok = tiny
    cfg = small_cfg()
    full_calls: list[list[int]] = []
    run_play(tmp_path / "full", cfg, runtime=Runtime(model, tok),
             progress=False, generate_fn=forced(full_calls))

    steps: list[StepInfo] = []

    def die(info: StepInfo) -> None:
        steps.append(info)
        if info.unit == 1 and info.step == 2:  # unit 0 committed, unit 1 half played
            raise Killed

    run = tmp_path / "killed"
    with pytest.raises(Killed):
        run_play(run, cfg, runtime=Runtime(model, tok),
                 progress=False, generate_fn=forced(), after_step=die)
    parts = sorted((run / "play" / "parts").glob("games-*.parquet"))
    assert [p.name for p in parts] == ["games-0000.parquet"]
    before = os.stat(parts[0])
    assert not (run / "play" / "decisions.parquet").exists()

    with pytest.raises(ConfigError, match="--resume"):
        run_play(run, cfg, runtime=Runtime(model, tok), progress=False, generate_fn=forced())

    resumed_calls: list[list[int]] = []
    run_play(run, cfg, runtime=Runtime(model, tok), resume=True, progress=False,
             generate_fn=forced(resumed_calls))
    pd.testing.assert_frame_equal(read(run), read(tmp_path / "full"))
    after = os.stat(parts[0])
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    unit0_calls = sum(1 for s in steps if s.unit == 0)
    assert len(resumed_calls) == len(full_calls) - unit0_calls
    unit0_seeds = set(read(run).query("unit == 0")["sample_seed"])
    assert not unit0_seeds & {s for c in resumed_calls for s in c}  # finished games not replayed
    # resuming a finished run replays nothing
    again: list[list[int]] = []
    run_play(run, cfg, runtime=Runtime(model, tok),
             resume=True, progress=False, generate_fn=forced(again))
    assert again == []
    pd.testing.assert_frame_equal(read(run), read(tmp_path / "full"))


def test_resume_refuses_changed_config(tiny, tmp_path):
    model, tok = tiny
    run_play(tmp_path, small_cfg(games_per_condition=1), runtime=Runtime(model, tok),
             progress=False,
             generate_fn=forced())
    with pytest.raises(ConfigError, match="play.max_rounds"):
        run_play(tmp_path, small_cfg(games_per_condition=1, max_rounds=9),
                 runtime=Runtime(model, tok), resume=True, progress=False, generate_fn=forced())


def test_raw_tiny_model_ends_invalid(tiny, tmp_path):
    """The real parser on a random model's text: unreadable answers are retried, then end the
    game as 'invalid' with the decision point kept."""
    model, tok = tiny
    cfg = small_cfg(conditions=["BASE"], bet_types=["fixed"], games_per_condition=2,
                    max_retries=2)
    df = run_play(tmp_path, cfg, runtime=Runtime(model, tok), progress=False)
    bad = df[~df["valid"]]
    assert len(bad) and (bad["end_reason"] == "invalid").all() and (bad["retries"] == 2).all()
    for _, r in df.iterrows():
        assert parse_response(r["response"], "fixed").valid == r["valid"]


def test_chat_protocol(tiny, tmp_path):
    model, tok = tiny
    cfg = small_cfg(conditions=["GM"], bet_types=["variable"], games_per_condition=2,
                    protocol="chat")
    df = run_play(tmp_path, cfg, runtime=Runtime(model, tok), progress=False)
    assert df["prompt"].str.contains("<|assistant|>", regex=False).all()
    assert df["readout"].isna().all()  # no decision token in a chat answer


@settings(max_examples=40, deadline=None)
@given(balance=st.integers(5, 400), bet_type=st.sampled_from(["fixed", "variable"]),
       protocol=st.sampled_from(["completion", "chat"]), comp=st.sampled_from(["", "G", "GMHWP"]))
def test_reminder_keeps_prompt_shape(balance, bet_type, protocol, comp):
    cfg = GameConfig(bet_type=bet_type, initial_balance=100, max_bet=100)
    state = GameState(cfg, seed=0)
    state.balance = float(balance)
    p = build_prompt(state, comp, protocol)
    r = SLOT.retry_prompt(p)
    if protocol == "completion":
        assert r.text.endswith("\n\nChoice: ") and r.text.startswith(p.text[:-len("Choice: ")])
        assert r.text.count("Choice: ") == 1
    else:
        assert r.messages[-1]["content"].startswith(p.messages[-1]["content"])
    assert r.parse_kwargs() == p.parse_kwargs()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 6))
def test_game_seeds_stable_and_distinct(seed, n):
    cfg = RunConfig.model_validate({"seed": seed, "play": {"games_per_condition": n,
                                                          "conditions": ["BASE", "PG"]}})
    games = plan_games(cfg)
    assert len({g.seed for g in games}) == len(games) == 4 * n
    assert plan_games(cfg) == games
    assert {g.condition for g in games} == {"BASE", "GP"}


@pytest.mark.parametrize("play, match", [
    ({"conditions": ["GXQ"]}, "unknown prompt component"),
    ({"conditions": ["GP", "PG"]}, "twice"),
    ({"bet_types": ["variable"], "max_bet": 500}, "exceeds the starting balance"),
    ({"bet_types": ["fixed"], "fixed_bet": 150}, "fixed_bet"),
])
def test_validate_play(play, match):
    with pytest.raises(ConfigError, match=match):
        validate_play(RunConfig.model_validate({"play": play}))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_cli_config_errors(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["play", str(run), "--conditions", "BASE,GXQ", "--model", "nowhere"]) == 2
    assert "GXQ" in _one_line_error(capsys)
    assert main(["play", str(run), "--games", "0"]) == 2
    assert "games_per_condition" in _one_line_error(capsys)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"play": {"bet_types": ["variable"], "max_bet": 500}}))
    assert main(["play", str(run), "--config", str(cfg)]) == 2
    assert "starting balance" in _one_line_error(capsys)
    assert main(["play", str(run), "--bet-types", "fixed,risky"]) == 2
    assert "bet_types" in _one_line_error(capsys)
    assert not run.exists()  # nothing written, no model loaded


def test_cli_tiny_model(tmp_path, capsys):
    from featurepath.testing import save_tiny_llama

    model_dir = save_tiny_llama(tmp_path / "tiny")
    run = tmp_path / "run"
    args = ["play", str(run), "--model", model_dir, "--games", "2", "--conditions", "BASE",
            "--bet-types", "variable", "--max-rounds", "2", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "bankruptcy_rate" in out and "BASE" in out
    assert (run / "play" / "metrics.csv").exists()
    assert main(args) == 2
    assert "--resume" in _one_line_error(capsys)
    assert main(args + ["--resume"]) == 0


@pytest.mark.e2e
def test_e2e_embedded(tmp_path, monkeypatch, capsys):
    """2 games x 2 rounds on the real embedded model (cache under $FEATUREPATH_HOME)."""
    monkeypatch.setenv("FEATUREPATH_HOME", os.environ.get("FEATUREPATH_HOME", "/tmp/fphome"))
    run = tmp_path / "run"
    cfg = tmp_path / "c.yaml"  # short answers keep this test fast on a CPU
    cfg.write_text(yaml.safe_dump({"play": {"max_retries": 1, "sampling": {"max_new_tokens": 8}}}))
    assert main(["play", str(run), "--config", str(cfg), "--games", "2", "--conditions", "GMHWP",
                 "--bet-types", "fixed", "--max-rounds", "2", "--device", "cpu", "--quiet"]) == 0
    df = read(run)
    assert df["game_id"].nunique() == 2 and df["round"].max() <= 2
    assert df["end_reason"].notna().all() and df["readout"].between(0, 1).all()
    assert "GMHWP" in capsys.readouterr().out
