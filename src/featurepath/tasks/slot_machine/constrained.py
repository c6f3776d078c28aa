"""Constrained answers for the completion protocol: the model's own probabilities, but only
over answers the game can read.

A 135M model asked "Choice: " often writes "3)" or invents a menu, so most free answers are
invalid and games end before they mean anything. In constrained mode the first token is drawn
from the option tokens only ("1" bet, "2" stop, renormalised — the same distribution P(stop)
reads), and a variable bet continues with "\\nAmount: $" and one to three digits drawn from the
digit tokens. The decision and the amount are still sampled from the model; only unreadable
continuations are ruled out. Out-of-range amounts stay possible and are judged by the parser.
"""

from __future__ import annotations

from typing import Any

from featurepath.tasks.slot_machine.readout import option_token_ids

AMOUNT_PREFIX = "\nAmount: $"
MAX_DIGITS = 3


class OptionAnswer:
    """``allowed(tokens_so_far) -> token ids`` for one row; ``[eos]`` when the answer is done."""

    def __init__(self, tokenizer: Any, bet_type: str):
        ids = option_token_ids(tokenizer)
        self.first = sorted(set(ids["bet"]) | set(ids["stop"]))
        self.bet = set(ids["bet"])
        self.variable = bet_type == "variable"
        self.prefix = tokenizer.encode(AMOUNT_PREFIX, add_special_tokens=False)
        digits = []
        for d in "0123456789":
            enc = tokenizer.encode(d, add_special_tokens=False)
            if len(enc) != 1:
                raise ValueError(f"constrained answers need single-token digits; {d!r} is "
                                 f"{len(enc)} tokens")
            digits.append(enc[0])
        self.digits = digits
        self.eos = int(tokenizer.eos_token_id)

    def allowed(self, tokens: list[int]) -> list[int]:
        n = len(tokens)
        if n == 0:
            return self.first
        if not self.variable or tokens[0] not in self.bet:
            return [self.eos]
        k = n - 1
        if k < len(self.prefix):
            return [self.prefix[k]]
        n_digits = k - len(self.prefix)
        if n_digits == 0:
            return self.digits[1:]  # no leading zero
        if n_digits < MAX_DIGITS:
            return self.digits + [self.eos]
        return [self.eos]


def answer_constraints(tokenizer: Any, bet_types: list[str], mode: str) -> list | None:
    """Per-row constraints for ``generate``: ``None`` in free mode."""
    if mode == "free":
        return None
    cache: dict[str, OptionAnswer] = {}
    return [cache.setdefault(b, OptionAnswer(tokenizer, b)) for b in bet_types]
