"""SAE activation functions, one implementation each, shared by the full SAE and its slices.

An activation turns pre-activations ``pre [..., d_sae]`` into feature values. Two kinds:

- **independent** (relu, jumprelu): feature f's value depends on its own pre-activation and
  threshold only, so a slice computes them on its own encoder columns;
- **coupled** (topk, abstopk): every feature's value depends on the k-th largest
  (pre-)activation of the token, so a slice keeps the full encoder, runs the same function over
  all features and keeps its own columns.

Because a slice runs the very function the full SAE runs, ``slice.encode(x)`` equals
``sae.encode(x)[..., ids]`` exactly (ties at the k-th value included) — the guarantee the patch
engine's records rest on. A new architecture is one :func:`register_activation` call, the way
SAELens registers SAE classes; :mod:`featurepath.sae.formats` and the SAE model read the names
from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: ``(pre, threshold, k) -> values``; ``threshold`` is ``[d]`` and ``k`` None unless ``uses_k``.
ActivationFn = Callable[[torch.Tensor, torch.Tensor, "int | None"], torch.Tensor]


@dataclass(frozen=True)
class Activation:
    """A registered activation: its function, whether it needs an integer ``k`` and whether it
    couples features (a slice then keeps the full encoder)."""

    name: str
    fn: ActivationFn
    uses_k: bool = False
    coupled: bool = False


_REGISTRY: dict[str, Activation] = {}


def register_activation(name: str, fn: ActivationFn, *, uses_k: bool = False,
                        coupled: bool = False) -> Activation:
    """Add (or replace) an activation; SAEs whose config names it load and encode with ``fn``,
    and their slices too (``coupled=True`` when a feature's value depends on the others)."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"activation names are identifiers, got {name!r}")
    act = Activation(name, fn, uses_k, coupled)
    _REGISTRY[name] = act
    return act


def get_activation(name: str) -> Activation:
    """The registered activation ``name``; a ValueError names the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; use one of "
                         f"{', '.join(activation_names())}") from None


def activation_names() -> tuple[str, ...]:
    """Every registered activation, built-ins first."""
    return tuple(_REGISTRY)


def _relu(pre: torch.Tensor, threshold: torch.Tensor, k: int | None) -> torch.Tensor:
    return torch.relu(pre)


def _jumprelu(pre: torch.Tensor, threshold: torch.Tensor, k: int | None) -> torch.Tensor:
    return torch.relu(pre) * (pre > threshold)


def _topk_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """True at exactly the ``k`` largest scores of each token (torch's choice among ties)."""
    idx = score.topk(int(k), dim=-1).indices
    return torch.zeros_like(score, dtype=torch.bool).scatter_(-1, idx, True)


def _topk(pre: torch.Tensor, threshold: torch.Tensor, k: int | None) -> torch.Tensor:
    assert k is not None
    return torch.where(_topk_mask(pre, k), torch.relu(pre), 0.0)


def _abstopk(pre: torch.Tensor, threshold: torch.Tensor, k: int | None) -> torch.Tensor:
    """Signed: ``pre`` on the k pre-activations largest in magnitude (SAELens's ``abstopk``)."""
    assert k is not None
    return torch.where(_topk_mask(pre.abs(), k), pre, 0.0)  # +0 off the k, as a scatter gives


register_activation("relu", _relu)
register_activation("jumprelu", _jumprelu)
register_activation("topk", _topk, uses_k=True, coupled=True)
register_activation("abstopk", _abstopk, uses_k=True, coupled=True)

__all__ = ["Activation", "ActivationFn", "register_activation", "get_activation",
           "activation_names"]
