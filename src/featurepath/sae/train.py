"""Training TopK sparse autoencoders on residual-stream activations.

No public SAEs exist for the embedded model, so featurepath trains its own. The recipe follows
Gao et al. 2024, "Scaling and evaluating sparse autoencoders" (arXiv:2406.04093):

- TopK activation: exactly k features per token, so sparsity needs no L1 penalty to tune and
  activations are not shrunk towards zero.
- The input is centred by a pre-encoder bias ``b_dec`` (initialised to the geometric median of
  the data) and scaled so that a centred token has mean squared norm ``d_model``; the training
  loss is then the mean squared error divided by ``d_model``, close to the FVU.
- Encoder initialised to the transpose of the decoder; decoder rows kept at unit norm (the
  gradient component along each row is removed before every step, then rows are renormalised).
- AuxK loss against dead features: the ``aux_k`` largest pre-activations among features that
  have not fired for ``dead_tokens`` tokens are asked to reconstruct the main model's residual
  error, weighted by ``aux_coef`` (1/32 in the paper). It gives dead features a gradient and
  brings most of them back.

Speed: only the encoder is dense. The decoder reads just the k selected rows per token (an
``embedding_bag`` sum), so forward and backward through it cost O(k·d_model) per token instead
of O(d_sae·d_model); several thousand tokens per second on two CPU cores for d_sae = 4608.

The trained weights are folded back into raw residual units (see :mod:`featurepath.sae.model`):
decoder rows stay unit-norm directions, feature values are in residual-norm units.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from featurepath.errors import ConfigError
from featurepath.sae.model import SAE


@dataclass
class TrainConfig:
    """Hyper-parameters of one TopK SAE (the same for every layer of a set)."""

    expansion: int = 8
    """d_sae = expansion · d_model."""
    k: int = 32
    """Active features per token."""
    lr: float = 1e-3
    batch_size: int = 512
    epochs: float = 6.0
    """Passes over the training tokens (fractions allowed); ignored when ``steps`` is set."""
    steps: int | None = None
    seed: int = 0
    aux_k: int | None = None
    """Dead features used by the AuxK loss; default d_model // 2 (as in Gao et al.)."""
    aux_coef: float = 1.0 / 32.0
    dead_tokens: int = 20_000
    """A feature is dead for AuxK once it has not fired for this many training tokens."""
    lr_decay_fraction: float = 0.3
    """Linear decay of the learning rate to zero over this last fraction of the steps."""
    warmup_steps: int = 20

    def validate(self) -> None:
        if self.expansion < 1:
            raise ConfigError(f"expansion must be >= 1, got {self.expansion}")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if self.lr <= 0 or self.batch_size < 1:
            raise ConfigError("lr must be > 0 and batch_size >= 1")
        if self.steps is None and self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def geometric_median(x: torch.Tensor, iters: int = 40, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the summed Euclidean distance. A better centre
    than the mean for residual streams, whose few huge-norm tokens pull the mean."""
    x = x.double()
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(eps)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() < eps * (1.0 + y.norm()):
            y = y_new
            break
        y = y_new
    return y.float()


class _TopKTrainer(torch.nn.Module):
    """The trainable weights in normalised units (see module docstring)."""

    def __init__(self, d_model: int, d_sae: int, k: int, gen: torch.Generator,
                 b_dec: torch.Tensor):
        super().__init__()
        w = torch.randn(d_sae, d_model, generator=gen)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w)
        self.W_enc = torch.nn.Parameter(w.t().clone().contiguous())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(b_dec.clone())
        self.k = k

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def decode_sparse(self, idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """Sum of ``vals[b, j] · W_dec[idx[b, j]]`` without touching the other rows."""
        return F.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum")

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        g = self.W_dec.grad
        if g is not None:
            g -= (g * self.W_dec).sum(1, keepdim=True) * self.W_dec

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _normalised_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE divided by the target's variance around its batch mean: stays O(1) as the error
    it is fitting shrinks (used for the AuxK term)."""
    denom = (target - target.mean(0, keepdim=True)).pow(2).sum(1).mean().clamp_min(1e-12)
    return (pred - target).pow(2).sum(1).mean() / denom


def train_sae(acts: torch.Tensor, cfg: TrainConfig | None = None, layer: int | None = None,
              progress: bool = True, desc: str | None = None,
              meta: dict[str, Any] | None = None) -> SAE:
    """Train a TopK SAE on ``acts [n_tokens, d_model]`` (raw units); deterministic given
    ``cfg.seed`` on a given machine. Training statistics go to ``sae.meta["train"]``."""
    from tqdm.auto import tqdm

    cfg = cfg or TrainConfig()
    cfg.validate()
    if acts.ndim != 2 or acts.shape[0] < 2:
        raise ConfigError(f"need at least 2 activation rows of shape [n, d_model], got "
                          f"{tuple(acts.shape)}")
    acts = acts.float()
    n, d_model = acts.shape
    d_sae = cfg.expansion * d_model
    k = min(cfg.k, d_sae)
    aux_k = min(cfg.aux_k or d_model // 2, d_sae)
    gen = torch.Generator().manual_seed(cfg.seed)

    # Normalisation: centre on the geometric median, scale so a centred token has mean squared
    # norm d_model.
    sample = acts[torch.randperm(n, generator=gen)[:min(n, 20_000)]]
    median = geometric_median(sample)
    scale = math.sqrt(d_model / float((sample - median).pow(2).sum(1).mean().clamp_min(1e-12)))
    x_all = acts * scale

    net = _TopKTrainer(d_model, d_sae, k, gen, median * scale)
    try:  # the fused CPU kernel is several times faster than the per-tensor loop
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * steps_per_epoch))
    decay_from = int(total * (1.0 - cfg.lr_decay_fraction))

    def lr_at(step: int) -> float:
        f = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        if step >= decay_from:
            f *= max(0.0, (total - step) / max(1, total - decay_from))
        return cfg.lr * f

    since_fired = torch.zeros(d_sae, dtype=torch.long)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    t0 = time.perf_counter()
    recent_loss = float("nan")
    aux_last = 0.0
    bar = tqdm(range(total), desc=desc or (f"training L{layer}" if layer is not None
                                           else "training SAE"),
               unit="step", disable=not progress)
    for step in bar:
        if pos + bs > n:
            perm = torch.randperm(n, generator=gen)
            pos = 0
        x = x_all[perm[pos:pos + bs]]
        pos += bs

        pre = net.pre(x)
        vals, idx = pre.topk(k, dim=-1)
        vals = torch.relu(vals)
        x_hat = net.decode_sparse(idx, vals) + net.b_dec
        err = x - x_hat
        loss = err.pow(2).sum(1).mean() / d_model

        with torch.no_grad():
            fired = torch.zeros(d_sae, dtype=torch.bool)
            fired[idx[vals > 0]] = True
            since_fired += bs
            since_fired[fired] = 0
            dead = since_fired > cfg.dead_tokens
            n_dead = int(dead.sum())
        total_loss = loss
        if n_dead and cfg.aux_coef > 0:
            dead_ids = dead.nonzero().squeeze(1)
            a_vals, a_pos = pre[:, dead_ids].topk(min(aux_k, n_dead), dim=-1)
            e_hat = net.decode_sparse(dead_ids[a_pos], torch.relu(a_vals))
            aux = _normalised_mse(e_hat, err.detach())
            if torch.isfinite(aux):
                total_loss = loss + cfg.aux_coef * aux
                aux_last = aux.item()

        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        total_loss.backward()
        net.project_decoder_grad()
        opt.step()
        net.normalise_decoder()

        value = loss.item()
        recent_loss = value if step == 0 else 0.95 * recent_loss + 0.05 * value
        if step % 20 == 0 or step == total - 1:
            bar.set_postfix(loss=f"{recent_loss:.3f}", dead=f"{n_dead / d_sae:.1%}",
                            refresh=False)
    bar.close()
    elapsed = time.perf_counter() - t0

    # Fold the normalisation into raw units: f_raw = f / scale, so W_enc is unchanged and the
    # biases divide by scale; W_dec rows stay unit-norm.
    with torch.no_grad():
        W_dec = net.W_dec.detach().clone()
        W_enc = net.W_enc.detach().clone()
        b_enc = net.b_enc.detach() / scale
        b_dec = net.b_dec.detach() / scale
    stats = {"steps": total, "tokens_seen": total * bs, "n_train_tokens": n,
             "seconds": round(elapsed, 2), "tokens_per_s": round(total * bs / max(elapsed, 1e-9)),
             "final_loss": round(recent_loss, 5), "final_aux_loss": round(aux_last, 5),
             "dead_at_end": round(float((since_fired > cfg.dead_tokens).float().mean()), 4),
             "input_scale": scale}
    return SAE(W_enc, b_enc, W_dec, b_dec, activation="topk", k=k, apply_b_dec_to_input=True,
               layer=layer, meta={**(meta or {}), "train": stats,
                                  "train_config": cfg.to_dict()})


