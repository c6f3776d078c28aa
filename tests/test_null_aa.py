"""A/A run: every patched condition is a no-op clamp (``patch: scale`` with ``scale: 1.0``).

Nothing can cause anything here, so a trustworthy analysis must find nothing: no significant
causal test and no pathway edge. The run uses several distinct prompts, more trials than
prompts (each prompt repeated), small work units (so the same prompt's float32 results differ by
rounding between units) and a float32 store — the settings under which featurepath used to
report rounding noise and pseudo-replicated pairs as effects (issue 11).
"""

from __future__ import annotations

import warnings

import pytest

from featurepath.analysis.causal import run_causal
from featurepath.analysis.pathways import run_pathways
from featurepath.config import ConditionSpec, RunConfig
from featurepath.pipeline.backends.local import run_local
from featurepath.pipeline.patch import prepare


def _aa_config(mode: str) -> RunConfig:
    cfg = RunConfig()
    cfg.patch.features = ["L0-1", "L2-5"]
    cfg.patch.record = ["L0-1", "L1-3", "L2-5", "L3-7", "L3-8", "L2-9", "L1-11"]
    cfg.patch.conditions = [
        ConditionSpec(name="safe_baseline", context="safe"),
        ConditionSpec(name="safe_aa", context="safe", patch="scale", scale=1.0),
        ConditionSpec(name="risky_baseline", context="risky"),
        ConditionSpec(name="risky_aa", context="risky", patch="scale", scale=1.0),
    ]
    cfg.patch.prompt_set = "states"
    cfg.patch.n_prompts = 4
    # the population this test was built on (no held-out half): on it, float32 rounding between
    # differently composed units moves P(stop) by more than the zero-size tolerance in replay
    # mode, which is what makes the A/A test non-vacuous there
    cfg.analysis.confirm_share = 0.0
    cfg.patch.trials = 12  # three repeats of each prompt
    cfg.patch.batch_size = 11  # prime: the same prompt lands in differently composed batches
    cfg.patch.store_dtype = "float32"
    cfg.patch.mode = mode
    cfg.patch.sampling.max_new_tokens = 8
    cfg.patch.sampling.answer = "constrained"  # the random model then answers bet or stop
    cfg.patch.sampling.temperature = 1.0
    cfg.analysis.n_boot = 0
    return cfg


@pytest.mark.parametrize("mode", ["replay", "sample"])
def test_aa_run_finds_nothing(tmp_path, tiny, tiny_saes, mode) -> None:
    model, tok = tiny
    cfg = _aa_config(mode)
    job = prepare(tmp_path, cfg, model, tok, tiny_saes)
    run_local(job, runtime=(model, tok, tiny_saes), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        causal = run_causal(tmp_path, cfg)
        paths = run_pathways(tmp_path, cfg)
    tested = causal.tests[~causal.tests["degenerate"]]
    assert (tested["metric"] == "p_stop").any()  # not vacuous: P(stop) is tested on 4 prompts
    assert (~paths.edges["degenerate"]).any()
    sig = causal.tests[causal.tests["significant"]]
    assert sig.empty, sig[["feature", "context", "metric", "effect", "p", "q"]].to_string()
    assert int(paths.edges["edge"].sum()) == 0, paths.edges[paths.edges["edge"]].head().to_string()
    assert (causal.features["class"] == "none").all()
