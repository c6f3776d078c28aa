"""Checks the patch stage makes before it writes anything.

Why a module of its own: every check here must pass *before* the plan is written, because a
plan left behind by a refused command blocks the corrected rerun in the same directory ("already
holds a patch run"). Keeping them together makes that order easy to see and to keep.
"""

from __future__ import annotations

from pathlib import Path

from featurepath.config import RunConfig, parse_feature_key
from featurepath.errors import ConfigError

BACKENDS = ("local", "ray")


def check_backend(backend: str) -> str:
    """Refuse an unknown ``--backend`` before anything is loaded or planned."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use {' or '.join(BACKENDS)}")
    return backend


#: Planning memory per row and per unit, and trial-table bytes per row on disk. Measured
#: (tracemalloc, CPython 3.11, 70,000 rows in units of 64): a peak of ~100 B per row while
#: planning, ~180 B of plan JSON per unit; the constants below leave 2.5x and 8x headroom.
_PLAN_BYTES_PER_ROW = 250
_PLAN_BYTES_PER_UNIT = 1500
_PART_BYTES_PER_ROW = 300


def check_plan_size(root: Path, cfg: RunConfig, n_rows: int, n_record: int) -> int:
    """The batch size to plan with, after refusing a plan that cannot fit memory or disk.

    A ``batch_size`` larger than the whole run is cut to the run's row count: the Zarr arrays
    are ``n_units x batch_size`` rows, so an absurd batch size would otherwise allocate an
    absurd chunk for a handful of trials.
    """
    from featurepath.pipeline.budget import check_fits

    pc = cfg.patch
    batch = max(1, min(pc.batch_size, n_rows))
    n_units = -(-n_rows // batch)
    itemsize = 2 if pc.store_dtype == "float16" else 4
    memory = n_rows * _PLAN_BYTES_PER_ROW + n_units * _PLAN_BYTES_PER_UNIT
    disk = n_units * batch * max(n_record, 1) * 3 * itemsize + n_rows * _PART_BYTES_PER_ROW
    check_fits(f"patch ({n_rows:,} trials, {n_record} recorded features)", memory, disk, root,
               "lower patch.trials, the features or the recorded features")
    return batch


def validate_features(feats: list[str], record: list[str], saes) -> None:
    """Every patched and recorded feature must exist in a loaded SAE (checked before planning,
    so a typo leaves no plan behind to block the corrected rerun)."""
    for kind, keys in (("feature", feats), ("recorded feature", record)):
        for f in keys:
            layer, fid = parse_feature_key(f)
            if layer not in saes:
                raise ConfigError(f"{kind} {f}: no SAE for layer {layer} (have layers "
                                  f"{sorted(saes)})")
            if fid >= saes[layer].d_sae:
                raise ConfigError(f"{kind} {f}: id beyond the SAE's {saes[layer].d_sae} features "
                                  f"(0..{saes[layer].d_sae - 1})")


__all__ = ["BACKENDS", "check_backend", "check_plan_size", "validate_features"]
