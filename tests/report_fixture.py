"""A small synthetic run directory for the report tests.

It holds every file the report reads, with values chosen so that each section has something to
show, plus hostile model text (a ``<script>`` that sets ``window.__pwned`` and an ``<img
onerror>``) so tests can prove that model-written text is shown, never executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

INJECTED_SCRIPT = "<script>window.__pwned = 1</script>"
INJECTED_IMG = '<img src=x onerror="window.__pwned = 2">'
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
LAYERS = (3, 8, 13)
FEATURES = [(3, 1), (3, 7), (8, 2), (8, 4), (13, 5), (13, 9)]


def _name(layer: int, fid: int) -> str:
    return f"L{layer}-{fid}"


def make_run_dir(root: Path, *, model: str = MODEL) -> Path:
    """Write a complete synthetic run into ``root/run`` and return that directory."""
    run = Path(root) / "run"
    (run / "play").mkdir(parents=True, exist_ok=True)
    (run / "pathways").mkdir(parents=True, exist_ok=True)

    (run / "config.yaml").write_text(
        f"model: {model}\nseed: 7\nsaes:\n  kind: llamascope\n  layers: [3, 8, 13]\n"
        "patch:\n  n_trials: 30\n  positions: last\n"
    )
    (run / "run.json").write_text(json.dumps({
        "model": model,
        "saes": {"kind": "llamascope", "repo": "fnlp/Llama3_1-8B-Base-LXR8x"},
        "versions": {"featurepath": "0.1.0", "torch": "2.4.0"},
        "seeds": {"run": 7},
        "timings": {"play": 12.5, "discover": 3.25, "patch": 301.0},
        "n_trials": 1440,
        "bytes_stored": 7340032,
    }))
    (run / "sae_quality.json").write_text(json.dumps({
        str(layer): {"fvu": 0.1 + 0.02 * i, "l0": 40 + 5 * i, "dead_frac": 0.01 * i,
                     "loss_increase": 0.05 * (i + 1), "d_sae": 32768}
        for i, layer in enumerate(LAYERS)
    }))

    rows = []
    for ci, cond in enumerate(["BASE", "GMHWP", "W"]):
        for bi, bet in enumerate(["fixed", "variable"]):
            rows.append(dict(condition=cond, bet_type=bet, n_games=50,
                             bankruptcy_rate=0.05 * (ci + 1) + 0.2 * bi,
                             stop_rate=0.9 - 0.1 * ci - 0.2 * bi, mean_rounds=3.0 + ci,
                             mean_bet=10.0 + 15 * bi + 2 * ci, total_bet=40.0 + ci,
                             net_result=-5.0 * ci, invalid_rate=0.01,
                             irrationality_index=0.1 * ci + 0.05 * bi))
    pd.DataFrame(rows).to_parquet(run / "play" / "metrics.parquet")

    disc = []
    for i, (layer, fid) in enumerate(FEATURES + [(8, 11), (13, 12)]):
        cand = i < len(FEATURES)
        disc.append(dict(feature=_name(layer, fid), layer=layer, feature_id=fid,
                         mean_safe=0.5 + i, mean_bankrupt=0.2 + 0.5 * i,
                         t=3.0 - i, p=10.0 ** -(6 - i * 0.5), q=10.0 ** -(5 - i * 0.5),
                         d=0.9 - 0.25 * i, degenerate=False, candidate=cand,
                         direction="risky" if i % 2 else "safe"))
    pd.DataFrame(disc).to_parquet(run / "discover.parquet")

    tests = []
    for i, (layer, fid) in enumerate(FEATURES):
        for j, cond in enumerate(["safe_with_risky_patch", "risky_with_safe_patch"]):
            eff = (-1) ** (i + j) * (0.05 + 0.04 * i)
            tests.append(dict(feature=_name(layer, fid), layer=layer, feature_id=fid,
                              context=cond.split("_")[0], condition=cond, patch=cond[-11:],
                              metric="stop_rate", n_patched=30, n_baseline=30,
                              n_invalid_patched=1, n_invalid_baseline=0,
                              baseline_value=0.5, patched_value=0.5 + eff, effect=eff,
                              ci_low=eff - 0.03, ci_high=eff + 0.03, statistic=2.0 + i,
                              p=0.001 * (i + 1), q=0.002 * (i + 1) + 0.01 * j,
                              degenerate=False, test="fisher"))
    pd.DataFrame(tests).to_parquet(run / "causal_tests.parquet")
    pd.DataFrame([dict(feature=_name(layer, fid), layer=layer, feature_id=fid,
                       **{"class": "risky" if i % 2 else "safe"}, same_effect=(i == 5),
                       n_significant=2 - (i == 5), best_q=0.002 * (i + 1),
                       summary=f"moves stop_rate by {0.05 + 0.04 * i:.2f}")
                  for i, (layer, fid) in enumerate(FEATURES)]).to_parquet(
        run / "causal_features.parquet")

    # signs are +1/-1 integers, as analysis.pathways writes them
    edges = [((3, 1), (8, 2), 1.2, 1), ((3, 1), (8, 4), -0.6, -1), ((3, 7), (8, 2), 0.4, 1),
             ((8, 2), (13, 5), 1.5, 1), ((8, 4), (13, 9), -0.9, -1), ((3, 7), (13, 9), 0.3, 1),
             ((3, 1), (13, 5), -0.2, -1)]
    erows, gedges = [], []
    for k, (src, tgt, d, sign) in enumerate(edges):
        # One condition string carries a closing script tag: JSON in the page must escape it.
        cond = "risky_baseline" if k else "safe_baseline</script><script>window.__pwned=3</script>"
        erows.append(dict(source=_name(*src), source_layer=src[0], source_feature=src[1],
                          target=_name(*tgt), target_layer=tgt[0], target_feature=tgt[1],
                          context="risky", condition=cond, signal="decision", n_pairs=64,
                          mean_shift=0.1 * d, d=d, statistic=4.0 * d, p=1e-4, q=1e-3 * (k + 1),
                          degenerate=False, edge=True, sign=sign))
        gedges.append(dict(source=_name(*src), target=_name(*tgt), weight=abs(d), sign=sign,
                           d=d, q=1e-3 * (k + 1), mean_shift=0.1 * d, condition=cond))
    pd.DataFrame(erows).to_parquet(run / "pathways" / "edges.parquet")
    (run / "pathways" / "graph.json").write_text(json.dumps({
        "signal": "decision",
        "nodes": [dict(id=_name(la, f), layer=la, feature=f) for la, f in FEATURES],
        "edges": gedges,
    }))
    pd.DataFrame([
        dict(signal="decision", chain="L3-1 -> L8-2 -> L13-5", nodes=["L3-1", "L8-2", "L13-5"],
             layers=[3, 8, 13], length=2, sign=1, strength=1.2, signs=[1, 1]),
        dict(signal="decision", chain="L3-1 -> L8-4 -> L13-9", nodes=["L3-1", "L8-4", "L13-9"],
             layers=[3, 8, 13], length=2, sign=1, strength=0.6, signs=[-1, -1]),
        dict(signal="decision", chain="L3-7 -> L13-9", nodes=["L3-7", "L13-9"], layers=[3, 13],
             length=1, sign=1, strength=0.3, signs=[1]),
    ]).to_parquet(run / "pathways" / "chains.parquet")

    words = []
    vocab_add = ["stop", "safe", "quit", "</script><b>bold</b>"]
    vocab_rm = ["bet", "all", "100", "risk"]
    for i, (layer, fid) in enumerate(FEATURES[:4]):
        for r, w in enumerate(vocab_add):
            words.append(dict(layer=layer, feature_id=fid, context="risky",
                              condition="risky_with_safe_patch", scale=1.0, word=w,
                              count_patched=30 - r - i, count_baseline=5 + r, log_odds=1.5 - 0.2 * r,
                              z=4.0 - r, p=1e-4, q=1e-3, direction="adds"))
        for r, w in enumerate(vocab_rm):
            words.append(dict(layer=layer, feature_id=fid, context="risky",
                              condition="risky_with_safe_patch", scale=1.0, word=w,
                              count_patched=3 + r, count_baseline=25 - r, log_odds=-1.2 + 0.2 * r,
                              z=-3.5 + r, p=1e-3, q=0.01 * (r + 1), direction="removes"))
    pd.DataFrame(words).to_parquet(run / "words.parquet")

    trials = []
    for cond in ["safe_baseline", "risky_with_safe_patch", "risky_with_risky_patch"]:
        for t in range(4):
            trials.append(dict(feature="L8-2", condition=cond, trial=t, decision="stop",
                               response=f"I will stop now (trial {t}, {cond})."))
    trials[1]["response"] = f"Bet 10 {INJECTED_SCRIPT} then {INJECTED_IMG} & more"
    trials[5]["response"] = f"{INJECTED_IMG} I choose 2"
    pd.DataFrame(trials).to_parquet(run / "trials.parquet")
    return run
