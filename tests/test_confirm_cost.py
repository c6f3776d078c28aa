"""A confirmation's expected null draws, and the seed's Exp1 planned two ways."""

from __future__ import annotations

import numpy as np
import pytest

from featurepath.analysis.confirm import SequentialTest
from featurepath.pipeline.confirm_cost import compare_designs, confirm_cost, expected_null_draws


def test_expected_draws_under_the_null_match_simulation() -> None:
    rng = np.random.default_rng(3)
    for h, cap in ((10, 319), (5, 99)):
        draws = []
        for _ in range(6000):
            t = SequentialTest(float(rng.uniform()), 0, h, cap)
            while not t.decided:
                t.add(rng.uniform(size=16))
            draws.append(t.draws)
        se = np.std(draws) / np.sqrt(len(draws))
        assert abs(np.mean(draws) - expected_null_draws(h, cap)) < 4 * se
    # hand value: 10 (H_320 - H_10) + 319 * 10 / 320
    assert expected_null_draws(10, 319) == pytest.approx(44.150, abs=1e-3)


def test_confirm_cost_counts_rows() -> None:
    c = confirm_cost(8, 48, 0.05)
    assert (c.cap, c.draws_cap, c.rows_cap, c.rows_arms) == (319, 319, 8 * 319 * 48, 9 * 48)
    assert c.rows_null == pytest.approx(8 * 48 * expected_null_draws(10, 319))
    assert confirm_cost(8, 48, 0.05, rows_per_prompt=30).rows_cap == 8 * 319 * 48 * 30


def test_exp1_new_design_can_find_something_with_a_tenth_of_the_null_arms() -> None:
    d = compare_designs()
    assert d.tests_today == 2787 * 4 * 4 == 44_592
    assert (1 / (d.k_today + 1)) <= 0.05 / 44_592 < 1 / d.k_today  # the smallest K that could
    assert d.null_arms_today == d.k_today * 2787 * 4
    assert d.null_arms_new < d.null_arms_today / 10
    assert d.smallest_p_new <= d.bh_threshold_new  # one true cause can pass BH over N = 8
    assert d.gpu_h_new < d.gpu_h_today / 10
