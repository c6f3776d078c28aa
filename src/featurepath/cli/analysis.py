"""Commands of the analysis stages: causal, pathways, words.

Each reads what ``patch`` wrote, takes its thresholds from ``RUN/config.yaml`` (``analysis.*``)
with flags as overrides, calls the stage's ``run_<stage>`` and prints what it found. They cost no
model time, so they can be rerun with other thresholds.
"""

from __future__ import annotations

from pathlib import Path

import typer

from featurepath.cli import app
from featurepath.cli.options import ALPHA, CONFIG, EXISTING_RUN, Signal, config_for
from featurepath.errors import ConfigError

_CAUSAL_HELP = (
    "Test which patched features change behaviour: stop rate, bet size and P(exit).\n\n"
    "Each patched condition is compared with the baseline of its own prompt context and patching "
    "method (reconstruct runs: the no-clamp reconstruction of the same layer). Stop rate: Fisher's "
    "exact test over every parsed decision; invalid rate: Fisher's exact test. Bet size: "
    "Mann-Whitney. P(exit): paired t-test over distinct prompts (repeats averaged; fewer than two "
    "prompts is degenerate, not tested). BH-FDR runs over every test; significant = q <= "
    "analysis.alpha and |effect| >= analysis.min_effect_*. See docs/statistics.md.\n\n"
    "Writes causal_tests, causal_features (and dose_response when conditions carry a scale) as "
    ".parquet and .csv into RUN_DIR."
)

_PATHWAYS_HELP = (
    "Find feature -> feature pathways: which recorded features shift when a source is patched.\n\n"
    "Paired t-tests over distinct prompts (repeats averaged; fewer than two prompts is degenerate) "
    "(patched vs same-context baseline) for every source x condition x target, BH-FDR over all pairs, edge when q <= analysis.alpha and |d| >= analysis.min_d "
    "(d = mean shift over the target's spread, Lakens' d_av); then chains of edges with strictly "
    "increasing layers (e.g. L9 -> L17 -> L26).\n\n"
    "Writes RUN_DIR/pathways/: edges (.parquet/.csv), chains.parquet, layer_pairs.parquet (each "
    "with a `signal` column), graph.graphml/.json (the decision graph when run) and "
    "graph_<signal>.graphml/.json per signal."
)


@app.command("causal", help=_CAUSAL_HELP,
             short_help="Which patched features change stop rate, bet size and P(exit).")
