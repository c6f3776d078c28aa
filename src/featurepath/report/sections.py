"""The sections of the report page: one function per section (provenance, behaviour, SAE
quality, features, pathways, chains, words, responses); the building blocks are in
:mod:`featurepath.report.blocks`, the controls summary in :mod:`featurepath.report.controls`.

Every string that reaches the page goes through :func:`featurepath.report.format.esc`."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from featurepath.report.blocks import _absent, _figure, _section, _table
from featurepath.report.controls import band_figures, edge_table, verdict, verdict_label
from featurepath.report.data import RunData
from featurepath.report.format import (
    _feature_name,
    _int,
    _is_missing,
    _jsonable,
    _key,
    _records,
    _round,
    _sort_key,
    esc,
    fmt,
)

MAX_FEATURE_ROWS = 5000
MAX_WORD_FEATURES = 200
WORDS_PER_LIST = 10
EXAMPLES_PER_GROUP = 3
MAX_EXAMPLE_GROUPS = 12
MAX_RESPONSE_CHARS = 800
# columns of causal_tests.parquet embedded per feature for the page's details panel
TEST_COLUMNS = ("layer", "feature_id", "context", "condition", "patch", "method", "value",
                "scale", "metric",
                "baseline_value", "patched_value", "effect", "ci_low", "ci_high", "statistic",
                "p", "q", "n_patched", "n_baseline", "n_invalid_patched", "n_invalid_baseline",
                "invalid_bet_patched", "invalid_bet_baseline", "degenerate", "test", "arm",
                "vs_baseline", "null_n", "null_mean", "null_sd", "null_z", "null_p", "null_q",
                "beats_null", "significant")


# --------------------------------------------------------------------------------------------
# helpers


def _flatten(obj: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, obj


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# --------------------------------------------------------------------------------------------
# sections


def _provenance(data: RunData) -> str:
    parts = []
    if data.run.ok and isinstance(data.run.value, dict):
        rows = []
        for key, value in _flatten(data.run.value):
            shown = fmt(value)
            lk = key.lower()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if "bytes" in lk:
                    shown = f"{_human_bytes(float(value))} ({fmt(value)} B)"
                elif "timing" in lk or lk.endswith("_s") or "seconds" in lk:
                    shown = f"{fmt(value)} s"
            rows.append(f'<tr><th scope="row">{esc(key)}</th><td>{esc(shown)}</td></tr>')
        parts.append('<div class="table-wrap"><table id="provenance-table" class="kv">'
                     f'<tbody>{"".join(rows)}</tbody></table></div>')
    elif data.run.ok:
        parts.append(f"<pre>{esc(json.dumps(_jsonable(data.run.value), indent=2))}</pre>")
    else:
        parts.append(_absent(data.run, "run.json"))
    if data.config.ok:
        parts.append('<details id="config"><summary>Resolved configuration (config.yaml)'
                     f'</summary><pre>{esc(data.config.value)}</pre></details>')
    else:
        parts.append(_absent(data.config, "config.yaml"))
    return _section("provenance", "Provenance", "".join(parts))


def _behaviour(data: RunData, figs: dict[str, Any]) -> str:
    if not data.metrics.ok:
        return _section("behaviour", "Behaviour", _absent(data.metrics, "play/metrics.parquet"))
    df: pd.DataFrame = data.metrics.value
    body = _table(df, "metrics-table") + _figure(
        figs.get("behaviour"), "Behaviour per condition and bet type", "behaviour-figure")
    return _section("behaviour", "Behaviour (play)", body,
                    "One row per prompt condition and bet type; rates are shares of games.")


def _sae_quality(data: RunData, figs: dict[str, Any]) -> str:
    if not data.sae_quality.ok:
        return _section("sae-quality", "SAE quality", _absent(data.sae_quality,
                                                              "sae_quality.json"))
    q = data.sae_quality.value
    if not isinstance(q, dict):
        return _section("sae-quality", "SAE quality",
                        '<p class="not-run">sae_quality.json: expected an object per layer</p>')
    rows = []
    for layer, vals in q.items():
        row = {"layer": _int(layer) if _int(layer) is not None else layer}
        if isinstance(vals, dict):
            row.update(vals)
        rows.append(row)
    df = pd.DataFrame(rows)
    body = _table(df, "sae-table") + _figure(figs.get("sae_quality"), "SAE quality per layer",
                                             "sae-figure")
    return _section("sae-quality", "SAE quality per layer", body,
                    "fvu: fraction of variance unexplained; l0: active features per token; "
                    "dead: share of features that never fire; loss increase: next-token loss "
                    "with the SAE spliced in minus without.")


def _best_tests(tests: pd.DataFrame, alpha: float) -> dict[str, dict[str, Any]]:
    """Per feature, the causal test to show in the table: a significant one (the verdict: the
    baseline and, where there is one, the null band) first, then lowest q, then largest |effect|.

    Degenerate comparisons (zero variance) are shown only when nothing else exists, since their
    q is not a real test result.
    """
    out: dict[str, dict[str, Any]] = {}
    if tests.empty or not {"layer", "feature_id"} <= set(tests.columns):
        return out
    df = tests.copy()
    df["verdict_"] = verdict(df, alpha)
    df["_ns"] = ~df["verdict_"]
    df["_deg"] = df["degenerate"].fillna(False).astype(bool) if "degenerate" in df else False
    df["_q"] = pd.to_numeric(df["q"], errors="coerce") if "q" in df else math.nan
    df["_abs"] = pd.to_numeric(df["effect"], errors="coerce").abs() if "effect" in df else 0.0
    df = df.sort_values(["_ns", "_deg", "_q", "_abs"], ascending=[True, True, True, False],
                        na_position="last")
    df = df.drop_duplicates(subset=["layer", "feature_id"], keep="first")
    for rec in _records(df.drop(columns=["_ns", "_deg", "_q", "_abs"])):
        out.setdefault(_key(rec.get("layer"), rec.get("feature_id")), rec)
    return out


def _feature_rows(data: RunData) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Merge discover, causal features and causal tests into one row per feature."""
    rows: dict[str, dict[str, Any]] = {}

    def row_for(rec: dict[str, Any]) -> dict[str, Any]:
        k = _key(rec.get("layer"), rec.get("feature_id"))
        if k not in rows:
            rows[k] = {"key": k, "feature": _feature_name(rec.get("layer"), rec.get("feature_id"),
                                                          rec.get("feature")),
                       "layer": _int(rec.get("layer")), "feature_id": _int(rec.get("feature_id"))}
        return rows[k]

    causal_keys: set[str] = set()
    if data.causal_features.ok:
        for rec in _records(data.causal_features.value):
            causal_keys.add(_key(rec.get("layer"), rec.get("feature_id")))
    if data.discover.ok:
        disc = data.discover.value
        if "candidate" in disc.columns and {"layer", "feature_id"} <= set(disc.columns):
            # filter before converting to records: discover may list every SAE feature
            keys = disc["layer"].astype("Int64").astype(str) + ":" + \
                disc["feature_id"].astype("Int64").astype(str)
            disc = disc[disc["candidate"].fillna(False).astype(bool) | keys.isin(causal_keys)]
        for rec in _records(disc.head(MAX_FEATURE_ROWS)):
            r = row_for(rec)
            r.update(direction=rec.get("direction"), disc_d=rec.get("d"), disc_q=rec.get("q"),
                     candidate=rec.get("candidate"),
                     mean_safe=rec.get("mean_safe"), mean_risky=rec.get("mean_risky"))
            if len(rows) >= MAX_FEATURE_ROWS:
                break
    if data.causal_features.ok:
        for rec in _records(data.causal_features.value):
            r = row_for(rec)
            r.update(cls=rec.get("class"), same_effect=rec.get("same_effect"),
                     n_significant=rec.get("n_significant"), best_q=rec.get("best_q"),
                     summary=rec.get("summary"))
    tests_by: dict[str, list[list[Any]]] = {}
    shown: list[str] = []
    if data.causal_tests.ok:
        tests = data.causal_tests.value
        shown = [c for c in TEST_COLUMNS if c in tests.columns
                 and c not in ("layer", "feature_id")]
        keys = [_key(la, f) for la, f in zip(tests.get("layer", []), tests.get("feature_id", []),
                                              strict=False)]
        # rows as arrays under one column list, floats to 4 digits: a run can have tens of
        # thousands of tests, and repeating every key in every row would triple the page
        values = _jsonable(tests[shown].to_numpy(dtype=object).tolist()) if shown else []
        for k, row in zip(keys, values, strict=False):
            tests_by.setdefault(k, []).append([_round(v) for v in row])
        for k, rec in _best_tests(tests, data.alpha).items():
            if k not in rows and len(rows) >= MAX_FEATURE_ROWS:
                continue
            r = row_for(rec)
            r.update(metric=rec.get("metric"), test_condition=rec.get("condition"),
                     effect=rec.get("effect"), ci_low=rec.get("ci_low"),
                     ci_high=rec.get("ci_high"), causal_q=rec.get("q"),
                     null_z=rec.get("null_z"), null_p=rec.get("null_p"),
                     verdict=verdict_label(rec, data.alpha),
                     significant=bool(rec.get("verdict_")))
    for r in rows.values():  # the behavioural direction has no feature id (nor dashboard)
        if r["feature_id"] is not None and r["feature_id"] < 0:
            r["feature_id"] = None
    ordered = sorted(rows.values(), key=lambda r: (r["layer"] is None, r["feature_id"] is None,
                                                   r["layer"] or 0, r["feature_id"] or 0))
    return ordered, {"columns": shown,
                     "by_feature": {k: v for k, v in tests_by.items() if k in rows}}


