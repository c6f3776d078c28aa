"""Reading SAEs from LlamaScope, SAELens and featurepath directories (safetensors only).

Every loader returns an :class:`SAE` in raw residual units. Formats are a small registry
(:func:`register_sae_format`, the way SAELens registers SAE classes): each says how to
recognise its directory and how to load it; :func:`detect_format` tries them in order. Problems (missing files, missing
keys, wrong shapes, a pickle where safetensors is expected) raise :class:`SAEFormatError` naming
the file and the problem.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from featurepath.errors import SAEFormatError
from featurepath.sae.activations import activation_names, get_activation
from featurepath.sae.files import (
    MAX_LAYER,
    as_dict,
    as_dtype,
    as_int,
    as_number,
    hook_site,
    need_tensor,
    read_json,
    read_safetensors,
)
from featurepath.sae.model import SAE
from featurepath.sae.saelens import load_saelens

FP_CONFIG = "sae.json"
FP_WEIGHTS = "sae.safetensors"
LS_CONFIG = "hyperparams.json"
LS_WEIGHTS = ("checkpoints", "final.safetensors")


@dataclass(frozen=True)
class SAEFormat:
    """A registered SAE format: ``detect(dir) -> bool`` recognises its directory; ``load(dir,
    *, dtype, llamascope_threshold, llamascope_decoder_norm) -> SAE`` reads it (a loader takes
    the options it uses and ignores the others, hence ``**_``); ``expects`` names its files for
    the error a directory of no known format gets."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., SAE]
    expects: str


_FORMATS: list[SAEFormat] = []


def register_sae_format(name: str, detect: Callable[[Path], bool], load: Callable[..., SAE],
                        expects: str) -> SAEFormat:
    """Teach :func:`load_sae` a format. Registered formats are tried before the built-in ones
    (featurepath, LlamaScope, SAELens), the most recent first; a name registered again is
    replaced. The loaded SAE goes through the same checks as the built-ins' (dtype, activation
    override, layer, ``d_model``)."""
    fmt = SAEFormat(name, detect, load, expects)
    _FORMATS[:] = [fmt, *(f for f in _FORMATS if f.name != name)]
    return fmt


def sae_format_names() -> tuple[str, ...]:
    """Every registered format, in the order :func:`detect_format` tries them."""
    return tuple(f.name for f in _FORMATS)


def detect_format(path: str | Path) -> str:
    """The name of the first registered format that recognises the directory (built-ins:
    ``featurepath``, ``llamascope``, ``saelens``)."""
    p = Path(path)
    if not p.exists():
        raise SAEFormatError(f"SAE path {p} does not exist")
    if not p.is_dir():
        raise SAEFormatError(f"SAE path {p} is a file; give the SAE's directory")
    for fmt in _FORMATS:
        if fmt.detect(p):
            return fmt.name
    pickles = [f.name for f in p.iterdir() if f.suffix in (".pt", ".pth", ".bin", ".pkl")]
    hint = f" (found {', '.join(pickles)}: pickled weights are never loaded; convert them to " \
           "safetensors)" if pickles else ""
    raise SAEFormatError(f"{p} is not an SAE directory: expected "
                         f"{', '.join(f.expects for f in _FORMATS)}{hint}")


# ------------------------------------------------------------------------------- Llama Scope

#: How Llama Scope's scalar ``jump_relu_threshold`` meets the pre-activation of the normalised
#: input ``(x·s)·W_enc + b_enc``: ``scaled`` compares it with ``θ·s`` (SAELens's loader, which
#: the Llama Scope authors contributed); ``stored`` compares it with ``θ`` as written (OpenMOSS's
#: own training code, which applies the threshold after normalising the input).
LLAMASCOPE_THRESHOLDS = ("scaled", "stored")


@dataclass(frozen=True)
class LlamaScopeConfig:
    """What featurepath reads from a Llama Scope ``hyperparams.json`` (checked)."""

    d_model: int
    d_sae: int
    threshold: float
    norm_in: float
    layer: int
    hook: str
    top_k: int | None
    decoder_norm_declared: bool
    model: str | None

    @property
    def scale(self) -> float:
        """``s = sqrt(d_model) / dataset_average_activation_norm.in``: the factor Llama Scope
        multiplies inputs by so that their average norm is sqrt(d_model)."""
        return math.sqrt(self.d_model) / self.norm_in


