"""Calibration of ``featurepath confirm`` on the embedded model: features that cannot cause
anything, and one that does, through the demo's confirmation design.

- **Null features**: the ``--per-layer`` most active features (on the demo's confirm prompts of
  the risky context) at each of ``--layers``, in an in-memory copy of their SAE, get decoder
  rows that are fresh random directions of the same norm. Their encoders are untouched, so
  their activations and clamp sizes are the real ones, and under the null they are
  exchangeable with the null directions: the confirmation should confirm about
  ``alpha``-or-fewer of them (BH over all of them), with null p-values roughly uniform.
- **Planted feature** (``--planted``): the demo's planted check (the top layer's most active
  feature with its decoder row along the readout direction), which should be confirmed.

Run on 2 CPU cores in about 3 minutes (24 null features) plus about 1 minute per planted
check:

    python benchmarks/calibrate_confirm.py [--layers 13,27] [--per-layer 12] [--planted]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="13,27")
    ap.add_argument("--per-layer", type=int, default=12)
    ap.add_argument("--seed", type=int, default=2026, help="seed of the random decoder rows")
    ap.add_argument("--planted", action="store_true", help="also run the planted check")
    a = ap.parse_args(argv)

    import numpy as np
    import torch

    from featurepath.embedded import demo_config
    from featurepath.pipeline.confirm import run_confirm
    from featurepath.pipeline.confirm_check import planted_check, planted_feature
    from featurepath.pipeline.patch_checks import decision_activations_by_context
    from featurepath.pipeline.prompt_sets import prompt_sets
    from featurepath.pipeline.runtime import load_runtime
    from featurepath.rundir import feature_key

    cfg = demo_config("quick", 0)
    model, tok, saes = load_runtime(cfg, False)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        sets, _ = prompt_sets(cfg, d, tok, "confirm")
        texts = {"risky": [r.text for r in sets["risky"][:8]]}
        chosen, copies = [], dict(saes)
        g = torch.Generator().manual_seed(a.seed)
        for layer in (int(x) for x in a.layers.split(",")):
            feats = [feature_key(layer, i) for i in range(saes[layer].d_sae)]
            acts = decision_activations_by_context(model, tok, saes, feats, texts, {"risky"}, 8)
            top = np.argsort(-np.nanmin(acts["risky"], axis=0))[:a.per_layer]
            sae = copy.deepcopy(saes[layer])
            with torch.no_grad():
                for f in top:
                    row = sae.W_dec[int(f)].float()
                    z = torch.randn(row.shape[0], generator=g)
                    sae.W_dec[int(f)] = (z / z.norm() * row.norm()).to(sae.W_dec.dtype)
            copies[layer] = sae
            chosen += [feature_key(layer, int(f)) for f in top]
        res = run_confirm(d, cfg, runtime=(model, tok, copies), features=chosen, progress=False)
        v = res.verdicts
        print("\n".join(res.lines()))
        print(f"null features: {int(v['significant'].sum())} of {len(v)} confirmed; "
              f"{int((v['p_null'] <= 0.05).sum())} with p_null <= 0.05 "
              f"(expected {0.05 * len(v):.1f}); null directions per test: median "
              f"{v['null_draws'].median():.0f}, mean {v['null_draws'].mean():.1f}; "
              f"{res.rows} decision-token rows in {time.time() - t0:.0f} s")
        if a.planted:
            f = planted_feature(cfg, d, (model, tok, saes), "risky")
            pc = planted_check(d, cfg, (model, tok, saes), f).verdicts.iloc[0]
            print(f"planted {f}: effect {pc['effect']:+.4f}, p_null {pc['p_null']:.3g} after "
                  f"{pc['null_draws']} null directions, q {pc['q']:.3g}, "
                  f"{'confirmed' if pc['significant'] else 'not confirmed'}")


if __name__ == "__main__":
    main()
