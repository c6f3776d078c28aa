"""The discover stage: SAE activations at the decision token of every decision point that
``play`` recorded, then bankrupt-vs-stopped tests per feature (``analysis.discover``).

One batched forward pass per chunk of prompts reads all SAE layers at once (the recorder's
hooks); games that hit the round limit have neither label and are left out.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from featurepath.analysis.discover import discover_features
from featurepath.config import RunConfig, record_config
from featurepath.engine.generate import replay
from featurepath.engine.hooks import RecordSpec
from featurepath.errors import DataError
from featurepath.rundir import RunDir, atomic_write, parquet_bytes
from featurepath.sae.model import SAE


def decision_points(run_dir: Path) -> pd.DataFrame:
    path = RunDir(run_dir).decisions
    if not path.exists():
        raise DataError(f"{path} is missing; run `featurepath play {run_dir}` first")
    df = pd.read_parquet(path)
    df = df[df["end_reason"].isin(["bankrupt", "stop"])]
    if df.empty or df["end_reason"].nunique() < 2:
        counts = pd.read_parquet(path)["end_reason"].value_counts().to_dict()
        raise DataError("discover needs games that went bankrupt and games that stopped "
                        f"voluntarily; play recorded end reasons {counts} — play more games")
    return df.reset_index(drop=True)


def decision_activations(model, tok, saes: dict[int, SAE], prompts: list[str],
                         batch_size: int = 32, progress: bool = True
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n_prompts, n_features] activations of every feature of every SAE layer at the last
    prompt token, plus the layer and id of each column."""
    from tqdm.auto import tqdm

    feats = [(layer, f) for layer, sae in sorted(saes.items()) for f in range(sae.d_sae)]
    spec = RecordSpec(feats)
    out = np.zeros((len(prompts), len(feats)), dtype=np.float32)
    for start in tqdm(range(0, len(prompts), batch_size), desc="discover", unit="batch",
                      disable=not progress, dynamic_ncols=True):
        chunk = prompts[start:start + batch_size]
        res = replay(model, tok, chunk, saes=saes, record=spec)
        out[start:start + len(chunk)] = res.decision.to(torch.float32).numpy()
    layers = np.array([a for a, _ in feats], dtype=np.int64)
    ids = np.array([b for _, b in feats], dtype=np.int64)
    return out, layers, ids


def run_discover(run_dir: str | Path, cfg: RunConfig, model, tok, saes: dict[int, SAE],
                 progress: bool = True) -> pd.DataFrame:
    root = Path(run_dir)
    t0 = time.time()
    points = decision_points(root)
    from featurepath.sae.check import warn_if_l0_off

    warn_if_l0_off(model, tok, saes, points["prompt"].tolist()[:cfg.discover.batch_size])
    acts, layers, ids = decision_activations(model, tok, saes, points["prompt"].tolist(),
                                             cfg.discover.batch_size, progress)
    bankrupt = (points["end_reason"] == "bankrupt").to_numpy()
    table = discover_features(acts, bankrupt, layers, ids, cfg.discover.alpha,
                              cfg.discover.min_d, games=points["game_id"].to_numpy())
    rd = RunDir(root)
    atomic_write(rd.discover, parquet_bytes(table))
    atomic_write(rd.discover_top, table.head(200).to_csv(index=False))
    record_config(root, cfg)
    table.attrs["seconds"] = time.time() - t0
    table.attrs["n_points"] = len(points)
    table.attrs["n_bankrupt"] = int(bankrupt.sum())
    return table
