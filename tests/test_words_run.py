"""Word analysis of a run store: patched conditions against their context's baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featurepath.analysis.words_run import run_words
from featurepath.cli import main
from featurepath.config import RunConfig
from featurepath.rundir import TRIAL_COLUMNS


def _trials(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    filler = ["choose", "the", "game", "round", "balance", "next"]
    rows = []
    for cond, feature in (("risky_baseline", ""), ("risky_with_risky_patch", "L8-5")):
        for t in range(n):
            words = list(rng.choice(filler, 6))
            if feature:  # the patch adds "jackpot" and removes "stop"
                words += ["jackpot", "jackpot"]
            else:
                words += ["stop"]
            rows.append(dict(unit=0, row=len(rows), feature=feature, layer=8 if feature else -1,
                             feature_id=5 if feature else -1, condition=cond, context="risky",
                             patch="risky" if feature else "none", value=np.nan, scale=np.nan,
                             method="delta", trial=t, seed=t, prompt_id=f"p{t}",
                             response=" ".join(words), action="bet", bet=10.0, valid=True,
                             p_stop=0.5, n_new_tokens=8))
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def test_run_store_words_find_planted_words(tmp_path):
    _trials().to_parquet(tmp_path / "trials.parquet")
    res = run_words(tmp_path, RunConfig())
    t = res.table
    sig = t[t["significant"]]
    assert set(sig[sig["direction"] == "adds"]["word"]) == {"jackpot"}
    assert set(sig[sig["direction"] == "removes"]["word"]) == {"stop"}
    assert "L8-5" in res.summary and "1 of 1 comparisons" in res.summary
    assert (tmp_path / "words.parquet").exists() and (tmp_path / "words_summary.md").exists()


def test_words_cli_on_a_run_and_errors(tmp_path, capsys):
    _trials().to_parquet(tmp_path / "trials.parquet")
    assert main(["words", str(tmp_path)]) == 0
    assert "jackpot" in capsys.readouterr().out
    assert main(["words"]) == 2
    assert "RUN_DIR or --jsonl" in capsys.readouterr().err
    assert main(["words", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["words", str(tmp_path / "empty")]) == 2
    assert "featurepath patch" in capsys.readouterr().err


def test_words_baseline_is_what_patches_nothing_whatever_its_name(tmp_path):
    df = _trials()
    df.loc[df["patch"] == "none", "condition"] = "control"  # not named *_baseline
    df.to_parquet(tmp_path / "trials.parquet")
    sig = run_words(tmp_path, RunConfig()).table
    assert set(sig[sig["significant"] & (sig["direction"] == "adds")]["word"]) == {"jackpot"}


@pytest.mark.parametrize("bad", ["{not json", '{"layer": "x"}'])
def test_words_jsonl_bad_file_is_one_line(tmp_path, capsys, bad):
    p = tmp_path / "log.jsonl"
    p.write_text(bad + "\n")
    assert main(["words", "--jsonl", str(p), "--out", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
