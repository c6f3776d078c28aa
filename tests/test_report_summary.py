"""The report's one-screen summary counts the exploratory causal tests honestly: a test without
a null band that passed the baseline is not said to have passed a band."""

from __future__ import annotations

import pandas as pd

from featurepath.report.confirm import summary_section
from featurepath.report.data import RunData
from featurepath.rundir import RunDir


def test_summary_splits_banded_from_unbanded_tests(tmp_path) -> None:
    tests = pd.DataFrame({"feature": ["L1-3"] * 5, "metric": ["p_stop"] * 5,
                          "significant": [True, False, True, True, False],
                          "null_n": [8, 8, 0, 0, 0]})
    tests.to_parquet(RunDir(tmp_path).causal_tests)
    html = summary_section(RunData.load(tmp_path))
    assert ("of 5 causal tests, 1 of 2 with a null band passed the baseline and the band; 2 of 3 "
            "without one passed the baseline only") in html
    assert "No confirmation yet" in html