def causal_command(
    run_dir: Path = EXISTING_RUN,
    config: Path = CONFIG,
    alpha: float = ALPHA,
    same_effect_tol: float = typer.Option(
        None, "--same-effect-tol",
        help="Flag a feature when its safe- and risky-value effects agree in sign and differ by at "
             "most this fraction of the larger one (analysis.same_effect_tol; default 0.5).",
    ),
    n_boot: int = typer.Option(None, "--n-boot", help="Bootstrap resamples for bet-size CIs "
                                                      "(analysis.n_boot; 0: none)."),
    top: int = typer.Option(10, "--top", help="How many features to print."),
) -> None:
    from featurepath.analysis.causal import run_causal

    cfg = config_for(run_dir, config, **{"analysis.alpha": alpha,
                                         "analysis.same_effect_tol": same_effect_tol,
                                         "analysis.n_boot": n_boot})
    res = run_causal(run_dir, cfg)
    tests, features, a = res.tests, res.features, cfg.analysis.alpha
    typer.echo(f"{len(tests)} tests over {len(features)} features: {res.n_significant} "
               f"significant at q<={a:g} with a practical minimum effect, "
               f"{res.n_degenerate} degenerate (not tested)")
    counts = features["class"].value_counts()
    typer.echo("classes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    n_inv = tests.drop_duplicates(["feature", "context", "condition"])["n_invalid_patched"].sum()
    if n_inv:
        typer.echo(f"{int(n_inv)} invalid patched trials: kept in the stop-rate denominator when "
                   "parsed, left out of the bet sample, tested as invalid_rate")
    for line in features["summary"].head(top):
        typer.echo(f"  {line}")
    same = features[features["same_effect"]]
    if not same.empty:
        typer.echo(
            f"warning: {len(same)} feature(s) move behaviour the same way with the safe and the "
            f"risky value ({', '.join(same['feature'].head(5))}): check the patching method"
        )
    typer.echo(res.controls_line())
    if not res.dose.empty:
        n_dose = int((res.dose["q"] <= a).sum())
        typer.echo(f"dose response: {n_dose} of {len(res.dose)} scale correlations at q<={a:g}")
    typer.echo(f"wrote causal_tests / causal_features (.parquet, .csv) to {run_dir}")


@app.command("pathways", help=_PATHWAYS_HELP,
             short_help="Feature -> feature edges and chains across layers.")
def pathways_command(
    run_dir: Path = EXISTING_RUN,
    config: Path = CONFIG,
    alpha: float = ALPHA,
    min_d: float = typer.Option(None, "--min-d", help="Minimum |d| (Lakens' d_av: mean shift "
                                                      "over the target's spread) of an edge "
                                                      "(analysis.min_d; default 0.5)."),
    signal: Signal = typer.Option(
        Signal.both, "--signal",
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
    from featurepath.analysis.pathways import layer_pair_summary, run_pathways

    cfg = config_for(run_dir, config, **{"analysis.alpha": alpha, "analysis.min_d": min_d})
    signals = ("decision", "gen_mean") if signal is Signal.both else (signal.value,)
    res = run_pathways(run_dir, cfg, signals=signals, forward_only=not all_layers,
                       min_chain_len=min_chain_len)
    for sig, why in res.skipped.items():
        typer.echo(f"skipping {sig}: {why}")
    for sig, graph in res.graphs.items():
        edges = res.edges[res.edges["signal"] == sig]
        chains = res.chains[res.chains["signal"] == sig] if not res.chains.empty else res.chains
        n_edge = int(edges["edge"].sum())
        n_pos = int((edges["edge"] & (edges["sign"] > 0)).sum())
        typer.echo(
            f"[{sig}] {len(edges)} source-target pairs, {int(edges['degenerate'].sum())} "
            f"degenerate; {n_edge} edges ({n_pos} up, {n_edge - n_pos} down) between "
            f"{graph.number_of_nodes()} features; {len(chains)} chains"
        )
        for r in chains.head(top).itertuples(index=False):
            typer.echo(f"  {r.chain}  (sign {r.sign:+d}, strength |d|>={r.strength:.2f})")
    summary = layer_pair_summary(res.edges)
    busiest = summary[summary["n_edges"] > 0].sort_values("n_edges", ascending=False).head(3)
    if not busiest.empty:
        typer.echo("busiest layer pairs:")
    for r in busiest.itertuples(index=False):
        typer.echo(f"  [{r.signal}] L{r.source_layer} -> L{r.target_layer}: {r.n_edges} edges")
    typer.echo(f"wrote {len(res.written)} files to {Path(run_dir) / 'pathways'}")


@app.command("words", short_help="Words each feature's patch adds to or removes from the answers.")
def words_cmd(
    run_dir: Path = typer.Argument(None, help="Run directory with trials.parquet."),
    config: Path = CONFIG,
    jsonl: Path = typer.Option(None, "--jsonl", help="An Exp2-style JSONL log instead of a run "
                                                     "directory (baseline = scale 1.0)."),
    out: Path = typer.Option(None, help="Output directory (default: the run directory, or the "
                                        "current directory for --jsonl)."),
    prior: float = typer.Option(None, "--prior", help="Dirichlet prior strength (Monroe et al. "
                                                      "2008; analysis.words_prior, default "
                                                      "1000)."),
    alpha: float = ALPHA,
    pool_scales: bool = typer.Option(False, "--pool-scales", help="JSONL only: pool scales "
                                     "below 1 and above 1 into two comparisons (more power)."),
    token_pattern: str = typer.Option(None, help="Regex for tokens (analysis.words_token_pattern; "
                                                 r"default '\$?\d+|\b[a-z]+\b' on lowercased "
                                                 "text)."),
) -> None:
    """Which words each feature's patch adds to, or removes from, the model's answers compared
    with the baseline (the rows that patch nothing): log-odds with an informative Dirichlet
    prior ("Fightin' Words"), z-scores and BH-FDR. Writes words.parquet, words.csv and
    words_summary.md."""
    if (run_dir is None) == (jsonl is None):
        raise ConfigError("give either a RUN_DIR or --jsonl FILE")
    overrides = {"analysis.alpha": alpha, "analysis.words_prior": prior,
                 "analysis.words_token_pattern": token_pattern}
    if jsonl is not None:
        from featurepath.config import RunConfig, with_overrides
        from featurepath.importers.exp2_jsonl import run_words_jsonl

        a = with_overrides(RunConfig(), overrides).analysis
        res = run_words_jsonl(jsonl, out or Path("."), alpha0=a.words_prior,
                              token_pattern=a.words_token_pattern, fdr_alpha=a.alpha,
                              pool_scales=pool_scales)
        typer.echo(res["report"] if isinstance(res.get("report"), str) else "")
        typer.echo(res["summary"])
        typer.echo(f"({res['seconds']:.1f}s) wrote " + ", ".join(str(p) for p in
                                                              res["paths"].values()))
        return
    from featurepath.analysis.words_run import run_words

    res = run_words(run_dir, config_for(run_dir, config, **overrides), out_dir=out)
    typer.echo(res.summary)
    typer.echo("wrote " + ", ".join(str(p) for p in res.written.values()))
