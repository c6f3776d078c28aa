"""SAE sets: one SAE per layer, from featurepath's cache of trained embedded SAEs or from
directories of any supported format.

The embedded model has no public SAEs, so ``"embedded"`` means the TopK SAEs featurepath trains
itself, cached under ``home()/saes/<model>/<preset>-v2/L<layer>/`` (:func:`embedded_set_dir`). Two presets trade time for
quality: ``quick`` (a few minutes on two CPU cores, the default) and ``full``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from featurepath.embedded import EMBEDDED_LAYERS, SAE_PRESETS, Preset
from featurepath.errors import ConfigError, SAEFormatError
from featurepath.models import EMBEDDED, EMBEDDED_NAME
from featurepath.paths import home
from featurepath.sae.formats import FP_CONFIG, detect_format, load_sae
from featurepath.sae.model import SAE


def get_preset(name: str) -> Preset:
    if name not in SAE_PRESETS:
        raise ConfigError(f"unknown SAE preset {name!r}; use one of {sorted(SAE_PRESETS)}")
    return SAE_PRESETS[name]


def embedded_set_dir(preset: str = "quick") -> Path:
    """The cache folder of an embedded preset's SAE set: the one place that names it, where
    ``sae train`` writes, ``--saes embedded`` loads and ``sae list`` looks."""
    get_preset(preset)
    # v2: every layer trained from its own seed (sae.train.layer_seed); v1 sets shared one
    return home() / "saes" / EMBEDDED_NAME / f"{preset}-v2"


def _is_trained(path: Path) -> bool:
    return (path / FP_CONFIG).exists() and (path / "sae.safetensors").exists()


def _check_embedded_model(model: Any) -> None:
    from featurepath.models import d_model, n_layers

    if d_model(model) != 576 or n_layers(model) != 30:
        raise SAEFormatError(
            f"the embedded SAEs belong to {EMBEDDED_NAME} (30 layers, d_model 576); this model "
            f"has {n_layers(model)} layers and d_model {d_model(model)}: train SAEs for it with "
            "`featurepath sae train --model SPEC --out DIR` and pass --saes DIR (or set saes: DIR "
            "in the run's config)")


class CorpusBuilder(Protocol):
    """Builds the training text of an SAE set: ``(model, tok, n_prompts, gen_tokens, seed,
    answered_fraction=..., progress=...) -> texts``. The task that the SAEs serve provides it
    (the default task's ``Task.corpus``); this package knows no task."""

    def __call__(self, model: Any, tok: Any, n_prompts: int, gen_tokens: int, seed: int, *,
                 answered_fraction: float, progress: bool) -> list[str]: ...


def ensure_embedded_saes(model: Any, tok: Any, corpus: CorpusBuilder, preset: str = "quick",
                         layers: list[int] | tuple[int, ...] | None = None,
                         progress: bool = True, dtype: str | None = None) -> dict[int, SAE]:
    """The embedded SAE set of ``preset``, training (with progress bars) only missing layers on
    the text ``corpus`` builds; loaded in ``dtype`` (default float32, as trained)."""
    from featurepath.sae.train import train_saes

    p = get_preset(preset)
    _check_embedded_model(model)
    root = embedded_set_dir(preset)
    layers = tuple(layers or EMBEDDED_LAYERS)
    missing = [layer for layer in layers if not _is_trained(root / f"L{layer}")]
    if missing:
        texts = corpus(model, tok, p.n_prompts, p.gen_tokens, p.seed,
                       answered_fraction=p.answered_fraction, progress=progress)
        train_saes(model, tok, texts, missing, p.train, root,
                   heldout_fraction=p.heldout_fraction, loss_texts=p.loss_texts,
                   model_name=EMBEDDED_NAME, progress=progress)
    return {layer: load_sae(root / f"L{layer}", d_model=576, dtype=dtype) for layer in layers}


def _sae_dirs(spec: str) -> list[Path]:
    """SAE directories named by a spec: one SAE dir, a dir of SAE dirs, or a comma list."""
    parts = [s.strip() for s in spec.split(",") if s.strip()]
    if len(parts) > 1:
        return [Path(s).expanduser() for s in parts]
    root = Path(parts[0] if parts else spec).expanduser()
    if not root.exists():
        raise SAEFormatError(f"SAE path {root} does not exist")
    if root.is_dir() and _looks_like_sae(root):
        return [root]
    if not root.is_dir():
        raise SAEFormatError(f"SAE path {root} is a file; give an SAE directory or a "
                             "directory of SAE directories")
    subs = sorted((d for d in root.iterdir() if d.is_dir() and _looks_like_sae(d)),
                  key=lambda d: d.name)
    if not subs:
        raise SAEFormatError(f"{root} holds no SAE directories (each needs sae.json, "
                             "hyperparams.json or cfg.json)")
    return subs


def _looks_like_sae(path: Path) -> bool:
    return any((path / n).exists() for n in (FP_CONFIG, "hyperparams.json", "cfg.json"))


def _parse_embedded(spec: str) -> str | None:
    """The preset of an ``embedded`` / ``embedded:<preset>`` spec, else None."""
    if spec == EMBEDDED:
        return "quick"
    if spec.startswith(EMBEDDED + ":"):
        preset = spec.split(":", 1)[1]
        get_preset(preset)
        return preset
    return None


def load_sae_set(spec: str, model: Any = None, tok: Any = None,
                 progress: bool = True, corpus: CorpusBuilder | None = None,
                 **load_options: Any) -> dict[int, SAE]:
    """``{layer: SAE}`` from a spec:

    - ``"embedded"`` / ``"embedded:quick"`` / ``"embedded:full"``: the cached trained SAEs of the
      embedded model; when missing they are trained first if a ``corpus`` builder and the
      ``model`` are given (loading never trains behind the caller's back), else refused;
    - a directory whose subdirectories are SAE directories (any format), or one SAE directory;
    - a comma-separated list of SAE directories.

    With a model, each SAE's d_model is checked against the model's hidden size.
    ``load_options`` (``llamascope_threshold``, ``llamascope_decoder_norm``, ``dtype``) go to
    :func:`~featurepath.sae.formats.load_sae` for every directory.
    """
    preset = _parse_embedded(spec)
    d = int(model.config.hidden_size) if model is not None else None
    if preset is not None:
        root = embedded_set_dir(preset)
        if all(_is_trained(root / f"L{layer}") for layer in EMBEDDED_LAYERS):
            if model is not None:
                _check_embedded_model(model)
            return {layer: load_sae(root / f"L{layer}", d_model=d, dtype=load_options.get("dtype"))
                    for layer in EMBEDDED_LAYERS}
        if model is None or corpus is None:
            raise SAEFormatError(f"the embedded SAEs ({preset}) are not trained yet: run "
                                 f"`featurepath sae train --preset {preset}`")
        if tok is None:
            from transformers import AutoTokenizer

            from featurepath.models import resolve_spec

            tok = AutoTokenizer.from_pretrained(resolve_spec(EMBEDDED))
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        return ensure_embedded_saes(model, tok, corpus, preset, progress=progress,
                                    dtype=load_options.get("dtype"))
    out: dict[int, SAE] = {}
    for path in _sae_dirs(spec):
        sae = load_sae(path, d_model=d, **load_options)
        if sae.layer in out:
            raise SAEFormatError(f"two SAEs for layer {sae.layer} in {spec!r} "
                                 f"({out[sae.layer].meta.get('path')} and {path})")
        out[int(sae.layer)] = sae
    return dict(sorted(out.items()))


def describe_sae_dir(path: Path) -> dict[str, Any]:
    """Layer, d_sae, d_model, format and activation of an SAE directory, read from its JSON only
    (LlamaScope weights are hundreds of MB; listing should not load them). The JSON is checked
    as loading checks it, so a listed SAE is one that loads."""
    from featurepath.sae.formats import read_featurepath_config, read_llamascope_config
    from featurepath.sae.saelens import read_saelens_config

    fmt = detect_format(path)
    info: dict[str, Any] = {"path": str(path), "format": fmt}
    if fmt == "featurepath":
        cfg = read_featurepath_config(path)
        info.update(layer=cfg["layer"], d_model=cfg["d_model"], d_sae=cfg["d_sae"],
                    activation=cfg["activation"], k=cfg["k"])
        if cfg["meta"].get("quality"):
            info["quality"] = cfg["meta"]["quality"]
    elif fmt == "llamascope":
        ls = read_llamascope_config(path)
        info.update(layer=ls.layer, d_model=ls.d_model, d_sae=ls.d_sae, activation="jumprelu",
                    hook=ls.hook)
    else:
        sl = read_saelens_config(path)
        info.update(layer=sl["layer"], d_model=sl["d_in"], d_sae=sl["d_sae"],
                    activation=sl["activation"], architecture=sl["architecture"],
                    hook=sl["hook"], k=sl["k"])
    return info


def list_saes(model_spec: str = EMBEDDED) -> list[dict[str, Any]]:
    """Known SAEs for a spec, from their JSON files: for ``embedded`` every trained layer of
    every preset (``preset`` key added), else the directories the spec names."""
    if model_spec == EMBEDDED or _parse_embedded(model_spec) is not None:
        presets = [_parse_embedded(model_spec)] if model_spec != EMBEDDED else list(SAE_PRESETS)
        rows = []
        for preset in presets:
            root = embedded_set_dir(str(preset))
            if not root.is_dir():
                continue
            for sub in sorted(root.iterdir(), key=lambda d: d.name):
                if _is_trained(sub):
                    rows.append({**describe_sae_dir(sub), "preset": preset})
        return sorted(rows, key=lambda r: (r["preset"], r["layer"] if r["layer"] is not None
                                           else -1))
    rows = [describe_sae_dir(p) for p in _sae_dirs(model_spec)]
    return sorted(rows, key=lambda r: r["layer"] if r["layer"] is not None else -1)

