"""Constrained answers for the completion protocol: the model's own probabilities, but only
over answers the game can read.

A 135M model asked "Choice: " often writes "3)" or invents a menu, so most free answers are
invalid and games end before they mean anything. In constrained mode the first token is drawn
from the option tokens only ("1" bet, "2" stop, renormalised — the same distribution P(stop)
reads), and a variable bet continues with "\\nAmount: $" and digits drawn from the digit tokens
that can still spell a legal amount (between the minimum bet and the smaller of the maximum bet
and the balance). The decision and the amount are still sampled from the model; only answers the
game could not read or accept are ruled out.
"""

from __future__ import annotations

from typing import Any

from featurepath.tasks.slot_machine.readout import option_token_ids

AMOUNT_PREFIX = "\nAmount: $"
MAX_DIGITS = 3


class OptionAnswer:
    """``allowed(tokens_so_far) -> token ids`` for one row; ``[eos]`` when the answer is done."""

    def __init__(self, tokenizer: Any, bet_type: str, min_bet: float = 5.0,
                 max_bet: float = 100.0, balance: float | None = None):
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
        self.lo = int(-(-min_bet // 1))
        hi = max_bet if balance is None else min(max_bet, balance)
        self.hi = int(hi // 1)
        self.max_digits = max(1, min(MAX_DIGITS, len(str(max(self.hi, 1)))))

    def _can_reach(self, prefix: str) -> bool:
        """Can ``prefix`` (digits) be completed to an amount in [lo, hi]?"""
        for extra in range(0, self.max_digits - len(prefix) + 1):
            low, high = int(prefix + "0" * extra), int(prefix + "9" * extra)
            if low <= self.hi and high >= self.lo:
                return True
        return False

    def allowed(self, tokens: list[int]) -> list[int]:
        n = len(tokens)
        if n == 0:
            return self.first
        if not self.variable or tokens[0] not in self.bet:
            return [self.eos]
        k = n - 1
        if k < len(self.prefix):
            return [self.prefix[k]]
        digits = [self.digits.index(t) for t in tokens[1 + len(self.prefix):]]
        sofar = "".join(str(d) for d in digits)
        allowed = [self.digits[d] for d in range(10)
                   if (sofar or d > 0) and len(sofar) < self.max_digits
                   and self._can_reach(sofar + str(d))]
        if sofar and self.lo <= int(sofar) <= self.hi:
            allowed.append(self.eos)
        return allowed or [self.eos]


def answer_constraints(tokenizer: Any, rows: list[dict[str, Any]], mode: str) -> list | None:
    """Per-row constraints for ``generate`` (``None`` in free mode); each row is a prompt's
    parser keyword arguments (``bet_type``, ``balance``, ``min_bet``, ``max_bet``)."""
    if mode == "free":
        return None
    cache: dict[tuple, OptionAnswer] = {}
    out = []
    for r in rows:
        key = (r["bet_type"], r.get("min_bet", 5.0), r.get("max_bet", 100.0), r.get("balance"))
        if key not in cache:
            cache[key] = OptionAnswer(tokenizer, key[0], key[1], key[2], key[3])
        out.append(cache[key])
    return out
