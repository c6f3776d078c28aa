"""Resolving a run's config and loading its model and SAEs, shared by the stage commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featurepath.config import RunConfig, base_config, save_config, with_overrides


def resolve_config(run_dir: Path, config: Path | None, **overrides: Any) -> RunConfig:
    """``--config FILE`` > ``RUN/config.yaml`` > defaults; then non-None command-line overrides
    (dotted keys like ``patch.trials``). The result is written back to ``RUN/config.yaml`` so
    the run directory always says how it was made."""
    cfg = with_overrides(base_config(run_dir, config), overrides)
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
