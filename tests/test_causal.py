"""Tests of featurepath.analysis.causal on synthetic trial tables with planted effects."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from featurepath.analysis.causal import (
    FEATURE_COLUMNS,
    TEST_COLUMNS,
    causal_table,
    scale_trend,
)
from featurepath.analysis.run_data import load_trials, pair_trials
from featurepath.errors import DataError

N = 40  # trials per condition


def _rows(rng, *, feature, layer, fid, context, condition, patch, stop_p, bet_mu, pstop_shift,
          prompt_base, method="delta", scale=np.nan, invalid=0, start_row=0):
    """One condition's trials: stop with prob stop_p, bets ~ N(bet_mu, 3), P(stop) per prompt."""
    out = []
    for i in range(N):
        stop = rng.random() < stop_p
        valid = i >= invalid
        out.append({
            "unit": 0, "row": start_row + i, "feature": feature, "layer": layer,
            "feature_id": fid, "condition": condition, "context": context, "patch": patch,
            "value": np.nan if patch == "none" else 1.0, "scale": scale, "method": method,
            "trial": i, "seed": i, "prompt_id": f"{context}-{i}", "response": "",
            "action": (("stop" if stop else "bet") if valid else None),
            "bet": (np.nan if stop or not valid else max(1.0, rng.normal(bet_mu, 3.0))),
            "valid": valid,
            "p_stop": float(np.clip(prompt_base[i] + pstop_shift + rng.normal(0, 0.02), 0, 1)),
            "n_new_tokens": 10,
        })
    return out


