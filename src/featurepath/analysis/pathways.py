"""Feature -> feature pathways: which recorded features move when a source feature is patched.

For each patched source feature S (layer Ls), condition and context, and every recorded target T,
the shift of T's activation is tested between the patched trials and the baseline trials of the
same context, *paired by distinct prompt* (see
:func:`featurepath.analysis.run_data.prompt_pairs`): the repeats of a prompt in each arm are
averaged to one value, so a prompt counts once however many trials repeat it (counting repeats
as pairs is pseudo-replication). The paired t-test over prompts removes the prompt-to-prompt
variance that dominates activations, which is why pathways need a population of prompts: a
comparison with fewer than two distinct prompts is degenerate by design (reported, not tested),
even when float32 rounding makes its trials differ by ~1e-7.

Why these choices:
- Causality flows forward: at the decision token, patching layer Ls can only move layers > Ls,
  so by default only targets with ``target_layer > source_layer`` are tested (for ``gen_mean``
  everything can move through the sampled tokens; pass ``forward_only=False`` to test all
  layers, the source itself excepted).
- Effect size ``d`` is Cohen's d_av (Lakens 2013, "Calculating and reporting effect sizes",
  Front. Psychol. 4:863, eq. 10): d_av = M_diff / ((SD_patched + SD_baseline) / 2), the mean
  paired shift over the arithmetic mean of the two standard deviations across prompts (of the
  per-prompt means, ddof=1) — how far T moves relative to its natural spread. The
  paired test's own d_z (shift / SD of the differences) is kept as ``d_z``, but it is not the
  edge criterion: replay is deterministic, so a tiny but consistent leak of a patch into an
  unrelated direction has an enormous d_z while moving the target by a sliver of its range.
- Benjamini–Hochberg (1995) over all (source, condition, context, target) pairs of one call.
- Edge: q <= alpha (where Benjamini–Hochberg rejects) and |d| >= min_d.

Output layout of :func:`export` (one directory ``RUN/pathways/``): the tables ``edges``,
``chains`` and ``layer_pairs`` hold every signal in one file with a ``signal`` column; graphs are
written once per signal as ``graph_{signal}.graphml``/``.json``, and ``graph.graphml``/``.json``
hold the primary graph (``decision`` when present, else the first signal given).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from featurepath.analysis.edges_maxt import maxt_edges
from featurepath.analysis.null_band import controlled_verdict, null_band
from featurepath.analysis.run_data import (
    ANALYSIS_COLUMNS,
    SIGNALS,
    load_activations,
    load_carry,
    load_trials,
    normalise_trials,
    patched_groups,
    prompt_pairs,
    warn_repeated_prompts,
)
from featurepath.analysis.stats import bh_fdr, paired_t_matrix
from featurepath.config import RunConfig, record_config, resolve_config
from featurepath.errors import DataError
from featurepath.rundir import (
    CHAIN_COLUMNS,
    EDGE_COLUMNS,
    LAYER_PAIR_COLUMNS,
    RunDir,
    feature_key,
    write_table,
)

__all__ = [
    "EDGE_COLUMNS",
    "CHAIN_COLUMNS",
    "LAYER_PAIR_COLUMNS",
    "pathway_edges",
    "build_graph",
    "find_chains",
    "layer_pair_summary",
    "export",
]



#: An edge is ``direct`` when the unchanged patch delta explains at least this share of it.
CARRY_DIRECT = 0.5


def _sample_sd(X: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-column sample SD (ddof=1) over the ``keep`` entries, NaN where fewer than two: what
    ``np.nanstd(ddof=1)`` gives, without its 'Degrees of freedom <= 0' warning line for the
    degenerate columns (they are reported as degenerate, not warned about)."""
    n = keep.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(keep, X, 0.0).sum(axis=0) / n
        var = (np.where(keep, X - mean, 0.0) ** 2).sum(axis=0) / (n - 1)
    return np.sqrt(np.where(n > 1, var, np.nan))


