"""Tests of featurepath.analysis.pathways on a synthetic run with planted feature -> feature effects."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from featurepath.analysis.pathways import (
    CHAIN_COLUMNS,
    EDGE_COLUMNS,
    build_graph,
    export,
    find_chains,
    layer_pair_summary,
    pathway_edges,
)
from featurepath.analysis.run_data import load_activations, load_trials
from featurepath.errors import DataError

# recorded features: S (L1), T (L3, = 2 x S's shift), N (L3, null), C (L3, constant), U (L5)
REC_LAYER = np.array([1, 3, 3, 3, 5])
REC_FEATURE = np.array([10, 20, 21, 22, 30])
S, T, NUL, C, U = range(5)


def make_run(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Trials + decision and gen_mean activations.

    Prompts differ (their activations vary), so the paired test has something to pair. Patching
    S to 6 shifts T by twice S's shift (6 - S(x)) and U by -1.5 x T's shift; patching T to 9
    shifts U by -1.5 x T's shift. N gets fresh noise on every row, C is always 0.
    """
    rng = np.random.default_rng(seed)
    base = rng.normal([3, 5, 4, 0, 6], [1, 1, 1, 0, 1], size=(n, 5))
    base[:, C] = 0.0
    rows, acts = [], []

    def noise() -> np.ndarray:
        e = rng.normal(0, [0.05, 0.1, 0.5, 0, 0.1])
        e[C] = 0.0
        return e

    def add(feature: str, layer: int, fid: int, patch: str, shift_fn) -> None:
        for i in range(n):
            a = base[i] + noise()
            a = a + shift_fn(i)
            rows.append({
                "row": len(rows), "feature": feature, "layer": layer, "feature_id": fid,
                "condition": "safe_baseline" if patch == "none" else f"safe_with_{patch}_patch",
                "context": "safe", "patch": patch, "trial": i, "prompt_id": f"p{i}",
                "action": "bet", "bet": 10.0, "valid": True, "p_stop": 0.5, "method": "delta",
            })
            acts.append(a)

    def s_patch(i: int) -> np.ndarray:
        sh = 6.0 - base[i, S]
        out = np.zeros(5)
        out[T] = 2 * sh
        out[U] = -1.5 * 2 * sh
        return out

    def t_patch(i: int) -> np.ndarray:
        out = np.zeros(5)
        out[U] = -1.5 * (9.0 - base[i, T])
        return out

    add("", -1, -1, "none", lambda i: np.zeros(5))
    add("L1-10", 1, 10, "safe", s_patch)
    add("L3-20", 3, 20, "risky", t_patch)
    return pd.DataFrame(rows), np.asarray(acts).astype(np.float16), base


def write_run(tmp_path: Path, n: int = 40) -> Path:
    trials, acts, _ = make_run(n)
    trials.to_parquet(tmp_path / "trials.parquet")
    g = zarr.open_group(str(tmp_path / "activations.zarr"), mode="w")
    g.create_array("decision", data=acts)
    g.create_array("gen_mean", data=(acts.astype(np.float32) * 0.5).astype(np.float16))
    g.create_array("rec_layer", data=REC_LAYER)
    g.create_array("rec_feature", data=REC_FEATURE)
    return tmp_path


@pytest.fixture(scope="module")
def edges() -> pd.DataFrame:
    trials, acts, _ = make_run()
    return pathway_edges(trials, acts, REC_LAYER, REC_FEATURE)


def _pair(e: pd.DataFrame, src: str, tgt: str) -> pd.Series:
    return e[(e.source == src) & (e.target == tgt)].iloc[0]


def test_planted_edge_null_and_constant(edges) -> None:
    assert list(edges.columns) == EDGE_COLUMNS
    st_ = _pair(edges, "L1-10", "L3-20")
    assert st_["edge"] and st_["sign"] == 1 and st_["n_pairs"] == 40
    null = _pair(edges, "L1-10", "L3-21")
    assert not null["edge"] and not null["degenerate"] and np.isfinite(null["p"])
    const = _pair(edges, "L1-10", "L3-22")
    assert const["degenerate"] and np.isnan(const["p"]) and np.isnan(const["q"])
    assert not const["edge"]
    assert _pair(edges, "L1-10", "L5-30")["sign"] == -1
    assert _pair(edges, "L3-20", "L5-30")["edge"]


