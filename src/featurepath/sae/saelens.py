"""SAELens directories (``cfg.json`` + ``sae_weights.safetensors``), read the way SAELens 6 reads
them, without SAELens.

What SAELens does, and so what this module does (sources: ``sae_lens/saes/sae.py``,
``saes/topk_sae.py``, ``saes/abstopk_sae.py``, ``saes/batchtopk_sae.py``,
``loading/pretrained_sae_loaders.py::handle_config_defaulting``):

- **Config version.** A config whose ``sae_lens_version`` (top level or under ``metadata``) is
  missing or older than 6.0 is an old one: ``hook_point`` means ``hook_name``,
  ``activation_fn_str`` means ``activation_fn``, a missing ``apply_b_dec_to_input`` means True,
  ``normalize_activations`` ``false``/``true`` mean ``"none"``/``"expected_average_only_in"``, a
  missing architecture means ``standard``, and ``activation_fn: topk`` with
  ``activation_fn_kwargs.k`` means architecture ``topk`` with that ``k``. Current configs keep the
  hook under ``metadata.hook_name``; ``apply_b_dec_to_input`` defaults to True there too.
- **dtype.** Weights are cast to the config's ``dtype`` and the SAE computes in it; a ``dtype``
  given to the loader replaces the config's, as SAELens's ``load_from_disk(dtype=...)`` does.
- **Architectures.** ``standard`` (ReLU), ``jumprelu`` (``threshold``, or ``log_threshold`` of
  older files), ``topk`` and ``abstopk`` (``k``; with ``rescale_acts_by_decoder_norm`` the
  top k of ``pre·‖W_dec,i‖`` are kept and divided by the norm when decoding, which is folded here
  into ``W_enc·n``, ``b_enc·n``, ``W_dec/n`` exactly as SAELens folds it when it saves for
  inference), and the training checkpoints of ``batchtopk`` / ``matryoshka_batchtopk``, turned
  into the JumpReLU SAE that ``save_inference_model`` would write (norms folded, every threshold
  equal to the learnt ``topk_threshold``). Transcoders, gated, matching-pursuit, temporal and any
  other architecture are refused: they are not one residual-stream encoder/decoder pair.
- **Normalisation.** Only ``normalize_activations: "none"`` is read: the
  ``expected_average_only_in`` factor is not stored in the directory, and per-token
  normalisation (``constant_norm_rescale``, ``layer_norm``) would make a feature's residual
  direction depend on the token, which patching cannot use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from featurepath.errors import SAEFormatError
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

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"

#: SAELens architectures featurepath reads, and what each becomes.
SUPPORTED = {"standard": "relu", "jumprelu": "jumprelu", "topk": "topk", "abstopk": "abstopk",
             "batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}
#: Why the others are refused (one line each).
REFUSED = {
    "gated": "gated SAEs gate and scale features with separate encoder paths",
    "transcoder": "a transcoder reconstructs another hook than it reads",
    "skip_transcoder": "a transcoder reconstructs another hook than it reads (plus a skip term)",
    "jumprelu_transcoder": "a transcoder reconstructs another hook than it reads",
    "jumprelu_skip_transcoder": "a transcoder reconstructs another hook than it reads "
                                "(plus a skip term)",
    "matching_pursuit": "matching-pursuit SAEs encode iteratively, not with one encoder",
    "temporal": "temporal SAEs encode from several token positions",
}
_ALLOWED_TENSORS = {"W_enc", "b_enc", "W_dec", "b_dec", "threshold", "log_threshold",
                    "topk_threshold", "scaling_factor"}


def _version(cfg: dict[str, Any], path: Path) -> tuple[int, ...] | None:
    """``sae_lens_version`` as a tuple (``None`` when absent): top level, else under metadata."""
    from packaging.version import InvalidVersion, Version

    raw = cfg.get("sae_lens_version") or as_dict(cfg.get("metadata"), "metadata", path) \
        .get("sae_lens_version")
    if raw is None:
        return None
    try:
        return Version(str(raw)).release
    except InvalidVersion:
        raise SAEFormatError(f"{path}: sae_lens_version {raw!r:.40} is not a version") from None


def normalise_config(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """The config as SAELens 6 sees it after ``handle_config_defaulting``: flat, with
    ``architecture``, ``hook_name``, ``apply_b_dec_to_input``, ``normalize_activations`` and (for
    TopK) ``k`` filled in the way SAELens fills them."""
    meta = as_dict(cfg.get("metadata"), "metadata", path)
    version = _version(cfg, path)
    out = dict(cfg)
    if version is None or version < (6,):
        renames = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index",
                   "activation_fn_str": "activation_fn"}
        out = {renames.get(k, k): v for k, v in cfg.items()}
        out.setdefault("apply_b_dec_to_input", True)
        out.setdefault("architecture", "standard")
        act = out.get("activation_fn", "relu")
        kwargs = as_dict(out.get("activation_fn_kwargs"), "activation_fn_kwargs", path)
        if act == "topk" and kwargs.get("k") is not None:
            out["architecture"], out["k"] = "topk", kwargs["k"]
        elif act == "topk" and out["architecture"] == "standard":
            raise SAEFormatError(f"{path}: activation_fn 'topk' without activation_fn_kwargs.k "
                                 "(SAELens would read this SAE as plain ReLU)")
        elif act not in ("relu", "topk", None) and out["architecture"] == "standard":
            raise SAEFormatError(f"{path}: activation_fn {act!r:.40} is not supported "
                                 "(featurepath reads relu and topk SAEs of SAELens < 6)")
        norm = out.get("normalize_activations")
        if isinstance(norm, bool):
            out["normalize_activations"] = "expected_average_only_in" if norm else "none"
    else:
        out.setdefault("apply_b_dec_to_input", True)
        for key in ("hook_name", "hook_head_index", "model_name"):
            if meta.get(key) is not None:
                out[key] = meta[key]
    if out.get("normalize_activations") is None:
        out["normalize_activations"] = "none"
    return out


def read_saelens_config(path: Path) -> dict[str, Any]:
    """What featurepath needs from ``cfg.json``, checked, without reading weights:
    ``architecture``, ``activation``, ``d_in``, ``d_sae``, ``k``, ``dtype``, ``layer``,
    ``hook``, ``apply_b_dec_to_input``, ``rescale`` (fold decoder norms), ``model``."""
    cpath = path / CFG
    cfg = normalise_config(read_json(cpath), cpath)
    arch = cfg.get("architecture")
    if not isinstance(arch, str):
        raise SAEFormatError(f"{cpath}: architecture must be a string, got {arch!r:.40}")
    if arch in REFUSED:
        raise SAEFormatError(f"{cpath}: SAELens architecture {arch!r} is not supported: "
                             f"{REFUSED[arch]}")
    if arch not in SUPPORTED:
        raise SAEFormatError(f"{cpath}: SAELens architecture {arch!r:.40} is not supported "
                             f"(featurepath reads {', '.join(SUPPORTED)})")
    d_in = as_int(cfg.get("d_in"), "d_in", cpath, lo=1)
    d_sae = as_int(cfg.get("d_sae"), "d_sae", cpath, lo=1)
    norm = cfg["normalize_activations"]
    if norm != "none":
        why = ("its scaling factor is not stored in the directory; fold it into the weights "
               "first (SAELens: sae.fold_activation_norm_scaling_factor)"
               if norm == "expected_average_only_in" else
               "per-token input normalisation is not supported")
        raise SAEFormatError(f"{cpath}: normalize_activations={norm!r:.40}: {why}")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise SAEFormatError(f"{cpath}: reshape_activations={cfg['reshape_activations']!r:.40} "
                             "(an attention hook_z SAE) is not supported")
    if cfg.get("hook_head_index") is not None:
        raise SAEFormatError(f"{cpath}: SAEs on one attention head (hook_head_index) are not "
                             "supported")
    apply_b_dec = cfg["apply_b_dec_to_input"]
    if not isinstance(apply_b_dec, bool):
        raise SAEFormatError(f"{cpath}: apply_b_dec_to_input must be true or false, got "
                             f"{apply_b_dec!r:.40}")
    k = None
    if arch in ("topk", "abstopk"):
        k = as_int(cfg.get("k", 100), "k", cpath, lo=1, hi=d_sae)
    elif arch in ("batchtopk", "matryoshka_batchtopk") and cfg.get("k") is not None:
        k = as_number(cfg["k"], "k", cpath, positive=True)
    # TopK inference configs default to no rescaling; the batch-TopK training configs (the only
    # form those are saved in) default to rescaling.
    rescale = cfg.get("rescale_acts_by_decoder_norm",
                      arch in ("batchtopk", "matryoshka_batchtopk"))
    if not isinstance(rescale, bool):
        raise SAEFormatError(f"{cpath}: rescale_acts_by_decoder_norm must be true or false")
    hook = cfg.get("hook_name")
    layer = None
    if hook is not None:
        layer = hook_site(hook, cpath).layer
        if cfg.get("hook_layer") is not None:
            as_int(cfg["hook_layer"], "hook_layer", cpath, lo=0, hi=MAX_LAYER)
    elif cfg.get("hook_layer") is not None:
        layer = as_int(cfg["hook_layer"], "hook_layer", cpath, lo=0, hi=MAX_LAYER)
    return {"architecture": arch, "activation": SUPPORTED[arch], "d_in": d_in, "d_sae": d_sae,
            "k": k, "dtype": as_dtype(cfg.get("dtype", "float32"), cpath), "layer": layer,
            "hook": hook, "apply_b_dec_to_input": apply_b_dec,
            "rescale": bool(rescale) and arch != "standard" and arch != "jumprelu",
            "model": cfg.get("model_name"), "version": _version(cfg, cpath)}


def fold_decoder_norms(W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_enc·n, b_enc·n, W_dec/n, n)`` with ``n_i = max(‖W_dec,i‖, 1e-8)``: the SAE that
    selects on ``pre·n`` and decodes ``f/n`` with the original weights (SAELens
    ``rescale_acts_by_decoder_norm``) becomes a plain one."""
    n = W_dec.norm(dim=-1).clamp(min=1e-8)
    return W_enc * n, b_enc * n, W_dec / n.unsqueeze(1), n


