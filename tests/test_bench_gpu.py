"""benchmarks/bench_gpu.py at a scaled-down shape on CPU, so the GPU benchmark cannot rot."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import bench_gpu  # noqa: E402


def test_full_config_is_llama31_8b_and_its_sae_set_is_llama_scope_sized():
    """The architecture built from the config has LLaMA-3.1-8B's 8,030,261,248 parameters
    (counted on the meta device, nothing allocated), and 32 SAEs of 32,768 features are the
    ~17 GB of bf16 weights the study loads."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    bc = bench_gpu.BenchConfig.full()
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**bc.model))
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248
    d, n = bc.model["hidden_size"], bc.model["num_hidden_layers"]
    assert n * 2 * d * bc.d_sae * 2 == pytest.approx(17.2e9, rel=0.01)
    assert bc.n_record == 2787 and bc.new_tokens == 100
    assert min(bc.batch_sizes) == 32 and max(bc.batch_sizes) == 256


def test_recorded_features_spread_over_all_layers():
    bc = bench_gpu.BenchConfig.full()
    rec = bench_gpu.recorded_features(bc)
    assert len(rec) == len(set(rec)) == 2787
    assert {layer for layer, _ in rec} == set(range(32))
    assert all(0 <= f < bc.d_sae for _, f in rec)


def test_tiny_scale_runs_on_cpu_and_prints_the_table():
    bc = bench_gpu.BenchConfig.tiny()
    bc.batch_sizes = (2, 4)
    bc.new_tokens = 3
    out = io.StringIO()
    rows = bench_gpu.run(bc, out)
    text = out.getvalue()
    assert "plain tok/s" in text and "bytes/trial" in text
    assert [r.batch_size for r in rows] == [2, 4]
    for r in rows:
        assert r.plain_tok_s > 0 and r.engine_tok_s > 0 and r.ratio > 0
        assert r.peak_bytes > 0
        # three float16 arrays of the recorded features per trial, at least
        assert r.bytes_per_trial > 0


def test_cuda_scale_refuses_cleanly_without_a_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench_gpu.main(["--scale", "full"])
