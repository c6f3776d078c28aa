"""The SAE registries: activations (one implementation shared by an SAE and its slices) and
formats, extended from a test as a user would, then used end to end on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from featurepath.engine.generate import replay
from featurepath.engine.hooks import Intervention, RecordSpec
from featurepath.sae import register_activation, register_sae_format
from featurepath.sae.activations import activation_names, get_activation
from featurepath.sae.formats import _FORMATS, detect_format, load_sae
from featurepath.testing import random_sae

PROMPTS = ["Balance $20. Choice: ", "You won! Balance $140 now. Choice: "]


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk", "abstopk"])
def test_slice_encode_equals_full_encode(activation):
    sae = random_sae(32, 64, 1, activation, k=8)
    x = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(0))
    ids = [0, 7, 8, 63, 21]
    full = sae.encode(x)
    assert torch.equal(sae.slice(ids).encode(x), full[..., ids])
    if get_activation(activation).uses_k:
        assert ((full != 0).sum(-1) == 8).all()


def test_topk_keeps_exactly_k_on_ties():
    """A slice used to keep every feature tied with the k-th value; now it runs the full SAE's
    exact-k function, so both agree even on ties."""
    sae = random_sae(4, 6, 0, "topk", k=2)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.copy_(torch.tensor([3.0, 1.0, 1.0, 1.0, 0.0, 0.0]))
    x = torch.zeros(1, 4)
    full = sae.encode(x)
    assert int((full != 0).sum()) == 2
    assert torch.equal(sae.slice([1, 2, 3]).encode(x), full[..., [1, 2, 3]])


def _square_relu(pre, threshold, k):
    """A custom architecture: relu(pre)^2 above the threshold."""
    return torch.relu(pre - threshold) ** 2


def _write_npz_like(path: Path, sae) -> None:
    """A made-up format: ``weights.safetensors`` + ``layout.json`` with other key names."""
    path.mkdir(parents=True)
    save_file({"enc": sae.W_enc.data.contiguous(), "enc_b": sae.b_enc.data.contiguous(),
               "dec": sae.W_dec.data.contiguous(), "dec_b": sae.b_dec.data.contiguous(),
               "thr": sae.threshold.data.contiguous()}, str(path / "weights.safetensors"))
    (path / "layout.json").write_text(json.dumps({"layer": sae.layer, "act": "square_relu"}))


def _load_npz_like(path: Path, **_):
    from safetensors.torch import load_file

    from featurepath.sae.model import SAE

    t = load_file(str(path / "weights.safetensors"))
    meta = json.loads((path / "layout.json").read_text())
    return SAE(t["enc"], t["enc_b"], t["dec"], t["dec_b"], meta["act"], t["thr"],
               layer=meta["layer"], meta={"format": "layoutjson"})


def test_custom_activation_and_format_load_encode_and_patch(tiny, tmp_path):
    model, tok = tiny
    d = model.config.hidden_size
    register_activation("square_relu", _square_relu)
    register_sae_format("layoutjson", lambda p: (p / "layout.json").exists(), _load_npz_like,
                        "layout.json (test format)")
    try:
        assert "square_relu" in activation_names()
        base = random_sae(d, 64, 1, "relu")
        _write_npz_like(tmp_path / "L1", base)
        assert detect_format(tmp_path / "L1") == "layoutjson"
        sae = load_sae(tmp_path / "L1", d_model=d)
        assert sae.activation == "square_relu" and sae.layer == 1
        x = torch.randn(4, d, generator=torch.Generator().manual_seed(1))
        want = torch.relu(sae.pre_acts(x) - sae.threshold) ** 2
        assert torch.equal(sae.encode(x), want)
        assert torch.equal(sae.slice([3, 5]).encode(x), want[:, [3, 5]])
        # patch on the tiny model: a recorded feature reads the square_relu value, and a
        # clamp of an active feature to 0 changes the logits
        saes = {1: sae}
        fid = int(torch.argmax(sae.encode(_hidden(model, tok, PROMPTS[0], 1))))
        spec = RecordSpec([(1, fid)])
        ivs = [None, Intervention(1, fid, value=0.0, positions="prompt")]
        res = replay(model, tok, [PROMPTS[0]] * 2, saes=saes, interventions=ivs, record=spec,
                     readout=lambda logits: logits.float().logsumexp(-1) - logits[..., 0])
        clean = float(sae.encode(_hidden(model, tok, PROMPTS[0], 1))[fid])
        assert clean > 0
        assert float(res.decision[0, 0]) == pytest.approx(clean, rel=1e-4)
        assert float(res.readout[0]) != float(res.readout[1])  # the clamp moved the output
    finally:
        _FORMATS[:] = [f for f in _FORMATS if f.name != "layoutjson"]
        from featurepath.sae import activations

        activations._REGISTRY.pop("square_relu", None)


def _hidden(model, tok, prompt, layer):
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**enc, output_hidden_states=True).hidden_states[layer + 1][0, -1]


def test_unknown_activation_names_the_registered_ones():
    with pytest.raises(ValueError, match="relu, jumprelu, topk, abstopk"):
        get_activation("nope")
