"""A small synthetic run directory for the report tests.

It holds every file the report reads, with values chosen so that each section has something to
show, plus hostile model text (a ``<script>`` that sets ``window.__pwned`` and an ``<img
onerror>``) so tests can prove that model-written text is shown, never executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

INJECTED_SCRIPT = "<script>window.__pwned = 1</script>"
INJECTED_IMG = '<img src=x onerror="window.__pwned = 2">'
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
LAYERS = (3, 8, 13)
FEATURES = [(3, 1), (3, 7), (8, 2), (8, 4), (13, 5), (13, 9)]
DIRECTION = "L13~direction"
CONDITIONS = (("safe_with_risky_patch", "safe", "risky"),
              ("risky_with_safe_patch", "risky", "safe"), ("risky_dose2", "risky", "scale"))
METRICS = {"stop_rate": 0.05, "p_stop": 0.03, "invalid_rate": 0.01}  # null-band sd per metric
K_NULL = 99
MOVERS = ((3, 1), (8, 2), (13, 5))
BAND_COLUMNS = ("vs_baseline", "null_n", "null_mean", "null_sd", "null_z", "null_p", "null_q",
                "beats_null", "significant", "arm", "null_index", "invalid_bet_patched",
                "invalid_bet_baseline")
DOSES = (0.0, 2.0, 3.0)
K_DOSE_NULL = 99
DOSE_SLOPES = {(3, 1): 0.004, (8, 2): 0.12}  # P(stop) per unit of dose: inside / outside band
DOSE_DIRECTION_SLOPE = 0.2
EDGE_BAND_COLUMNS = ("arm", "null_index", "vs_baseline", "null_n", "null_mean", "null_sd",
                     "null_z", "null_p", "null_q", "beats_null", "carry_shift", "carry_share",
                     "mechanism")


def _name(layer: int, fid: int) -> str:
    return f"L{layer}-{fid}"


def _test_row(feature: str, layer: int, fid: int, cond: tuple[str, str, str], metric: str,
              effect: float, q: float, arm: str, null_index: int = -1) -> dict:
    name, context, patch = cond
    return dict(feature=feature, layer=layer, feature_id=fid, context=context, condition=name,
                patch=patch, method="delta", value=float("nan"),
                scale=2.0 if patch == "scale" else float("nan"), metric=metric,
                n_patched=30, n_baseline=30, n_invalid_patched=1, n_invalid_baseline=0,
                invalid_bet_patched=250.0, invalid_bet_baseline=float("nan"),
                baseline_value=0.5, patched_value=0.5 + effect, effect=effect,
                ci_low=effect - 0.03, ci_high=effect + 0.03, statistic=2.0, p=q / 2, q=q,
                degenerate=False, test="fisher" if metric != "p_stop" else "wilcoxon", arm=arm,
                null_index=null_index)


def _causal_tests(feature_moves: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """causal_tests and causal_null as analysis.causal writes them: the band columns come from
    the stage's own ``null_band`` over K_NULL null arms per test."""
    from featurepath.analysis.null_band import null_band

    rng = np.random.default_rng(3)
    rows = []
    for i, (layer, fid) in enumerate(FEATURES):
        for j, cond in enumerate(CONDITIONS):
            for metric, sd in METRICS.items():
                moves = feature_moves and (layer, fid) in MOVERS and metric != "invalid_rate"
                # without moving: a modest effect, often past the baseline's threshold, but
                # well inside the band (about 1 sd of the null arms)
                eff = (-1) ** (i + j) * sd * (6.0 if moves else 0.6 + 0.1 * i)
                q = 1e-4 if moves else 0.004 * (i + 1) + 0.01 * j
                rows.append(_test_row(_name(layer, fid), layer, fid, cond, metric, eff, q,
                                      "feature"))
                for k in range(K_NULL):
                    rows.append(_test_row(_name(layer, fid), layer, fid, cond, metric,
                                          float(rng.normal(0.0, sd)), float("nan"), "null", k))
    for metric, eff in (("stop_rate", 0.3), ("p_stop", 0.25), ("invalid_rate", 0.0)):
        rows.append(_test_row(DIRECTION, 13, -1, CONDITIONS[2], metric, eff,
                              1e-4 if eff else 0.9, "direction"))
    tests = pd.DataFrame(rows)
    floor = tests["metric"].map({"stop_rate": 0.05, "p_stop": 0.01, "invalid_rate": 0.05})
    tests["vs_baseline"] = (tests["q"] <= 0.05) & (tests["effect"].abs() >= floor)
    real, nulls = null_band(tests, alpha=0.05)
    real["significant"] = real["vs_baseline"] & ((real["null_n"] == 0) | real["beats_null"])
    return real, nulls.drop(columns=["vs_baseline"])