def load_saelens(path: Path, dtype: torch.dtype | None = None) -> SAE:
    """An SAELens directory as SAELens 6 would encode and decode it (see the module docstring);
    ``dtype`` replaces the config's ``dtype``, as ``SAE.load_from_disk(path, dtype=...)`` does."""
    c = read_saelens_config(path)
    if dtype is not None:
        c["dtype"] = dtype
    wpath = path / WEIGHTS
    t = read_safetensors(wpath)
    extra = sorted(set(t) - _ALLOWED_TENSORS)
    if extra:
        raise SAEFormatError(f"{wpath}: unexpected tensors {', '.join(extra)} for a "
                             f"{c['architecture']} SAE")
    d_in, d_sae = c["d_in"], c["d_sae"]
    if "scaling_factor" in t and not torch.all(t["scaling_factor"] == 1):
        raise SAEFormatError(f"{wpath}: a fine-tuning scaling_factor other than 1 is not "
                             "supported; fold it into W_dec first")
    # Fold in float32 (decoder norms of bf16 weights lose little that way), then cast.
    W_enc = need_tensor(t, "W_enc", (d_in, d_sae), wpath)
    b_enc = need_tensor(t, "b_enc", (d_sae,), wpath)
    W_dec = need_tensor(t, "W_dec", (d_sae, d_in), wpath)
    b_dec = need_tensor(t, "b_dec", (d_in,), wpath)
    thr = None
    act = c["activation"]
    if c["architecture"] == "jumprelu":
        if "threshold" in t:
            thr = need_tensor(t, "threshold", (d_sae,), wpath)
        elif "log_threshold" in t:
            thr = need_tensor(t, "log_threshold", (d_sae,), wpath).exp()
        else:
            raise SAEFormatError(f"{wpath}: a jumprelu SAE needs 'threshold' or 'log_threshold'")
    elif c["architecture"] in ("batchtopk", "matryoshka_batchtopk"):
        if "topk_threshold" not in t:
            raise SAEFormatError(f"{wpath}: a {c['architecture']} checkpoint needs its "
                                 "'topk_threshold' (saved by SAELens's training SAE)")
        raw = t["topk_threshold"]
        if raw.numel() != 1 or not torch.isfinite(raw.double()).all():
            raise SAEFormatError(f"{wpath}: topk_threshold must be one finite number")
        thr = torch.full((d_sae,), float(raw.double()))
    if c["rescale"]:
        W_enc, b_enc, W_dec, _ = fold_decoder_norms(W_enc, b_enc, W_dec)
    dt = c["dtype"]
    target = c["k"] if act != "relu" else None
    return SAE(W_enc.to(dt), b_enc.to(dt), W_dec.to(dt), b_dec.to(dt), act,
               thr.to(dt) if thr is not None else None,
               c["k"] if act in ("topk", "abstopk") else None, c["apply_b_dec_to_input"],
               c["layer"],
               {"format": "saelens", "path": str(path), "hook": c["hook"],
                "model": c["model"], "architecture": c["architecture"],
                "dtype": str(dt).removeprefix("torch."),
                "decoder_norms_folded": c["rescale"], "target_l0": target})
