"""SAELens directories as SAELens 6 reads them, built by hand (no SAELens needed): each test
writes the cfg.json / safetensors layout SAELens's ``save_model`` / ``save_inference_model`` /
older versions write, and checks featurepath against the architecture's arithmetic written out
here (active-set Jaccard >= 0.999, reconstruction within 1e-3 of its scale)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from featurepath.cli import main
from featurepath.errors import SAEFormatError
from featurepath.sae import load_sae

D_IN, D_SAE = 16, 48


def weights(seed: int = 0, norm_spread: bool = True) -> dict[str, torch.Tensor]:
    """Random weights whose decoder rows have very different norms (so rescaling by them
    changes which features win a top-k)."""
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(D_SAE, D_IN, generator=g)
    if norm_spread:
        W_dec = W_dec * torch.logspace(-1, 1, D_SAE)[torch.randperm(D_SAE, generator=g)][:, None]
    return {"W_enc": torch.randn(D_IN, D_SAE, generator=g) * 0.4,
            "b_enc": torch.randn(D_SAE, generator=g) * 0.2,
            "W_dec": W_dec * 0.3,
            "b_dec": torch.randn(D_IN, generator=g) * 0.5}


def write(root: Path, cfg: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(root / "sae_weights.safetensors"))
    (root / "cfg.json").write_text(json.dumps(cfg))
    return root


def cfg6(architecture: str, hook: str = "blocks.4.hook_resid_post", **extra: Any) -> dict:
    """A config as SAELens 6 ``save_model`` writes it: the hook lives under ``metadata``."""
    return {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": True, "normalize_activations": "none",
            "reshape_activations": "none", "architecture": architecture,
            "metadata": {"sae_lens_version": "6.54.0", "sae_lens_training_version": "6.54.0",
                         "model_name": "m", "hook_name": hook, "hook_head_index": None},
            **extra}


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = ((a != 0) & (b != 0)).sum().item()
    union = ((a != 0) | (b != 0)).sum().item()
    return inter / union if union else 1.0


def assert_same(sae, x: torch.Tensor, f: torch.Tensor, recon: torch.Tensor) -> None:
    got_f = sae.encode(x)
    assert jaccard(got_f.float(), f.float()) >= 0.999
    err = (sae.decode(got_f).float() - recon.float()).abs().max().item()
    assert err <= 1e-3 * recon.float().abs().max().item()


def x_batch(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed)) * 2


def test_current_config_reads_hook_from_metadata(tmp_path: Path) -> None:
    w = weights()
    write(tmp_path / "s", cfg6("standard"), w)
    sae = load_sae(tmp_path / "s")  # no layer= hint
    assert sae.layer == 4 and sae.activation == "relu" and sae.apply_b_dec_to_input
    x = x_batch()
    f = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    assert_same(sae, x, f, f @ w["W_dec"] + w["b_dec"])


def test_current_config_missing_apply_b_dec_means_true(tmp_path: Path) -> None:
    cfg = cfg6("standard")
    del cfg["apply_b_dec_to_input"]
    write(tmp_path / "s", cfg, weights())
    assert load_sae(tmp_path / "s").apply_b_dec_to_input is True


@pytest.mark.parametrize("arch", ["topk", "abstopk"])
@pytest.mark.parametrize("rescale", [True, False])
def test_topk_with_and_without_decoder_norm_rescaling(tmp_path: Path, arch: str,
                                                      rescale: bool) -> None:
    k = 6
    w = weights()
    write(tmp_path / "s", cfg6(arch, k=k, rescale_acts_by_decoder_norm=rescale), w)
    sae = load_sae(tmp_path / "s")
    x = x_batch()
    norms = w["W_dec"].norm(dim=1)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    scored = pre * norms if rescale else pre
    rank = scored.abs() if arch == "abstopk" else scored
    idx = rank.topk(k, dim=-1).indices
    kept = scored.gather(-1, idx)
    f = torch.zeros_like(pre).scatter(-1, idx, kept if arch == "abstopk" else kept.relu())
    recon = (f / norms if rescale else f) @ w["W_dec"] + w["b_dec"]
    assert_same(sae, x, f, recon)
    if rescale:  # ignoring the norms would pick other features: the test can tell
        plain = torch.zeros_like(pre).scatter(-1, (pre.abs() if arch == "abstopk" else pre)
                                              .topk(k, dim=-1).indices, 1.0)
        assert jaccard(plain, f) < 0.9
    if arch == "abstopk":
        assert ((sae.encode(x) != 0).sum(-1) == k).all()
        assert (sae.encode(x) < 0).any()  # signed features survive
    assert sae.meta["target_l0"] == k


def test_abstopk_slice_matches_full(tmp_path: Path) -> None:
    write(tmp_path / "s", cfg6("abstopk", k=5), weights())
    sae = load_sae(tmp_path / "s")
    x = x_batch()
    ids = [0, 3, 7, 20, 47]
    torch.testing.assert_close(sae.slice(ids).encode(x), sae.encode(x)[:, ids])


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
def test_batchtopk_training_checkpoint_reads_as_jumprelu(tmp_path: Path, arch: str) -> None:
    w = weights()
    thr = 0.35
    cfg = cfg6(arch, k=8.0, topk_threshold_lr=0.01)  # training config: rescale defaults to True
    write(tmp_path / "s", cfg, {**w, "topk_threshold": torch.tensor(thr, dtype=torch.float64)})
    sae = load_sae(tmp_path / "s")
    assert sae.activation == "jumprelu" and sae.meta["target_l0"] == 8.0
    x = x_batch()
    norms = w["W_dec"].norm(dim=1)
    pre = ((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]) * norms
    f = pre.relu() * (pre > thr)
    assert (f != 0).any() and (f == 0).any()
    assert_same(sae, x, f, (f / norms) @ w["W_dec"] + w["b_dec"])


def test_jumprelu_threshold_and_log_threshold(tmp_path: Path) -> None:
    w = weights()
    thr = torch.rand(D_SAE, generator=torch.Generator().manual_seed(3)) * 0.5
    write(tmp_path / "a", cfg6("jumprelu"), {**w, "threshold": thr})
    write(tmp_path / "b", cfg6("jumprelu"), {**w, "log_threshold": thr.log()})
    x = x_batch()
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    f = pre.relu() * (pre > thr)
    for d in ("a", "b"):
        assert_same(load_sae(tmp_path / d), x, f, f @ w["W_dec"] + w["b_dec"])


def test_bfloat16_config_computes_in_bfloat16(tmp_path: Path) -> None:
    w = {k: v.to(torch.bfloat16) for k, v in weights().items()}
    thr = torch.full((D_SAE,), 0.2, dtype=torch.bfloat16)
    write(tmp_path / "s", cfg6("jumprelu", dtype="bfloat16"), {**w, "threshold": thr})
    sae = load_sae(tmp_path / "s")
    assert sae.W_enc.dtype == torch.bfloat16
    x = x_batch()
    xb = x.to(torch.bfloat16)
    pre = (xb - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    f = pre.relu() * (pre > thr)
    recon = f @ w["W_dec"] + w["b_dec"]
    assert torch.equal(sae.encode(x), f)
    assert torch.equal(sae.decode(sae.encode(x)), recon)
    # featurepath's own format stores float32: the saved copy must not claim bfloat16
    from featurepath.sae import save_sae

    back = load_sae(save_sae(sae, tmp_path / "fp"))
    assert back.W_enc.dtype == torch.float32 and "dtype" not in back.meta


def test_bfloat16_file_loaded_at_float32_computes_in_float32(tmp_path: Path) -> None:
    """``load_sae(path, dtype="float32")`` is SAELens's ``load_from_disk(path,
    dtype="float32")``: the config's bfloat16 is replaced, the stored bf16 weights are upcast
    (exactly) and the SAE computes in float32 — the arithmetic below in float32 on the same
    weights, not the bfloat16 result of the file's own dtype."""
    w = {k: v.to(torch.bfloat16) for k, v in weights().items()}
    thr = torch.full((D_SAE,), 0.2, dtype=torch.bfloat16)
    write(tmp_path / "s", cfg6("jumprelu", dtype="bfloat16"), {**w, "threshold": thr})
    x = x_batch()
    w32 = {k: v.float() for k, v in w.items()}
    pre = (x - w32["b_dec"]) @ w32["W_enc"] + w32["b_enc"]
    f = pre.relu() * (pre > thr.float())
    recon = f @ w32["W_dec"] + w32["b_dec"]
    for dtype in ("float32", torch.float32, "torch.float32"):
        sae = load_sae(tmp_path / "s", dtype=dtype)
        assert sae.W_enc.dtype == sae.threshold.dtype == torch.float32
        assert sae.meta["dtype"] == "float32"
        assert torch.equal(sae.encode(x), f)
        assert torch.equal(sae.decode(sae.encode(x)), recon)
    native = load_sae(tmp_path / "s")  # the file's dtype: bfloat16, a different result
    assert native.W_enc.dtype == torch.bfloat16
    assert not torch.equal(native.encode(x).float(), f)


