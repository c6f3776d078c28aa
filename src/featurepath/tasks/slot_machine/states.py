"""Populations of distinct game states, for stages that need many prompts of one context.

With one fixed prompt, decision-token activations are identical across trials and pathway tests
are degenerate; a population of prompts gives them variance to pair on. ``safe`` states are
fixed-bet games that are ahead (balance at least the start), like the study's safe prompt;
``risky`` states are variable-bet games that are behind after a loss, like its risky prompt.
States come from random legal play, seeded, so a population is reproducible.
"""

from __future__ import annotations

import numpy as np

from featurepath.errors import ConfigError
from featurepath.tasks.slot_machine.rules import GameConfig, GameState

CONTEXTS = ("safe", "risky")


def _random_play(rng: np.random.Generator, bet_type: str, seed: int) -> GameState:
    state = GameState(config=GameConfig(bet_type=bet_type), seed=seed)
    for _ in range(int(rng.integers(1, 8))):
        if state.ended:
            break
        if bet_type == "fixed":
            state.step("bet")
        else:
            lo, hi = state.bet_range()
            state.step(float(rng.choice([lo, min(10.0, hi), min(20.0, hi), hi,
                                         float(rng.integers(int(lo), int(hi) + 1))])))
    return state


def _fits(state: GameState, context: str) -> bool:
    if state.ended or not state.history:
        return False
    if context == "safe":
        return state.balance >= state.config.initial_balance
    return state.balance < state.config.initial_balance and not state.history[-1].win


def state_population(n: int, context: str, seed: int = 0, max_tries: int = 100_000
                     ) -> list[GameState]:
    """``n`` distinct states (distinct histories) of ``context``."""
    if context not in CONTEXTS:
        raise ConfigError(f"unknown context {context!r} for a state population; use "
                          f"{' or '.join(CONTEXTS)}")
    rng = np.random.default_rng([seed, CONTEXTS.index(context)])
    bet_type = "fixed" if context == "safe" else "variable"
    out: list[GameState] = []
    seen: set[tuple] = set()
    for _ in range(max_tries):
        if len(out) == n:
            return out
        st = _random_play(rng, bet_type, int(rng.integers(2**31)))
        key = tuple((r.bet, r.win, r.balance) for r in st.history)
        if _fits(st, context) and key not in seen:
            seen.add(key)
            out.append(st)
    raise ConfigError(f"could not draw {n} distinct {context} game states; ask for fewer")
