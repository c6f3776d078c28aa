"""P(stop) read from the decision token's logits.

Sampling 30 responses per condition measures the stop rate with +-9 points of noise; the next-token
distribution after ``Choice: `` gives the same quantity exactly from one forward pass. Tokenizers
spell the option digits several ways ("1", " 1", "Ġ1", "▁1"), so every single-token spelling is
collected and their probability mass pooled.
"""

from __future__ import annotations

from typing import Any

import torch

from featurepath.tasks.base import digit_token_ids, p_exit_from_logits

_OPTIONS = {"bet": "1", "stop": "2"}


def option_token_ids(tokenizer: Any) -> dict[str, list[int]]:
    """``{"bet": [...], "stop": [...]}``: ids of every single-token spelling of "1" and "2".

    Spellings come from encoding "1", " 1", "\\n1" without special tokens (kept only when they
    are one token) and from the vocabulary entries "1", "Ġ1", "▁1". Raises ``ValueError`` if an
    option has no single-token spelling, since P(stop) would silently be wrong.
    """
    return digit_token_ids(tokenizer, _OPTIONS)


def p_stop_readout(tokenizer: Any):
    """The engine's readout for this task: ``logits [rows, vocab] -> P(stop) [rows]``, or None
    when the tokenizer has no single-token option digits (P(stop) is then NaN)."""
    try:
        ids = option_token_ids(tokenizer)
    except ValueError:
        return None
    return lambda logits: p_stop_from_logits(logits, ids)


def p_stop_from_logits(logits: torch.Tensor, ids: dict[str, list[int]]) -> torch.Tensor:
    """P(stop | the next token is an option) = mass on stop ids / mass on bet + stop ids.

    Computed as ``sigmoid(logsumexp(stop) - logsumexp(bet))`` in float32: the softmax
    normaliser cancels, so no full-vocabulary softmax is needed and extreme logits cannot
    overflow. ``logits`` is ``[..., vocab]``; the result is ``[...]``.
    """
    return p_exit_from_logits(logits, ids, "stop")
