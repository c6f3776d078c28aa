"""GPU throughput at the real study's scale, with nothing downloaded.

A LLaMA-3.1-8B architecture built from its published config with random bf16 weights, and
random Llama Scope-shaped SAEs (JumpReLU, 32,768 features at 8x) on all 32 layers. Random
weights cost exactly what trained ones cost per token, so throughput, memory and store size are
those of the real run. For each batch size it runs:

- plain batched ``model.generate`` (no hooks, no SAEs): the ceiling;
- featurepath's patch stage (``prepare`` + ``run_local``): per-row interventions, the recorder
  on 2,787 features at the decision token and over every generated token, and the run store.

and prints generated tokens/s of both, their ratio, the peak device memory of the engine and
the bytes stored per trial.

    python benchmarks/bench_gpu.py                      # the real thing, on CUDA
    python benchmarks/bench_gpu.py --scale tiny --device cpu   # a minute on a laptop

``tests/test_bench_gpu.py`` runs the tiny scale on CPU so this file cannot rot.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch

# LLaMA-3.1-8B's config.json, the fields that set the cost of a token
LLAMA31_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                  max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                  rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192,
                                "rope_type": "llama3"},
                  tie_word_embeddings=False)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            tie_word_embeddings=False)


@dataclass
class BenchConfig:
    """One benchmark's shape. ``full()`` is the study's; ``tiny()`` runs on CPU in seconds."""

    model: dict = field(default_factory=lambda: dict(LLAMA31_8B))
    d_sae: int = 32768
    n_record: int = 2787
    n_features: int = 4
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256)
    new_tokens: int = 100
    units: int = 2
    dtype: str = "bfloat16"
    device: str = "cuda"

    @classmethod
    def full(cls) -> BenchConfig:
        return cls()

    @classmethod
    def tiny(cls) -> BenchConfig:
        return cls(model=dict(TINY), d_sae=256, n_record=40, n_features=2, batch_sizes=(4, 8),
                   new_tokens=6, units=1, dtype="float32", device="cpu")


@dataclass
class Row:
    """One batch size's measurements."""

    batch_size: int
    plain_tok_s: float
    engine_tok_s: float
    engine_trials_s: float
    peak_bytes: int
    bytes_per_trial: float

    @property
    def ratio(self) -> float:
        return self.engine_tok_s / self.plain_tok_s


def build_model(bc: BenchConfig):
    """A random-weight LLaMA of ``bc.model``'s shape, on ``bc.device`` in ``bc.dtype``, with a
    character-level tokenizer (the vocabulary size of the model is what costs, not the
    tokenizer's)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from featurepath.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = LlamaConfig(**bc.model, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    dtype = getattr(torch, bc.dtype)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(0)
        with torch.device(bc.device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.eval().requires_grad_(False)
    return model, tok


def build_saes(bc: BenchConfig) -> dict:
    """Random JumpReLU SAEs shaped like Llama Scope's (d_model x d_sae, threshold per feature,
    no input normalisation left after folding) on every layer, on the device."""
    from featurepath.sae.model import SAE

    d = bc.model["hidden_size"]
    dtype = getattr(torch, bc.dtype)
    g = torch.Generator(device=bc.device).manual_seed(1)
    saes = {}
    for layer in range(bc.model["num_hidden_layers"]):
        kw = dict(device=bc.device, dtype=dtype, generator=g)
        W_dec = torch.randn(bc.d_sae, d, **kw) / d ** 0.5
        W_enc = torch.randn(d, bc.d_sae, **kw) / d ** 0.5
        saes[layer] = SAE(W_enc, torch.zeros(bc.d_sae, device=bc.device, dtype=dtype), W_dec,
                          torch.zeros(d, device=bc.device, dtype=dtype), "jumprelu",
                          torch.full((bc.d_sae,), 0.05, device=bc.device, dtype=dtype),
                          layer=layer)
    return saes


def recorded_features(bc: BenchConfig) -> list[tuple[int, int]]:
    """``n_record`` features spread evenly over the layers (the study's 2,787 candidates)."""
    n_layers = bc.model["num_hidden_layers"]
    g = torch.Generator().manual_seed(2)
    out = []
    for layer in range(n_layers):
        k = bc.n_record // n_layers + (layer < bc.n_record % n_layers)
        ids = torch.randperm(bc.d_sae, generator=g)[:k].sort().values.tolist()
        out += [(layer, f) for f in ids]
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> int:
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # process RSS


def plain(model, tok, prompts: list[str], bc: BenchConfig, batch_size: int) -> float:
    """Generated tokens/s of plain batched sampling, ``bc.units`` batches."""
    tok.padding_side = "left"
    texts = [prompts[i % len(prompts)] for i in range(batch_size)]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(bc.device)
    n_tok = 0
    _sync(bc.device)
    t0 = time.time()
    for u in range(bc.units):
        torch.manual_seed(u)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=0.7,
                                 max_new_tokens=bc.new_tokens, min_new_tokens=bc.new_tokens,
                                 pad_token_id=tok.pad_token_id)
        n_tok += (out.shape[1] - enc["input_ids"].shape[1]) * batch_size
    _sync(bc.device)
    return n_tok / (time.time() - t0)


