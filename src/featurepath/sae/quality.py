"""How good an SAE is: reconstruction (FVU), sparsity (L0), dead features, and the cost to the
model of replacing its residual stream with the reconstruction (cross-entropy increase).

FVU alone can look fine while the reconstruction throws away the few directions the model relies
on; the loss increase is the check that matters for patching, because the ``reconstruct``
patching mode runs the model on exactly this reconstruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from featurepath.models import decoder_blocks
from featurepath.sae.collect import block_hidden, model_device
from featurepath.sae.model import SAE


@torch.inference_mode()
def sae_quality(sae: SAE, acts: torch.Tensor, chunk: int = 4096) -> dict[str, float]:
    """Figures on held-out activations ``acts [n_tokens, d_model]`` (raw residual units).

    - ``fvu``: fraction of variance unexplained, sum ||x - x_hat||² / sum ||x - mean(x)||²
      (0 is perfect; 1 is no better than always predicting the mean).
    - ``l0``: mean number of active features (``f != 0``) per token.
    - ``dead_fraction``: share of features never active on these tokens.
    """
    n = int(acts.shape[0])
    if n == 0:
        return {"fvu": float("nan"), "l0": float("nan"), "dead_fraction": float("nan"),
                "n_tokens": 0}
    dev = sae.W_enc.device
    sse = torch.zeros((), dtype=torch.float64)
    sum_x = torch.zeros(sae.d_model, dtype=torch.float64)
    sum_sq = torch.zeros((), dtype=torch.float64)
    active = torch.zeros((), dtype=torch.float64)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=dev)
    for start in range(0, n, chunk):
        x = acts[start:start + chunk].to(dev, sae.W_enc.dtype)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        sse += (x - x_hat).double().pow(2).sum().cpu()
        sum_x += x.double().sum(0).cpu()
        sum_sq += x.double().pow(2).sum().cpu()
        nz = f != 0
        active += nz.sum().double().cpu()
        fired |= nz.any(0)
    total_var = sum_sq - sum_x.pow(2).sum() / n  # sum ||x - mean||²
    return {"fvu": float(sse / total_var) if total_var > 0 else float("nan"),
            "l0": float(active / n),
            "dead_fraction": float(1.0 - fired.float().mean().item()),
            "n_tokens": n}


def _replace_hook(sae: SAE, mask_ref: dict[str, torch.Tensor]):
    """A forward hook that swaps the block output for its SAE reconstruction at the masked
    positions, keeping the output's type (tensor or tuple)."""

    def hook(_module, _inputs, output):
        h = block_hidden(output)
        recon = sae(h.to(sae.W_enc.dtype)).to(h.dtype)
        new = torch.where(mask_ref["mask"].unsqueeze(-1), recon, h)
        if isinstance(output, tuple):
            return (new, *output[1:])
        return new

    return hook


@torch.inference_mode()
def ce_losses(model: Any, tok: Any, sae: SAE, texts: Sequence[str], layer: int | None = None,
              batch_size: int = 8, max_length: int = 256,
              clean: dict[str, float] | None = None) -> dict[str, float]:
    """Mean next-token cross-entropy of the clean model and of the model whose block ``layer``
    output is replaced by the SAE reconstruction (``increase`` = patched - clean).

    The first real token of each text is left untouched: SAEs here are trained without that
    attention-sink position, whose norm is far outside their training range. ``clean``, the
    ``ce_clean``/``n_tokens`` of an earlier call on the same texts, skips the clean forwards
    (one clean pass serves every layer of a set).
    """
    layer = sae.layer if layer is None else layer
    if layer is None:
        raise ValueError("the SAE has no layer; pass layer=")
    block = decoder_blocks(model)[layer]
    device = model_device(model)
    sae = sae.to(device)
    totals = {"clean": 0.0, "patched": 0.0}
    count = 0
    mask_ref: dict[str, torch.Tensor] = {}
    pad_side = getattr(tok, "padding_side", "right")
    tok.padding_side = "left"
    try:
        for start in range(0, len(texts), batch_size):
            enc = tok(list(texts[start:start + batch_size]), return_tensors="pt", padding=True,
                      truncation=True, max_length=max_length)
            ids = enc["input_ids"].to(device)
            attn = enc["attention_mask"].to(device)
            mask = attn.bool()
            first = mask.int().argmax(dim=1)
            mask[torch.arange(mask.shape[0], device=device), first] = False
            mask_ref["mask"] = mask
            target_ok = attn[:, 1:].bool() & attn[:, :-1].bool()
            targets = ids[:, 1:]
            for name in ("patched",) if clean is not None else ("clean", "patched"):
                handle = block.register_forward_hook(_replace_hook(sae, mask_ref)) \
                    if name == "patched" else None
                try:
                    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
                finally:
                    if handle is not None:
                        handle.remove()
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                totals[name] += float(nll[target_ok].sum())
            count += int(target_ok.sum())
    finally:
        tok.padding_side = pad_side
    ce_clean = clean["ce_clean"] if clean is not None else totals["clean"] / max(count, 1)
    patched = totals["patched"] / max(count, 1)
    return {"ce_clean": ce_clean, "ce_patched": patched, "increase": patched - ce_clean,
            "n_tokens": count}


def loss_increase(model: Any, tok: Any, sae: SAE, texts: Sequence[str],
                  layer: int | None = None, batch_size: int = 8, max_length: int = 256) -> float:
    """Increase in mean next-token cross-entropy (nats) when the SAE reconstruction replaces
    the output of block ``layer`` (default: the SAE's layer); see :func:`ce_losses`."""
    return ce_losses(model, tok, sae, texts, layer, batch_size, max_length)["increase"]


def measure_quality(model: Any, tok: Any, sae: SAE, texts: Sequence[str]) -> dict[str, Any]:
    """FVU, L0, dead fraction and cross-entropy increase of ``sae`` on ``texts`` (prompts only,
    nothing generated)."""
    from featurepath.sae.collect import collect_activations

    acts = collect_activations(model, tok, list(texts), [sae.layer], progress=False)[sae.layer]
    q: dict[str, Any] = sae_quality(sae, acts)
    ce = ce_losses(model, tok, sae, list(texts))
    q.update(ce_clean=ce["ce_clean"], ce_patched=ce["ce_patched"],
             loss_increase=ce["increase"])
    return q
