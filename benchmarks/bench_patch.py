"""Patch + cache throughput: featurepath's engine against a sequential reference, in one run.

The reference follows the original experiment's style: one trial per ``model.generate`` call,
a hook that encodes the *full* SAE at the last position of every forward call, clamps the
feature in row 0 and writes back the reconstruction, and full SAE encodes at every recorded
layer to cache the recorded features. The engine runs the same kind of trials (same model,
prompts, features, sampling settings and new-token budget) through ``featurepath patch``'s code
path: batched rows with per-row interventions, shared-prefix prefill, SAE slices, and the run
store. Both are reported as trials/s and generated tokens/s; the ratio is the figure of merit.
Bytes stored per trial come from the engine's run directory.

    python benchmarks/bench_patch.py [--ref-trials 12] [--trials 16] [--tokens 48] \
        [--batch-size 64,256]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def reference(model, tok, saes, features, record, prompts, n_trials, tokens, temperature):
    """One trial per generate call; full SAE encode/decode at every step (original style)."""
    from featurepath.models import decoder_blocks

    blocks = decoder_blocks(model)
    rec_by_layer: dict[int, list[int]] = {}
    for layer, fid in record:
        rec_by_layer.setdefault(layer, []).append(fid)
    n_tok = 0
    t0 = time.time()
    for t in range(n_trials):
        layer, fid, value = features[t % len(features)]
        prompt = prompts[t % len(prompts)]
        cache: list[torch.Tensor] = []

        def make_hook(lay, layer=layer, fid=fid, value=value, cache=cache):
            def hook(module, args, output):
                h = output[0] if isinstance(output, tuple) else output
                sae = saes[lay]
                if lay in rec_by_layer:
                    f_all = sae.encode(h[:, -1, :])
                    cache.append(f_all[0, rec_by_layer[lay]].detach().cpu())
                if lay == layer:
                    f = sae.encode(h[:, -1, :])
                    f[0, fid] = value
                    h = h.clone()
                    h[:, -1, :] = sae.decode(f)
                    return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h
                return None

            return hook

        handles = [blocks[lay].register_forward_hook(make_hook(lay))
                   for lay in sorted(set(rec_by_layer) | {layer})]
        try:
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
            torch.manual_seed(t)
            with torch.no_grad():
                out = model.generate(**enc, do_sample=True, temperature=temperature,
                                     max_new_tokens=tokens, pad_token_id=tok.pad_token_id)
            n_tok += out.shape[1] - enc["input_ids"].shape[1]
        finally:
            for h in handles:
                h.remove()
    return n_trials, n_tok, time.time() - t0


def engine(model, tok, saes, feats, record, trials, tokens, temperature, batch_size):
    from featurepath.config import RunConfig
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.store import RunStore

    cfg = RunConfig()
    cfg.patch.features = feats
    cfg.patch.record = record
    cfg.patch.trials = trials
    cfg.patch.batch_size = batch_size
    cfg.patch.sampling.max_new_tokens = tokens
    cfg.patch.sampling.temperature = temperature
    cfg.patch.sampling.stop_strings = []
    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        job = prepare(d, cfg, model, tok, saes)
        summary = run_local(job, runtime=(model, tok, saes), progress=False)
        el = time.time() - t0
        st = RunStore(d)
        df = st.trials()
        return summary.trials, int(df["n_new_tokens"].sum()), el, st.bytes_stored() / len(df)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref-trials", type=int, default=12)
    ap.add_argument("--trials", type=int, default=16, help="engine trials per feature x condition")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--batch-size", default="64,256",
                    help="rows per unit; comma-separated sizes are each measured against the "
                         "same reference run")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--saes", default="embedded:quick")
    args = ap.parse_args()

    from featurepath.config import feature_key
    from featurepath.models import load_model
    from featurepath.sae.registry import load_sae_set
    from featurepath.tasks.slot_machine import builtin_prompt, render
    from featurepath.tasks.slot_machine.corpus import default_corpus

    model, tok = load_model("embedded", device="cpu")
    saes = load_sae_set(args.saes, model, tok, corpus=default_corpus)
    layers = sorted(saes)
    picks = [(layers[1], 11), (layers[len(layers) // 2], 22), (layers[-2], 33),
             (layers[1], 44)]
    record = sorted({(lay, fid) for lay in layers for fid in range(0, 40, 10)} | set(picks))
    prompts = [render(builtin_prompt(n), tok) for n in ("safe", "risky")]
    ref_feats = [(lay, fid, 5.0) for lay, fid in picks]

    print(f"torch threads: {torch.get_num_threads()}, SAE layers {layers}, "
          f"{len(record)} recorded features, {args.tokens} new tokens max")
    r_n, r_tok, r_s = reference(model, tok, saes, ref_feats, record, prompts, args.ref_trials,
                                args.tokens, args.temperature)
    rows = [("reference (1 trial/generate, full SAE)", r_n, r_tok, r_s)]
    engines = []
    for bs in (int(x) for x in str(args.batch_size).split(",")):
        e_n, e_tok, e_s, bpt = engine(model, tok, saes, [feature_key(a, b) for a, b in picks],
                                      [feature_key(a, b) for a, b in record], args.trials,
                                      args.tokens, args.temperature, bs)
        rows.append((f"featurepath engine (batch {bs})", e_n, e_tok, e_s))
        engines.append((bs, e_n, e_tok, e_s))
    print(f"{'':42s} {'trials':>7s} {'tokens':>7s} {'sec':>7s} {'trials/s':>9s} {'tok/s':>8s}")
    for name, n, tk, s in rows:
        print(f"{name:42s} {n:7d} {tk:7d} {s:7.1f} {n / s:9.2f} {tk / s:8.1f}")
    for b, e_n, e_tok, e_s in engines:
        print(f"speed-up at batch {b}: {(e_n / e_s) / (r_n / r_s):.1f}x trials/s, "
              f"{(e_tok / e_s) / (r_tok / r_s):.1f}x tokens/s")
    print(f"bytes stored per trial: {bpt:.0f} ({len(record)} recorded features, float16, "
          "3 arrays + trials table)")


if __name__ == "__main__":
    main()
