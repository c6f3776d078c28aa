"""Game rules: payout arithmetic, endings, seeded replay and config validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurepath.errors import ConfigError
from featurepath.tasks.slot_machine import Decision, GameConfig, GameState, play
from featurepath.tasks.slot_machine.rules import validate_n_games


def _first_outcomes(seed: int, n: int) -> list[bool]:
    g = GameState(GameConfig(bet_type="fixed", max_rounds=n, initial_balance=1000,
                             fixed_bet=1), seed=seed)
    return [g.step("bet").win for _ in range(n)]


def test_payout_win_nets_twice_the_bet_and_loss_loses_it() -> None:
    g = GameState(GameConfig(bet_type="variable"), seed=3)
    start = g.balance
    r = g.step(10)
    assert r is not None
    assert r.balance == (start + 20 if r.win else start - 10)
    assert g.history[-1] == r and g.round == 2


def test_same_seed_same_game_and_outcomes_independent_of_bets() -> None:
    def policy(state: GameState) -> object:
        return "stop" if state.balance >= 160 else 10

    a = play(policy, GameConfig(bet_type="variable"), seed=11)
    b = play(policy, GameConfig(bet_type="variable"), seed=11)
    assert a.history == b.history and a.end_reason == b.end_reason
    # outcomes are one draw per round, whatever the stake
    g = GameState(GameConfig(bet_type="variable", initial_balance=100), seed=5)
    wins = [g.step(5 + (i % 3)).win for i in range(5)]
    assert wins == _first_outcomes(5, 5)


def test_stop_ends_game() -> None:
    g = GameState(seed=0)
    assert g.step("stop") is None
    assert g.ended and g.end_reason == "stop"
    with pytest.raises(ValueError):
        g.step("bet")


def test_bankruptcy_when_balance_below_fixed_bet() -> None:
    g = play(lambda s: "bet", GameConfig(bet_type="fixed", win_prob=0.0), seed=0)
    assert g.end_reason == "bankrupt" and g.balance == 0 and g.rounds_played == 10


def test_round_limit() -> None:
    g = play(lambda s: "bet", GameConfig(win_prob=1.0, max_rounds=7), seed=0)
    assert g.end_reason == "round_limit" and g.rounds_played == 7 and g.balance == 100 + 7 * 20


def test_variable_bet_capped_at_balance_and_decision_objects() -> None:
    g = GameState(GameConfig(bet_type="variable", win_prob=0.0), seed=0)
    g.step(Decision("bet", 90.0, True, ""))
    assert g.balance == 10 and g.bet_range() == (5, 10)
    with pytest.raises(ValueError):
        g.step(11)
    with pytest.raises(ValueError):
        g.step(Decision("bet", None, False, "unreadable"))
    with pytest.raises(ValueError):
        g.step(4)
    g.step(Decision("stop", None, True, ""))
    assert g.end_reason == "stop"


def test_from_history_and_warning_count() -> None:
    g = GameState.from_history(GameConfig(bet_type="variable"),
                               [(10, True, 130), (10, False, 120), (10, False, 110),
                                (10, False, 100)])
    assert g.round == 5 and g.balance == 100 and g.consecutive_losses() == 3


@pytest.mark.parametrize("kwargs", [
    dict(bet_type="variable", max_bet=150),          # bet range beyond the starting balance
    dict(bet_type="variable", min_bet=50, max_bet=20),
    dict(bet_type="fixed", fixed_bet=200),
    dict(bet_type="both"),
    dict(win_prob=1.5),
    dict(max_rounds=0),
    dict(bet_type="variable", min_bet=0),
])
def test_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        GameConfig(**kwargs)


def test_zero_games_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        validate_n_games(0)
    assert validate_n_games(3) == 3


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31), frac=st.floats(0.05, 1.0))
def test_balance_accounting_invariant(seed: int, frac: float) -> None:
    """Whatever the policy, the final balance is the start plus the net of every round."""
    def policy(state: GameState) -> object:
        lo, hi = state.bet_range()
        return max(lo, min(hi, round(state.balance * frac)))

    g = play(policy, GameConfig(bet_type="variable", max_rounds=30), seed=seed)
    net = sum(2 * r.bet if r.win else -r.bet for r in g.history)
    assert g.balance == pytest.approx(100 + net)
    assert g.ended and g.end_reason in ("bankrupt", "round_limit")


def test_state_population_is_distinct_deterministic_and_in_context():
    from featurepath.tasks.slot_machine.states import state_population

    safe = state_population(20, "safe", seed=3)
    risky = state_population(20, "risky", seed=3)
    assert all(s.config.bet_type == "fixed" and s.balance >= 100 for s in safe)
    assert all(s.config.bet_type == "variable" and s.balance < 100 and not s.history[-1].win
               for s in risky)
    keys = {tuple((r.bet, r.win) for r in s.history) for s in risky}
    assert len(keys) == 20
    again = state_population(20, "risky", seed=3)
    assert [s.balance for s in again] == [s.balance for s in risky]
    with pytest.raises(ConfigError):
        state_population(3, "medium")


# sha256[:16] of the states below, computed with corpus.random_state and states._random_play
# as they were before random_play became their one generator
CORPUS_DIGEST = "c916419150b4ddbb"
POPULATION_DIGEST = "bbfc168a4b640b9f"


def _history_digest(states) -> str:
    import hashlib

    text = repr([(s.config.bet_type, s.seed, s.balance, s.ended,
                  [(r.bet, r.win, r.balance) for r in s.history]) for s in states])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_both_state_generators_are_pinned() -> None:
    """The SAE corpus (corpus.random_state) and the prompt populations (state_population) share
    one generator of random play but keep their own draws: their states are pinned to what they
    were before they shared it (digests computed with the two separate generators), so the
    trained SAEs' corpus and every planned prompt set stay bit-identical."""
    import random

    from featurepath.tasks.slot_machine.corpus import random_state
    from featurepath.tasks.slot_machine.states import state_population

    rng = random.Random(5)
    corpus = [random_state(rng, bt) for bt in ("variable", "fixed") * 20]
    assert _history_digest(corpus) == CORPUS_DIGEST
    pops = state_population(16, "safe", seed=1) + state_population(16, "risky", seed=1)
    assert _history_digest(pops) == POPULATION_DIGEST


def test_random_play_clamps_amounts_into_the_legal_range() -> None:
    from featurepath.tasks.slot_machine.states import random_play

    asked = []
    g = random_play("variable", seed=0, n_rounds=3,
                    amount=lambda lo, hi: asked.append((lo, hi)) or 1e9)
    assert asked[0] == (5.0, 100.0)  # min_bet, min(max_bet, balance)
    assert all(r.bet == hi for r, (_, hi) in zip(g.history, asked, strict=False))
    assert random_play("variable", 0, 1, lambda lo, hi: -3.0).history[0].bet == 5.0
    fixed = random_play("fixed", 0, 2, lambda lo, hi: pytest.fail("fixed games never ask"))
    assert [r.bet for r in fixed.history] == [10.0] * len(fixed.history)
