"""Westfall–Young maxT edges: family-wise error over a source's targets at the nominal rate
under the null (correlated targets), a hand example, and a planted edge found."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from featurepath.analysis.edges_maxt import maxt_edges


def _edges(real: np.ndarray, nulls: np.ndarray, source: str = "L1-1") -> pd.DataFrame:
    """pathway_edges-shaped rows: ``real[T]`` and ``nulls[K, T]`` statistics of one family."""
    rows = []
    for arm, k, ts in [("feature", -1, real)] + [("null", k, n) for k, n in enumerate(nulls)]:
        for j, t in enumerate(ts):
            rows.append(dict(source=source, context="risky", condition="c", signal="decision",
                             target=f"L2-{j}", statistic=float(t), arm=arm, null_index=k))
    return pd.DataFrame(rows)


def test_hand_example() -> None:
    real = np.array([3.0, -1.0, np.nan])
    nulls = np.array([[1.0, -2.5, 0.0], [0.5, 0.2, np.nan], [4.0, 0.0, 0.0]])
    out = maxt_edges(_edges(real, nulls), alpha=0.5).set_index("target")
    # M_k = 2.5, 0.5, 4.0: |3| is beaten once -> 2/4; |-1| three times... twice (2.5, 4) -> 3/4
    assert out.loc["L2-0", "maxt_p"] == 0.5 and out.loc["L2-1", "maxt_p"] == 0.75
    assert np.isnan(out.loc["L2-2", "maxt_p"]) and not out.loc["L2-2", "maxt_edge"]
    assert (out["source_p"] == 0.5).all() and (out["null_k"] == 3).all()


def test_family_wise_error_under_the_null_with_correlated_targets() -> None:
    rng = np.random.default_rng(0)
    T, K, n = 25, 19, 600
    cov = 0.6 * np.ones((T, T)) + 0.4 * np.eye(T)  # strongly correlated targets
    L = np.linalg.cholesky(cov)
    hits = 0
    for _ in range(n):
        z = rng.normal(size=(K + 1, T)) @ L.T  # source and its null arms exchangeable
        out = maxt_edges(_edges(z[0], z[1:]), alpha=0.05)
        hits += bool(out["maxt_edge"].any())
    # one family: P(source_p <= 1/20) = 1/20 exactly (Westfall-Young, exchangeable)
    assert stats.binomtest(hits, n, 0.05).pvalue > 1e-3, hits


def test_planted_edge_is_found_and_bh_runs_across_sources() -> None:
    rng = np.random.default_rng(1)
    parts = []
    for s in range(4):
        z = rng.normal(size=(200, 30))  # K = 199: 1/(K+1) <= alpha/m for m = 4 sources
        if s == 0:
            z[0, 7] = 12.0  # a real edge: far beyond every null direction's max
        parts.append(_edges(z[0], z[1:], source=f"L1-{s}"))
    out = maxt_edges(pd.concat(parts, ignore_index=True), alpha=0.05)
    edges = out[out["maxt_edge"]]
    assert list(zip(edges["source"], edges["target"], strict=True)) == [("L1-0", "L2-7")]
    fam = out.drop_duplicates("source").set_index("source")
    from scipy.stats import false_discovery_control

    assert fam["source_q"].to_numpy() == pytest.approx(
        false_discovery_control(fam["source_p"].to_numpy()))


def test_pathway_edges_carry_the_maxt_table_of_their_null_arms() -> None:
    from featurepath.analysis.pathways import pathway_edges

    rng = np.random.default_rng(2)
    n, K, T = 8, 39, 6
    arms = [("baseline", -1)] + [("feature", -1)] + [("null", k) for k in range(K)]
    rows, acts = [], []
    for a, (arm, k) in enumerate(arms):
        for t in range(n):
            x = rng.normal(size=T)
            if arm == "feature":
                x[0] += 6.0  # the source moves target L2-0 on every prompt
            acts.append(x)
            rows.append(dict(row=a * n + t, feature="" if arm == "baseline" else "L1-3",
                             layer=-1 if arm == "baseline" else 1,
                             feature_id=-1 if arm == "baseline" else 3,
                             condition="c_none" if arm == "baseline" else "c_value",
                             context="ctx", patch="none" if arm == "baseline" else "value",
                             method="delta", value=np.nan if arm == "baseline" else 3.0,
                             scale=np.nan, trial=t, prompt_id=f"p{t}", action=None,
                             bet=np.nan, valid=False, p_stop=np.nan, arm=arm, null_index=k))
    edges = pathway_edges(pd.DataFrame(rows), np.array(acts), np.full(T, 2), np.arange(T))
    m = edges.attrs["maxt"].set_index("target")
    assert bool(m.loc["L2-0", "maxt_edge"]) and m.loc["L2-0", "maxt_p"] == 1 / (K + 1)
    assert not m.drop(index="L2-0")["maxt_edge"].any()
