"""Decision-token readouts of many arms from one prefill per prompt.

Why: a confirmation's primary metric (the task's readout, e.g. P(stop)) is read at the decision
token, and a clamp at the decision token cannot change earlier positions. So every arm of a
prompt — the baseline, the feature clamp, hundreds of null directions — shares the prompt's
prefix (every token but the last): it is prefilled once, unpatched, and each arm costs one
single-token forward from that cache. A null draw of the readout is then one decision-token
forward per prompt, not a forward over the whole prompt (or ``trials`` sampled answers).

Rows are arms × prompts, cut into batches of at most ``max_rows``; every row carries its own
:class:`~featurepath.engine.hooks.Intervention`, applied by the same
:class:`~featurepath.engine.hooks.PatchRecorder` the patch stage uses, so a null arm here is
exactly the patch stage's null arm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

from featurepath.engine.generate import Readout, _encode, _forward, _positions
from featurepath.engine.hooks import CallState, Intervention, PatchRecorder
from featurepath.sae.model import SAE


class DecisionPrefix:
    """The prompts' prefixes (every token but the last), prefilled once, unpatched, in groups
    of ``prompt_batch``; :meth:`readouts` then runs any number of arms from them. Keep one per
    prompt set for a whole confirmation: on a CPU the prefill of 24 game prompts on
    SmolLM2-135M costs as much as hundreds of decision-token rows."""

    @torch.no_grad()
    def __init__(self, model, tok, prompts: Sequence[str], prompt_batch: int = 32) -> None:
        self.model, self.n = model, len(prompts)
        self.device = next(model.parameters()).device
        self.groups: list[tuple[int, torch.Tensor, torch.Tensor, Any]] = []
        for p0 in range(0, len(prompts), prompt_batch):
            ids, mask = _encode(tok, list(prompts[p0:p0 + prompt_batch]), self.device)
            cache = None
            if ids.shape[1] > 1:
                _, cache = _forward(model, ids[:, :-1], mask[:, :-1], _positions(mask[:, :-1]),
                                    None)
            self.groups.append((p0, ids, mask, cache))

    @torch.no_grad()
    def readouts(self, arms: Sequence[Intervention | None], saes: dict[int, SAE],
                 readout: Readout, max_rows: int = 256,
                 on_batch: Callable[[int], None] | None = None,
                 max_cache_bytes: int = 1 << 30) -> torch.Tensor:
        """``[len(arms), n_prompts]``: ``readout`` of the decision token's logits with arm
        ``a`` applied at the decision token of prompt ``i``. Interventions must write at the
        decision token only (``positions`` ``prompt`` or ``last``; ``all`` would change the
        prefix). ``on_batch(rows)`` is called after every forward batch (progress). A batch
        holds at most ``max_cache_bytes`` of repeated prefix cache (SmolLM2-135M: ~18 MB per
        400-token row in float32, so 256 rows would be 4.7 GB)."""
        for iv in arms:
            if iv is not None and iv.positions == "all":
                raise ValueError("decision readouts need interventions at the decision token "
                                 "(positions 'prompt' or 'last'), not 'all'")
        device, model = self.device, self.model
        out = torch.full((len(arms), self.n), float("nan"))
        for p0, ids, mask, cache in self.groups:
            g = ids.shape[0]
            per_row = _cache_bytes(cache) // g
            per = max(1, min(max_rows, max_cache_bytes // max(per_row, 1)) // g)
            for a0 in range(0, len(arms), per):
                chunk = list(arms[a0:a0 + per])
                n = len(chunk) * g
                index = torch.arange(g, device=device).repeat(len(chunk))
                rows_cache = _select(cache, index)
                rec = PatchRecorder(model, saes, [iv for iv in chunk for _ in range(g)])
                try:
                    with rec:
                        rec.state = CallState(
                            torch.arange(n), torch.zeros(n, dtype=torch.long, device=device),
                            torch.zeros(n, 1, dtype=torch.bool, device=device),
                            torch.ones(n, 1, dtype=torch.bool, device=device), prefill=True,
                            has_decision=True, has_gen=False)
                        m = mask[index]
                        logits, _ = _forward(model, ids[index][:, -1:], m,
                                             m.long().sum(-1, True) - 1, rows_cache)
                        rec.state = None
                finally:
                    _restore(cache, rows_cache)
                vals = readout(logits.float()).float().cpu().view(len(chunk), g)
                out[a0:a0 + len(chunk), p0:p0 + g] = vals
                if on_batch is not None:
                    on_batch(n)
        return out


def decision_readouts(model, tok, prompts: Sequence[str],
                      arms: Sequence[Intervention | None], saes: dict[int, SAE],
                      readout: Readout, max_rows: int = 256, prompt_batch: int = 32,
                      on_batch: Callable[[int], None] | None = None,
                      max_cache_bytes: int = 1 << 30) -> torch.Tensor:
    """One-off :class:`DecisionPrefix` ``(prompts).readouts(arms, ...)``."""
    return DecisionPrefix(model, tok, prompts, prompt_batch).readouts(
        arms, saes, readout, max_rows, on_batch, max_cache_bytes)


def _cache_bytes(cache) -> int:
    layers = getattr(cache, "layers", None) or []
    return sum(t.numel() * t.element_size() for la in layers
               for t in (getattr(la, "keys", None), getattr(la, "values", None))
               if isinstance(t, torch.Tensor))


def _select(cache, index: torch.Tensor):
    """The prefix cache with its rows repeated for a batch of arms. A plain ``DynamicLayer``
    never writes into its tensors (it concatenates), so the prefix tensors are kept aside and
    put back after the batch; other cache kinds are deep-copied."""
    if cache is None:
        return None
    layers = getattr(cache, "layers", None)
    if layers is not None and all(type(la) is DynamicLayer for la in layers):
        cache._featurepath_prefix = [(la.keys, la.values) for la in layers]
        cache.batch_select_indices(index)
        return cache
    import copy

    rows = copy.deepcopy(cache)
    rows.batch_select_indices(index)
    return rows


def _restore(cache, used) -> None:
    prefix = getattr(cache, "_featurepath_prefix", None)
    if cache is None or used is not cache or prefix is None:
        return
    for la, (k, v) in zip(cache.layers, prefix, strict=True):
        la.keys, la.values = k, v
    del cache._featurepath_prefix


__all__ = ["DecisionPrefix", "decision_readouts"]
