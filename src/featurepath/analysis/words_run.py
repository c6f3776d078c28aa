"""The words stage of a patch run: each feature × context × condition against that context's
baseline (``patch == "none"`` rows; per layer for ``reconstruct`` runs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from featurepath.analysis.words import (
    baseline_by_patch,
    summarize_words,
    word_table,
    write_outputs,
)
from featurepath.config import RunConfig, record_config, resolve_config
from featurepath.errors import DataError
from featurepath.rundir import RunDir


@dataclass
class WordsResult:
    """The word table, one summary line per comparison with significant words, and the files."""

    table: pd.DataFrame
    summary: str
    written: dict[str, Path] = field(default_factory=dict)


def run_words(run_dir: str | Path, cfg: RunConfig | None = None, *,
              out_dir: str | Path | None = None, min_count: int = 5, top: int = 8) -> WordsResult:
    """Words that each patch adds to or removes from the responses, with ``cfg.analysis``
    prior strength, token pattern and alpha; writes words.{parquet,csv} and words_summary.md
    into ``out_dir`` (default the run directory) and records the config. ``cfg`` None: the
    run's config."""
    rd = RunDir(run_dir).require_dir()
    cfg = resolve_config(rd.root) if cfg is None else cfg
    a = cfg.analysis
    path = rd.trials
    if not path.exists():
        raise DataError(f"{path} is missing; run `featurepath patch` first")
    df = pd.read_parquet(path)
    df = df[df["response"].fillna("").str.len() > 0].copy()
    if df.empty:
        raise DataError(f"{path} holds no responses (a replay run has none); run patch with "
                        "--mode sample for word analysis")
    df["scale"] = df["scale"].astype(float)
    # Baseline rows match every feature: a missing feature_id (and a missing layer for delta
    # baselines) means "any" to compare_to_baseline.
    base = df["feature"] == ""
    df["layer"] = df["layer"].astype("float")
    df["feature_id"] = df["feature_id"].astype("float")
    df.loc[base, "feature_id"] = np.nan
    df.loc[base & (df["layer"] < 0), "layer"] = np.nan
    table = word_table(df, group_cols=("layer", "feature_id", "context", "condition", "scale"),
                       baseline_selector=baseline_by_patch(), token_pattern=a.words_token_pattern,
                       alpha0=a.words_prior, min_count=min_count, fdr_alpha=a.alpha,
                       n_perm=a.words_permutations, seed=cfg.seed)
    written = write_outputs(table, out_dir or rd.root, top=top)
    summ = summarize_words(table, top=top, fdr_alpha=a.alpha)
    found = summ[(summ["n_adds"] > 0) | (summ["n_removes"] > 0)]
    lines = found["summary"].astype(str).head(20).tolist()
    lines.append(f"{len(found)} of {len(summ)} comparisons have words with q <= {a.alpha:g}")
    record_config(rd.root, cfg)
    return WordsResult(table, "\n".join(lines), written)
