"""Resolving a run's config and loading its model and SAEs, shared by the stage commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featurepath.config import RunConfig, base_config, save_config, with_overrides


def resolve_config(run_dir: Path, config: Path | None, **overrides: Any) -> RunConfig:
    """``--config FILE`` > ``RUN/config.yaml`` > defaults; then non-None command-line overrides
    (dotted keys like ``patch.trials``). Nothing is written here: a command that fails on bad
    input must not rewrite the run's config; :func:`record_config` does that once the stage
    has succeeded."""
    return with_overrides(base_config(run_dir, config), overrides)


def record_config(run_dir: Path, cfg: RunConfig) -> None:
    """Write ``RUN/config.yaml`` after a stage succeeded, so the run says how it was made."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")


def load_runtime(cfg: RunConfig, progress: bool = True):
    """``(model, tokenizer, {layer: SAE})`` for a config."""
    from featurepath.models import load_model
    from featurepath.sae.registry import load_sae_set

    model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    saes = load_sae_set(cfg.saes, model, tok, progress=progress)
    return model, tok, saes