def read_llamascope_config(path: Path) -> LlamaScopeConfig:
    """``hyperparams.json`` checked the way SAELens needs it (threshold and input norm present)
    and refusing what neither SAELens nor featurepath would read correctly: per-token input
    normalisation, transcoders (``hook_point_in`` ≠ ``hook_point_out``) and non-residual hooks."""
    cpath = path / LS_CONFIG
    hp = read_json(cpath)
    d_model = as_int(hp.get("d_model"), "d_model", cpath, lo=1)
    if hp.get("d_sae") is not None:
        d_sae = as_int(hp["d_sae"], "d_sae", cpath, lo=1)
    else:
        d_sae = d_model * as_int(hp.get("expansion_factor"), "expansion_factor (or d_sae)",
                                 cpath, lo=1)
    norm_mode = hp.get("norm_activation", "dataset-wise")
    if norm_mode != "dataset-wise":
        raise SAEFormatError(f"{cpath}: norm_activation {norm_mode!r:.40} is not supported "
                             "(featurepath reads dataset-wise Llama Scope SAEs)")
    if "dataset_average_activation_norm" not in hp:
        raise SAEFormatError(f"{cpath}: dataset_average_activation_norm is missing (a "
                             "dataset-wise SAE needs its input norm)")
    norm = as_dict(hp["dataset_average_activation_norm"], "dataset_average_activation_norm",
                   cpath)
    norm_in = as_number(norm.get("in"), "dataset_average_activation_norm.in", cpath,
                        positive=True)
    if "jump_relu_threshold" not in hp:
        raise SAEFormatError(f"{cpath}: jump_relu_threshold is missing (featurepath reads "
                             "JumpReLU Llama Scope SAEs)")
    thr = as_number(hp["jump_relu_threshold"], "jump_relu_threshold", cpath)
    hook_in = hp.get("hook_point_in") or hp.get("hook_point")
    hook_out = hp.get("hook_point_out") or hook_in
    if hook_in is None:
        raise SAEFormatError(f"{cpath}: hook_point_in is missing")
    if hook_out != hook_in:
        raise SAEFormatError(f"{cpath}: reads {hook_in!r:.60} but reconstructs {hook_out!r:.60}: "
                             "transcoders are not supported")
    site = hook_site(hook_in, cpath)
    top_k = hp.get("top_k")
    top_k = as_int(top_k, "top_k", cpath, lo=1) if top_k is not None else None
    dec = hp.get("sparsity_include_decoder_norm", False)
    return LlamaScopeConfig(d_model, d_sae, thr, norm_in, site.layer, site.hook, top_k,
                            dec is True, hp.get("model_name"))


def llamascope_thresholds(theta: float, scale: float, stored_decoder_norms: torch.Tensor,
                         threshold: str = "scaled", decoder_norm: bool = False) -> torch.Tensor:
    """Per-feature JumpReLU threshold on the pre-activation of the normalised input, under one
    reading of Llama Scope's conventions.

    ``threshold`` picks ``θ·s`` (``scaled``) or ``θ`` (``stored``); with ``decoder_norm`` the
    gate is ``pre·‖W_dec,i‖ > θ_eff`` (OpenMOSS's ``sparsity_include_decoder_norm``, with the
    stored decoder's norms), i.e. a threshold of ``θ_eff / ‖W_dec,i‖`` on ``pre``.
    """
    if threshold not in LLAMASCOPE_THRESHOLDS:
        raise SAEFormatError(f"unknown Llama Scope threshold convention {threshold!r}; use one "
                             f"of {', '.join(LLAMASCOPE_THRESHOLDS)}")
    eff = theta * scale if threshold == "scaled" else theta
    if decoder_norm:
        return eff / stored_decoder_norms.float().clamp(min=1e-8)
    return torch.full(stored_decoder_norms.shape, eff)


