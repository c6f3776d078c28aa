"""The study's investment-choice and mystery-wheel games: rules (exact EV 0.9, reproducible
seeds, empirical frequencies), the strict parser on labelled answers and on any text,
constrained answers, state populations, metrics and the SAE corpus."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from featurepath.errors import ConfigError
from featurepath.tasks import get_task
from featurepath.tasks.investment_choice.rules import InvestmentRules
from featurepath.tasks.mystery_wheel.rules import ZONES, WheelRules

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
GAMES = ["investment_choice", "mystery_wheel"]
_OFFER = ("bet_type", "protocol", "balance", "min_bet", "max_bet", "fixed_bet")


# ------------------------------------------------------------------ rules
def test_every_risky_option_has_ev_09_exactly() -> None:
    inv = InvestmentRules()
    for action in inv.risky_actions:
        p, x = inv.odds(action)
        assert Fraction(str(p)) * Fraction(str(x)) == Fraction(9, 10), action
    wheel = WheelRules()
    assert sum(Fraction(str(getattr(wheel, z)[0])) for z in ZONES) == 1
    assert sum(Fraction(str(getattr(wheel, z)[0])) * Fraction(str(getattr(wheel, z)[1]))
               for z in ZONES) == Fraction(9, 10)


def _play(name: str, seed: int, policy) -> list[tuple]:
    task = get_task(name)
    state = task.new_game(None, "variable", seed)
    while not state.ended and state.round <= 30:
        state.step(policy(state))
    return [(r.action, r.bet, r.outcome, r.balance) for r in state.history]


@pytest.mark.parametrize("name,action", [("investment_choice", "high"),
                                         ("mystery_wheel", "spin")])
def test_a_seeded_game_replays(name: str, action: str) -> None:
    policy = lambda s: (action, s.bet_range()[0])  # noqa: E731
    assert _play(name, 7, policy) == _play(name, 7, policy)
    assert _play(name, 7, policy) != _play(name, 8, policy)


def _draws(rules, action: str, n: int = 100_000) -> list[str]:
    rng = np.random.default_rng(12345)
    return [rules.draw(action, float(u)) for u in rng.random(n)]


@pytest.mark.parametrize("action", ["moderate", "high", "very_high"])
def test_investment_win_frequencies(action: str) -> None:
    rules = InvestmentRules()
    wins = _draws(rules, action).count("win")
    assert binomtest(wins, 100_000, rules.odds(action)[0]).pvalue > 1e-3


def test_wheel_zone_frequencies() -> None:
    rules = WheelRules()
    draws = _draws(rules, "spin")
    for zone in ZONES:
        assert binomtest(draws.count(zone), len(draws), getattr(rules, zone)[0]).pvalue > 1e-3


def test_payouts_and_exit() -> None:
    inv = get_task("investment_choice")
    s = inv.new_game(InvestmentRules(bet_cap=30), "variable", 0)
    played = s.step(("very_high", 7))
    assert played.payout in (0.0, 63.0) and s.balance == 100 - 7 + played.payout
    assert s.step(("stop", None)) is None and s.end_reason == "stop"
    with pytest.raises(ValueError, match="already ended"):
        s.step("high")
    s = inv.new_game(InvestmentRules(bet_cap=30), "variable", 0)
    with pytest.raises(ValueError, match="outside the legal range"):
        s.step(("high", 31))
    with pytest.raises(ValueError, match="needs an amount"):
        s.step("high")
    # fixed betting with no cap: all-in (investment), refused (wheel), as in the study
    assert inv.new_game(InvestmentRules(bet_cap=None), "fixed", 0).bet_range() == (100, 100)
    with pytest.raises(ConfigError, match="needs a bet_cap"):
        get_task("mystery_wheel").new_game(WheelRules(bet_cap=None), "fixed", 0)
    with pytest.raises(ValueError, match="sum to 1"):
        WheelRules(red=(0.3, 2.0))


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(GAMES), seed=st.integers(0, 2**31),
       bet_type=st.sampled_from(["fixed", "variable"]), cap=st.sampled_from([10, 30, 50, 70]),
       picks=st.lists(st.tuples(st.integers(0, 9), st.floats(0, 1)), min_size=1, max_size=40))
def test_a_step_never_makes_the_balance_negative(name, seed, bet_type, cap, picks) -> None:
    task = get_task(name)
    state = task.new_game(task.config_class(bet_cap=cap), bet_type, seed)
    risky = state.rules.risky_actions
    for k, frac in picks:
        if state.ended:
            break
        lo, hi = state.bet_range()
        state.step((risky[k % len(risky)], round(lo + frac * (hi - lo), 2)))
        assert state.balance >= 0
    assert state.ended == (state.end_reason is not None)


# ------------------------------------------------------------------ parser
@pytest.mark.parametrize("name", GAMES)
def test_parser_agrees_with_every_label(name: str) -> None:
    task = get_task(name)
    rows = [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]
    assert len(rows) >= 20
    for r in rows:
        d = task.parse(r["response"], **{k: r[k] for k in _OFFER})
        assert (d.action, d.amount, d.valid) == \
            (r["label_action"], r["label_amount"], r["label_valid"]), (r["note"], d.reason)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(GAMES), text=st.text(max_size=80),
       bet_type=st.sampled_from(["fixed", "variable"]),
       protocol=st.sampled_from(["completion", "chat"]))
def test_parser_never_raises_and_never_invents(name, text, bet_type, protocol) -> None:
    task = get_task(name)
    d = task.parse(text, bet_type=bet_type, protocol=protocol, balance=50.0, min_bet=5.0,
                   max_bet=30.0, fixed_bet=10.0)
    assert d.action in (None, *task.actions)
    if d.valid:
        assert d.action is not None
        assert d.action == task.exit_action or d.amount is not None


@pytest.mark.parametrize("name", GAMES)
def test_parser_reads_its_own_prompts_answers(name: str) -> None:
    """The menu line a model copies back, and every reminder's example, parse."""
    task = get_task(name)
    for ctx in task.contexts:
        p = task.builtin_prompt(ctx)
        for action, digit in task.option_digits.items():
            line = next(ln for ln in p.text.splitlines() if ln.startswith(digit + ")"))
            assert task.parse(line, **p.parse_kwargs()).action == action, line
        assert task.retry_prompt(p).text.endswith("\n\nChoice: ")


