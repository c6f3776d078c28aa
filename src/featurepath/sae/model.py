"""The SAE module every format loads into, and slices of it.

All weights are kept in *raw residual-stream units*: any dataset-wise input normalisation of the
source format is folded in at load time (``W_enc·s``, ``W_dec/s``, ``b_dec/s``), so ``encode``
takes raw activations straight from the model and ``W_dec[f]`` is feature f's direction in the
residual stream — the direction a delta patch adds.

Encoding, for input x (any leading shape), with the activations registered in
:mod:`featurepath.sae.activations` (one implementation each, shared with the slices):
    pre = (x - b_dec·[apply_b_dec_to_input]) @ W_enc + b_enc
    relu:     f = relu(pre)
    jumprelu: f = relu(pre) · [pre > threshold]
    topk:     f = relu(pre) on the k largest pre-activations, 0 elsewhere
    abstopk:  f = pre on the k pre-activations largest in magnitude, 0 elsewhere (signed:
              a feature can fire negatively; SAELens's ``abstopk``, arXiv:2510.00404)
Decoding: x_hat = f @ W_dec + b_dec.

A feature is *active* where ``f != 0`` (not ``f > 0``: abstopk features can be negative).
Weights keep the dtype the source declares (a SAELens ``bfloat16`` SAE computes in bfloat16, as
SAELens does), so encode casts its input to ``W_enc.dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from featurepath.sae.activations import activation_names, get_activation


def __getattr__(name: str):
    """``ACTIVATIONS`` / ``TOPK_ACTIVATIONS`` as they are now in the registry (a custom
    activation registered later is included), for code that reads the old constants."""
    if name == "ACTIVATIONS":
        return activation_names()
    if name == "TOPK_ACTIVATIONS":
        return tuple(n for n in activation_names() if get_activation(n).uses_k)
    raise AttributeError(name)


class SAE(torch.nn.Module):
    """A sparse autoencoder on the residual stream after decoder block ``layer``."""

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
                 b_dec: torch.Tensor, activation: str = "relu",
                 threshold: torch.Tensor | None = None, k: int | None = None,
                 apply_b_dec_to_input: bool = False, layer: int | None = None,
                 meta: dict[str, Any] | None = None):
        super().__init__()
        act = get_activation(activation)  # ValueError naming the registered ones
        d_model, d_sae = W_enc.shape
        if act.uses_k and not (isinstance(k, int) and 0 < k <= d_sae):
            raise ValueError(f"a {activation} SAE needs an integer k in 1..{d_sae}, got {k!r}")
        self.W_enc = torch.nn.Parameter(W_enc, requires_grad=False)
        self.b_enc = torch.nn.Parameter(b_enc, requires_grad=False)
        self.W_dec = torch.nn.Parameter(W_dec, requires_grad=False)
        self.b_dec = torch.nn.Parameter(b_dec, requires_grad=False)
        thr = threshold if threshold is not None else torch.zeros(d_sae, dtype=W_enc.dtype)
        self.threshold = torch.nn.Parameter(thr, requires_grad=False)
        self.activation = activation
        self.k = k
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.layer = layer
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def d_model(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return get_activation(self.activation).fn(self.pre_acts(x), self.threshold, self.k)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def with_activation(self, activation: str) -> SAE:
        """The same weights with another activation (e.g. ``relu`` to reproduce the original
        study's loader, which ignored LlamaScope's JumpReLU threshold)."""
        return SAE(self.W_enc.data, self.b_enc.data, self.W_dec.data, self.b_dec.data,
                   activation, self.threshold.data, self.k, self.apply_b_dec_to_input,
                   self.layer, {**self.meta, "activation_override": activation})

    def slice(self, feature_ids: list[int] | torch.Tensor) -> SAESlice:
        """Only what is needed to encode, and patch along, the chosen features.

        JumpReLU/ReLU features are independent, so a slice keeps just their encoder columns,
        biases, thresholds and decoder rows (a few MB for thousands of LlamaScope features).
        TopK couples all features through the k-th largest pre-activation (a ``coupled``
        activation, :mod:`featurepath.sae.activations`), so its slice keeps the full encoder
        to find it (small for the SAEs featurepath trains) and still only the chosen decoder
        rows.
        """
        ids = torch.as_tensor(feature_ids, dtype=torch.long).flatten()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.d_sae):
            raise IndexError(f"feature ids out of range 0..{self.d_sae - 1}")
        full = get_activation(self.activation).coupled
        return SAESlice(
            feature_ids=ids,
            W_enc=(self.W_enc.data if full else self.W_enc.data[:, ids]).clone(),
            b_enc=(self.b_enc.data if full else self.b_enc.data[ids]).clone(),
            threshold=(self.threshold.data if full else self.threshold.data[ids]).clone(),
            W_dec=self.W_dec.data[ids].clone(),
            b_dec=self.b_dec.data.clone(),
            activation=self.activation, k=self.k,
            apply_b_dec_to_input=self.apply_b_dec_to_input, layer=self.layer,
        )


@dataclass
class SAESlice:
    """Chosen features of one SAE: ``encode`` returns exactly the full SAE's values at
    ``feature_ids``; ``W_dec[i]`` is the decoder row of ``feature_ids[i]``."""

    feature_ids: torch.Tensor
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    threshold: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    activation: str
    k: int | None = None
    apply_b_dec_to_input: bool = False
    layer: int | None = None
    _pos: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._pos = {int(f): i for i, f in enumerate(self.feature_ids.tolist())}

    @property
    def n(self) -> int:
        return int(self.feature_ids.numel())

    def index_of(self, feature_id: int) -> int:
        """Position of a feature id inside the slice."""
        return self._pos[int(feature_id)]

    def to(self, device=None, dtype=None) -> SAESlice:
        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return SAESlice(self.feature_ids.to(device), mv(self.W_enc), mv(self.b_enc),
                        mv(self.threshold), mv(self.W_dec), mv(self.b_dec), self.activation,
                        self.k, self.apply_b_dec_to_input, self.layer)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The full SAE's values at ``feature_ids``, by the same activation function: a coupled
        slice holds every feature's encoder and keeps its own columns of the result."""
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        act = get_activation(self.activation)
        values = act.fn(x @ self.W_enc + self.b_enc, self.threshold, self.k)
        return values[..., self.feature_ids] if act.coupled else values
