"""Fast tests of the HTML report (no browser): files, self-containment, escaping, missing data."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_fixture import INJECTED_IMG, INJECTED_SCRIPT, make_run_dir  # noqa: E402

from featurepath.errors import DataError  # noqa: E402
from featurepath.report import build_report  # noqa: E402
from featurepath.report.format import json_for_script  # noqa: E402


class _Scripts(HTMLParser):
    """Collects every <script>'s attributes and text, as a browser's parser would split them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._cur: dict[str, str | None] | None = None
        self._buf: list[str] = []
        self.metas: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._cur, self._buf = dict(attrs), []
        elif tag == "meta":
            self.metas.append(dict(attrs))

    def handle_data(self, data):
        if self._cur is not None:
            self._buf.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._cur is not None:
            self.scripts.append((self._cur, "".join(self._buf)))
            self._cur = None


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def page(run) -> str:
    return build_report(run).read_text(encoding="utf-8")


def _parse(page: str) -> _Scripts:
    p = _Scripts()
    p.feed(page)
    return p


def test_report_and_figures_written(run, page):
    assert (run / "report.html").is_file()
    for stem in ("behaviour", "sae_quality", "pathways", "null_band_p_stop",
                 "null_band_stop_rate", "dose_p_stop", "dose_stop_rate"):
        for ext in ("png", "svg"):
            f = run / "figures" / f"{stem}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    for sid in ("summary", "confirmation", "provenance", "behaviour", "sae-quality", "controls", "dose", "features",
                "pathways", "chains", "words", "responses"):
        assert f'<section id="{sid}">' in page
    assert "not run yet" not in page
    assert 'id="feature-table"' in page and 'id="pathway-graph"' in page
    assert 'id="details"' in page


def test_self_contained(page):
    # no external scripts, styles, images, fonts or imports
    assert not re.search(r"<script[^>]*\ssrc=", page, re.I)
    assert not re.search(r"<link[^>]*href=[\"']?(https?:)?//", page, re.I)
    assert not re.search(r"<img[^>]*src=[\"']?(https?:)?//", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page, re.I)
    assert "@import" not in page
    # every absolute URL is a Neuronpedia anchor (or inside JSON data / the JS template)
    for m in re.finditer(r"https?://[^\s\"'<\\]+", page):
        assert m.group(0).startswith("https://www.neuronpedia.org/llama3.1-8b/") or \
            m.group(0) == "http://www.w3.org/2000/svg", m.group(0)
    imgs = re.findall(r"<img[^>]*src=\"([^\"]+)\"", page)
    assert len(imgs) == 7 and all(s.startswith("data:image/png;base64,") for s in imgs)


def test_injected_text_is_escaped(page):
    assert INJECTED_SCRIPT not in page
    assert INJECTED_IMG not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;window.__pwned = 2&quot;&gt;" in page
    # only our own script executes: JSON islands plus one inline script
    scripts = _parse(page).scripts
    executable = [s for a, s in scripts if a.get("type") != "application/json"]
    assert len(executable) == 1 and "__pwned" not in executable[0]
    assert page.count("<script") == page.count("</script>") == len(scripts)


def test_json_islands_round_trip(page):
    islands = {a["id"]: json.loads(text) for a, text in _parse(page).scripts
               if a.get("type") == "application/json"}
    assert set(islands) >= {"graph-data", "features-data", "tests-data", "chains-data",
                            "meta-data"}
    graph = islands["graph-data"]
    assert len(graph["nodes"]) == 6 and len(graph["edges"]) == 7
    # the condition string with a closing script tag survives intact inside the data
    assert "</script>" in graph["edges"][0]["condition"]
    assert islands["meta-data"]["neuronpedia"].startswith("https://www.neuronpedia.org/")
    assert len(islands["features-data"]) == 7  # six features and the behavioural direction
    assert len(islands["chains-data"]) == 3


def test_csp_admits_exactly_our_script(page):
    p = _parse(page)
    csp = next(m["content"] for m in p.metas
               if (m.get("http-equiv") or "").lower() == "content-security-policy")
    js = next(s for a, s in p.scripts if a.get("type") != "application/json")
    digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]


def test_json_for_script_escapes():
    text = json_for_script({"a": "</script><!-- & >", "n": float("nan")})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- & >", "n": None}


