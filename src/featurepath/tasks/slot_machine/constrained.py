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

from featurepath.tasks._kit.constrained import (
    AMOUNT_PREFIX,
    MAX_DIGITS,
    MenuAnswer,
    cached_constraints,
)
from featurepath.tasks.slot_machine.readout import option_token_ids

__all__ = ["AMOUNT_PREFIX", "MAX_DIGITS", "OptionAnswer", "answer_constraints"]


class OptionAnswer(MenuAnswer):
    """``allowed(tokens_so_far) -> token ids`` for one row; ``[eos]`` when the answer is done.
    Option "1" (bet) takes an amount under variable betting, option "2" (stop) ends at once."""

    def __init__(self, tokenizer: Any, bet_type: str, min_bet: float = 5.0,
                 max_bet: float = 100.0, balance: float | None = None):
        super().__init__(tokenizer, option_token_ids(tokenizer), ["bet"], bet_type, min_bet,
                         max_bet, balance)


def answer_constraints(tokenizer: Any, rows: list[dict[str, Any]], mode: str) -> list | None:
    """Per-row constraints for ``generate`` (``None`` in free mode); each row is a prompt's
    parser keyword arguments (``bet_type``, ``balance``, ``min_bet``, ``max_bet``)."""
    return cached_constraints(rows, mode, lambda key: OptionAnswer(tokenizer, *key),
                              (5.0, 100.0))
