"""A planted pathway on the tiny model: a layer-2 feature built to read a layer-1 feature's
decoder direction is recovered as an edge; a planted null (orthogonal reader) is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from featurepath.analysis.pathways import pathway_edges
from featurepath.engine.generate import replay
from featurepath.engine.hooks import Intervention, RecordSpec
from featurepath.sae.model import SAE

PROMPTS = [f"Round {i}: Bet ${5 * i + 5}, {'Win' if i % 3 else 'Loss'}. Balance ${90 + 7 * i}. "
           "Choice: " for i in range(20)]


def _reader_sae(d_model: int, target_dir: torch.Tensor, null_dir: torch.Tensor) -> SAE:
    """Layer-2 SAE: feature 0 reads ``target_dir``, feature 1 reads ``null_dir``; positive
    biases keep both active (so they vary across prompts instead of sitting at zero)."""
    W_enc = torch.stack([target_dir, null_dir], dim=1) * 10.0
    W_dec = torch.stack([target_dir, null_dir], dim=0)
    return SAE(W_enc, torch.tensor([5.0, 5.0]), W_dec, torch.zeros(d_model), "relu", layer=2)


def test_planted_dependency_is_recovered_and_null_stays_out(tiny, tiny_saes):
    model, tok = tiny
    d = model.config.hidden_size
    src_layer, src = 1, 3
    direction = tiny_saes[src_layer].W_dec[src].detach().clone()
    direction = direction / direction.norm()
    g = torch.Generator().manual_seed(5)
    null = torch.randn(d, generator=g)
    null = null - (null @ direction) * direction
    null = null / null.norm()
    saes = {src_layer: tiny_saes[src_layer], 2: _reader_sae(d, direction, null)}
    spec = RecordSpec([(2, 0), (2, 1)])
    n = len(PROMPTS)
    base = replay(model, tok, PROMPTS, saes=saes, record=spec)
    patched = replay(model, tok, PROMPTS, saes=saes, record=spec,
                     interventions=[Intervention(src_layer, src, value=3.0,
                                                 positions="prompt")] * n)
    acts = torch.cat([base.decision, patched.decision]).numpy()
    rows = []
    for k, (feature, cond, patch) in enumerate([("", "ctx_baseline", "none"),
                                                (f"L{src_layer}-{src}", "ctx_patch", "value")]):
        for t in range(n):
            rows.append(dict(feature=feature, layer=src_layer if feature else -1,
                             feature_id=src if feature else -1, condition=cond, context="ctx",
                             patch=patch, method="delta", trial=t, prompt_id=f"p{t}",
                             row=k * n + t, action=None, valid=False,
                             value=3.0 if feature else np.nan, scale=np.nan))
    edges = pathway_edges(pd.DataFrame(rows), acts, np.array([2, 2]), np.array([0, 1]),
                          alpha=0.05, min_d=0.5)
    by_target = edges.set_index("target_feature")
    assert bool(by_target.loc[0, "edge"]), by_target
    assert by_target.loc[0, "sign"] == np.sign(by_target.loc[0, "mean_shift"]) != 0
    assert not bool(by_target.loc[1, "edge"])
    assert abs(by_target.loc[1, "d"]) < abs(by_target.loc[0, "d"]) / 5
