"""Features per second of the attribution screen against patching the same features one by one,
on the same prompts, in one run — and how well the two agree.

Why this comparison: the screen exists because patching every feature is out of reach. The
reference is the cheapest real patch there is: for one feature at a time, one teacher-forced
forward of the context's prompts with the feature clamped at the decision token (``replay``,
``positions: prompt``, no sampling), which gives the exact change in P(stop) that the screen
estimates to first order. The screen scores every feature of every SAE layer; the reference
is timed on a sample drawn across the screen's ranking (one feature per stratum, as the patch
stage's random check), and its rate is features/s. Both use the demo's two scale
conditions (ablation in the safe context, ×3 in the risky context).

Usage::

    python benchmarks/bench_screen.py [--prompts 4] [--sample 8] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

from featurepath.embedded import demo_config
from featurepath.engine.generate import replay
from featurepath.engine.hooks import Intervention
from featurepath.pipeline.candidates import random_check
from featurepath.pipeline.prompt_sets import prompt_sets
from featurepath.pipeline.runtime import load_runtime
from featurepath.pipeline.screen import screen_attributions, screen_conditions
from featurepath.tasks.slot_machine.readout import p_stop_readout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4, help="prompts per context")
    ap.add_argument("--sample", type=int, default=8, help="features patched one by one")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = demo_config("quick", args.seed)
    cfg.patch.n_prompts = args.prompts
    model, tok, saes = load_runtime(cfg, progress=False)
    readout = p_stop_readout(tok)
    conds = [c for c in screen_conditions(cfg) if c.patch == "scale"]
    with tempfile.TemporaryDirectory() as tmp:
        sets, _ = prompt_sets(cfg, Path(tmp), tok, "screen")
        texts = {ctx: [r.text for r in recs] for ctx, recs in sets.items()}
        replay(model, tok, texts["safe"][:1], readout=readout)  # warm-up
        t0 = time.perf_counter()
        table = screen_attributions(model, tok, saes, texts, conds, readout, Path(tmp),
                                    batch_size=args.batch_size, progress=False)
        screen_s = time.perf_counter() - t0
    n_features = sum(s.d_sae for s in saes.values())
    # one feature from each of --sample strata of the ranking (as the patch stage's check)
    sample = random_check(table, args.sample, args.seed, exclude=set())
    base = {ctx: replay(model, tok, texts[ctx], readout=readout).readout.double().numpy()
            for ctx in texts}
    att, eff = [], []
    t0 = time.perf_counter()
    for key in sample:
        layer, fid = (int(x) for x in key[1:].split("-"))
        for c in conds:
            ivs = [Intervention(layer, fid, scale=float(c.scale), positions="prompt")] * \
                len(texts[c.context])
            p = replay(model, tok, texts[c.context], saes=saes, interventions=ivs,
                       readout=readout).readout.double().numpy()
            eff.append(float((p - base[c.context]).mean()))
            row = table[(table["feature"] == key) & (table["intervention"] == c.name)]
            att.append(float(row["attribution"].iloc[0]))
    patch_s = time.perf_counter() - t0
    screen_rate = n_features * len(conds) / screen_s
    patch_rate = len(sample) * len(conds) / patch_s
    n_prompts = sum(len(v) for v in texts.values())
    print(f"embedded model, {len(saes)} SAE layers, {n_features:,} features, "
          f"{len(conds)} interventions, {n_prompts} prompts ({args.prompts} per context)")
    print("| method | feature x intervention / s | seconds |")
    print("|---|---|---|")
    print(f"| patch one by one (replay, {len(sample)} sampled features) | {patch_rate:.3g} | "
          f"{patch_s:.1f} |")
    print(f"| screen (every feature) | {screen_rate:,.0f} | {screen_s:.1f} |")
    print(f"ratio: {screen_rate / patch_rate:,.0f}x; patching all {n_features:,} features one "
          f"by one would take {n_features * len(conds) / patch_rate / 3600:.1f} h here")
    rho = stats.spearmanr(att, eff).statistic if len(att) > 2 else float("nan")
    err = np.abs(np.array(att) - np.array(eff))
    print(f"agreement on the sample: Spearman rho {rho:+.2f}; |attribution - patched effect| "
          f"median {np.median(err):.4f}, max {err.max():.4f} (P(stop) units)")


if __name__ == "__main__":
    main()
