"""Scaling past one process: Ray workers (one killed mid-run), SLURM-style shards and the status
summary all end in, or describe, the same store as a plain single-process run."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from featurepath.cli import main
from featurepath.pipeline.store import RunStore
from featurepath.testing import assert_same_store

FEATURES = "L1-3,L2-5"
CONDITIONS = [{"name": "safe_baseline", "context": "safe"},
              {"name": "safe_with_risky_patch", "context": "safe", "patch": "risky"},
              {"name": "risky_with_safe_patch", "context": "risky", "patch": "safe"}]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A tiny model directory, its SAEs and a config, as a user would have them on disk."""
    from featurepath.testing import write_tiny_inputs

    root = tmp_path_factory.mktemp("tiny_par")
    write_tiny_inputs(root)
    cfg = {"model": str(root / "model"), "saes": str(root / "saes"),
           "patch": {"record": ["L0-1", "L1-3", "L2-5", "L3-7"], "features": FEATURES.split(","),
                     "conditions": CONDITIONS, "trials": 3, "batch_size": 2,
                     "sampling": {"max_new_tokens": 6, "temperature": 1.0}}}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _args(tiny_dirs: Path, run: Path, *extra: str) -> list[str]:
    return ["patch", str(run), "--config", str(tiny_dirs / "cfg.yaml"), "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference(tiny_dirs, tmp_path_factory) -> Path:
    """One uninterrupted single-process run: what every other way of running must reproduce."""
    ref = tmp_path_factory.mktemp("ref") / "run"
    assert main(_args(tiny_dirs, ref)) == 0
    return ref


def test_shards_give_the_unsharded_store(tiny_dirs, reference, tmp_path):
    run = tmp_path / "sharded"
    assert main(_args(tiny_dirs, run, "--shard", "0/2")) == 0
    done = RunStore(run).done_units()
    assert done and all(u % 2 == 0 for u in done)
    assert main(_args(tiny_dirs, run, "--shard", "1/2")) == 0
    assert RunStore(run).pending() == []
    assert_same_store(reference, run)


def test_status_of_a_half_done_run(tiny_dirs, reference, tmp_path):
    from featurepath.pipeline.backends.ray import failed_path, running_dir
    from featurepath.pipeline.status import run_status

    run = tmp_path / "half"
    assert main(_args(tiny_dirs, run, "--shard", "0/2")) == 0
    store = RunStore(run)
    n_units = len(store.plan().units)
    n_done = len(store.done_units())
    # one unit "running" under a live driver (this process), one failed earlier
    left = [u.index for u in store.pending(verify=False)]
    running_dir(run).mkdir(parents=True, exist_ok=True)
    (running_dir(run) / f"u{left[0]:05d}").write_text(json.dumps(
        {"unit": left[0], "pid": 1, "driver_pid": os.getpid(), "driver_host": os.uname()[1],
         "started": time.time()}))
    failed_path(run).write_text(json.dumps({str(left[1]): {"error": "KeyError: 'x'",
                                                            "attempts": 3}}))
    st = run_status(run)
    assert st["units"] == n_units and st["done"] == n_done
    assert st["running"] == [left[0]] and st["failed"] == [left[1]]
    assert st["left"] == n_units - n_done
    assert st["trials_done"] == len(pd.concat(pd.read_parquet(p) for p in
                                              (run / "patch" / "parts").glob("u*.parquet")))
    assert st["bytes_written"] > 0 and st["disk_free"] > 0
    assert st["bytes_per_unit"] > 0 and st["bytes_needed"] >= 0
    assert "warnings" in st
    # a driver that is gone leaves markers that mean nothing
    (running_dir(run) / f"u{left[0]:05d}").write_text(json.dumps(
        {"unit": left[0], "driver_pid": 2 ** 22 + 12345, "driver_host": os.uname()[1],
         "started": time.time()}))
    assert run_status(run)["running"] == []
    full = run_status(reference)
    assert full["done"] == full["units"] and full["left"] == 0 and full["eta_seconds"] == 0


def test_status_command_prints(tiny_dirs, reference, capsys):
    assert main(["status", str(reference)]) == 0
    out = capsys.readouterr().out
    assert "units" in out and "done" in out and "disk" in out


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    import sys

    from featurepath.errors import ConfigError
    from featurepath.pipeline.backends import ray as parallel

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ConfigError, match=r"pip install 'featurepath\[ray\]'"):
        parallel.start_ray()


def assert_listens_on_localhost_only() -> None:
    """Every socket the Ray processes started by this test listen on is a loopback one."""
    import psutil

    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    seen = 0
    for child in psutil.Process().children(recursive=True):
        try:
            conns = child.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                seen += 1
                assert c.laddr.ip in loopback, f"{child.name()} listens on {c.laddr}"
    assert seen, "expected Ray's servers among this process's children"