def test_neuronpedia_links(page):
    assert ('href="https://www.neuronpedia.org/llama3.1-8b/8-llamascope-res-32k/2"' in page)


def test_no_neuronpedia_for_other_models(tmp_path):
    run = make_run_dir(tmp_path, model="HuggingFaceTB/SmolLM2-135M-Instruct")
    page = build_report(run, figures=False).read_text()
    assert "neuronpedia.org" not in page


def test_feature_table_merges_stages(page):
    table = page.split('id="feature-table"')[1].split("</table>")[0]
    rows = re.findall(r"<tr data-key=\"([^\"]+)\"", table)
    # candidates and the behavioural direction; non-candidates L8-11 and L13-12 are left out
    assert len(rows) == 7 and rows[-1] == "13:-1"
    assert "8:11" not in rows
    assert "L13~direction" in table and "llamascope-res-32k/-1" not in page
    l31 = table.split('data-key="3:1"')[1].split("</tr>")[0]
    # its strongest test: lowest q (0.004, every metric of safe_with_risky_patch), then the
    # largest |effect|: stop rate 0.05 * 0.6 (CI ± 0.03), below the rate's practical minimum
    # (0.05), so not significant: its q (0.004 <= alpha) is not bold
    assert ">0.03<" in l31 and ">[0, 0.06]<" in l31 and ">no<" in l31
    assert '<td class="num" data-sort="0.004">0.004</td>' in l31


