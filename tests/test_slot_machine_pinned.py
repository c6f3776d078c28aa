"""The slot machine's numbers did not change when the stages began asking the task (issue 23,
step B): a tiny seeded run (play -> discover -> patch with null arms, the behavioural direction
and a dose ladder -> causal) against ``fixtures/slot_machine_pinned.json``, which was written by
the same run on the code *before* the change (main at 6bac161).

Discrete columns (actions, amounts, prompts, responses, end reasons, metric names, row counts)
are pinned exactly by a hash; floats with ``rtol=1e-5, atol=1e-6`` (docs/contributing.md: a
frozen file meets other CPUs' float32 kernels). Columns renamed since are read under their new
names (:data:`RENAMED`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "slot_machine_pinned.json"
#: old column name -> current name (the store's task-neutral names)
RENAMED = {"bet": "amount", "p_stop": "readout", "mean_bankrupt": "mean_risky"}
TABLES = {"decisions": "play/decisions.parquet", "metrics": "play/metrics.parquet",
          "discover": "discover.parquet", "trials": "trials.parquet",
          "causal_tests": "causal_tests.parquet", "causal_null": "causal_null.parquet",
          "dose_slopes": "dose_slopes.parquet"}


def _digest(values: pd.Series) -> str:
    blob = json.dumps([None if (x is None or (isinstance(x, float) and np.isnan(x))) else
                       (x.item() if hasattr(x, "item") else x) for x in values]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import torch

    from featurepath.analysis.causal import run_causal
    from featurepath.config import RunConfig
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.discover import run_discover
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.play import run_play
    from featurepath.pipeline.runtime import Runtime
    from featurepath.testing import tiny_llama, tiny_saes

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("pinned")
        model, tok = tiny_llama()
        saes = tiny_saes(model)
        sampling = {"answer": "constrained", "max_new_tokens": 6}
        cfg = RunConfig.model_validate({
            "seed": 3,
            "play": {"conditions": ["BASE", "GMHWP"], "bet_types": ["fixed", "variable"],
                     "games_per_condition": 12, "max_rounds": 8, "initial_balance": 20.0,
                     "max_bet": 20.0, "batch_size": 8, "sampling": sampling},
            "discover": {"max_candidates": 2, "min_d": 0.0, "alpha": 0.99},
            "patch": {"trials": 3, "mode": "sample", "batch_size": 32, "null_directions": 2,
                      "behavioural_direction": True, "doses": [0.5, 2.0],
                      "prompt_set": "play", "sampling": sampling},
            "analysis": {"n_boot": 0}})
        run_play(out, cfg, runtime=Runtime(model, tok, saes), progress=False)
        run_discover(out, cfg, runtime=Runtime(model, tok, saes), progress=False)
        with warnings.catch_warnings():  # zero-size clamps of inactive features: expected here
            warnings.simplefilter("ignore", UserWarning)
            job = prepare(out, cfg, model, tok, saes)
            run_local(job, runtime=(model, tok, saes), progress=False)
            run_causal(out, cfg)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("table", list(TABLES))
def test_slot_machine_tables_match_the_pinned_run(run, table: str) -> None:
    want = json.loads(FIXTURE.read_text())[table]
    df = pd.read_parquet(run / TABLES[table])
    if table == "discover":
        df = df.sort_values("feature").reset_index(drop=True)
    assert list(df.shape) == want["shape"]
    for old, digest in want["discrete"].items():
        assert _digest(df[RENAMED.get(old, old)]) == digest, f"{table}.{old}"
    for old, values in want["floats"].items():
        got = df[RENAMED.get(old, old)].to_numpy(dtype=float)
        ref = np.array([np.nan if v is None else v for v in values], dtype=float)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, equal_nan=True,
                                   err_msg=f"{table}.{old}")
