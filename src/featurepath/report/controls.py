"""The control arms in the report: the verdict of a causal test, the "Controls" summary and the
pathway edge table with each edge's mechanism and null band.

Why a summary in words: a table of hundreds of tests hides the one thing a reader must know
first — whether anything the run found is more than "any push of this size moves the model".
The null arms (the same magnitude along random directions) answer that for each feature test,
and the behavioural direction (a positive control) says whether a push *can* move behaviour at
all; the summary states both plainly. Every string from a file goes through :func:`esc`, and
every column it reads may be missing (runs from before the control arms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from featurepath.report.blocks import _figure, _section, _table
from featurepath.report.data import MetricView, RunData
from featurepath.report.format import _is_missing, _records, _sort_key, esc, fmt
from featurepath.rundir import ZERO_SIZE_TEST

MAX_EDGE_ROWS = 300


# --------------------------------------------------------------------------------------------
# columns of causal_tests, with fallbacks for older runs


def _bool(df: pd.DataFrame, col: str, default: bool | pd.Series = False) -> pd.Series:
    if col in df.columns:
        return df[col].astype("boolean").fillna(False).astype(bool)
    if isinstance(default, pd.Series):
        return default
    return pd.Series(default, index=df.index, dtype=bool)


def vs_baseline(tests: pd.DataFrame, alpha: float) -> pd.Series:
    """``vs_baseline``, else (older runs) not degenerate and q <= alpha."""
    if "vs_baseline" in tests.columns:
        return _bool(tests, "vs_baseline")
    q = pd.to_numeric(tests["q"], errors="coerce") if "q" in tests.columns else \
        pd.Series(float("nan"), index=tests.index)
    return (q <= alpha).fillna(False) & ~_bool(tests, "degenerate")


def verdict(tests: pd.DataFrame, alpha: float) -> pd.Series:
    """``significant`` (against the baseline and, where there is one, the band), else the
    older runs' verdict (:func:`vs_baseline`)."""
    return _bool(tests, "significant", vs_baseline(tests, alpha))


def has_band(tests: pd.DataFrame) -> pd.Series:
    """Tests with at least one null arm (``null_n > 0``)."""
    if "null_n" not in tests.columns:
        return pd.Series(False, index=tests.index, dtype=bool)
    return (pd.to_numeric(tests["null_n"], errors="coerce") > 0).fillna(False)


def arms(tests: pd.DataFrame) -> pd.Series:
    """``arm``, else derived: a ``~direction`` feature label is the direction, the rest
    features."""
    if "arm" in tests.columns:
        return tests["arm"].astype(str)
    feat = tests["feature"].astype(str) if "feature" in tests.columns else \
        pd.Series("", index=tests.index)
    return feat.str.contains("~direction", regex=False).map({True: "direction",
                                                            False: "feature"})


def verdict_label(rec: dict[str, Any], alpha: float) -> str:
    """One word or two for a test's verdict, for the feature table."""
    if rec.get("test") == ZERO_SIZE_TEST:
        return "zero-size"
    sig = rec.get("significant")
    n = rec.get("null_n")
    banded = isinstance(n, (int, float)) and not _is_missing(n) and n > 0
    if sig is None or _is_missing(sig):  # an older run: against the baseline only
        q, deg = rec.get("q"), rec.get("degenerate")
        sig = isinstance(q, (int, float)) and not _is_missing(q) and q <= alpha and not deg
        return "yes (no band)" if sig else "no"
    if sig:
        return "yes" if banded else "yes (no band)"
    if banded and rec.get("vs_baseline") and not rec.get("beats_null"):
        return "inside band"
    return "no"


def min_null_p(k: int) -> float:
    """The smallest empirical null p with ``k`` null arms: ``1 / (k + 1)`` (Phipson & Smyth
    2010: the feature's own rank counts)."""
    return 1.0 / (k + 1)


def k_text(ks: list[int]) -> str:
    """``"K = 16"`` or ``"K = 8–12"`` for the sorted band sizes ``ks``."""
    return f"K = {ks[0]}" if ks[0] == ks[-1] else f"K = {ks[0]}–{ks[-1]}"


def min_p_text(ks: list[int]) -> str:
    """``"1/(K+1) = 1/17 ≈ 0.0588"`` for the band sizes ``ks`` (sorted; a range when they
    differ, since a null arm whose test was degenerate leaves its band)."""
    def one(k: int) -> str:
        return f"1/{k + 1} ≈ {fmt(min_null_p(k))}"

    if len(ks) == 1:
        return f"1/(K+1) = {one(ks[0])}"
    return f"1/(K+1), from {one(ks[0])} (K = {ks[0]}) to {one(ks[-1])} (K = {ks[-1]})"


