"""Build ``RUN_DIR/report.html``: one self-contained page over every stage of a run.

Why one file with everything inline: a report is mailed, archived next to a paper and opened
years later on a laptop without network, so it may not depend on a CDN, a server or files beside
it. CSS and JS are read from package data and inlined; figures are PNG data URIs; the pathway
graph is an SVG drawn by ``report.js`` from JSON embedded in the page.

Why the escaping is strict: responses, words and even condition strings are written by a model
(or come from files we did not write), so every string goes through :func:`html.escape` and every
JSON island escapes ``<``, ``>`` and ``&`` so that ``</script>`` inside data cannot end the block.
A Content-Security-Policy that only admits the hash of our own script is a second wall: even if
some text slipped through unescaped, an injected ``<script>`` or ``onerror`` would not run.

Every input is optional: a section whose file is missing says "not run yet", one whose file
cannot be read says so, and the rest of the page is still built.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

from featurepath import __version__
from featurepath.config import RunConfig
from featurepath.errors import DataError
from featurepath.report.controls import controls_section
from featurepath.report.data import RunData, graph_payload
from featurepath.report.dose import dose_section
from featurepath.report.format import (
    _json_island,
    esc,
)
from featurepath.report.screen import screen_section
from featurepath.report.sections import (
    _behaviour,
    _chains,
    _features,
    _pathways,
    _provenance,
    _responses,
    _sae_quality,
    _words,
)

# --------------------------------------------------------------------------------------------
# page


def _asset(name: str) -> str:
    return resources.files("featurepath.report").joinpath(name).read_text(encoding="utf-8")


def _nav() -> str:
    links = [("provenance", "Provenance"), ("behaviour", "Behaviour"),
             ("sae-quality", "SAE quality"), ("controls", "Controls"), ("dose", "Dose–response"),
             ("screen", "Screen check"), ("features", "Features"),
             ("pathways", "Pathways"), ("chains", "Chains"), ("words", "Words"),
             ("responses", "Responses")]
    return "<nav>" + "".join(f'<a href="#{a}">{t}</a>' for a, t in links) + "</nav>"


def render_html(data: RunData, figs: dict[str, Any] | None = None) -> str:
    """The whole page as a string (no files written)."""
    figs = figs or {}
    template = data.neuronpedia_template()
    model = data.model_name()
    features_html, feature_data = _features(data, template, figs)
    graph = graph_payload(data)
    chains_html, chains = _chains(data)
    sections = [
        _provenance(data),
        _behaviour(data, figs),
        _sae_quality(data, figs),
        controls_section(data),
        dose_section(data, figs),
        screen_section(data, figs),
        features_html,
        _pathways(data, graph, figs),
        chains_html,
        _words(data, template, feature_data),
        _responses(data),
    ]
    islands = "".join([
        _json_island("graph-data", graph or {"nodes": [], "edges": []}),
        _json_island("features-data", feature_data.get("features", {})),
        _json_island("tests-data", feature_data.get("tests", {})),
        _json_island("chains-data", chains),
        _json_island("meta-data", {"neuronpedia": template, "model": model,
                                   "run_dir": data.run_dir.name, "alpha": data.alpha,
                                   "featurepath": __version__}),
    ])
    css = _asset("report.css")
    js = _asset("report.js")
    js_hash = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; script-src 'sha256-{js_hash}'; style-src 'unsafe-inline'; "
           "img-src data:; base-uri 'none'; form-action 'none'")
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"featurepath report — {data.run_dir.name}"
    model_html = f" · model <strong>{esc(model)}</strong>" if model else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{css}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p class=\"sub\">featurepath {esc(__version__)}"
        f"{model_html} · built {esc(now)}</p>{_nav()}</header><main>"
        + "".join(sections)
        + f"</main>{islands}<script>{js}</script></body></html>\n"
    )


def run_report(run_dir: str | Path, cfg: RunConfig | None = None, *,
               out: str | Path | None = None, figures: bool = True) -> Path:
    """The report stage in the shape of the others: write ``report.html`` (and figures) and
    return its path. ``cfg`` None reads the run's own ``config.yaml`` (what the stages decided
    with); a given ``cfg`` sets the significance marks (``analysis.alpha``) instead. Writes no
    config: the report changes nothing the stages recorded."""
    return build_report(run_dir, out=out, figures=figures, cfg=cfg)


def build_report(run_dir: str | Path, out: str | Path | None = None,
                 figures: bool = True, cfg: RunConfig | None = None) -> Path:
    """Write the report for ``run_dir`` and return its path (default ``run_dir/report.html``).

    ``figures`` also writes the static matplotlib figures (PNG + SVG) into
    ``run_dir/figures/`` for use in papers; they are embedded in the page as well.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run directory not found: {run_dir}")
    data = RunData.load(run_dir)
    data.cfg = cfg
    figs: dict[str, Any] = {}
    if figures:
        from featurepath.report import plots

        figs = plots.write_figures(data, run_dir / "figures")
    page = render_html(data, figs)
    out_path = Path(out) if out is not None else run_dir / "report.html"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out_path)
    return out_path
