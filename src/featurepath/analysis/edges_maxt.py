"""Pathway edges that can be claimed among many targets: Westfall–Young maxT over targets with
each source's own null arms, then Benjamini–Hochberg across sources.

Why: a source is tested against every recorded target above it, so one BH family over all
source × target pairs (millions at scale) with a K-direction band can never pass. The null arms
a source already has give the joint null distribution of its shifts over *all* targets at once:
for null direction k, ``M_k = max_T |t_{k,T}|`` (the largest standardised target shift it
caused). A target's single-step maxT p-value ``(1 + #{k: M_k >= |t_T|}) / (1 + K)`` controls the
family-wise error over the source's targets (Westfall & Young 1993, "Resampling-Based Multiple
Testing", alg. 2.5), with no assumption on how targets correlate, whenever the source's
direction is exchangeable with the null directions. A source's own p is its smallest target p
(the maxT test of "no edge at all"); BH across sources selects sources, and inside the R of m
selected sources an edge counts at FWER level ``alpha · R / m`` — Benjamini & Bogomolov's
(2014, JRSS B 76:297) selective scheme, which controls the expected average error over the
selected sources.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from featurepath.analysis.stats import bh_fdr

#: One source's family: its targets under one condition, context and signal.
FAMILY = ["source", "context", "condition", "signal"]
MAXT_COLUMNS = ["source", "context", "condition", "signal", "target", "statistic", "null_k",
                "maxt_p", "source_p", "source_q", "maxt_edge"]


def maxt_edges(edges: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One row per real (non-null-arm) source × target of ``edges`` (pathway_edges' table, null
    arms included) whose family has null arms: ``maxt_p``, the family's ``source_p`` and its BH
    ``source_q`` across families, and ``maxt_edge`` = ``source_q <= alpha`` and ``maxt_p <=
    alpha · R / m``. Degenerate statistics (NaN) are never edges and do not enter the max."""
    cols = FAMILY + ["target", "statistic", "arm", "null_index"]
    if edges.empty or not set(cols) <= set(edges.columns):
        return pd.DataFrame(columns=MAXT_COLUMNS)
    df = edges[cols]
    null = df[df["arm"] == "null"]
    real = df[(df["arm"] != "null") & (df["source"].astype(str) != "")]
    out = []
    for key, g in real.groupby(FAMILY, sort=True):
        nk = null[(null[FAMILY] == pd.Series(key, index=FAMILY)).all(axis=1)]
        if nk.empty:
            continue
        m_k = nk.assign(a=nk["statistic"].abs()).groupby("null_index")["a"].max().to_numpy()
        m_k = m_k[np.isfinite(m_k)]
        if m_k.size == 0:
            continue
        t = g["statistic"].abs().to_numpy(float)
        exceed = (m_k[None, :] >= t[:, None]).sum(axis=1)
        p = np.where(np.isfinite(t), (1 + exceed) / (1 + m_k.size), np.nan)
        out.append(g[FAMILY + ["target", "statistic"]].assign(
            null_k=m_k.size, maxt_p=p, source_p=np.nanmin(p) if np.isfinite(p).any()
            else np.nan))
    if not out:
        return pd.DataFrame(columns=MAXT_COLUMNS)
    res = pd.concat(out, ignore_index=True)
    fam = res.drop_duplicates(FAMILY)[FAMILY + ["source_p"]].reset_index(drop=True)
    fam["source_q"] = bh_fdr(fam["source_p"].to_numpy(float))
    m = int(np.isfinite(fam["source_p"]).sum())
    r = int((fam["source_q"] <= alpha).sum())
    res = res.merge(fam[FAMILY + ["source_q"]], on=FAMILY, how="left")
    level = alpha * r / m if m else 0.0
    res["maxt_edge"] = (res["source_q"] <= alpha) & (res["maxt_p"] <= level)
    return res[MAXT_COLUMNS]


__all__ = ["maxt_edges", "MAXT_COLUMNS"]