def load_llamascope(path: Path, threshold: str = "scaled", decoder_norm: bool = False) -> SAE:
    """LlamaScope: ``hyperparams.json`` + ``checkpoints/final.safetensors``.

    Arithmetic as SAELens loads LlamaScope (``sae_lens/loading/pretrained_sae_loaders.py``,
    ``get_llama_scope_config_from_hf`` / ``llama_scope_sae_huggingface_loader``, then
    ``fold_activation_norm_scaling_factor``): with ``s = sqrt(d_model) /
    dataset_average_activation_norm["in"]``, the encoder reads ``x·s`` (folded: ``W_enc·s``),
    the decoder output is divided by ``s`` (folded: ``W_dec/s``, ``b_dec/s``), the encoder bias
    is unchanged, ``b_dec`` is not subtracted from the input, and the scalar
    ``jump_relu_threshold`` is multiplied by ``s`` and applied as ``relu(pre)·[pre > θ]``.
    ``threshold`` / ``decoder_norm`` select the other readings (:func:`llamascope_thresholds`).
    """
    c = read_llamascope_config(path)
    wpath = path.joinpath(*LS_WEIGHTS)
    t = read_safetensors(wpath)
    W_enc = need_tensor(t, "encoder.weight", (c.d_sae, c.d_model), wpath).T.contiguous()
    b_enc = need_tensor(t, "encoder.bias", (c.d_sae,), wpath)
    W_dec = need_tensor(t, "decoder.weight", (c.d_model, c.d_sae), wpath).T.contiguous()
    b_dec = need_tensor(t, "decoder.bias", (c.d_model,), wpath)
    s = c.scale
    thr = llamascope_thresholds(c.threshold, s, W_dec.norm(dim=1), threshold, decoder_norm)
    return SAE(W_enc * s, b_enc, W_dec / s, b_dec / s, "jumprelu", thr, None, False, c.layer,
               {"format": "llamascope", "path": str(path), "hook": c.hook, "norm_scale": s,
                "model": c.model, "jump_relu_threshold": c.threshold, "target_l0": c.top_k,
                "llamascope_threshold": threshold, "llamascope_decoder_norm": decoder_norm,
                "sparsity_include_decoder_norm": c.decoder_norm_declared})


# ------------------------------------------------------------------------- featurepath's own


def read_featurepath_config(path: Path) -> dict[str, Any]:
    """``sae.json`` with every field checked for its type."""
    cpath = path / FP_CONFIG
    cfg = read_json(cpath)
    d_model = as_int(cfg.get("d_model"), "d_model", cpath, lo=1)
    d_sae = as_int(cfg.get("d_sae"), "d_sae", cpath, lo=1)
    act = cfg.get("activation")
    if not isinstance(act, str) or act not in activation_names():
        raise SAEFormatError(f"{cpath}: activation must be one of "
                             f"{', '.join(activation_names())}, got {act!r:.40}")
    k = cfg.get("k")
    if get_activation(act).uses_k or k is not None:
        k = as_int(k, "k", cpath, lo=1, hi=d_sae)
    layer = cfg.get("layer")
    if layer is not None:
        layer = as_int(layer, "layer", cpath, lo=0, hi=MAX_LAYER)
    apply_b_dec = cfg.get("apply_b_dec_to_input", False)
    if not isinstance(apply_b_dec, bool):
        raise SAEFormatError(f"{cpath}: apply_b_dec_to_input must be true or false")
    meta = as_dict(cfg.get("meta"), "meta", cpath)
    return {"d_model": d_model, "d_sae": d_sae, "activation": act, "k": k, "layer": layer,
            "apply_b_dec_to_input": apply_b_dec, "meta": meta}


