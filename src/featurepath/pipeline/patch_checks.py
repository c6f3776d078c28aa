"""Checks the patch stage makes before it writes anything.

Why a module of its own: every check here must pass *before* the plan is written, because a
plan left behind by a refused command blocks the corrected rerun in the same directory ("already
holds a patch run"). Keeping them together makes that order easy to see and to keep.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurepath.choices import BACKENDS
from featurepath.config import ConditionSpec, RunConfig, parse_feature_key
from featurepath.errors import ConfigError


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


def _amplifies(c: ConditionSpec) -> bool:
    """A scale clamp that would change an active feature (scale 1 is a no-op by design)."""
    return c.patch == "scale" and c.scale is not None and float(c.scale) != 1.0


def inactive_scale_clamps(acts: Mapping[str, np.ndarray], feats: list[str],
                          conditions: Sequence[ConditionSpec]) -> list[tuple[str, str, int, int]]:
    """``(feature, condition, prompts where its clamp is zero, prompts)`` for every scale
    condition (scale != 1) whose clamp has size zero at the decision token on some prompt.

    ``acts[context]`` holds the features' decision-token activations ``[prompt, feature]``
    (columns in ``feats`` order). A scale clamp moves an activation ``a`` by ``(scale - 1)·a``,
    zero exactly where the feature is inactive; null arms write the same size along their
    directions, so they are zero there as well. (Value clamps are left alone: ``v - a`` is zero
    only by coincidence, and scale 1 is a deliberate no-op, e.g. an A/A run.)
    """
    out = []
    for c in conditions:
        if not _amplifies(c) or c.context not in acts:
            continue
        a = np.asarray(acts[c.context])
        for j, f in enumerate(feats):
            k = int(np.sum(a[:, j] == 0))
            if k:
                out.append((f, c.name, k, int(a.shape[0])))
    return out


def amplified_contexts(conditions: Sequence[ConditionSpec]) -> set[str]:
    """Contexts with a scale clamp other than 1 (where an inactive feature's clamp is zero)."""
    return {c.context for c in conditions if _amplifies(c)}


def decision_activations_by_context(model: Any, tok: Any, saes: Any, feats: list[str],
                                    texts: Mapping[str, Sequence[str]], contexts: set[str],
                                    batch_size: int) -> dict[str, np.ndarray]:
    """``{context: [prompt, feature]}``: the features' decision-token activations over each of
    ``contexts``' prompts (columns in ``feats`` order), from one batched replay per context —
    shared by the measured patch values and the zero-clamp warning, so planning replays once."""
    from featurepath.engine.generate import replay
    from featurepath.engine.hooks import RecordSpec

    spec = RecordSpec([parse_feature_key(f) for f in feats])
    acts: dict[str, np.ndarray] = {}
    for ctx in sorted(contexts):
        prompts = list(texts.get(ctx, []))
        parts = [replay(model, tok, prompts[i:i + batch_size], saes=saes, record=spec)
                 .decision.float().cpu().numpy() for i in range(0, len(prompts), batch_size)]
        if parts:
            acts[ctx] = np.concatenate(parts)
    return acts


def warn_inactive_scale_clamps(feats: list[str], conditions: Sequence[ConditionSpec],
                               acts: Mapping[str, np.ndarray]) -> str:
    """Warn (one line) before planning when a scale clamp is zero at the decision token on
    some prompts, and return the message (``""`` when none is).

    Why before the run: such trials cannot move P(exit), and a feature inactive on every prompt
    of a context gets a point for a null band — its tests end up degenerate ("zero-size
    intervention"). ``acts`` holds the features' activations over the prompts of (at least)
    the :func:`amplified_contexts` (:func:`decision_activations_by_context`)."""
    hits = sorted(inactive_scale_clamps(acts, feats, conditions),
                  key=lambda h: (-h[2] / h[3], h[0], h[1]))
    if not hits:
        return ""
    shown = ", ".join(f"{f} under {c} on {k} of {n} prompts" for f, c, k, n in hits[:5])
    more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
    msg = (f"{len(hits)} scale clamp(s) are zero at the decision token on some prompts, where "
           "the feature is inactive (scale x 0 = 0, and so are its null arms), so the readout "
           f"cannot move there: {shown}{more}; a value clamp (patch: value) moves an "
           "inactive feature")
    warnings.warn(msg, stacklevel=2)
    return msg


__all__ = ["BACKENDS", "amplified_contexts", "check_backend", "check_plan_size",
           "decision_activations_by_context", "inactive_scale_clamps", "validate_features",
           "warn_inactive_scale_clamps"]
