"""Every decoder-block layout in ``models.KNOWN_BLOCK_PATHS``, on a tiny random model built from
its transformers config (no network): play runs, then patch clamps one feature at each of two
layers, and the decision-token activations the patch stage recorded are checked against a hand
computation — the model run alone, the clamp written as a forward hook, the SAE applied to the
block outputs. Plus the fallback and ``register_block_locator``. ``docs/models.md`` lists these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from featurepath.config import RunConfig
from featurepath.errors import ModelLoadError
from featurepath.models import KNOWN_BLOCK_PATHS, decoder_blocks, register_block_locator
from featurepath.pipeline.runtime import Runtime
from featurepath.testing import tiny_saes, tiny_tokenizer

N_LAYERS, D = 3, 32


def _build(arch: str):
    """``(model, tokenizer, block path)``: a tiny random model of ``arch`` with the
    character-level tokenizer of :mod:`featurepath.testing`."""
    import transformers as tf

    tok = tiny_tokenizer()
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id)
    L, heads = N_LAYERS, 4
    made = {
        "llama": lambda: (tf.LlamaForCausalLM(tf.LlamaConfig(
            hidden_size=D, intermediate_size=64, num_hidden_layers=L, num_attention_heads=heads,
            num_key_value_heads=2, **ids)), "model.layers"),
        "phi": lambda: (tf.PhiForCausalLM(tf.PhiConfig(
            hidden_size=D, intermediate_size=64, num_hidden_layers=L, num_attention_heads=heads,
            **ids)), "model.layers"),
        "opt": lambda: (tf.OPTForCausalLM(tf.OPTConfig(
            hidden_size=D, ffn_dim=64, num_hidden_layers=L, num_attention_heads=heads,
            word_embed_proj_dim=D, **ids)), "model.decoder.layers"),
        "gpt2": lambda: (tf.GPT2LMHeadModel(tf.GPT2Config(
            n_embd=D, n_layer=L, n_head=heads, **ids)), "transformer.h"),
        "gptj": lambda: (tf.GPTJForCausalLM(tf.GPTJConfig(
            n_embd=D, n_layer=L, n_head=heads, rotary_dim=4, **ids)), "transformer.h"),
        "falcon": lambda: (tf.FalconForCausalLM(tf.FalconConfig(
            hidden_size=D, num_hidden_layers=L, num_attention_heads=heads, **ids)),
            "transformer.h"),
        "bloom": lambda: (tf.BloomForCausalLM(tf.BloomConfig(
            hidden_size=D, n_layer=L, n_head=heads, **ids)), "transformer.h"),
        "mpt": lambda: (tf.MptForCausalLM(tf.MptConfig(
            d_model=D, n_layers=L, n_heads=heads, max_seq_len=1024, **ids)),
            "transformer.blocks"),
        "gpt_neox": lambda: (tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
            hidden_size=D, intermediate_size=64, num_hidden_layers=L, num_attention_heads=heads,
            **ids)), "gpt_neox.layers"),
    }
    torch.manual_seed(0)
    model, path = made[arch]()
    model.eval()
    model.requires_grad_(False)
    return model, tok, path


ARCHS = ["llama", "phi", "opt", "gpt2", "gptj", "falcon", "bloom", "mpt", "gpt_neox"]


def test_every_known_layout_has_a_tested_architecture() -> None:
    tested = {_build(a)[2] for a in ARCHS}
    assert tested == {path for path, _ in KNOWN_BLOCK_PATHS}


def _hand_decision(model, sae_by_layer, prompt: str, tok, clamp) -> dict[int, torch.Tensor]:
    """SAE activations at the last prompt token of every layer, computed by hand: one unbatched
    forward; ``clamp = (layer, feature, value)`` adds (value - f(x)) * W_dec[feature] to that
    block's output at the last position (error-preserving patch), read *before* the patch."""
    blocks = decoder_blocks(model)
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for layer, block in enumerate(blocks):
        def hook(module, args, output, layer=layer):
            h = output[0] if isinstance(output, tuple) else output
            seen[layer] = h[0, -1].clone()
            if clamp is not None and clamp[0] == layer:
                sae, fid, v = sae_by_layer[layer], clamp[1], clamp[2]
                f = sae.encode(h[0, -1])[fid]
                h = h.clone()
                h[0, -1] = h[0, -1] + (v - f) * sae.W_dec[fid]
                return (h, *output[1:]) if isinstance(output, tuple) else h
            return None

        handles.append(block.register_forward_hook(hook))
    try:
        ids = tok(prompt, return_tensors="pt")
        out = model(**ids, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    if clamp is None:  # the docs' mapping: block L is hidden_states[L + 1], but for the last
        for layer in range(len(blocks) - 1):
            assert torch.allclose(out.hidden_states[layer + 1][0, -1], seen[layer], atol=1e-6)
        assert not torch.allclose(out.hidden_states[-1][0, -1], seen[len(blocks) - 1])
    return {layer: sae_by_layer[layer].encode(h) for layer, h in seen.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_play_then_patch_on_two_layers_matches_a_hand_computation(arch, tmp_path) -> None:
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.play import run_play
    from featurepath.pipeline.prompt_sets import builtin_prompt_sets
    from featurepath.pipeline.store import RunStore

    model, tok, path = _build(arch)
    blocks = decoder_blocks(model)
    node = model
    for name in path.split("."):
        node = getattr(node, name)
    assert blocks is node and len(blocks) == N_LAYERS
    saes = tiny_saes(model, d_sae=32)

    cfg = RunConfig.model_validate({
        "seed": 3, "play": {"conditions": ["BASE"], "bet_types": ["variable"],
                            "games_per_condition": 2, "max_rounds": 2, "batch_size": 2,
                            "sampling": {"temperature": 1.0, "max_new_tokens": 3}}})
    decisions = run_play(tmp_path, cfg, runtime=Runtime(model, tok), progress=False)
    assert len(decisions) >= 2

    feats = {0: 3, 1: 5}  # patched: L0-3 and L1-5; recorded: those and L2-7 (the last block)
    cfg.patch.features = [f"L{layer}-{f}" for layer, f in feats.items()]
    cfg.patch.record = [*cfg.patch.features, "L2-7"]
    cfg.patch.trials = 2
    cfg.patch.batch_size = 16
    cfg.patch.store_dtype = "float32"
    cfg.patch.sampling.max_new_tokens = 2
    cfg.patch.sampling.temperature = 1.0
    run_local(prepare(tmp_path, cfg, model, tok, saes), runtime=(model, tok, saes),
              progress=False)
    st = RunStore(tmp_path)
    trials = st.trials()
    acts, rec_layer, rec_feature = st.activations("decision")
    rec = list(zip(rec_layer.tolist(), rec_feature.tolist(), strict=True))
    texts = {ctx: recs[0].text for ctx, recs in builtin_prompt_sets(tok, "completion").items()}
    checked = set()
    for row in trials.itertuples():
        if row.arm != "feature" and row.feature:
            continue
        clamp = (int(row.layer), int(row.feature_id), float(row.value)) \
            if row.feature and row.patch != "none" and not pd.isna(row.value) else None
        if row.feature and clamp is None:
            continue
        want = _hand_decision(model, saes, texts[row.context], tok, clamp)
        got = np.asarray(acts[int(row.row)])
        for j, (layer, fid) in enumerate(rec):
            assert got[j] == pytest.approx(float(want[layer][fid]), rel=1e-4, abs=1e-4), \
                (arch, row.condition, row.feature, layer, fid)
        checked.add(clamp[0] if clamp else None)
    assert checked == {None, 0, 1}  # baselines and a clamp at each of the two layers


class _Toy(torch.nn.Module):
    def __init__(self, lists: int, n: int = 3) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"n_layer": n})()
        self.stacks = torch.nn.ModuleList(
            torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(n)) for _ in range(lists))


def test_fallback_takes_the_one_list_as_long_as_the_config_says() -> None:
    one = _Toy(1)
    assert decoder_blocks(one) is one.stacks[0]
    for toy in (_Toy(0), _Toy(2)):  # none, or two candidates: refuse rather than guess
        with pytest.raises(ModelLoadError, match="register_block_locator") as exc:
            decoder_blocks(toy)
        assert "\n" not in str(exc.value)


def test_register_block_locator(monkeypatch) -> None:
    import featurepath.models as models

    monkeypatch.setattr(models, "_USER_LOCATORS", [])
    two = _Toy(2)
    register_block_locator("stacks.1")
    assert decoder_blocks(two) is two.stacks[1]
    register_block_locator(lambda m: m.stacks[0] if isinstance(m, _Toy) else None)
    assert decoder_blocks(two) is two.stacks[0]  # the most recent first
    with pytest.raises(ValueError):
        register_block_locator("stacks.1; rm")
