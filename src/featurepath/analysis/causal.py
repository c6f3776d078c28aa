"""Which patched features change behaviour: the task's metrics, with FDR control.

Every patched condition (feature x prompt context x patch value) is compared with the baseline of
its own context and method (see :mod:`featurepath.analysis.run_data` for the matching rule; a
``reconstruct`` condition is only ever compared with the no-clamp reconstruction of its layer).

One test per metric of the run's task (``Task.metrics``, read through the config) and
comparison; the metric's ``kind`` fixes the test. For a wager game's four metrics:

- kind ``rate`` (e.g. the exit rate): exits over *every parsed decision* (each decision the
  parser read, valid or not); Fisher's exact test, effect = difference of proportions (patched - baseline) with
  Newcombe's score CI. An invalid answer is never read as a stop (the original analysis did,
  which makes any feature that breaks the output format look "safe"), and an invalid *bet*
  (over the balance, unreadable amount) stays in the denominator: dropping it would turn a patch
  that makes every bet an all-in over-balance bet into a "safe" feature (stop rate 0.5 -> 1.0).
- kind ``invalid``: invalid trials (no decision, contradictory, unplayable bet) over all trials;
  Fisher's exact test, effect = difference of proportions. A feature whose only significant
  change is this one is classed ``invalid``: it breaks the answer, it does not make it safer or
  riskier. The mean requested amount of invalid bets is reported (``invalid_bet_patched``,
  ``invalid_bet_baseline``), not tested.
- kind ``amount``: stakes of valid trials that carry an amount (invalid bets are reported above), compared *within
  prompt*: a prompt's balance sets the scale of its bets and which prompts end in a bet differs
  by arm, so pooled bets compare prompts, not patches (an A/A run gave mean bet 39 -> 16 at
  q = 0.013). Van Elteren's stratified rank-sum test with prompts as strata (exact for small
  samples; with one prompt it is the Mann–Whitney test); effect = rank-biserial r over the
  (patched, baseline) pairs of the same prompt (Kerby 2014), with a percentile bootstrap CI
  (Efron & Tibshirani 1993) when there is one prompt; the values shown are means over prompts
  of per-prompt mean bets, over the prompts where both arms bet.
- kind ``readout``: P(exit) from the decision-token logits, paired by *distinct prompt*: the value of
  a prompt is the same on every repeat (up to float rounding), so repeats are averaged to one
  value per prompt and arm (:func:`featurepath.analysis.run_data.prompt_pairs`); paired t-test
  over prompts, effect = mean difference in probability with a t-interval. ``n_patched`` and
  ``n_baseline`` count prompts here.

A P(exit) comparison with fewer than two distinct prompts is degenerate *by design* (reported
with p = q = NaN, never tested), whatever rounding noise its trials carry: the engine's float32
results for one prompt differ by ~1e-8 between work units, and that noise is not an effect. So
is every test of a *zero-size intervention* (``test`` = "zero-size intervention"): the feature
arm and all its null arms reproduce the baseline trial for trial, as a scale clamp of a feature
that is inactive on the prompts does (see :mod:`featurepath.analysis.null_band`).
Benjamini–Hochberg (1995) runs once over every test actually run — all features x contexts x
conditions x metrics — rather than over a per-feature minimum p-value, which would not control
the FDR.

A test is ``significant`` when it is not degenerate, q <= alpha (where Benjamini–Hochberg
rejects) *and* its effect reaches a practical minimum (the metric's ``min_effect``, overridden
per kind by the ``analysis.min_effect_*`` config keys): with enough prompts a shift of P(exit)
by 1e-4 can be "significant" and still mean nothing.

Feature classes: a significant test moves behaviour toward *safe* (the metric's ``toward_b``:
exit more, stake less, higher P(exit)) or toward *risky*. ``same_effect`` flags features whose safe-value and risky-value patches
move behaviour the same way by about the same amount: then the intervention, not the value,
drives the effect (the reconstruction artefact of the original study).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from featurepath.analysis.causal_metrics import invalid_amount_mean, metric_result
from featurepath.analysis.dose import dose_tables, scale_trend
from featurepath.analysis.null_band import ZeroSizeCheck, controlled_verdict, null_band
from featurepath.analysis.run_data import (
    ANALYSIS_COLUMNS,
    load_trials,
    normalise_trials,
    patched_groups,
    prompt_pairs,
    warn_repeated_prompts,
)
from featurepath.analysis.run_data import usable_mask as _usable_mask
from featurepath.analysis.stats import bh_fdr
from featurepath.config import RunConfig, record_config, resolve_config, task_of
from featurepath.errors import DataError
from featurepath.rundir import CAUSAL_FEATURE_COLUMNS as FEATURE_COLUMNS
from featurepath.rundir import CAUSAL_TEST_COLUMNS as TEST_COLUMNS
from featurepath.rundir import DOSE_COLUMNS, ZERO_SIZE_TEST, RunDir, write_table

__all__ = [
    "TEST_COLUMNS",
    "FEATURE_COLUMNS",
    "DOSE_COLUMNS",
    "causal_table",
    "classify_features",
    "scale_trend",
    "run_causal",
    "CausalResult",
]

_NAN = float("nan")


def default_metrics() -> tuple:
    """The default task's metrics (``MetricSpec``: name, kind, min_effect, label, toward_b,
    actions), for tables analysed without a config."""
    return tuple(task_of().metrics)


def metric_kinds(metrics: Sequence) -> dict[str, str]:
    """``{metric name: kind}``."""
    return {m.name: m.kind for m in metrics}


# ------------------------------------------------------------------------------ causal table


def causal_table(
    trials: pd.DataFrame,
    alpha: float = 0.05,
    same_effect_tol: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    min_effect: Mapping[str, float] | None = None,
    metrics: Sequence | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test every patched condition against its baseline; return ``(tests_df, features_df)``.

    ``metrics`` are the task's ``MetricSpec``s (default: the default task's); ``min_effect``
    overrides their ``min_effect`` (metric name -> smallest |effect|).

    ``tests_df`` has one row per feature x context x condition x metric (columns
    :data:`TEST_COLUMNS`); ``features_df`` one row per feature (and method), see
    :func:`classify_features`. Groups without a matching baseline are skipped with a warning.
    """
    if not (0.0 < alpha < 1.0):
        raise DataError(f"alpha must lie in (0, 1), got {alpha}")
    metrics = tuple(metrics) if metrics is not None else default_metrics()
    df = normalise_trials(trials)[list(ANALYSIS_COLUMNS)]
    rows: list[dict[str, object]] = []
    skipped: list[str] = []
    n_repeated = n_groups = 0
    zero_size = ZeroSizeCheck()
    for i, g in enumerate(patched_groups(df)):
        if g.baseline is None:
            skipped.append(f"{g.feature}/{g.context}/{g.condition}")
            continue
        zero_size.add(g)
        pp = prompt_pairs(g.patched, g.baseline)
        n_groups += 1
        n_repeated += pp.repeated
        n_inv_p = int(len(g.patched) - _usable_mask(g.patched).sum())
        n_inv_b = int(len(g.baseline) - _usable_mask(g.baseline).sum())
        inv_bet_p, inv_bet_b = invalid_amount_mean(g.patched), invalid_amount_mean(g.baseline)
        results = [metric_result(spec, g, pp, n_boot, seed + i) for spec in metrics]
        for m in results:
            r = m.res
            rows.append({
                "feature": g.feature, "layer": g.layer, "feature_id": g.feature_id,
                "context": g.context, "condition": g.condition, "patch": g.patch,
                "method": g.method, "value": g.value, "scale": g.scale, "metric": m.metric,
                "n_patched": m.n_patched, "n_baseline": m.n_baseline,
                "n_invalid_patched": n_inv_p, "n_invalid_baseline": n_inv_b,
                "invalid_bet_patched": inv_bet_p, "invalid_bet_baseline": inv_bet_b,
                "baseline_value": m.baseline_value, "patched_value": m.patched_value,
                "effect": r.effect, "ci_low": r.ci_low, "ci_high": r.ci_high,
                "statistic": r.statistic, "p": r.p if not r.degenerate else _NAN,
                "degenerate": bool(r.degenerate), "test": r.method, "arm": g.arm,
                "null_index": g.null_index,
            })
    warn_repeated_prompts(n_repeated, n_groups)
    if skipped:
        warnings.warn(
            f"{len(skipped)} patched group(s) have no matching baseline and were not tested "
            f"(e.g. {skipped[0]})", stacklevel=2,
        )
    if not rows:
        if skipped:
            raise DataError("no patched condition has a matching baseline in the trials table")
        raise DataError("the trials table holds no patched trials")
    tests = zero_size.mark(pd.DataFrame(rows))  # not tested: the patch changed nothing
    # one BH family: the feature and direction arms' tests (null arms are the reference band,
    # not hypotheses)
    real = (tests["arm"] != "null").to_numpy()
    q = np.full(len(tests), _NAN)
    q[real] = bh_fdr(tests.loc[real, "p"].to_numpy(dtype=float))
    tests["q"] = q
    floor = {**{m.name: m.min_effect for m in metrics}, **(min_effect or {})}
    big = tests["effect"].abs().to_numpy(dtype=float) >= tests["metric"].map(floor).to_numpy(
        dtype=float)
    tests["vs_baseline"] = (~tests["degenerate"]) & (tests["q"] <= alpha) & big
    controlled = bool((tests["arm"] == "null").any())
    tests, nulls = null_band(tests, alpha)
    tests["significant"] = tests["vs_baseline"] & controlled_verdict(tests, controlled)
    tests = tests[TEST_COLUMNS]
    tests.attrs["null_tests"] = nulls
    return tests, classify_features(tests, alpha=alpha, same_effect_tol=same_effect_tol,
                                    metrics=metrics)


