"""Interventions and recording: the semantics DESIGN.md insists on."""

from __future__ import annotations

import pytest
import torch

from featurepath.engine.generate import SamplingConfig, generate, replay
from featurepath.engine.hooks import Intervention, PatchRecorder, RecordSpec
from featurepath.models import decoder_blocks

PROMPTS = ["Balance $20. Choice: ", "You won! Balance $140 now. Choice: ",
           "Stop or bet? ", "Round 3: Bet $10, Loss. Choice: "]


def _logits(model, tok, prompts, saes=None, ivs=None, record=None):
    res = replay(model, tok, prompts, saes=saes, interventions=ivs, record=record)
    return res


def _plain_hidden(model, tok, prompt):
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model(**enc, output_hidden_states=True)
    return out


def _active_feature(model, tok, sae, prompt, layer):
    out = _plain_hidden(model, tok, prompt)
    f = sae.encode(out.hidden_states[layer + 1][0, -1])
    fid = int(torch.argmax(f))
    assert f[fid] > 0
    return fid, float(f[fid])


def test_hook_site_is_block_output_equal_to_hidden_states_plus_one(tiny, tiny_saes):
    """LlamaScope 'R' SAEs read block L's output = output_hidden_states[L + 1]."""
    model, tok = tiny
    layer = 1
    captured = {}
    h = decoder_blocks(model)[layer].register_forward_hook(
        lambda m, a, o: captured.__setitem__("x", o[0] if isinstance(o, tuple) else o))
    try:
        out = _plain_hidden(model, tok, PROMPTS[0])
    finally:
        h.remove()
    assert torch.allclose(captured["x"], out.hidden_states[layer + 1])
    assert not torch.allclose(captured["x"], out.hidden_states[layer])


def test_delta_clamp_to_own_value_leaves_logits_unchanged(tiny, tiny_saes):
    model, tok = tiny
    layer = 1
    fid, val = _active_feature(model, tok, tiny_saes[layer], PROMPTS[0], layer)
    enc = tok(PROMPTS[0], return_tensors="pt", add_special_tokens=False)
    base = model(**enc).logits
    for iv in (Intervention(layer, fid, value=val, positions="prompt"),
               Intervention(layer, fid, scale=1.0, positions="all")):
        with PatchRecorder(model, tiny_saes, [iv]) as rec:
            from featurepath.engine.hooks import CallState

            T = enc["input_ids"].shape[1]
            rec.state = CallState(torch.arange(1), torch.tensor([T - 1]),
                                  torch.zeros(1, T, dtype=torch.bool),
                                  torch.ones(1, T, dtype=torch.bool), True)
            same = model(**enc).logits
        assert torch.allclose(base, same, atol=1e-4)
    with PatchRecorder(model, tiny_saes, [Intervention(layer, fid, value=val + 25.0)]) as rec:
        rec.state = CallState(torch.arange(1), torch.tensor([T - 1]),
                              torch.zeros(1, T, dtype=torch.bool),
                              torch.ones(1, T, dtype=torch.bool), True)
        moved = model(**enc).logits
    assert not torch.allclose(base[0, -1], moved[0, -1], atol=1e-3)
    assert torch.allclose(base[0, :-1], moved[0, :-1], atol=1e-5)  # only the decision token


@pytest.mark.parametrize("method", ["delta", "reconstruct"])
def test_batch_rows_carry_their_own_interventions(tiny, tiny_saes, method):
    """Greedy tokens of a mixed batch equal each row run alone (the original patched row 0)."""
    model, tok = tiny
    ivs = [None, Intervention(1, 3, value=40.0, method=method),
           Intervention(2, 5, scale=0.0, method=method), Intervention(1, 7, value=30.0,
                                                                        method=method)]
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=8)
    batch = generate(model, tok, PROMPTS, [0, 1, 2, 3], cfg, tiny_saes, ivs)
    for i, p in enumerate(PROMPTS):
        alone = generate(model, tok, [p], [i], cfg, tiny_saes, [ivs[i]])
        assert alone.tokens[0] == batch.tokens[i], f"row {i}"
    plain = generate(model, tok, PROMPTS, [0, 1, 2, 3], cfg)
    assert plain.tokens[0] == batch.tokens[0]
    assert any(plain.tokens[i] != batch.tokens[i] for i in (1, 3))