def test_missing_inputs_say_not_run(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    out = build_report(run)
    page = out.read_text()
    assert out == run / "report.html"
    assert page.count("not run yet") >= 8
    assert not (run / "figures").exists() or not any((run / "figures").iterdir())


def test_unreadable_file_spoils_only_its_section(tmp_path):
    run = make_run_dir(tmp_path)
    (run / "words.parquet").write_bytes(b"not parquet")
    (run / "run.json").write_text("{broken")
    page = build_report(run, figures=False).read_text()
    assert "could not read words.parquet" in page
    assert "could not read run.json" in page
    assert 'id="feature-table"' in page


def test_graph_rebuilt_from_edges_and_fuzzy_metric_names(tmp_path):
    run = make_run_dir(tmp_path)
    (run / "pathways" / "graph.json").unlink()
    m = pd.read_parquet(run / "play" / "metrics.parquet").rename(
        columns={"bankruptcy_rate": "bankrupt_rate"})
    m.to_parquet(run / "play" / "metrics.parquet")
    build_report(run)
    page = (run / "report.html").read_text()
    graph = json.loads(next(t for a, t in _parse(page).scripts if a.get("id") == "graph-data"))
    assert len(graph["nodes"]) == 6 and len(graph["edges"]) == 7
    assert (run / "figures" / "behaviour.png").is_file()


def test_custom_out_and_missing_run_dir(tmp_path, run):
    out = build_report(run, out=tmp_path / "x" / "r.html", figures=False)
    assert out == tmp_path / "x" / "r.html" and out.is_file()
    with pytest.raises(DataError, match="run directory not found"):
        build_report(tmp_path / "nope")


def test_cli(tmp_path, run, monkeypatch, capsys):
    import featurepath.cli as cli
    import featurepath.cli.report  # noqa: F401  (registers `report`)

    monkeypatch.setattr(cli, "_register", lambda: None)
    out = tmp_path / "cli.html"
    assert cli.main(["report", str(run), "--out", str(out), "--no-figures"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run directory not found") and "\n" not in err


# ------------------------------------------------------------------ control arms (issue 12)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace(" .", ".")


def _summary(page: str) -> str:
    return _text(page.split('id="controls-summary"')[1].split("</ul>")[0])


def test_controls_summary_no_feature_moves(page):
    s = _summary(page)
    # 6 features x 3 conditions x 3 metrics, every q <= 0.044; by the practical minimum: all 18
    # P(stop) effects (0.018..0.033 >= 0.01), no invalid rate (<= 0.011 < 0.05), stop rates of
    # L13-5 and L13-9 only (0.05, 0.055 >= 0.05; the others 0.03..0.045): 18 + 6 = 24
    assert ("24 of 54 feature tests are significant against the baseline; 0 of those beat "
            "their null band, 24 stay inside it.") in s
    assert "K = 99 null arms" in s and "1/(K+1) = 1/100 ≈ 0.01." in s
    assert "The behavioural direction (L13~direction) moved behaviour: 2 of its 2 behaviour " \
           "tests are significant." in s
    assert "The behavioural direction moves behaviour and no feature does." in s
    assert 'id="controls-table"' in page


def test_controls_summary_when_features_beat_their_bands(tmp_path):
    run = make_run_dir(tmp_path, feature_moves=True)
    page = build_report(run).read_text()
    s = _summary(page)
    # three movers x 3 conditions x 2 behaviour metrics beat their bands (null p = 1/100, BH
    # over 54 tests: 0.01 * 54 / 18 = 0.03 <= 0.05)
    assert "18 of those beat their null band" in s
    assert "The behavioural direction moves behaviour, and so do 3 features (L3-1, L8-2, " \
           "L13-5)." in s
    table = page.split('id="feature-table"')[1].split("</table>")[0]
    l82 = table.split('data-key="8:2"')[1].split("</tr>")[0]
    assert 'class="num sig" data-sort="0.0001"' in l82 and ">yes<" in l82  # q bold: significant


def test_band_figure_and_caption(run, page):
    fig = page.split('id="null_band_p_stop-figure"')[1].split("</figure>")[0]
    caption = _text(fig.split("<figcaption>")[1])
    assert "Grey dots: the band" in caption and "random direction" in caption
    assert "the smallest possible null p is 1/(K+1) = 1/100 ≈ 0.01" in caption
    assert "figures/null_band_p_stop.svg" in caption
    # the stop-rate figure is folded under the P(stop) one, inside the features section
    features = page.split('<section id="features">')[1].split("</section>")[0]
    assert 'id="null_band_stop_rate-figure"' in features and "<details" in features


def test_band_figure_without_causal_null_draws_bars(tmp_path):
    run = make_run_dir(tmp_path)
    (run / "causal_null.parquet").unlink()
    build_report(run)
    assert (run / "figures" / "null_band_p_stop.png").stat().st_size > 1000


def test_run_from_before_the_control_arms(tmp_path):
    run = make_run_dir(tmp_path, bands=False)
    page = build_report(run).read_text()
    assert not (run / "figures" / "null_band_p_stop.png").exists()
    assert 'id="null_band_p_stop-figure"' not in page
    assert "carry no null-band columns" in _summary(page)
    assert 'id="feature-table"' in page and 'id="edge-table"' in page
    assert "mechanism" not in page.split('id="edge-table"')[1].split("</table>")[0]


def test_small_band_cannot_beat_alpha():
    from featurepath.report.controls import (
        _sentences,
        band_limit,
        min_p_text,
        summarise_controls,
    )

    tests = pd.DataFrame({
        "feature": ["L3-1", "L3-1", "L5~direction"], "arm": ["feature", "feature", "direction"],
        "metric": ["p_stop", "invalid_rate", "p_stop"], "q": [0.01, 0.01, 0.5],
        "degenerate": [False] * 3, "vs_baseline": [True, True, False],
        "null_n": [16, 16, 0], "beats_null": [False, False, False],
        "significant": [False, False, False]})
    s = summarise_controls(tests, alpha=0.05)
    assert (s.n_feature_tests, s.n_vs_baseline, s.n_beat, s.n_inside) == (2, 2, 0, 2)
    text = " ".join(_sentences(s))
    assert "1/(K+1) = 1/17 ≈ 0.0588" in text
    assert "With K = 16 no test can beat its band at α = 0.05" in text
    assert s.headline().startswith("Neither the behavioural direction nor any feature")
    assert band_limit([16], 0.05).startswith("With K = 16 no test can beat")
    assert min_p_text([8, 12]) == "1/(K+1), from 1/9 ≈ 0.111 (K = 8) to 1/13 ≈ 0.0769 (K = 12)"
    assert band_limit([8, 12], 0.05).startswith("With K = 8–12 no test can beat")
    # 1/20 = 0.05 can still be reached at alpha 0.05; 1/19 cannot
    assert band_limit([18, 99], 0.05) == ("Tests with fewer than 19 null arms cannot beat their "
                                          "band at α = 0.05.")
    assert band_limit([19, 99], 0.05) == "" and band_limit([], 0.05) == ""
    s = summarise_controls(tests[tests["arm"] == "feature"], alpha=0.05)
    assert s.headline() == ("No feature moves behaviour. No behavioural direction was patched "
                            "(patch.behavioural_direction), so there is no positive control.")


def test_direction_inside_its_own_band_is_said_plainly():
    """The demo's case: the direction moves P(stop) against the baseline (significant) but
    stays inside the band of random directions of its size; no feature moves."""
    from featurepath.report.controls import _sentences, summarise_controls

    tests = pd.DataFrame({
        "feature": ["L3-1", "L13~direction", "L13~direction"],
        "arm": ["feature", "direction", "direction"],
        "metric": ["p_stop", "p_stop", "stop_rate"], "q": [0.5, 2e-13, 0.5],
        "degenerate": [False] * 3, "vs_baseline": [False, True, False],
        "null_n": [16, 16, 16], "beats_null": [False, False, False],
        "significant": [False, True, False]})
    s = summarise_controls(tests, alpha=0.05)
    assert (s.n_direction_banded, s.n_direction_beat) == (1, 0)
    assert s.headline() == ("The behavioural direction moves behaviour against the baseline, "
                            "but no more than random directions of its size; no feature moves "
                            "behaviour.")
    assert ("against random directions of its own size (patch.direction_nulls), 0 of the 1 "
            "significant tests with a band lie outside it") in " ".join(_sentences(s))
    tests.loc[1, "beats_null"] = True
    assert summarise_controls(tests, alpha=0.05).headline() == (
        "The behavioural direction moves behaviour and no feature does.")


def test_feature_names_from_files_are_escaped_in_the_summary(tmp_path):
    run = make_run_dir(tmp_path)
    t = pd.read_parquet(run / "causal_tests.parquet")
    t.loc[t["arm"] == "direction", "feature"] = "L13~direction<script>window.__pwned=4</script>"
    t.to_parquet(run / "causal_tests.parquet")
    page = build_report(run).read_text()
    assert "<script>window.__pwned=4" not in page
    assert "L13~direction&lt;script&gt;window.__pwned=4&lt;/script&gt;" in page


def test_edges_show_mechanism_and_null_p(page):
    table = page.split('id="edge-table"')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 7  # header + edges; the one inside its band is left out
    assert "L13-12" not in table
    assert ">mediated<" in table and ">direct<" in table and ">0.01<" in table
    graph = json.loads(next(t for a, t in _parse(page).scripts if a.get("id") == "graph-data"))
    by = {(e["source"], e["target"]): e for e in graph["edges"]}
    assert by[("L3-1", "L8-2")]["mechanism"] == "mediated"
    assert by[("L3-1", "L8-4")]["mechanism"] == "direct"
    assert by[("L3-1", "L8-4")]["null_p"] == 0.01


def test_details_panel_data_carry_band_and_invalid_bets(page):
    tests = json.loads(next(t for a, t in _parse(page).scripts if a.get("id") == "tests-data"))
    for col in ("significant", "vs_baseline", "null_z", "null_p", "beats_null",
                "invalid_bet_patched", "invalid_bet_baseline", "arm"):
        assert col in tests["columns"], col
    rows = tests["by_feature"]["13:-1"]
    arm = tests["columns"].index("arm")
    assert {r[arm] for r in rows} == {"direction"}


def test_band_figure_draws_dollar_signs_as_text(tmp_path):
    from featurepath.report.plots import null_band_figure

    # "$\frac{$" is a mathtext error if matplotlib parses it: the figure would be skipped
    row = dict(feature="L1-2", context="x", condition=r"bad_$\frac{$", metric="p_stop",
               effect=0.1, null_n=3, null_mean=0.0, null_sd=0.01, beats_null=False,
               significant=False, vs_baseline=True, arm="feature")
    nulls = pd.DataFrame([{**row, "effect": e, "arm": "null"} for e in (-0.01, 0.0, 0.01)])
    fig = null_band_figure(pd.DataFrame([row]), nulls, tmp_path)
    assert fig is not None and fig.png.stat().st_size > 1000