def test_dtype_option_for_every_format_and_the_config_key(tmp_path: Path) -> None:
    """Formats stored in float32 (featurepath's, Llama Scope) are cast to the dtype asked for;
    ``sae_dtype`` in a run's config reaches every SAE of the set; a bad name is one line."""
    from featurepath.config import RunConfig, config_from_dict
    from featurepath.errors import ConfigError
    from featurepath.pipeline.runtime import load_runtime
    from featurepath.sae import save_sae
    from featurepath.testing import random_sae, write_tiny_inputs

    fp = save_sae(random_sae(D_IN, D_SAE, layer=2), tmp_path / "fp")
    assert load_sae(fp).W_enc.dtype == torch.float32
    half = load_sae(fp, dtype="bfloat16")
    assert half.W_dec.dtype == torch.bfloat16 and half.meta["dtype"] == "bfloat16"
    with pytest.raises(SAEFormatError, match="unsupported dtype"):
        load_sae(fp, dtype="int8")
    model_dir, sae_dir = write_tiny_inputs(tmp_path / "tiny")
    cfg = RunConfig.model_validate({"model": model_dir, "saes": sae_dir, "device": "cpu",
                                    "sae_dtype": "bfloat16"})
    _, _, saes = load_runtime(cfg, progress=False)
    assert {s.W_enc.dtype for s in saes.values()} == {torch.bfloat16}
    assert RunConfig().sae_dtype is None
    with pytest.raises(ConfigError, match="sae_dtype"):
        config_from_dict({"sae_dtype": "int8"})


