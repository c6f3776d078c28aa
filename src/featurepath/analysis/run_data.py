"""Read a run directory (trials table, activation store) and match patched trials to baselines.

Why a module of its own: causal and pathways must agree on *which* baseline a patched condition
is compared with and *which* baseline trial a patched trial is paired with. Getting the baseline
wrong was the central flaw of the original study: reconstruction-patched runs were compared with
baselines that never passed through the SAE, so the replacement (about 47% reconstruction error),
not the clamped value, moved behaviour. Here the rule is written once:

- a baseline row has ``feature == ""`` (or ``patch == "none"``);
- a ``delta`` (error-preserving) condition is compared with the ``delta`` baseline of the same
  prompt context;
- a ``reconstruct`` condition is compared with the ``reconstruct`` baseline of the same context
  *and the same layer* (the no-clamp reconstruction of that layer), never with a plain baseline;
- trials pair by trial index within a context (and by ``prompt_id`` when both sides carry one):
  baseline trial i and patched trial i of one context saw the same prompt.

Store schema assumed (written by the patch stage): ``trials.parquet`` with one row per trial and
``activations.zarr`` (zarr v3 group) with arrays ``decision``/``gen_mean``/``gen_max``
[n_rows, n_rec] and coordinates ``rec_layer``/``rec_feature`` [n_rec]; ``trials.row`` indexes the
arrays' first axis.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from featurepath.errors import DataError, FeaturepathError
from featurepath.rundir import (
    ANALYSIS_COLUMNS,
    SIGNALS,
    RunDir,
    parse_feature_key,
)

__all__ = [
    "ANALYSIS_COLUMNS",
    "SIGNALS",
    "PatchedGroup",
    "load_trials",
    "normalise_trials",
    "load_activations",
    "load_discover",
    "is_baseline",
    "patched_groups",
    "pair_trials",
]


# Columns without which no analysis can run; the others get documented defaults.
_REQUIRED = ("feature", "layer", "condition", "context", "patch", "trial", "action", "valid")
_DEFAULTS: dict[str, object] = {
    "unit": -1,
    "row": -1,
    "feature_id": -1,
    "value": np.nan,
    "scale": np.nan,
    "method": "delta",
    "seed": -1,
    "prompt_id": None,
    "response": "",
    "bet": np.nan,
    "p_stop": np.nan,
    "n_new_tokens": 0,
}



def _parse_feature_id(name: str) -> int:
    """``"L12-345"`` -> 345; anything else (a baseline's ``""``) -> -1."""
    try:
        return parse_feature_key(name)[1]
    except FeaturepathError:
        return -1


def normalise_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Check required columns and coerce dtypes so the analyses can rely on them.

    Missing optional columns get defaults (``method="delta"``, ``prompt_id=None``, NaN bets and
    P(stop)); ``action`` values other than "bet"/"stop" become None (an unparsed response is not
    a decision); an invalid trial never counts as a stop.
    """
    missing = [c for c in _REQUIRED if c not in trials.columns]
    if missing:
        raise DataError(f"trials table lacks column(s) {', '.join(missing)}")
    df = trials.copy()
    for col, default in _DEFAULTS.items():
        if col not in df.columns:
            df[col] = default
    df["feature"] = df["feature"].fillna("").astype(str)
    df["layer"] = pd.to_numeric(df["layer"], errors="coerce").fillna(-1).astype(np.int64)
    fid = pd.to_numeric(df["feature_id"], errors="coerce").fillna(-1).astype(np.int64)
    parsed = df["feature"].map(_parse_feature_id)
    df["feature_id"] = np.where((fid < 0) & (df["feature"] != ""), parsed, fid).astype(np.int64)
    df["condition"] = df["condition"].fillna("").astype(str)
    df["context"] = df["context"].fillna("").astype(str)
    df["patch"] = df["patch"].fillna("none").astype(str)
    df["method"] = df["method"].fillna("delta").astype(str)
    df["trial"] = pd.to_numeric(df["trial"], errors="coerce").fillna(-1).astype(np.int64)
    df["row"] = pd.to_numeric(df["row"], errors="coerce").fillna(-1).astype(np.int64)
    df["valid"] = df["valid"].fillna(False).astype(bool)
    act = df["action"].astype(object)
    df["action"] = act.where(act.isin(["bet", "stop"]), None)
    for col in ("bet", "p_stop", "value", "scale"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    # plain object columns: the analyses slice thousands of small groups, and taking rows of
    # Arrow-backed strings costs several times more per slice
    for col in ("feature", "condition", "context", "patch", "method", "action", "prompt_id"):
        df[col] = df[col].astype(object)
    return df.reset_index(drop=True)


def load_trials(run_dir: str | Path) -> pd.DataFrame:
    """Read and normalise ``RUN/trials.parquet``; DataError when it is missing or unreadable."""
    path = RunDir(run_dir).trials
    if not path.is_file():
        raise DataError(f"no {path.name} in {run_dir}: run `featurepath patch` first")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise DataError(f"cannot read {path}: {exc}") from exc
    if df.empty:
        raise DataError(f"{path} has no trials")
    return normalise_trials(df)


def load_activations(
    run_dir: str | Path, signal: str = "decision"
) -> tuple[NDArray[np.floating], NDArray[np.int64], NDArray[np.int64]]:
    """Read one activation signal: ``(array [n_rows, n_rec], rec_layer, rec_feature)``.

    The array is returned as stored (float16) so a large store is not doubled in memory; the
    analyses convert only the rows they use.
    """
    import zarr

    if signal not in SIGNALS:
        raise DataError(f"unknown signal {signal!r}; choose one of {', '.join(SIGNALS)}")
    path = RunDir(run_dir).activations
    if not path.exists():
        raise DataError(f"no {path.name} in {run_dir}: run `featurepath patch` first")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise DataError(f"cannot open {path} as a zarr group: {exc}") from exc
    names = set(group.array_keys())
    for need in (signal, "rec_layer", "rec_feature"):
        if need not in names:
            raise DataError(f"{path} has no array {need!r} (found: {', '.join(sorted(names))})")
    acts = np.asarray(group[signal][:])
    rec_layer = np.asarray(group["rec_layer"][:], dtype=np.int64).ravel()
    rec_feature = np.asarray(group["rec_feature"][:], dtype=np.int64).ravel()
    if acts.ndim != 2 or acts.shape[1] != rec_layer.size or rec_layer.size != rec_feature.size:
        raise DataError(
            f"{path}: {signal} has shape {acts.shape} but there are {rec_layer.size} rec_layer and "
            f"{rec_feature.size} rec_feature entries"
        )
    return acts, rec_layer, rec_feature


def load_discover(run_dir: str | Path) -> pd.DataFrame:
    """Read ``RUN/discover.parquet`` (the output of :func:`discover_features`)."""
    path = RunDir(run_dir).discover
    if not path.is_file():
        raise DataError(f"no {path.name} in {run_dir}: run `featurepath discover` first")
    return pd.read_parquet(path)


def is_baseline(trials: pd.DataFrame) -> pd.Series:
    """Rows without an intervention: no feature, or patch "none"."""
    return (trials["feature"] == "") | (trials["patch"] == "none")


@dataclass
class PatchedGroup:
    """One patched condition of one feature in one context, with the baseline it is tested on.

    ``baseline`` is None when the run holds no matching baseline (e.g. a reconstruct run without
    the per-layer no-clamp baseline); callers skip such groups and say so.
    """

    feature: str
    layer: int
    feature_id: int
    context: str
    condition: str
    patch: str
    method: str
    value: float
    scale: float
    patched: pd.DataFrame
    baseline: pd.DataFrame | None
    baseline_condition: str


def _first_finite(s: pd.Series) -> float:
    v = s.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v[0]) if v.size else float("nan")


def _find_baseline(base: pd.DataFrame, context: str, method: str, layer: int) -> pd.DataFrame:
    in_ctx = base[base["context"] == context]
    if method == "reconstruct":
        # the no-clamp reconstruction of the same layer; never a baseline that skipped the SAE
        return in_ctx[(in_ctx["method"] == "reconstruct") & (in_ctx["layer"] == layer)]
    same = in_ctx[(in_ctx["method"] == method) & (in_ctx["layer"] < 0)]
    if same.empty:
        same = in_ctx[(in_ctx["method"] != "reconstruct") & (in_ctx["layer"] < 0)]
    return same


def patched_groups(trials: pd.DataFrame) -> Iterator[PatchedGroup]:
    """Yield every (feature, context, condition, method, value, scale) group of patched trials.

    Stable order (sorted keys).

    ``trials`` must be normalised (see :func:`normalise_trials`).
    """
    base_mask = is_baseline(trials)
    base = trials[base_mask]
    patched = trials[~base_mask]
    # value and scale are part of the key: a user-named condition may sweep several scales
    keys = ["feature", "layer", "feature_id", "context", "condition", "patch", "method",
            "value", "scale"]
    for key, grp in patched.groupby(keys, sort=True, dropna=False):
        feature, layer, feature_id, context, condition, patch, method, _, _ = key
        b = _find_baseline(base, context, method, int(layer))
        bcond = ",".join(sorted(b["condition"].unique())) if not b.empty else ""
        yield PatchedGroup(
            feature=str(feature), layer=int(layer), feature_id=int(feature_id),
            context=str(context), condition=str(condition), patch=str(patch), method=str(method),
            value=_first_finite(grp["value"]), scale=_first_finite(grp["scale"]),
            patched=grp, baseline=None if b.empty else b, baseline_condition=bcond,
        )


def pair_trials(
    patched: pd.DataFrame, baseline: pd.DataFrame, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Inner-join patched and baseline trials of one context on the prompt they share.

    Key: the trial index, plus ``prompt_id`` when every row on both sides has one (so a
    mismatched prompt is never paired). Columns of the two sides get suffixes ``_p`` and ``_b``.
    Duplicate keys keep their first row, so each baseline trial is used at most once per group.
    ``columns`` limits the joined columns (besides the keys): merging wide frames with the
    response text is the slow part when thousands of groups are paired.
    """
    keys = ["trial"]
    if patched["prompt_id"].notna().all() and baseline["prompt_id"].notna().all():
        keys.append("prompt_id")
    # a dict join instead of DataFrame.merge: groups are small and there are thousands of them
    kp = list(zip(*(patched[k].tolist() for k in keys), strict=True))
    kb = list(zip(*(baseline[k].tolist() for k in keys), strict=True))
    first_b: dict[tuple, int] = {}
    for j, k in enumerate(kb):
        first_b.setdefault(k, j)
    seen: set[tuple] = set()
    ip: list[int] = []
    ib: list[int] = []
    for i, k in enumerate(kp):
        if k in seen or k not in first_b:
            continue
        seen.add(k)
        ip.append(i)
        ib.append(first_b[k])
    order = sorted(range(len(ip)), key=lambda r: kp[ip[r]])
    ia = np.asarray([ip[r] for r in order], dtype=np.int64)
    ja = np.asarray([ib[r] for r in order], dtype=np.int64)
    cols = [c for c in (columns if columns is not None else patched.columns) if c not in keys]
    out: dict[str, object] = {k: patched[k].to_numpy()[ia] for k in keys}
    for c in cols:
        out[f"{c}_p"] = patched[c].to_numpy()[ia]
        out[f"{c}_b"] = baseline[c].to_numpy()[ja]
    return pd.DataFrame(out)
