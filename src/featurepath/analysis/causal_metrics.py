"""The single tests of the causal stage, one per metric kind of ``Task.metrics`` (see
:mod:`featurepath.analysis.causal` for what each kind tests and why): split out so the stage
module stays readable."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats as sps

from featurepath.analysis.run_data import PromptPairs
from featurepath.analysis.run_data import action_counts as _action_counts
from featurepath.analysis.run_data import usable_mask as _usable_mask
from featurepath.analysis.stats import TestResult, bootstrap_ci, fisher_exact, paired_t
from featurepath.analysis.stats_exact import van_elteren
from featurepath.errors import DataError

_NAN = float("nan")


@dataclass
class _MetricResult:
    metric: str
    n_patched: int
    n_baseline: int
    baseline_value: float
    patched_value: float
    res: TestResult


def _invalid_counts(df: pd.DataFrame) -> tuple[int, int]:
    """(invalid trials, all trials): unreadable, contradictory or unplayable answers."""
    return int(len(df) - _usable_mask(df).sum()), int(len(df))


def invalid_amount_mean(df: pd.DataFrame) -> float:
    """Mean requested amount of invalid stakes (e.g. over the balance): reported, not tested."""
    m = df["action"].notna().to_numpy() & ~df["valid"].to_numpy(dtype=bool)
    v = df["amount"].to_numpy(dtype=float)[m]
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else _NAN


def _rank_biserial(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Rank-biserial r = P(a > b) - P(a < b) over all pairs (Kerby 2014), vectorised."""
    if a.size == 0 or b.size == 0:
        return _NAN
    return float(np.mean(np.sign(a[:, None] - b[None, :])))


def _rate(metric: str, counts, p: pd.DataFrame, b: pd.DataFrame) -> _MetricResult:
    kp, np_ = counts(p)
    kb, nb = counts(b)
    res = fisher_exact(kp, np_, kb, nb)
    return _MetricResult(metric, np_, nb, kb / nb if nb else _NAN, kp / np_ if np_ else _NAN, res)


def _bets_by_prompt(df: pd.DataFrame, by_prompt: bool) -> tuple[NDArray[np.float64], list[object]]:
    """Valid finite amounts and the prompt each was staked on (one stratum without prompt
    ids); a decision without an amount (the exit) has none."""
    m = _usable_mask(df)
    v = df["amount"].to_numpy(dtype=float)
    m &= np.isfinite(v)
    keys = df["prompt_id"].astype(str).to_numpy()[m].tolist() if by_prompt else [""] * int(m.sum())
    return v[m], keys


def _mean_of_prompt_means(v: NDArray[np.float64], keys: list[object], shared: set) -> float:
    s = pd.Series(v).groupby(pd.Series(keys, dtype=object)).mean()
    s = s[s.index.isin(shared)]
    return float(s.mean()) if len(s) else _NAN


def _bet(name: str, p: pd.DataFrame, b: pd.DataFrame, n_boot: int, seed: int
         ) -> _MetricResult:
    by_prompt = bool(p["prompt_id"].notna().all() and b["prompt_id"].notna().all())
    bp, kp = _bets_by_prompt(p, by_prompt)
    bb, kb = _bets_by_prompt(b, by_prompt)
    ve = van_elteren(bp, bb, kp, kb)
    lo = hi = _NAN
    if not ve.degenerate and ve.n_strata == 1 and n_boot > 0:
        lo, hi = bootstrap_ci(_rank_biserial, bp, bb, n_boot=n_boot, seed=seed)
    res = TestResult(ve.statistic, ve.p, ve.effect, lo, hi, ve.n_a, ve.n_b, ve.degenerate,
                     "van_elteren_exact" if ve.exact else "van_elteren")
    shared = set(kp) & set(kb)
    return _MetricResult(name, ve.n_a, ve.n_b, _mean_of_prompt_means(bb, kb, shared),
                         _mean_of_prompt_means(bp, kp, shared), res)


def _readout(name: str, pp: PromptPairs, p: pd.DataFrame, b: pd.DataFrame) -> _MetricResult:
    x, y = pp.means(p["readout"].to_numpy(dtype=float), b["readout"].to_numpy(dtype=float))
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    diff = x - y
    mean_diff = float(diff.mean()) if n else _NAN
    # fewer than two distinct prompts: nothing but rounding noise varies, by design
    t = paired_t(x, y) if n >= 2 else TestResult(_NAN, _NAN, _NAN, _NAN, _NAN, n, n, True,
                                                   "paired_t")
    lo = hi = _NAN
    if not t.degenerate:
        half = float(sps.t.ppf(0.975, n - 1)) * float(diff.std(ddof=1)) / math.sqrt(n)
        lo, hi = mean_diff - half, mean_diff + half
    res = TestResult(t.statistic, t.p, mean_diff, lo, hi, n, n, t.degenerate, t.method)
    return _MetricResult(name, n, n, float(y.mean()) if n else _NAN,
                         float(x.mean()) if n else _NAN, res)


def metric_result(spec, g, pp: PromptPairs, n_boot: int, seed: int) -> _MetricResult:
    """One metric's test of a patched group, chosen by the metric's kind."""
    if spec.kind == "rate":
        return _rate(spec.name, lambda df: _action_counts(df, spec.actions), g.patched,
                     g.baseline)
    if spec.kind == "invalid":
        return _rate(spec.name, _invalid_counts, g.patched, g.baseline)
    if spec.kind == "amount":
        return _bet(spec.name, g.patched, g.baseline, n_boot, seed)
    if spec.kind == "readout":
        return _readout(spec.name, pp, g.patched, g.baseline)
    raise DataError(f"metric {spec.name!r} has unknown kind {spec.kind!r}")
