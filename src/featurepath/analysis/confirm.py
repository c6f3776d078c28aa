"""The statistics of a confirmation: sequential Monte Carlo p-values against random-direction
nulls, and one verdict per pre-registered test.

Why sequential: an empirical null p with K draws is never below ``1/(K + 1)``, so a fixed K
either cannot pass Benjamini–Hochberg over N tests or costs every test the K it takes the
strongest one. Besag & Clifford (1991, "Sequential Monte Carlo p-values", Biometrika 78:301)
stop drawing once ``h`` null statistics at least as extreme as the observed one were seen:
``p = h / k`` when that happens at draw ``k``, else ``(g + 1) / (cap + 1)`` at the cap with
``g < h`` exceedances. The p-value is exact (``P(p <= x) = x`` on its support) whenever the
observed statistic is exchangeable with the null draws, and a test inside the band stops after a
few dozen draws; only a real effect pays for the cap.

Why ``max(p_baseline, p_null)``: a confirmed feature must beat the baseline on the confirm
prompts *and* beat the band of random directions. Rejecting when both tests reject is the
intersection–union test (Berger 1982, Technometrics 24:295), valid at level α with the larger
p as its p-value; Benjamini–Hochberg then runs once over the N pre-registered tests on that p.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from featurepath.analysis.stats import bh_fdr

#: Two readouts closer than this are a tie: the engine's float32 P(stop) of one prompt differs by
#: about 1e-8 between batches of different composition, which is rounding, not an effect. A tie
#: counts as an exceedance, so the tolerance only makes the test more conservative.
TIE_TOL = 1e-6
ZERO_SIZE = "zero-size intervention"

#: The run-directory contract of ``RUN/confirm/`` (paths: :class:`featurepath.rundir.RunDir`'s
#: ``confirm``, ``preregistration``, ``confirm_arms``, ``verdicts``).
CONFIRM_COLUMNS = [
    "feature", "layer", "feature_id", "context", "condition", "metric", "patch", "value",
    "scale", "predicted_sign", "sign_source", "n_prompts", "baseline", "patched", "effect", "t",
    "p_baseline", "null_draws", "null_exceed", "p_null", "p", "q", "degenerate", "test",
    "significant", "prereg_sha256",
]
"""``confirm/verdicts``: one row per pre-registered test (feature × condition, primary metric).
``effect`` = mean over confirm prompts of readout(patched) − readout(baseline); ``p_baseline``:
paired t over prompts (one-sided when a sign was pre-registered); ``p_null``: the sequential
Monte Carlo p against random directions (``null_draws`` drawn, ``null_exceed`` at least as
extreme); ``p = max(p_baseline, p_null)`` (intersection–union), ``q`` its BH over the tests;
``significant``: not degenerate, q <= alpha, |effect| >= the readout's practical minimum (``analysis``) and in
the pre-registered direction. The parquet metadata also holds ``prereg_sha256``."""
CONFIRM_DRAW_COLUMNS = ["feature", "condition", "draw", "null_effect"]
"""``confirm/rounds/L<layer>-r<round>.parquet``: the mean null effect of each draw for each
test still undecided in that round (draw index = round × round_size + i)."""


def default_cap(n_tests: int, alpha: float) -> int:
    """The smallest cap that lets one true cause pass BH among ``n_tests`` with room to spare:
    its smallest p, ``1/(cap + 1)``, is at most ``alpha / (2 n)``; at least 99."""
    return max(99, int(np.ceil(2 * n_tests / alpha)) - 1)


@dataclass
class SequentialTest:
    """One test's draws so far. ``sign``: +1 / -1 when a direction was pre-registered (a null
    draw exceeds when it moves at least as far in that direction), 0 for two-sided (at least as
    large in absolute value)."""

    effect: float
    sign: int
    h: int
    cap: int
    draws: int = 0
    exceed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.h <= self.cap:
            raise ValueError(f"need 1 <= h <= cap (h={self.h}, cap={self.cap})")

    @property
    def decided(self) -> bool:
        return self.exceed >= self.h or self.draws >= self.cap

    def exceeds(self, null: float) -> bool:
        e, x = float(self.effect), float(null)
        if np.isnan(e):
            return True
        if self.sign == 0:
            return abs(x) >= abs(e) - TIE_TOL
        return self.sign * x >= self.sign * e - TIE_TOL

    def add(self, nulls: Iterable[float]) -> None:
        """Consume null effects in draw order, stopping exactly where the rule stops (the rest
        of a shared round is ignored, so the p-value is the exact sequential one)."""
        for x in nulls:
            if self.decided:
                return
            self.draws += 1
            self.exceed += bool(self.exceeds(x))

    @property
    def p_value(self) -> float:
        """``h / k`` when stopped by h exceedances at draw k, ``(g + 1)/(cap + 1)`` at the cap,
        NaN while undecided."""
        if self.exceed >= self.h:
            return self.h / self.draws
        if self.draws >= self.cap:
            return (self.exceed + 1) / (self.cap + 1)
        return float("nan")


#: ``draw_round(layer, round_index, n_draws, keys) -> {key: null effects of draws
#: round_index * round_size ... + n_draws - 1}`` — the model work, supplied by the pipeline.
DrawRound = Callable[[int, int, int, list[Hashable]], dict[Hashable, np.ndarray]]


def run_rounds(tests: dict[Hashable, SequentialTest], layer_of: dict[Hashable, int],
               round_size: int, draw_round: DrawRound,
               on_round: Callable[[int, int, int], None] | None = None) -> int:
    """Draw null directions in rounds of ``round_size``, per layer, shared by every undecided
    test of that layer, until every test is decided; returns the rounds run. The undecided set
    of a round depends only on earlier rounds, so a resumed run asks for the same rounds."""
    n_rounds = 0
    for layer in sorted(set(layer_of.values())):
        keys = [k for k in tests if layer_of[k] == layer]
        r = 0
        while True:
            todo = [k for k in keys if not tests[k].decided]
            if not todo:
                break
            cap = max(tests[k].cap for k in todo)
            n = min(round_size, cap - r * round_size)
            nulls = draw_round(layer, r, n, todo)
            for k in todo:
                tests[k].add(nulls[k])
            if on_round is not None:
                on_round(layer, r, len(todo))
            r += 1
            n_rounds += 1
    return n_rounds


@dataclass
class Paired:
    """A test's readout on the confirm prompts: ``patched[i]`` and ``baseline[i]`` of prompt i."""

    patched: np.ndarray
    baseline: np.ndarray


