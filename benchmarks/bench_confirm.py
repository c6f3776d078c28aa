"""Null draws per second of ``featurepath confirm`` on the embedded model, in one run.

A null draw of P(stop) is one decision-token forward per confirm prompt from the prompt's cached
prefix (``engine/decision.py``). This times the prefill of the prefixes (once per context per
confirmation) and then ``--draws`` null arms of one feature, against a full replay of the same
arms (the prompt forwarded whole for every arm), and prints draws/s of each and their ratio.

    python benchmarks/bench_confirm.py [--prompts 24] [--draws 48] [--feature L27-85]
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--draws", type=int, default=48)
    ap.add_argument("--feature", default="L27-85")
    ap.add_argument("--max-rows", type=int, default=256)
    ap.add_argument("--replay-draws", type=int, default=8,
                    help="draws timed with a full replay per arm (the slow reference)")
    a = ap.parse_args(argv)

    from featurepath.embedded import demo_config
    from featurepath.engine.decision import DecisionPrefix
    from featurepath.engine.generate import replay
    from featurepath.engine.hooks import Intervention
    from featurepath.pipeline.controls import null_direction
    from featurepath.pipeline.prompt_sets import prompt_sets
    from featurepath.pipeline.runtime import load_runtime
    from featurepath.rundir import parse_feature_key
    from featurepath.tasks.slot_machine.readout import p_stop_readout

    cfg = demo_config("quick", 0)
    cfg.patch.n_prompts = a.prompts
    model, tok, saes = load_runtime(cfg, progress=False)
    layer, fid = parse_feature_key(a.feature)
    sets, _ = prompt_sets(cfg, "/nonexistent", tok, "confirm")
    prompts = [r.text for r in sets["risky"]]
    readout = p_stop_readout(tok)
    arms = [Intervention(layer, fid, scale=3.0, positions="prompt",
                         direction=null_direction(1, layer, k, saes[layer].d_model))
            for k in range(a.draws)]
    t0 = time.time()
    prefix = DecisionPrefix(model, tok, prompts, prompt_batch=len(prompts))
    t_prefill = time.time() - t0
    t0 = time.time()
    prefix.readouts(arms, saes, readout, max_rows=a.max_rows)
    t_draws = time.time() - t0
    t0 = time.time()
    for iv in arms[:a.replay_draws]:
        replay(model, tok, prompts, saes=saes, interventions=[iv] * len(prompts),
               readout=readout)
    t_replay = time.time() - t0
    fast, slow = a.draws / t_draws, a.replay_draws / t_replay
    print(f"{len(prompts)} prompts; prefill of the prefixes {t_prefill:.1f}s (once per "
          f"confirmation)")
    print(f"cached prefix: {a.draws} null draws in {t_draws:.1f}s = {fast:.2f} draws/s "
          f"({fast * len(prompts):.0f} decision-token rows/s)")
    print(f"full replay:   {a.replay_draws} null draws in {t_replay:.1f}s = {slow:.2f} draws/s; "
          f"ratio {fast / slow:.1f}x")


if __name__ == "__main__":
    main()