def test_float32_config_casts_bfloat16_weights(tmp_path: Path) -> None:
    w = {k: v.to(torch.bfloat16) for k, v in weights().items()}
    write(tmp_path / "s", cfg6("standard"), w)
    assert load_sae(tmp_path / "s").W_enc.dtype == torch.float32


# ------------------------------------------------------------------ configs older than 6.0


def test_pre6_defaults(tmp_path: Path) -> None:
    """gpt2-small-res-jb style: no version, hook_point, activation_fn_str, no
    apply_b_dec_to_input (means True), normalize_activations false (means none)."""
    w = weights()
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "hook_point":
           "blocks.7.hook_resid_pre", "hook_point_layer": 7, "activation_fn_str": "relu",
           "normalize_activations": False, "model_name": "gpt2-small"}
    write(tmp_path / "s", cfg, w)
    sae = load_sae(tmp_path / "s")
    assert sae.layer == 6  # resid_pre of block 7 is the output of block 6
    assert sae.apply_b_dec_to_input and sae.activation == "relu"
    x = x_batch()
    f = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    assert_same(sae, x, f, f @ w["W_dec"] + w["b_dec"])


def test_pre6_topk_from_activation_fn(tmp_path: Path) -> None:
    w = weights()
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32",
           "hook_name": "blocks.2.hook_resid_post", "activation_fn": "topk",
           "activation_fn_kwargs": {"k": 7}, "apply_b_dec_to_input": False,
           "sae_lens_version": "5.3.1"}
    write(tmp_path / "s", cfg, w)
    sae = load_sae(tmp_path / "s")
    assert (sae.activation, sae.k, sae.layer) == ("topk", 7, 2)
    x = x_batch()
    pre = x @ w["W_enc"] + w["b_enc"]
    idx = pre.topk(7, dim=-1).indices
    f = torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx).relu())
    assert_same(sae, x, f, f @ w["W_dec"] + w["b_dec"])