def engine(model, tok, saes, bc: BenchConfig, batch_size: int
           ) -> tuple[float, float, int, float]:
    """featurepath's patch stage on ``bc.units`` units of ``batch_size`` rows: tokens/s,
    trials/s, peak memory and bytes stored per trial."""
    from featurepath.config import RunConfig, feature_key
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.store import RunStore

    rec = recorded_features(bc)
    n_layers = bc.model["num_hidden_layers"]
    step = max(1, len(rec) // bc.n_features)
    feats = [rec[(i * step + n_layers // 3) % len(rec)] for i in range(bc.n_features)]
    cfg = RunConfig()
    cfg.patch.features = [feature_key(a, b) for a, b in feats]
    cfg.patch.record = [feature_key(a, b) for a, b in rec]
    cfg.patch.trials = batch_size
    cfg.patch.batch_size = batch_size
    cfg.patch.sampling.max_new_tokens = bc.new_tokens
    cfg.patch.sampling.temperature = 0.7
    cfg.patch.sampling.stop_strings = []
    with tempfile.TemporaryDirectory() as d:
        job = prepare(d, cfg, model, tok, saes)
        units = job.plan.units[:bc.units]
        _sync(bc.device)
        _reset_peak(bc.device)
        t0 = time.time()
        summary = run_local(job, units, runtime=(model, tok, saes), progress=False)
        _sync(bc.device)
        el = time.time() - t0
        peak = _peak(bc.device)
        st = RunStore(d)
        df = st.trials()
        return (float(df["n_new_tokens"].sum()) / el, summary.trials / el, peak,
                st.bytes_stored() / len(df))


def builtin_prompts(tok) -> list[str]:
    from featurepath.tasks.slot_machine import builtin_prompt, render

    return [render(builtin_prompt(n), tok) for n in ("safe", "risky")]


def run(bc: BenchConfig, out=sys.stdout) -> list[Row]:
    """Build everything, measure every batch size, print the table; returns the rows."""
    t0 = time.time()
    model, tok = build_model(bc)
    saes = build_saes(bc)
    _sync(bc.device)
    n_params = sum(p.numel() for p in model.parameters())
    sae_bytes = sum(p.numel() * p.element_size() for s in saes.values() for p in s.parameters())
    print(f"model: {n_params / 1e9:.2f}B parameters, {bc.dtype}, on {bc.device}; SAEs: "
          f"{len(saes)} layers x {bc.d_sae} features ({sae_bytes / 1e9:.1f} GB); recording "
          f"{bc.n_record} features; {bc.new_tokens} new tokens; built in "
          f"{time.time() - t0:.0f} s", file=out)
    prompts = builtin_prompts(tok)
    rows = []
    for b in bc.batch_sizes:
        p_tok = plain(model, tok, prompts, bc, b)
        e_tok, e_trials, peak, bpt = engine(model, tok, saes, bc, b)
        rows.append(Row(b, p_tok, e_tok, e_trials, peak, bpt))
        _print_row(rows[-1], out, header=len(rows) == 1)
    return rows


def _print_row(r: Row, out, header: bool) -> None:
    if header:
        print(f"{'batch':>6s} {'plain tok/s':>12s} {'engine tok/s':>13s} {'ratio':>6s} "
              f"{'trials/s':>9s} {'peak mem':>9s} {'bytes/trial':>12s}", file=out)
    print(f"{r.batch_size:6d} {r.plain_tok_s:12.1f} {r.engine_tok_s:13.1f} {r.ratio:6.2f} "
          f"{r.engine_trials_s:9.2f} {r.peak_bytes / 2**30:8.1f}G {r.bytes_per_trial:12.0f}",
          file=out, flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=["full", "tiny"], default="full")
    ap.add_argument("--device", default=None, help="default: cuda for full, cpu for tiny")
    ap.add_argument("--batch-sizes", default=None, help="comma-separated, e.g. 32,64,128,256")
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--units", type=int, default=None, help="batches timed per batch size")
    args = ap.parse_args(argv)
    bc = BenchConfig.full() if args.scale == "full" else BenchConfig.tiny()
    if args.device:
        bc.device = args.device
    if args.batch_sizes:
        bc.batch_sizes = tuple(int(x) for x in args.batch_sizes.split(","))
    if args.new_tokens:
        bc.new_tokens = args.new_tokens
    if args.units:
        bc.units = args.units
    if bc.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; run with --scale tiny --device cpu")
    run(bc)


if __name__ == "__main__":
    main()
