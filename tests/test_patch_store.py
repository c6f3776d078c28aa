"""The patch stage and its run store on the tiny model: plans, commits, resume, corruption."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featurepath.config import ConditionSpec, RunConfig
from featurepath.errors import ConfigError
from featurepath.pipeline.backends.local import run_local
from featurepath.pipeline.patch import plan_units, prepare
from featurepath.pipeline.store import RunStore


def _cfg(**patch) -> RunConfig:
    cfg = RunConfig()
    cfg.patch.features = ["L1-3", "L2-5"]
    cfg.patch.record = ["L0-1", "L1-3", "L2-5", "L3-7"]
    cfg.patch.trials = 3
    cfg.patch.batch_size = 8
    cfg.patch.sampling.max_new_tokens = 4
    cfg.patch.sampling.temperature = 1.0
    for k, v in patch.items():
        setattr(cfg.patch, k, v)
    return cfg


def _run(tmp, tiny, saes, cfg, **kw):
    model, tok = tiny
    job = prepare(tmp, cfg, model, tok, saes, **kw)
    run_local(job, runtime=(model, tok, saes), progress=False)
    st = RunStore(tmp)
    return st.trials(), {n: st.activations(n)[0] for n in ("decision", "gen_mean", "gen_max")}


def test_plan_covers_every_trial_once():
    conds = [ConditionSpec(name="b", context="safe"),
             ConditionSpec(name="p", context="safe", patch="scale", scale=2.0)]
    units = plan_units(["L1-3", "L2-5"], conds, trials=5, batch_size=4, method="delta")
    seen = [(it.key, it.condition, t) for u in units for it in u.items
            for t in range(it.trial_start, it.trial_start + it.n)]
    assert len(seen) == len(set(seen)) == 5 + 2 * 5
    assert all(u.n_rows <= 4 for u in units)
    recon = plan_units(["L1-3", "L2-5"], conds, 2, 4, "reconstruct")
    keys = {(it.kind, it.layer) for u in recon for it in u.items if it.condition == "b"}
    assert keys == {("layer_baseline", 1), ("layer_baseline", 2)}  # a reconstruct baseline per layer


def test_patch_run_writes_store_and_resume_is_idempotent(tmp_path, tiny, tiny_saes):
    trials, arrays = _run(tmp_path / "a", tiny, tiny_saes, _cfg())
    n = 3 * 2 + 2 * 3 * 4  # baselines once per context + features x patched conditions
    assert len(trials) == n
    assert set(trials["condition"]) == {c.name for c in RunConfig().patch.conditions}
    assert (trials.loc[trials.feature == "", "layer"] == -1).all()
    assert np.isfinite(arrays["decision"][trials["row"].to_numpy()]).all()
    # same config again: identical results (determinism)
    trials2, arrays2 = _run(tmp_path / "b", tiny, tiny_saes, _cfg())
    pd.testing.assert_frame_equal(trials, trials2)
    for k in arrays:
        assert np.array_equal(arrays[k], arrays2[k], equal_nan=True)


def test_resume_redoes_only_missing_and_corrupt_units(tmp_path, tiny, tiny_saes):
    model, tok = tiny
    ref_trials, ref_arrays = _run(tmp_path / "ref", tiny, tiny_saes, _cfg())
    run = tmp_path / "run"
    job = prepare(run, _cfg(), model, tok, tiny_saes)
    st = RunStore(run)
    plan = st.plan()
    run_local(job, plan.units[:2], runtime=(model, tok, tiny_saes), progress=False)
    # corrupt unit 1's parquet part, and half-write unit 2 (part without a commit record)
    part = st.parts / "u00001.parquet"
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="--resume"):
        prepare(run, _cfg(), model, tok, tiny_saes)
    job = prepare(run, _cfg(), model, tok, tiny_saes, resume=True)
    pending = [u.index for u in st.pending()]
    assert 0 not in pending and 1 in pending
    run_local(job, runtime=(model, tok, tiny_saes), progress=False)
    pd.testing.assert_frame_equal(st.trials(), ref_trials)
    for k in ref_arrays:
        assert np.array_equal(st.activations(k)[0], ref_arrays[k], equal_nan=True)


def test_resume_with_changed_config_is_refused(tmp_path, tiny, tiny_saes):
    model, tok = tiny
    prepare(tmp_path, _cfg(), model, tok, tiny_saes)
    with pytest.raises(ConfigError, match="trials"):
        prepare(tmp_path, _cfg(trials=5), model, tok, tiny_saes, resume=True)


def test_replay_mode_and_reconstruct_baselines(tmp_path, tiny, tiny_saes):
    trials, arrays = _run(tmp_path, tiny, tiny_saes, _cfg(mode="replay", method="reconstruct"))
    base = trials[trials.condition == "safe_baseline"]
    assert set(base["layer"]) == {1, 2}
    assert trials["readout"].notna().all()
    # replay is deterministic per prompt: identical prompt & patch -> identical activations
    a = arrays["decision"][trials[(trials.feature == "L1-3") &
                                  (trials.condition == "safe_with_risky_patch")]["row"]]
    assert np.allclose(a, a[0], equal_nan=True)


def test_planning_lock_keeps_concurrent_shards_from_replanning(tmp_path, tiny, tiny_saes):
    import threading

    from featurepath.errors import DataError

    model, tok = tiny
    a, b = RunStore(tmp_path), RunStore(tmp_path)
    with a.planning_lock() as waited:
        assert waited is False
        # a second shard waits for the live planner instead of planning too
        with pytest.raises(DataError, match="still being planned"), b.planning_lock(timeout=0.5):
            pass
        got: list[bool] = []

        def second_shard() -> None:
            with b.planning_lock(timeout=30) as w:
                got.append(w)

        t = threading.Thread(target=second_shard)
        t.start()
        t.join(0.5)
        assert t.is_alive() and not got  # blocked while `a` plans
    t.join(10)
    assert got == [True]  # ... and told it waited, so it joins the plan as a resume
    # a failed planning attempt releases the lock and leaves no patch/ directory behind
    cfg = _cfg()
    cfg.patch.features = ["L9-1"]
    with pytest.raises(ConfigError, match="no SAE for layer 9"):
        prepare(tmp_path / "new", cfg, model, tok, tiny_saes)
    assert not (tmp_path / "new" / "patch").exists()
    with RunStore(tmp_path / "new").planning_lock(timeout=0.5) as waited:
        assert waited is False


def test_planning_lock_of_a_killed_process_is_taken_over_at_once(tmp_path):
    """The kernel releases an flock when its holder dies: no stale-lock wait."""
    import signal
    import subprocess
    import sys
    import time

    code = ("import sys, time; from featurepath.pipeline.store import RunStore\n"
            "with RunStore(sys.argv[1]).planning_lock():\n"
            "    print('held', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(Exception, match="still being planned"), \
            RunStore(tmp_path).planning_lock(timeout=0.3):
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    with RunStore(tmp_path).planning_lock(timeout=5):
        assert time.monotonic() - t0 < 1.0


def test_disk_full_stops_cleanly_and_keeps_finished_units(tmp_path, tiny, tiny_saes,
                                                          monkeypatch):
    import errno

    import featurepath.pipeline.store as store_mod
    from featurepath.pipeline.store import DiskFullError

    model, tok = tiny
    job = prepare(tmp_path, _cfg(), model, tok, tiny_saes)
    st = RunStore(tmp_path)
    units = st.plan().units
    run_local(job, units[:1], runtime=(model, tok, tiny_saes), progress=False)
    real = store_mod.atomic_write
    calls = {"n": 0}

    def full_disk(path, data):
        calls["n"] += 1
        if calls["n"] > 1:  # the second write of the next unit finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write", full_disk)
    with pytest.raises(DiskFullError, match="--resume"):
        run_local(job, units[1:], runtime=(model, tok, tiny_saes), progress=False)
    monkeypatch.setattr(store_mod, "atomic_write", real)
    assert st.is_done(units[0])
    assert not st.is_done(units[1])
    job = prepare(tmp_path, _cfg(), model, tok, tiny_saes, resume=True)
    run_local(job, runtime=(model, tok, tiny_saes), progress=False)
    assert st.pending() == []
