"""The decision-token readout's gradient at chosen residual-stream sites, in one backward pass.

Why: attribution patching (the screen stage) estimates the effect of adding ``δ`` to the
residual after decoder block L at the decision token as ``δ · ∂readout/∂h_L``. One forward and
one backward pass per prompt batch give that gradient at every SAE layer at once, so every
feature of every layer is scored for the price of about three forward passes.

Task-free like the rest of the engine: the readout (``logits [rows, vocab] -> [rows]``) is
passed in. The site is the one the patch hooks write: the output of decoder block L at the
last prompt token (prompts are left-padded, as in :func:`~featurepath.engine.generate.replay`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from featurepath.engine.generate import Readout, _encode, _positions
from featurepath.models import decoder_blocks


@dataclass
class ReadoutGradients:
    """One prompt batch: the readout per prompt ``[n]``, and at each of ``layers`` the residual
    ``[n, len(layers), d_model]`` and the readout's gradient with respect to it (same shape),
    both at the decision token, in float32 on the model's device."""

    layers: list[int]
    readout: torch.Tensor
    residual: torch.Tensor
    grad: torch.Tensor


def readout_gradients(model, tok, prompts: Sequence[str], layers: Sequence[int],
                      readout: Readout) -> ReadoutGradients:
    """Forward the batch, read ``readout`` from the decision token's logits, and backpropagate
    it to the output of each decoder block in ``layers`` at the decision token.

    The lowest block's output is made a leaf of the graph, so the backward pass stops there
    (nothing below it is needed) and no parameter gradient is ever computed, whether or not
    the model's parameters require grad. Rows are independent, so the gradient of the batch's
    summed readout with respect to row r's residual is row r's own gradient.
    """
    layers = sorted(set(int(x) for x in layers))
    blocks = decoder_blocks(model)
    for layer in layers:
        if not 0 <= layer < len(blocks):
            raise ValueError(f"layer {layer} is beyond the model's {len(blocks)} blocks")
    device = next(model.parameters()).device
    got: dict[int, torch.Tensor] = {}
    low = layers[0]

    def make_hook(layer: int):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            if layer == low:
                h = h.detach().requires_grad_(True)
            got[layer] = h
            if layer != low:
                return None
            return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h

        return hook

    ids, mask = _encode(tok, prompts, device)
    handles = [blocks[layer].register_forward_hook(make_hook(layer)) for layer in layers]
    try:
        with torch.enable_grad():
            out = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask),
                        use_cache=False, logits_to_keep=1)
            value = readout(out.logits[:, -1].float())
            hs = [got[layer] for layer in layers]
            grads = torch.autograd.grad(value.sum(), hs, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    res = torch.stack([h[:, -1].detach().float() for h in hs], 1)
    grad = torch.stack([torch.zeros_like(h[:, -1], dtype=torch.float32) if g is None
                        else g[:, -1].float() for h, g in zip(hs, grads, strict=True)], 1)
    return ReadoutGradients(layers, value.detach().float(), res, grad)
