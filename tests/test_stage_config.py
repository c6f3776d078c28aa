"""Every analysis command takes its thresholds from RUN/config.yaml, and a flag overrides them.

A user who sets ``analysis.alpha: 0.2`` in the run's config must see the commands use it (more
findings than at 0.05); ``--alpha`` on the command line wins over the file; and the config that
made the outputs is written back after the stage succeeded.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from featurepath.cli import main
from featurepath.config import RunConfig, load_config, save_config


def _with_alpha(run: Path, alpha: float) -> None:
    cfg = RunConfig()
    cfg.analysis.alpha = alpha
    save_config(cfg, run / "config.yaml")


def _n_sig(run: Path, alpha: float) -> int:
    tests = pd.read_parquet(run / "causal_tests.parquet")
    return int((tests["q"] <= alpha).sum())


def test_causal_reads_alpha_from_config_and_flag_overrides(tmp_path: Path, capsys) -> None:
    from test_causal import make_trials

    make_trials().to_parquet(tmp_path / "trials.parquet")
    _with_alpha(tmp_path, 0.2)
    assert main(["causal", str(tmp_path), "--n-boot", "0"]) == 0
    out = capsys.readouterr().out
    assert "at q<=0.2" in out
    assert load_config(tmp_path / "config.yaml").analysis.alpha == 0.2
    assert main(["causal", str(tmp_path), "--n-boot", "0", "--alpha", "0.01"]) == 0
    assert "at q<=0.01" in capsys.readouterr().out
    assert load_config(tmp_path / "config.yaml").analysis.alpha == 0.01


def test_pathways_reads_min_d_from_config_and_flag_overrides(tmp_path: Path) -> None:
    from test_pathways import write_run

    def n_edges(run: Path) -> int:
        return int(pd.read_parquet(run / "pathways" / "edges.parquet")["edge"].sum())

    write_run(tmp_path)
    cfg = RunConfig()
    cfg.analysis.min_d = 1e6  # no shift is that large
    save_config(cfg, tmp_path / "config.yaml")
    assert main(["pathways", str(tmp_path), "--signal", "decision"]) == 0
    assert n_edges(tmp_path) == 0
    assert main(["pathways", str(tmp_path), "--signal", "decision", "--min-d", "0.5"]) == 0
    assert n_edges(tmp_path) > 0


def test_report_marks_significance_at_the_config_alpha(tmp_path: Path) -> None:
    from featurepath.report.data import RunData

    _with_alpha(tmp_path, 0.2)
    assert RunData.load(tmp_path).alpha == 0.2
    (tmp_path / "config.yaml").write_text("analysis: [broken")
    assert RunData.load(tmp_path).alpha == 0.05  # a broken config still renders
