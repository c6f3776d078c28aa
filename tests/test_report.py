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
    for stem in ("behaviour", "sae_quality", "pathways"):
        for ext in ("png", "svg"):
            f = run / "figures" / f"{stem}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    for sid in ("provenance", "behaviour", "sae-quality", "features", "pathways", "chains",
                "words", "responses"):
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
    assert len(imgs) == 3 and all(s.startswith("data:image/png;base64,") for s in imgs)


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
    assert len(islands["features-data"]) == 6
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
    assert len(rows) == 6  # candidates only; non-candidates L8-11 and L13-12 are left out
    assert "8:11" not in rows
    assert "[0.02, 0.08]" in table  # CI of L3-1's strongest test


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
