"""Residual-stream activations at the output of chosen decoder blocks, for SAE training and
evaluation.

One forward pass serves every requested layer: a forward hook on each chosen block copies the
block output (never ``output_hidden_states``, whose last entry has the final norm applied), and
the pass is cut short after the deepest chosen block, so the layers above it and the LM head
(a quarter of the compute of a 135M model with a 49k vocabulary) are never run.

Padding positions are dropped. The first real token of each text is dropped too by default: in
LLaMA-family models it is an attention sink whose residual norm is tens of times the others, and
a handful of such outliers would dominate an SAE's squared-error loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from featurepath.models import decoder_blocks


class _StopForward(Exception):
    """Raised by the deepest hook: everything after that block is wasted work."""


def block_hidden(output: Any) -> torch.Tensor:
    """The hidden state in a block's output (a tensor, or a tuple whose [0] is the tensor)."""
    return output[0] if isinstance(output, tuple) else output


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _length_order(tok: Any, texts: Sequence[str], max_length: int) -> list[int]:
    """Texts sorted by token count (longest first), so a batch pads little and a too-long batch
    fails at once rather than at the end."""
    lengths = [min(len(ids), max_length) for ids in
               tok(list(texts), add_special_tokens=True, truncation=True,
                   max_length=max_length)["input_ids"]]
    return sorted(range(len(texts)), key=lambda i: (-lengths[i], i))


def collect_activations(model: Any, tok: Any, texts: Sequence[str], layers: Sequence[int],
                        batch_size: int = 16, max_length: int = 256,
                        device: str | torch.device | None = None, skip_first: bool = True,
                        progress: bool = True, desc: str = "collecting activations",
                        ) -> dict[int, torch.Tensor]:
    """Block-output activations ``{layer: Tensor[n_tokens, d_model]}`` (float32, on CPU).

    Rows are the non-padding token positions of every text (minus each text's first token when
    ``skip_first``), in a fixed order, identical for every layer, so row i of each layer is the
    same token. ``device`` defaults to the model's device.
    """
    from tqdm.auto import tqdm

    layers = sorted({int(layer) for layer in layers})
    blocks = decoder_blocks(model)
    if not layers:
        return {}
    bad = [layer for layer in layers if not 0 <= layer < len(blocks)]
    if bad:
        from featurepath.errors import ConfigError

        raise ConfigError(f"layer(s) {bad} out of range: the model has {len(blocks)} blocks "
                          f"(0..{len(blocks) - 1})")
    device = torch.device(device) if device is not None else model_device(model)
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    if not texts:
        d = int(model.config.hidden_size)
        return {layer: torch.zeros(0, d) for layer in layers}
    deepest = layers[-1]
    keep: dict[str, torch.Tensor] = {}

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            h = block_hidden(output)
            out[layer].append(h[keep["mask"]].detach().to("cpu", torch.float32))
            if layer == deepest:
                raise _StopForward
        return hook

    handles = [blocks[layer].register_forward_hook(make_hook(layer)) for layer in layers]
    order = _length_order(tok, texts, max_length)
    pad_side = getattr(tok, "padding_side", "right")
    try:
        tok.padding_side = "left"
        with torch.inference_mode(), tqdm(total=len(order), desc=desc, unit="text",
                                          disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                chunk = [texts[i] for i in order[start:start + batch_size]]
                enc = tok(chunk, return_tensors="pt", padding=True, truncation=True,
                          max_length=max_length)
                mask = enc["attention_mask"].bool()
                if skip_first:
                    first = mask.int().argmax(dim=1)
                    mask[torch.arange(mask.shape[0]), first] = False
                keep["mask"] = mask.to(device)
                try:
                    model(input_ids=enc["input_ids"].to(device),
                          attention_mask=enc["attention_mask"].to(device), use_cache=False)
                except _StopForward:
                    pass
                bar.update(len(chunk))
                bar.set_postfix(tokens=sum(t.shape[0] for t in out[deepest]), refresh=False)
    finally:
        tok.padding_side = pad_side
        for h in handles:
            h.remove()
    return {layer: torch.cat(chunks) for layer, chunks in out.items()}
