"""Word analysis of a patch run: each feature × context × condition against that context's
baseline condition (the ``*_baseline`` conditions; per layer for ``reconstruct`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from featurepath.analysis.words import (
    baseline_by_condition,
    summarize,
    word_table,
    write_outputs,
)
from featurepath.errors import DataError


def run_words_store(run_dir: str | Path, out_dir: str | Path, alpha0: float = 1000.0,
                    token_pattern: str | None = None, fdr_alpha: float = 0.05,
                    min_count: int = 5, top: int = 8) -> dict[str, Any]:
    path = Path(run_dir) / "trials.parquet"
    if not path.exists():
        raise DataError(f"{path} is missing; run `featurepath patch` first")
    import pandas as pd

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
                       baseline_selector=baseline_by_condition(), token_pattern=token_pattern,
                       alpha0=alpha0, min_count=min_count, fdr_alpha=fdr_alpha)
    paths = write_outputs(table, out_dir, top=top)
    summ = summarize(table, top=top, fdr_alpha=fdr_alpha)
    found = summ[(summ["n_adds"] > 0) | (summ["n_removes"] > 0)]
    lines = found["summary"].astype(str).head(20).tolist()
    lines.append(f"{len(found)} of {len(summ)} comparisons have words with q < {fdr_alpha}")
    return {"paths": paths, "summary": "\n".join(lines), "table": table}
