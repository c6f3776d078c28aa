"""The demo's run.json sums its stage timings over invocations: a resumed demo skips finished
stages in a fraction of a second, and overwriting would report the resume, not the work."""

from __future__ import annotations

import json

from featurepath.pipeline.demo import _accumulated
from featurepath.rundir import RunDir


def test_timings_add_up_over_a_resume(tmp_path) -> None:
    rd = RunDir(tmp_path)
    first = _accumulated(rd, {"play": 4.8, "patch + cache": 356.7}, 400.0)
    assert first == {"timings_s": {"play": 4.8, "patch + cache": 356.7}, "total_s": 400.0,
                     "invocations": 1}
    rd.run_json.write_text(json.dumps(first))
    again = _accumulated(rd, {"play": 0.0, "patch + cache": 0.3, "report": 9.2}, 19.0)
    assert again == {"timings_s": {"play": 4.8, "patch + cache": 357.0, "report": 9.2},
                     "total_s": 419.0, "invocations": 2}
    rd.run_json.write_text("{not json")  # a broken record starts over rather than failing
    assert _accumulated(rd, {"play": 1.0}, 1.0)["invocations"] == 1
