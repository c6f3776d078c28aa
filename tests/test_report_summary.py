"""The report's one-screen summary counts the exploratory causal tests honestly: a feature test
without a null band that passed the baseline is not said to have passed a band, and a
behavioural direction (judged against the baseline, its band beside it) is counted apart — in
its own line when it was transferred from another run."""

from __future__ import annotations

import json

import pandas as pd

from featurepath.report.confirm import summary_section
from featurepath.report.data import RunData
from featurepath.rundir import RunDir


def _tests() -> pd.DataFrame:
    return pd.DataFrame({
        "feature": ["L1-3"] * 5 + ["L1~direction"] * 2, "metric": ["p_stop"] * 7,
        "arm": ["feature"] * 5 + ["direction"] * 2,
        "significant": [True, False, True, True, False, True, True],
        "vs_baseline": [True, True, True, True, False, True, True],
        "beats_null": [True, False, False, False, False, False, False],
        "null_n": [8, 8, 0, 0, 0, 8, 0]})


def test_summary_splits_banded_from_unbanded_feature_tests(tmp_path) -> None:
    _tests().to_parquet(RunDir(tmp_path).causal_tests)
    html = summary_section(RunData.load(tmp_path))
    assert ("of 5 feature tests, 1 of 2 with a null band passed the baseline and the band; 2 "
            "of 3 without one passed the baseline only") in html
    assert "No confirmation yet" in html and "Behavioural direction" not in html


def test_a_transferred_direction_gets_its_own_line(tmp_path) -> None:
    rd = RunDir(tmp_path)
    _tests().to_parquet(rd.causal_tests)
    rd.patch.mkdir()
    rd.direction_source.write_text(json.dumps({"task": "slot_machine", "run": "/x/slot",
                                               "seed": 0}))
    html = summary_section(RunData.load(tmp_path))
    assert ("Behavioural direction transferred from the slot_machine run /x/slot (seed 0): 2 "
            "of 2 tests moved behaviour against the baseline; 0 of 1 with a null band beat "
            "it") in html
