"""The report's Confirmation section and the one-screen summary at the top of the page.

Why a section of its own: the confirmation is the run's only claim-bearing test (pre-registered,
on held-out prompts, against sequentially drawn null directions), so the reader must see what
was pre-registered, the verdicts, and each feature's effect against its own null draws — apart
from the screen-half exploration that chose the candidates.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from featurepath.report.blocks import _figure, _section, _table
from featurepath.report.controls import _bool, arms, has_band, vs_baseline
from featurepath.report.data import RunData
from featurepath.report.format import esc
from featurepath.report.plots import BAND_DOT, BEATS, INSIDE, FigureFiles, _save
from featurepath.rundir import RunDir

SHOWN = ["feature", "condition", "metric", "predicted_sign", "n_prompts", "effect",
         "p_baseline", "null_draws", "null_exceed", "p_null", "q", "significant"]


def _read(run_dir: Path) -> tuple[pd.DataFrame | None, dict[str, Any] | None, pd.DataFrame]:
    rd = RunDir(run_dir)
    verdicts = pd.read_parquet(rd.verdicts) if rd.verdicts.exists() else None
    prereg = json.loads(rd.preregistration.read_text()) if rd.preregistration.exists() \
        else None
    rounds = sorted((rd.confirm / "rounds").glob("L*-r*.parquet")) \
        if (rd.confirm / "rounds").exists() else []
    draws = pd.concat([pd.read_parquet(p) for p in rounds], ignore_index=True) if rounds \
        else pd.DataFrame(columns=["feature", "condition", "draw", "null_effect"])
    return verdicts, prereg, draws


def confirm_figure(run_dir: Path, out_dir: Path) -> FigureFiles | None:
    """Each test's effect (blue: confirmed, orange: not) against the null effects of the
    directions it drew (grey), one row per test; only the draws it used (its first
    ``null_draws``), so a test that stopped early shows its short band."""
    verdicts, _, draws = _read(run_dir)
    if verdicts is None or verdicts.empty:
        return None
    fig = Figure(figsize=(7.5, 0.42 * len(verdicts) + 1.1), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    labels = []
    for y, r in enumerate(verdicts.itertuples()):
        labels.append(f"{r.feature} {r.condition}")
        g = draws[(draws["feature"] == r.feature) & (draws["condition"] == r.condition)]
        x = g.sort_values("draw")["null_effect"].to_numpy(float)[: int(r.null_draws)]
        if x.size:
            ax.scatter(x, y + rng.uniform(-0.25, 0.25, x.size), s=6, color=BAND_DOT,
                       alpha=0.6, linewidths=0)
        if math.isfinite(float(r.effect)):
            ax.scatter([r.effect], [y], s=60, color=BEATS if r.significant else INSIDE,
                       edgecolors="black", zorder=3)
    ax.axvline(0.0, color="black", lw=0.8, ls="--")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"effect on {verdicts['metric'].iloc[0]} (patched − baseline, mean over "
                  "confirm prompts)")
    return _save(fig, out_dir, "confirm")


def confirm_section(data: RunData, figs: dict[str, Any] | None = None) -> str:
    """Pre-registration, verdicts and the figure; "not run yet" without a confirmation."""
    title = "Confirmation: pre-registered, held-out prompts, sequential null directions"
    verdicts, prereg, _ = _read(data.run_dir)
    if verdicts is None or prereg is None:
        return _section("confirmation", title, '<p class="not-run">No confirmation in this run '
                                               "yet: <code>featurepath confirm RUN</code> "
                                               "makes one (confirm/verdicts.parquet).</p>")
    nd = prereg.get("null_design", {})
    ids = prereg.get("prompts", {}).get("ids", {})
    pre = (f"<p>Pre-registration <code>{esc(prereg.get('sha256', '')[:16])}</code> "
           f"(<code>confirm/preregistration.json</code>): {esc(prereg.get('n_tests'))} tests "
           f"from {esc(prereg.get('candidates_from'))}, primary metric "
           f"{esc(prereg.get('metric'))}, α = {esc(prereg.get('alpha'))}, null directions "
           f"in rounds of {esc(nd.get('round_size'))} until h = {esc(nd.get('h'))} "
           f"exceedances or the cap of {esc(nd.get('cap'))}; prompts: "
           f"{esc(prereg.get('prompts', {}).get('half'))} half, "
           + esc(", ".join(f"{len(v)} {k}" for k, v in ids.items())) + ".</p>")
    table = _table(verdicts[[c for c in SHOWN if c in verdicts.columns]], "confirm-table")
    fig = _figure((figs or {}).get("confirm"), "Each tested feature's effect against its null "
                  "draws", "confirm-figure")
    note = ("A test is confirmed when p = max(p_baseline, p_null) passes Benjamini–Hochberg "
            "over the pre-registered tests (q ≤ α), its |effect| is at least the practical "
            "minimum, and its sign is the predicted one. p_null is Besag & Clifford's "
            "sequential Monte Carlo p: h / draws when h null directions were as extreme, "
            "(exceedances + 1)/(cap + 1) at the cap.")
    return _section("confirmation", title, pre + table + fig, note)


def _exploration_lines(data: RunData, t: pd.DataFrame) -> list[str]:
    """The first patch round in two lines: the feature tests (with a band: baseline and band;
    without: baseline only), and a transferred behavioural direction (``patch.direction_from``)
    when there is one — the other game's direction in this one is a question of its own."""
    from featurepath.analysis.direction_source import read_source, source_text

    arm, base, banded = arms(t), vs_baseline(t, data.alpha), has_band(t)
    beats = _bool(t, "beats_null")
    f = arm == "feature"
    out = [esc(f"Exploration (screen-half prompts, not claims): of {int(f.sum())} feature "
               f"tests, {int((f & banded & base & beats).sum())} of {int((f & banded).sum())} "
               f"with a null band passed the baseline and the band; "
               f"{int((f & ~banded & base).sum())} of {int((f & ~banded).sum())} without one "
               "passed the baseline only.")]
    origin = source_text(read_source(data.run_dir))
    d = arm == "direction"
    if origin and d.any():
        out.append(esc(f"Behavioural direction {origin}: {int((d & base).sum())} of "
                       f"{int(d.sum())} tests moved behaviour against the baseline; "
                       f"{int((d & banded & base & beats).sum())} of {int((d & banded).sum())} "
                       "with a null band beat it (exploratory)."))
    return out


