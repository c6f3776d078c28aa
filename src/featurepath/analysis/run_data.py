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
  baseline trial i and patched trial i of one context saw the same prompt;
- the unit of a paired test is the *distinct prompt*, not the trial (:func:`prompt_pairs`):
  with more trials than prompts each prompt is repeated, and its decision-token values are the
  same on every repeat, so counting repeats as pairs would multiply the evidence of one prompt
  (pseudo-replication; with 8 prompts and 32 trials a null effect came out at p = 4e-5). Repeats
  are averaged to one value per prompt and arm, and a comparison with fewer than two distinct
  prompts is degenerate by design, whatever rounding noise its trials carry.

Store schema assumed (written by the patch stage): ``trials.parquet`` with one row per trial and
``activations.zarr`` (zarr v3 group) with arrays ``decision``/``gen_mean``/``gen_max``
[n_rows, n_rec] and coordinates ``rec_layer``/``rec_feature`` [n_rec]; ``trials.row`` indexes the
arrays' first axis.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

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
    "reproduces_baseline",
    "PromptPairs",
    "prompt_pairs",
    "warn_repeated_prompts",
]


#: Trial columns renamed when they became task-neutral (featurepath 0.x, issue 23): old run
#: directories keep the old names. Quoting the old names is unavoidable here.
LEGACY_COLUMNS = {"bet": "amount", "p_stop": "readout"}

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
    "amount": np.nan,
    "readout": np.nan,
    "n_new_tokens": 0,
    "arm": None,
    "null_index": -1,
}



def _parse_feature_id(name: str) -> int:
    """``"L12-345"`` -> 345; anything else (a baseline's ``""``) -> -1."""
    try:
        return parse_feature_key(name)[1]
    except FeaturepathError:
        return -1


def normalise_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Check required columns and coerce dtypes so the analyses can rely on them.

    Missing optional columns get defaults (``method="delta"``, ``prompt_id=None``, NaN amounts
    and readouts); an empty or missing ``action`` becomes None (an unparsed response is not a
    decision); an invalid trial never counts as an exit. Tables written before the columns were
    task-neutral (:data:`LEGACY_COLUMNS`) are read under the current names.
    """
    trials = trials.rename(columns={k: v for k, v in LEGACY_COLUMNS.items()
                                    if k in trials.columns and v not in trials.columns})
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
    # tables from before control arms: no feature or patch "none" is the baseline
    derived = np.where((df["feature"] == "") | (df["patch"] == "none"), "baseline", "feature")
    df["arm"] = df["arm"].where(df["arm"].notna(), pd.Series(derived, index=df.index)).astype(str)
    df["null_index"] = pd.to_numeric(df["null_index"], errors="coerce").fillna(-1) \
        .astype(np.int64)
    # named by its layer, like a feature; its null arms (no feature) carry the same name so
    # that they form the direction's band
    direction = (df["arm"] == "direction") | ((df["arm"] == "null") & (df["feature"] == ""))
    df.loc[direction, "feature"] = [f"L{lay}~direction" for lay in df.loc[direction, "layer"]]
    df["method"] = df["method"].fillna("delta").astype(str)
    df["trial"] = pd.to_numeric(df["trial"], errors="coerce").fillna(-1).astype(np.int64)
    df["row"] = pd.to_numeric(df["row"], errors="coerce").fillna(-1).astype(np.int64)
    df["valid"] = df["valid"].fillna(False).astype(bool)
    act = df["action"].astype(object)
    df["action"] = act.where(act.notna() & (act.astype(str) != ""), None)
    for col in ("amount", "readout", "value", "scale"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    # plain object columns: the analyses slice thousands of small groups, and taking rows of
    # Arrow-backed strings costs several times more per slice
    for col in ("feature", "condition", "context", "patch", "method", "action", "prompt_id",
                "arm"):
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


def load_carry(run_dir: str | Path) -> dict[str, NDArray[np.float32]]:
    """``{source feature: carry row over the recorded features}`` (see ``RunStore.create``);
    empty for stores written before it existed."""
    import zarr

    path = RunDir(run_dir).activations
    try:
        group = zarr.open_group(str(path), mode="r")
        if "carry" not in set(group.array_keys()):
            return {}
        arr = np.asarray(group["carry"][:], dtype=np.float32)
        sources = list(group.attrs.get("carry_sources", []))
    except Exception:  # noqa: BLE001 - a store without it still analyses
        return {}
    return {s: arr[i] for i, s in enumerate(sources) if i < arr.shape[0]}


def load_discover(run_dir: str | Path) -> pd.DataFrame:
    """Read ``RUN/discover.parquet`` (the output of :func:`discover_features`)."""
    path = RunDir(run_dir).discover
    if not path.is_file():
        raise DataError(f"no {path.name} in {run_dir}: run `featurepath discover` first")
    return pd.read_parquet(path)


def is_baseline(trials: pd.DataFrame) -> pd.Series:
    """Rows without an intervention (``arm == "baseline"``; in tables without the column: no
    feature, or patch "none")."""
    if "arm" in trials.columns:
        return trials["arm"] == "baseline"
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
    arm: str = "feature"
    null_index: int = -1


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
            "value", "scale", "arm", "null_index"]
    for key, grp in patched.groupby(keys, sort=True, dropna=False):
        feature, layer, feature_id, context, condition, patch, method, _, _, arm, k = key
        b = _find_baseline(base, context, method, int(layer))
        bcond = ",".join(sorted(b["condition"].unique())) if not b.empty else ""
        yield PatchedGroup(
            feature=str(feature), layer=int(layer), feature_id=int(feature_id),
            context=str(context), condition=str(condition), patch=str(patch), method=str(method),
            value=_first_finite(grp["value"]), scale=_first_finite(grp["scale"]),
            patched=grp, baseline=None if b.empty else b, baseline_condition=bcond,
            arm=str(arm), null_index=int(k),
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


SAME_P_STOP_TOL = 1e-6
"""How far a trial's P(exit) may lie from its baseline trial's and still be the same value: the
engine's float32 results for one prompt differ by ~1e-8 between work units (batch makeup)."""


