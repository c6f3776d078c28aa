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

import torch

from featurepath.tasks.slot_machine import (
    GameState,
    all_conditions,
    build_prompt,
    render,
)
from featurepath.tasks.slot_machine.states import random_play

GENERAL_TEXTS: tuple[str, ...] = (
    "The river rose after three days of rain, and the village moved its boats to higher ground.",
    "To make bread, mix flour, water, salt and yeast, then let the dough rest for an hour.",
    "In 1969 two astronauts walked on the Moon while a third orbited above them.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "She checked her bank account and decided to save half of her salary this month.",
    "A good habit is easier to keep when it is small, specific and tied to a daily routine.",
    "The committee will meet on Tuesday to review the budget and vote on the new proposal.",
    "Prime numbers have exactly two divisors: one and themselves. 2, 3, 5, 7 and 11 are prime.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Investors who chase losses often take bigger risks than they planned to.",
    "The museum opens at nine and closes at five, except on public holidays.",
    "He rolled the dice twice, lost both times, and walked away from the table.",
    "Q: What is the capital of France?\nA: The capital of France is Paris.",
    "Probability measures how likely an event is, from 0 (impossible) to 1 (certain).",
    "The recipe calls for two eggs, a cup of sugar and a pinch of cinnamon.",
    "After the storm, volunteers cleared the roads and repaired the school roof.",
)


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


@torch.inference_mode()
def generate_answers(model: Any, tok: Any, prompts: list[str], gen_tokens: int, seed: int = 0,
                     batch_size: int = 32, temperature: float = 0.9,
                     progress: bool = True) -> list[str]:
    """Sampled continuations (decoded, special tokens dropped) of each prompt; batched with left
    padding, each batch seeded from ``seed`` and its index, so the answers do not depend on
    anything run before."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    pad_side = tok.padding_side
    tok.padding_side = "left"
    answers: list[str] = []
    try:
        for b, start in enumerate(tqdm(range(0, len(prompts), batch_size), desc="generating",
                                       unit="batch", disable=not progress)):
            batch = prompts[start:start + batch_size]
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1_000_003 + b)
                out = model.generate(input_ids=enc["input_ids"].to(device),
                                     attention_mask=enc["attention_mask"].to(device),
                                     max_new_tokens=gen_tokens, do_sample=True,
                                     temperature=temperature, top_p=0.95, top_k=50,
                                     pad_token_id=tok.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            answers.extend(tok.batch_decode(new, skip_special_tokens=True))
    finally:
        tok.padding_side = pad_side
    return answers


def default_corpus(model: Any, tok: Any, n_prompts: int = 192, gen_tokens: int = 48,
                   seed: int = 0, answered_fraction: float = 1.0,
                   progress: bool = True) -> list[str]:
    """Game prompts, the first ``answered_fraction`` of them followed by the model's own sampled
    answer, then the general sentences. Deterministic given ``seed`` (and the model)."""
    prompts = game_prompts(tok, n_prompts, seed)
    n_answer = round(n_prompts * answered_fraction) if gen_tokens > 0 else 0
    answers = generate_answers(model, tok, prompts[:n_answer], gen_tokens, seed,
                               progress=progress) if n_answer else []
    texts = [p + a for p, a in zip(prompts[:n_answer], answers, strict=True)]
    texts += prompts[n_answer:]
    return texts + list(GENERAL_TEXTS)
