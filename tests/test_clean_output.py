"""What ``play`` and ``patch`` print is featurepath's own: their result lines, ``warning: ...``
lines and progress bars — no line from a library (transformers' ``past_key_values ... are
deprecated`` once came with every run). Run through the installed command, as a user runs it.
Also: every stage that loads SAEs takes the same ``--model`` / ``--saes`` options."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from featurepath.cli import main
from featurepath.testing import installed_cli, write_tiny_inputs

# one tqdm bar as it is redrawn: "desc: 50%|#####     | 1/2 [00:02<00:02, 2.41s/game, x=0]"
BAR = re.compile(r"[^|\[\]]*\d+%\|[^|]*\| *\d+/\d+ \[[^\[\]]*\]")


def _foreign(text: str, own: list[re.Pattern]) -> list[str]:
    """Segments of ``text`` (split at newlines and the carriage returns bars redraw with) that
    are neither a whole progress bar nor a line matching one of ``own``. A library line that
    lands behind a bar on the same line makes that segment foreign too."""
    out = []
    for seg in re.split(r"[\r\n]", text):
        seg = seg.strip()
        if not seg or BAR.fullmatch(seg) or any(p.fullmatch(seg) for p in own):
            continue
        out.append(seg)
    return out


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_inputs(root)
    return root


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": ""}
    return subprocess.run([*installed_cli(), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_play_and_patch_print_only_their_own_lines(tiny_dirs: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = str(tiny_dirs / "model")
    r = _run(["play", str(run), "--model", model, "--games", "2", "--conditions", "BASE",
              "--bet-types", "variable", "--max-rounds", "3", "--device", "cpu"])
    assert r.returncode == 0, r.stderr
    own_play = [re.compile(r"condition +bet_type .*"), re.compile(r"BASE +variable .*"),
                re.compile(r"\d+ games, \d+ decision points -> .*")]
    assert _foreign(r.stdout, own_play) == [], r.stdout
    warning = [re.compile(r"warning: .*")]
    assert _foreign(r.stderr, warning) == [], r.stderr

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"patch": {"sampling": {"max_new_tokens": 4}}}))
    r = _run(["patch", str(run), "--config", str(cfg), "--model", model, "--saes",
              str(tiny_dirs / "saes"), "--features", "L1-3,L2-5", "--trials", "2",
              "--batch-size", "8"])
    assert r.returncode == 0, r.stderr
    own_patch = [re.compile(r"2 features x 6 conditions -> .*"),
                 re.compile(r"\d+ trials in [0-9.]+s .* MB stored")]
    assert _foreign(r.stdout, own_patch) == [], r.stdout
    assert _foreign(r.stderr, warning) == [], r.stderr


def test_the_check_sees_a_library_line_behind_a_bar() -> None:
    bar = "play:  50%|#####     | 1/2 [00:02<00:02,  2.41s/game, bankrupt=0]"
    assert _foreign(f"\r{bar}\r{bar}\n", []) == []
    line = "[transformers] `past_key_values`/`cache_params` are deprecated. Use `cache` instead."
    assert _foreign(f"\r{bar}{line}\n", []) == [bar + line]
    assert _foreign(f"{line}\nwarning: x\n", [re.compile("warning: .*")]) == [line]


@pytest.mark.parametrize("command", ["discover", "screen", "patch", "estimate"])
def test_stages_that_load_saes_take_the_same_model_and_saes_options(command, capsys) -> None:
    assert main([command, "--help"]) == 0
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "--model" in text and "--saes" in text
    assert "(config: model)" in text and "(config: saes)" in text


def test_discover_takes_saes_from_the_command_line(tiny_dirs: Path, tmp_path: Path,
                                                   capsys) -> None:
    """``discover --saes DIR`` loads the SAEs it names (the advice "pass --saes DIR" holds for
    discover too): a missing directory is named in discover's one error line."""
    missing = tmp_path / "no-saes"
    rc = main(["discover", str(tmp_path / "run"), "--model", str(tiny_dirs / "model"), "--saes",
               str(missing), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == f"error: SAE path {missing} does not exist", err