def test_forward_only_and_known_values(edges) -> None:
    assert (edges["target_layer"] > edges["source_layer"]).all()
    assert len(edges) == 4 + 1  # S -> {T, N, C, U}; T -> {U}
    trials, acts, base = make_run()
    a = acts.astype(np.float64)
    pr = trials[trials.feature == "L1-10"].sort_values("trial")["row"].to_numpy()
    br = trials[trials.feature == ""].sort_values("trial")["row"].to_numpy()
    diff = a[pr, T] - a[br, T]
    ref = sps.ttest_rel(a[pr, T], a[br, T])
    r = _pair(edges, "L1-10", "L3-20")
    assert r["statistic"] == pytest.approx(ref.statistic)
    assert r["p"] == pytest.approx(ref.pvalue)
    assert r["mean_shift"] == pytest.approx(diff.mean())
    assert r["d_z"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    # Lakens (2013) eq. 10: the arithmetic mean of the two SDs, not their root mean square
    d_av = diff.mean() / ((a[pr, T].std(ddof=1) + a[br, T].std(ddof=1)) / 2)
    assert r["d"] == pytest.approx(d_av)
    # the planted relation: T's shift is twice S's clamp shift (up to float16 and noise)
    np.testing.assert_allclose(diff, 2 * (6.0 - base[:, S]), atol=0.6)
    ok = edges["p"].notna()
    from statsmodels.stats.multitest import multipletests

    np.testing.assert_allclose(edges.loc[ok, "q"], multipletests(edges.loc[ok, "p"], method="fdr_bh")[1])


def test_all_layers_excludes_only_the_source() -> None:
    trials, acts, _ = make_run()
    e = pathway_edges(trials, acts, REC_LAYER, REC_FEATURE, signal="gen_mean", forward_only=False)
    assert not (e.source == e.target).any()
    assert set(e[e.source == "L3-20"]["target"]) == {"L1-10", "L3-21", "L3-22", "L5-30"}
    assert (e["signal"] == "gen_mean").all()


def test_one_fixed_prompt_is_degenerate() -> None:
    """Decision-token activations of one prompt are identical across trials: nothing to test."""
    trials, acts, _ = make_run()
    one = acts.copy()
    one[:] = one[0]
    e = pathway_edges(trials, one, REC_LAYER, REC_FEATURE)
    assert e["degenerate"].all() and not e["edge"].any() and e["q"].isna().all()


def test_graph_and_chain(edges) -> None:
    g = build_graph(edges)
    assert set(g.nodes) == {"L1-10", "L3-20", "L5-30"}
    assert g.nodes["L3-20"]["layer"] == 3
    chains = find_chains(g)
    assert list(chains.columns) == CHAIN_COLUMNS
    assert len(chains) == 1
    c = chains.iloc[0]
    assert c["chain"] == "L1-10 -> L3-20 -> L5-30"
    assert c["sign"] == -1  # (+) then (-)
    assert c["strength"] == pytest.approx(min(g.edges["L1-10", "L3-20"]["weight"],
                                              g.edges["L3-20", "L5-30"]["weight"]))


def _edge_row(src, sl, tgt, tl, d, cond="c1", signal="decision") -> dict:
    return {"source": src, "source_layer": sl, "source_feature": int(src.split("-")[1]),
            "target": tgt, "target_layer": tl, "target_feature": int(tgt.split("-")[1]),
            "context": "safe", "condition": cond, "patch": "safe", "method": "delta",
            "signal": signal, "n_pairs": 30, "mean_shift": d, "d": d, "statistic": 5.0,
            "p": 1e-4, "q": 1e-3, "degenerate": False, "edge": True, "sign": int(np.sign(d))}


def test_strongest_condition_and_three_layer_chain() -> None:
    e = pd.DataFrame([
        _edge_row("L9-1", 9, "L17-2", 17, 0.7, "c1"),
        _edge_row("L9-1", 9, "L17-2", 17, -1.2, "c2"),  # stronger: kept
        _edge_row("L17-2", 17, "L26-3", 26, -0.8),
        _edge_row("L17-2", 17, "L17-5", 17, 2.0),  # same layer: no chain step
        _edge_row("L9-1", 9, "L26-3", 26, 2.0),
    ])
    g = build_graph(e)
    assert g.edges["L9-1", "L17-2"]["condition"] == "c2"
    assert g.edges["L9-1", "L17-2"]["sign"] == -1
    chains = find_chains(g, min_len=2)
    assert chains["chain"].tolist() == ["L9-1 -> L17-2 -> L26-3"]
    assert chains.iloc[0]["sign"] == 1  # (-) x (-)
    assert chains.iloc[0]["strength"] == pytest.approx(0.8)
    lp = layer_pair_summary(e).set_index(["source_layer", "target_layer"])
    assert lp.loc[(9, 17), "n_edges"] == 2 and lp.loc[(9, 17), "mean_abs_d"] == pytest.approx(0.95)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7),
                          st.floats(-3, 3).filter(lambda x: abs(x) > 0.1)), max_size=20))
