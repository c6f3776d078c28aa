"""Planted controls on the tiny model (issue 12).

- A feature whose decoder row is wired to move the readout (P(stop)) beats the band of null
  directions of its size; a feature whose decoder row is just another random direction does not.
- A pathway target that reads the patched direction itself is labelled ``direct`` (the delta
  carried up the residual stream); one that reads only what block 2 makes of the delta, and is
  orthogonal to the delta, is labelled ``mediated``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from featurepath.analysis.causal import causal_table
from featurepath.analysis.pathways import pathway_edges
from featurepath.engine.generate import replay
from featurepath.engine.hooks import Intervention, RecordSpec
from featurepath.models import decoder_blocks
from featurepath.pipeline.controls import null_direction
from featurepath.sae.model import SAE
from featurepath.tasks.slot_machine.readout import option_token_ids, p_stop_readout

PROMPTS = [f"Round {i}: Bet ${5 * i + 5}, {'Win' if i % 3 else 'Loss'}. Balance ${90 + 7 * i}. "
           "Choice: " for i in range(12)]
K = 39  # null directions: the smallest empirical p is 1/40 < 0.05


def _sae(layer: int, W_dec: torch.Tensor) -> SAE:
    """An SAE whose features read and write ``W_dec``'s rows, kept active by a positive bias."""
    d_sae, d = W_dec.shape
    return SAE(W_dec.T.clone() * 4.0, torch.full((d_sae,), 2.0), W_dec, torch.zeros(d), "relu",
               layer=layer)


def _rows(arm: str, feature: str, layer: int, fid: int, k: int, offset: int, patch: str,
          p_stop: np.ndarray) -> list[dict]:
    return [dict(feature=feature, layer=layer, feature_id=fid, condition=f"c_{patch}",
                 context="ctx", patch=patch, method="delta", trial=t, prompt_id=f"p{t}",
                 row=offset + t, action=None, valid=False, value=np.nan,
                 scale=np.nan if patch == "none" else 6.0, p_stop=float(p_stop[t]), arm=arm,
                 null_index=k) for t in range(len(PROMPTS))]


def test_wired_feature_beats_the_null_band_and_a_random_one_does_not(tiny):
    model, tok = tiny
    d = model.config.hidden_size
    layer = model.config.num_hidden_layers - 1
    ids = option_token_ids(tok)
    w = model.lm_head.weight.detach()
    wired = w[ids["stop"]].mean(0) - w[ids["bet"]].mean(0)
    g = torch.Generator().manual_seed(3)
    plain = torch.randn(d, generator=g)
    W_dec = torch.stack([wired / wired.norm(), plain / plain.norm()])
    saes = {layer: _sae(layer, W_dec)}
    readout = p_stop_readout(tok)
    n = len(PROMPTS)

    def run(ivs):
        return replay(model, tok, PROMPTS, saes=saes, interventions=ivs, readout=readout).readout

    rows = _rows("baseline", "", -1, -1, -1, 0, "none", run(None).numpy())
    offset = n
    for fid in (0, 1):
        key = f"L{layer}-{fid}"
        rows += _rows("feature", key, layer, fid, -1, offset, "scale",
                      run([Intervention(layer, fid, scale=6.0)] * n).numpy())
        offset += n
        for k in range(K):
            u = null_direction(0, layer, k, d)
            out = run([Intervention(layer, fid, scale=6.0, direction=u)] * n).numpy()
            rows += _rows("null", key, layer, fid, k, offset, "scale", out)
            offset += n
    tests, _ = causal_table(pd.DataFrame(rows), n_boot=0,
                            min_effect={"p_stop": 1e-4, "stop_rate": 1, "bet": 1})
    p = tests[tests["metric"] == "p_stop"].set_index("feature_id")
    assert (p["null_n"] == K).all()
    assert bool(p.loc[0, "vs_baseline"]) and bool(p.loc[0, "beats_null"])
    assert bool(p.loc[0, "significant"])
    assert p.loc[0, "null_p"] == 1 / (K + 1)
    assert not bool(p.loc[1, "beats_null"]) and not bool(p.loc[1, "significant"])


