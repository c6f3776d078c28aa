"""The report's dose–response section: table numbers as dose_slopes holds them (and as
statsmodels fits them from the trials), the figure's lines as the trials' means per dose, one
line when there is no ladder, escaping — and the whole path patch → causal → report on the tiny
model."""

from __future__ import annotations

import re
import sys
import warnings
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.stats import t as student_t

sys.path.insert(0, str(Path(__file__).parent))
from report_fixture import DIRECTION, K_DOSE_NULL, dose_trials, make_run_dir  # noqa: E402

from featurepath.config import ConditionSpec, RunConfig, record_config  # noqa: E402
from featurepath.report import build_report  # noqa: E402
from featurepath.report.data import RunData  # noqa: E402
from featurepath.report.dose import dose_panels, slope_rows, summarise_doses  # noqa: E402
from featurepath.report.format import fmt  # noqa: E402
from featurepath.report.plots import dose_figure, draw_dose  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("dose"))


@pytest.fixture(scope="module")
def page(run) -> str:
    return build_report(run).read_text(encoding="utf-8")


def _section(page: str) -> str:
    return page.split('<section id="dose">')[1].split("</section>")[0]


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html))


def _table_rows(page: str) -> list[dict[str, str]]:
    """The dose table's body as text cells under their data-col names."""
    table = page.split('id="dose-table"')[1].split("</table>")[0]
    cols = re.findall(r'<th data-col="([^"]+)"', table)
    body = table.split("<tbody>")[1]
    return [dict(zip(cols, [_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)],
                     strict=True))
            for tr in re.findall(r"<tr>(.*?)</tr>", body)]


def _row(rows: list[dict[str, str]], feature: str, readout: str = "P(stop)") -> dict[str, str]:
    return next(r for r in rows if r["feature"] == feature and r["readout"] == readout)


def _cluster_fit(df: pd.DataFrame) -> tuple[float, float]:
    """slope and CR1 cluster SE of the readout ~ 1 + dose with prompts as clusters (statsmodels)."""
    fit = sm.OLS(df["readout"].to_numpy(float), sm.add_constant(df["dose"].to_numpy(float))).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(df["prompt_id"])[0]})
    return float(fit.params[1]), float(fit.bse[1])


def _ladder(trials: pd.DataFrame, arm: str, feature: str, k: int = -1) -> pd.DataFrame:
    """One arm's ladder as the slope is defined: its scaled trials and the context's
    baseline trials at dose 1 (read straight from the trials, no featurepath code; the
    fixture's trials carry the readout under its old name)."""
    trials = trials.rename(columns={"p_stop": "readout"})
    if arm == "null" and "~direction" in feature:  # the direction's null arms: no feature
        feature = ""
    own = trials[(trials["arm"] == arm) & (trials["feature"] == feature)
                 & (trials["null_index"] == k)].assign(dose=lambda d: d["scale"])
    base = trials[trials["arm"] == "baseline"].assign(dose=1.0)
    return pd.concat([own, base], ignore_index=True)


def test_table_holds_the_slopes_and_their_verdicts(run, page):
    slopes = pd.read_parquet(run / "dose_slopes.parquet").set_index(["feature", "metric"])
    rows = _table_rows(page)
    assert len(rows) == 6  # 2 features + the direction, x P(stop) and stop rate
    assert [r["feature"] for r in rows[:3]] == ["L3-1", "L8-2", DIRECTION]  # P(stop) first
    trials = dose_trials()
    for feature, verdict in (("L3-1", "inside band"), ("L8-2", "outside band")):
        r, s = _row(rows, feature), slopes.loc[(feature, "p_stop")]
        # the slope the table shows is the one statsmodels fits to the trials
        slope, se = _cluster_fit(_ladder(trials, "feature", feature))
        assert r["slope"] == fmt(slope) == fmt(s["slope"])
        assert r["se"] == fmt(se)
        z = student_t.ppf(0.975, int(s["n_prompts"]) - 1)
        assert r["ci"] == f"[{fmt(slope - z * se)}, {fmt(slope + z * se)}]"
        for col in ("p", "q", "null_mean", "null_sd", "null_z", "null_p", "null_q"):
            assert r[col] == fmt(s[col]), col
        assert r["null_n"] == str(K_DOSE_NULL) and r["doses"] == "0,1,2,3"
        assert r["verdict"] == verdict
    # the band's mean is the mean of the null arms' own slopes
    nulls = [_cluster_fit(_ladder(trials, "null", "L8-2", k))[0] for k in range(K_DOSE_NULL)]
    assert _row(rows, "L8-2")["null_mean"] == fmt(np.mean(nulls))
    assert _row(rows, "L8-2")["null_p"] == fmt(1 / (K_DOSE_NULL + 1))  # beyond every null slope
    assert _row(rows, DIRECTION)["verdict"] == "outside band"  # its own band of K
    assert _row(rows, DIRECTION)["null_n"] == str(K_DOSE_NULL)
    assert 'class="verdict-outside"' in _section(page)


