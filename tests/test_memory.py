"""Worker memory and the automatic batch size (docs/gpu.md's figures)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from featurepath.config import RunConfig
from featurepath.pipeline.memory import (
    MARGIN,
    auto_batch_size,
    choose_batch_size,
    kv_bytes_per_token,
    memory_plan,
)

LLAMA8B = SimpleNamespace(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                          hidden_size=4096, vocab_size=128256, head_dim=128)


def test_llama8b_kv_cache_is_128_kib_per_token():
    # 2 (K, V) x 32 layers x 8 KV heads x 128 dims x 2 bytes (bf16)
    assert kv_bytes_per_token(LLAMA8B, 2) == 2 * 32 * 8 * 128 * 2 == 131_072


def test_plan_and_auto_batch_size_by_hand():
    plan = memory_plan(LLAMA8B, 2, 8_030_261_248, 2787, 32, seq_tokens=400,
                       free_bytes=60 * 2**30)
    assert plan.model_bytes == 2 * 8_030_261_248
    assert plan.kv_bytes_per_row == 131_072 * 400
    # rows that fit in 80% of 60 GiB at ~54 MB each: 900-odd; capped at 256
    assert auto_batch_size(plan) == 256
    small = memory_plan(LLAMA8B, 2, 8_030_261_248, 2787, 32, seq_tokens=400,
                        free_bytes=4 * 2**30)
    rows = int((4 * 2**30 * (1 - MARGIN) - small.slice_bytes) // small.per_row)
    b = auto_batch_size(small)
    assert b <= rows < 2 * b and b & (b - 1) == 0  # the largest power of two that fits
    assert auto_batch_size(memory_plan(LLAMA8B, 2, 1, 1, 1, 400, free_bytes=None)) == 64


def test_cpu_keeps_a_configured_batch_size(tiny):
    model, _ = tiny
    cfg = RunConfig()
    cfg.patch.batch_size = 64
    assert choose_batch_size(model, cfg, None) == (64, None)
    assert choose_batch_size(model, RunConfig(), 32) == (32, None)


def test_cpu_auto_takes_256_rows_where_memory_allows(tiny, monkeypatch):
    from featurepath.pipeline import memory

    model, _ = tiny
    cfg = RunConfig()
    assert cfg.patch.batch_size == "auto"
    monkeypatch.setattr(memory, "cpu_available_bytes", lambda: 8 * 2**30)
    b, why = choose_batch_size(model, cfg, None)
    assert b == 256 and "auto" in why and "system memory" in why
    # little memory: the largest power of two that fits, never zero
    plan = memory.plan_for(model, cfg)
    monkeypatch.setattr(memory, "cpu_available_bytes",
                        lambda: int((plan.slice_bytes + 20 * plan.per_row) / (1 - memory.MARGIN)))
    assert choose_batch_size(model, cfg, None)[0] == 16


def test_auto_resolves_in_prepare_and_a_resume_keeps_the_planned_size(tiny, tiny_saes,
                                                                      tmp_path):
    from featurepath.pipeline.patch import prepare

    model, tok = tiny
    cfg = RunConfig()
    cfg.patch.features = ["L1-3"]
    cfg.patch.trials = 2
    job = prepare(tmp_path, cfg, model, tok, tiny_saes)
    assert isinstance(job.plan.batch_size, int) and job.plan.batch_size >= 1
    again = prepare(tmp_path, cfg, model, tok, tiny_saes, resume=True)
    assert again.plan.batch_size == job.plan.batch_size


def test_auto_is_chosen_from_free_memory(tiny, monkeypatch):
    from featurepath.pipeline import memory

    model, _ = tiny
    monkeypatch.setattr(memory, "device_free_bytes", lambda device: 2 * 2**20)
    cfg = RunConfig()
    b, why = choose_batch_size(model, cfg, None)
    assert why and "free system memory" in why
    assert b == auto_batch_size(memory.plan_for(model, cfg))
    cfg.patch.batch_size = 100_000  # chosen by the user, far too large: kept, warned
    b, why = choose_batch_size(model, cfg, 100_000)
    assert b == 100_000 and why.startswith("warning")


@pytest.mark.parametrize("free", [0, 1])
def test_no_room_still_gives_one_row(free):
    plan = memory_plan(LLAMA8B, 2, 1, 1, 1, 400, free_bytes=free)
    assert auto_batch_size(plan) == 1
