"""The screen checked against the real patch (issue 21): Spearman's ρ and top-N recall by hand
and against scipy, written by causal."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from featurepath.analysis.screen_check import check_line, screen_points, screen_summary
from featurepath.pipeline.screen import rank_table


def _trials(effects: dict[str, float], sources: dict[str, str]) -> pd.DataFrame:
    rows = []
    for t in range(4):
        rows.append(dict(feature="", layer=-1, context="safe", condition="safe_baseline",
                         arm="baseline", readout=0.5 + 0.01 * t, source=""))
        for f, e in effects.items():
            rows.append(dict(feature=f, layer=int(f[1]), context="safe", condition="safe_v",
                             arm="feature", readout=0.5 + 0.01 * t + e, source=sources[f]))
            rows.append(dict(feature=f, layer=int(f[1]), context="safe", condition="safe_v",
                             arm="null", readout=0.9, source=sources[f]))  # not an effect
    return pd.DataFrame(rows)


def _screen(att: dict[str, float]) -> pd.DataFrame:
    return rank_table(pd.DataFrame({
        "layer": [int(f[1]) for f in att], "feature_id": [int(f.split("-")[1]) for f in att],
        "context": "safe", "intervention": "safe_v", "patch": "value",
        "attribution": list(att.values()), "attribution_se": 0.0, "active_share": 1.0,
        "clamp_mean": 1.0, "n_prompts": 4}))


def test_rank_correlation_and_recall_by_hand_and_against_scipy():
    att = {"L1-0": 0.9, "L1-1": -0.5, "L1-2": 0.3, "L1-3": 0.1, "L1-4": 0.05, "L1-5": -0.01,
           "L1-6": 0.002}  # ranks 1..7 by |attribution|; L1-6 was never patched
    eff = {"L1-0": 0.30, "L1-1": -0.01, "L1-2": 0.2, "L1-3": 0.25, "L1-4": 0.0, "L1-5": -0.02}
    src = {"L1-0": "screen", "L1-1": "both", "L1-2": "random-check", "L1-3": "random-check",
           "L1-4": "discover", "L1-5": "random-check"}
    points = screen_points(_trials(eff, src), _screen(att), top_n=2)
    assert len(points) == 6
    got = points.set_index("feature")
    np.testing.assert_allclose(got.loc[list(eff), "effect"], list(eff.values()), atol=1e-12)
    assert got.loc["L1-1", "source"] == "both" and got["in_top"].sum() == 2
    s = screen_summary(points, top_n=2).iloc[0]
    want = stats.spearmanr([att[f] for f in eff], list(eff.values()))
    assert np.isclose(s["spearman"], want.statistic) and np.isclose(s["spearman_p"], want.pvalue)
    # the 2 largest |effects| are L1-0 (screen rank 1) and L1-3 (rank 4): recall 1/2;
    # a random ranking puts 2 of the 6 patched features in the top 2
    assert s["k"] == 2 and s["recall"] == 0.5 and np.isclose(s["recall_chance"], 2 / 6)
    assert s["n_random"] == 3
    assert "safe_v rho" in check_line(screen_summary(points, 2)) and "recall@2 0.50" in \
        check_line(screen_summary(points, 2))


def test_too_few_points_say_so():
    att = {"L1-0": 0.9, "L1-1": -0.5}
    pts = screen_points(_trials({"L1-0": 0.1, "L1-1": 0.2}, {"L1-0": "", "L1-1": ""}),
                        _screen(att), top_n=1)
    s = screen_summary(pts, 1).iloc[0]
    assert np.isnan(s["spearman"]) and s["recall"] == 0.0  # the larger effect ranks 2nd
    assert "n/a" in check_line(screen_summary(pts, 1))
    assert check_line(screen_summary(pts.iloc[:0], 1)).endswith("scored by the screen")


def test_causal_writes_the_check_and_the_report_shows_it(tmp_path):
    from featurepath.analysis.screen_check import run_screen_check
    from featurepath.report import build_report

    att = {"L1-0": 0.9, "L1-1": -0.5, "L1-2": 0.3, "L1-3": 0.1}
    eff = {"L1-0": 0.3, "L1-1": -0.2, "L1-2": 0.1, "L1-3": 0.0}
    trials = _trials(eff, dict.fromkeys(eff, "screen"))
    assert run_screen_check(tmp_path, trials, 2) is None  # no screen: nothing, nothing stale
    _screen(att).to_parquet(tmp_path / "screen.parquet")
    points, summary = run_screen_check(tmp_path, trials, 2)
    assert summary.iloc[0]["spearman"] == 1.0 and summary.iloc[0]["recall"] == 1.0
    assert (tmp_path / "screen_check.csv").exists()
    page = build_report(tmp_path).read_text()
    assert 'id="screen-check-figure"' in page and 'id="screen-check-table"' in page
    assert (tmp_path / "figures" / "screen_check.svg").exists()
    (tmp_path / "screen.parquet").unlink()
    assert run_screen_check(tmp_path, trials, 2) is None
    assert not (tmp_path / "screen_check.parquet").exists()
    assert "this run has no screen" in build_report(tmp_path).read_text()


def test_the_top_n_is_counted_among_the_features_candidates_could_take():
    """A feature the candidates leave out (inactive where a scale clamp runs) is not patched;
    the next one down is the screen's top for that intervention (it was handed to the patch),
    so recall and its chance count it as the top."""
    att = {"L1-0": 0.9, "L1-1": -0.5, "L1-2": 0.3}
    eff = {"L1-1": -0.2, "L1-2": 0.1}
    pts = screen_points(_trials(eff, dict.fromkeys(eff, "screen")), _screen(att), top_n=1,
                        exclude={"L1-0"})
    assert pts.set_index("feature")["in_top"].to_dict() == {"L1-1": True, "L1-2": False}
    s = screen_summary(pts, 1).iloc[0]
    assert s["recall"] == 1.0 and s["recall_chance"] == 0.5
    raw = screen_points(_trials(eff, dict.fromkeys(eff, "screen")), _screen(att), top_n=1)
    assert not raw["in_top"].any()  # without the exclusion nothing patched is "top"