def test_summary_sentences(page):
    summary = _text(page.split('id="dose-summary"')[1].split("</ul>")[0])
    assert ("P(stop): 1 of 2 feature slopes (feature × context) lie outside their band of "
            "random directions (null q ≤ 0.05), 1 inside it.") in summary
    assert "K = 99 null slopes" in summary and "1/(K+1) = 1/100 ≈ 0.01" in summary
    assert f"The behavioural direction ({DIRECTION}, risky), the positive control, has a " \
           "P(stop) slope of 0.202 per unit of dose" in summary
    assert f"against its own band of K = {K_DOSE_NULL} random directions of its size" in summary
    assert "null p = 0.01: outside band." in summary
    assert "L8-2 has a dose response outside the band of random directions." in summary
    assert "two doses" not in summary  # the ladder has four


def test_figure_is_in_the_page_and_on_disk(run, page):
    section = _section(page)
    fig = section.split('id="dose_p_stop-figure"')[1].split("</figure>")[0]
    assert fig.count('src="data:image/png;base64,') == 1
    assert "Thin grey lines: the same ladder along each random direction" in _text(fig)
    assert (run / "figures" / "dose_p_stop.png").stat().st_size > 1000
    assert (run / "figures" / "dose_p_stop.svg").exists()
    assert 'id="dose_stop_rate-figure"' in section and "<details" in section  # folded
    assert '<a href="#dose">' in page


def test_figure_lines_are_the_trials_means_per_dose(run):
    data = RunData.load(run)
    rows = slope_rows(data.dose_slopes.value)
    panels = dose_panels(rows, data.dose_curves.value, "p_stop")
    assert [(p.feature, p.verdict, p.direction) for p in panels] == [
        ("L3-1", "inside band", False), ("L8-2", "outside band", False),
        (DIRECTION, "outside band", True)]
    fig = draw_dose(panels)
    trials = dose_trials()
    for ax, p in zip(fig.axes, panels, strict=False):
        arm = "direction" if p.direction else "feature"
        hand = _ladder(trials, arm, p.feature).groupby("dose")["readout"].mean()
        (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == "feature"]
        np.testing.assert_allclose(line.get_xdata(), [0, 1, 2, 3])
        np.testing.assert_allclose(line.get_ydata(), hand.loc[[0.0, 1.0, 2.0, 3.0]].to_numpy())
        null_lines = [ln for ln in ax.get_lines() if ln.get_gid() == "null"]
        assert len(null_lines) == K_DOSE_NULL
        hand7 = _ladder(trials, "null", p.feature, 7).groupby("dose")["readout"].mean()
        np.testing.assert_allclose(null_lines[7].get_ydata(), hand7.to_numpy())
        assert len([c for c in ax.collections if c.get_gid() == "null-range"]) == 1


def test_no_ladder_is_one_line(tmp_path):
    run = make_run_dir(tmp_path, doses=False)
    section = _section(build_report(run, figures=False).read_text())
    assert _text(section).endswith("No dose ladder in this run: no feature was patched at a "
                                   "scale (patch.doses is empty), so there are no dose slopes.")
    assert 'id="dose-table"' not in section
    # a config with a ladder but no slopes (analysed by an older featurepath) says so
    cfg = RunConfig()
    cfg.patch.doses = [0.5, 2.0]
    record_config(run, cfg)
    section = _section(build_report(run, figures=False).read_text())
    assert "patch.doses is [0.5, 2.0] but the run has no dose_slopes.parquet" in _text(section)


def test_missing_curves_keep_the_table(tmp_path):
    run = make_run_dir(tmp_path)
    (run / "dose_curves.parquet").unlink()
    page = build_report(run).read_text()
    section = _section(page)
    assert 'id="dose-table"' in section and 'id="dose_p_stop-figure"' not in section
    assert "dose_curves.parquet: not run yet" in _text(section)
    assert not (run / "figures" / "dose_p_stop.png").exists()


