"""``featurepath causal`` and ``featurepath pathways``: the analysis stages of a run directory.

Importing this module registers both commands on :data:`featurepath.cli.app`. They only read
``trials.parquet`` / ``activations.zarr`` and write their tables next to them, so they can be rerun
with other thresholds at no model cost.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import pandas as pd
import typer

from featurepath.analysis.causal import causal_table, dose_response
from featurepath.analysis.pathways import (
    build_graph,
    export,
    find_chains,
    layer_pair_summary,
    pathway_edges,
)
from featurepath.analysis.run_data import load_activations, load_trials
from featurepath.cli import app
from featurepath.errors import DataError

__all__ = ["causal_command", "pathways_command"]


def _run_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DataError(f"run directory {path} does not exist")
    return path


def _write(df: pd.DataFrame, run_dir: Path, stem: str) -> None:
    df.to_parquet(run_dir / f"{stem}.parquet", index=False)
    df.to_csv(run_dir / f"{stem}.csv", index=False)


_CAUSAL_HELP = (
    "Test which patched features change behaviour: stop rate, bet size and P(stop).\n\n"
    "Each patched condition is compared with the baseline of its own prompt context and patching "
    "method (reconstruct runs: the no-clamp reconstruction of the same layer). Stop rate: Fisher's "
    "exact test on valid trials (invalid ones are excluded and counted). Bet size: Mann-Whitney. "
    "P(stop): paired t-test by prompt. Zero-variance comparisons are reported as degenerate, not "
    "tested; BH-FDR runs over every test.\n\n"
    "Writes causal_tests, causal_features (and dose_response when conditions carry a scale) as "
    ".parquet and .csv into RUN_DIR."
)

_PATHWAYS_HELP = (
    "Find feature -> feature pathways: which recorded features shift when a source is patched.\n\n"
    "Paired t-tests by prompt (patched vs same-context baseline) for every source x condition x "
    "target, BH-FDR over all pairs, edge when q < alpha and |d_z| > min-d; then chains of edges "
    "with strictly increasing layers (e.g. L9 -> L17 -> L26).\n\n"
    "Writes RUN_DIR/pathways/: edges (.parquet/.csv), chains.parquet, layer_pairs.parquet (each "
    "with a `signal` column), graph.graphml/.json (the decision graph when run) and "
    "graph_<signal>.graphml/.json per signal."
)


@app.command("causal", help=_CAUSAL_HELP)
def causal_command(
    run_dir: Path = typer.Argument(..., help="Run directory holding trials.parquet (from `patch`)."),
    alpha: float = typer.Option(0.05, "--alpha", help="FDR level (Benjamini-Hochberg over every test)."),
    same_effect_tol: float = typer.Option(
        0.5, "--same-effect-tol",
        help="Flag a feature when its safe- and risky-value effects agree in sign and differ by at "
             "most this fraction of the larger one (the intervention, not the value, acts).",
    ),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for bet-size CIs (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    top: int = typer.Option(10, "--top", help="How many features to print."),
) -> None:
    """Test which patched features change behaviour: stop rate, bet size and P(stop).

    Each patched condition is compared with the baseline of its own prompt context and patching
    method (reconstruct runs: the no-clamp reconstruction of the same layer). Stop rate: Fisher's
    exact test on valid trials (invalid ones are excluded and counted). Bet size: Mann-Whitney.
    P(stop): paired t-test by prompt. Zero-variance comparisons are reported as degenerate, not
    tested. Writes causal_tests, causal_features (and dose_response when conditions carry a
    scale) as .parquet and .csv into RUN_DIR.
    """
    rd = _run_dir(run_dir)
    trials = load_trials(rd)
    tests, features = causal_table(trials, alpha=alpha, same_effect_tol=same_effect_tol,
                                   n_boot=n_boot, seed=seed)
    _write(tests, rd, "causal_tests")
    _write(features, rd, "causal_features")
    dose = dose_response(trials)
    if not dose.empty:
        _write(dose, rd, "dose_response")
    n_deg = int(tests["degenerate"].sum())
    n_sig = int(((tests["q"] < alpha) & ~tests["degenerate"]).sum())
    typer.echo(
        f"{len(tests)} tests over {len(features)} features: {n_sig} significant at q<{alpha:g}, "
        f"{n_deg} degenerate (no variance, not tested)"
    )
    counts = features["class"].value_counts()
    typer.echo("classes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    n_inv = tests.drop_duplicates(["feature", "context", "condition"])["n_invalid_patched"].sum()
    if n_inv:
        typer.echo(f"{int(n_inv)} invalid patched trials were excluded from stop rate and bet")
    for line in features["summary"].head(top):
        typer.echo(f"  {line}")
    same = features[features["same_effect"]]
    if not same.empty:
        typer.echo(
            f"warning: {len(same)} feature(s) move behaviour the same way with the safe and the "
            f"risky value ({', '.join(same['feature'].head(5))}): check the patching method"
        )
    if not dose.empty:
        n_dose = int((dose["q"] < alpha).sum())
        typer.echo(f"dose response: {n_dose} of {len(dose)} scale correlations at q<{alpha:g}")
    typer.echo(f"wrote causal_tests / causal_features (.parquet, .csv) to {rd}")


class SignalChoice(str, Enum):
    decision = "decision"
    gen_mean = "gen_mean"
    gen_max = "gen_max"
    both = "both"


@app.command("pathways", help=_PATHWAYS_HELP)
def pathways_command(
    run_dir: Path = typer.Argument(..., help="Run directory with trials.parquet and activations.zarr."),
    alpha: float = typer.Option(0.05, "--alpha", help="FDR level (Benjamini-Hochberg over all pairs)."),
    min_d: float = typer.Option(0.5, "--min-d", help="Minimum |Cohen's d_z| of a shift to count as an edge."),
    signal: SignalChoice = typer.Option(
        SignalChoice.both, "--signal",
        help="Activation signal: decision (decision token), gen_mean (mean over generated "
             "tokens), gen_max, or both (decision and gen_mean).",
    ),
    all_layers: bool = typer.Option(
        False, "--all-layers",
        help="Also test targets at or below the source layer (only meaningful for generated-token "
             "signals; at the decision token causality flows forward only).",
    ),
    min_chain_len: int = typer.Option(2, "--min-chain-len", help="Minimum edges in a reported chain."),
    top: int = typer.Option(10, "--top", help="How many chains to print per signal."),
) -> None:
    """Find feature -> feature pathways: which recorded features shift when a source is patched.

    Paired t-tests by prompt (patched vs same-context baseline) for every source x condition x
    target, BH-FDR over all pairs, edge when q < alpha and |d_z| > min-d; then chains of edges
    with strictly increasing layers (e.g. L9 -> L17 -> L26). Writes RUN_DIR/pathways/: edges
    (.parquet/.csv), chains.parquet, layer_pairs.parquet (each with a `signal` column),
    graph.graphml/.json (decision graph when run) and graph_<signal>.graphml/.json per signal.
    """
    rd = _run_dir(run_dir)
    trials = load_trials(rd)
    wanted = ["decision", "gen_mean"] if signal is SignalChoice.both else [signal.value]
    all_edges: list[pd.DataFrame] = []
    all_chains: list[pd.DataFrame] = []
    graphs = {}
    for sig in wanted:
        try:
            acts, rec_layer, rec_feature = load_activations(rd, sig)
        except DataError as exc:
            if len(wanted) > 1:
                typer.echo(f"skipping {sig}: {exc}")
                continue
            raise
        edges = pathway_edges(trials, acts, rec_layer, rec_feature, signal=sig, alpha=alpha,
                              min_d=min_d, forward_only=not all_layers)
        graph = build_graph(edges, signal=sig)
        chains = find_chains(graph, min_len=min_chain_len, signal=sig)
        all_edges.append(edges)
        all_chains.append(chains)
        graphs[sig] = graph
        n_deg = int(edges["degenerate"].sum()) if not edges.empty else 0
        n_edge = int(edges["edge"].sum()) if not edges.empty else 0
        n_pos = int((edges["edge"] & (edges["sign"] > 0)).sum()) if not edges.empty else 0
        typer.echo(
            f"[{sig}] {len(edges)} source-target pairs, {n_deg} degenerate; {n_edge} edges "
            f"({n_pos} up, {n_edge - n_pos} down) between {graph.number_of_nodes()} features; "
            f"{len(chains)} chains"
        )
        for r in chains.head(top).itertuples(index=False):
            typer.echo(f"  {r.chain}  (sign {r.sign:+d}, strength |d|>={r.strength:.2f})")
    if not graphs:
        raise DataError(f"no activation signal could be read from {rd}")
    edges_all = pd.concat([e for e in all_edges if not e.empty] or all_edges, ignore_index=True)
    chains_all = pd.concat([c for c in all_chains if not c.empty] or all_chains,
                           ignore_index=True)
    written = export(edges_all, graphs, chains_all, rd)
    summary = layer_pair_summary(edges_all)
    busiest = summary[summary["n_edges"] > 0].sort_values("n_edges", ascending=False).head(3)
    if not busiest.empty:
        typer.echo("busiest layer pairs:")
    for r in busiest.itertuples(index=False):
        if r.n_edges:
            typer.echo(f"  [{r.signal}] L{r.source_layer} -> L{r.target_layer}: {r.n_edges} edges")
    typer.echo(f"wrote {len(written)} files to {rd / 'pathways'}")
