"""Reading SAEs from LlamaScope, SAELens and featurepath directories (safetensors only).

Every loader returns an :class:`SAE` in raw residual units. Problems (missing files, missing
keys, wrong shapes, a pickle where safetensors is expected) raise :class:`SAEFormatError` naming
the file and the problem.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from featurepath.errors import SAEFormatError
from featurepath.sae.model import ACTIVATIONS, SAE

FP_CONFIG = "sae.json"
FP_WEIGHTS = "sae.safetensors"


def detect_format(path: str | Path) -> str:
    """``llamascope``, ``saelens`` or ``featurepath``, from the files a directory holds."""
    p = Path(path)
    if not p.exists():
        raise SAEFormatError(f"SAE path {p} does not exist")
    if not p.is_dir():
        raise SAEFormatError(f"SAE path {p} is a file; give the SAE's directory")
    if (p / FP_CONFIG).exists():
        return "featurepath"
    if (p / "hyperparams.json").exists():
        return "llamascope"
    if (p / "cfg.json").exists():
        return "saelens"
    pickles = [f.name for f in p.iterdir() if f.suffix in (".pt", ".pth", ".bin", ".pkl")]
    hint = f" (found {', '.join(pickles)}: pickled weights are never loaded; convert them to " \
           "safetensors)" if pickles else ""
    raise SAEFormatError(f"{p} is not an SAE directory: expected hyperparams.json (LlamaScope), "
                         f"cfg.json (SAELens) or {FP_CONFIG} (featurepath){hint}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SAEFormatError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SAEFormatError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SAEFormatError(f"{path} must hold a JSON object")
    return data


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
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


def _need(tensors: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], path: Path):
    if key not in tensors:
        raise SAEFormatError(f"{path} has no tensor {key!r} (has: {', '.join(sorted(tensors))})")
    t = tensors[key]
    if tuple(t.shape) != shape:
        raise SAEFormatError(f"{path}: {key} has shape {tuple(t.shape)}, expected {shape}")
    if not torch.isfinite(t.float()).all():
        raise SAEFormatError(f"{path}: {key} holds NaN or infinite values")
    return t.float()


def _layer_from_hook(hook: str | None) -> int | None:
    m = re.search(r"(?:blocks|layers)[._](\d+)", hook or "")
    return int(m.group(1)) if m else None


def load_llamascope(path: Path) -> SAE:
    """LlamaScope: ``hyperparams.json`` + ``checkpoints/final.safetensors``.

    Arithmetic as SAELens loads LlamaScope (``sae_lens/loading/pretrained_sae_loaders.py``,
    ``get_llama_scope_config_from_hf`` / ``llama_scope_sae_huggingface_loader``, then
    ``fold_activation_norm_scaling_factor``): with ``s = sqrt(d_model) /
    dataset_average_activation_norm["in"]``, the encoder reads ``x·s`` (folded: ``W_enc·s``),
    the decoder output is divided by ``s`` (folded: ``W_dec/s``, ``b_dec/s``), the encoder bias
    is unchanged, ``b_dec`` is not subtracted from the input, and the scalar
    ``jump_relu_threshold`` is multiplied by ``s`` and applied as ``relu(pre)·[pre > θ]``.
    """
    hp = _read_json(path / "hyperparams.json")
    try:
        d_model = int(hp["d_model"])
        d_sae = int(hp.get("d_sae") or d_model * int(hp["expansion_factor"]))
    except (KeyError, TypeError, ValueError):
        raise SAEFormatError(f"{path / 'hyperparams.json'} needs d_model and d_sae "
                             "(or expansion_factor)") from None
    wpath = path / "checkpoints" / "final.safetensors"
    t = _read_safetensors(wpath)
    W_enc = _need(t, "encoder.weight", (d_sae, d_model), wpath).T.contiguous()
    b_enc = _need(t, "encoder.bias", (d_sae,), wpath)
    W_dec = _need(t, "decoder.weight", (d_model, d_sae), wpath).T.contiguous()
    b_dec = _need(t, "decoder.bias", (d_model,), wpath)
    norm = hp.get("dataset_average_activation_norm") or {}
    s = 1.0
    if isinstance(norm, dict) and norm.get("in"):
        s = math.sqrt(d_model) / float(norm["in"])
    elif hp.get("norm_activation", "dataset-wise") == "dataset-wise" and norm:
        raise SAEFormatError(f"{path / 'hyperparams.json'}: dataset_average_activation_norm "
                             "needs an 'in' value")
    thr_value = hp.get("jump_relu_threshold")
    act = "jumprelu" if thr_value is not None else "relu"
    thr = torch.full((d_sae,), float(thr_value or 0.0) * s)
    hook = hp.get("hook_point_in") or hp.get("hook_point")
    return SAE(W_enc * s, b_enc, W_dec / s, b_dec / s, act, thr, None, False,
               _layer_from_hook(hook),
               {"format": "llamascope", "path": str(path), "hook": hook, "norm_scale": s,
                "model": hp.get("model_name")})


def load_saelens(path: Path) -> SAE:
    """SAELens: ``cfg.json`` + ``sae_weights.safetensors`` (W_enc [d_in, d_sae], W_dec
    [d_sae, d_in], b_enc, b_dec, and ``threshold`` or ``log_threshold`` for JumpReLU)."""
    cfg = _read_json(path / "cfg.json")
    try:
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    except (KeyError, TypeError, ValueError):
        raise SAEFormatError(f"{path / 'cfg.json'} needs integer d_in and d_sae") from None
    wpath = path / "sae_weights.safetensors"
    t = _read_safetensors(wpath)
    W_enc = _need(t, "W_enc", (d_in, d_sae), wpath)
    W_dec = _need(t, "W_dec", (d_sae, d_in), wpath)
    b_enc = _need(t, "b_enc", (d_sae,), wpath)
    b_dec = _need(t, "b_dec", (d_in,), wpath)
    arch = str(cfg.get("architecture", "standard"))
    act_fn = str(cfg.get("activation_fn", cfg.get("activation_fn_str", "relu")))
    kwargs = cfg.get("activation_fn_kwargs") or {}
    thr, k = None, None
    if arch == "jumprelu":
        act = "jumprelu"
        if "threshold" in t:
            thr = _need(t, "threshold", (d_sae,), wpath)
        elif "log_threshold" in t:
            thr = _need(t, "log_threshold", (d_sae,), wpath).exp()
        else:
            raise SAEFormatError(f"{wpath}: a jumprelu SAE needs 'threshold' or 'log_threshold'")
    elif arch == "topk" or act_fn == "topk":
        act, k = "topk", int(cfg.get("k") or kwargs.get("k") or 0)
        if k <= 0:
            raise SAEFormatError(f"{path / 'cfg.json'}: a topk SAE needs k")
    elif act_fn == "relu":
        act = "relu"
    else:
        raise SAEFormatError(f"{path / 'cfg.json'}: unsupported architecture {arch!r} / "
                             f"activation {act_fn!r}")
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise SAEFormatError(f"{path / 'cfg.json'}: normalize_activations="
                             f"{cfg['normalize_activations']!r} needs a scaling factor that "
                             "SAELens does not store; fold it into the weights first")
    hook = cfg.get("hook_name") or cfg.get("hook_point")
    layer = cfg.get("hook_layer")
    return SAE(W_enc, b_enc, W_dec, b_dec, act, thr, k, bool(cfg.get("apply_b_dec_to_input")),
               int(layer) if layer is not None else _layer_from_hook(hook),
               {"format": "saelens", "path": str(path), "hook": hook,
                "model": cfg.get("model_name")})


def load_featurepath(path: Path) -> SAE:
    cfg = _read_json(path / FP_CONFIG)
    try:
        d_model, d_sae = int(cfg["d_model"]), int(cfg["d_sae"])
        act = str(cfg["activation"])
    except (KeyError, TypeError, ValueError):
        raise SAEFormatError(f"{path / FP_CONFIG} needs d_model, d_sae and activation") from None
    if act not in ACTIVATIONS:
        raise SAEFormatError(f"{path / FP_CONFIG}: unknown activation {act!r}")
    wpath = path / FP_WEIGHTS
    t = _read_safetensors(wpath)
    thr = _need(t, "threshold", (d_sae,), wpath) if "threshold" in t else None
    return SAE(_need(t, "W_enc", (d_model, d_sae), wpath), _need(t, "b_enc", (d_sae,), wpath),
               _need(t, "W_dec", (d_sae, d_model), wpath), _need(t, "b_dec", (d_model,), wpath),
               act, thr, cfg.get("k"), bool(cfg.get("apply_b_dec_to_input", False)),
               cfg.get("layer"), {**cfg.get("meta", {}), "format": "featurepath",
                                  "path": str(path)})


def save_sae(sae: SAE, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write featurepath's own format (atomically: temp files, then rename)."""
    from safetensors.torch import save_file

    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    tensors = {n: getattr(sae, n).data.detach().float().cpu().contiguous()
               for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    tmp = p / (FP_WEIGHTS + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(p / FP_WEIGHTS)
    meta = {k: v for k, v in sae.meta.items() if k not in ("path", "format")}
    cfg = {"format": "featurepath", "d_model": sae.d_model, "d_sae": sae.d_sae,
           "activation": sae.activation, "k": sae.k,
           "apply_b_dec_to_input": sae.apply_b_dec_to_input, "layer": sae.layer,
           "meta": {**meta, **(extra or {})}}
    tmpc = p / (FP_CONFIG + ".tmp")
    tmpc.write_text(json.dumps(cfg, indent=2))
    tmpc.replace(p / FP_CONFIG)
    return p


_LOADERS = {"llamascope": load_llamascope, "saelens": load_saelens,
            "featurepath": load_featurepath}


def load_sae(path: str | Path, activation: str | None = None, layer: int | None = None,
             d_model: int | None = None) -> SAE:
    """Load an SAE directory of any supported format.

    ``activation`` overrides the format's activation (e.g. ``relu`` to reproduce a loader that
    ignored JumpReLU thresholds); ``layer`` overrides the layer read from the file; ``d_model``,
    when given, is checked against the SAE (the model's hidden size).
    """
    p = Path(path).expanduser()
    sae = _LOADERS[detect_format(p)](p)
    if activation is not None:
        if activation not in ACTIVATIONS:
            raise SAEFormatError(f"unknown activation override {activation!r}")
        sae = sae.with_activation(activation)
    if layer is not None:
        sae.layer = layer
    if sae.layer is None:
        raise SAEFormatError(f"{p}: cannot tell which layer this SAE reads; pass a layer")
    if d_model is not None and sae.d_model != d_model:
        raise SAEFormatError(f"{p}: SAE d_model {sae.d_model} does not match the model's hidden "
                             f"size {d_model}")
    return sae