def summary_section(data: RunData) -> str:
    """One screen at the top: what the run found and what it did not."""
    verdicts, prereg, _ = _read(data.run_dir)
    items = []
    if verdicts is not None and prereg is not None:
        sig = verdicts[verdicts["significant"]]
        if len(sig):
            items.append("<strong>Confirmed</strong> on held-out prompts: "
                         + esc(", ".join(f"{r.feature} ({r.condition}, effect {r.effect:+.3f},"
                                         f" q {r.q:.3g})" for r in sig.itertuples())) + ".")
        else:
            items.append(f"<strong>Nothing confirmed</strong>: none of {len(verdicts)} "
                         "pre-registered tests beat both the baseline and random directions "
                         "on the held-out prompts.")
        planted = RunDir(data.run_dir / "planted_check").verdicts
        if planted.exists():
            p = pd.read_parquet(planted).iloc[0]
            items.append(esc(f"Planted check: {p['feature']} (its decoder row along the "
                             f"readout direction): effect {p['effect']:+.3f}, p_null "
                             f"{p['p_null']:.3g} after {p['null_draws']} draws — "
                             + ("confirmed by the same code." if p["significant"] else
                                "not confirmed either.")))
    else:
        items.append("No confirmation yet: `featurepath confirm RUN` makes the run's claims.")
    if data.causal_tests.ok and "significant" in data.causal_tests.value:
        t = data.causal_tests.value
        items += _exploration_lines(data, t)
    if data.edges.ok and "edge" in data.edges.value:
        n_edges = int(data.edges.value["edge"].astype(bool).sum())
        items.append(esc(f"Pathways: {n_edges} edges among {len(data.edges.value)} pairs "
                         "(exploratory)."))
    body = '<ul class="summary">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    return _section("summary", "Summary: what this run found", body)


__all__ = ["confirm_figure", "confirm_section", "summary_section"]
