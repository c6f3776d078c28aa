"""How much device memory a patch worker needs, and the largest safe batch size.

A worker holds the model, the SAE *slices* (recorded features' encoder columns, patched
features' encoder columns and decoder rows — never a full SAE unless a row uses
``reconstruct``), and per batch row: the KV cache of its prompt and answer, the logits and
sampling buffers over the vocabulary, and the recorder's accumulators. Of these only the KV
cache grows with the sequence; at LLaMA-3.1-8B's shape (32 layers, 8 KV heads of 128, bf16) it
is 128 KiB per token per row, so a 300-token prompt plus 100 new tokens is ~52 MB per row.

``batch_size`` trades throughput against memory: a decoding step reads all weights once for
the whole batch, so tokens/s rises almost linearly with the batch until the GPU is
compute-bound (for an 8B model on one H100-class GPU, somewhere past 128 rows) — take the
largest batch that fits with a margin, capped where the speed-up flattens.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MemoryPlan", "memory_plan", "auto_batch_size"]

# leave this share of the free memory unplanned (allocator fragmentation, prefill peaks)
MARGIN = 0.2
#: ``batch_size: auto`` caps: on CPU tokens/s flattens near 256 rows (benchmarks/bench_patch.py:
#: 13.2x the sequential reference at 64 rows, 15.3x at 256); a GPU keeps gaining past that.
MAX_BATCH = 256
MAX_BATCH_GPU = 1024


@dataclass
class MemoryPlan:
    """Bytes a worker needs: fixed (model + SAE slices) and per batch row."""

    model_bytes: int
    slice_bytes: int
    kv_bytes_per_row: int
    buffers_per_row: int
    free_bytes: int | None

    @property
    def per_row(self) -> int:
        return self.kv_bytes_per_row + self.buffers_per_row

    def needed(self, batch_size: int) -> int:
        return self.model_bytes + self.slice_bytes + batch_size * self.per_row


def kv_bytes_per_token(config, dtype_bytes: int) -> int:
    """Keys and values of every layer for one token of one row."""
    heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None)
                   or config.hidden_size // config.num_attention_heads)
    return 2 * int(config.num_hidden_layers) * heads * head_dim * dtype_bytes


def memory_plan(config, dtype_bytes: int, n_params: int, n_record: int, n_patch_layers: int,
                seq_tokens: int, free_bytes: int | None = None) -> MemoryPlan:
    """The memory of a worker for a model of ``config`` with ``n_params`` parameters, recording
    ``n_record`` features and patching at ``n_patch_layers`` layers, for sequences of up to
    ``seq_tokens`` tokens (prompt + new tokens)."""
    d = int(config.hidden_size)
    vocab = int(config.vocab_size)
    # slices are float32: encoder column, bias, threshold per recorded feature; a patched
    # feature adds its encoder column and decoder row (counted once per patched layer, a bound)
    slices = 4 * n_record * (d + 2) + 4 * n_patch_layers * 64 * 2 * d
    # float32 logits + probabilities + cumulative sums for sampling, the decision-token readout
    buffers = 4 * vocab * 4
    # recorder: decision (f32), sum (f64), max (f32) per recorded feature; hidden states of a
    # step in float32 through the hooks (a few copies of d)
    buffers += n_record * 16 + 8 * 4 * d
    return MemoryPlan(n_params * dtype_bytes, slices,
                      kv_bytes_per_token(config, dtype_bytes) * seq_tokens, buffers, free_bytes)


def auto_batch_size(plan: MemoryPlan, cap: int = MAX_BATCH) -> int:
    """The largest power of two (at most ``cap``) whose rows fit in the free memory left after
    the model and slices, keeping ``MARGIN`` of it spare; at least 1."""
    if plan.free_bytes is None:
        return min(cap, 64)
    room = plan.free_bytes * (1 - MARGIN) - plan.slice_bytes
    rows = int(room // max(1, plan.per_row))
    b = 1
    while b * 2 <= min(rows, cap):
        b *= 2
    return b


def device_free_bytes(device) -> int | None:
    """Free memory of a CUDA device (after what this process already holds), or the memory
    the operating system says is available to a CPU run (``MemAvailable``); None where neither
    can be read (then the batch size is not bounded by memory)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    if dev.type == "cpu":
        return cpu_available_bytes()
    return None


def cpu_available_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux), else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def plan_for(model, cfg, prompt_tokens: int = 512) -> MemoryPlan:
    """The memory plan of ``cfg``'s patch run on ``model``'s device."""
    from featurepath.config import parse_feature_key

    p = next(model.parameters())
    n_params = sum(x.numel() for x in model.parameters())
    layers = {parse_feature_key(f)[0] for f in cfg.patch.features}
    return memory_plan(model.config, p.element_size(), n_params,
                       max(len(cfg.patch.record), len(cfg.patch.features)), max(1, len(layers)),
                       prompt_tokens + cfg.patch.sampling.max_new_tokens,
                       device_free_bytes(p.device))


def choose_batch_size(model, cfg, given: int | None) -> tuple[int, str | None]:
    """The batch size a fresh patch run uses, and a line saying why.

    ``batch_size: auto`` (the default, unless ``--batch-size`` gives one): the largest power of
    two whose rows fit the free memory of the model's device with a margin, at most
    :data:`MAX_BATCH` rows on CPU and :data:`MAX_BATCH_GPU` on a GPU. A chosen size is kept,
    with a warning when it will not fit."""
    plan = plan_for(model, cfg)
    current = given if given is not None else cfg.patch.batch_size
    gpu = next(model.parameters()).device.type == "cuda"
    where = "device" if gpu else "system"
    if current == "auto":
        auto = auto_batch_size(plan, MAX_BATCH_GPU if gpu else MAX_BATCH)
        room = (f" ({plan.free_bytes / 2**30:.1f} GiB free {where} memory, "
                f"~{plan.per_row / 2**20:.0f} MiB per row)" if plan.free_bytes is not None
                else "")
        return auto, f"batch size {auto}, auto{room}; --batch-size to choose"
    if plan.free_bytes is not None and \
            plan.slice_bytes + current * plan.per_row > plan.free_bytes * (1 - MARGIN):
        auto = auto_batch_size(plan, MAX_BATCH_GPU if gpu else MAX_BATCH)
        return current, (f"warning: batch size {current} may not fit in "
                         f"{plan.free_bytes / 2**30:.1f} GiB free {where} memory "
                         f"(~{plan.per_row / 2**20:.0f} MiB per row); {auto} would")
    return current, None


def with_batch_size(model, cfg, given: int | None = None):
    """``cfg`` with ``patch.batch_size`` a number (``auto`` resolved), and the reason line."""
    size, why = choose_batch_size(model, cfg, given)
    if size == cfg.patch.batch_size:
        return cfg, why
    cfg = cfg.model_copy(deep=True)
    cfg.patch.batch_size = size
    return cfg, why