def make_trials(seed: int = 0) -> pd.DataFrame:
    """Baselines stop half the time. L3-1 is bidirectional, L5-2 makes both patches 'safe'
    (same effect), L7-3 does nothing; L3-1's safe patch in the safe context has 5 invalid trials."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    base = {c: rng.uniform(0.3, 0.7, N) for c in ("safe", "risky")}
    for ctx in ("safe", "risky"):
        rows += _rows(rng, feature="", layer=-1, fid=-1, context=ctx,
                      condition=f"{ctx}_baseline", patch="none", stop_p=0.5, bet_mu=20,
                      pstop_shift=0.0, prompt_base=base[ctx], invalid=2)
    spec = {
        ("L3-1", "safe"): (0.95, 10, 0.3), ("L3-1", "risky"): (0.05, 30, -0.3),
        ("L5-2", "safe"): (0.95, 20, 0.3), ("L5-2", "risky"): (0.95, 20, 0.3),
        ("L7-3", "safe"): (0.5, 20, 0.0), ("L7-3", "risky"): (0.5, 20, 0.0),
    }
    for (feat, patch), (sp_, bm, sh) in spec.items():
        layer, fid = (int(x) for x in feat[1:].split("-"))
        for ctx in ("safe", "risky"):
            inv = 5 if (feat == "L3-1" and patch == "safe" and ctx == "safe") else 0
            rows += _rows(rng, feature=feat, layer=layer, fid=fid, context=ctx,
                          condition=f"{ctx}_with_{patch}_patch", patch=patch, stop_p=sp_,
                          bet_mu=bm, pstop_shift=sh, prompt_base=base[ctx], invalid=inv)
    df = pd.DataFrame(rows)
    df["row"] = np.arange(len(df))
    return df


@pytest.fixture(scope="module")
def result():
    return causal_table(make_trials(), n_boot=200)


def test_columns(result) -> None:
    tests, features = result
    assert list(tests.columns) == TEST_COLUMNS
    assert list(features.columns) == FEATURE_COLUMNS
    # 3 features x 2 patches x 2 contexts x 3 metrics
    assert len(tests) == 48  # 3 features x 2 patches x 2 contexts x 4 metrics


def test_stop_rate_matches_fisher_and_excludes_invalid(result) -> None:
    tests, _ = result
    trials = make_trials()
    r = tests[(tests.feature == "L3-1") & (tests.context == "safe") & (tests.patch == "safe")
              & (tests.metric == "stop_rate")].iloc[0]
    p = trials[(trials.feature == "L3-1") & (trials.context == "safe") & (trials.patch == "safe")]
    b = trials[(trials.feature == "") & (trials.context == "safe")]
    assert r["n_invalid_patched"] == 5 and r["n_invalid_baseline"] == 2
    assert r["n_patched"] == N - 5 and r["n_baseline"] == N - 2
    kp, kb = int((p.action == "stop").sum()), int((b.action == "stop").sum())
    ref = sps.fisher_exact([[kp, N - 5 - kp], [kb, N - 2 - kb]])
    assert r["p"] == pytest.approx(ref.pvalue)
    assert r["effect"] == pytest.approx(kp / (N - 5) - kb / (N - 2))
    assert r["patched_value"] == pytest.approx(kp / (N - 5))  # invalid never counted as stops
    assert r["ci_low"] < r["effect"] < r["ci_high"]


def test_bet_and_p_stop_known_values(result) -> None:
    tests, _ = result
    trials = make_trials()
    sel = (tests.feature == "L3-1") & (tests.context == "risky") & (tests.patch == "risky")
    p = trials[(trials.feature == "L3-1") & (trials.context == "risky") & (trials.patch == "risky")]
    b = trials[(trials.feature == "") & (trials.context == "risky")]
    bet = tests[sel & (tests.metric == "bet")].iloc[0]
    # bets are compared within prompt; here every prompt has one trial per arm, so van Elteren
    # reduces to the sign test over the prompts where both arms made a valid bet
    vp = p[p.valid & (p.action == "bet")].set_index("prompt_id")["bet"]
    vb = b[b.valid & (b.action == "bet")].set_index("prompt_id")["bet"]
    both = vp.index.intersection(vb.index)
    sign = np.sign(vp[both] - vb[both])
    pos, neg = int((sign > 0).sum()), int((sign < 0).sum())
    n = pos + neg
    ref_p = (sps.binomtest(pos, n).pvalue if 2**n <= 50_000
             else 2 * sps.norm.sf(abs(pos - neg) / np.sqrt(n)))
    assert bet["p"] == pytest.approx(ref_p)
    assert bet["effect"] == pytest.approx((pos - neg) / len(both))
    assert bet["patched_value"] == pytest.approx(vp[both].mean())
    assert bet["baseline_value"] == pytest.approx(vb[both].mean())
    ps = tests[sel & (tests.metric == "p_stop")].iloc[0]
    pairs = pair_trials(load_norm(p), load_norm(b))
    ref = sps.ttest_rel(pairs["readout_p"], pairs["readout_b"])
    assert ps["p"] == pytest.approx(ref.pvalue)
    assert ps["effect"] == pytest.approx((pairs["readout_p"] - pairs["readout_b"]).mean())
    assert ps["n_patched"] == N  # P(stop) comes from logits: invalid trials keep it


def load_norm(df: pd.DataFrame) -> pd.DataFrame:
    from featurepath.analysis.run_data import normalise_trials

    return normalise_trials(df)


def test_bh_over_every_test(result) -> None:
    tests, _ = result
    ok = tests["p"].notna()
    ref = multipletests(tests.loc[ok, "p"], method="fdr_bh")[1]
    np.testing.assert_allclose(tests.loc[ok, "q"], ref)
    assert tests.loc[~ok, "q"].isna().all()


def test_classes_and_same_effect(result) -> None:
    _, features = result
    f = features.set_index("feature")
    assert f.loc["L3-1", "class"] == "bidirectional"
    assert not f.loc["L3-1", "same_effect"]
    assert f.loc["L5-2", "class"] == "safe"
    assert f.loc["L5-2", "same_effect"]
    assert "intervention" in f.loc["L5-2", "summary"]
    assert f.loc["L7-3", "class"] == "none"
    assert f.loc["L3-1", "n_significant"] > 0 and f.loc["L3-1", "best_q"] < 0.05
    assert features["best_q"].is_monotonic_increasing or features["best_q"].isna().any()


def test_degenerate_condition_not_tested() -> None:
    """Greedy decoding on one prompt: every trial identical -> all metrics degenerate."""
    rows = []
    for cond, feat, patch in (("safe_baseline", "", "none"), ("safe_with_safe_patch", "L2-7", "safe")):
        for i in range(30):
            rows.append({"row": len(rows), "feature": feat, "layer": 2 if feat else -1,
                         "feature_id": 7 if feat else -1, "condition": cond, "context": "safe",
                         "patch": patch, "trial": i, "prompt_id": "p0", "action": "stop",
                         "bet": np.nan, "valid": True, "p_stop": 0.8, "method": "delta"})
    tests, features = causal_table(pd.DataFrame(rows), n_boot=0)
    assert tests["degenerate"].all()
    assert tests["p"].isna().all() and tests["q"].isna().all()
    sr = tests[tests.metric == "stop_rate"].iloc[0]
    assert sr["effect"] == 0.0
    assert features.iloc[0]["class"] == "none" and features.iloc[0]["n_degenerate"] == 4


def test_reconstruct_uses_same_layer_baseline() -> None:
    t = make_trials()
    t = t[t.feature.isin(["", "L3-1"])].copy()
    t["method"] = "reconstruct"
    t.loc[t.feature == "", "layer"] = 3
    # a plain (delta) baseline with very different behaviour must be ignored
    plain = t[t.feature == ""].copy()
    plain["method"], plain["layer"], plain["action"], plain["bet"] = "delta", -1, "stop", np.nan
    tests, _ = causal_table(pd.concat([t, plain], ignore_index=True), n_boot=0)
    ref, _ = causal_table(t, n_boot=0)
    np.testing.assert_allclose(tests["p"].to_numpy(), ref["p"].to_numpy())
    # a reconstruct feature at a layer without its own baseline is skipped with a warning
    t2 = t.copy()
    t2.loc[t2.feature == "", "layer"] = 9
    with pytest.raises(DataError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        causal_table(t2)


def test_dose_response() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for s_i, scale in enumerate([0.0, 0.5, 1.0, 2.0, 4.0]):
        for i in range(N):
            stop = rng.random() < 0.1 + 0.2 * s_i
            rows.append({"row": len(rows), "feature": "L4-4", "layer": 4, "feature_id": 4,
                         "condition": f"safe_scale_{scale:g}", "context": "safe", "patch": "scale",
                         "scale": scale, "trial": i, "action": "stop" if stop else "bet",
                         "bet": np.nan if stop else 10.0 + s_i, "valid": True, "p_stop": 0.5})
    dr = scale_trend(pd.DataFrame(rows))
    st_ = dr.set_index("metric")
    assert st_.loc["bet", "rho"] == pytest.approx(1.0)
    assert st_.loc["stop_rate", "n_levels"] == 5
    assert st_.loc["stop_rate", "rho"] > 0.8
    assert scale_trend(make_trials()).empty


def test_load_trials_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="trials.parquet"):
        load_trials(tmp_path)
    pd.DataFrame({"feature": ["x"]}).to_parquet(tmp_path / "trials.parquet")
    with pytest.raises(DataError, match="lacks column"):
        load_trials(tmp_path)


def test_cli_writes_tables(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import featurepath.cli.analysis  # noqa: F401
    from featurepath.cli import app

    make_trials().to_parquet(tmp_path / "trials.parquet")
    res = CliRunner().invoke(app, ["causal", str(tmp_path), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    assert "bidirectional" in res.output and "same way" in res.output
    for stem in ("causal_tests", "causal_features"):
        assert (tmp_path / f"{stem}.parquet").is_file() and (tmp_path / f"{stem}.csv").is_file()
    assert len(pd.read_parquet(tmp_path / "causal_tests.parquet")) == 48


def test_cli_main_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:
    import featurepath.cli.analysis  # noqa: F401
    from featurepath import cli

    monkeypatch.setattr(cli, "_register", lambda: None)
    assert cli.main(["causal", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_invariants(seed: int) -> None:
    tests, features = causal_table(make_trials(seed), n_boot=0)
    q, p = tests["q"].to_numpy(), tests["p"].to_numpy()
    ok = np.isfinite(p)
    assert np.array_equal(ok, np.isfinite(q)) and np.all(q[ok] >= p[ok] - 1e-12)
    assert (tests.loc[tests.degenerate, "p"].isna()).all()
    assert set(features["class"]) <= {"safe", "risky", "bidirectional", "mixed", "none"}
    sr = tests[tests.metric == "stop_rate"]
    assert ((sr.patched_value >= 0) & (sr.patched_value <= 1)).all()


def test_scale_sweep_under_one_condition_name_is_split() -> None:
    t = make_trials()
    t = t[t.feature.isin(["", "L7-3"]) & (t.context == "safe")].copy()
    sel = t.feature == "L7-3"
    t.loc[sel, "condition"], t.loc[sel, "patch"], t.loc[sel, "value"] = "sweep", "scale", np.nan
    t.loc[sel, "scale"] = np.where(t.loc[sel, "trial"] % 2 == 0, 0.5, 2.0)
    tests, _ = causal_table(t, n_boot=0)
    assert sorted(tests["scale"].unique()) == [0.5, 2.0]
    assert len(tests) == 2 * 4