def split_texts(texts: list[str], heldout_fraction: float, seed: int) -> tuple[list[str],
                                                                              list[str]]:
    """(train, held-out) texts: a seeded shuffle, at least one text on each side when there are
    two or more. Held-out tokens come from unseen texts, so repeated game-prompt wording cannot
    flatter the quality figures more than it would on new prompts."""
    import random

    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_held = round(len(texts) * heldout_fraction)
    if heldout_fraction > 0 and len(texts) >= 2:
        n_held = min(max(n_held, 1), len(texts) - 1)
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [texts[i] for i in train], [texts[i] for i in held]


def layer_seed(seed: int, layer: int) -> int:
    """The training seed of one layer's SAE in a set trained with ``seed``.

    Why not ``seed`` itself: SAEs started from one seed begin with the same decoder rows, and
    with little data each row stays near its start, so feature i of layer 13 and feature i of
    layer 18 ended up pointing the same way (decoder cosine 0.85 in the embedded set). A patched
    feature then showed up "downstream" at its own index: the residual stream carrying the
    patch, not a pathway. Distinct seeds make same-index features unrelated."""
    import hashlib

    digest = hashlib.blake2b(f"sae-layer:{seed}:{layer}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def train_saes(model: Any, tok: Any, texts: list[str], layers: list[int],
               cfg: TrainConfig | None = None, out_dir: str | Path | None = None,
               heldout_fraction: float = 0.1, loss_texts: int = 16, batch_size: int = 16,
               max_length: int = 256, model_name: str | None = None,
               progress: bool = True) -> dict[int, Path]:
    """Collect activations of ``texts`` at every layer in one pass, train one TopK SAE per
    layer and save each to ``out_dir/L{layer}`` (featurepath format).

    Each saved SAE's meta holds the model name, layer, token counts, the train config and its
    quality on held-out texts (FVU, L0, dead fraction, and the cross-entropy increase on up to
    ``loss_texts`` held-out texts when ``loss_texts`` > 0).
    """
    from tqdm.auto import tqdm

    from featurepath.sae.collect import collect_activations
    from featurepath.sae.formats import save_sae
    from featurepath.sae.quality import ce_losses, sae_quality

    cfg = cfg or TrainConfig()
    cfg.validate()
    if out_dir is None:
        raise ConfigError("train_saes needs an output directory")
    out = Path(out_dir)
    layers = sorted({int(x) for x in layers})
    if not texts:
        raise ConfigError("the training corpus is empty")
    train_texts, held_texts = split_texts(list(texts), heldout_fraction, cfg.seed)
    acts = collect_activations(model, tok, train_texts, layers, batch_size, max_length,
                               progress=progress, desc="collecting (train)")
    held = collect_activations(model, tok, held_texts, layers, batch_size, max_length,
                               progress=progress, desc="collecting (held-out)") \
        if held_texts else {}
    name = model_name or getattr(getattr(model, "config", None), "_name_or_path", None)
    paths: dict[int, Path] = {}
    clean_ce: dict[str, float] | None = None
    for layer in tqdm(layers, desc="SAE layers", unit="layer", disable=not progress):
        sae = train_sae(acts[layer], replace(cfg, seed=layer_seed(cfg.seed, layer)),
                        layer=layer, progress=progress)
        quality: dict[str, Any] = {}
        if held:
            quality = sae_quality(sae, held[layer])
            if loss_texts > 0:
                ce = ce_losses(model, tok, sae, held_texts[:loss_texts], layer,
                               max_length=max_length, clean=clean_ce)
                clean_ce = clean_ce or ce
                quality.update(ce_clean=ce["ce_clean"], ce_patched=ce["ce_patched"],
                               loss_increase=ce["increase"], loss_tokens=ce["n_tokens"])
        sae.meta["quality"] = quality
        paths[layer] = save_sae(sae.cpu(), out / f"L{layer}", extra={
            "model": name, "layer": layer, "set_seed": cfg.seed,
            "n_tokens": int(acts[layer].shape[0]),
            "n_heldout_tokens": int(held[layer].shape[0]) if held else 0,
            "n_texts": len(train_texts), "n_heldout_texts": len(held_texts)})
        del acts[layer]
    return paths