def band_limit(ks: list[int], alpha: float) -> str:
    """A warning when some bands are too small to be beaten at ``alpha`` (``""`` otherwise).

    ``1 / (K + 1) > alpha`` means even the most extreme effect has null p above alpha (and
    null q, after BH, at least as large), so that test cannot count whatever the feature does.
    """
    if not ks or min_null_p(ks[0]) <= alpha:
        return ""
    if min_null_p(ks[-1]) > alpha:
        return (f"With {k_text(ks)} no test can beat its band at α = {alpha:g}: this round "
                "explores; claims come from `featurepath confirm` (null directions drawn until "
                "each pre-registered test is decided), or run more null directions "
                "(patch.null_directions).")
    need = math.ceil(1.0 / alpha - 1.0 - 1e-9)
    return (f"Tests with fewer than {need} null arms cannot beat their band at α = {alpha:g}.")


# --------------------------------------------------------------------------------------------
# the summary


@dataclass
class ControlsSummary:
    """Counts behind the "Controls" section (all from causal_tests)."""

    alpha: float
    has_bands: bool  # the table has the band columns at all
    n_feature_tests: int = 0
    n_vs_baseline: int = 0
    n_beat: int = 0
    n_inside: int = 0
    n_no_band: int = 0
    n_zero_size: int = 0  # feature tests not run: the intervention had size zero
    zero_size_features: list[str] = field(default_factory=list)
    band_sizes: list[int] = field(default_factory=list)
    features_moving: list[str] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)
    n_direction_tests: int = 0
    n_direction_significant: int = 0
    n_direction_vs_baseline: int = 0
    n_direction_banded: int = 0  # significant direction tests that have a band of their own
    n_direction_beat: int = 0    # ... and lie outside it
    per_metric: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def direction_moves(self) -> bool:
        return self.n_direction_significant > 0

    @property
    def direction_within_band(self) -> bool:
        """Every significant direction test with a band of its own stays inside it."""
        return self.n_direction_banded > 0 and self.n_direction_beat == 0

    def headline(self) -> str:
        """The plain sentence: what moved behaviour, the positive control and the features."""
        n = len(self.features_moving)
        some = (f"{n} feature{'s' if n != 1 else ''} "
                f"({', '.join(self.features_moving[:8])}{', …' if n > 8 else ''})")
        if not self.directions:
            tail = (f"{some} move{'s' if n == 1 else ''} behaviour" if n
                    else "No feature moves behaviour")
            return (f"{tail}. No behavioural direction was patched "
                    "(patch.behavioural_direction), so there is no positive control.")
        if self.direction_moves and not n and self.direction_within_band:
            return ("The behavioural direction moves behaviour against the baseline, but no "
                    "more than random directions of its size; no feature moves behaviour.")
        if self.direction_moves and not n:
            return "The behavioural direction moves behaviour and no feature does."
        if self.direction_moves:
            return f"The behavioural direction moves behaviour, and so do {some}."
        if n:
            return f"{some} move{'s' if n == 1 else ''} behaviour, but the behavioural direction " \
                   "does not."
        return ("Neither the behavioural direction nor any feature moves behaviour: the positive "
                "control failed, so the features' null result says little.")


