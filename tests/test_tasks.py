"""The task registry and the slot machine behind the Task interface: the same prompts, prompt
ids, parses, readout, constraints and reminders as the modules it delegates to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from featurepath.config import config_from_dict
from featurepath.errors import ConfigError
from featurepath.tasks import get_task, task_names
from featurepath.tasks.base import Task

FIXTURE = Path(__file__).parent / "fixtures" / "parser" / "labelled.jsonl"
SRC = Path(__file__).resolve().parents[1] / "src"


def test_registry_lists_the_three_tasks() -> None:
    assert task_names() == ["investment_choice", "mystery_wheel", "slot_machine"]
    for name in task_names():
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.exit_action in task.actions
        assert set(task.option_digits) == set(task.actions)
        assert task.split.group("bankrupt") == "a" and task.split.group("stop") == "b"


def test_unknown_task_is_one_line() -> None:
    with pytest.raises(ConfigError) as exc:
        get_task("dice")
    msg = str(exc.value)
    assert "\n" not in msg and "slot_machine" in msg and "mystery_wheel" in msg


def test_config_task_key() -> None:
    assert config_from_dict({}).task == "slot_machine"
    assert config_from_dict({"task": "investment_choice"}).task == "investment_choice"
    with pytest.raises(ConfigError, match="known tasks: investment_choice, mystery_wheel"):
        config_from_dict({"task": "blackjack"})


def test_a_toy_task_needs_one_folder(tmp_path: Path) -> None:
    """A fourth task: one folder ``featurepath/tasks/toy/`` outside the source tree, on
    ``sys.path``; no file of featurepath is touched."""
    folder = tmp_path / "featurepath" / "tasks" / "toy"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "task.py").write_text(textwrap.dedent('''
        from featurepath.tasks import register_task
        from featurepath.tasks.mystery_wheel.task import MysteryWheel

        class Toy(MysteryWheel):
            name = "toy"
            title = "toy wheel"

        TASK = register_task(Toy())
    '''))
    code = ("from featurepath.tasks import get_task, task_names; "
            "from featurepath.config import config_from_dict; "
            "print(task_names()); t = get_task('toy'); "
            "print(t.parse('2', bet_type='fixed').action, config_from_dict({'task': 'toy'}).task)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(tmp_path)]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.splitlines()
    assert out == ["['investment_choice', 'mystery_wheel', 'slot_machine', 'toy']", "stop toy"]


# ------------------------------------------------------------------ the slot machine, pinned
SLOT = get_task("slot_machine")


@pytest.mark.parametrize("context", ["safe", "risky"])
def test_slot_states_and_prompts_are_the_modules(context: str) -> None:
    from featurepath.tasks.slot_machine import build_prompt, builtin_prompt
    from featurepath.tasks.slot_machine.states import state_population

    old = state_population(24, context, 0)
    new = [s for _, s in zip(range(24), SLOT.iter_states(context, 0), strict=False)]
    for protocol in ("completion", "chat"):
        assert [SLOT.build_prompt(s, "GHWP", protocol).prompt_id for s in new] == \
            [build_prompt(s, "GHWP", protocol).prompt_id for s in old]
        assert SLOT.builtin_prompt(context, protocol) == builtin_prompt(context, protocol)
    assert SLOT.condition_name("PG") == "GP"


def test_slot_parse_is_parse_response() -> None:
    from featurepath.tasks.slot_machine import builtin_prompt, parse_response

    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    for r in rows:
        prompt = builtin_prompt("safe" if r["bet_type"] == "fixed" else "risky")
        old = parse_response(r["response"], **prompt.parse_kwargs())
        new = SLOT.parse(r["response"], **prompt.parse_kwargs())
        assert (new.action, new.amount, new.valid, new.reason) == \
            (old.action, old.bet, old.valid, old.reason)


def test_slot_readout_constraints_and_reminder(tiny) -> None:
    from featurepath.tasks.slot_machine import builtin_prompt
    from featurepath.tasks.slot_machine.constrained import answer_constraints
    from featurepath.tasks.slot_machine.readout import option_token_ids, p_stop_from_logits

    _, tok = tiny
    ids = option_token_ids(tok)
    logits = torch.randn(5, len(tok.get_vocab()), generator=torch.Generator().manual_seed(0))
    # the formula P(stop) has always had, written out: sigmoid(lse(stop) - lse(bet))
    before = torch.sigmoid(torch.logsumexp(logits[..., ids["stop"]], dim=-1)
                           - torch.logsumexp(logits[..., ids["bet"]], dim=-1))
    assert torch.equal(SLOT.readout(tok)(logits), before)
    assert torch.equal(p_stop_from_logits(logits, ids), before)
    rows = [{"bet_type": "variable", "balance": 40.0}, {"bet_type": "fixed", "balance": 60.0}]
    for a, b in zip(SLOT.answer_constraints(tok, rows, "constrained"),
                    answer_constraints(tok, rows, "constrained"), strict=True):
        assert [a.allowed(t) for t in ([], [ids["bet"][0]])] == \
            [b.allowed(t) for t in ([], [ids["bet"][0]])]
    for ctx in ("safe", "risky"):
        for protocol in ("completion", "chat"):
            p = builtin_prompt(ctx, protocol)
            r = SLOT.retry_prompt(p)
            assert r != p and r.prompt_id == p.prompt_id  # play's retries keep the state's id
            if protocol == "completion":
                assert r.text.endswith("Choice: ") and "with 2 to stop" in r.text


def test_slot_fields_match_play() -> None:
    state = SLOT.new_game(None, "variable", 3)
    state.step(10.0)
    # the history play wrote before the interface existed (tests/test_slot_machine_pinned.py
    # pins the whole decisions table)
    history = json.dumps([{"round": r.round, "bet": r.bet, "win": r.win, "balance": r.balance}
                          for r in state.history])
    assert SLOT.before_fields(state) == {"balance_before": state.balance, "history": history}
    played = state.step(5.0)
    assert SLOT.after_fields(state, played) == {
        "outcome": "win" if played.win else "loss", "balance_after": played.balance}
    assert SLOT.after_fields(state, None) == {"outcome": None, "balance_after": state.balance}


def test_slot_demo_play_settings_are_embedded_ones() -> None:
    from featurepath.embedded import DEMO_PRESETS

    for preset in ("quick", "full"):
        assert "play" not in DEMO_PRESETS[preset]  # the task's demo preset has it


def test_slot_summary_is_summarize_games() -> None:
    from featurepath.tasks.slot_machine import summarize_games

    rows = []
    for g in range(4):
        st = SLOT.new_game(None, "fixed", g)
        while not st.ended and st.round <= 6:
            before = SLOT.before_fields(st)
            played = st.step("bet")
            rows.append(dict(game_id=f"g{g}", condition="BASE", bet_type="fixed",
                             round=played.round, action="bet", bet=10.0, valid=True,
                             end_reason=None, **before, **SLOT.after_fields(st, played)))
        for r in rows:
            if r["game_id"] == f"g{g}":
                r["end_reason"] = st.end_reason or "stop"
    df = pd.DataFrame(rows)
    pd.testing.assert_frame_equal(SLOT.summarize(df), summarize_games(df))
