"""The text featurepath trains its own SAEs on: the slot-machine game, as the model reads and
writes it.

An SAE only has features for what its training activations contain. The pipeline reads features
at game prompts and at the model's answers, so the corpus is made of exactly those: varied game
states (random histories, balances, prompt components, fixed and variable betting, completion
and chat protocols) rendered by :mod:`featurepath.tasks.slot_machine`, each followed by an answer
the model itself samples, plus a few general sentences so that features for ordinary text
exist too. Everything is deterministic given the seed.
"""

from __future__ import annotations

import random
from typing import Any

from featurepath.tasks._kit.corpus import (  # noqa: F401 (GENERAL_TEXTS re-exported)
    GENERAL_TEXTS,
    assemble_corpus,
    generate_answers,
)
from featurepath.tasks.slot_machine import (
    GameState,
    all_conditions,
    build_prompt,
    render,
)
from featurepath.tasks.slot_machine.states import random_play


def random_state(rng: random.Random, bet_type: str) -> GameState:
    """A game in progress after 0-9 rounds of random but legal play (see
    :func:`~featurepath.tasks.slot_machine.states.random_play`); a game that went bankrupt is
    mostly redrawn, so the corpus holds few finished games."""
    seed = rng.randrange(2**31)
    n_rounds = rng.choice([0, 1, 2, 3, 3, 4, 5, 6, 7, 9])
    state = random_play(bet_type, seed, n_rounds, lambda lo, hi: rng.choice(
        [lo, 10, 20, 25, 50, hi, rng.randint(int(lo), int(hi))]))
    if state.ended:  # went bankrupt: start over with a shorter history
        return random_state(rng, bet_type) if rng.random() < 0.9 else state
    return state


def game_prompts(tok: Any, n_prompts: int, seed: int = 0) -> list[str]:
    """``n_prompts`` rendered game prompts (half completion, half chat when the tokenizer has a
    chat template), conditions and states drawn at random."""
    rng = random.Random(seed)
    conditions = all_conditions()
    has_chat = bool(getattr(tok, "chat_template", None))
    out: list[str] = []
    for i in range(n_prompts):
        components, bet_type = rng.choice(conditions)
        protocol = "chat" if has_chat and i % 2 == 1 else "completion"
        state = random_state(rng, bet_type)
        out.append(render(build_prompt(state, components, protocol), tok))
    return out


def default_corpus(model: Any, tok: Any, n_prompts: int = 192, gen_tokens: int = 48,
                   seed: int = 0, answered_fraction: float = 1.0,
                   progress: bool = True) -> list[str]:
    """Game prompts, the first ``answered_fraction`` of them followed by the model's own sampled
    answer, then the general sentences. Deterministic given ``seed`` (and the model)."""
    return assemble_corpus(model, tok, game_prompts(tok, n_prompts, seed), gen_tokens, seed,
                           answered_fraction, progress)
