"""The report in headless Chromium: no console errors, the graph, the table, no script injection.

Skipped (with the reason) only when Chromium, chromedriver or Selenium is absent. The browser is
started fully offline-safe (no background networking, no component updates, fresh profile).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_fixture import make_run_dir  # noqa: E402

from featurepath.report import build_report  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.browser

try:
    import selenium  # noqa: F401

    _HAVE_SELENIUM = True
except ImportError:  # pragma: no cover - depends on the environment
    _HAVE_SELENIUM = False

if not _HAVE_SELENIUM:
    pytestmark = [pytestmark, pytest.mark.skip(reason="selenium is not installed")]
elif not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytestmark = [pytestmark, pytest.mark.skip(
        reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver)")]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = make_run_dir(tmp_path_factory.mktemp("browser"))
    build_report(run)
    return run


@pytest.fixture(scope="module")
def driver(run):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fp-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    drv.get((run / "report.html").as_uri())
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _click(driver, css: str, index: int = 0):
    el = driver.find_elements("css selector", css)[index]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    el.click()
    return el


def _image_width(driver, css: str) -> int:
    """The natural width of a loaded image, scrolled into view (0 while not loaded)."""
    img = driver.find_element("css selector", css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", img)
    return driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                 img)


def _visible_rows(driver) -> list:
    return [r for r in driver.find_elements("css selector", "#feature-table tbody tr")
            if r.is_displayed()]


def test_page_loads_without_console_errors(driver):
    assert driver.execute_script("return document.documentElement.dataset.reportReady") == "1"
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []


def test_injected_script_does_not_run(driver):
    assert driver.execute_script("return typeof window.__pwned") == "undefined"
    text = driver.find_element("css selector", "#responses").text
    assert "<script>window.__pwned = 1</script>" in text
    assert driver.find_elements("css selector", "#responses img") == []


def test_graph_matches_graph_json(driver, run):
    graph = json.loads((run / "pathways" / "graph.json").read_text())
    nodes = driver.find_elements("css selector", "#pathway-graph svg circle.node")
    edges = driver.find_elements("css selector", "#pathway-graph svg path.edge")
    assert len(nodes) == len(graph["nodes"])
    assert len(edges) == len(graph["edges"])
    signs = [e.get_attribute("class") for e in edges]
    assert sum("neg" in s for s in signs) == sum(e["sign"] < 0 for e in graph["edges"])


def test_click_node_and_edge_show_details(driver):
    _click(driver, '#pathway-graph svg circle.node[data-id="L3-1"]')
    details = driver.find_element("css selector", "#details").text
    assert "Feature L3-1" in details and "edges out" in details and "L8-2" in details
    _click(driver, "#pathway-graph svg .edge-g .edge-hit", 3)
    details = driver.find_element("css selector", "#details").text
    assert "L8-2 → L13-5" in details and "mean_shift" in details


def test_table_sorts(driver):
    _click(driver, '#feature-table th[data-col="effect"]')
    vals = [float(r.get_attribute("data-sort")) for r in driver.find_elements(
        "css selector", "#feature-table tbody tr td:nth-child(10)")]
    assert vals == sorted(vals) and len(vals) == 7  # six features and the direction
    _click(driver, '#feature-table th[data-col="effect"]')
    vals = [float(r.get_attribute("data-sort")) for r in driver.find_elements(
        "css selector", "#feature-table tbody tr td:nth-child(10)")]
    assert vals == sorted(vals, reverse=True)
    _click(driver, '#feature-table th[data-col="feature"]')
    names = [r.get_attribute("data-feature") for r in driver.find_elements(
        "css selector", "#feature-table tbody tr")]
    assert names == ["L3-1", "L3-7", "L8-2", "L8-4", "L13-5", "L13-9", "L13~direction"]


def test_table_filters_and_row_details(driver):
    box = driver.find_element("css selector", "#feature-filter")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.clear()
    box.send_keys("L13")
    assert sorted(r.get_attribute("data-feature") for r in _visible_rows(driver)) == [
        "L13-5", "L13-9", "L13~direction"]
    assert "3 of 7" in driver.find_element("css selector", "#feature-count").text
    box.clear()
    box.send_keys("risky yes")  # all terms must match: class risky and same effect "yes", or
    # (the direction) a risky condition and a significant verdict
    assert [r.get_attribute("data-feature") for r in _visible_rows(driver)] == [
        "L13-9", "L13~direction"]
    box.clear()
    box.send_keys(" ")
    box.clear()
    driver.execute_script("arguments[0].dispatchEvent(new Event('input'))", box)
    assert len(_visible_rows(driver)) == 7
    _click(driver, '#feature-table tbody tr[data-feature="L8-4"] td')
    assert "risky_with_safe_patch" in driver.find_element("css selector",
                                                          "#feature-details").text


def test_chain_highlight_and_screenshot(driver, run):
    _click(driver, "#chains-table tr.chain")
    assert "L3-1 -> L8-2 -> L13-5" in driver.find_element("css selector", "#details").text
    lit = driver.find_elements("css selector", "#pathway-graph svg .edge-g.hl")
    assert len(lit) == 2
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(run / "report.png"))
    assert (run / "report.png").stat().st_size > 10_000
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []


def test_controls_section_and_band_figure(driver, run):
    summary = driver.find_element("css selector", "#controls-summary").text
    assert "The behavioural direction moves behaviour and no feature does." in summary
    assert _image_width(driver, "#null_band_p_stop-figure img") > 300
    assert "1/(K+1)" in driver.find_element("css selector",
                                            "#null_band_p_stop-figure figcaption").text
    assert driver.save_screenshot(str(run / "controls.png"))


def test_details_show_band_and_invalid_bets(driver):
    _click(driver, '#feature-table tbody tr[data-feature="L3-1"] td')
    box = driver.find_element("css selector", "#feature-details")
    heads = [th.text for th in box.find_elements("css selector", "th")]
    for col in ("significant", "null_z", "null_p", "beats_null", "invalid_bet_patched",
                "invalid_bet_baseline"):
        assert col in heads, col
    # no test of L3-1 is significant, so no q is bold although every q <= alpha
    assert box.find_elements("css selector", "td.sig") == []
    _click(driver, '#feature-table tbody tr[data-feature="L13~direction"] td')
    assert len(box.find_elements("css selector", "td.sig")) == 2  # P(stop) and stop rate


def test_mediated_edges_dashed_with_mechanism_in_details(driver):
    edges = driver.find_elements("css selector", "#pathway-graph svg path.edge")
    assert sum("mediated" in e.get_attribute("class") for e in edges) == 4
    _click(driver, "#pathway-graph svg .edge-g .edge-hit", 0)
    details = driver.find_element("css selector", "#details").text
    assert "mechanism" in details and "null_p" in details
    rows = driver.find_elements("css selector", "#edge-table tbody tr")
    assert len(rows) == 7


def test_dose_section_figure_and_sortable_table(driver, run):
    summary = driver.find_element("css selector", "#dose-summary").text
    assert "L8-2 has a dose response outside the band of random directions." in summary
    assert _image_width(driver, "#dose_p_stop-figure img") > 300
    assert driver.save_screenshot(str(run / "dose.png"))
    _click(driver, '#dose-table th[data-col="slope"]')
    slopes = [float(r.get_attribute("data-sort")) for r in driver.find_elements(
        "css selector", '#dose-table tbody tr td:nth-child(5)')]
    assert slopes == sorted(slopes) and len(slopes) == 6
    outside = driver.find_elements("css selector", "#dose-table td.verdict-outside")
    # L8-2's P(stop) and stop rate, the direction's P(stop) (its stop rate stays inside)
    assert [c.text for c in outside] == ["outside band"] * 3