def test_pre6_topk_without_k_is_refused(tmp_path: Path) -> None:
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "hook_point": "blocks.1.hook_resid_post",
           "activation_fn_str": "topk", "k": 8}
    write(tmp_path / "s", cfg, weights())
    with pytest.raises(SAEFormatError, match="without activation_fn_kwargs.k"):
        load_sae(tmp_path / "s")


def test_pre6_normalize_true_is_refused(tmp_path: Path) -> None:
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "hook_point": "blocks.1.hook_resid_post",
           "normalize_activations": True}
    write(tmp_path / "s", cfg, weights())
    with pytest.raises(SAEFormatError, match="expected_average_only_in"):
        load_sae(tmp_path / "s")


# ------------------------------------------------------------------ refused, with one line


def _one_line(capsys, path: Path) -> str:
    rc = main(["sae", "info", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder", "jumprelu_transcoder",
                                  "jumprelu_skip_transcoder", "gated", "matching_pursuit",
                                  "temporal", "made_up"])
def test_unsupported_architectures_are_refused(tmp_path: Path, capsys, arch: str) -> None:
    write(tmp_path / arch, cfg6(arch, d_out=D_IN), weights())
    err = _one_line(capsys, tmp_path / arch)
    assert repr(arch) in err and "not supported" in err


@pytest.mark.parametrize("norm", ["expected_average_only_in", "constant_norm_rescale",
                                  "layer_norm"])
def test_normalisation_is_refused(tmp_path: Path, capsys, norm: str) -> None:
    write(tmp_path / "s", cfg6("standard", normalize_activations=norm), weights())
    assert norm in _one_line(capsys, tmp_path / "s")


def test_unexpected_tensor_is_refused(tmp_path: Path, capsys) -> None:
    write(tmp_path / "s", cfg6("standard"), {**weights(), "W_skip": torch.zeros(D_IN, D_IN)})
    assert "W_skip" in _one_line(capsys, tmp_path / "s")


@pytest.mark.parametrize("hook,layer", [("blocks.5.hook_resid_post", 5),
                                        ("blocks.5.hook_resid_pre", 4),
                                        ("model.layers.5", 5)])
def test_residual_hooks_map_to_block_outputs(tmp_path: Path, hook: str, layer: int) -> None:
    write(tmp_path / "s", cfg6("standard", hook=hook), weights())
    assert load_sae(tmp_path / "s").layer == layer


@pytest.mark.parametrize("hook", ["blocks.5.hook_mlp_out", "blocks.5.attn.hook_z",
                                  "blocks.5.hook_attn_out", "blocks.5.hook_resid_mid",
                                  "blocks.5.ln2.hook_normalized", "blocks.0.hook_resid_pre",
                                  "hook_embed"])
def test_other_hooks_are_refused(tmp_path: Path, capsys, hook: str) -> None:
    write(tmp_path / "s", cfg6("standard", hook=hook), weights())
    assert hook in _one_line(capsys, tmp_path / "s")


@settings(max_examples=60, deadline=None)
@given(block=st.integers(0, 500), kind=st.sampled_from(["pre", "post"]),
       prefix=st.sampled_from(["blocks", "model.layers", "transformer.h"]))
def test_hook_site_property(block: int, kind: str, prefix: str) -> None:
    """resid_post of block L is block L's output; resid_pre of block L is block L-1's; the
    embeddings (resid_pre of block 0) are refused."""
    from featurepath.sae.files import hook_site

    hook = f"{prefix}.{block}.hook_resid_{kind}"
    if kind == "pre" and block == 0:
        with pytest.raises(SAEFormatError, match="embeddings"):
            hook_site(hook, Path("cfg.json"))
    else:
        assert hook_site(hook, Path("cfg.json")).layer == (block - 1 if kind == "pre" else block)
