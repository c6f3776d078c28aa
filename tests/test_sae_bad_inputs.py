"""Bad SAE files give one ``error: ...`` line and exit code 2, never a traceback: wrong types in
sae.json / hyperparams.json / cfg.json, impossible TopK k, and Llama Scope files that SAELens
would refuse (missing norm or threshold) or that neither reads correctly (token-wise norm,
transcoders). Each case runs in-process through the CLI's ``main``; a sample also runs through
the installed ``featurepath`` executable in a real subprocess (all of them with ``-m slow``)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from test_sae_formats import write_llamascope, write_saelens

from featurepath.cli import main
from featurepath.sae import load_sae, save_sae


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


_DROP = object()


def fp(**changes) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        write_saelens(root / "src", "topk", k=4)
        save_sae(load_sae(root / "src"), root / "fp")
        _edit_json(root / "fp" / "sae.json", **changes)
        return root / "fp"
    return make


def ls(**changes) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        write_llamascope(root / "ls")
        _edit_json(root / "ls" / "hyperparams.json", **changes)
        return root / "ls"
    return make


def sl(arch: str = "topk", **changes) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        write_saelens(root / "sl", arch, k=4)
        _edit_json(root / "sl" / "cfg.json", **changes)
        return root / "sl"
    return make


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "fp-layer-string": (fp(layer="3"), "layer must be an integer"),
    "fp-layer-list": (fp(layer=[3]), "layer must be an integer"),
    "fp-layer-huge": (fp(layer=10**30), "layer must be between"),
    "fp-layer-negative": (fp(layer=-1), "layer must be between"),
    "fp-k-string": (fp(k="4"), "k must be an integer"),
    "fp-k-list": (fp(k=[4]), "k must be an integer"),
    "fp-k-huge": (fp(k=10**30), "k must be between"),
    "fp-k-zero": (fp(k=0), "k must be between"),
    "fp-k-negative": (fp(k=-3), "k must be between"),
    "fp-k-above-d-sae": (fp(k=41), "k must be between 1 and 40"),
    "fp-meta-string": (fp(meta="x"), "meta must be a JSON object"),
    "fp-meta-list": (fp(meta=[1, 2]), "meta must be a JSON object"),
    "fp-activation-unknown": (fp(activation="gelu"), "activation must be one of"),
    "fp-d-sae-string": (fp(d_sae="40"), "d_sae must be an integer"),
    "ls-norm-string": (ls(dataset_average_activation_norm={"in": "7.0"}),
                       "dataset_average_activation_norm.in must be a number"),
    "ls-norm-not-object": (ls(dataset_average_activation_norm="7.0"),
                           "dataset_average_activation_norm must be a JSON object"),
    "ls-norm-missing": (ls(dataset_average_activation_norm=_DROP),
                        "dataset_average_activation_norm is missing"),
    "ls-norm-zero": (ls(dataset_average_activation_norm={"in": 0}), "finite positive"),
    "ls-threshold-string": (ls(jump_relu_threshold="0.3"), "jump_relu_threshold must be a number"),
    "ls-threshold-missing": (ls(jump_relu_threshold=_DROP), "jump_relu_threshold is missing"),
    "ls-token-wise": (ls(norm_activation="token-wise"), "norm_activation 'token-wise'"),
    "ls-transcoder": (ls(hook_point_out="blocks.3.hook_mlp_out"), "transcoders are not"),
    "ls-mlp-hook": (ls(hook_point_in="blocks.3.hook_mlp_out",
                       hook_point_out="blocks.3.hook_mlp_out"), "not a residual-stream hook"),
    "ls-d-model-string": (ls(d_model="16"), "d_model must be an integer"),
    "sl-hook-layer-string": (sl(hook_layer="2"), "hook_layer must be an integer"),
    "sl-k-string": (sl(activation_fn_kwargs={"k": "4"}), "k must be an integer"),
    "sl-k-zero": (sl(activation_fn_kwargs={"k": 0}), "k must be between"),
    "sl-k-negative": (sl(activation_fn_kwargs={"k": -2}), "k must be between"),
    "sl-k-above-d-sae": (sl(activation_fn_kwargs={"k": 41}), "k must be between 1 and 40"),
    "sl-d-in-string": (sl(d_in="16"), "d_in must be an integer"),
    "sl-dtype-unknown": (sl(dtype="int8"), "unsupported dtype"),
    "sl-metadata-list": (sl(metadata=[1], sae_lens_version="6.1.0"),
                         "metadata must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_line_error_in_process(tmp_path: Path, capsys, case: str) -> None:
    make, expected = CASES[case]
    path = make(tmp_path)
    capsys.readouterr()
    rc = main(["sae", "info", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err, err


def _run_cli(path: Path) -> subprocess.CompletedProcess:
    from featurepath.testing import installed_cli

    return subprocess.run([*installed_cli(), "sae", "info", str(path)], capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, timeout=300)


def _check_subprocess(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    r = _run_cli(make(tmp_path))
    err = r.stderr.strip()
    assert r.returncode == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize("case", ["fp-layer-string", "ls-norm-string", "sl-k-string"])
def test_one_line_error_installed_cli(tmp_path: Path, case: str) -> None:
    _check_subprocess(tmp_path, case)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_one_line_error_installed_cli_all(tmp_path: Path, case: str) -> None:
    _check_subprocess(tmp_path, case)