def _toward_safe(toward: Mapping[str, int], metric: str, effect: float) -> int:
    """+1 when an effect moves behaviour toward safe (group B of the split: exit more, stake
    less), -1 toward risky; 0 for a metric that is neither (the invalid rate)."""
    sign = toward.get(metric, 0)
    if sign == 0 or not math.isfinite(effect) or effect == 0:
        return 0
    return sign if effect > 0 else -sign


def _describe(row: pd.Series, labels: Mapping[str, str]) -> str:
    return (
        f"{row['patch']}-value patch in {row['context']} context: "
        f"{labels.get(row['metric'], row['metric'])} "
        f"{row['baseline_value']:.3g} -> {row['patched_value']:.3g} "
        f"(effect {row['effect']:+.3g}, q={row['q']:.2g})"
    )


def classify_features(
    tests: pd.DataFrame, alpha: float = 0.05, same_effect_tol: float = 0.5,
    metrics: Sequence | None = None,
) -> pd.DataFrame:
    """Summarise ``tests`` per feature: class, same-effect flag, counts and a one-line summary.

    class: "bidirectional" when the safe-value patch significantly pushes toward safe *and* the
    risky-value patch toward risky; otherwise "safe"/"risky" when every significant test points
    that way; "mixed" when significant tests disagree in another pattern; "invalid" when only the
    invalid rate changed significantly; "none" without a significant test. ``same_effect``: for some (context, metric) the safe-value and risky-value
    effects share a sign, |e_safe - e_risky| <= same_effect_tol * max(|e_safe|, |e_risky|), and at
    least one of the two is significant.
    """
    out: list[dict[str, object]] = []
    if tests.empty:
        return pd.DataFrame(columns=FEATURE_COLUMNS)
    t = tests.copy()
    if "significant" not in t.columns:  # a table from before the column existed
        t["significant"] = (~t["degenerate"]) & (t["q"] <= alpha)
    t["significant"] = t["significant"].fillna(False).astype(bool)
    metrics = tuple(metrics) if metrics is not None else default_metrics()
    toward = {m.name: m.toward_b for m in metrics}
    labels = {m.name: m.label for m in metrics}
    t["toward"] = [_toward_safe(toward, m, e)
                   for m, e in zip(t["metric"], t["effect"], strict=True)]
    for (feature, layer, fid, method), g in t.groupby(
        ["feature", "layer", "feature_id", "method"], sort=True
    ):
        sig = g[g["significant"]]
        dirs = set(sig["toward"]) - {0}
        if ((sig["patch"] == "safe") & (sig["toward"] > 0)).any() and (
            (sig["patch"] == "risky") & (sig["toward"] < 0)
        ).any():
            cls = "bidirectional"
        elif dirs == {1}:
            cls = "safe"
        elif dirs == {-1}:
            cls = "risky"
        elif dirs:
            cls = "mixed"
        elif not sig.empty:  # only the invalid rate moved
            cls = "invalid"
        else:
            cls = "none"
        where: list[str] = []
        for (ctx, metric), cm in g.groupby(["context", "metric"], sort=True):
            s, r = cm[cm["patch"] == "safe"], cm[cm["patch"] == "risky"]
            if s.empty or r.empty:
                continue
            es, er = float(s["effect"].iloc[0]), float(r["effect"].iloc[0])
            if not (math.isfinite(es) and math.isfinite(er)) or es * er <= 0:
                continue
            close = abs(es - er) <= same_effect_tol * max(abs(es), abs(er))
            if close and (bool(s["significant"].iloc[0]) or bool(r["significant"].iloc[0])):
                where.append(f"{ctx}/{metric}")
        qs = g["q"].to_numpy(dtype=float)
        best_q = float(np.nanmin(qs)) if np.isfinite(qs).any() else _NAN
        n_deg = int(g["degenerate"].sum())
        if sig.empty:
            summary = f"{feature} [none]: no significant change in {len(g)} tests ({n_deg} degenerate)"
        else:
            top = sig.loc[sig["q"].idxmin()]
            summary = f"{feature} [{cls}]: {_describe(top, labels)}; {len(sig)} significant of {len(g)}"
        if where:
            summary += (f"; same effect from safe and risky values ({', '.join(where)}): "
                        "the intervention, not the value, drives it")
        out.append({
            "feature": feature, "layer": int(layer), "feature_id": int(fid), "method": method,
            "class": cls, "same_effect": bool(where), "same_effect_where": ",".join(where),
            "n_tests": len(g), "n_degenerate": n_deg, "n_significant": len(sig),
            "best_q": best_q, "summary": summary,
        })
    res = pd.DataFrame(out, columns=FEATURE_COLUMNS)
    return res.sort_values(["best_q", "n_significant"], ascending=[True, False],
                           na_position="last", kind="mergesort").reset_index(drop=True)


