"""What a confirmation costs, and the seed's Exp1 planned two ways (``featurepath estimate``).

Why count draws exactly: under the null a sequential test's draws are known in closed form, so
the budget of a confirmation is a number before it runs. With R = how many of the cap null
draws exceed the observed effect (uniform on 0..cap when the effect is exchangeable with the
null draws), the h-th exceedance arrives at draw ``h (cap + 1) / (R + 1)`` on average (a
negative hypergeometric waiting time), and a test with R < h runs to the cap:

    E[draws | null] = h · sum_{j=h+1}^{cap+1} 1/j + cap · h / (cap + 1)

(h = 10, cap = 319: 44.2 draws). A real effect beyond the whole band pays for the cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from featurepath.analysis.confirm import default_cap


def expected_null_draws(h: int, cap: int) -> float:
    """Mean null draws of one test under the null (Besag & Clifford's sequential rule)."""
    return h * math.fsum(1.0 / j for j in range(h + 1, cap + 2)) + cap * h / (cap + 1)


@dataclass
class ConfirmCost:
    """Counts of one confirmation: ``n_tests`` tests on ``n_prompts`` prompts each; a draw of
    the primary metric P(exit) is one decision-token row per prompt (``rows_per_prompt``
    sampled trials per prompt for a sampled metric)."""

    n_tests: int
    n_prompts: int
    h: int
    cap: int
    rows_per_prompt: int
    draws_null: float        # per test, expected under the null
    draws_cap: int           # per test, at most
    rows_null: float         # all tests, every test null
    rows_cap: int            # all tests, every test at the cap
    rows_arms: int           # baseline + feature arms

    def lines(self) -> list[str]:
        kind = "decision-token rows" if self.rows_per_prompt == 1 else "sampled trials"
        return [
            f"confirm  {self.n_tests} pre-registered tests x {self.n_prompts} held-out prompts; "
            f"null directions per test: {self.draws_null:.1f} expected under the null, at most "
            f"{self.draws_cap} (h = {self.h}, cap = {self.cap})",
            f"         {self.rows_arms:,} {kind} for the arms, then {self.rows_null:,.0f} "
            f"(every test null) to {self.rows_cap:,} (every test at the cap) for the nulls",
        ]


def confirm_cost(n_tests: int, n_prompts: int, alpha: float, h: int = 10,
                 cap: int | None = None, rows_per_prompt: int = 1) -> ConfirmCost:
    cap = cap or default_cap(n_tests, alpha)
    per = n_prompts * rows_per_prompt
    e = expected_null_draws(h, cap)
    return ConfirmCost(n_tests, n_prompts, h, cap, rows_per_prompt, e, cap,
                       n_tests * e * per, n_tests * cap * per, (n_tests + 1) * per)


def cost_of_config(cfg, n_tests: int | None = None) -> ConfirmCost:
    """A config's confirmation: ``confirm.top_n`` (or its features) × its conditions, on
    ``patch.n_prompts`` prompts per context; a sampled primary metric costs its ``trials``
    sampled answers per prompt where the readout costs one decision-token row."""
    from featurepath.pipeline.confirm_plan import confirm_conditions, primary

    n_feats = len(cfg.confirm.features) or cfg.confirm.top_n
    n = n_tests or n_feats * len(confirm_conditions(cfg))
    return confirm_cost(n, cfg.patch.n_prompts, cfg.analysis.alpha, cfg.confirm.h,
                        cfg.confirm.cap, primary(cfg).trials)


@dataclass
class DesignComparison:
    """The seed's Exp1 planned today (every test against a fixed band, one BH family) and as
    screen → patch the top N → confirm a pre-registered few. ``trial_s``: GPU seconds per
    sampled trial (the seed plan's 1-2 s); ``row_s``: per decision-token row (one token from a
    cached prefix, batched)."""

    tests_today: int
    k_today: int
    null_arms_today: int
    trials_today: int
    gpu_h_today: float
    screen_passes: int
    patch_trials: int
    null_arms_first_round: int
    confirm: ConfirmCost
    null_arms_new: int
    trials_new: int
    rows_new: int
    gpu_h_new: float
    smallest_p_new: float
    bh_threshold_new: float

    def lines(self) -> list[str]:
        c = self.confirm
        return [
            f"today    {self.tests_today:,} tests in one BH family: the first rejection needs "
            f"p <= {self.bh_threshold_new * self.confirm.n_tests / self.tests_today:.2g}, i.e. K = {self.k_today:,} null directions "
            f"per feature x condition -> {self.null_arms_today:.3g} null arms, "
            f"{self.trials_today:.3g} trials, {self.gpu_h_today:.3g} GPU-hours",
            f"new      screen ({self.screen_passes:,} forward+backward passes) -> patch the top "
            f"features ({self.patch_trials:,} trials, {self.null_arms_first_round:,} null "
            f"arms) -> confirm {c.n_tests} tests (<= {c.n_tests * c.draws_cap:,} null arms, "
            f"{c.n_tests * c.draws_null:,.0f} expected if all are null; <= "
            f"{self.rows_new:,} decision-token rows): {self.null_arms_new:,} null arms at most, "
            f"{self.gpu_h_new:.3g} GPU-hours",
            f"finding  a true cause at the cap gets p = 1/{c.cap + 1} = {self.smallest_p_new:.4f}"
            f" <= alpha/N = {self.bh_threshold_new:.4f}: it can pass BH alone; null arms "
            f"{self.null_arms_new / self.null_arms_today:.1e} of today's",
        ]


def compare_designs(n_features: int = 2787, n_conditions: int = 4, n_metrics: int = 4,
                    trials: int = 30, alpha: float = 0.05, patch_top: int = 32,
                    first_round_k: int = 16, confirm_tests: int = 8,
                    confirm_prompts: int = 48, screen_prompts: int = 64, n_contexts: int = 2,
                    h: int = 10, trial_s: float = 1.5, row_s: float = 0.015
                    ) -> DesignComparison:
    """Both plans of the seed's Exp1 (defaults: 2,787 features × 4 patched conditions × 4
    metrics = 44,592 tests, 30 trials, 1.5 GPU-s a trial as the seed plan says, and a
    decision-token row at a hundredth of a trial: one token from a cached prefix instead of a
    prefill and ~100 sampled tokens — an assumption; ``featurepath confirm`` prints the
    measured rate)."""
    m = n_features * n_conditions * n_metrics
    k = math.ceil(m / alpha) - 1  # (1 + 0)/(1 + K) <= alpha / m
    arms_today = k * n_features * n_conditions
    trials_today = (arms_today + n_features * n_conditions + n_contexts) * trials
    screen = n_contexts * screen_prompts
    first_null = patch_top * n_conditions * first_round_k
    patch_trials = (patch_top * n_conditions * (1 + first_round_k) + n_contexts) * trials
    c = confirm_cost(confirm_tests, confirm_prompts, alpha, h)
    rows = c.rows_cap + c.rows_arms
    # a screen pass is about three forward-equivalents (forward + backward) of one prompt
    gpu_new = (patch_trials * trial_s + rows * row_s + 3 * screen * trial_s / 10) / 3600
    return DesignComparison(m, k, arms_today, trials_today, trials_today * trial_s / 3600,
                            screen, patch_trials, first_null, c,
                            first_null + c.n_tests * c.draws_cap, patch_trials, rows, gpu_new,
                            1 / (c.cap + 1), alpha / confirm_tests)


__all__ = ["expected_null_draws", "ConfirmCost", "confirm_cost", "cost_of_config",
           "DesignComparison", "compare_designs"]
