"""``featurepath sae train|info|list`` on the tiny model and hand-written SAE directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sae_formats import D_MODEL, write_llamascope, write_saelens
from transformers.utils import logging as hf_logging

from featurepath.cli import main
from featurepath.sae import load_sae
from featurepath.sae.registry import list_saes, load_sae_set
from featurepath.testing import save_tiny_llama

hf_logging.disable_progress_bar()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


def test_list_json_and_set_loading(tmp_path: Path, capsys) -> None:
    write_llamascope(tmp_path / "set" / "a", layer=3)
    write_saelens(tmp_path / "set" / "b", "topk", layer=1)
    (tmp_path / "set" / "notes").mkdir()  # not an SAE: skipped
    assert main(["sae", "list", "--model", str(tmp_path / "set"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["layer"], r["format"], r["d_sae"]) for r in rows] == [
        (1, "saelens", 40), (3, "llamascope", 40)]
    saes = load_sae_set(str(tmp_path / "set"))
    assert sorted(saes) == [1, 3]
    listed = load_sae_set(f"{tmp_path / 'set' / 'a'},{tmp_path / 'set' / 'b'}")
    assert sorted(listed) == [1, 3]


def test_set_duplicate_layer_is_an_error(tmp_path: Path, capsys) -> None:
    write_llamascope(tmp_path / "a", layer=2)
    write_saelens(tmp_path / "b", "relu", layer=2)
    from featurepath.errors import SAEFormatError

    with pytest.raises(SAEFormatError, match="two SAEs for layer 2"):
        load_sae_set(f"{tmp_path / 'a'},{tmp_path / 'b'}")


def test_embedded_untrained_without_model(tmp_path: Path, monkeypatch) -> None:
    from featurepath.errors import SAEFormatError

    monkeypatch.setenv("FEATUREPATH_HOME", str(tmp_path))
    with pytest.raises(SAEFormatError, match="sae train --preset quick"):
        load_sae_set("embedded")
    assert list_saes("embedded") == []


def test_info_json(tmp_path: Path, capsys) -> None:
    write_llamascope(tmp_path / "ls")
    assert main(["sae", "info", str(tmp_path / "ls"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "llamascope" and info["d_model"] == D_MODEL
    assert info["activation"] == "jumprelu" and info["layer"] == 3


def test_train_info_list_on_tiny_model(tiny_dir: str, tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"Round {i}: Bet ${i % 9 + 1}0, Loss, Balance ${200 - i}"
                                for i in range(30)))
    out = tmp_path / "saes"
    rc = main(["sae", "train", "--model", tiny_dir, "--layers", "1,2", "--corpus", str(corpus),
               "--out", str(out), "--expansion", "2", "--k", "8", "--epochs", "2",
               "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "done in" in captured.out
    sae = load_sae(out / "L1")
    assert sae.d_sae == 128 and sae.k == 8 and sae.meta["n_tokens"] > 0

    assert main(["sae", "info", str(out / "L2"), "--model", tiny_dir, "--device", "cpu",
                 "--n-texts", "6", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"fvu", "l0", "dead_fraction", "loss_increase"} <= set(info["quality"])
    assert info["stored_quality"]["fvu"] >= 0

    assert main(["sae", "list", "--model", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["layer"] for r in rows] == [1, 2] and rows[0]["format"] == "featurepath"

    # rerun: nothing to train
    assert main(["sae", "train", "--model", tiny_dir, "--layers", "1", "--corpus", str(corpus),
                 "--out", str(out), "--device", "cpu"]) == 0
    assert "already trained" in capsys.readouterr().out


def test_train_bad_layers(tiny_dir: str, tmp_path: Path, capsys) -> None:
    rc = main(["sae", "train", "--model", tiny_dir, "--layers", "1,x", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: --layers") and len(err.splitlines()) == 1
    rc = main(["sae", "train", "--model", tiny_dir, "--layers", "9", "--out", str(tmp_path),
               "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: --layers [9] out of range")


def test_help_texts(capsys) -> None:
    for args in (["sae", "--help"], ["sae", "train", "--help"], ["sae", "info", "--help"],
                 ["sae", "list", "--help"]):
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "TopK" in out and "--preset" in out and "--json" in out


def test_installed_sae_list_shows_what_training_wrote(tiny_dir: str, tmp_path: Path,
                                                     monkeypatch) -> None:
    """Train a tiny set into the embedded preset's cache folder of a temporary
    ``FEATUREPATH_HOME`` (the folder ``sae train`` writes) and list it with the installed
    ``featurepath sae list``, as a user would after ``make demo``."""
    import os
    import re
    import subprocess

    from featurepath.models import load_model
    from featurepath.sae.registry import embedded_set_dir
    from featurepath.sae.train import TrainConfig, train_saes
    from featurepath.testing import installed_cli

    monkeypatch.setenv("FEATUREPATH_HOME", str(tmp_path / "home"))
    root = embedded_set_dir("quick")
    assert root.is_relative_to(tmp_path / "home") and root.name == "quick-v2"
    model, tok = load_model(tiny_dir, device="cpu")
    texts = [f"Round {i}: Bet ${i % 9 + 1}0, Loss, Balance ${200 - i}" for i in range(20)]
    train_saes(model, tok, texts, [1, 2], TrainConfig(expansion=2, k=8, steps=5, batch_size=64),
               root, loss_texts=0, progress=False)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([*installed_cli(), "sae", "list"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2, r.stdout
    for layer, line in zip((1, 2), lines, strict=True):
        path = re.escape(str(root / f"L{layer}"))
        assert re.fullmatch(rf"\[quick\] L{layer}: featurepath topk d_sae=128 k=8"
                            rf"( FVU [0-9.]+)?  {path}", line), line
    r = subprocess.run([*installed_cli(), "sae", "list", "--json"], capture_output=True,
                       text=True, env=env, timeout=120)
    rows = json.loads(r.stdout)
    assert [(x["preset"], x["layer"], x["d_sae"], x["k"]) for x in rows] == [
        ("quick", 1, 128, 8), ("quick", 2, 128, 8)]