# ------------------------------------------------------------------ model-facing pieces
@pytest.mark.parametrize("name", GAMES)
def test_constrained_answers_always_parse(tiny, name: str) -> None:
    from featurepath.engine.generate import SamplingConfig, generate

    model, tok = tiny
    task = get_task(name)
    p = task.build_prompt(next(iter(task.iter_states("risky", 0))))
    cons = task.answer_constraints(tok, [p.parse_kwargs()] * 12, "constrained")
    res = generate(model, tok, [p.text] * 12, list(range(12)), SamplingConfig(1.0, 1.0, 12),
                   constraints=cons)
    for text in res.texts:
        d = task.parse(text, **p.parse_kwargs())
        assert d.valid and d.action in task.actions, (text, d.reason)
    readout = task.readout(tok)
    assert readout is not None
    import torch

    x = torch.zeros(2, len(tok.get_vocab()))
    ids = task.option_token_ids(tok)
    x[1, ids[task.exit_action]] = 30.0
    out = readout(x)
    n_exit = len(ids[task.exit_action])
    assert out[0].item() == pytest.approx(n_exit / sum(len(v) for v in ids.values()))
    assert out[1].item() == pytest.approx(1.0)


@pytest.mark.parametrize("name", GAMES)
def test_state_populations_fit_their_contexts(name: str) -> None:
    task = get_task(name)
    start = task.config_class().initial_balance
    for ctx in task.contexts:
        states = task.state_population(24, ctx, 0)
        ids = [task.build_prompt(s).prompt_id for s in states]
        assert len(set(ids)) == 24
        assert ids == [task.build_prompt(s).prompt_id for s in task.state_population(24, ctx, 0)]
        for s in [*states, task.builtin_state(ctx)]:
            assert not s.ended and s.history
            if ctx == "safe":
                assert s.bet_type == "fixed" and s.balance >= start
            else:
                assert s.bet_type == "variable" and s.balance < start
                assert not s.history[-1].win
    with pytest.raises(ConfigError, match="unknown context"):
        next(task.iter_states("calm", 0))


@pytest.mark.parametrize("name", GAMES)
def test_summary_of_played_games(name: str) -> None:
    task = get_task(name)
    rules = task.config_class(bet_cap=30)
    rows = []
    for g in range(30):
        state = task.new_game(rules, "variable", g)
        while not state.ended:
            before = task.before_fields(state)
            rnd = state.round
            if rnd > 3:
                dec, played = ("stop", None), state.step("stop")
            else:
                dec = (rules.risky_actions[g % len(rules.risky_actions)], 30.0)
                played = state.step(dec if state.balance >= 30 else (dec[0], state.balance))
            rows.append(dict(game_id=f"g{g}", condition="BASE", bet_type="variable",
                             round=rnd, action=dec[0],
                             amount=played.bet if played else None, valid=True, **before,
                             **task.after_fields(state, played)))
        for r in rows:
            if r["game_id"] == f"g{g}":
                r["end_reason"] = state.end_reason
    m = task.summarize(pd.DataFrame(rows), rules)
    assert list(m.columns) == list(task.summary_columns) and len(m) == 1
    row = m.iloc[0]
    assert row["n_games"] == 30
    assert row["bankruptcy_rate"] + row["stop_rate"] == pytest.approx(1.0)
    assert row["mean_bet"] <= 30 and row["invalid_rate"] == 0
    shares = [row[f"share_{a}"] for a in task.actions]
    assert sum(shares) == pytest.approx(1.0)


@pytest.mark.parametrize("name", GAMES)
def test_corpus_prompts_are_deterministic(tiny, name: str) -> None:
    _, tok = tiny
    task = get_task(name)
    a = task.corpus_prompts(tok, 12, seed=3)
    assert a == task.corpus_prompts(tok, 12, seed=3) and len(a) == 12
    assert a != task.corpus_prompts(tok, 12, seed=4)
    assert all(t.endswith("Choice: ") or "Final Decision" in t for t in a)


@pytest.mark.parametrize("name", GAMES)
def test_demo_presets_are_valid_settings(name: str) -> None:
    from featurepath.config import PlaySection

    task = get_task(name)
    for preset in ("quick", "full"):
        d = task.demo[preset]
        task.config_class(**d["rules"])
        play = PlaySection(**{k: v for k, v in d["play"].items()})
        for c in play.conditions:
            task.condition_name(c)
        task.condition_name(d["patch"]["components"])
        assert {c["context"] for c in d["patch"]["extra_conditions"]} <= set(task.contexts)
