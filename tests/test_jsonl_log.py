"""Tests of the exp2 JSONL importer, its dose-response analysis and the words entry point."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurepath.errors import DataError
from featurepath.importers import exp2_jsonl as J

# shared/ sits beside the repository (in a session and in CI alike)
DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "exp2_patched_responses_dev.jsonl"


def _trial(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"layer": 30, "feature_id": 1, "prompt_type": "risky", "scale": 1.0,
                               "trial_index": 0, "response": "2\n", "decision": "stop", "bet": 0,
                               "source": "stop", "valid": True}
    base.update(kw)
    return base


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_malformed_lines_reported_with_line_numbers(tmp_path: Path) -> None:
    good = json.dumps(_trial())
    no_resp = _trial()
    del no_resp["response"]
    lines = [
        good,                                              # 1
        "{not json",                                       # 2
        json.dumps(no_resp),                               # 3
        json.dumps(_trial(layer=True)),                    # 4 bool is not an int
        json.dumps(_trial(scale="2.0")),                   # 5
        "",                                                # 6 blank: ignored, not reported
        json.dumps(_trial(prompt_type="medium")),          # 7
        json.dumps([1, 2, 3]),                             # 8
        json.dumps(_trial(response=None)),                 # 9
        json.dumps(_trial(trial_index=1, layer=30.0)),     # 10 integral float is fine
    ]
    df, report = J.read_exp2_jsonl(_write(tmp_path / "log.jsonl", lines))
    assert [n for n, _ in report.skipped] == [2, 3, 4, 5, 7, 8, 9]
    reasons = dict(report.skipped)
    assert "bad JSON" in reasons[2]
    assert "response" in reasons[3]
    assert "'layer'" in reasons[4]
    assert "'scale'" in reasons[5]
    assert "medium" in reasons[7]
    assert "not a JSON object" in reasons[8]
    assert report.n_rows == 2 and report.n_lines == 9
    assert df["line"].tolist() == [1, 10]
    text = report.text()
    assert "skipped line 2: bad JSON" in text
    assert "2 trials read, 7 of 9 non-blank lines skipped" in text.splitlines()[-1]


def test_non_utf8_line_skipped(tmp_path: Path) -> None:
    p = tmp_path / "log.jsonl"
    p.write_bytes(json.dumps(_trial()).encode() + b"\n" + b'{"layer": "\xff"}\n')
    _, report = J.read_exp2_jsonl(p)
    assert report.skipped == [(2, "not valid UTF-8")]


@pytest.mark.parametrize("content", ["", "\n\n", "{bad\n[]\n"])
def test_file_without_usable_lines_raises(tmp_path: Path, content: str) -> None:
    p = tmp_path / "log.jsonl"
    p.write_text(content)
    with pytest.raises(DataError, match="no usable trial"):
        J.read_exp2_jsonl(p)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        J.read_exp2_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError):
        J.run_words_jsonl(tmp_path / "nope.jsonl", tmp_path / "out")


def test_reparse_uses_strict_parser_and_keeps_original(tmp_path: Path) -> None:
    lines = [
        json.dumps(_trial(response="2\n", trial_index=0)),
        # the original parse called this a stop because of the invented menu
        json.dumps(_trial(response="1\nAmount: $10\nYou won!\nChoose: 1) Continue 2) Stop",
                          trial_index=1)),
        json.dumps(_trial(prompt_type="safe", response="1\nYou lost. Stop?", trial_index=2)),
        json.dumps(_trial(response="1\nAmount: $50\n", trial_index=3)),  # above the $20 balance
    ]
    df, _ = J.read_exp2_jsonl(_write(tmp_path / "log.jsonl", lines))
    assert df["orig_decision"].tolist() == ["stop"] * 4
    assert df["action"].tolist() == ["stop", "bet", "bet", "bet"]
    assert df["bet"].iloc[1] == 10 and df["valid"].iloc[1]
    assert df["bet"].iloc[2] == 10 and df["bet_type"].iloc[2] == "fixed"
    assert df["bet"].iloc[3] == 50 and not df["valid"].iloc[3]
    assert df["balance"].tolist() == [20.0, 20.0, 140.0, 20.0]
    assert df["stop"].tolist() == [True, False, False, False]
    assert df["condition"].iloc[0] == "baseline"
    assert {"orig_bet", "orig_valid", "orig_source", "parse_reason"} <= set(df.columns)


def _dose_frame() -> pd.DataFrame:
    """Risky stop rate rises with scale (0.1 steps); safe always bets the fixed $10."""
    rows = []
    for s_i, scale in enumerate([0.5, 1.0, 1.5, 2.0]):
        for t in range(10):
            stop = t < s_i + 1
            rows.append({"layer": 30, "feature_id": 1, "context": "risky", "scale": scale,
                         "action": "stop" if stop else "bet", "bet": np.nan if stop else 5.0 + t,
                         "valid": True, "orig_decision": "stop"})
            rows.append({"layer": 30, "feature_id": 1, "context": "safe", "scale": scale,
                         "action": "bet", "bet": 10.0, "valid": True, "orig_decision": "bet"})
    rows.append({"layer": 30, "feature_id": 1, "context": "safe", "scale": 2.0, "action": None,
                 "bet": np.nan, "valid": False, "orig_decision": "stop"})
    return pd.DataFrame(rows)


def test_rates_and_dose_response() -> None:
    df = _dose_frame()
    rates = J.rates_by_scale(df)
    risky = rates[rates["context"] == "risky"]
    np.testing.assert_allclose(risky["stop_rate"], [0.1, 0.2, 0.3, 0.4])
    safe2 = rates[(rates["context"] == "safe") & (rates["scale"] == 2.0)].iloc[0]
    assert safe2["n"] == 11 and safe2["n_no_decision"] == 1 and safe2["stop_rate"] == 0.0
    dose = J.scale_trend_by_log(df).set_index("context")
    assert dose.loc["risky", "rho_stop"] == pytest.approx(1.0)
    assert dose.loc["risky", "rho_bet"] == pytest.approx(1.0)  # the low bets turn into stops
    assert bool(dose.loc["safe", "degenerate_bet"]) and math.isnan(dose.loc["safe", "p_bet"])
    assert bool(dose.loc["safe", "degenerate_stop"])
    assert math.isnan(dose.loc["safe", "q_stop"])
    assert dose.loc["risky", "q_stop"] == pytest.approx(dose.loc["risky", "p_stop"])


def test_dev_file_end_to_end(tmp_path: Path) -> None:
    if not DEV.is_file():
        pytest.skip("dev JSONL not available")
    t0 = time.perf_counter()
    result = J.run_words_jsonl(DEV, tmp_path / "words")
    elapsed = time.perf_counter() - t0
    assert elapsed < 30, f"dev file took {elapsed:.1f} s"
    paths = result["paths"]
    for key in ("parquet", "csv", "summary", "stop_rates", "dose_response", "import_report"):
        assert paths[key].is_file(), key
    table = pd.read_parquet(paths["parquet"])
    for col in ("layer", "feature_id", "context", "condition", "scale", "word", "count_patched",
                "count_baseline", "log_odds", "z", "p", "q", "direction"):
        assert col in table.columns
    assert len(table) > 1000
    assert set(table["direction"]) <= {"adds", "removes", "none"}
    assert 1.0 not in set(table["scale"])  # the baseline is never compared with itself
    assert result["n_comparisons"] == 10 * 2 * 6
    assert result["report"].n_rows == 4542 and not result["report"].skipped
    assert "4542 trials read" in result["summary"]
    dose = pd.read_csv(paths["dose_response"])
    assert len(dose) == 20
    rates = pd.read_csv(paths["stop_rates"])
    assert rates["stop_rate"].between(0, 1).all()


def test_pool_by_direction_keeps_opposite_scales_apart() -> None:
    df = pd.DataFrame({"scale": [0.3, 0.75, 1.0, 1.25, 2.0], "condition": ["x"] * 5})
    pooled = J.pool_by_direction(df)
    assert pooled["condition"].tolist() == ["toward_safe", "toward_safe", "baseline",
                                            "toward_bankrupt", "toward_bankrupt"]
    assert pooled["scale"].iloc[2] == 1.0 and pooled["scale"].isna().sum() == 4


def test_dev_file_pooled(tmp_path: Path) -> None:
    if not DEV.is_file():
        pytest.skip("dev JSONL not available")
    result = J.run_words_jsonl(DEV, tmp_path, pool_scales=True)
    assert result["n_comparisons"] == 10 * 2 * 2
    table = pd.read_parquet(result["paths"]["parquet"])
    assert set(table["condition"]) == {"toward_safe", "toward_bankrupt"}
