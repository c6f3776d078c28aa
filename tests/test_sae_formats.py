"""SAE loaders checked against the formats' arithmetic written out by hand, slices against the
full SAE, and bad files against one-line errors (through the CLI too)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from featurepath.cli import main
from featurepath.errors import SAEFormatError
from featurepath.sae import load_sae, save_sae
from featurepath.sae.model import SAE

D_MODEL, D_SAE = 16, 40


def write_llamascope(root: Path, seed: int = 0, threshold: float = 0.3, norm_in: float = 7.0,
                     layer: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = {"encoder.weight": torch.randn(D_SAE, D_MODEL, generator=g) * 0.3,
         "encoder.bias": torch.randn(D_SAE, generator=g) * 0.1,
         "decoder.weight": torch.randn(D_MODEL, D_SAE, generator=g) * 0.3,
         "decoder.bias": torch.randn(D_MODEL, generator=g) * 0.1}
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_file(w, str(root / "checkpoints" / "final.safetensors"))
    (root / "hyperparams.json").write_text(json.dumps({
        "d_model": D_MODEL, "d_sae": D_SAE, "jump_relu_threshold": threshold,
        "dataset_average_activation_norm": {"in": norm_in, "out": norm_in * 1.1},
        "hook_point_in": f"blocks.{layer}.hook_resid_post",
        "hook_point_out": f"blocks.{layer}.hook_resid_post", "norm_activation": "dataset-wise"}))
    return w


def write_saelens(root: Path, arch: str, seed: int = 0, k: int = 5, layer: int = 2,
                  apply_b_dec: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = {"W_enc": torch.randn(D_MODEL, D_SAE, generator=g) * 0.3,
         "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
         "W_dec": torch.randn(D_SAE, D_MODEL, generator=g) * 0.3,
         "b_dec": torch.randn(D_MODEL, generator=g) * 0.1}
    cfg = {"d_in": D_MODEL, "d_sae": D_SAE, "hook_name": f"blocks.{layer}.hook_resid_post",
           "hook_layer": layer, "apply_b_dec_to_input": apply_b_dec,
           "normalize_activations": "none"}
    if arch == "jumprelu":
        w["threshold"] = torch.rand(D_SAE, generator=g) * 0.3
        cfg["architecture"] = "jumprelu"
    elif arch == "topk":
        cfg.update(architecture="topk", activation_fn="topk", activation_fn_kwargs={"k": k})
    else:
        cfg.update(architecture="standard", activation_fn="relu")
    root.mkdir(parents=True, exist_ok=True)
    save_file(w, str(root / "sae_weights.safetensors"))
    (root / "cfg.json").write_text(json.dumps(cfg))
    return w


def test_llamascope_matches_hand_formula(tmp_path: Path) -> None:
    thr, norm_in = 0.3, 7.0
    w = write_llamascope(tmp_path / "ls", threshold=thr, norm_in=norm_in)
    sae = load_sae(tmp_path / "ls")
    assert (sae.activation, sae.layer, sae.d_model, sae.d_sae) == ("jumprelu", 3, D_MODEL, D_SAE)
    x = torch.randn(9, D_MODEL) * 3
    s = math.sqrt(D_MODEL) / norm_in
    pre = (x * s) @ w["encoder.weight"].T + w["encoder.bias"]
    f = torch.relu(pre) * (pre > thr * s)
    x_hat = (f @ w["decoder.weight"].T + w["decoder.bias"]) / s
    assert (f > 0).any() and (f == 0).any()
    torch.testing.assert_close(sae.encode(x), f, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x), x_hat, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("apply_b_dec", [False, True])
def test_saelens_matches_hand_formula(tmp_path: Path, arch: str, apply_b_dec: bool) -> None:
    k = 5
    w = write_saelens(tmp_path / arch, arch, k=k, apply_b_dec=apply_b_dec)
    sae = load_sae(tmp_path / arch)
    assert sae.activation == arch and sae.layer == 2
    x = torch.randn(11, D_MODEL) * 2
    xin = x - w["b_dec"] if apply_b_dec else x
    pre = xin @ w["W_enc"] + w["b_enc"]
    if arch == "relu":
        f = torch.relu(pre)
    elif arch == "jumprelu":
        f = torch.relu(pre) * (pre > w["threshold"])
    else:
        kth = pre.sort(dim=-1, descending=True).values[:, k - 1:k]
        f = torch.where(pre >= kth, torch.relu(pre), torch.zeros_like(pre))
        assert ((f > 0).sum(-1) <= k).all()
    torch.testing.assert_close(sae.encode(x), f, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x), f @ w["W_dec"] + w["b_dec"], rtol=1e-5, atol=1e-5)


def test_featurepath_roundtrip(tmp_path: Path) -> None:
    write_saelens(tmp_path / "src", "topk", k=4)
    sae = load_sae(tmp_path / "src")
    save_sae(sae, tmp_path / "fp", extra={"note": "x"})
    back = load_sae(tmp_path / "fp")
    x = torch.randn(5, D_MODEL)
    torch.testing.assert_close(back(x), sae(x))
    assert back.k == 4 and back.meta["note"] == "x" and back.meta["format"] == "featurepath"


_SAES: dict[str, SAE] = {}


def _sae(kind: str, tmp: Path) -> SAE:
    if kind not in _SAES:
        if kind == "llamascope":
            write_llamascope(tmp / kind)
        else:
            write_saelens(tmp / kind, kind, k=6)
        _SAES[kind] = load_sae(tmp / kind)
    return _SAES[kind]


@pytest.mark.parametrize("kind", ["llamascope", "relu", "jumprelu", "topk"])
@settings(max_examples=25, deadline=None)
@given(ids=st.lists(st.integers(0, D_SAE - 1), min_size=1, max_size=D_SAE, unique=True),
       seed=st.integers(0, 2**16))
def test_slice_encodes_like_full(tmp_path_factory, kind: str, ids: list[int], seed: int) -> None:
    sae = _sae(kind, tmp_path_factory.getbasetemp())
    x = torch.randn(7, D_MODEL, generator=torch.Generator().manual_seed(seed)) * 3
    sl = sae.slice(ids)
    torch.testing.assert_close(sl.encode(x), sae.encode(x)[:, ids], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sl.W_dec, sae.W_dec.data[ids])


# ---------------------------------------------------------------- bad files give one line


def _one_line_error(capsys, path: Path, *extra: str) -> str:
    rc = main(["sae", "info", str(path), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


def test_missing_key(tmp_path: Path, capsys) -> None:
    w = write_llamascope(tmp_path / "ls")
    del w["encoder.bias"]
    save_file(w, str(tmp_path / "ls" / "checkpoints" / "final.safetensors"))
    with pytest.raises(SAEFormatError, match="final.safetensors.*encoder.bias"):
        load_sae(tmp_path / "ls")
    err = _one_line_error(capsys, tmp_path / "ls")
    assert "final.safetensors" in err and "encoder.bias" in err


def test_wrong_shape(tmp_path: Path, capsys) -> None:
    w = write_saelens(tmp_path / "sl", "relu")
    w["W_dec"] = torch.zeros(D_SAE, D_MODEL + 1)
    save_file(w, str(tmp_path / "sl" / "sae_weights.safetensors"))
    err = _one_line_error(capsys, tmp_path / "sl")
    assert "sae_weights.safetensors" in err and "W_dec" in err and "shape" in err


def test_truncated_safetensors(tmp_path: Path, capsys) -> None:
    write_llamascope(tmp_path / "ls")
    f = tmp_path / "ls" / "checkpoints" / "final.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    err = _one_line_error(capsys, tmp_path / "ls")
    assert "final.safetensors" in err


def test_pickle_only(tmp_path: Path, capsys) -> None:
    d = tmp_path / "pk"
    d.mkdir()
    torch.save({"W_enc": torch.zeros(2, 2)}, d / "sae.pt")
    err = _one_line_error(capsys, d)
    assert "sae.pt" in err and "pickle" in err


def test_d_model_mismatch(tmp_path: Path, capsys) -> None:
    from transformers.utils import logging as hf_logging

    from featurepath.testing import save_tiny_llama

    hf_logging.disable_progress_bar()  # transformers' own loading bars also go to stderr
    write_llamascope(tmp_path / "ls")  # d_model 16; the tiny model has 64
    model_dir = save_tiny_llama(tmp_path / "tiny")
    capsys.readouterr()
    with pytest.raises(SAEFormatError, match="d_model 16 does not match"):
        load_sae(tmp_path / "ls", d_model=64)
    err = _one_line_error(capsys, tmp_path / "ls", "--model", model_dir, "--device", "cpu")
    assert "d_model" in err and str(tmp_path / "ls") in err


def test_missing_dir(tmp_path: Path, capsys) -> None:
    err = _one_line_error(capsys, tmp_path / "nope")
    assert "does not exist" in err