def _carry_shift(g, A: np.ndarray, lay: np.ndarray, fid: np.ndarray, cols: np.ndarray,
                 carry: dict[str, np.ndarray] | None, signal: str) -> np.ndarray:
    """Per target column: the decision-token shift the patch would cause if its delta
    ``(v - f_S) · W_dec[S]`` reached the target's layer unchanged — mean clamp size times
    ``W_dec[S] · W_enc[:, T]`` (the linear part: it ignores whether T's activation function
    passes the shift). NaN without carry coefficients, off the decision signal, for arms other
    than a feature, or when the source itself is not recorded (its pre-patch value is needed)."""
    nan = np.full(cols.size, np.nan)
    if not carry or signal != "decision" or g.arm != "feature" or g.feature not in carry:
        return nan
    src = np.flatnonzero((lay == g.layer) & (fid == g.feature_id))
    if src.size == 0:
        return nan
    f_s = np.asarray(A[g.patched["row"].to_numpy(), src[0]], dtype=np.float64)
    value = g.patched["value"].to_numpy(dtype=float)
    scale = g.patched["scale"].to_numpy(dtype=float)
    target = np.where(np.isfinite(value), value, scale * f_s)
    clamp = np.nanmean(target - f_s) if np.isfinite(target - f_s).any() else np.nan
    return clamp * np.asarray(carry[g.feature], dtype=np.float64)[cols]


#: A source's null band of one target: same target, context, condition and signal.
EDGE_BAND_KEYS = ["source", "target", "context", "condition", "signal"]


