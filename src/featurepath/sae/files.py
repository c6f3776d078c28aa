"""Reading and checking the pieces of an SAE directory: JSON configs, safetensors weights, typed
config values and hook names.

Every check raises :class:`SAEFormatError` with a message naming the file and the value, because
the CLI prints exactly that message as its one ``error: ...`` line. Config values are checked for
their *type* as well as their presence: JSON lets a layer be ``"3"``, ``[3]`` or ``1e400``, and
each of those must be refused here rather than fail later inside torch with a traceback.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from featurepath.errors import SAEFormatError

#: Largest layer index accepted from a file (no model has anywhere near this many blocks; a
#: bigger number is a corrupt or mistyped file).
MAX_LAYER = 10_000

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "torch.float32": torch.float32, "float": torch.float32,
    "float64": torch.float64, "torch.float64": torch.float64,
    "float16": torch.float16, "torch.float16": torch.float16,
    "bfloat16": torch.bfloat16, "torch.bfloat16": torch.bfloat16,
}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (anything else is a format error naming the file)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SAEFormatError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SAEFormatError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SAEFormatError(f"{path} must hold a JSON object")
    return data


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, in its stored dtype."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        raise SAEFormatError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SAEFormatError(f"{path} is not a readable safetensors file: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None


def need_tensor(tensors: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], path: Path,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``tensors[key]``, checked for presence, shape and finiteness, cast to ``dtype``."""
    if key not in tensors:
        raise SAEFormatError(f"{path} has no tensor {key!r} (has: {', '.join(sorted(tensors))})")
    t = tensors[key]
    if tuple(t.shape) != shape:
        raise SAEFormatError(f"{path}: {key} has shape {tuple(t.shape)}, expected {shape}")
    if not t.is_floating_point():
        raise SAEFormatError(f"{path}: {key} has dtype {t.dtype}; expected floating point")
    if not torch.isfinite(t.float()).all():
        raise SAEFormatError(f"{path}: {key} holds NaN or infinite values")
    return t.to(dtype)


def as_int(value: Any, what: str, path: Path, lo: int | None = None,
           hi: int | None = None) -> int:
    """``value`` if it is a JSON integer within ``[lo, hi]`` (a string, float, list or bool is
    refused: SAELens and featurepath would otherwise fail later, inside torch)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SAEFormatError(f"{path}: {what} must be an integer, got {value!r:.60}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else \
            f">= {lo}" if lo is not None else f"<= {hi}"
        raise SAEFormatError(f"{path}: {what} must be {bounds}, got {value}")
    return value


def as_number(value: Any, what: str, path: Path, positive: bool = False) -> float:
    """``value`` if it is a finite JSON number (and > 0 when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SAEFormatError(f"{path}: {what} must be a number, got {value!r:.60}")
    x = float(value)
    if not math.isfinite(x) or (positive and x <= 0):
        raise SAEFormatError(f"{path}: {what} must be a finite{' positive' if positive else ''} "
                             f"number, got {value!r:.60}")
    return x


def as_dict(value: Any, what: str, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SAEFormatError(f"{path}: {what} must be a JSON object, got {value!r:.60}")
    return value


def as_dtype(value: Any, path: Path) -> torch.dtype:
    if value is None:
        return torch.float32
    if not isinstance(value, str) or value not in DTYPES:
        raise SAEFormatError(f"{path}: unsupported dtype {value!r:.60} (use one of "
                             f"{', '.join(sorted({k.removeprefix('torch.') for k in DTYPES}))})")
    return DTYPES[value]


@dataclass(frozen=True)
class HookSite:
    """Where an SAE reads the model, in featurepath's terms: the output of decoder block
    ``layer`` (``hook_resid_post`` of block L, which is also ``hook_resid_pre`` of block L+1)."""

    layer: int
    hook: str


_RESID = re.compile(r"^(?:blocks|layers|model\.layers|transformer\.h|gpt_neox\.layers)"
                    r"\.(\d+)\.hook_resid_(pre|post)$")
_MODULE = re.compile(r"^(?:model\.)?layers\.(\d+)$")


def hook_site(hook: Any, path: Path) -> HookSite:
    """The block output a hook name refers to, or a format error for any hook that is not the
    residual stream between blocks.

    ``blocks.L.hook_resid_post`` and a bare ``model.layers.L`` (a Hugging Face block's output)
    are block L's output; ``blocks.L.hook_resid_pre`` is the *input* of block L, so block
    ``L-1``'s output (taking the layer number as is would put the SAE one block too deep).
    ``hook_resid_pre`` of block 0 is the embedding output, which featurepath does not hook; MLP,
    attention, ``hook_resid_mid`` and normalised-input hooks read other vectors altogether.
    """
    if not isinstance(hook, str):
        raise SAEFormatError(f"{path}: the hook name must be a string, got {hook!r:.60}")
    m = _RESID.match(hook)
    if m:
        block, kind = int(m.group(1)), m.group(2)
        layer = block - 1 if kind == "pre" else block
        if layer < 0:
            raise SAEFormatError(f"{path}: hook {hook!r} reads the embeddings (the input of block "
                                 "0); featurepath hooks block outputs only")
        if layer > MAX_LAYER:
            raise SAEFormatError(f"{path}: hook {hook!r} names block {block}, beyond any model")
        return HookSite(layer, hook)
    m = _MODULE.match(hook)
    if m and int(m.group(1)) <= MAX_LAYER:
        return HookSite(int(m.group(1)), hook)
    raise SAEFormatError(f"{path}: hook {hook!r:.80} is not a residual-stream hook; featurepath "
                         "reads SAEs on the residual stream between blocks "
                         "(blocks.L.hook_resid_post or blocks.L.hook_resid_pre)")