def _patched_stream(model, tok, sae: SAE, ivs) -> torch.Tensor:
    """Block 1's output at the last prompt position (block 2's input) when PROMPTS[0] is
    replayed with ``ivs`` at layer 1."""
    seen: dict[str, torch.Tensor] = {}
    hook = decoder_blocks(model)[2].register_forward_pre_hook(
        lambda _m, args, kwargs: seen.__setitem__(
            "h", (args[0] if args else kwargs["hidden_states"])[:, -1].clone()),
        with_kwargs=True)
    try:
        replay(model, tok, PROMPTS[:1], saes={1: sae}, interventions=ivs)
    finally:
        hook.remove()
    return seen["h"]


def test_null_arm_writes_the_same_magnitude_along_its_direction(tiny):
    """``h += (v - f(h)) · ‖W_dec[f]‖ · u`` at the patched position, checked on the residual."""
    model, tok = tiny
    d = model.config.hidden_size
    W_dec = torch.randn(4, d, generator=torch.Generator().manual_seed(0)) * 0.7
    sae = _sae(1, W_dec)
    u = null_direction(0, 1, 0, d)
    base = _patched_stream(model, tok, sae, None)
    f = sae.encode(base)[0, 2]
    null = _patched_stream(model, tok, sae, [Intervention(1, 2, value=float(f) + 1.5,
                                                          positions="prompt", direction=u)])
    seen = {"base": base, "null": null}
    want = 1.5 * W_dec[2].norm() * u
    torch.testing.assert_close(seen["null"][0] - seen["base"][0], want, atol=1e-4, rtol=1e-4)


