"""The in-place KV cache holds exactly what Hugging Face's concatenating cache holds."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.cache_utils import DynamicLayer

from featurepath.engine.kvcache import GrowingLayer, reserve


@settings(max_examples=30, deadline=None)
@given(prefix=st.integers(1, 6), steps=st.lists(st.integers(1, 3), min_size=1, max_size=8),
       room=st.integers(0, 5), drop=st.booleans())
def test_growing_layer_matches_concatenation(prefix, steps, room, drop):
    g = torch.Generator().manual_seed(prefix * 100 + room)
    k0, v0 = (torch.randn(4, 2, prefix, 3, generator=g) for _ in range(2))
    ref = DynamicLayer()
    ref.update(k0, v0)
    grow = GrowingLayer(k0, v0, room)
    for i, q in enumerate(steps):
        if drop and i == 1:
            idx = torch.tensor([0, 2, 3])
            ref.batch_select_indices(idx)
            grow.batch_select_indices(idx)
        b = ref.keys.shape[0]
        k, v = (torch.randn(b, 2, q, 3, generator=g) for _ in range(2))
        rk, rv = ref.update(k, v)
        gk, gv = grow.update(k, v)
        assert torch.equal(rk, gk) and torch.equal(rv, gv)
        assert grow.get_seq_length() == ref.get_seq_length()


def test_reserve_replaces_only_plain_dynamic_layers():
    class Holder:
        layers = [DynamicLayer(), "other"]

    h = Holder()
    h.layers[0].update(torch.zeros(1, 1, 2, 1), torch.zeros(1, 1, 2, 1))
    reserve(h, 4)
    assert isinstance(h.layers[0], GrowingLayer) and h.layers[1] == "other"
    assert h.layers[0]._kbuf.shape[-2] == 6
