"""Issue 11, items 1 and 2: the unit of a paired test is the distinct prompt.

Decision-token values are a function of the prompt, so the repeats of one prompt (trials > prompts)
carry no new information; and float32 rounding makes a prompt's repeats differ by ~1e-8, which is
noise, not an effect. Every expected value here is computed independently with scipy on the
distinct prompts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from featurepath.analysis.causal import causal_table
from featurepath.analysis.pathways import pathway_edges
from featurepath.analysis.run_data import normalise_trials


def _trials(prompt_p_stop_base: np.ndarray, prompt_shift: np.ndarray, n_trials: int,
            noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """A baseline and one patched condition; trial t shows prompt t % n_prompts (as the patch
    stage does). P(stop) is the prompt's value (+ the patch's per-prompt shift) plus rounding
    noise of size ``noise`` that differs on every row."""
    rng = np.random.default_rng(seed)
    k = prompt_p_stop_base.size
    rows = []
    for feature, patch, shift in (("", "none", np.zeros(k)), ("L2-7", "safe", prompt_shift)):
        for t in range(n_trials):
            j = t % k
            rows.append({
                "row": len(rows), "feature": feature, "layer": 2 if feature else -1,
                "feature_id": 7 if feature else -1, "condition": "c" if feature else "b",
                "context": "safe", "patch": patch, "trial": t, "prompt_id": f"p{j}",
                "action": "bet", "bet": 10.0, "valid": True, "method": "delta",
                "p_stop": prompt_p_stop_base[j] + shift[j] + noise * rng.standard_normal(),
            })
    return pd.DataFrame(rows)


def _p_stop_row(trials: pd.DataFrame) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tests, _ = causal_table(trials, n_boot=0)
    return tests[tests["metric"] == "p_stop"].iloc[0]


def test_p_stop_uses_one_pair_per_distinct_prompt() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, 8)
    shift = rng.normal(0.02, 0.03, 8)  # per-prompt effect, 8 distinct values
    trials = _trials(base, shift, n_trials=32)
    with pytest.warns(UserWarning, match="more trials than distinct prompts"):
        causal_table(trials, n_boot=0)
    r = _p_stop_row(trials)
    ref = sps.ttest_rel(base + shift, base)  # the 8 distinct prompts, nothing else
    assert r["n_patched"] == r["n_baseline"] == 8
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert r["statistic"] == pytest.approx(ref.statistic, rel=1e-9)
    assert r["effect"] == pytest.approx(shift.mean())


def test_repeats_do_not_change_the_answer() -> None:
    rng = np.random.default_rng(2)
    base, shift = rng.uniform(0.2, 0.8, 6), rng.normal(0.0, 0.05, 6)
    once, four = _p_stop_row(_trials(base, shift, 6)), _p_stop_row(_trials(base, shift, 24))
    assert four["p"] == pytest.approx(once["p"], rel=1e-12)


def test_one_prompt_is_degenerate_by_design_whatever_the_rounding_noise() -> None:
    # the reported false finding: one prompt, 32 trials, effect -1.2e-8 plus float32 jitter
    trials = _trials(np.array([0.41]), np.array([-1.2e-8]), n_trials=32, noise=1e-8)
    r = _p_stop_row(trials)
    assert bool(r["degenerate"]) and np.isnan(r["p"]) and np.isnan(r["q"])
    assert r["n_patched"] == 1


def _acts_run(n_prompts: int, n_trials: int, n_targets: int, seed: int, noise: float = 0.0,
              shift_sd: float = 1.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Null pathways: the patch moves each target by a per-prompt amount of mean zero that is
    the same on every repeat of the prompt (decision tokens are deterministic)."""
    rng = np.random.default_rng(seed)
    prompt_base = rng.normal(5.0, 1.0, (n_prompts, n_targets))
    prompt_shift = rng.normal(0.0, shift_sd, (n_prompts, n_targets))
    trials = _trials(np.full(n_prompts, 0.5), np.zeros(n_prompts), n_trials)
    acts = np.empty((len(trials), n_targets))
    for i, r in enumerate(trials.itertuples()):
        j = int(r.prompt_id[1:])
        acts[i] = prompt_base[j] + (prompt_shift[j] if r.feature else 0.0)
    acts += noise * rng.standard_normal(acts.shape)
    return trials, acts


def test_pathways_pair_distinct_prompts_against_scipy() -> None:
    trials, acts = _acts_run(n_prompts=8, n_targets=3, n_trials=32, seed=3)
    with pytest.warns(UserWarning, match="more trials than distinct prompts"):
        e = pathway_edges(trials, acts, np.full(3, 4), np.arange(3))
    from featurepath.analysis.run_data import prompt_pairs

    t = normalise_trials(trials)
    pp = prompt_pairs(t[t["feature"] != ""], t[t["feature"] == ""])
    assert pp.n_prompts == 8 and pp.repeated
    rows_p = t.loc[t["feature"] != ""].groupby("prompt_id")["row"].first().to_numpy()
    rows_b = t.loc[t["feature"] == ""].groupby("prompt_id")["row"].first().to_numpy()
    for j in range(3):
        ref = sps.ttest_rel(acts[rows_p, j], acts[rows_b, j])
        r = e[e["target_feature"] == j].iloc[0]
        assert r["n_pairs"] == 8
        assert r["p"] == pytest.approx(ref.pvalue, rel=1e-6)


def test_pathways_type_one_error_under_the_null_with_repeats() -> None:
    # 8 prompts x 4 repeats, 400 null targets: about 5% may reach p < 0.05, not 36%
    trials, acts = _acts_run(n_prompts=8, n_targets=400, n_trials=32, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = pathway_edges(trials, acts, np.full(400, 4), np.arange(400))
    rate = float((e["p"] < 0.05).mean())
    assert rate < 0.09, rate  # binomial(400, 0.05): 0.09 is > 3.5 SD above 0.05
    assert int(e["edge"].sum()) == 0


def test_pathways_one_prompt_rounding_shift_is_no_edge() -> None:
    # one prompt, 32 trials, the patch moves targets by ~1e-7 (float32 jitter between units)
    trials, acts = _acts_run(n_prompts=1, n_targets=23, n_trials=32, seed=5, noise=1e-7,
                             shift_sd=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = pathway_edges(trials, acts.astype(np.float32), np.full(23, 4), np.arange(23))
    assert e["degenerate"].all() and e["p"].isna().all()
    assert int(e["edge"].sum()) == 0


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 6), st.integers(1, 4), st.integers(0, 10_000))
def test_prompt_pairs_ignore_row_order_and_repeats(n_prompts: int, repeats: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base, shift = rng.uniform(0.2, 0.8, n_prompts), rng.normal(0, 0.05, n_prompts)
    once = _p_stop_row(_trials(base, shift, n_prompts))
    many = _trials(base, shift, n_prompts * repeats)
    shuffled = many.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    again = _p_stop_row(shuffled)
    assert again["n_patched"] == n_prompts
    if once["degenerate"]:
        assert again["degenerate"]
    else:
        assert again["p"] == pytest.approx(once["p"], rel=1e-9)
        assert again["effect"] == pytest.approx(shift.mean())
