"""A model outside the LLaMA family through the installed command, stage by stage: a tiny
random OPT (``model.decoder.layers``) with random SAEs on disk runs play -> discover -> patch ->
causal -> pathways -> report, each stage reading what the previous one wrote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from featurepath.testing import installed_cli

# the tiny random model answers at random: constrained answers at temperature 3 give both
# bankrupt and stopped games (discover needs both) in 64 games; 16 tokens spell a bet
CONFIG = {
    "play": {"conditions": ["BASE", "GMHWP"], "bet_types": ["variable"],
             "games_per_condition": 32, "max_rounds": 10, "batch_size": 64,
             "sampling": {"answer": "constrained", "temperature": 3.0, "max_new_tokens": 16}},
    "discover": {"alpha": 0.5, "min_d": 0.0},
    "patch": {"trials": 3, "batch_size": 32, "prompt_set": "play",
              "sampling": {"max_new_tokens": 4, "temperature": 1.0}},
}


@pytest.mark.slow
def test_tiny_opt_runs_every_stage_through_the_installed_cli(tmp_path: Path) -> None:
    from test_layouts import _build

    from featurepath.sae.formats import save_sae
    from featurepath.testing import tiny_saes

    model, tok, path = _build("opt")
    assert path == "model.decoder.layers"
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    for layer, sae in tiny_saes(model, d_sae=32).items():
        save_sae(sae, tmp_path / "saes" / f"L{layer}")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "FEATUREPATH_HOME":
           str(tmp_path / "home")}
    stages = [
        ["play", str(run), "-c", str(tmp_path / "cfg.yaml"), "--model", str(tmp_path / "model"),
         "-q"],
        ["discover", str(run), "--model", str(tmp_path / "model"), "--saes",
         str(tmp_path / "saes"), "--no-progress"],
        ["patch", str(run), "--features", "L0-3,L1-5", "--no-progress"],
        ["causal", str(run)],
        ["pathways", str(run)],
        ["report", str(run)],
    ]
    for args in stages:
        r = subprocess.run([*installed_cli(), *args], capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode == 0, (args[0], r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
    ends = pd.read_parquet(run / "play" / "decisions.parquet").groupby("game_id")[
        "end_reason"].first()
    assert {"bankrupt", "stop"} <= set(ends)
    trials = pd.read_parquet(run / "trials.parquet")
    assert set(trials["feature"]) >= {"L0-3", "L1-5"}
    assert (run / "causal_tests.parquet").exists() and (run / "pathways").is_dir()
    assert (run / "report.html").stat().st_size > 10_000