def load_featurepath(path: Path) -> SAE:
    c = read_featurepath_config(path)
    d_model, d_sae = c["d_model"], c["d_sae"]
    wpath = path / FP_WEIGHTS
    t = read_safetensors(wpath)
    thr = need_tensor(t, "threshold", (d_sae,), wpath) if "threshold" in t else None
    meta = {**c["meta"], "format": "featurepath", "path": str(path)}
    if get_activation(c["activation"]).uses_k:
        meta.setdefault("target_l0", c["k"])
    return SAE(need_tensor(t, "W_enc", (d_model, d_sae), wpath),
               need_tensor(t, "b_enc", (d_sae,), wpath),
               need_tensor(t, "W_dec", (d_sae, d_model), wpath),
               need_tensor(t, "b_dec", (d_model,), wpath),
               c["activation"], thr, c["k"], c["apply_b_dec_to_input"], c["layer"], meta)


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
    meta = {k: v for k, v in sae.meta.items() if k not in ("path", "format", "dtype")}
    cfg = {"format": "featurepath", "d_model": sae.d_model, "d_sae": sae.d_sae,
           "activation": sae.activation, "k": sae.k,
           "apply_b_dec_to_input": sae.apply_b_dec_to_input, "layer": sae.layer,
           "meta": {**meta, **(extra or {})}}
    tmpc = p / (FP_CONFIG + ".tmp")
    tmpc.write_text(json.dumps(cfg, indent=2))
    tmpc.replace(p / FP_CONFIG)
    return p


def load_sae(path: str | Path, activation: str | None = None, layer: int | None = None,
             d_model: int | None = None, llamascope_threshold: str = "scaled",
             llamascope_decoder_norm: bool = False,
             dtype: str | torch.dtype | None = None) -> SAE:
    """Load an SAE directory of any supported format.

    ``activation`` overrides the format's activation (e.g. ``relu`` to reproduce a loader that
    ignored JumpReLU thresholds); ``layer`` overrides the layer read from the file; ``d_model``,
    when given, is checked against the SAE (the model's hidden size). The ``llamascope_*``
    options choose how a Llama Scope threshold is read (see :func:`llamascope_thresholds`; other
    formats ignore them). ``dtype`` (``"float32"``, ``"bfloat16"``, ...; default: the file's:
    an SAELens config's ``dtype``, float32 for the other formats) is the dtype the SAE's weights
    are held and computed in, as SAELens's ``SAE.load_from_disk(path, dtype=...)`` takes it: a
    bfloat16 SAELens file loaded at ``"float32"`` computes in float32.
    """
    p = Path(path).expanduser()
    fmt = detect_format(p)
    want = as_dtype(str(dtype).removeprefix("torch."), p) if dtype is not None else None
    loader = next(f.load for f in _FORMATS if f.name == fmt)
    sae = loader(p, dtype=want, llamascope_threshold=llamascope_threshold,
                 llamascope_decoder_norm=llamascope_decoder_norm)
    if want is not None and sae.W_enc.dtype != want:
        sae = sae.to(want)
        sae.meta["dtype"] = str(want).removeprefix("torch.")
    if activation is not None:
        if activation not in activation_names():
            raise SAEFormatError(f"unknown activation override {activation!r}")
        if get_activation(activation).uses_k and sae.k is None:
            raise SAEFormatError(f"{p}: cannot override the activation with {activation}: the "
                                 "SAE has no k")
        sae = sae.with_activation(activation)
    if layer is not None:
        sae.layer = layer
    if sae.layer is None:
        raise SAEFormatError(f"{p}: cannot tell which layer this SAE reads; pass a layer")
    if d_model is not None and sae.d_model != d_model:
        raise SAEFormatError(f"{p}: SAE d_model {sae.d_model} does not match the model's hidden "
                             f"size {d_model}")
    return sae


# The built-in formats, in the order they are tried (registered ones go before them).
_FORMATS.extend([
    SAEFormat("featurepath", lambda p: (p / FP_CONFIG).exists(),
              lambda p, **_: load_featurepath(p), f"{FP_CONFIG} (featurepath)"),
    SAEFormat("llamascope", lambda p: (p / LS_CONFIG).exists(),
              lambda p, llamascope_threshold="scaled", llamascope_decoder_norm=False, **_:
              load_llamascope(p, llamascope_threshold, llamascope_decoder_norm),
              f"{LS_CONFIG} (LlamaScope)"),
    SAEFormat("saelens", lambda p: (p / "cfg.json").exists(),
              lambda p, dtype=None, **_: load_saelens(p, dtype), "cfg.json (SAELens)"),
])
