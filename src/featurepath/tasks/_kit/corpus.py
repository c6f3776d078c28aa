"""The SAE-training corpus of a task: its prompts as the model reads them, each followed by an
answer the model samples, plus a few general sentences so that features for ordinary text exist
too (see ``tasks/slot_machine/corpus.py`` for why). Deterministic given the seed."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch

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


def assemble_corpus(model: Any, tok: Any, prompts: list[str], gen_tokens: int, seed: int,
                    answered_fraction: float, progress: bool) -> list[str]:
    """The first ``answered_fraction`` of ``prompts`` followed by the model's sampled answer,
    the rest as they are, then :data:`GENERAL_TEXTS`."""
    n_prompts = len(prompts)
    n_answer = round(n_prompts * answered_fraction) if gen_tokens > 0 else 0
    answers = generate_answers(model, tok, prompts[:n_answer], gen_tokens, seed,
                               progress=progress) if n_answer else []
    texts = [p + a for p, a in zip(prompts[:n_answer], answers, strict=True)]
    texts += prompts[n_answer:]
    return texts + list(GENERAL_TEXTS)


def task_prompts(task: Any, tok: Any, n_prompts: int, seed: int,
                 random_state: Callable[[random.Random, str], Any]) -> list[str]:
    """``n_prompts`` rendered prompts of ``task`` (half completion, half chat when the
    tokenizer has a chat template), conditions, bet types and states drawn at random."""
    rng = random.Random(seed)
    letters = "".join(task.components)
    conditions = [""] + [c for c in letters] + [letters]
    has_chat = bool(getattr(tok, "chat_template", None))
    out: list[str] = []
    for i in range(n_prompts):
        components, bet_type = rng.choice(conditions), rng.choice(["fixed", "variable"])
        protocol = "chat" if has_chat and i % 2 == 1 else "completion"
        state = random_state(rng, bet_type)
        out.append(task.render(task.build_prompt(state, components, protocol), tok))
    return out