def pathway_edges(
    trials: pd.DataFrame,
    acts: ArrayLike,
    rec_layer: ArrayLike,
    rec_feature: ArrayLike,
    signal: str = "decision",
    alpha: float = 0.05,
    min_d: float = 0.5,
    forward_only: bool = True,
    carry: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Test every (patched source, condition, context) x recorded target for a paired shift.

    ``acts`` [n_rows, n_rec] is indexed by ``trials.row``; ``rec_layer``/``rec_feature`` [n_rec]
    name its columns. Returns one row per tested pair (columns :data:`EDGE_COLUMNS`), sorted by
    q then |d|. ``mean_shift`` and ``d`` are patched minus baseline; ``sign`` is +1/-1 by the
    direction of the shift (0 when there is none). Degenerate pairs (fewer than two pairs, or
    every paired difference identical) have p = q = NaN and are never edges.
    """
    _check_signal(signal)
    if not (0.0 < alpha < 1.0) or min_d < 0:
        raise DataError("alpha must lie in (0, 1) and min_d must be non-negative")
    A = np.asarray(acts)
    lay = np.asarray(rec_layer, dtype=np.int64).ravel()
    fid = np.asarray(rec_feature, dtype=np.int64).ravel()
    if A.ndim != 2 or A.shape[1] != lay.size or lay.size != fid.size:
        raise DataError(
            f"activations of shape {A.shape} do not match {lay.size} recorded layers / "
            f"{fid.size} features"
        )
    df = normalise_trials(trials)[list(ANALYSIS_COLUMNS)]
    rows = df["row"].to_numpy()
    if (rows < 0).any() or (rows >= A.shape[0]).any():
        raise DataError(
            f"trials.row must index the {A.shape[0]} activation rows (found {rows.min()}..{rows.max()})"
        )
    targets = [feature_key(a, b) for a, b in zip(lay, fid, strict=True)]
    parts: list[pd.DataFrame] = []
    n_repeated = n_groups = 0
    for g in patched_groups(df):
        if g.baseline is None:
            continue
        pp = prompt_pairs(g.patched, g.baseline)
        if pp.n_prompts == 0:
            continue
        n_groups += 1
        n_repeated += pp.repeated
        if forward_only:
            cols = np.flatnonzero(lay > g.layer)
        else:
            cols = np.flatnonzero(~((lay == g.layer) & (fid == g.feature_id)))
        if cols.size == 0:
            continue
        P, B = pp.means(A[g.patched["row"].to_numpy()][:, cols],
                        A[g.baseline["row"].to_numpy()][:, cols])
        carry_shift = _carry_shift(g, A, lay, fid, cols, carry, signal)
        t, p, d_z, _, _, deg = paired_t_matrix(P, B)  # rows are prompts: n < 2 is degenerate
        keep = np.isfinite(P) & np.isfinite(B)
        n_pairs = keep.sum(axis=0)
        diff = np.where(keep, P - B, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            shift = diff.sum(axis=0) / n_pairs
            sd_avg = (_sample_sd(P, keep) + _sample_sd(B, keep)) / 2
            d = np.where(sd_avg > 0, shift / sd_avg, np.nan)
        parts.append(pd.DataFrame({
            "source": g.feature, "source_layer": g.layer, "source_feature": g.feature_id,
            "target": [targets[c] for c in cols], "target_layer": lay[cols],
            "target_feature": fid[cols], "context": g.context, "condition": g.condition,
            "patch": g.patch, "method": g.method, "signal": signal,
            "n_pairs": n_pairs.astype(np.int64), "mean_shift": shift, "d": d, "d_z": d_z,
            "statistic": t,
            "p": p, "degenerate": np.asarray(deg, dtype=bool), "arm": g.arm,
            "null_index": g.null_index, "carry_shift": carry_shift,
        }))
    warn_repeated_prompts(n_repeated, n_groups)
    if not parts:
        return pd.DataFrame(columns=EDGE_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    real = (out["arm"] != "null").to_numpy()  # null arms are the band, not hypotheses
    q = np.full(len(out), np.nan)
    q[real] = bh_fdr(out.loc[real, "p"].to_numpy(dtype=float))
    out["q"] = q
    with np.errstate(invalid="ignore"):
        out["vs_baseline"] = (~out["degenerate"]) & (out["q"] <= alpha) & \
            (out["d"].abs() >= min_d)
    controlled = bool((out["arm"] == "null").any())
    # edges claimable among many targets: maxT over each source's targets with its null arms
    maxt = maxt_edges(out, alpha) if controlled else None
    out, _ = null_band(out, alpha, keys=EDGE_BAND_KEYS, effect="mean_shift")
    out["edge"] = out["vs_baseline"] & controlled_verdict(out, controlled)
    out["sign"] = np.sign(out["mean_shift"].fillna(0.0)).astype(np.int8)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = out["carry_shift"] / out["mean_shift"]
    out["carry_share"] = share.where(np.isfinite(share))
    out["mechanism"] = np.where(out["carry_share"].isna(), "",
                                np.where(out["carry_share"] >= CARRY_DIRECT, "direct",
                                         "mediated"))
    out["_absd"] = -out["d"].abs()
    out = out.sort_values(["q", "_absd"], na_position="last", kind="mergesort")
    out = out.drop(columns="_absd").reset_index(drop=True)[EDGE_COLUMNS]
    if maxt is not None:
        out.attrs["maxt"] = maxt  # run_pathways writes it as pathways/edges_maxt
    return out


def build_graph(edges: pd.DataFrame, signal: str | None = None) -> nx.DiGraph:
    """A directed graph of the significant edges (``edge == True``), optionally of one signal.

    Nodes are "L{layer}-{id}" with ``layer`` and ``feature`` attributes. Several conditions or
    contexts can link the same source to the same target; the graph keeps one edge, the one with
    the largest |d|, with attributes weight (= |d|), d, sign, q, mean_shift, condition, context
    and signal. All attributes are plain Python scalars, so GraphML can store them.
    """
    g = nx.DiGraph()
    if edges.empty:
        return g
    e = edges[edges["edge"].astype(bool)]
    if signal is not None and "signal" in e.columns:
        e = e[e["signal"] == signal]
    e = e.assign(_absd=e["d"].abs()).sort_values("_absd", ascending=False, kind="mergesort")
    e = e.drop_duplicates(["source", "target"])
    for r in e.itertuples(index=False):
        g.add_node(r.source, layer=int(r.source_layer), feature=int(r.source_feature))
        g.add_node(r.target, layer=int(r.target_layer), feature=int(r.target_feature))
        g.add_edge(
            r.source, r.target, weight=float(abs(r.d)), d=float(r.d), sign=int(r.sign),
            q=float(r.q), mean_shift=float(r.mean_shift), condition=str(r.condition),
            context=str(r.context), signal=str(r.signal),
        )
    return g


def find_chains(
    graph: nx.DiGraph, min_len: int = 2, max_len: int = 8, max_chains: int = 100_000,
    signal: str = "",
) -> pd.DataFrame:
    """Paths of >= ``min_len`` edges whose layers strictly increase (e.g. L9 -> L17 -> L26).

    sign = product of the edge signs (a chain of two inhibitions excites); strength = the
    weakest |d| along the chain (a chain is as strong as its weakest link). Every such path is
    listed, sub-paths of longer chains included; enumeration stops at ``max_len`` edges and
    ``max_chains`` paths so that a dense graph cannot run away. Sorted by strength, then length.
    """
    if min_len < 1:
        raise DataError("min_len must be at least 1")
    found: list[dict[str, object]] = []

    def layer(n: str) -> int:
        return int(graph.nodes[n].get("layer", -1))

    def walk(path: list[str], signs: list[int], ds: list[float]) -> bool:
        if len(path) - 1 >= min_len:
            if len(found) >= max_chains:
                return False
            found.append({
                "signal": signal, "chain": " -> ".join(path), "nodes": list(path),
                "layers": [layer(n) for n in path], "length": len(path) - 1,
                "sign": int(math.prod(signs)), "strength": float(min(ds)), "signs": list(signs),
            })
        if len(path) - 1 >= max_len:
            return True
        last = path[-1]
        for nxt in sorted(graph.successors(last)):
            if layer(nxt) > layer(last):
                a = graph.edges[last, nxt]
                if not walk(path + [nxt], signs + [int(a["sign"])], ds + [float(a["weight"])]):
                    return False
        return True

    for start in sorted(graph.nodes):
        if not walk([start], [], []):
            break
    if not found:
        return pd.DataFrame(columns=CHAIN_COLUMNS)
    out = pd.DataFrame(found, columns=CHAIN_COLUMNS)
    return out.sort_values(["strength", "length"], ascending=[False, False],
                           kind="mergesort").reset_index(drop=True)


def layer_pair_summary(edges: pd.DataFrame) -> pd.DataFrame:
    """Per (signal, source_layer, target_layer): pairs tested, edges found (+/-), mean |d| of edges.

    Shows *where* the network routes influence (e.g. mostly L9 -> L17) and, through n_tested,
    how dense that routing is.
    """
    if edges.empty:
        return pd.DataFrame(columns=LAYER_PAIR_COLUMNS)
    e = edges.copy()
    if "signal" not in e.columns:
        e["signal"] = ""
    e["_tested"] = ~e["degenerate"].astype(bool)
    e["_edge"] = e["edge"].astype(bool)
    e["_pos"] = e["_edge"] & (e["sign"] > 0)
    e["_neg"] = e["_edge"] & (e["sign"] < 0)
    e["_absd"] = e["d"].abs().where(e["_edge"])
    out = e.groupby(["signal", "source_layer", "target_layer"], sort=True).agg(
        n_tested=("_tested", "sum"), n_edges=("_edge", "sum"), n_positive=("_pos", "sum"),
        n_negative=("_neg", "sum"), mean_abs_d=("_absd", "mean"),
    ).reset_index()
    return out[LAYER_PAIR_COLUMNS]


def _graph_json(graph: nx.DiGraph, signal: str) -> dict[str, object]:
    def num(x: float) -> float | None:
        return float(x) if math.isfinite(float(x)) else None

    return {
        "signal": signal,
        "nodes": [{"id": n, "layer": int(a.get("layer", -1)), "feature": int(a.get("feature", -1))}
                  for n, a in sorted(graph.nodes(data=True))],
        "edges": [
            {"source": u, "target": v, "weight": num(a["weight"]), "sign": int(a["sign"]),
             "d": num(a["d"]), "q": num(a["q"]), "mean_shift": num(a["mean_shift"]),
             "condition": a["condition"]}
            for u, v, a in sorted(graph.edges(data=True), key=lambda x: (x[0], x[1]))
        ],
    }


def _write_graph(graph: nx.DiGraph, signal: str, stem: Path) -> None:
    nx.write_graphml(graph, stem.with_suffix(".graphml"))
    stem.with_suffix(".json").write_text(json.dumps(_graph_json(graph, signal), indent=1))


def export(
    edges: pd.DataFrame,
    graph: nx.DiGraph | Mapping[str, nx.DiGraph],
    chains: pd.DataFrame,
    out_dir: str | Path,
) -> dict[str, Path]:
    """Write the pathway results under ``out_dir/pathways/``; returns the paths written.

    Files: ``edges.parquet``/``edges.csv`` (every tested pair), ``chains.parquet``,
    ``layer_pairs.parquet`` (tables carry a ``signal`` column), ``graph.graphml``/``graph.json``
    (the primary graph) and, when ``graph`` maps signals to graphs, ``graph_{signal}.*`` for each.
    """
    d = Path(out_dir) / "pathways"
    d.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    edges.to_parquet(d / "edges.parquet", index=False)
    edges.to_csv(d / "edges.csv", index=False)
    chains.to_parquet(d / "chains.parquet", index=False)
    layer_pair_summary(edges).to_parquet(d / "layer_pairs.parquet", index=False)
    for name in ("edges.parquet", "edges.csv", "chains.parquet", "layer_pairs.parquet"):
        written[name] = d / name
    if isinstance(graph, nx.DiGraph):
        sig = str(edges["signal"].iloc[0]) if not edges.empty else ""
        graphs: dict[str, nx.DiGraph] = {sig: graph}
        per_signal = False
    else:
        graphs = {str(k): v for k, v in graph.items()}
        per_signal = True
    if graphs:
        primary = "decision" if "decision" in graphs else next(iter(graphs))
        _write_graph(graphs[primary], primary, d / "graph")
        written["graph.graphml"], written["graph.json"] = d / "graph.graphml", d / "graph.json"
        if per_signal:
            for sig, gr in graphs.items():
                _write_graph(gr, sig, d / f"graph_{sig}")
                written[f"graph_{sig}.graphml"] = d / f"graph_{sig}.graphml"
                written[f"graph_{sig}.json"] = d / f"graph_{sig}.json"
    return written


def _check_signal(signal: str) -> None:
    if signal not in SIGNALS:
        raise DataError(f"unknown signal {signal!r}; choose one of {', '.join(SIGNALS)}")


# ------------------------------------------------------------------------------ the stage


@dataclass
class PathwaysResult:
    """What ``run_pathways`` found and wrote: every tested pair (``edges``, one ``signal``
    column), chains, one graph per signal, and signals that could not be read (with why)."""

    edges: pd.DataFrame
    chains: pd.DataFrame
    graphs: dict[str, nx.DiGraph]
    skipped: dict[str, str] = field(default_factory=dict)
    written: dict[str, Path] = field(default_factory=dict)


def run_pathways(run_dir: str | Path, cfg: RunConfig | None = None, *,
                 signals: tuple[str, ...] = ("decision", "gen_mean"),
                 forward_only: bool = True, min_chain_len: int = 2) -> PathwaysResult:
    """The pathways stage: paired shifts of every recorded target under each patched source,
    for each signal, with ``cfg.analysis`` alpha and min_d; writes ``RUN/pathways/`` and
    records the config. A signal that cannot be read is skipped when others remain. ``cfg``
    None: the run's config."""
    rd = RunDir(run_dir).require_dir()
    cfg = resolve_config(rd.root) if cfg is None else cfg
    a = cfg.analysis
    trials = load_trials(rd.root)
    frames: list[pd.DataFrame] = []
    chains: list[pd.DataFrame] = []
    graphs: dict[str, nx.DiGraph] = {}
    skipped: dict[str, str] = {}
    carry = load_carry(rd.root)
    maxt_frames: list[pd.DataFrame] = []
    for sig in signals:
        _check_signal(sig)
        try:
            acts, rec_layer, rec_feature = load_activations(rd.root, sig)
        except DataError as exc:
            if len(signals) == 1:
                raise
            skipped[sig] = str(exc)
            continue
        e = pathway_edges(trials, acts, rec_layer, rec_feature, signal=sig, alpha=a.alpha,
                          min_d=a.min_d, forward_only=forward_only, carry=carry)
        graphs[sig] = build_graph(e, signal=sig)
        maxt = e.attrs.pop("maxt", None)  # a table in .attrs would break pandas' concat
        if maxt is not None:
            maxt_frames.append(maxt)
        frames.append(e)
        chains.append(find_chains(graphs[sig], min_len=min_chain_len, signal=sig))
    if not graphs:
        raise DataError(f"no activation signal could be read from {rd.root}")
    edges = pd.concat([f for f in frames if not f.empty] or frames, ignore_index=True)
    chains_all = pd.concat([c for c in chains if not c.empty] or chains, ignore_index=True)
    written = export(edges, graphs, chains_all, rd.root)
    if maxt_frames:  # Westfall-Young maxT edges (analysis/edges_maxt.py, docs/confirm.md)
        written["edges_maxt"] = write_table(pd.concat(maxt_frames, ignore_index=True),
                                            rd.pathways / "edges_maxt.parquet")
    record_config(rd.root, cfg)
    return PathwaysResult(edges, chains_all, graphs, skipped, written)