def dose_trials(n_prompts: int = 6, seed: int = 5) -> pd.DataFrame:
    """Trials of a dose ladder in the risky context, as the patch stage writes them: the
    baseline, two features and the behavioural direction at DOSES with K_DOSE_NULL null arms
    each. P(stop) is linear in the dose (slopes DOSE_SLOPES, null slopes ~ N(0, 0.01))
    plus a per-prompt offset; the decision is a draw from it."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(0.0, 0.03, n_prompts)
    null_slopes = rng.normal(0.0, 0.01, K_DOSE_NULL)
    rows = []

    def add(arm: str, feature: str, layer: int, fid: int, k: int, dose: float, slope: float):
        for t in range(n_prompts):
            p = float(np.clip(0.4 + slope * (dose - 1) + offset[t] + rng.normal(0, 0.01),
                              0.01, 0.99))
            base = arm == "baseline"
            rows.append(dict(feature=feature, layer=layer, feature_id=fid, context="risky",
                             condition="risky_baseline" if base else f"risky_dose{dose:g}",
                             patch="none" if base else "scale", method="delta", trial=t,
                             prompt_id=f"p{t}", action="stop" if rng.random() < p else "bet",
                             valid=True, scale=float("nan") if base else dose, p_stop=p,
                             arm=arm, null_index=k))

    add("baseline", "", -1, -1, -1, 1.0, 0.0)
    for (layer, fid), slope in DOSE_SLOPES.items():
        for dose in DOSES:
            add("feature", _name(layer, fid), layer, fid, -1, dose, slope)
            for k, s in enumerate(null_slopes):
                add("null", _name(layer, fid), layer, fid, k, dose, float(s))
    for dose in DOSES:
        add("direction", DIRECTION, 13, -1, -1, dose, DOSE_DIRECTION_SLOPE)
        for k, s in enumerate(null_slopes):  # the direction's null arms carry no feature
            add("null", "", 13, -1, k, dose, float(s))
    return pd.DataFrame(rows)


def make_run_dir(root: Path, *, model: str = MODEL, feature_moves: bool = False,
                 bands: bool = True, doses: bool = True) -> Path:
    """Write a complete synthetic run into ``root/run`` and return that directory.

    ``feature_moves``: three features (L3-1, L8-2, L13-5) beat their null bands; otherwise no
    feature does while the behavioural direction moves behaviour. ``bands=False`` writes the
    tables as runs from before the control arms did (no band columns, no causal_null).
    ``doses``: the dose_slopes and dose_curves of :func:`dose_trials` (a run without a ladder
    has neither)."""
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
                         mean_safe=0.5 + i, mean_risky=0.2 + 0.5 * i,
                         t=3.0 - i, p=10.0 ** -(6 - i * 0.5), q=10.0 ** -(5 - i * 0.5),
                         d=0.9 - 0.25 * i, degenerate=False, candidate=cand,
                         direction="risky" if i % 2 else "safe"))
    pd.DataFrame(disc).to_parquet(run / "discover.parquet")

    tests, nulls = _causal_tests(feature_moves)
    if not bands:  # a run from before the control arms
        tests = tests.drop(columns=[c for c in tests.columns if c in BAND_COLUMNS])
    tests.to_parquet(run / "causal_tests.parquet")
    if bands:
        nulls.to_parquet(run / "causal_null.parquet")
    if doses:
        from featurepath.analysis.dose import dose_tables

        slopes, curves = dose_tables(dose_trials())
        slopes.to_parquet(run / "dose_slopes.parquet")
        curves.to_parquet(run / "dose_curves.parquet")
    features = [dict(feature=_name(layer, fid), layer=layer, feature_id=fid,
                     **{"class": "risky" if i % 2 else "safe"}, same_effect=(i == 5),
                     n_significant=2 - (i == 5), best_q=0.002 * (i + 1),
                     summary=f"moves stop_rate by {0.05 + 0.04 * i:.2f}")
                for i, (layer, fid) in enumerate(FEATURES)]
    features.append(dict(feature=DIRECTION, layer=13, feature_id=-1, **{"class": "safe"},
                         same_effect=False, n_significant=2, best_q=1e-4,
                         summary=f"{DIRECTION} [safe]: raises P(stop)"))
    pd.DataFrame(features).to_parquet(run / "causal_features.parquet")

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
                          degenerate=False, edge=True, sign=sign, arm="feature", null_index=-1,
                          vs_baseline=True, null_n=K_NULL, null_mean=0.0, null_sd=0.02,
                          null_z=5.0 * d, null_p=0.01, null_q=0.02, beats_null=True,
                          carry_shift=0.08 * d if k % 2 else 0.01 * d,
                          carry_share=0.8 if k % 2 else 0.1,
                          mechanism="direct" if k % 2 else "mediated"))
        gedges.append(dict(source=_name(*src), target=_name(*tgt), weight=abs(d), sign=sign,
                           d=d, q=1e-3 * (k + 1), mean_shift=0.1 * d, condition=cond))
    # significant against the baseline but inside its band: not an edge, not in the graph
    erows.append({**erows[1], "target": "L13-12", "target_layer": 13, "target_feature": 12,
                  "null_p": 0.4, "null_q": 0.6, "beats_null": False, "edge": False})
    edges_df = pd.DataFrame(erows)
    if not bands:
        edges_df = edges_df.drop(columns=list(EDGE_BAND_COLUMNS))
    edges_df.to_parquet(run / "pathways" / "edges.parquet")
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
