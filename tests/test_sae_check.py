"""``featurepath sae check`` and the first-batch warning, on the tiny model with a Llama Scope SAE
whose threshold is built to give L0 = 10 under one reading (compared as stored) and is therefore
far off under the default one (compared with threshold x s)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from transformers.utils import logging as hf_logging

from featurepath.cli import main
from featurepath.sae import load_sae
from featurepath.sae.check import (
    LayerCheck,
    check_saes,
    format_check,
    l0_off,
    warn_if_l0_off,
)

hf_logging.disable_progress_bar()

LAYER, TARGET, SCALE, DEC_NORM = 1, 10, 4.0, 3.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model_dir, sae_dir, model, tok, texts) with a Llama Scope SAE at block LAYER."""
    from featurepath.cli.sae import quality_texts
    from featurepath.models import load_model
    from featurepath.sae.collect import collect_activations
    from featurepath.testing import save_tiny_llama

    root = tmp_path_factory.mktemp("check")
    model_dir = save_tiny_llama(root / "model")
    model, tok = load_model(model_dir, device="cpu")
    texts = quality_texts(tok, 8)
    acts = collect_activations(model, tok, texts, [LAYER], progress=False)[LAYER]
    d = acts.shape[1]
    d_sae = 4 * d
    g = torch.Generator().manual_seed(0)
    enc = torch.randn(d_sae, d, generator=g) / math.sqrt(d)
    b_enc = torch.zeros(d_sae)
    dec = torch.randn(d, d_sae, generator=g)
    dec = dec / dec.norm(dim=0, keepdim=True) * DEC_NORM  # every stored decoder column has norm 3
    # The normalised input is x * SCALE; pick the threshold that leaves TARGET features per
    # token when compared with that pre-activation as stored.
    pre = (acts * SCALE) @ enc.T + b_enc
    theta = float(pre.flatten().sort(descending=True).values[TARGET * acts.shape[0]])
    sae_dir = root / "ls"
    (sae_dir / "checkpoints").mkdir(parents=True)
    save_file({"encoder.weight": enc, "encoder.bias": b_enc, "decoder.weight": dec,
               "decoder.bias": torch.zeros(d)}, str(sae_dir / "checkpoints" / "final.safetensors"))
    (sae_dir / "hyperparams.json").write_text(json.dumps({
        "d_model": d, "d_sae": d_sae, "jump_relu_threshold": theta, "top_k": TARGET,
        "dataset_average_activation_norm": {"in": math.sqrt(d) / SCALE},
        "norm_activation": "dataset-wise", "sparsity_include_decoder_norm": True,
        "hook_point_in": f"blocks.{LAYER}.hook_resid_post",
        "hook_point_out": f"blocks.{LAYER}.hook_resid_post"}))
    return model_dir, sae_dir, model, tok, texts


def test_l0_off_rule() -> None:
    assert not l0_off(50, 50) and not l0_off(99, 50) and not l0_off(26, 50)
    assert l0_off(101, 50) and l0_off(24, 50)
    assert not l0_off(1000, None)


def test_wrong_threshold_reading_is_reported_with_the_fix(setup) -> None:
    _, sae_dir, model, tok, texts = setup
    sae = load_sae(sae_dir)
    (row,) = check_saes(model, tok, {LAYER: sae}, texts, loss=False)
    assert row.target_l0 == TARGET and row.off
    assert row.l0 < TARGET / 2  # threshold x 4 keeps far fewer features
    assert row.suggestion == "--llamascope-threshold stored"
    assert abs(row.alternatives[row.suggestion] - TARGET) < 1.0
    # the decoder-norm gate divides the threshold by the stored norm (3): many more features
    assert row.alternatives["--llamascope-threshold stored --llamascope-decoder-norm"] > 2 * TARGET
    msg = row.message()
    assert msg and "--llamascope-threshold stored" in msg and f"L{LAYER}" in msg

    good = load_sae(sae_dir, llamascope_threshold="stored")
    (row2,) = check_saes(model, tok, {LAYER: good}, texts, loss=True)
    assert not row2.off and abs(row2.l0 - TARGET) < 1.0 and row2.message() is None
    assert row2.loss_increase is not None and math.isfinite(row2.loss_increase)


def test_decoder_norm_reading_by_hand(setup) -> None:
    """``--llamascope-decoder-norm``: a feature fires when pre x ||W_dec,i|| > threshold."""
    _, sae_dir, _, _, _ = setup
    hp = json.loads((sae_dir / "hyperparams.json").read_text())
    a = load_sae(sae_dir, llamascope_threshold="stored", llamascope_decoder_norm=True)
    torch.testing.assert_close(a.threshold.data,
                               torch.full((hp["d_sae"],), hp["jump_relu_threshold"] / DEC_NORM))
    b = load_sae(sae_dir, llamascope_decoder_norm=True)
    torch.testing.assert_close(b.threshold.data, torch.full(
        (hp["d_sae"],), hp["jump_relu_threshold"] * SCALE / DEC_NORM))


def test_cli_prints_table_and_warning(setup, capsys) -> None:
    model_dir, sae_dir, *_ = setup
    assert main(["sae", "check", model_dir, str(sae_dir), "--n-texts", "8", "--no-loss",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["layer", "L0", "target", "FVU"]
    assert out[1].split()[0] == str(LAYER) and out[1].endswith("L0 OFF")
    assert any(line.startswith("warning: ") and "--llamascope-threshold stored" in line
               for line in out)
    assert main(["sae", "check", model_dir, str(sae_dir), "--n-texts", "8", "--no-loss",
                 "--device", "cpu", "--llamascope-threshold", "stored", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["off"] is False and row["target_l0"] == TARGET


def test_first_batch_warning_fires_once(setup) -> None:
    _, sae_dir, model, tok, texts = setup
    sae = load_sae(sae_dir)
    lines: list[str] = []
    assert len(warn_if_l0_off(model, tok, {LAYER: sae}, texts[:4], echo=lines.append)) == 1
    assert lines[0].startswith("warning: ") and "--llamascope-threshold stored" in lines[0]
    assert warn_if_l0_off(model, tok, {LAYER: sae}, texts[:4], echo=lines.append) == []
    assert len(lines) == 1


def test_format_check_without_target() -> None:
    lines = format_check([LayerCheck(3, 12.0, None, 0.2, 0.1, 100, 0.05)])
    assert lines[1].split()[:3] == ["3", "12.0", "-"] and lines[1].endswith("no target")
    assert len(lines) == 2


def test_run_config_applies_llamascope_reading(setup) -> None:
    """``llamascope.threshold: stored`` in a run's config reaches the loaded SAEs, and enters the
    patch plan digest only when set (older plans keep resuming)."""
    from featurepath.config import RunConfig
    from featurepath.pipeline.patch import _relevant
    from featurepath.pipeline.runtime import load_runtime

    model_dir, sae_dir, *_ = setup
    theta = json.loads((sae_dir / "hyperparams.json").read_text())["jump_relu_threshold"]
    cfg = RunConfig(model=model_dir, saes=str(sae_dir), device="cpu",
                    llamascope={"threshold": "stored"})
    _, _, saes = load_runtime(cfg, progress=False)
    torch.testing.assert_close(saes[LAYER].threshold.data,
                               torch.full_like(saes[LAYER].threshold.data, theta))
    assert "llamascope" in _relevant(cfg) and "llamascope" not in _relevant(RunConfig())