def test_chain_invariants(triples) -> None:
    rows = [_edge_row(f"L{a}-{a}", a, f"L{b}-{b}", b, d) for a, b, d in triples if a != b]
    e = pd.DataFrame(rows) if rows else pd.DataFrame(columns=EDGE_COLUMNS)
    g = build_graph(e)
    ch = find_chains(g, min_len=2)
    for r in ch.itertuples(index=False):
        assert r.length >= 2 and len(r.nodes) == r.length + 1
        assert all(x < y for x, y in zip(r.layers, r.layers[1:], strict=False))
        assert r.sign == int(np.prod(r.signs))
        ws = [g.edges[u, v]["weight"] for u, v in zip(r.nodes, r.nodes[1:], strict=False)]
        assert r.strength == pytest.approx(min(ws))
    assert ch["strength"].is_monotonic_decreasing


def test_export_files(tmp_path: Path, edges) -> None:
    g = build_graph(edges)
    chains = find_chains(g, signal="decision")
    written = export(edges, {"decision": g}, chains, tmp_path)
    d = tmp_path / "pathways"
    for name in ("edges.parquet", "edges.csv", "chains.parquet", "layer_pairs.parquet",
                 "graph.graphml", "graph.json", "graph_decision.graphml", "graph_decision.json"):
        assert (d / name).is_file(), name
        assert name in written
    js = json.loads((d / "graph.json").read_text())
    assert {n["id"] for n in js["nodes"]} == set(g.nodes)
    assert set(js["edges"][0]) == {"source", "target", "weight", "sign", "d", "q", "mean_shift",
                                   "condition"}
    back = nx.read_graphml(d / "graph.graphml")
    assert back.number_of_edges() == g.number_of_edges()
    assert pd.read_parquet(d / "chains.parquet").iloc[0]["nodes"].tolist() == [
        "L1-10", "L3-20", "L5-30"]


def test_load_activations(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="activations.zarr"):
        load_activations(tmp_path)
    write_run(tmp_path)
    acts, lay, fid = load_activations(tmp_path, "decision")
    assert acts.shape == (120, 5) and lay.tolist() == REC_LAYER.tolist()
    with pytest.raises(DataError, match="gen_max"):
        load_activations(tmp_path, "gen_max")
    with pytest.raises(DataError, match="unknown signal"):
        load_activations(tmp_path, "nope")
    assert len(load_trials(tmp_path)) == 120


def test_cli_pathways_both_signals(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import featurepath.cli.analysis  # noqa: F401
    from featurepath.cli import app

    write_run(tmp_path)
    res = CliRunner().invoke(app, ["pathways", str(tmp_path), "--signal", "both"])
    assert res.exit_code == 0, res.output
    assert "[decision]" in res.output and "[gen_mean]" in res.output
    assert "L1-10 -> L3-20 -> L5-30" in res.output
    e = pd.read_parquet(tmp_path / "pathways" / "edges.parquet")
    assert set(e["signal"]) == {"decision", "gen_mean"}
    assert (tmp_path / "pathways" / "graph_gen_mean.json").is_file()
    res = CliRunner().invoke(app, ["pathways", "--help"])
    assert "--min-d" in res.output


def test_pair_trials_matches_prompt_and_trial() -> None:
    from featurepath.analysis.run_data import normalise_trials, pair_trials

    base = dict(feature="", layer=-1, condition="c", context="safe", patch="none", action="bet",
                valid=True)
    b = normalise_trials(pd.DataFrame([
        {**base, "trial": i, "prompt_id": f"p{i}", "row": i} for i in range(4)]))
    p = normalise_trials(pd.DataFrame([
        {**base, "feature": "L1-1", "patch": "safe", "trial": t, "prompt_id": pid, "row": 10 + k}
        for k, (t, pid) in enumerate([(3, "p3"), (1, "p1"), (1, "p1"), (2, "other"), (7, "p7")])
    ]))
    pr = pair_trials(p, b, columns=["row"])
    assert pr["trial"].tolist() == [1, 3]  # mismatched prompt and missing trial are not paired
    assert pr["row_p"].tolist() == [11, 10] and pr["row_b"].tolist() == [1, 3]  # first duplicate


@settings(max_examples=20, deadline=None)
@given(st.randoms(use_true_random=False))
def test_edges_do_not_depend_on_row_order(rnd) -> None:
    trials, acts, _ = make_run(n=12, seed=1)
    perm = list(range(len(trials)))
    rnd.shuffle(perm)
    a = pathway_edges(trials, acts, REC_LAYER, REC_FEATURE)
    b = pathway_edges(trials.iloc[perm], acts, REC_LAYER, REC_FEATURE)
    key = ["source", "target", "condition"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_sample_sd_is_numpys_nanstd_without_its_warning():
    import warnings

    from featurepath.analysis.pathways import _sample_sd

    rng = np.random.default_rng(3)
    X = rng.normal(size=(6, 5))
    keep = rng.random((6, 5)) > 0.3
    keep[:, 0] = False
    keep[:, 1] = [True] + [False] * 5  # one value: degenerate
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _sample_sd(X, keep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanstd(np.where(keep, X, np.nan), axis=0, ddof=1)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[:2]).all()