def test_text_from_the_tables_is_escaped(tmp_path):
    run = make_run_dir(tmp_path)
    evil = "risky<script>window.__pwned=5</script>$\\frac{$"
    for name in ("dose_slopes", "dose_curves"):
        df = pd.read_parquet(run / f"{name}.parquet")
        df["context"] = evil
        df.to_parquet(run / f"{name}.parquet")
    page = build_report(run, figures=False).read_text()
    assert "<script>window.__pwned=5" not in page
    assert "risky&lt;script&gt;window.__pwned=5&lt;/script&gt;" in _section(page)
    # a "$" is drawn as text, not parsed as mathtext (which would drop the figure)
    data = RunData.load(run)
    fig = dose_figure(data.dose_slopes.value, data.dose_curves.value, tmp_path / "figs")
    assert fig is not None and fig.png.stat().st_size > 1000


def test_two_dose_ladders_and_short_null_ladders_are_named():
    rows = pd.DataFrame([dict(arm="feature", feature="L1-2", context="c", metric="p_stop",
                              n_doses=2, doses="1,3", slope=0.1, se=0.01, degenerate=False,
                              null_n=3, beats_null=False, q=0.01)])
    curves = pd.DataFrame([dict(arm="null", feature="L1-2", context="c", metric="p_stop",
                                null_index=k, dose=1.0, mean=0.5) for k in range(3)])
    s = summarise_doses(slope_rows(rows), 0.05, curves)
    assert s.short_nulls == ["L1-2"] and s.max_doses == 2
    assert s.headline().startswith("No feature's dose response lies outside the band")


def _tiny_ladder_config() -> RunConfig:
    cfg = RunConfig()
    cfg.patch.features = ["L1-11"]  # fires at the decision token: P(stop) moves with the dose
    cfg.patch.record = ["L1-11"]
    cfg.patch.conditions = [ConditionSpec(name="risky_baseline", context="risky")]
    cfg.patch.doses = [0.0, 2.0, 4.0]
    cfg.patch.null_directions = 4
    cfg.patch.prompt_set = "states"
    cfg.patch.n_prompts = 4
    cfg.patch.trials = 4
    cfg.patch.mode = "replay"  # P(stop) from one forward; no decision is parsed
    cfg.patch.store_dtype = "float32"
    cfg.analysis.n_boot = 0
    return cfg


def test_patch_causal_report_end_to_end(tmp_path, tiny, tiny_saes):
    from featurepath.analysis.causal import run_causal
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.patch import prepare

    model, tok = tiny
    cfg = _tiny_ladder_config()
    run_local(prepare(tmp_path, cfg, model, tok, tiny_saes), runtime=(model, tok, tiny_saes),
              progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_causal(tmp_path, cfg)
    page = build_report(tmp_path).read_text()
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    rows = _table_rows(page)
    r = _row(rows, "L1-11")
    slope, se = _cluster_fit(_ladder(trials, "feature", "L1-11"))
    assert (r["slope"], r["se"], r["doses"], r["null_n"]) == (fmt(slope), fmt(se), "0,1,2,4", "4")
    nulls = np.array([_cluster_fit(_ladder(trials, "null", "L1-11", k))[0] for k in range(4)])
    assert r["null_mean"] == fmt(nulls.mean())
    m = nulls.mean()  # Phipson & Smyth: (1 + #{|null - m| >= |slope - m|}) / (K + 1)
    assert r["null_p"] == fmt((1 + np.sum(np.abs(nulls - m) >= abs(slope - m))) / 5)
    # replay parses no decision: the stop-rate slope is degenerate and has no figure
    assert _row(rows, "L1-11", "stop rate")["verdict"] == "degenerate"
    assert 'id="dose_p_stop-figure"' in page and 'id="dose_stop_rate-figure"' not in page
    data = RunData.load(tmp_path)
    (panel,) = dose_panels(slope_rows(data.dose_slopes.value), data.dose_curves.value, "p_stop")
    hand = _ladder(trials, "feature", "L1-11").groupby("dose")["readout"].mean()
    np.testing.assert_allclose(panel.means, hand.to_numpy(), rtol=1e-6)
    assert panel.null_means.shape == (4, 4)