def test_direction_null_reads_the_direction_and_writes_along_the_null(tiny):
    """The behavioural direction's null arm: ``a = h · u`` read, ``(3a - a) · w`` written —
    the direction's own magnitude along ``w``; without ``write`` it goes along ``u``."""
    model, tok = tiny
    d = model.config.hidden_size
    sae = _sae(1, torch.randn(4, d, generator=torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(5)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    w = null_direction(0, 1, 3, d)
    seen = {name: _patched_stream(model, tok, sae, ivs) for name, ivs in (
        ("base", None),
        ("dir", [Intervention(1, -1, scale=3.0, positions="prompt", readout="projection",
                              direction=u)]),
        ("null", [Intervention(1, -1, scale=3.0, positions="prompt", readout="projection",
                               direction=u, write=w)]))}
    a = float(seen["base"][0] @ u)
    torch.testing.assert_close(seen["dir"][0] - seen["base"][0], 2 * a * u, atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(seen["null"][0] - seen["base"][0], 2 * a * w, atol=1e-4,
                               rtol=1e-4)


def _block_output(model, tok, layer, ivs, saes) -> torch.Tensor:
    seen = {}
    hook = decoder_blocks(model)[layer].register_forward_hook(
        lambda _m, _i, out: seen.__setitem__("h", (out[0] if isinstance(out, tuple)
                                                   else out)[:, -1].clone()))
    try:
        replay(model, tok, PROMPTS, saes=saes, interventions=ivs)
    finally:
        hook.remove()
    return seen["h"]


def test_carried_edge_is_direct_and_transformed_edge_is_mediated(tiny, tiny_saes):
    model, tok = tiny
    d = model.config.hidden_size
    n = len(PROMPTS)
    src_layer, src = 1, 3
    direction = tiny_saes[src_layer].W_dec[src].detach().clone()
    u = direction / direction.norm()
    ivs = [Intervention(src_layer, src, value=3.0, positions="prompt")] * n
    # what block 2 makes of the delta, minus the delta's own direction: a mediated reader
    dh = (_block_output(model, tok, 2, ivs, {src_layer: tiny_saes[src_layer]})
          - _block_output(model, tok, 2, None, {src_layer: tiny_saes[src_layer]})).mean(0)
    med = dh - (dh @ u) * u
    med = med / med.norm()
    reader = SAE(torch.stack([u, med], 1) * 10.0, torch.tensor([5.0, 5.0]),
                 torch.stack([u, med]), torch.zeros(d), "relu", layer=2)
    saes = {src_layer: tiny_saes[src_layer], 2: reader}
    spec = RecordSpec([(src_layer, src), (2, 0), (2, 1)])
    base = replay(model, tok, PROMPTS, saes=saes, record=spec)
    patched = replay(model, tok, PROMPTS, saes=saes, record=spec, interventions=ivs)
    acts = torch.cat([base.decision, patched.decision]).numpy()
    rows = []
    for k, (feature, patch) in enumerate([("", "none"), (f"L{src_layer}-{src}", "value")]):
        for t in range(n):
            rows.append(dict(feature=feature, layer=src_layer if feature else -1,
                             feature_id=src if feature else -1, condition=f"c_{patch}",
                             context="ctx", patch=patch, method="delta", trial=t,
                             prompt_id=f"p{t}", row=k * n + t, action=None, valid=False,
                             value=3.0 if feature else np.nan, scale=np.nan))
    carry = {f"L{src_layer}-{src}": np.array(
        [0.0, float(direction @ reader.W_enc[:, 0]), float(direction @ reader.W_enc[:, 1])])}
    edges = pathway_edges(pd.DataFrame(rows), acts, np.array([src_layer, 2, 2]),
                          np.array([src, 0, 1]), alpha=0.05, min_d=0.5, carry=carry)
    e = edges.set_index("target_feature")
    assert bool(e.loc[0, "edge"]) and e.loc[0, "mechanism"] == "direct", e
    assert e.loc[0, "carry_share"] > 0.5
    assert bool(e.loc[1, "edge"]) and e.loc[1, "mechanism"] == "mediated", e
    assert abs(e.loc[1, "carry_share"]) < 0.1


def test_behavioural_direction_is_the_normalised_mean_difference(tiny, tmp_path):
    """Continue-minus-stop mean of ``output_hidden_states[L + 1]`` at the decision token,
    computed here with a plain forward per prompt, normalised; refused without both kinds."""
    import pytest

    from featurepath.errors import DataError
    from featurepath.pipeline.controls import behavioural_directions

    model, tok = tiny
    actions = ["bet", "stop", "bet", "stop", "bet", "bet"]
    (tmp_path / "play").mkdir()
    pd.DataFrame({"prompt": PROMPTS[:6], "action": actions, "retries": 0,
                  "game_id": [f"g{i}" for i in range(6)], "round": 1}
                 ).to_parquet(tmp_path / "play" / "decisions.parquet")
    got = behavioural_directions(model, tok, tmp_path, [1, 2], batch_size=4)
    for layer in (1, 2):
        hs = []
        for text in PROMPTS[:6]:
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                hs.append(model(input_ids=ids, output_hidden_states=True)
                          .hidden_states[layer + 1][0, -1])
        h = torch.stack(hs)
        bet = torch.tensor([a == "bet" for a in actions])
        want = h[bet].mean(0) - h[~bet].mean(0)
        torch.testing.assert_close(got[layer], want / want.norm(), atol=1e-4, rtol=1e-4)
    assert not list(tmp_path.glob(".directions-*"))
    pd.DataFrame({"prompt": PROMPTS[:3], "action": ["bet"] * 3, "retries": 0,
                  "game_id": ["a", "b", "c"], "round": 1}
                 ).to_parquet(tmp_path / "play" / "decisions.parquet")
    with pytest.raises(DataError, match="2 of stop"):
        behavioural_directions(model, tok, tmp_path, [1])