def reproduces_baseline(patched: pd.DataFrame, baseline: pd.DataFrame,
                        tol: float = SAME_P_STOP_TOL) -> bool:
    """True when every patched trial has a baseline trial (same trial index and prompt, as
    :func:`pair_trials` pairs them) with the same answer (action, validity, bet) and a P(exit)
    within ``tol``: the patch changed nothing, trial for trial.

    Why trial for trial: with seed-matched trials (``patch.seed_matched``, the default) trial t
    of every arm has the same prompt and sampling seed, so an intervention of size zero gives
    back the baseline's very answers, and a non-zero one moves P(exit), a continuous readout,
    by more than rounding. Without seed matching, sampled answers differ and this is False
    (unless decoding is greedy), so nothing is ever called unchanged by mistake.
    """
    cols = ["action", "valid", "amount", "readout"]
    pr = pair_trials(patched, baseline, columns=cols)
    if patched.empty or len(pr) != len(patched):
        return False
    for c in cols[:3]:
        a, b = pr[f"{c}_p"], pr[f"{c}_b"]
        if not ((a == b) | (a.isna() & b.isna())).all():
            return False
    ps, pb = pr["readout_p"].to_numpy(float), pr["readout_b"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        close = (np.abs(ps - pb) <= tol) | (np.isnan(ps) & np.isnan(pb))
    return bool(close.all())


@dataclass
class PromptPairs:
    """The distinct prompts a patched group shares with its baseline: the unit of paired tests.

    ``codes_p[i]`` is the index (into ``prompts``) of the prompt of row i of the patched frame,
    ``-1`` when the baseline never saw that prompt; likewise ``codes_b`` for the baseline frame.
    ``n_trials_p``/``n_trials_b`` count the rows that take part. ``repeated`` is True when some
    prompt appears more than once on either side (trials exceed prompts).
    """

    prompts: list[object]
    codes_p: NDArray[np.int64]
    codes_b: NDArray[np.int64]
    n_trials_p: int
    n_trials_b: int

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    @property
    def repeated(self) -> bool:
        return self.n_trials_p > self.n_prompts or self.n_trials_b > self.n_prompts

    def means(self, values_p: ArrayLike, values_b: ArrayLike
              ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per-prompt means of row-aligned values (1-D, or 2-D [rows, columns]) of each arm.

        Non-finite values are left out of a prompt's mean; a prompt with none left is NaN.
        """
        return (_group_mean(values_p, self.codes_p, self.n_prompts),
                _group_mean(values_b, self.codes_b, self.n_prompts))


def _group_mean(values: ArrayLike, codes: NDArray[np.int64], k: int) -> NDArray[np.float64]:
    x = np.asarray(values, dtype=np.float64)
    if x.shape[0] != codes.size:
        raise DataError(f"{x.shape[0]} values for {codes.size} rows")
    keep = codes >= 0
    x, c = x[keep], codes[keep]
    finite = np.isfinite(x)
    total = np.zeros((k,) + x.shape[1:])
    count = np.zeros((k,) + x.shape[1:])
    np.add.at(total, c, np.where(finite, x, 0.0))
    np.add.at(count, c, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def prompt_pairs(patched: pd.DataFrame, baseline: pd.DataFrame) -> PromptPairs:
    """Match the two arms of one comparison by distinct prompt (see the module docstring).

    The prompt is ``prompt_id`` when every row of both arms carries one; otherwise (tables of
    other tools without prompt ids) the trial index stands in for it, as :func:`pair_trials`
    does. Prompts are in sorted order, so results do not depend on row order.
    """
    use_id = bool(patched["prompt_id"].notna().all() and baseline["prompt_id"].notna().all())
    col = "prompt_id" if use_id else "trial"
    kp = patched[col].astype(str).to_numpy() if use_id else patched[col].to_numpy()
    kb = baseline[col].astype(str).to_numpy() if use_id else baseline[col].to_numpy()
    shared = sorted(set(kp.tolist()) & set(kb.tolist()))
    index = {k: i for i, k in enumerate(shared)}
    codes_p = np.fromiter((index.get(k, -1) for k in kp.tolist()), dtype=np.int64, count=kp.size)
    codes_b = np.fromiter((index.get(k, -1) for k in kb.tolist()), dtype=np.int64, count=kb.size)
    return PromptPairs(shared, codes_p, codes_b, int((codes_p >= 0).sum()),
                       int((codes_b >= 0).sum()))


def warn_repeated_prompts(n_repeated: int, n_groups: int) -> None:
    """Say once per stage that repeats of a prompt were averaged, not counted as pairs."""
    if n_repeated:
        warnings.warn(
            f"{n_repeated} of {n_groups} comparison(s) have more trials than distinct prompts: "
            "a prompt's repeats carry no new information at the decision token, so paired "
            "tests use one value per distinct prompt (raise patch.n_prompts for more power)",
            stacklevel=3,
        )


# ------------------------------------------------------------ trial outcomes (shared)


def usable_mask(df: pd.DataFrame) -> NDArray[np.bool_]:
    """Valid trials with a parsed decision: the bet sample draws from these."""
    return df["valid"].to_numpy(dtype=bool) & df["action"].notna().to_numpy()

def action_counts(df: pd.DataFrame, actions: tuple[str, ...] | list[str]) -> tuple[int, int]:
    """(valid decisions whose action is in ``actions``, parsed decisions): every decision the
    parser read, valid or not, is in the denominator, so a patch that turns stakes into
    over-balance (invalid) stakes cannot raise the exit rate by shrinking it; an invalid trial
    never counts (``MetricSpec(kind="rate")``)."""
    decided = df["action"].notna().to_numpy()
    hits = decided & df["valid"].to_numpy(dtype=bool) & df["action"].isin(list(actions)).to_numpy()
    return int(hits.sum()), int(decided.sum())

def valid_amounts(df: pd.DataFrame) -> NDArray[np.float64]:
    """Finite amounts of valid decisions (``MetricSpec(kind="amount")``); an exit has none."""
    m = usable_mask(df)
    v = df["amount"].to_numpy(dtype=float)[m]
    return v[np.isfinite(v)]