# ------------------------------------------------------------------------------ the stage


def _largest_z(tests: pd.DataFrame, what: str, readout: str, label: str) -> str:
    """`` (P(exit) against their bands: largest |z| +0.48, L13-853 in risky_amplified, inside)``
    — the original study's comparison (SAE direction z = +0.75 inside its band, behavioural
    direction z = +4.45); empty without a band. The readout metric (``readout``, labelled
    ``label``) because it is the continuous readout every arm has; rates and amounts can be
    degenerate on a cautious model."""
    banded = tests[(tests["metric"] == readout) & (tests["null_n"] > 0)
                   & np.isfinite(tests["null_z"].astype(float))]
    if banded.empty:
        return ""
    b = banded.loc[banded["null_z"].astype(float).abs().idxmax()]
    where = "beats the band" if bool(b["beats_null"]) else "inside the band"
    return (f" ({label} against {'their' if what == 'features' else 'its own'} band: largest "
            f"|z| {b['null_z']:+.2f}, {b['feature']} in {b['condition']}, {where})")


@dataclass
class CausalResult:
    """What ``run_causal`` found and wrote."""

    tests: pd.DataFrame
    features: pd.DataFrame
    dose: pd.DataFrame
    alpha: float
    null_tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    slopes: pd.DataFrame = field(default_factory=pd.DataFrame)
    screen_check: pd.DataFrame | None = None  # the screen against the patch (screen_check.py)
    metrics: tuple = ()  # the task's MetricSpecs (default: the default task's)
    direction_source: str = ""  # "transferred from ..." (patch.direction_from), else ""

    def _readout(self) -> tuple[str, str]:
        """(name, label) of the task's readout metric."""
        for m in self.metrics or default_metrics():
            if m.kind == "readout":
                return m.name, m.label
        return "", ""

    def controls_line(self) -> str:
        """One line for a terminal: features against their null band, the tests not run because
        the intervention had size zero, and the behavioural direction (said plainly when it
        moved behaviour and no feature did)."""
        t = self.tests
        feat = t[t["arm"] == "feature"]
        k = int(feat["null_n"].max()) if not feat.empty else 0
        if k == 0:
            line = "controls: no null directions (patch.null_directions: 0)"
            beat = int(feat.loc[feat["significant"], "feature"].nunique())
        else:
            beat = int(feat.loc[feat["vs_baseline"] & feat["beats_null"], "feature"].nunique())
            inside = int(feat.loc[feat["vs_baseline"] & ~feat["beats_null"]
                                  & (feat["null_n"] > 0), "feature"].nunique())
            line = (f"controls: {beat} of {feat['feature'].nunique()} features beat their null "
                    f"band of {k} random directions; {inside} changed behaviour against the "
                    f"baseline but stayed inside it (smallest possible null p = 1/{k + 1} = "
                    f"{1 / (k + 1):.3f}){_largest_z(feat, 'features', *self._readout())}")
        zero = feat[feat["test"] == ZERO_SIZE_TEST]
        if not zero.empty:
            line += (f"; {len(zero)} test(s) of {zero['feature'].nunique()} feature(s) not run, "
                     f"degenerate: {ZERO_SIZE_TEST} (the patched trials reproduce the baseline "
                     "trial for trial, e.g. a scale clamp of a feature inactive on the prompts)")
        direction = t[t["arm"] == "direction"]
        if not direction.empty:
            moved = bool(direction["significant"].any())
            line += "; the behavioural direction" + (
                f" ({self.direction_source})" if self.direction_source else "") + " " + (
                "moved behaviour against the baseline" if moved else "did not move behaviour")
            if moved and beat == 0:
                line += " and no feature did"
            line += _largest_z(direction, "direction", *self._readout())
        return line

    @property
    def n_significant(self) -> int:
        return int(self.tests["significant"].sum())

    @property
    def n_degenerate(self) -> int:
        return int(self.tests["degenerate"].sum())