@pytest.mark.ray
def test_ray_worker_killed_mid_run_gives_identical_store(tiny_dirs, reference, tmp_path):
    pytest.importorskip("ray")
    from featurepath.config import resolve_config
    from featurepath.pipeline.backends.ray import (
        failed_path,
        run_ray,
        running_dir,
        shutdown_ray,
        start_ray,
    )
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.runtime import load_runtime
    from featurepath.pipeline.store import PlanItem, Unit

    run = tmp_path / "ray"
    cfg = resolve_config(run, tiny_dirs / "cfg.yaml")
    model, tok, saes = load_runtime(cfg, progress=False)
    job = prepare(run, cfg, model, tok, saes)
    todo = RunStore(run).pending()
    assert start_ray(num_cpus=2)
    try:
        assert_listens_on_localhost_only()
        killed: list[int] = []

        def kill_one(unit_id: int) -> None:
            """After the first commit, SIGKILL the worker of a unit still in flight."""
            if killed:
                return
            for marker in sorted(running_dir(run).glob("u*")):
                pid = json.loads(marker.read_text()).get("pid")
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return

        summary = run_ray(job, todo, workers=2, progress=False, on_unit=kill_one)
        assert killed, "a worker should have been killed mid-run"
        assert summary.failed == [] and summary.units == len(todo)
        assert summary.requeued >= 1 and summary.restarts >= 1
        assert RunStore(run).pending() == []
        assert not list(running_dir(run).glob("u*"))
        assert_same_store(reference, run)

        # A unit that raises every time is retried, then recorded as failed; the run finishes.
        bad = Unit(len(job.plan.units), [PlanItem("baseline", "no-such-condition", 0, 1)], 0)
        summary = run_ray(job, [bad], workers=1, progress=False, max_retries=1)
        assert summary.failed == [bad.index]
        rec = json.loads(failed_path(run).read_text())[str(bad.index)]
        assert rec["attempts"] == 2 and "no-such-condition" in rec["error"]
    finally:
        shutdown_ray()


def _running(procs) -> list:
    """The processes of ``procs`` still running (a zombie has ended: only its parent may reap
    it, and in a container that parent can be an init that never does)."""
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_killed_ray_driver_leaves_no_ray_process(tiny_dirs, tmp_path):
    """SIGKILL the driver of `patch --backend ray` once its workers are up: the private Ray it
    started (GCS, raylet, workers and agents) must be gone within seconds."""
    pytest.importorskip("ray")
    import subprocess
    import sys

    import psutil

    marker = tmp_path / "paused"
    env = {**os.environ, "FEATUREPATH_PAUSE_AT": "ray-workers-ready",
           "FEATUREPATH_PAUSE_AT_FILE": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "featurepath",
                             *_args(tiny_dirs, tmp_path / "run", "--backend", "ray",
                                    "--workers", "1")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), proc.communicate(timeout=10)[1][-3000:]
        ray_procs = [p for p in psutil.Process(proc.pid).children(recursive=True)
                     if "ray" in " ".join(p.cmdline())]
        names = {p.name() for p in ray_procs}
        assert {"raylet", "gcs_server"} <= names, names
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 15
    while _running(ray_procs) and time.time() < deadline:
        time.sleep(0.5)
    left = [(p.pid, p.name()) for p in _running(ray_procs)]
    for p in _running(ray_procs):  # do not leave them to the next test
        p.kill()
    assert not left, f"Ray processes outlived their driver: {left}"


@pytest.mark.ray
@pytest.mark.slow
def test_status_ends_the_ray_a_killed_driver_left(tiny_dirs, tmp_path):
    """SIGKILL the watchdog, then the driver of `patch --backend ray` once its workers are up
    (as the OOM killer or a kill of every process of a job may): part of its private Ray outlives
    both. `featurepath status RUN` ends it and says so in one warning line, once."""
    pytest.importorskip("ray")
    import subprocess
    import sys

    import psutil

    if not Path("/proc/self/environ").exists():
        pytest.skip("the sweep reads /proc (Linux)")
    run, marker = tmp_path / "run", tmp_path / "paused"
    env = {**os.environ, "FEATUREPATH_PAUSE_AT": "ray-workers-ready",
           "FEATUREPATH_PAUSE_AT_FILE": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "featurepath",
                             *_args(tiny_dirs, run, "--backend", "ray", "--workers", "1")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ray_procs: list = []
    try:
        deadline = time.time() + 180
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), proc.communicate(timeout=10)[1][-3000:]
        kids = psutil.Process(proc.pid).children(recursive=True)
        reapers = [p for p in kids if "ray_reaper" in " ".join(p.cmdline())]
        ray_procs = [p for p in kids
                     if p not in reapers and "ray" in " ".join(p.cmdline())]
        assert len(reapers) == 1 and ray_procs
        reapers[0].kill()
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    try:
        time.sleep(2.0)  # what ends by itself once its driver is gone has ended by now
        assert _running(ray_procs), "expected some of Ray to outlive its driver and watchdog"
        status = [sys.executable, "-m", "featurepath", "status", str(run)]
        out = subprocess.run(status, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("warning: stopped")]
        assert len(lines) == 1 and f"pid {proc.pid}" in lines[0], out.stdout
        left = [(p.pid, p.name()) for p in _running(ray_procs)]
        assert not left, f"Ray processes still running after status: {left}"
        again = subprocess.run(status, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "warning: stopped" not in again.stdout
    finally:
        for p in _running(ray_procs):  # do not leave them to the next test
            p.kill()
