"""Activation collection, TopK training, quality figures and the embedded corpus, on the tiny
random LLaMA (fast); one end-to-end test on the real embedded model is marked ``e2e``."""

from __future__ import annotations

import pytest
import torch

from featurepath.models import decoder_blocks
from featurepath.sae import load_sae
from featurepath.sae.collect import collect_activations
from featurepath.sae.quality import ce_losses, loss_increase, sae_quality
from featurepath.sae.train import TrainConfig, geometric_median, split_texts, train_sae, train_saes
from featurepath.testing import tiny_llama

TEXTS = [f"Round {i}: Bet ${5 * (i % 7 + 1)}, {'Win' if i % 3 == 0 else 'Loss'}, "
         f"Balance ${100 + 7 * i}. Choice: {i % 2 + 1}" for i in range(40)]


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(n_layers=4, d_model=64)


def test_collect_matches_block_outputs(tiny) -> None:
    """Rows are the block outputs at every non-pad position but the first, in order, and the
    same tokens for every layer (checked against a plain unpadded forward per text)."""
    model, tok = tiny
    texts = TEXTS[:3] + ["short"]
    acts = collect_activations(model, tok, texts, [1, 3], batch_size=2, progress=False)
    expected: dict[int, list[torch.Tensor]] = {1: [], 3: []}
    seen: dict[int, torch.Tensor] = {}
    hooks = [decoder_blocks(model)[layer].register_forward_hook(
        lambda _m, _i, out, layer=layer: seen.__setitem__(
            layer, (out[0] if isinstance(out, tuple) else out)))
        for layer in (1, 3)]
    try:
        # collect orders texts longest first; rebuild that order
        lengths = [len(tok(t)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
        with torch.no_grad():
            for i in order:
                ids = tok(texts[i], return_tensors="pt")["input_ids"]
                model(input_ids=ids)
                for layer in (1, 3):
                    expected[layer].append(seen[layer][0, 1:])
    finally:
        for h in hooks:
            h.remove()
    for layer in (1, 3):
        want = torch.cat(expected[layer])
        assert acts[layer].shape == want.shape == (sum(lengths) - len(texts), 64)
        torch.testing.assert_close(acts[layer], want, rtol=1e-4, atol=1e-4)
    # layer 3 is the last block: its rows must not carry the final norm (hidden_states[-1])
    with torch.no_grad():
        ids = tok(texts[order[0]], return_tensors="pt")["input_ids"]
        final = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, 1:]
    assert not torch.allclose(acts[3][: final.shape[0]], final, atol=1e-3)


def test_collect_keep_first_and_bad_layer(tiny) -> None:
    from featurepath.errors import ConfigError

    model, tok = tiny
    a = collect_activations(model, tok, TEXTS[:4], [0], skip_first=False, progress=False)
    b = collect_activations(model, tok, TEXTS[:4], [0], progress=False)
    assert a[0].shape[0] == b[0].shape[0] + 4
    with pytest.raises(ConfigError, match="out of range"):
        collect_activations(model, tok, TEXTS[:2], [4], progress=False)


def test_geometric_median_resists_outliers() -> None:
    x = torch.cat([torch.randn(200, 3) * 0.1, torch.full((20, 3), 100.0)])
    assert geometric_median(x).norm() < 1.0 < x.mean(0).norm()


def _structured_acts(n: int = 4000, d: int = 32, seed: int = 0) -> torch.Tensor:
    """Sparse combinations of 64 directions plus an offset: something a TopK SAE can learn."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(64, d, generator=g)
    idx = torch.randint(0, 64, (n, 3), generator=g)
    vals = torch.rand(n, 3, generator=g) * 4
    return torch.nn.functional.embedding_bag(idx, dirs, per_sample_weights=vals, mode="sum") \
        + 5.0


def test_topk_training_beats_zero_baseline_and_is_deterministic() -> None:
    x = _structured_acts()
    cfg = TrainConfig(expansion=4, k=4, batch_size=256, steps=300, lr=3e-3, dead_tokens=2000)
    sae = train_sae(x[:3500], cfg, layer=1, progress=False)
    q = sae_quality(sae, x[3500:])
    assert q["fvu"] < 0.25, q
    assert q["l0"] <= 4 and sae.activation == "topk" and sae.k == 4
    assert q["dead_fraction"] < 0.5
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(sae.d_sae))
    again = train_sae(x[:3500], cfg, layer=1, progress=False)
    torch.testing.assert_close(again.W_enc, sae.W_enc, rtol=0, atol=0)


def test_quality_definitions() -> None:
    from featurepath.sae.model import SAE

    d = 8
    eye = torch.eye(d)
    perfect = SAE(eye, torch.zeros(d), eye, torch.zeros(d), "relu", layer=0)
    x = torch.rand(50, d) + 0.1  # positive, so relu keeps everything
    q = sae_quality(perfect, x)
    assert q["fvu"] == pytest.approx(0.0, abs=1e-6) and q["l0"] == d
    assert q["dead_fraction"] == 0.0
    mean_only = SAE(eye, torch.full((d,), -1e3), eye, x.mean(0), "relu", layer=0)
    q = sae_quality(mean_only, x)
    assert q["fvu"] == pytest.approx(1.0, rel=1e-5) and q["dead_fraction"] == 1.0


def test_loss_increase_zero_for_identity_sae(tiny) -> None:
    from featurepath.sae.model import SAE

    model, tok = tiny
    d = 64
    eye = torch.eye(d)
    ident = SAE(torch.cat([eye, -eye], 1), torch.zeros(2 * d), torch.cat([eye, -eye], 0),
                torch.zeros(d), "relu", layer=2)
    assert abs(loss_increase(model, tok, ident, TEXTS[:4])) < 1e-4
    zero = SAE(eye, torch.full((d,), -1e3), eye, torch.zeros(d), "relu", layer=2)
    ce = ce_losses(model, tok, zero, TEXTS[:4])
    assert ce["ce_patched"] != pytest.approx(ce["ce_clean"], abs=1e-4)
    cached = ce_losses(model, tok, zero, TEXTS[:4], clean=ce)
    assert cached["increase"] == pytest.approx(ce["increase"], rel=1e-6)


def test_train_saes_writes_a_set(tiny, tmp_path) -> None:
    model, tok = tiny
    cfg = TrainConfig(expansion=2, k=8, steps=40, batch_size=128)
    paths = train_saes(model, tok, TEXTS, [1, 2], cfg, tmp_path, loss_texts=3,
                       model_name="tiny", progress=False)
    assert set(paths) == {1, 2}
    sae = load_sae(paths[2])
    assert sae.layer == 2 and sae.d_sae == 128 and sae.activation == "topk"
    meta = sae.meta
    assert meta["model"] == "tiny" and meta["n_tokens"] > 0
    assert meta["train_config"]["k"] == 8
    assert {"fvu", "l0", "dead_fraction", "loss_increase"} <= set(meta["quality"])


def test_layers_of_a_set_start_from_different_seeds(tiny, tmp_path) -> None:
    """Same-index features of two layers are unrelated directions (cosine near 0), not one
    direction that the residual stream would carry from layer to layer. With the set's seed
    for both layers (the old behaviour) they start identical."""
    model, tok = tiny
    cfg = TrainConfig(expansion=2, k=8, steps=2, batch_size=64, lr=1e-5)
    paths = train_saes(model, tok, TEXTS, [1, 2], cfg, tmp_path, loss_texts=0,
                       progress=False)
    a, b = (load_sae(paths[x]).W_dec for x in (1, 2))
    same_index = torch.nn.functional.cosine_similarity(a, b, dim=1).abs().mean()
    assert same_index < 0.3
    acts = collect_activations(model, tok, TEXTS, [1, 2], progress=False)
    one, two = (train_sae(acts[x], cfg, progress=False).W_dec for x in (1, 2))
    assert torch.nn.functional.cosine_similarity(one, two, dim=1).mean() > 0.9


def test_split_texts_deterministic() -> None:
    a = split_texts(TEXTS, 0.1, 3)
    assert a == split_texts(TEXTS, 0.1, 3)
    assert len(a[1]) == 4 and sorted(a[0] + a[1]) == sorted(TEXTS)


def test_corpus_deterministic_and_in_domain(tiny) -> None:
    from featurepath.tasks.slot_machine.corpus import default_corpus

    model, tok = tiny
    a = default_corpus(model, tok, n_prompts=6, gen_tokens=4, seed=1, answered_fraction=0.5,
                       progress=False)
    assert a == default_corpus(model, tok, n_prompts=6, gen_tokens=4, seed=1,
                               answered_fraction=0.5, progress=False)
    assert a != default_corpus(model, tok, n_prompts=6, gen_tokens=4, seed=2,
                               answered_fraction=0.5, progress=False)
    games = a[:6]
    assert all("Current balance" in t for t in games)
    assert any("<|user|>" in t for t in games) and any("Choice: " in t for t in games)


@pytest.mark.e2e
def test_embedded_one_layer_end_to_end(tmp_path) -> None:
    from featurepath.models import load_model
    from featurepath.tasks.slot_machine.corpus import game_prompts

    model, tok = load_model("embedded", device="cpu")
    texts = game_prompts(tok, 24, seed=5)
    cfg = TrainConfig(expansion=2, k=16, steps=120, batch_size=256, lr=2e-3)
    paths = train_saes(model, tok, texts, [8], cfg, tmp_path, loss_texts=2, progress=False)
    q = load_sae(paths[8]).meta["quality"]
    assert q["fvu"] < 0.6 and q["loss_increase"] < 3.0, q