def baseline_test(pair: Paired, sign: int) -> tuple[float, float, str]:
    """``(p, t, why degenerate or "")``: paired t over prompts (one-sided in the pre-registered
    direction, else two-sided). Degenerate with fewer than two prompts, when no prompt moved
    (a zero-size intervention), or when every difference is the same (t undefined)."""
    d = np.asarray(pair.patched, float) - np.asarray(pair.baseline, float)
    if d.size < 2:
        return float("nan"), float("nan"), "fewer than 2 prompts"
    if np.max(np.abs(d)) <= TIE_TOL:
        return float("nan"), float("nan"), ZERO_SIZE
    if np.ptp(d) <= TIE_TOL * 1e-3:
        return float("nan"), float("nan"), "every prompt moved by the same amount"
    alt = {1: "greater", -1: "less"}.get(sign, "two-sided")
    res = stats.ttest_rel(pair.patched, pair.baseline, alternative=alt)
    return float(res.pvalue), float(res.statistic), ""


def verdict_rows(keys: Sequence[Hashable], pairs: dict[Hashable, Paired],
                 tests: dict[Hashable, SequentialTest], alpha: float, min_effect: float
                 ) -> list[dict]:
    """One row per test: effect, ``p_baseline``, the sequential ``p_null`` with its draws and
    exceedances, ``p = max(p_baseline, p_null)``, ``q`` (BH over the tests that are not
    degenerate) and ``significant`` (q <= alpha, |effect| >= ``min_effect``, in the
    pre-registered direction when one was given)."""
    rows = []
    for k in keys:
        pr, st = pairs[k], tests[k]
        p_b, t, why = baseline_test(pr, st.sign)
        p_n = st.p_value
        rows.append(dict(
            n_prompts=int(len(pr.patched)), baseline=float(np.mean(pr.baseline)),
            patched=float(np.mean(pr.patched)), effect=float(st.effect), t=t,
            p_baseline=p_b, null_draws=st.draws, null_exceed=st.exceed, p_null=p_n,
            p=float("nan") if why else max(p_b, p_n), degenerate=bool(why), test=why or
            ("paired t, " + ("two-sided" if st.sign == 0 else "one-sided")
             + f"; sequential null (h={st.h}, cap={st.cap})")))
    q = bh_fdr([r["p"] for r in rows])
    for k, r, qi in zip(keys, rows, q, strict=True):
        st_sign = tests[k].sign
        r["q"] = float(qi)
        r["significant"] = bool(
            not r["degenerate"] and qi <= alpha and abs(r["effect"]) >= min_effect
            and (st_sign == 0 or st_sign * r["effect"] > 0))
    return rows


__all__ = ["CONFIRM_COLUMNS", "CONFIRM_DRAW_COLUMNS", "SequentialTest", "run_rounds", "Paired", "baseline_test", "verdict_rows",
           "default_cap", "TIE_TOL", "ZERO_SIZE"]