def _write_or_remove(table: pd.DataFrame, path: Path) -> None:
    """``table`` at ``path`` (with its CSV twin), or neither file when it is empty."""
    if table.empty:
        path.unlink(missing_ok=True)
        path.with_suffix(".csv").unlink(missing_ok=True)
    else:
        write_table(table, path)


def run_causal(run_dir: str | Path, cfg: RunConfig | None = None) -> CausalResult:
    """The causal stage: test every patched condition of ``RUN/trials.parquet`` against its
    baseline with ``cfg.analysis`` thresholds (``cfg`` None: the run's config); write
    causal_tests, causal_features and, when the run has them, causal_null (null arms) and
    dose_response, dose_slopes and dose_curves (conditions with a scale), then record the
    config. Needs no model, so it takes no runtime."""
    rd = RunDir(run_dir).require_dir()
    cfg = resolve_config(rd.root) if cfg is None else cfg
    a = cfg.analysis
    trials = load_trials(rd.root)
    metrics = tuple(task_of(cfg).metrics)
    by_kind = a.min_effect_by_kind()
    floor = {m.name: by_kind[m.kind] for m in metrics}
    tests, features = causal_table(trials, alpha=a.alpha, same_effect_tol=a.same_effect_tol,
                                   n_boot=a.n_boot, seed=cfg.seed, min_effect=floor,
                                   metrics=metrics)
    dose = scale_trend(trials, metrics)
    slopes, curves = dose_tables(trials, a.alpha, metrics)
    nulls = tests.attrs.pop("null_tests", pd.DataFrame())
    write_table(tests, rd.causal_tests)
    write_table(features, rd.causal_features)
    # a table this run has nothing for is removed: a stale one from an earlier analysis of the
    # run would otherwise be read (and reported) as this run's
    for table, path in ((nulls, rd.causal_null), (dose, rd.dose_response),
                        (slopes, rd.dose_slopes), (curves, rd.dose_curves)):
        _write_or_remove(table, path)
    from featurepath.analysis.screen_check import run_screen_check

    check = run_screen_check(rd.root, trials, cfg.screen.top_n, cfg)  # None: the run has no screen
    record_config(rd.root, cfg)
    from featurepath.analysis.direction_source import read_source, source_text

    return CausalResult(tests, features, dose, a.alpha, nulls, slopes,
                        None if check is None else check[1], metrics,
                        source_text(read_source(rd.root)))
