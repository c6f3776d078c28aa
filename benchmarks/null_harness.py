"""Null harness: how often each analysis stage "finds" something where nothing is there.

Every simulated run below is a null run. The patched and baseline arms come from one
distribution, so the rate of p < 0.05 should be about 0.05, and the share of runs with any
significant finding should be at most alpha (BH controls the FDR, and under the complete null
the FDR equals that chance). The simulations have the structure that misled the old analysis:
repeated prompts, float32 rounding, prompts with different bet scales, games with many
correlated decision points, and responses that loop.

    python benchmarks/null_harness.py [--runs 200] [--seed 0]

It prints one line per stage. Issue 11 has the numbers from before the fix.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from featurepath.analysis.causal import causal_table
from featurepath.analysis.discover import discover_features
from featurepath.analysis.pathways import pathway_edges
from featurepath.analysis.words import baseline_by_condition, word_table


def null_trials(rng: np.random.Generator, n_prompts: int = 8, repeats: int = 4,
                n_features: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """Trials and decision-token activations of an A/A patch run. Each prompt has its own
    P(stop), stop probability, bet scale and activations; every arm draws from them alike,
    plus float32-sized rounding noise."""
    p_stop = rng.uniform(0.2, 0.8, n_prompts)
    stop_p = rng.uniform(0.2, 0.8, n_prompts)
    scale = rng.choice([10.0, 100.0], n_prompts)
    acts_prompt = rng.normal(5.0, 1.0, (n_prompts, 20))
    rows, acts = [], []
    arms = [("", "none", -1, -1)] + [(f"L1-{f}", "safe", 1, f) for f in range(n_features)]
    for feature, patch, layer, fid in arms:
        for t in range(n_prompts * repeats):
            j = t % n_prompts
            stop = rng.random() < stop_p[j]
            rows.append({
                "row": len(rows), "feature": feature, "layer": layer, "feature_id": fid,
                "condition": patch, "context": "risky", "patch": patch, "trial": t,
                "prompt_id": f"p{j}", "method": "delta", "valid": True,
                "action": "stop" if stop else "bet",
                "bet": np.nan if stop else float(scale[j] * rng.uniform(0.1, 1.0)),
                "p_stop": p_stop[j] + 1e-8 * rng.standard_normal(),
            })
            acts.append(acts_prompt[j] + 1e-7 * rng.standard_normal(20))
    return pd.DataFrame(rows), np.asarray(acts, dtype=np.float32)


def causal_and_pathways(runs: int, rng: np.random.Generator) -> None:
    sig_runs = edge_runs = 0
    p_by_metric: dict[str, list[float]] = {}
    for _ in range(runs):
        trials, acts = null_trials(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tests, _ = causal_table(trials, n_boot=0)
            edges = pathway_edges(trials, acts, np.full(20, 3), np.arange(20))
        sig_runs += bool(tests["significant"].any())
        edge_runs += bool(edges["edge"].any())
        for m, g in tests.groupby("metric"):
            p_by_metric.setdefault(str(m), []).extend(g["p"].dropna().tolist())
    rates = ", ".join(f"{m} {np.mean(np.asarray(v) < 0.05):.3f}" if v else f"{m} untested"
                      for m, v in p_by_metric.items())
    print(f"causal:   runs with a significant test {sig_runs}/{runs}; p<0.05 by metric: {rates}")
    print(f"pathways: runs with an edge {edge_runs}/{runs}")


def discover(runs: int, rng: np.random.Generator) -> None:
    hits, rate = 0, []
    for _ in range(runs):
        game = np.repeat(np.arange(40), 10)
        label = rng.permutation(np.arange(40) < 20)[game]
        X = rng.normal(0, 1, (40, 50))[game] + rng.normal(0, 0.3, (400, 50))
        df = discover_features(X, label, np.full(50, 2), np.arange(50), games=game)
        hits += bool(df["candidate"].any())
        rate.append(float((df["p"] < 0.05).mean()))
    print(f"discover: runs with a candidate {hits}/{runs}; p<0.05 {np.mean(rate):.3f}")


def words(runs: int, rng: np.random.Generator) -> None:
    vocab = ["bet", "stop", "$10", "$20", "$50", "$100", "spin", "win", "lose", "again"]
    hits, rate = 0, []
    for _ in range(runs):
        rows = [{"layer": 1, "feature_id": 1.0, "context": "risky", "condition": cond,
                 "scale": np.nan,
                 "response": " ".join([rng.choice(vocab)] * int(rng.integers(5, 40))
                                      + list(rng.choice(vocab, 3)))}
                for cond in ("baseline", "patched") for _ in range(30)]
        t = word_table(pd.DataFrame(rows), baseline_selector=baseline_by_condition(),
                       n_perm=500, seed=int(rng.integers(1 << 31)))
        hits += bool(t["significant"].any())
        rate.append(float((t["p"] < 0.05).mean()))
    print(f"words:    runs with a significant word {hits}/{runs}; p<0.05 {np.mean(rate):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    causal_and_pathways(args.runs, rng)
    discover(args.runs, rng)
    words(max(1, args.runs // 4), rng)


if __name__ == "__main__":
    main()
