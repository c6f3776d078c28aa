"""Cross-task transfer: patch another run's behavioural direction (and, optionally, its
confirmed features) into this run's task (``patch.direction_from``).

Why: the original study's 2026 revision plays three games with the same −10% expected value and
asks whether a direction found in one moves behaviour in another. The question is only
believable with the same controls as a run's own direction, so the transferred direction is
patched exactly where this run's own would be (every scale condition, with the same null arms of
its size, ``patch.direction_nulls``); only where the vector comes from changes, and the run
records that (``RUN/patch/direction_source.json``) so that causal and the report can say it.

Which vector: the other run's own ``patch/directions.safetensors`` where it covers a layer (the
vector that run patched), else computed from the other run's play decisions with *its* task's
continue / exit split. Nothing is written into the other run. The model must be the same (a
residual direction means nothing in another model's stream); with ``patch.transfer_features``
the SAEs must be the same too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from featurepath.config import RunConfig, load_config
from featurepath.errors import ConfigError, DataError
from featurepath.rundir import RunDir, atomic_write, feature_key, parse_feature_key, parse_test_key


def source_config(source: str | Path) -> tuple[RunDir, RunConfig]:
    """The other run and its config (``config.yaml``, else play's); ``ConfigError`` naming
    what is missing."""
    src = RunDir(Path(source).expanduser())
    if not src.root.is_dir():
        raise ConfigError(f"patch.direction_from: {src.root} is not a directory")
    for path in (src.config, src.play_config):
        if path.exists():
            return src, load_config(path)
    raise ConfigError(f"patch.direction_from: {src.root} is not a featurepath run (no "
                      "config.yaml); give the directory of a run that played its task")


def check_compatible(cfg: RunConfig, other: RunConfig, src: RunDir, features: bool) -> None:
    """Same model (and same SAEs when features transfer), else one clear error."""
    if other.model != cfg.model:
        raise ConfigError(f"patch.direction_from: {src.root} ran model {other.model!r}, this "
                          f"run uses {cfg.model!r}; a residual direction only transfers within "
                          "one model")
    if features and other.saes != cfg.saes:
        raise ConfigError(f"patch.transfer_features: {src.root} used SAEs {other.saes!r}, this "
                          f"run uses {cfg.saes!r}; its features are not this run's")


def transferred_directions(source: str | Path, cfg: RunConfig, model: Any, tok: Any,
                           layers: list[int], work_dir: str | Path
                           ) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """``({layer: unit vector}, provenance)`` for ``layers`` from the run at ``source``."""
    from featurepath.pipeline.controls import behavioural_directions, load_directions
    from featurepath.tasks import get_task

    src, other = source_config(source)
    check_compatible(cfg, other, src, cfg.patch.transfer_features)
    stored = load_directions(src.directions) if src.directions.exists() else {}
    out = {lay: stored[lay].float() for lay in layers if lay in stored}
    how = {str(lay): "stored (the vector that run patched)" for lay in out}
    missing = [lay for lay in layers if lay not in out]
    if missing:
        if not src.decisions.exists():
            raise DataError(f"patch.direction_from: {src.root} has no behavioural direction "
                            f"for layer(s) {missing} and no play decisions to build one from "
                            f"({src.decisions}); run `featurepath play` there first")
        built = behavioural_directions(model, tok, src.root, missing, task=get_task(other.task),
                                       work_dir=work_dir)
        out.update(built)
        how.update({str(lay): "built from its play decisions" for lay in built})
    digest = hashlib.sha256()
    for lay in sorted(out):
        digest.update(out[lay].contiguous().numpy().tobytes())
    provenance = {"run": str(src.root.resolve()), "task": other.task, "model": other.model,
                  "saes": other.saes, "seed": other.seed, "layers": how,
                  "sha256": digest.hexdigest()}
    return out, provenance


def record_source(rd: RunDir, provenance: dict[str, Any]) -> None:
    """Write ``RUN/patch/direction_source.json`` (read back by
    :mod:`featurepath.analysis.direction_source`)."""
    rd.patch.mkdir(parents=True, exist_ok=True)
    atomic_write(rd.direction_source, json.dumps(provenance, indent=2))


def transfer_features(source: str | Path, cfg: RunConfig) -> list[str]:
    """The other run's confirmed SAE features (``confirm/verdicts.parquet``, ``significant``;
    a confirmed behavioural direction transfers through ``direction_from`` itself), in layer
    order; ``[]`` when it confirmed none."""
    import pandas as pd

    src, other = source_config(source)
    check_compatible(cfg, other, src, True)
    if not src.verdicts.exists():
        raise DataError(f"patch.transfer_features: {src.root} has no confirmation "
                        f"({src.verdicts}); run `featurepath confirm` there first")
    v = pd.read_parquet(src.verdicts)
    keys = {str(f) for f in v.loc[v["significant"].astype(bool), "feature"]
            if parse_test_key(str(f))[1] >= 0}
    return sorted((feature_key(*parse_feature_key(k)) for k in keys), key=parse_feature_key)


__all__ = ["record_source", "transfer_features", "transferred_directions"]
