"""Resolving a run's config and loading its model and SAEs, shared by the stage commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featurepath.config import RunConfig, load_config, save_config


def resolve_config(run_dir: Path, config: Path | None, **overrides: Any) -> RunConfig:
    """``--config FILE`` > ``RUN/config.yaml`` > defaults; then non-None command-line overrides
    (dotted keys like ``patch.trials``). The result is written back to ``RUN/config.yaml`` so
    the run directory always says how it was made."""
    if config is not None:
        cfg = load_config(config)
    elif (run_dir / "config.yaml").exists():
        cfg = load_config(run_dir / "config.yaml")
    else:
        cfg = RunConfig()
    data = cfg.model_dump(mode="json")
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    from featurepath.config import config_from_dict

    cfg = config_from_dict(data, "command line")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    return cfg


def load_runtime(cfg: RunConfig, progress: bool = True):
    """``(model, tokenizer, {layer: SAE})`` for a config."""
    from featurepath.models import load_model
    from featurepath.sae.registry import load_sae_set

    model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    saes = load_sae_set(cfg.saes, model, tok, progress=progress)
    return model, tok, saes