def summarise_controls(tests: pd.DataFrame, alpha: float,
                       view: MetricView | None = None) -> ControlsSummary:
    """Count feature tests against the baseline and their bands, and the direction's tests.
    Behaviour = the task's metrics but the invalid rate (``view``: default task): a push that
    only breaks the answer format has not moved the decision."""
    view = view or MetricView.of()
    out = ControlsSummary(alpha=alpha, has_bands={"null_n", "beats_null"} <= set(tests.columns))
    if tests.empty:
        return out
    arm = arms(tests)
    sig, base, band = verdict(tests, alpha), vs_baseline(tests, alpha), has_band(tests)
    beats = _bool(tests, "beats_null")
    metric = tests["metric"].astype(str) if "metric" in tests.columns else \
        pd.Series("", index=tests.index)
    behaviour = metric.isin(view.behaviour)
    feat = arm == "feature"
    out.n_feature_tests = int(feat.sum())
    out.n_vs_baseline = int((feat & base).sum())
    out.n_beat = int((feat & base & band & beats).sum())
    out.n_inside = int((feat & base & band & ~beats).sum())
    out.n_no_band = int((feat & base & ~band).sum())
    zero = feat & (tests["test"].astype(str) == ZERO_SIZE_TEST) if "test" in tests.columns \
        else pd.Series(False, index=tests.index)
    out.n_zero_size = int(zero.sum())
    if "null_n" in tests.columns:
        ks = pd.to_numeric(tests.loc[feat & band, "null_n"], errors="coerce").dropna()
        out.band_sizes = sorted({int(k) for k in ks})
    names = tests["feature"].astype(str) if "feature" in tests.columns else \
        pd.Series("?", index=tests.index)
    out.features_moving = list(dict.fromkeys(names[feat & sig & behaviour]))
    out.zero_size_features = list(dict.fromkeys(names[zero]))
    direc = arm == "direction"
    out.directions = list(dict.fromkeys(names[direc]))
    out.n_direction_tests = int((direc & behaviour).sum())
    out.n_direction_significant = int((direc & behaviour & sig).sum())
    out.n_direction_vs_baseline = int((direc & behaviour & base).sum())
    out.n_direction_banded = int((direc & behaviour & sig & band).sum())
    out.n_direction_beat = int((direc & behaviour & sig & band & beats).sum())
    rows = []
    for m in dict.fromkeys(metric[feat]):
        sel = feat & (metric == m)
        row = {"metric": view.labels.get(m, m), "feature tests": int(sel.sum()),
               "vs baseline": int((sel & base).sum()),
               "beat band": int((sel & base & band & beats).sum()),
               "inside band": int((sel & base & band & ~beats).sum()),
               "no band": int((sel & base & ~band).sum()),
               "significant": int((sel & sig).sum())}
        if out.n_zero_size:
            row["zero-size (not tested)"] = int((sel & zero).sum())
        rows.append(row)
    out.per_metric = pd.DataFrame(rows)
    return out


def _sentences(s: ControlsSummary) -> list[str]:
    """The summary as escaped HTML sentences (one list item each)."""
    items = []
    tested = f"{s.n_vs_baseline} of {s.n_feature_tests} feature tests are significant against " \
             "the baseline"
    if s.has_bands:
        parts = [f"{s.n_beat} of those beat their null band", f"{s.n_inside} stay inside it"]
        if s.n_no_band:
            parts.append(f"{s.n_no_band} have no band")
        tested += "; " + ", ".join(parts)
    items.append(esc(tested + "."))
    if s.n_zero_size:
        n = len(s.zero_size_features)
        who = ", ".join(s.zero_size_features[:8]) + (", …" if n > 8 else "")
        items.append(esc(
            f"{s.n_zero_size} feature tests ({n} feature{'s' if n != 1 else ''}: {who}) are "
            f"degenerate, {ZERO_SIZE_TEST}: the patched trials and their null arms reproduce the "
            "baseline trial for trial (e.g. a scale clamp of a feature that is inactive on the "
            "prompts is zero), so they were not tested and never count."))
    if not s.has_bands:
        items.append(esc("These causal tests carry no null-band columns (a run from before the "
                         "control arms): significance is against the baseline only."))
    elif s.band_sizes:
        text = (f"Each band holds {k_text(s.band_sizes)} null arms (the feature's intervention "
                "magnitude along random directions); the smallest possible null p is "
                f"{min_p_text(s.band_sizes)}.")
        limit = band_limit(s.band_sizes, s.alpha)
        text += f" {limit}" if limit else ""
        items.append(esc(text))
    else:
        items.append(esc("No feature test has a null band (patch.null_directions was 0)."))
    if s.directions:
        who = ", ".join(s.directions)
        if s.direction_moves:
            text = (f"The behavioural direction ({who}) moved behaviour: "
                    f"{s.n_direction_significant} of its {s.n_direction_tests} behaviour tests "
                    "are significant")
        else:
            text = (f"The behavioural direction ({who}) did not move behaviour: "
                    f"{s.n_direction_significant} of its {s.n_direction_tests} behaviour tests "
                    "are significant")
        if s.n_direction_vs_baseline != s.n_direction_significant:
            text += f" ({s.n_direction_vs_baseline} against the baseline alone)"
        if s.n_direction_banded:
            text += (f"; against random directions of its own size (patch.direction_nulls), "
                     f"{s.n_direction_beat} of the {s.n_direction_banded} significant tests "
                     "with a band lie outside it")
        items.append(esc(text + "."))
    items.append(f"<strong>{esc(s.headline())}</strong>")
    return items


