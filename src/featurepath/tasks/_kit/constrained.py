"""Constrained answers for menu games: the model's own probabilities, only over answers the
game can read (see ``tasks/slot_machine/constrained.py`` for why small models need them).

The first token is drawn from the option tokens only (the same distribution P(exit) reads); a
risky option under variable betting continues with ``"\\nAmount: $"`` and digits drawn from the
digit tokens that can still spell a legal amount; everything else ends at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

AMOUNT_PREFIX = "\nAmount: $"
MAX_DIGITS = 3


class MenuAnswer:
    """``allowed(tokens_so_far) -> token ids`` for one row; ``[eos]`` when the answer is done."""

    def __init__(self, tokenizer: Any, option_ids: Mapping[str, list[int]],
                 amount_actions: Iterable[str], bet_type: str, min_bet: float,
                 max_bet: float, balance: float | None):
        self.first = sorted({i for ids in option_ids.values() for i in ids})
        self.amount_ids = {i for a in amount_actions for i in option_ids[a]}
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
        if not self.variable or tokens[0] not in self.amount_ids:
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


def cached_constraints(rows: list[dict[str, Any]], mode: str,
                       make: Callable[[tuple], Any], defaults: tuple[float, float]
                       ) -> list | None:
    """One constraint object per distinct ``(bet_type, min_bet, max_bet, balance)`` of the
    rows (``None`` in free mode); ``defaults`` are the min and max bet a row may leave out."""
    if mode == "free":
        return None
    cache: dict[tuple, Any] = {}
    out = []
    for r in rows:
        key = (r["bet_type"], r.get("min_bet", defaults[0]), r.get("max_bet", defaults[1]),
               r.get("balance"))
        if key not in cache:
            cache[key] = make(key)
        out.append(cache[key])
    return out
