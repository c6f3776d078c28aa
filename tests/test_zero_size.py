"""Zero-size interventions: a scale clamp of a feature that is inactive on the prompts is
``scale × 0 = 0``, and so is every null arm of it. The feature's band is then a point (sd 0, no
z) that tests nothing; such tests are judged "degenerate: zero-size intervention", never
significant, and counted apart in the controls — and the patch stage warns before it runs
when a scale clamp is zero at the decision token.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from featurepath.analysis.causal import CausalResult, causal_table, run_causal
from featurepath.analysis.run_data import normalise_trials, reproduces_baseline
from featurepath.config import ConditionSpec, RunConfig
from featurepath.pipeline.patch_checks import inactive_scale_clamps
from featurepath.report.controls import _sentences, summarise_controls, verdict_label
from featurepath.rundir import ZERO_SIZE_TEST

N = 12  # trials per arm; trial t shows prompt t % 4 with seed t (seed-matched)


def _baseline(rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({
        "feature": "", "layer": -1, "feature_id": -1, "condition": "risky_baseline",
        "context": "risky", "patch": "none", "arm": "baseline", "null_index": -1,
        "trial": np.arange(N), "prompt_id": [f"p{t % 4}" for t in range(N)],
        "action": ["stop" if t % 3 == 0 else "bet" for t in range(N)],
        "amount": [np.nan if t % 3 == 0 else 10.0 + t for t in range(N)], "valid": True,
        "readout": rng.uniform(0.1, 0.9, N), "method": "delta", "scale": np.nan,
    })


def _arm(base: pd.DataFrame, feature: str, arm: str, k: int, condition: str = "risky_amp",
         shift: float = 0.0, noise: float = 1e-9, seed: int = 0) -> pd.DataFrame:
    """An arm of ``feature`` under ``condition``: the baseline's trials, P(stop) moved by
    ``shift`` (plus ``noise``, the engine's rounding between work units), every answer flipped
    to stop when ``shift`` > 0.2."""
    rng = np.random.default_rng(seed)
    layer, fid = (int(x) for x in feature[1:].split("-"))
    out = base.copy()
    out["feature"], out["layer"], out["feature_id"] = feature, layer, fid
    out["condition"], out["patch"], out["scale"] = condition, "scale", 2.0
    out["arm"], out["null_index"] = arm, k
    out["readout"] = base["readout"] + shift + noise * rng.standard_normal(N)
    if shift > 0.2:
        out["action"], out["amount"] = "stop", np.nan
    return out


def _run(k_null: int = 4) -> pd.DataFrame:
    """L2-7: nothing moves (zero-size); L2-9: the feature moves, its null arms do not; L2-11:
    the feature does not move but one null arm does (not zero-size: the size is not zero)."""
    rng = np.random.default_rng(3)
    base = _baseline(rng)
    parts = [base]
    for i, (feature, shift, null_shift) in enumerate((("L2-7", 0.0, [0.0] * k_null),
                                                      ("L2-9", 0.4, [0.0] * k_null),
                                                      ("L2-11", 0.0, [0.0] * (k_null - 1)
                                                       + [0.3]))):
        parts.append(_arm(base, feature, "feature", -1, shift=shift, seed=10 * i))
        parts += [_arm(base, feature, "null", k, shift=s, seed=10 * i + k + 1)
                  for k, s in enumerate(null_shift)]
    df = pd.concat(parts, ignore_index=True)
    df["row"] = np.arange(len(df))
    return df


def _tests(trials: pd.DataFrame) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tests, _ = causal_table(trials, n_boot=0)
    return tests


# --------------------------------------------------------------------- trial-for-trial identity
def test_reproduces_baseline_trial_for_trial() -> None:
    base = normalise_trials(_baseline(np.random.default_rng(0)))
    same = normalise_trials(_arm(base, "L2-7", "feature", -1, noise=1e-8))
    assert reproduces_baseline(same, base)  # rounding between work units is not a change
    assert not reproduces_baseline(normalise_trials(_arm(base, "L2-7", "feature", -1,
                                                         noise=1e-4)), base)
    other = same.copy()
    other.loc[5, "action"], other.loc[5, "amount"] = "stop", np.nan  # one answer differs
    assert not reproduces_baseline(other, base)
    other = same.copy()
    other.loc[5, "amount"] = 99.0
    assert not reproduces_baseline(other, base)
    # a patched trial without its baseline trial (another prompt) is not reproduced
    other = same.copy()
    other.loc[0, "prompt_id"] = "elsewhere"
    assert not reproduces_baseline(other, base)
    assert not reproduces_baseline(same.iloc[:0], base)


# --------------------------------------------------------------------- causal tests
def test_zero_size_tests_are_degenerate_and_leave_the_bh_family() -> None:
    tests = _tests(_run())
    zero = tests[tests["test"] == ZERO_SIZE_TEST]
    assert set(zero["feature"]) == {"L2-7"}
    assert len(zero) == 4 and set(zero["metric"]) == {"stop_rate", "invalid_rate", "bet",
                                                      "p_stop"}
    assert zero["degenerate"].all() and zero["p"].isna().all() and zero["q"].isna().all()
    assert not zero["significant"].any() and not zero["vs_baseline"].any()
    assert zero["null_n"].max() > 0  # it has a band, but the band is a point
    others = tests[tests["feature"].isin(["L2-9", "L2-11"])]
    assert not (others["test"] == ZERO_SIZE_TEST).any()
    # BH runs over the tests actually run: the zero-size ones are not in the family
    run = tests[~tests["degenerate"]]
    assert run["q"].to_numpy() == pytest.approx(
        multipletests(run["p"].to_numpy(float), method="fdr_bh")[1])
    moved = tests[(tests["feature"] == "L2-9") & (tests["metric"] == "stop_rate")].iloc[0]
    assert moved["effect"] == pytest.approx(1 - 4 / 12) and not moved["degenerate"]


def test_no_null_arms_no_zero_size_verdict() -> None:
    """Without null arms a no-op clamp is tested against the baseline as before (the A/A
    run's premise): only K directions that all change nothing show the size was zero."""
    trials = _run()
    tests = _tests(trials[trials["arm"] != "null"])
    assert not (tests["test"] == ZERO_SIZE_TEST).any()


def test_controls_line_counts_zero_size_tests() -> None:
    tests = _tests(_run())
    line = CausalResult(tests, pd.DataFrame(), pd.DataFrame(), 0.05).controls_line()
    assert ("4 test(s) of 1 feature(s) not run, degenerate: zero-size intervention (the "
            "patched trials reproduce the baseline trial for trial") in line
    clean = tests[tests["feature"] != "L2-7"]
    assert "zero-size" not in CausalResult(clean, pd.DataFrame(), pd.DataFrame(),
                                           0.05).controls_line()


def test_report_controls_section_explains_zero_size_tests() -> None:
    tests = _tests(_run())
    s = summarise_controls(tests, alpha=0.05)
    assert s.n_zero_size == 4 and s.zero_size_features == ["L2-7"]
    text = " ".join(_sentences(s))
    assert ("4 feature tests (1 feature: L2-7) are degenerate, zero-size intervention" in text)
    assert s.per_metric["zero-size (not tested)"].sum() == 4
    rec = tests[tests["test"] == ZERO_SIZE_TEST].iloc[0].to_dict()
    assert verdict_label(rec, 0.05) == "zero-size"
    plain = summarise_controls(tests[tests["feature"] != "L2-7"], alpha=0.05)
    assert plain.n_zero_size == 0 and "zero-size (not tested)" not in plain.per_metric
    assert "zero-size" not in " ".join(_sentences(plain))


# --------------------------------------------------------------------- planning time
def test_inactive_scale_clamps_by_hand() -> None:
    acts = {"risky": np.array([[0.0, 1.5], [0.0, 0.0], [2.0, 0.0]]),
            "safe": np.array([[0.3, 0.0]])}
    conds = [ConditionSpec(name="rb", context="risky"),
             ConditionSpec(name="amp", context="risky", patch="scale", scale=2.0),
             ConditionSpec(name="aa", context="risky", patch="scale", scale=1.0),
             ConditionSpec(name="set0", context="risky", patch="value", value=0.0),
             ConditionSpec(name="half", context="safe", patch="scale", scale=0.5),
             ConditionSpec(name="sp", context="safe", patch="safe")]
    got = inactive_scale_clamps(acts, ["A", "B"], conds)
    # 2 x 0 = 0 where inactive; scale 1 (a deliberate no-op) and value clamps are not scale
    # clamps of an inactive feature
    assert got == [("A", "amp", 2, 3), ("B", "amp", 2, 3), ("B", "half", 1, 1)]
    assert inactive_scale_clamps({}, ["A"], conds) == []


def _cfg() -> RunConfig:
    cfg = RunConfig()
    cfg.patch.features = ["L2-5"]
    cfg.patch.record = ["L2-5"]
    cfg.patch.conditions = [
        ConditionSpec(name="risky_baseline", context="risky"),
        ConditionSpec(name="risky_amp", context="risky", patch="scale", scale=3.0),
        ConditionSpec(name="risky_set", context="risky", patch="value", value=6.0),
    ]
    cfg.patch.null_directions = 3
    cfg.patch.prompt_set = "states"
    cfg.patch.n_prompts = 4
    cfg.patch.trials = 8
    cfg.patch.batch_size = 7  # the same prompt lands in differently composed batches
    cfg.patch.store_dtype = "float32"
    cfg.patch.sampling.max_new_tokens = 4
    cfg.patch.sampling.answer = "constrained"
    cfg.patch.sampling.temperature = 1.0
    cfg.analysis.n_boot = 0
    return cfg


def test_inactive_feature_on_the_tiny_model(tmp_path, tiny, tiny_saes) -> None:
    """End to end: L2-5 made inactive everywhere (threshold out of reach), so its scale clamp
    and null arms write zero; the planner warns, and causal judges it zero-size, while its
    value clamp (6 - 0 != 0) is tested."""
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.patch import prepare

    model, tok = tiny
    saes = dict(tiny_saes)
    saes[2] = copy.deepcopy(tiny_saes[2])
    saes[2].threshold.data[5] = 1e9
    cfg = _cfg()
    with pytest.warns(UserWarning, match="zero at the decision token") as rec:
        job = prepare(tmp_path, cfg, model, tok, saes)
    msg = next(str(w.message) for w in rec if "decision token" in str(w.message))
    assert msg.startswith("1 scale clamp(s) are zero at the decision token on some prompts")
    assert msg.endswith("L2-5 under risky_amp on 4 of 4 prompts; a value clamp (patch: value) "
                        "moves an inactive feature")
    run_local(job, runtime=(model, tok, saes), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_causal(tmp_path, cfg)
    feat = res.tests[res.tests["arm"] == "feature"]
    amp, put = feat[feat["condition"] == "risky_amp"], feat[feat["condition"] == "risky_set"]
    assert (amp["test"] == ZERO_SIZE_TEST).all() and amp["degenerate"].all()
    assert not (put["test"] == ZERO_SIZE_TEST).any()
    assert "not run, degenerate: zero-size intervention" in res.controls_line()
