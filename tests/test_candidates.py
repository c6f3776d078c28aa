"""patch.candidates (issue 21): discover, the screen's top N, their union, the random check
across the screen's ranking, and never a scale clamp of an inactive feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featurepath.config import ConditionSpec, RunConfig
from featurepath.errors import ConfigError
from featurepath.pipeline.candidates import choose_candidates, random_check
from featurepath.pipeline.runtime import Runtime
from featurepath.pipeline.screen import rank_table


def _screen(run, n: int = 40, inactive: tuple[int, ...] = ()) -> pd.DataFrame:
    """Layer 1, features 0..n-1: |attribution| falls with the id under both interventions;
    features in ``inactive`` are inactive on every safe prompt (where the ablation scales)."""
    rows = []
    for ctx, name, patch in (("safe", "safe_ablated", "scale"), ("risky", "risky_v", "value")):
        for f in range(n):
            off = f in inactive
            att = 0.0 if (off and patch == "scale") else (-1) ** f * (n - f) / n
            if off and patch == "value":
                att = 2.0  # the best value clamp of all: still never chosen (scaled to 0 in safe)
            rows.append(dict(layer=1, feature_id=f, context=ctx, intervention=name,
                             patch=patch, attribution=att, attribution_se=0.01,
                             active_share=0.0 if (off and ctx == "safe") else 0.5,
                             clamp_mean=1.0, n_prompts=8))
    table = rank_table(pd.DataFrame(rows))
    table.to_parquet(run / "screen.parquet")
    return table


def _discover(run, ids) -> None:
    pd.DataFrame({"feature": [f"L1-{i}" for i in ids], "layer": 1, "feature_id": list(ids),
                  "mean_safe": 1.0, "mean_risky": 2.0, "candidate": True}
                 ).to_parquet(run / "discover.parquet")


def _cfg(**screen) -> RunConfig:
    cfg = RunConfig()
    cfg.patch.conditions = [ConditionSpec(name="safe_baseline", context="safe"),
                            ConditionSpec(name="safe_ablated", context="safe", patch="scale",
                                          scale=0.0),
                            ConditionSpec(name="risky_baseline", context="risky"),
                            ConditionSpec(name="risky_v", context="risky", patch="value",
                                          value=3.0)]
    for k, v in screen.items():
        setattr(cfg.screen, k, v)
    return cfg


def test_union_labels_each_source_and_skips_inactive_scale_clamps(tmp_path):
    _screen(tmp_path, inactive=(3, 30))
    _discover(tmp_path, [0, 3, 20])
    c = choose_candidates(tmp_path, _cfg(top_n=2, check_random=4))
    # screen top 2 per intervention: 0, 1 (safe), 0, 1 (risky; 3 and 30 are inactive in safe)
    assert c.sources["L1-0"] == "both"
    assert c.sources["L1-1"] == "screen"
    assert c.sources["L1-20"] == "discover"
    assert "L1-3" not in c.sources and "L1-30" not in c.sources and c.dropped_inactive == ["L1-3"]
    checks = [f for f, s in c.sources.items() if s == "random-check"]
    assert len(checks) == 4 and not set(checks) & {"L1-0", "L1-1", "L1-20", "L1-3", "L1-30"}
    # one from each quarter of the ranking: the top, the middle and the tail are all checked
    ids = sorted(int(f.split("-")[1]) for f in checks)
    assert [i // 10 for i in ids] == [0, 1, 2, 3]
    assert c == choose_candidates(tmp_path, _cfg(top_n=2, check_random=4))  # deterministic


def test_routes_and_the_user(tmp_path):
    _screen(tmp_path)
    _discover(tmp_path, [7])
    cfg = _cfg(top_n=1, check_random=0)
    cfg.patch.candidates = "discover"
    assert choose_candidates(tmp_path, cfg).sources == {"L1-7": "discover"}
    cfg.patch.candidates = "screen"
    assert choose_candidates(tmp_path, cfg).sources == {"L1-0": "screen"}
    got = choose_candidates(tmp_path, _cfg(check_random=2), features=["L1-3", "L1-30"])
    assert got.features[:2] == ["L1-3", "L1-30"]  # the user's, as given, then the check
    assert [got.sources[f] for f in got.features] == ["user", "user", "random-check",
                                                       "random-check"]
    (tmp_path / "discover.parquet").unlink()
    cfg.patch.candidates = "discover"
    with pytest.raises(ConfigError, match="no discover.parquet"):
        choose_candidates(tmp_path, cfg)
    (tmp_path / "screen.parquet").unlink()
    with pytest.raises(ConfigError, match="no features to patch"):
        choose_candidates(tmp_path, _cfg())


def test_random_check_is_stratified_and_seeded():
    table = pd.DataFrame({"feature": [f"L0-{i}" for i in range(100)], "rank": np.arange(1, 101)})
    a = random_check(table, 5, seed=1, exclude=set())
    assert [int(f.split("-")[1]) // 20 for f in a] == [0, 1, 2, 3, 4]
    assert a == random_check(table, 5, seed=1, exclude=set())
    assert a != random_check(table, 5, seed=2, exclude=set())
    assert len(random_check(table, 500, seed=1, exclude=set())) == 100


def test_trials_carry_the_source(tiny, tiny_saes, tmp_path):
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.store import RunStore

    model, tok = tiny
    cfg = _cfg(top_n=1, check_random=1)
    cfg.patch.trials, cfg.patch.mode, cfg.patch.batch_size = 2, "replay", 16
    screen = _screen(tmp_path)
    screen["layer"] = 2
    screen["feature"] = screen["feature"].str.replace("L1-", "L2-")
    screen.to_parquet(tmp_path / "screen.parquet")
    job = prepare(tmp_path, cfg, model, tok, tiny_saes)
    run_local(job, runtime=(model, tok, tiny_saes), progress=False)
    trials = RunStore(tmp_path).trials()
    got = trials.drop_duplicates("feature").set_index("feature")["source"].to_dict()
    assert got[""] == "" and got["L2-0"] == "screen"
    assert sorted(got.values()) == ["", "random-check", "screen"]


def test_screen_then_patch_then_causal_check_on_the_tiny_model(tiny, tiny_saes, tmp_path):
    """The route the demo takes: screen, union candidates (no discover here: the screen's top
    and the random check), patch, and causal's screen check over what was patched."""
    from featurepath.analysis.causal import run_causal
    from featurepath.analysis.screen_check import check_line
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.screen import run_screen

    model, tok = tiny
    cfg = _cfg(top_n=2, check_random=3)
    cfg.patch.trials, cfg.patch.mode, cfg.patch.batch_size = 2, "replay", 32
    cfg.analysis.n_boot = 0
    res = run_screen(tmp_path, cfg, runtime=Runtime(model, tok, tiny_saes), progress=False)
    assert res.n_features == 512 and set(res.table["intervention"]) == {"safe_ablated",
                                                                        "risky_v"}
    job = prepare(tmp_path, cfg, model, tok, tiny_saes)
    srcs = job.plan.extra["sources"]
    assert sorted(set(srcs.values())) == ["random-check", "screen"] and len(srcs) <= 7
    inactive = res.table[(res.table["context"] == "safe") & (res.table["active_share"] == 0)]
    assert not set(srcs) & set(inactive["feature"])  # never a zero-size ablation
    run_local(job, runtime=(model, tok, tiny_saes), progress=False)
    causal = run_causal(tmp_path, cfg)
    check = causal.screen_check
    assert set(check["intervention"]) == {"safe_ablated", "risky_v"}
    assert (check["n_features"] == len(srcs)).all() and (check["n_random"] == 3).all()
    assert "recall@2" in check_line(check)
    assert (tmp_path / "screen_check_points.parquet").exists()