def _features(data: RunData, template: str | None,
              figs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    alpha = data.alpha
    if not (data.discover.ok or data.causal_features.ok or data.causal_tests.ok):
        body = _absent(data.discover, "discover.parquet / causal_features.parquet")
        return _section("features", "Candidate and causal features", body), {}
    rows, tests_by = _feature_rows(data)
    cols = [("feature", "Feature"), ("layer", "Layer"), ("feature_id", "ID"),
            ("direction", "Direction"), ("disc_d", "d (discover)"), ("disc_q", "q (discover)"),
            ("cls", "Causal class"), ("metric", "Best test"), ("test_condition", "Condition"),
            ("effect", "Effect"), ("ci", "95% CI"), ("causal_q", "q (causal)"),
            ("verdict", "Significant"), ("null_z", "null z"), ("null_p", "null p"),
            ("n_significant", "# sig."), ("same_effect", "Same effect")]
    head = "".join(f'<th data-col="{c}" tabindex="0" title="Click to sort">{esc(t)}</th>'
                   for c, t in cols)
    if template:
        head += '<th data-col="link" class="nosort">Neuronpedia</th>'
    body_rows = []
    for r in rows:
        cells = []
        for c, _ in cols:
            if c == "ci":
                lo, hi = r.get("ci_low"), r.get("ci_high")
                text = "–" if _is_missing(lo) and _is_missing(hi) else f"[{fmt(lo)}, {fmt(hi)}]"
                cells.append(f'<td class="num" data-sort="{esc(_sort_key(lo))}">{esc(text)}</td>')
                continue
            v = r.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            extra = ""
            if c == "disc_q" and num and (r["candidate"] if isinstance(r.get("candidate"), bool)
                                          else v <= alpha):
                extra = " sig"
            if c == "causal_q" and num and r.get("significant"):  # the verdict, not q alone
                extra = " sig"
            if c == "verdict" and v:
                extra = f" verdict-{v.split()[0]}"
            if c == "effect" and num:
                extra = " pos" if v > 0 else (" neg" if v < 0 else "")
            cls = f' class="{"num" if num else "txt"}{extra}"'
            cells.append(f'<td{cls} data-sort="{esc(_sort_key(v))}">{esc(fmt(v))}</td>')
        if template:
            if r["layer"] is not None and r["feature_id"] is not None:
                url = template.format(layer=r["layer"], feature_id=r["feature_id"])
                cells.append(f'<td><a class="np" href="{esc(url)}" target="_blank" '
                             f'rel="noopener noreferrer">open</a></td>')
            else:
                cells.append("<td></td>")
        title = f' title="{esc(r["summary"])}"' if r.get("summary") else ""
        body_rows.append(f'<tr data-key="{esc(r["key"])}" data-feature="{esc(r["feature"])}"'
                         f'{title}>{"".join(cells)}</tr>')
    missing = []
    for loaded, name in ((data.discover, "discover.parquet"),
                         (data.causal_tests, "causal_tests.parquet"),
                         (data.causal_features, "causal_features.parquet")):
        if not loaded.ok:
            missing.append(f"{name}: {loaded.problem}")
    missing_html = "".join(f'<p class="not-run">{esc(m)}</p>' for m in missing)
    body = (
        f"{missing_html}{band_figures(figs or {}, data)}"
        '<div class="controls"><label>Filter <input id="feature-filter" type="search" '
        'placeholder="feature, layer, class, condition…" autocomplete="off"></label> '
        f'<span id="feature-count">{len(rows)} features</span></div>'
        f'<div class="table-wrap tall"><table id="feature-table" class="data sortable">'
        f'<thead><tr>{head}</tr></thead><tbody>{"".join(body_rows)}</tbody></table></div>'
        '<div id="feature-details" class="details-box" aria-live="polite">'
        "Click a row to see every causal test of that feature.</div>"
    )
    view = data.view()
    note = (f"Candidates from <em>discover</em> ({esc(view.label_a)} vs {esc(view.label_b)}; "
            "Welch t, BH-FDR q, "
            "Cohen's d) merged with the <em>causal</em> stage; the causal columns show each "
            "feature's strongest test (a significant one first: against the baseline and, "
            "where it has one, its null band; q in bold only then). Click a header to sort.")
    feat_json = {r["key"]: {k: _round(v, 5) for k, v in r.items() if v is not None}
                 for r in rows}
    return _section("features", "Candidate and causal features", body, note), {
        "features": feat_json, "tests": tests_by}


def _pathways(data: RunData, graph: dict[str, Any] | None, figs: dict[str, Any]) -> str:
    if graph is None:
        problem = data.graph if not data.graph.ok else data.edges
        return _section("pathways", "Feature pathways", _absent(problem, "pathways/graph.json"))
    n, m = len(graph["nodes"]), len(graph["edges"])
    signal = graph.get("signal")
    signal_note = f" Signal shown: <strong>{esc(signal)}</strong>." if signal else ""
    body = (
        '<div class="legend"><span class="sw pos"></span> patching the source raises the '
        'target <span class="sw neg"></span> lowers it · <span class="sw dash"></span> '
        "mediated · line width ∝ |d| · layers run left to right · click a node or an edge</div>"
        '<div class="graph-row"><div id="pathway-graph" role="img" '
        f'aria-label="Pathway graph with {n} features and {m} edges"></div>'
        '<aside id="details" class="details-box" aria-live="polite">'
        "Click a node or an edge to see its statistics.</aside></div>"
    )
    if n == 0:
        body += '<p class="not-run">The pathway stage found no edges.</p>'
    body += edge_table(data)
    static = _figure(figs.get("pathways"), "Pathway graph (static)", "pathway-figure")
    if static:
        body += ("<details class=\"static-fig\"><summary>Static figure (PNG/SVG for papers)"
                 f"</summary>{static}</details>")
    return _section("pathways", "Feature pathways", body,
                    f"{n} features, {m} edges: source feature S → target T when patching S "
                    "shifts T's activation (paired test over prompts, BH-FDR) and, where the "
                    "source has null arms, beats the same shift under them." + signal_note)


def _chains(data: RunData) -> tuple[str, list[dict[str, Any]]]:
    if not data.chains.ok:
        return _section("chains", "Strongest chains",
                        _absent(data.chains, "pathways/chains.parquet")), []
    df: pd.DataFrame = data.chains.value
    if "strength" in df.columns:
        df = df.sort_values("strength", ascending=False, key=lambda s: s.abs())
    df = df.head(50).reset_index(drop=True)
    recs = _records(df)
    has_signal = "signal" in df.columns
    rows = []
    for i, rec in enumerate(recs):
        sig = f'<td>{esc(rec.get("signal"))}</td>' if has_signal else ""
        rows.append(f'<tr class="chain" data-chain="{i}" tabindex="0"><td>'
                    f'{esc(rec.get("chain"))}</td>{sig}<td class="num">'
                    f'{esc(fmt(rec.get("length")))}</td><td>{esc(_sign_text(rec.get("sign")))}'
                    f'</td><td class="num">{esc(fmt(rec.get("strength")))}</td></tr>')
    sig_head = "<th>Signal</th>" if has_signal else ""
    body = ('<div class="table-wrap"><table id="chains-table" class="data"><thead><tr>'
            f"<th>Chain</th>{sig_head}<th>Edges</th><th>Sign</th><th>Strength (weakest |d|)"
            f'</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
    return _section("chains", "Strongest chains", body,
                    "Click a chain to highlight it in the graph."), recs


def _sign_text(sign: Any) -> str:
    """``+``/``−`` for a sign given as a number or a string."""
    if isinstance(sign, (int, float)) and not isinstance(sign, bool) and not _is_missing(sign):
        return "+" if sign > 0 else ("−" if sign < 0 else "0")
    return fmt(sign)


def _words(data: RunData, template: str | None, features: dict[str, Any]) -> str:
    alpha = data.alpha
    if not data.words.ok:
        return _section("words", "Words each feature adds and removes",
                        _absent(data.words, "words.parquet"))
    df: pd.DataFrame = data.words.value
    need = {"layer", "feature_id", "word"}
    if not need <= set(df.columns):
        return _section("words", "Words each feature adds and removes",
                        f'<p class="not-run">words.parquet lacks {esc(sorted(need))}</p>')
    if "direction" not in df.columns:
        zc = "z" if "z" in df.columns else "log_odds"
        df = df.assign(direction=["adds" if v > 0 else "removes" for v in df[zc]])
    score = "z" if "z" in df.columns else ("log_odds" if "log_odds" in df.columns else None)
    group_cols = [c for c in ("context", "condition", "scale") if c in df.columns]
    if score:
        # keep only what is shown (the top words per list) before the per-feature loop, since
        # words.parquet may hold every word of every feature and condition
        df = (df.assign(_abs=df[score].abs()).sort_values("_abs", ascending=False)
              .groupby(["layer", "feature_id", *group_cols, "direction"], dropna=False,
                       sort=False).head(WORDS_PER_LIST).drop(columns="_abs"))
    causal = {k for k, v in features.get("features", {}).items() if v.get("cls") is not None}
    cards = []
    for (layer, fid), g in df.groupby(["layer", "feature_id"], sort=True):
        k = _key(layer, fid)
        if causal and k not in causal and len(cards) >= MAX_WORD_FEATURES // 2:
            continue
        if len(cards) >= MAX_WORD_FEATURES:
            break
        name = features.get("features", {}).get(k, {}).get("feature") or _feature_name(layer,
                                                                                      fid)
        link = ""
        if template:
            url = template.format(layer=_int(layer), feature_id=_int(fid))
            link = (f' <a class="np" href="{esc(url)}" target="_blank" '
                    'rel="noopener noreferrer">Neuronpedia</a>')
        cls = features.get("features", {}).get(k, {}).get("cls")
        cls_html = f' <span class="tag">{esc(cls)}</span>' if cls else ""
        blocks = []
        groups = g.groupby(group_cols, sort=True, dropna=False) if group_cols else [((), g)]
        for gkey, sub in groups:
            gkey = gkey if isinstance(gkey, tuple) else (gkey,)
            label = " · ".join(f"{c} {fmt(v)}" for c, v in zip(group_cols, gkey, strict=False))
            lists = []
            for direction in ("adds", "removes"):
                part = sub[sub["direction"].astype(str) == direction]
                if score:
                    part = part.reindex(part[score].abs().sort_values(ascending=False).index)
                part = part.head(WORDS_PER_LIST)
                items = []
                for rec in _records(part):
                    counts = (f'{fmt(rec.get("count_patched"))} vs '
                              f'{fmt(rec.get("count_baseline"))}')
                    qv, wsig = rec.get("q"), rec.get("significant")
                    sig = " sig" if (wsig if isinstance(wsig, bool) else
                                     isinstance(qv, (int, float)) and qv <= alpha) else ""
                    tip = f'z {fmt(rec.get("z"))}, log-odds {fmt(rec.get("log_odds"))}, q {fmt(qv)}'
                    items.append(f'<li class="word{sig}" title="{esc(tip)}"><code>'
                                 f'{esc(rec.get("word"))}</code> <span class="cnt">{esc(counts)}'
                                 "</span></li>")
                empty = '<li class="none">none</li>'
                lists.append(f'<div class="wl {direction}"><h5>{direction}</h5><ol>'
                             f'{"".join(items) or empty}</ol></div>')
            blocks.append(f'<div class="wgroup"><h4>{esc(label)}</h4>'
                          f'<div class="wlists">{"".join(lists)}</div></div>')
        cards.append(f'<div class="card words-card" data-key="{esc(k)}"><h3>{esc(name)}'
                     f'{cls_html}{link}</h3>{"".join(blocks)}</div>')
    body = f'<div class="cards">{"".join(cards)}</div>' if cards else (
        '<p class="not-run">words.parquet has no rows.</p>')
    return _section("words", "Words each feature adds and removes", body,
                    "Counts are patched vs baseline responses; bold words are significant "
                    f"(q ≤ {alpha:g}, log-odds with an informative Dirichlet prior, BH-FDR, and "
                    "the words stage's own thresholds). Hover for z and q.")


def _responses(data: RunData) -> str:
    if not data.trials.ok:
        return _section("responses", "Example responses", _absent(data.trials, "trials.parquet"))
    df: pd.DataFrame = data.trials.value
    gcol = next((c for c in ("condition", "prompt_type", "bet_type") if c in df.columns), None)
    meta_cols = [c for c in ("feature", "layer", "feature_id", "scale", "trial", "trial_index",
                             "decision", "amount", "bet", "valid") if c in df.columns][:5]
    groups = df.groupby(gcol, sort=True, dropna=False) if gcol else [("all trials", df)]
    blocks = []
    for i, (gval, sub) in enumerate(groups):
        if i >= MAX_EXAMPLE_GROUPS:
            break
        items = []
        for rec in _records(sub.head(EXAMPLES_PER_GROUP)):
            text = str(rec.get("response") or "")
            if len(text) > MAX_RESPONSE_CHARS:
                text = text[:MAX_RESPONSE_CHARS] + " …"
            meta = " · ".join(f"{c} {fmt(rec.get(c))}" for c in meta_cols)
            items.append(f'<li><div class="meta">{esc(meta)}</div>'
                         f'<pre class="response">{esc(text)}</pre></li>')
        blocks.append(f'<div class="card"><h3>{esc(fmt(gval))} <span class="cnt">'
                      f'({len(sub)} trials)</span></h3><ul class="examples">'
                      f'{"".join(items)}</ul></div>')
    return _section("responses", "Example responses", f'<div class="cards">{"".join(blocks)}</div>',
                    f"The first {EXAMPLES_PER_GROUP} responses per "
                    f"{esc(gcol or 'run')}, shown as plain text.")


