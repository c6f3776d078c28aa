"""How well the attribution screen predicted the real patch, every run.

The screen's first-order estimate is known to fail in places (a saturated readout, clamps too
large for a linear term, effects that cancel), so it chooses what to patch and never what to
claim. This module measures, per context × intervention, over every patched feature that the
screen scored (its top N, discover's candidates and the random sample drawn across its whole
ranking):

- ``spearman``: the rank correlation (Spearman's ρ, with its p-value) between the screen's
  ``attribution`` and the patched effect on P(exit) (mean P(exit) of the feature's arm minus
  the mean of the context's baseline);
- ``recall``: of the ``k`` patched features with the largest |patched effect|
  (``k = min(top_n, patched − 1)``), the share the screen ranked in its top ``top_n``;
  ``recall_chance`` is that share's expectation had the screen ranked at random (the share of
  patched features in the screen's top ``top_n``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from scipy import stats as sps

from featurepath.rundir import SCREEN_CHECK_COLUMNS, SCREEN_POINT_COLUMNS, RunDir, write_table


def inactive_where_scaled(screen: pd.DataFrame, cfg) -> set[str]:
    """Features the screen saw inactive on every prompt of a context that has a scale clamp
    other than 1: there that clamp is zero-size, whatever the feature does elsewhere, so they
    are never candidates (:mod:`featurepath.pipeline.candidates`) and the screen's top N is
    counted without them."""
    scaled = {c.context for c in cfg.patch.all_conditions()
              if c.patch == "scale" and c.scale is not None and float(c.scale) != 1.0}
    sub = screen[screen["context"].isin(scaled)]
    return set(sub.loc[sub["active_share"] <= 0, "feature"])


def eligible_rank(screen: pd.DataFrame, exclude: set[str] | frozenset[str]) -> pd.Series:
    """Each row's rank within its context × intervention among the features not in
    ``exclude`` with an attribution (1 = first; NaN for the others): the order in which
    candidates take the screen's top N (:func:`featurepath.pipeline.candidates.screen_top`)."""
    ok = ~screen["feature"].isin(exclude) & screen["attribution"].notna()
    return screen[ok].groupby(["context", "intervention"])["rank"].rank(method="first") \
        .reindex(screen.index)


def screen_points(trials: pd.DataFrame, screen: pd.DataFrame, top_n: int,
                  exclude: set[str] | frozenset[str] = frozenset()) -> pd.DataFrame:
    """One row per patched feature × intervention the screen scored: its attribution and rank,
    the patched effect on P(exit), and its source (``SCREEN_POINT_COLUMNS``). ``in_top``: in
    the top ``top_n`` of its context × intervention among the features not in ``exclude``
    (the ones candidates leave out), i.e. what the screen could have handed to the patch."""
    feat = trials[(trials["arm"] == "feature") & trials["readout"].notna()]
    base = trials[(trials["arm"] == "baseline") & trials["readout"].notna()]
    if feat.empty or base.empty:
        return pd.DataFrame(columns=SCREEN_POINT_COLUMNS)
    by_layer = (base["layer"] >= 0).any()  # reconstruct: one baseline per layer and context
    keys = ["context", "layer"] if by_layer else ["context"]
    b = base.groupby(keys)["readout"].mean().rename("baseline").reset_index()
    cols = ["feature", "layer", "context", "condition"]
    if "source" in feat:
        cols.append("source")
    eff = feat.groupby(cols, dropna=False)["readout"].agg(["mean", "size"]).reset_index()
    eff = eff.merge(b, on=keys, how="inner")
    eff["effect"] = eff["mean"] - eff["baseline"]
    eff = eff.rename(columns={"condition": "intervention", "size": "n_trials"})
    if "source" not in eff:
        eff["source"] = ""
    scr = screen[["feature", "context", "intervention", "attribution", "attribution_se",
                  "rank"]].copy()
    scr["_k"] = eligible_rank(screen, exclude)
    out = eff.merge(scr, on=["feature", "context", "intervention"], how="inner")
    out["in_top"] = (out["_k"] <= top_n).fillna(False).astype(bool)
    out["source"] = out["source"].fillna("").astype(str)
    return out[SCREEN_POINT_COLUMNS].sort_values(["context", "intervention", "rank"]) \
        .reset_index(drop=True)


def screen_summary(points: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Per context × intervention: patched features, Spearman's ρ (and p) between attribution
    and patched effect, and the top-N recall of the largest patched effects
    (``SCREEN_CHECK_COLUMNS``)."""
    rows = []
    for (ctx, name), g in points.groupby(["context", "intervention"], sort=True):
        n = len(g)
        rho = p = math.nan
        if n >= 3 and g["attribution"].nunique() > 1 and g["effect"].nunique() > 1:
            r = sps.spearmanr(g["attribution"], g["effect"])
            rho, p = float(r.statistic), float(r.pvalue)
        k = min(top_n, n - 1)
        recall = chance = math.nan
        if k >= 1:
            top_eff = g.reindex(g["effect"].abs().sort_values(ascending=False,
                                                              kind="stable").index).head(k)
            recall = float(top_eff["in_top"].mean())
            chance = float(g["in_top"].mean())
        rows.append(dict(context=ctx, intervention=name, n_features=n,
                         n_random=int((g["source"] == "random-check").sum()), spearman=rho,
                         spearman_p=p, top_n=top_n, k=max(k, 0), recall=recall,
                         recall_chance=chance))
    return pd.DataFrame(rows, columns=SCREEN_CHECK_COLUMNS)


def check_line(summary: pd.DataFrame) -> str:
    """One line for a terminal: the screen's rank correlation and top-N recall per
    intervention (or why there is nothing to say)."""
    if summary.empty:
        return "screen check: no patched feature was scored by the screen"

    def fmt(x: float, spec: str) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else \
            format(x, spec)

    parts = [f"{r.intervention} rho {fmt(r.spearman, '+.2f')} (n {r.n_features}), recall@"
             f"{r.top_n} {fmt(r.recall, '.2f')} (chance {fmt(r.recall_chance, '.2f')})"
             for r in summary.itertuples()]
    return "screen check: " + "; ".join(parts)


def run_screen_check(run_dir: str | Path, trials: pd.DataFrame, top_n: int, cfg=None
                     ) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Write ``screen_check_points`` and ``screen_check`` when the run has ``screen.parquet``
    (and remove stale ones when it has not); None without a screen."""
    rd = RunDir(run_dir)
    if not rd.screen.exists():
        for path in (rd.screen_check, rd.screen_points):
            path.unlink(missing_ok=True)
            path.with_suffix(".csv").unlink(missing_ok=True)
        return None
    screen = pd.read_parquet(rd.screen)
    exclude = inactive_where_scaled(screen, cfg) if cfg is not None else set()
    points = screen_points(trials, screen, top_n, exclude)
    summary = screen_summary(points, top_n)
    write_table(points, rd.screen_points)
    write_table(summary, rd.screen_check)
    return points, summary


__all__ = ["check_line", "eligible_rank", "inactive_where_scaled", "run_screen_check",
           "screen_points", "screen_summary"]
