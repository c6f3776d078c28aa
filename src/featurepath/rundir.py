"""The run directory's contract: every path, every column list and the feature key, in one place.

Why one module: each stage reads what an earlier stage wrote, so the names of files and columns
are an interface between stages. Written once here, a stage cannot drift from its readers, and a
user reading this docstring knows what every file holds without reading the code that writes it.

Layout of ``RUN/`` (every path is a property of :class:`RunDir`)::

    config.yaml                  the resolved config; written once per stage, after it succeeded
    run.json                     provenance of a demo run (versions, timings)
    sae_quality.json             per-layer SAE quality of a demo run (FVU, L0, dead, loss)

    play/config.yaml             the config play ran with (a resume must keep it)
    play/parts/games-0003.parquet   decision points of one finished play unit
    play/decisions.parquet       one row per decision point          DECISION_COLUMNS
    play/metrics.{parquet,csv}   behaviour per (condition, bet_type)  Task.summary_columns

    splits/<stage>.parquet       the prompts a stage used and their half (screen / confirm)
    discover.parquet             one row per SAE feature tested       DISCOVER_COLUMNS
    discover_top.csv             its 200 strongest rows
    screen.parquet               first-order effect of every feature × context × intervention
                                 on P(exit) (attribution patching)    SCREEN_COLUMNS

    patch/config.yaml            the config the patch plan was made with
    patch/plan.json              the work units, fixed before any work starts (see PlanItem)
    patch/parts/u00042.parquet   trials of one committed unit          TRIAL_COLUMNS
    patch/commits/u00042.json    its commit record (SHA-256 of the part and the Zarr rows)
    patch/running/, failed.json  live unit marks (Ray) and units given up on
    patch/ray_drivers/           drivers that started a private Ray (the next start ends it
                                 if one died without doing so)
    trials.parquet               every committed unit, in unit order  TRIAL_COLUMNS
    activations.zarr             SIGNALS arrays [row, recorded feature] + rec_layer, rec_feature

    causal_tests.{parquet,csv}   one row per patched group × metric   CAUSAL_TEST_COLUMNS
    causal_features.{parquet,csv}  one row per patched feature        CAUSAL_FEATURE_COLUMNS
    dose_response.{parquet,csv}  scale trends per feature × context   DOSE_COLUMNS
    dose_slopes.{parquet,csv}    dose slopes against the null slopes  SLOPE_COLUMNS
    dose_curves.{parquet,csv}    mean outcome per dose of each ladder DOSE_CURVE_COLUMNS
    causal_null.{parquet,csv}    the null arms' own tests (the bands) CAUSAL_TEST_COLUMNS
    screen_check.{parquet,csv}   the screen against the real patch    SCREEN_CHECK_COLUMNS
    screen_check_points.{parquet,csv}  attribution vs patched effect  SCREEN_POINT_COLUMNS
    pathways/edges.{parquet,csv} one row per source × condition × target × signal  EDGE_COLUMNS
    pathways/chains.parquet      chains of edges with rising layers   CHAIN_COLUMNS
    pathways/layer_pairs.parquet edges per layer pair                 LAYER_PAIR_COLUMNS
    pathways/graph*.{graphml,json}  the edge graph (decision signal first)
    words.{parquet,csv}, words_summary.md   words per patched group    WORD_COLUMNS
    confirm/                     preregistration.json (first, hashed), arms.parquet, rounds/,
                                 verdicts.* (analysis.confirm.CONFIRM_COLUMNS; docs/confirm.md)
    report.html, figures/        the report and its static figures

Features are named ``L{layer}-{id}`` everywhere (:func:`feature_key`, :func:`parse_feature_key`).
Layer L is the output of decoder block L, which is ``output_hidden_states[L + 1]`` for every
block but the last, where transformers applies the final norm.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from featurepath.errors import ConfigError, StorageError, storage_error

# ------------------------------------------------------------------ feature keys
_KEY = re.compile(r"[Ll](\d+)-(\d+)")
_DIRECTION_KEY = re.compile(r"L(\d+)~direction")


def feature_key(layer: int, feature_id: int) -> str:
    """``(12, 345)`` -> ``"L12-345"``: the one spelling of a feature in files, configs and logs."""
    return f"L{int(layer)}-{int(feature_id)}"


def parse_feature_key(key: str) -> tuple[int, int]:
    """``"L12-345"`` -> ``(12, 345)``; anything else is one clear :class:`ConfigError`."""
    m = _KEY.fullmatch(str(key).strip())
    if not m:
        raise ConfigError(f"bad feature {key!r}: write features as L<layer>-<id>, e.g. L12-345")
    return int(m.group(1)), int(m.group(2))


def parse_test_key(key: str) -> tuple[int, int]:
    """What a confirmation may test: a feature ``"L12-345"`` -> ``(12, 345)``, or a layer's
    behavioural direction ``"L12~direction"`` -> ``(12, -1)``; else :func:`parse_feature_key`'s
    error."""
    m = _DIRECTION_KEY.fullmatch(str(key).strip())
    return (int(m.group(1)), -1) if m else parse_feature_key(key)


# ------------------------------------------------------------------ columns
SIGNALS = ("decision", "gen_mean", "gen_max")
"""Arrays of ``activations.zarr``: the recorded feature at the decision token, and its mean and
max over generated tokens."""

TRIAL_COLUMNS = ["unit", "row", "feature", "layer", "feature_id", "condition", "context", "patch",
                 "value", "scale", "method", "trial", "seed", "prompt_id", "response", "action",
                 "amount", "valid", "readout", "n_new_tokens", "arm", "null_index", "source"]
"""``trials.parquet``: ``action`` / ``amount`` / ``valid`` are the task's parse of ``response``,
``readout`` P(exit) at the decision token (the task's exit option). ``feature`` is ``""`` (layer/feature_id -1) for a baseline; a reconstruct
baseline carries its layer. ``row`` indexes the Zarr arrays. ``arm`` says what was patched
(:data:`ARMS`); a ``null`` row carries the feature whose magnitude it borrowed and its
``null_index`` (-1 on every other arm); a ``direction`` row carries its layer. ``source`` says
why a feature was patched (:data:`SOURCES`; ``""`` on baseline and direction rows; runs made
before it existed lack the column)."""

SOURCES = ("discover", "screen", "both", "random-check", "user", "transfer")
"""Why a feature is patched (see ``pipeline/candidates.py``)."""

ARMS = ("baseline", "feature", "null", "direction")
"""``baseline``: nothing patched (a reconstruct baseline: the SAE reconstruction only);
``feature``: an SAE feature clamped; ``null``: the same per-row magnitude along a random
direction; ``direction``: the behavioural direction (positive control)."""

ANALYSIS_COLUMNS = ("row", "feature", "layer", "feature_id", "condition", "context", "patch",
                    "method", "value", "scale", "trial", "prompt_id", "action", "amount", "valid",
                    "readout", "arm", "null_index")
"""The subset of TRIAL_COLUMNS that causal and pathways read."""

DECISION_COLUMNS = ["game_id", "condition", "bet_type", "game_index", "round", "prompt_id",
                    "prompt", "response", "action", "amount", "valid", "retries", "reason",
                    "readout", "end_reason", "seed", "sample_seed", "unit"]
"""``play/decisions.parquet``: one row per decision point; the task-neutral columns, followed
by the task's own (:func:`decision_columns`)."""


def decision_columns(task) -> list[str]:
    """Every column of ``play/decisions.parquet`` for ``task``: :data:`DECISION_COLUMNS` and
    then ``task.decision_columns`` (e.g. the balance before and after the round)."""
    return DECISION_COLUMNS + [c for c in task.decision_columns if c not in DECISION_COLUMNS]


DISCOVER_COLUMNS = ["feature", "layer", "feature_id", "mean_safe", "mean_risky", "t", "p", "q",
                    "d", "degenerate", "candidate", "direction"]
"""``discover.parquet``: ``mean_<context>`` is the feature's mean activation over the games of
the split group whose patch context it is (``GameSplit.context_a`` = risky for group A,
``context_b`` = safe for group B); ``d`` is A minus B."""

SCREEN_COLUMNS = ["feature", "layer", "feature_id", "context", "intervention", "patch",
                  "attribution", "attribution_se", "active_share", "clamp_mean", "rank",
                  "n_prompts"]
"""``screen.parquet``: one row per feature × context × intervention (a patched condition of
``patch.all_conditions()``, by name); ``attribution`` is the mean over the context's prompts
of the first-order change in P(exit), ``(v − a_f(x)) · W_dec[f] · ∂P(exit)/∂h_L`` at the
decision token, ``attribution_se`` its standard error over prompts, ``active_share`` the share
of prompts where the feature is active, ``clamp_mean`` the mean clamp size ``v − a_f(x)``,
``rank`` 1 = the largest |attribution| within context × intervention."""

SCREEN_POINT_COLUMNS = ["feature", "layer", "context", "intervention", "source", "attribution",
                        "attribution_se", "rank", "in_top", "effect", "n_trials"]
"""One row per patched feature × intervention the screen scored (``analysis/screen_check``)."""

SCREEN_CHECK_COLUMNS = ["context", "intervention", "n_features", "n_random", "spearman",
                        "spearman_p", "top_n", "k", "recall", "recall_chance"]
"""Per context × intervention: Spearman's ρ (attribution vs patched effect), top-N recall."""

CAUSAL_TEST_COLUMNS = [
    "feature", "layer", "feature_id", "context", "condition", "patch", "method", "value",
    "scale", "metric", "n_patched", "n_baseline", "n_invalid_patched", "n_invalid_baseline",
    "invalid_bet_patched", "invalid_bet_baseline", "baseline_value", "patched_value", "effect",
    "ci_low", "ci_high", "statistic", "p", "q", "degenerate", "test", "arm", "null_index",
    "vs_baseline", "null_n", "null_mean", "null_sd", "null_z", "null_p", "null_q", "beats_null",
    "significant",
]
"""``causal_tests`` (feature and direction arms; the null arms' own tests are in
``causal_null``): ``vs_baseline`` = not degenerate, q <= alpha and |effect| at least the metric's
practical minimum (``analysis.min_effect_*``); ``null_*`` = the effect against its null arms'
band (see ``analysis.null_band``); ``significant`` = ``vs_baseline`` and, in a run with null
arms, ``beats_null`` (a feature test without a band is then unverified and does not count; the
behavioural direction is judged against the baseline) — the verdict the classes and the report
use. ``invalid_bet_*`` = mean requested amount of invalid bets. A feature test whose patched
trials and every null arm reproduce the baseline trial for trial is ``degenerate`` with ``test``
= :data:`ZERO_SIZE_TEST` (p, q NaN): nothing was changed, so there is nothing to test."""
ZERO_SIZE_TEST = "zero-size intervention"
"""``test`` of a causal test not run because the intervention had size zero: e.g. a scale clamp
of a feature that is inactive on the prompts (``scale × 0 = 0``), whose null arms then write zero
along their random directions too, so the band is a point and says nothing."""
CAUSAL_FEATURE_COLUMNS = [
    "feature", "layer", "feature_id", "method", "class", "same_effect", "same_effect_where",
    "n_tests", "n_degenerate", "n_significant", "best_q", "summary",
]
DOSE_COLUMNS = [
    "feature", "layer", "feature_id", "context", "method", "metric", "n_levels", "scales",
    "values", "rho", "ci_low", "ci_high", "p", "q", "degenerate",
]
SLOPE_COLUMNS = ["arm", "feature", "layer", "feature_id", "null_index", "context", "metric",
                 "n_doses", "doses", "n_trials", "n_prompts", "slope", "se", "z", "p", "q",
                 "degenerate", "null_n", "null_mean", "null_sd", "null_z", "null_p", "null_q",
                 "beats_null"]
"""``dose_slopes``: trial-level slope of P(exit) / stop on the dose (baseline = dose 1), SE
cluster-robust by prompt, and the slope against the null arms' slopes (``analysis.dose``)."""
DOSE_CURVE_COLUMNS = ["arm", "feature", "layer", "feature_id", "null_index", "context", "metric",
                      "dose", "n_trials", "mean"]
"""``dose_curves``: the mean of P(exit) / stop at each dose of every ladder in ``dose_slopes``
(null arms too; dose 1 = the context's baseline), the points each slope is fitted through."""
EDGE_COLUMNS = [
    "source", "source_layer", "source_feature", "target", "target_layer", "target_feature",
    "context", "condition", "patch", "method", "signal", "n_pairs", "mean_shift", "d", "d_z",
    "statistic", "p", "q", "degenerate", "arm", "null_index", "vs_baseline", "null_n",
    "null_mean", "null_sd", "null_z", "null_p", "null_q", "beats_null", "carry_shift",
    "carry_share", "mechanism", "edge", "sign",
]
"""``pathways/edges``: one row per source arm × condition × target × signal (null arms' own
rows are dropped). ``vs_baseline``: q <= alpha and |d| >= min_d; ``null_*``: the target's shift
against the same shift under the source's null arms; ``carry_shift``: the shift the patch delta
would cause if it travelled up the residual stream unchanged (``delta · W_enc[:, T]``, decision
signal), ``carry_share`` its share of the observed shift, ``mechanism`` ``direct`` (carry
explains at least half, same sign) or ``mediated``; ``edge``: ``vs_baseline`` and, in a run
with null arms, ``beats_null`` (the behavioural direction's edges: ``vs_baseline``)."""
CHAIN_COLUMNS = ["signal", "chain", "nodes", "layers", "length", "sign", "strength", "signs"]
LAYER_PAIR_COLUMNS = [
    "signal", "source_layer", "target_layer", "n_tested", "n_edges", "n_positive", "n_negative",
    "mean_abs_d",
]
WORD_COLUMNS: tuple[str, ...] = (
    "layer", "feature_id", "context", "condition", "scale", "word",
    "count_patched", "count_baseline", "tokens_patched", "tokens_baseline",
    "responses_patched", "responses_baseline", "log_odds", "z", "p", "q", "direction",
    "significant",
)


# ------------------------------------------------------------------ plan items
ItemKind = Literal["baseline", "layer_baseline", "feature", "null", "direction"]


@dataclass
class PlanItem:
    """One block of rows of a work unit: ``n`` trials from ``trial_start`` of one condition.

    ``kind`` says what the rows patch: ``baseline`` nothing, ``layer_baseline`` the no-clamp SAE
    reconstruction at ``layer`` (the fair baseline of ``method: reconstruct``), ``feature`` the
    feature ``feature_key(layer, feature_id)``, ``null`` that feature's intervention magnitude
    along null direction ``null_index`` of its layer (with ``feature_id = -1``: the behavioural
    direction's magnitude), ``direction`` the behavioural direction of ``layer``.
    """

    kind: ItemKind
    condition: str
    trial_start: int
    n: int
    layer: int = -1
    feature_id: int = -1
    null_index: int = -1

    @property
    def feature(self) -> str:
        """The ``feature`` column of the trials this item makes (``""`` unless a feature or
        its null arm)."""
        return feature_key(self.layer, self.feature_id) \
            if self.kind in ("feature", "null") and not self.direction_null else ""

    @property
    def direction_null(self) -> bool:
        """A null arm of the behavioural direction (no feature: ``feature_id = -1``)."""
        return self.kind == "null" and self.feature_id < 0

    @property
    def arm(self) -> str:
        """The ``arm`` column (:data:`ARMS`)."""
        return "baseline" if self.kind in ("baseline", "layer_baseline") else self.kind

    @property
    def key(self) -> str:
        """A stable name of what the rows patch: ``""``, ``"L13"``, ``"L13-5"``,
        ``"L13-5~null3"``, ``"L13~direction"`` or ``"L13~direction~null3"``."""
        if self.kind == "baseline":
            return ""
        if self.kind == "layer_baseline":
            return f"L{self.layer}"
        if self.direction_null:
            return f"L{self.layer}~direction~null{self.null_index}"
        if self.kind == "null":
            return f"{self.feature}~null{self.null_index}"
        if self.kind == "direction":
            return f"L{self.layer}~direction"
        return self.feature


# ------------------------------------------------------------------ paths
@dataclass(frozen=True)
class RunDir:
    """Every path of one run directory (see the module docstring for what each holds)."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # run level
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    run_json = property(lambda self: self.root / "run.json")
    sae_quality = property(lambda self: self.root / "sae_quality.json")
    # play
    @property
    def play(self) -> Path:
        return self.root / "play"

    @property
    def play_config(self) -> Path:
        return self.play / "config.yaml"

    @property
    def play_parts(self) -> Path:
        return self.play / "parts"

    @property
    def decisions(self) -> Path:
        return self.play / "decisions.parquet"

    @property
    def metrics(self) -> Path:
        return self.play / "metrics.parquet"

    # discover
    @property
    def discover(self) -> Path:
        return self.root / "discover.parquet"

    @property
    def discover_top(self) -> Path:
        return self.root / "discover_top.csv"

    @property
    def screen(self) -> Path:
        return self.root / "screen.parquet"

    # patch
    @property
    def patch(self) -> Path:
        return self.root / "patch"

    @property
    def patch_config(self) -> Path:
        return self.patch / "config.yaml"

    @property
    def plan(self) -> Path:
        return self.patch / "plan.json"

    @property
    def parts(self) -> Path:
        return self.patch / "parts"

    @property
    def commits(self) -> Path:
        return self.patch / "commits"

    @property
    def running(self) -> Path:
        return self.patch / "running"

    @property
    def failed(self) -> Path:
        return self.patch / "failed.json"

    @property
    def ray_drivers(self) -> Path:
        """Records of drivers that started a private Ray (:mod:`featurepath.pipeline.ray_stale`)."""
        return self.patch / "ray_drivers"

    @property
    def planning_lock(self) -> Path:
        return self.patch / ".planning.lock"

    def part(self, unit: int) -> Path:
        return self.parts / f"u{unit:05d}.parquet"

    def commit(self, unit: int) -> Path:
        return self.commits / f"u{unit:05d}.json"

    @property
    def directions(self) -> Path:
        """The behavioural direction per patched layer (``patch.behavioural_direction``)."""
        return self.patch / "directions.safetensors"

    direction_source = property(lambda self: self.patch / "direction_source.json")  # transfer

    @property
    def trials(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def activations(self) -> Path:
        return self.root / "activations.zarr"

    # analysis
    def split(self, stage: str) -> Path:
        """``RUN/splits/<stage>.parquet``: the prompts ``stage`` used and the half of each."""
        return self.root / "splits" / f"{stage}.parquet"

    def table(self, stem: str) -> Path:
        """``RUN/<stem>.parquet`` (a CSV twin sits beside it)."""
        return self.root / f"{stem}.parquet"

    @property
    def causal_tests(self) -> Path:
        return self.table("causal_tests")

    @property
    def causal_features(self) -> Path:
        return self.table("causal_features")

    @property
    def dose_slopes(self) -> Path:
        return self.table("dose_slopes")

    @property
    def dose_curves(self) -> Path:
        return self.table("dose_curves")

    @property
    def screen_check(self) -> Path:
        return self.table("screen_check")

    @property
    def screen_points(self) -> Path:
        return self.table("screen_check_points")

    @property
    def causal_null(self) -> Path:
        return self.table("causal_null")

    @property
    def dose_response(self) -> Path:
        return self.table("dose_response")

    @property
    def pathways(self) -> Path:
        return self.root / "pathways"

    @property
    def edges(self) -> Path:
        return self.pathways / "edges.parquet"

    chains = property(lambda self: self.pathways / "chains.parquet")
    graph_json = property(lambda self: self.pathways / "graph.json")
    @property
    def words(self) -> Path:
        return self.table("words")

    # confirm (docs/confirm.md; rounds/L<layer>-r<k>.parquet hold the null draws)
    confirm = property(lambda self: self.root / "confirm")
    preregistration = property(lambda self: self.root / "confirm" / "preregistration.json")
    confirm_arms = property(lambda self: self.root / "confirm" / "arms.parquet")
    verdicts = property(lambda self: self.root / "confirm" / "verdicts.parquet")

    # report
    report = property(lambda self: self.root / "report.html")
    figures = property(lambda self: self.root / "figures")
    def require_dir(self) -> RunDir:
        """Itself, or a :class:`DataError` when the directory does not exist."""
        from featurepath.errors import DataError

        if not self.root.is_dir():
            raise DataError(f"run directory {self.root} does not exist")
        return self


# ------------------------------------------------------------------ writing
class DiskFullError(StorageError):
    """The disk filled up; committed work is intact and ``--resume`` continues."""


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write ``path`` so that a reader (or a kill) sees the old file or the new one, never half.

    Temp file in the same directory + fsync + rename. A full disk becomes one
    :class:`DiskFullError` line that says finished work is kept; a read-only file system, a
    quota or a permission problem one :class:`StorageError` line naming the file.
    """
    if isinstance(data, str):
        data = data.encode()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only file system refuses the clean-up too
            pass
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"disk full while writing {path}; finished work is kept — free "
                                "space and rerun (patch: --resume)") from None
        exc.filename, exc.filename2 = str(path), None  # the file meant, not our temp file
        err = storage_error(exc, "finished work is kept — fix this and rerun (patch: --resume)")
        if err is None:
            raise
        raise err from None
    return path


def parquet_bytes(df) -> bytes:
    """A DataFrame as Parquet bytes (index dropped), for :func:`atomic_write`."""
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def write_table(df, path: Path, csv: bool = True) -> Path:
    """``path`` (``.parquet``) atomically, plus a ``.csv`` twin for spreadsheets."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, parquet_bytes(df))
    if csv:
        atomic_write(path.with_suffix(".csv"), df.to_csv(index=False))
    return path
