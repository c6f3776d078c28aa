"""A private Ray left behind by a dead driver is ended by the run's next start or ``status``:
the sweep, with stand-in processes (no Ray needed), and ``start_ray`` doing it before it starts.
The real thing — a SIGKILLed ``patch --backend ray`` whose watchdog died too — is
``test_parallel.py::test_status_ends_the_ray_a_killed_driver_left``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from featurepath.pipeline.ray_stale import (
    TOKEN_ENV,
    DriverRecord,
    carrying,
    new_record,
    save_record,
    sweep_stale,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                                reason="the sweep reads /proc (Linux)")


def _stand_in(token: str | None, title: str = "ray::StandInWorker",
              hold: Path | None = None) -> subprocess.Popen:
    """A sleeping process titled like a Ray process, carrying ``token`` in its environment (or
    not) and holding ``hold`` open (as Ray's agents hold their logs in the session directory)."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    code = "import sys, time; f = sys.argv[1:] and open(sys.argv[1], 'a'); time.sleep(120)"
    return subprocess.Popen([title, "-c", code, *([str(hold)] if hold else [])],
                            executable=sys.executable, env=env)


def _wait_for(pred, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _dead_driver(session_dir: Path | None = None) -> DriverRecord:
    """A record whose driver is gone: this pid, but another start time (a recycled pid)."""
    rec = new_record()
    rec.start = -1
    if session_dir is not None:
        rec.session_dir = str(session_dir)
    return rec


def test_sweep_ends_only_the_dead_drivers_ray(tmp_path):
    folder = tmp_path / "patch" / "ray_drivers"
    session = tmp_path / "ray" / "session_2026-11-30_00-00-00_000000_1"
    (session / "logs").mkdir(parents=True)
    dead, live, elsewhere = _dead_driver(session), new_record(), _dead_driver()
    live.token = "live-token"
    elsewhere.host, elsewhere.token = "another-host", "elsewhere-token"
    for rec in (dead, live, elsewhere):
        save_record(folder, rec)
    procs = {
        "worker": _stand_in(dead.token),
        # an agent: its title blanked its environment, its logs are open in the session
        "agent": _stand_in(None, "ray::StandInAgent", session / "logs" / "agent.log"),
        # someone reading those logs is not part of that Ray
        "tail": _stand_in(None, "tail", session / "logs" / "agent.log"),
        "live": _stand_in(live.token), "elsewhere": _stand_in(elsewhere.token),
        "none": _stand_in(None)}
    ended = {procs["worker"].pid, procs["agent"].pid}
    try:
        assert _wait_for(lambda: set(carrying(dead.token, dead.session_dir)) == ended)
        messages = sweep_stale(folder)
        assert len(messages) == 1
        msg = messages[0]
        assert msg.startswith("stopped 2 Ray processes (ray::StandInAgent, ray::StandInWorker)")
        assert f"pid {dead.pid}" in msg and "session_2026-11-30_00-00-00_000000_1" in msg
        for k in ("worker", "agent"):
            assert procs[k].wait(timeout=10) is not None
        assert all(procs[k].poll() is None for k in ("tail", "live", "elsewhere", "none"))
        left = {p.name for p in folder.glob("*.json")}
        assert left == {live.filename, elsewhere.filename}
        assert sweep_stale(folder) == []  # said once
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_a_dead_driver_whose_ray_is_gone_is_forgotten_quietly(tmp_path):
    folder = tmp_path / "ray_drivers"
    save_record(folder, _dead_driver())
    assert sweep_stale(folder) == []
    assert list(folder.glob("*.json")) == []
    assert sweep_stale(tmp_path / "missing") == []


def test_a_live_driver_is_alive_and_a_recycled_pid_is_not():
    assert new_record().alive()
    assert not _dead_driver().alive()


@pytest.mark.ray
def test_start_ray_ends_a_stale_ray_first_and_records_its_own(tmp_path, capfd):
    """``start_ray(run_dir=...)`` sweeps before it starts; while its Ray runs, this driver is
    recorded and its token is in the environment of Ray's processes; shutdown drops the record."""
    pytest.importorskip("ray")
    import ray

    from featurepath.pipeline.backends.ray import shutdown_ray, start_ray
    from featurepath.rundir import RunDir

    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    folder = RunDir(tmp_path).ray_drivers
    stale = _dead_driver()
    save_record(folder, stale)
    proc = _stand_in(stale.token)
    try:
        assert _wait_for(lambda: bool(carrying(stale.token)))
        assert start_ray(num_cpus=1, run_dir=tmp_path)
        try:
            err = capfd.readouterr().err
            assert "warning: stopped 1 Ray process (ray::StandInWorker)" in err
            assert f"pid {stale.pid}" in err
            assert proc.wait(timeout=10) is not None
            (own,) = folder.glob("*.json")
            rec = DriverRecord(**json.loads(own.read_text()))
            assert rec.pid == os.getpid() and rec.session_dir
            assert TOKEN_ENV not in os.environ  # only while ray.init() ran
            assert Path(rec.session_dir).is_dir()

            def names() -> set[str]:
                return {Path(f"/proc/{pid}/comm").read_text().strip()
                        for pid in carrying(rec.token, rec.session_dir)}

            # GCS and raylet by the token; the agents (titles set) by their open logs
            want = {"gcs_server", "raylet", "ray::Dashboard", "ray::RuntimeEn"}
            assert _wait_for(lambda: {n[:14] for n in names()} >= want, 30), names()
        finally:
            shutdown_ray()
        assert list(folder.glob("*.json")) == []
    finally:
        proc.kill()
        proc.wait()