def test_recorded_activations_equal_independent_encode(tiny, tiny_saes):
    model, tok = tiny
    # hidden_states[n_layers] is after the final norm in transformers, so the last block is
    # left out of this comparison (the hooks read the raw block output there too).
    spec = RecordSpec([(0, 1), (1, 2), (1, 9), (2, 4), (2, 0)])
    patch_layer, fid = 1, 9
    ivs = [None, Intervention(patch_layer, fid, value=50.0, positions="prompt")]
    res = replay(model, tok, PROMPTS[:2], saes=tiny_saes, interventions=ivs, record=spec)
    for row, prompt in enumerate(PROMPTS[:2]):
        hs = _plain_hidden(model, tok, prompt).hidden_states
        for col, (layer, f) in enumerate(spec.features):
            want = float(tiny_saes[layer].encode(hs[layer + 1][0, -1])[f])
            got = float(res.decision[row, col])
            if row == 0 or layer <= patch_layer:
                # unpatched row, and at the patched layer the pre-patch value
                assert got == pytest.approx(want, abs=1e-4), (row, layer, f)
    # downstream of the patch, the patched row's layer-2 features read the patched stream
    hs = _plain_hidden(model, tok, PROMPTS[1]).hidden_states
    clean = tiny_saes[2].encode(hs[3][0, -1])[[4, 0]]
    assert not torch.allclose(res.decision[1, 3:], clean, atol=1e-3)


def test_seeds_make_trials_reproducible_and_independent_of_batch(tiny):
    model, tok = tiny
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=6)
    a = generate(model, tok, PROMPTS, [11, 12, 13, 14], cfg)
    b = generate(model, tok, PROMPTS[2:], [13, 14], cfg)
    assert a.tokens[2:] == b.tokens
    c = generate(model, tok, PROMPTS, [11, 12, 13, 99], cfg)
    assert c.tokens[:3] == a.tokens[:3]


def test_generated_token_recording_counts_fed_tokens(tiny, tiny_saes):
    model, tok = tiny
    spec = RecordSpec([(2, 1), (2, 3)])
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=5)
    res = generate(model, tok, PROMPTS[:2], [0, 1], cfg, tiny_saes, None, spec)
    assert torch.isfinite(res.decision).all()
    # a replay of the same response gives the same generated-token statistics
    rp = replay(model, tok, PROMPTS[:2], [tok.decode(t) for t in res.tokens], tiny_saes,
                None, spec)
    assert torch.allclose(res.decision, rp.decision, atol=1e-4)


def test_shared_prefix_prefill_matches_full_prefill(tiny, tiny_saes):
    """Rows with the same prompt share one prefill; results equal a per-row prefill."""
    model, tok = tiny
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[0]]
    ivs = [None, Intervention(1, 3, value=40.0), Intervention(2, 5, scale=0.0,
                                                              positions="prompt"), None]
    spec = RecordSpec([(1, 3), (2, 5), (3, 1)])
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=6)
    a = generate(model, tok, prompts, [0, 1, 2, 3], cfg, tiny_saes, ivs, spec)
    b = generate(model, tok, prompts, [0, 1, 2, 3], cfg, tiny_saes, ivs, spec,
                 shared_prefix=False)
    assert a.tokens == b.tokens
    assert torch.allclose(a.decision, b.decision, atol=1e-4)
    assert torch.allclose(a.gen_mean, b.gen_mean, atol=1e-4, equal_nan=True)
    assert torch.allclose(a.readout, b.readout, atol=1e-5, equal_nan=True)


def test_sampler_matches_the_distribution_and_respects_top_p():
    from scipy import stats

    from featurepath.engine.generate import _sample

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]]))
    n = 4000
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    draws = _sample(logits.expand(n, -1), gens, SamplingConfig(temperature=1.0))
    counts = torch.bincount(draws, minlength=5).numpy()
    assert counts[4] == 0
    assert stats.chisquare(counts[:4], n * torch.tensor([0.5, 0.3, 0.15, 0.05]).numpy()).pvalue \
        > 1e-3
    top = _sample(logits.expand(n, -1), gens, SamplingConfig(temperature=1.0, top_p=0.7))
    assert set(top.tolist()) <= {0, 1}


def test_hooks_work_in_bfloat16(tiny_saes):
    from featurepath.testing import tiny_llama

    model, tok = tiny_llama()
    model = model.to(torch.bfloat16)
    layer = 1
    spec = RecordSpec([(1, 3), (2, 5)])
    base = replay(model, tok, PROMPTS[:2], saes=tiny_saes, record=spec)
    same = replay(model, tok, PROMPTS[:2], saes=tiny_saes, record=spec,
                  interventions=[Intervention(layer, 3, scale=1.0)] * 2)
    moved = replay(model, tok, PROMPTS[:2], saes=tiny_saes, record=spec,
                   interventions=[Intervention(layer, 3, value=40.0)] * 2)
    assert torch.isfinite(base.decision).all()
    assert torch.allclose(base.decision, same.decision, atol=2e-2)
    assert not torch.allclose(base.decision[:, 1], moved.decision[:, 1], atol=1e-2)
