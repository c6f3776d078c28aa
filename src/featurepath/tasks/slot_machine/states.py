"""Populations of distinct game states, for stages that need many prompts of one context.

With one fixed prompt, decision-token activations are identical across trials and pathway tests
are degenerate; a population of prompts gives them variance to pair on. ``safe`` states are
fixed-bet games that are ahead (balance at least the start), like the study's safe prompt;
``risky`` states are variable-bet games that are behind after a loss, like its risky prompt.
States come from random legal play, seeded, so a population is reproducible.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np

from featurepath.errors import ConfigError
from featurepath.tasks.slot_machine.rules import GameConfig, GameState

CONTEXTS = ("safe", "risky")


def random_play(bet_type: str, seed: int, n_rounds: int,
                amount: Callable[[float, float], float]) -> GameState:
    """A game of ``bet_type`` (outcomes from ``seed``) after up to ``n_rounds`` rounds of random
    legal play, fewer when it ends: a fixed game bets, a variable game bets ``amount(lo, hi)``
    clamped into the legal range ``[lo, hi]``.

    The one generator of random game states: the state populations below and the SAE training
    corpus (:func:`featurepath.tasks.slot_machine.corpus.random_state`) both call it, each with
    its own draws of ``seed``, ``n_rounds`` and ``amount`` (which keep their populations and
    corpus exactly as before)."""
    state = GameState(config=GameConfig(bet_type=bet_type), seed=seed)
    for _ in range(n_rounds):
        if state.ended:
            break
        if bet_type == "fixed":
            state.step("bet")
        else:
            lo, hi = state.bet_range()
            state.step(float(min(max(amount(lo, hi), lo), hi)))
    return state


def _population_play(rng: np.random.Generator, bet_type: str) -> GameState:
    """1-7 rounds; variable bets: the minimum, 10, 20, everything, or a whole amount between."""
    return random_play(bet_type, int(rng.integers(2**31)), int(rng.integers(1, 8)),
                       lambda lo, hi: float(rng.choice([
                           lo, min(10.0, hi), min(20.0, hi), hi,
                           float(rng.integers(int(lo), int(hi) + 1))])))


def _fits(state: GameState, context: str) -> bool:
    if state.ended or not state.history:
        return False
    if context == "safe":
        return state.balance >= state.config.initial_balance
    return state.balance < state.config.initial_balance and not state.history[-1].win


def iter_states(context: str, seed: int = 0, max_tries: int = 100_000) -> Iterator[GameState]:
    """Distinct states (distinct histories) of ``context``, in a fixed order, lazily: the first
    ``n`` are :func:`state_population`'s ``n``, so a consumer that keeps only some of them (the
    held-out split) reads on until it has enough."""
    if context not in CONTEXTS:
        raise ConfigError(f"unknown context {context!r} for a state population; use "
                          f"{' or '.join(CONTEXTS)}")
    rng = np.random.default_rng([seed, CONTEXTS.index(context)])
    bet_type = "fixed" if context == "safe" else "variable"
    seen: set[tuple] = set()
    for _ in range(max_tries):
        st = _population_play(rng, bet_type)
        key = tuple((r.bet, r.win, r.balance) for r in st.history)
        if _fits(st, context) and key not in seen:
            seen.add(key)
            yield st


def state_population(n: int, context: str, seed: int = 0, max_tries: int = 100_000
                     ) -> list[GameState]:
    """``n`` distinct states (distinct histories) of ``context``."""
    out = list(itertools.islice(iter_states(context, seed, max_tries), n))
    if len(out) < n:
        raise ConfigError(f"could not draw {n} distinct {context} game states; ask for fewer")
    return out