def controls_section(data: RunData) -> str:
    """The "Controls" section: the summary sentences and a table per metric."""
    title = "Controls: null bands and the behavioural direction"
    if not data.causal_tests.ok:
        return _section("controls", title, f'<p class="not-run">causal_tests.parquet: '
                                          f"{esc(data.causal_tests.problem)}</p>")
    view = data.view()
    s = summarise_controls(data.causal_tests.value, data.alpha, view)
    sentences = _sentences(s)
    from featurepath.analysis.direction_source import read_source, source_text

    origin = source_text(read_source(data.run_dir))
    if origin and s.directions:  # a transferred direction is another question: say so first
        sentences.insert(0, esc(
            f"The behavioural direction is {origin} (patch.direction_from): its tests ask "
            "whether that task's continue-minus-exit direction moves this task, against random "
            "directions of its size."))
    items = "".join(f'<li class="direction-source">{t}</li>' if origin and i == 0 and s.directions
                    else f"<li>{t}</li>" for i, t in enumerate(sentences))
    body = f'<ul id="controls-summary" class="summary">{items}</ul>'
    if not s.per_metric.empty:
        body += _table(s.per_metric, "controls-table")
    note = ("A feature test counts (“significant”) when it beats the baseline (BH q ≤ "
            f"{data.alpha:g} and a practical minimum effect) and, where it has one, its null "
            "band (null q ≤ α). Behaviour = "
            f"{', '.join(view.labels.get(m, m) for m in view.behaviour)}; invalid-rate tests "
            "are counted in the table but not as moving behaviour.")
    return _section("controls", title, body, note)


def band_figures(figs: dict[str, Any], data: RunData) -> str:
    """The null-band figures (the readout shown, the rates folded) with a caption that says
    what the band is and how small a null p can get."""
    view = data.view()
    names = [(f"null_band_{m}", view.labels.get(m, m)) for m in view.dose
             if figs.get(f"null_band_{m}")]
    if not names:
        return ""
    ks: list[int] = []
    if data.causal_tests.ok:
        ks = summarise_controls(data.causal_tests.value, data.alpha, view).band_sizes
    if ks:
        p_text = (f"With {k_text(ks)} null arms the smallest possible null p is "
                  f"{min_p_text(ks)}.")
        limit = band_limit(ks, data.alpha)
        p_text += f" {limit}" if limit else ""
    else:
        p_text = "With K null arms the smallest possible null p is 1/(K+1)."
    out = []
    for i, (key, metric) in enumerate(names):
        caption = esc(
            f"Effect on {metric} of each feature (rows) in each condition with a null band "
            "(panels), patched minus baseline. Grey dots: the band — the same test for each "
            "null arm, i.e. the feature's per-row intervention magnitude along a random "
            "direction instead of its decoder row. Coloured: the feature's own effect, blue "
            "when it beats the band (null q ≤ α), orange when it stays inside, hollow without "
            "a band; a black ring marks a significant verdict (the baseline and the band); a "
            f"diamond is the behavioural direction. Dashed: no change from the baseline. "
            f"{p_text}")
        fig = _figure(figs[key], f"Effect on {metric} against the null band", f"{key}-figure",
                      caption)
        out.append(fig if i == 0 else f'<details class="static-fig"><summary>The same for '
                                      f"{esc(metric)}</summary>{fig}</details>")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# pathway edges


def edge_table(data: RunData) -> str:
    """The edges of pathways/edges.parquet (those that count) with mechanism and null band."""
    if not data.edges.ok:
        return ""
    df: pd.DataFrame = data.edges.value
    if "edge" in df.columns:
        df = df[df["edge"].astype("boolean").fillna(False).astype(bool)]
    if df.empty:
        return ""
    if "q" in df.columns:
        df = df.sort_values("q", na_position="last", kind="mergesort")
    cols = [c for c in ("source", "target", "signal", "condition", "d", "q", "null_z", "null_p",
                        "mechanism", "carry_share") if c in df.columns]
    head = "".join(f'<th data-col="{esc(c)}" tabindex="0">{esc(c.replace("_", " "))}</th>'
                   for c in cols)
    rows = []
    for rec in _records(df[cols].head(MAX_EDGE_ROWS)):
        cells = []
        for c in cols:
            v = rec.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cls = "num" if num else "txt"
            if c == "q":  # every row here is an edge: its q counts
                cls += " sig"
            if c == "mechanism" and v:
                cls += f" mech-{esc(v)}"
            cells.append(f'<td class="{cls}" data-sort="{esc(_sort_key(v))}">'
                         f"{esc(fmt(v) if v not in ('', None) else '–')}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f" (first {MAX_EDGE_ROWS})" if len(df) > MAX_EDGE_ROWS else ""
    return (f'<details id="edge-list" open><summary>{len(df)} edges{esc(more)}: mechanism and '
            "null band</summary>"
            '<div class="table-wrap tall"><table id="edge-table" class="data sortable">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="note">mechanism: <em>direct</em> when the patch delta carried up the '
            "residual stream unchanged explains at least half of the target's shift (same "
            "sign), <em>mediated</em> otherwise; null p: the shift against the same shift under "
            "the source's null arms.</p></details>")
