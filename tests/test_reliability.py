"""What a hostile user meets, on the tiny model: command-line typos, a kill while planning, a
read-only or full disk, and bad input of every kind. Each must end in one line (click's usage
message, or ``error: ...``), a non-zero exit, no traceback, nothing half-written, and quickly
(see docs/reliability.md).

The read-only file system is real where the sandbox allows it: a read-only bind mount in a
private mount namespace (``unshare -m``; root is not stopped by file modes, so chmod would
prove nothing). Elsewhere those tests are skipped, and the in-process tests below still raise
``EROFS``/``ENOSPC`` at the OS-call level.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from featurepath.cli import main
from featurepath.pipeline.store import RunStore
from featurepath.testing import assert_same_store

RECORD = ["L0-1", "L1-3", "L2-5", "L3-7"]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> Path:
    from featurepath.testing import write_tiny_inputs

    root = tmp_path_factory.mktemp("tiny_rel")
    write_tiny_inputs(root)
    cfg = {"model": str(root / "model"), "saes": str(root / "saes"),
           "patch": {"record": RECORD, "features": ["L1-3", "L2-5"], "trials": 2,
                     "batch_size": 4, "sampling": {"max_new_tokens": 4, "temperature": 1.0}}}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _patch_args(tiny_dirs: Path, run: Path, *extra: str) -> list[str]:
    return ["patch", str(run), "--config", str(tiny_dirs / "cfg.yaml"), "--no-progress", *extra]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "featurepath", *args]


@pytest.fixture(scope="module")
def reference(tiny_dirs, tmp_path_factory) -> Path:
    """An uninterrupted patch run: what every interrupted one must end up equal to."""
    ref = tmp_path_factory.mktemp("rel_ref") / "run"
    assert main(_patch_args(tiny_dirs, ref)) == 0
    return ref


def _one_error_line(err: str) -> str:
    """The single ``error:`` line of ``err``, progress bars and library notices aside."""
    lines = [ln for ln in err.strip().replace("\r", "\n").splitlines() if ln.strip()
             and "it/s]" not in ln and not ln.startswith(("Loading weights", "[transformers]"))]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ------------------------------------------------------------------ 0. command-line typos
USAGE_ERRORS = {
    "bare": ([], "Usage:"),
    "unknown command": (["nosuch"], "No such command 'nosuch'"),
    "trials not an integer": (["patch", "RUN", "--trials", "abc"], "'--trials'"),
    "unknown option": (["patch", "RUN", "--colour", "red"], "No such option: --colour"),
    "missing argument": (["patch"], "Missing argument"),
    "bad float": (["words", "RUN", "--alpha", "x"], "'--alpha'"),
    "bad enum": (["play", "RUN", "--protocol", "fax"], "'--protocol'"),
    "unknown backend": (["patch", "RUN", "--backend", "banana"], "'--backend'"),
}


@pytest.mark.parametrize("case", USAGE_ERRORS, ids=list(USAGE_ERRORS))
def test_usage_errors_print_usage_not_a_traceback(case, tmp_path):
    """A real subprocess with the installed typer (which raises its own click copies)."""
    args, expected = USAGE_ERRORS[case]
    args = [str(tmp_path / "run") if a == "RUN" else a for a in args]
    r = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert expected in r.stderr + r.stdout
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ 1. kill while planning
@pytest.mark.parametrize("point", ["patch-planning", "patch-store-created"])
def test_kill_while_planning_then_resume_equals_uninterrupted(point, tiny_dirs, reference,
                                                              tmp_path):
    """SIGKILL a real planner holding the planning lock (before anything is written, or after
    activations.zarr exists but before plan.json): --resume takes the lock over at once and
    ends with the uninterrupted run's store."""
    run, marker = tmp_path / "run", tmp_path / "paused"
    env = {**os.environ, "FEATUREPATH_PAUSE_AT": point, "FEATUREPATH_PAUSE_AT_FILE": str(marker)}
    proc = subprocess.Popen(_cli(*_patch_args(tiny_dirs, run)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "no pause"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (run / "patch").exists() and not (run / "patch" / "plan.json").exists()
    assert (run / "activations.zarr").exists() == (point == "patch-store-created")
    t0 = time.monotonic()
    assert main(_patch_args(tiny_dirs, run, "--resume")) == 0
    assert time.monotonic() - t0 < 60  # the old lock file made this wait 10 minutes
    assert_same_store(reference, run)


# ------------------------------------------------------------------ 2. read-only / full disk
def test_full_disk_while_planning_is_one_line_and_the_rerun_plans(tiny_dirs, reference, tmp_path,
                                                                  monkeypatch, capsys):
    """ENOSPC from the OS while the plan is written: one line, no plan left, rerun works."""
    import featurepath.pipeline.store as store_mod

    real = store_mod.atomic_write

    def full(path, data):
        if path.name == "plan.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write", full)
    run = tmp_path / "run"
    assert main(_patch_args(tiny_dirs, run)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "disk full" in line and "plan.json" in line
    assert not (run / "patch" / "plan.json").exists()
    monkeypatch.setattr(store_mod, "atomic_write", real)
    assert main(_patch_args(tiny_dirs, run)) == 0
    assert_same_store(reference, run)


def test_read_only_errors_raised_by_the_os_are_one_line(tiny_dirs, tmp_path, monkeypatch,
                                                        capsys):
    """EROFS from deep inside any library (here: pandas writing causal's output) is reported
    by the CLI as one line, like a full disk."""
    ref = tmp_path / "run"
    assert main(_patch_args(tiny_dirs, ref)) == 0
    capsys.readouterr()

    def erofs(self, path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", erofs)
    assert main(["causal", str(ref)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: read-only file system: cannot write ")


def _read_only_script(root: Path, body: str) -> list[str]:
    """``unshare`` arguments that bind-mount ``root`` onto itself in a private mount namespace
    and run ``body`` there (which may remount it read-only); skips where that is refused."""
    exe = shutil.which("unshare")
    probe = root / "probe"
    probe.mkdir()
    test = f"mount --bind {probe} {probe} && mount -o remount,ro,bind {probe} {probe} && " \
           f"! touch {probe}/x 2>/dev/null"
    for flags in (["-m"], ["-rm"]):
        if exe and subprocess.run([exe, *flags, "sh", "-c", test],
                                  capture_output=True).returncode == 0:
            probe.rmdir()
            return [exe, *flags, "sh", "-c", f"mount --bind {root} {root} && {body}"]
    pytest.skip("no private mount namespace here (unshare -m / -rm refused)")


@pytest.mark.slow
def test_read_only_mount_mid_run_and_as_output_directory(tiny_dirs, reference, tmp_path):
    """A real read-only bind mount: mid-run in patch (remounted read-only once two units are
    committed), and as the output directory of patch, causal, pathways, words, report and
    play. Each gives one line and status 2; the finished units survive and --resume, once the
    disk is writable again, ends with the uninterrupted run's store."""
    root = tmp_path / "mnt"
    root.mkdir()
    shutil.copytree(reference, root / "done")
    cfg = yaml.safe_load((tiny_dirs / "cfg.yaml").read_text())
    cfg["patch"]["batch_size"] = 2  # more units, so the remount lands mid-run
    (tiny_dirs / "cfg2.yaml").write_text(yaml.safe_dump(cfg))
    fp = " ".join(_cli())
    mid = root / "mid"
    cmds = {
        "patch": f"patch {root}/new --config {tiny_dirs}/cfg.yaml --no-progress",
        "causal": f"causal {root}/done",
        "pathways": f"pathways {root}/done",
        "words": f"words {root}/done",
        "report": f"report {root}/done",
        "play": f"play {root}/play --model {tiny_dirs}/model --games 1 --max-rounds 2 -q",
    }
    body = (f"({fp} patch {mid} --config {tiny_dirs}/cfg2.yaml --no-progress "
            f"> {tmp_path}/mid.out 2> {tmp_path}/mid.err & p=$!; "
            f"while [ $(ls {mid}/patch/commits 2>/dev/null | wc -l) -lt 2 ]; do sleep 0.05; done; "
            f"until mount -o remount,ro,bind {root} {root} 2>/dev/null; do sleep 0.02; done; "
            f"wait $p; echo $? > {tmp_path}/mid.rc); ")
    body += "".join(f"{fp} {c} > {tmp_path}/{k}.out 2> {tmp_path}/{k}.err; "
                    f"echo $? > {tmp_path}/{k}.rc; " for k, c in cmds.items())
    # the analyses' warnings about 2-trial groups are beside the point here
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run(_read_only_script(root, body), check=True, timeout=600, env=env)
    for k in ["mid", *cmds]:
        err = (tmp_path / f"{k}.err").read_text()
        assert (tmp_path / f"{k}.rc").read_text().strip() == "2", (k, err)
        line = _one_error_line(err)
        assert "read-only file system" in line, (k, line)
    done = len(list((mid / "patch" / "commits").glob("u*.json")))
    assert 2 <= done < len(RunStore(mid).plan().units)
    assert not (root / "new" / "patch" / "plan.json").exists()
    # writable again: the finished units are kept, and the resumed store equals the reference
    assert main(["patch", str(mid), "--config", str(tiny_dirs / "cfg2.yaml"), "--no-progress",
                 "--resume"]) == 0
    ref2 = tmp_path / "ref2"
    assert main(["patch", str(ref2), "--config", str(tiny_dirs / "cfg2.yaml"),
                 "--no-progress"]) == 0
    assert_same_store(ref2, mid)


# ------------------------------------------------------------------ 4. bad input, in process
def _cfg_file(tmp: Path, tiny_dirs: Path, name: str, data: dict | bytes) -> str:
    path = tmp / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        base = yaml.safe_load((tiny_dirs / "cfg.yaml").read_text())
        for key, value in data.items():
            node = base
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        path.write_text(yaml.safe_dump(base))
    return str(path)


def _bad_model(tmp: Path, tiny_dirs: Path, how: str) -> str:
    d = tmp / f"model_{how}"
    shutil.copytree(tiny_dirs / "model", d)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000] if how == "truncated" else os.urandom(5000))
    return str(d)


def _jsonl(tmp: Path, **override) -> str:
    row = {"layer": 1, "feature_id": 2, "trial_index": 0, "prompt_type": "safe", "scale": 1.0,
           "response": "Stop"}
    path = tmp / "log.jsonl"
    path.write_text(json.dumps({**row, **override}) + "\n")
    return str(path)


def _binary_file(path: Path) -> str:
    path.write_bytes(b"\xff\xfe\x00\xda" * 100)
    return str(path)


def _patch_with_config(extra: dict | bytes, *more: str):
    def build(tmp: Path, tiny_dirs: Path) -> list[str]:
        return ["patch", str(tmp / "run"), "--config", _cfg_file(tmp, tiny_dirs, "c.yaml", extra),
                "--no-progress", *more]
    return build


def _patch_with(*more: str, model=None):
    def build(tmp: Path, tiny_dirs: Path) -> list[str]:
        args = _patch_args(tiny_dirs, tmp / "run", *more)
        if model is not None:
            args += ["--model", model(tmp, tiny_dirs)]
        return args
    return build


BAD_INPUTS = {
    # name: (argv builder, words the one error line must contain)
    "truncated safetensors": (_patch_with(model=lambda t, d: _bad_model(t, d, "truncated")),
                              "corrupt or truncated"),
    "garbage safetensors": (_patch_with(model=lambda t, d: _bad_model(t, d, "garbage")),
                            "corrupt or truncated"),
    "binary config": (_patch_with_config(b"\xda\x00\xff\xfe" * 50), "not a text file"),
    "device banana": (_patch_with_config({"device": "banana"}), "unknown device 'banana'"),
    "device cuda without CUDA": (_patch_with_config({"device": "cuda"}), "no usable CUDA"),
    "trials not an integer": (_patch_with_config({"patch.trials": "abc"}), "patch.trials"),
    "trials fractional": (_patch_with_config({"patch.trials": 1.5}), "patch.trials"),
    "record beyond the SAE width": (_patch_with_config({"patch.record": ["L1-99999"]}),
                                    "L1-99999: id beyond"),
    "duplicate condition names": (_patch_with_config({"patch.conditions": [
        {"name": "a", "context": "safe"}, {"name": "a", "context": "risky"},
        {"name": "b", "context": "safe", "patch": "risky"}]}), "'a' is used twice"),
    "no baseline": (_patch_with_config({"patch.conditions": [
        {"name": "b", "context": "safe", "patch": "risky"}]}), "no baseline"),
    "negative seed": (_patch_with_config({"seed": -1}), "seed"),
    "seed beyond 2^64": (_patch_with_config({"seed": 2**64 + 1}), "seed"),
    "jsonl integer beyond int64": (lambda t, d: ["words", "--jsonl", _jsonl(t, feature_id=2**70),
                                                 "--out", str(t / "run")], "no usable trial"),
    "jsonl absurd scale": (lambda t, d: ["words", "--jsonl", _jsonl(t, scale=1e300),
                                         "--out", str(t / "run")], "no usable trial"),
    "sae train on a binary corpus": (
        lambda t, d: ["sae", "train", "--model", str(d / "model"), "--layers", "1", "--corpus",
                      _binary_file(t / "c.txt"), "--out", str(t / "run")], "not UTF-8 text"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gives_one_error_line_and_writes_nothing(case, tiny_dirs, tmp_path, capsys):
    if case == "device cuda without CUDA":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    build, words = BAD_INPUTS[case]
    args = build(tmp_path, tiny_dirs)
    capsys.readouterr()
    t0 = time.monotonic()
    assert main(args) == 2
    assert time.monotonic() - t0 < 30
    line = _one_error_line(capsys.readouterr().err)
    assert words in line, line
    run = tmp_path / "run"
    assert not (run / "patch" / "plan.json").exists() and not (run / "config.yaml").exists()


def test_errors_found_before_planning_leave_nothing_that_blocks_the_corrected_rerun(
        tiny_dirs, reference, tmp_path, capsys):
    """Each of these used to fail after plan.json was written, so the corrected command in
    the same directory was refused ("already holds a patch run")."""
    run = tmp_path / "run"
    bad = _cfg_file(tmp_path, tiny_dirs, "bad.yaml", {"patch.record": ["L1-99999"]})
    assert main(["patch", str(run), "--config", bad, "--no-progress"]) == 2
    assert main(_patch_args(tiny_dirs, run, "--backend", "nope")) == 2
    capsys.readouterr()
    assert main(_patch_args(tiny_dirs, run)) == 0
    assert_same_store(reference, run)


def test_a_huge_batch_size_is_cut_to_the_run(tiny_dirs, reference, tmp_path):
    """--batch-size 10^11 used to allocate a 186 GiB Zarr chunk; a batch larger than the run is
    the whole run in one unit."""
    run = tmp_path / "run"
    assert main(_patch_args(tiny_dirs, run, "--batch-size", str(10**11))) == 0
    plan = RunStore(run).plan()
    n = len(RunStore(reference).trials())
    assert len(plan.units) == 1 and plan.batch_size == n
    assert RunStore(run).activations()[0].shape[0] == n


# ------------------------------------------------------------------ 4. memory, in a subprocess
_MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[2:]).returncode; "
            "open(sys.argv[1], 'w').write(str(resource.getrusage("
            "resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")


def _run_measured(args: list[str], timeout: float = 120) -> tuple[int, str, int]:
    """``(exit status, stderr, peak RSS in bytes)`` of a real subprocess.

    Measured through a small intermediate Python that runs ``args`` and reads its children's
    peak RSS: Linux keeps a process's ``ru_maxrss`` across ``exec``, and a child started
    straight from this test process (vfork) would inherit the pytest process's own peak —
    1.5 GB late in a full run — whatever the command did."""
    import signal
    import tempfile

    with tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as d:
        rss = os.path.join(d, "maxrss")
        proc = subprocess.Popen([sys.executable, "-c", _MEASURE, rss, *args],
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"still running after {timeout} s: {args[3:]}") from None
        err.seek(0)
        with open(rss) as f:
            return proc.returncode, err.read().decode(), int(f.read()) * 1024


@pytest.mark.parametrize("what", ["patch trials 1e9", "play games 1e9"])
def test_absurd_sizes_are_refused_before_memory_grows(what, tiny_dirs, tmp_path):
    if what.startswith("patch"):
        args = _cli(*_patch_args(tiny_dirs, tmp_path / "run", "--trials", str(10**9)))
    else:
        args = _cli("play", str(tmp_path / "run"), "--model", str(tiny_dirs / "model"),
                    "--games", str(10**9), "-q")
    rc, err, peak = _run_measured(args)
    assert rc == 2, err
    assert "lower" in _one_error_line(err)
    assert peak < 1.5e9, f"peak RSS {peak / 1e9:.2f} GB"  # torch + the tiny model: ~0.6 GB
    assert not (tmp_path / "run" / "patch" / "plan.json").exists()


# ------------------------------------------------------------------ 4. unknown hub id
class _Hub:
    """A local stand-in for the hub: answers 404 to everything, or never answers at all."""

    def __init__(self, mode: str):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.mode, self.conns = mode, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.mode == "404":
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("mode,words", [("404", "HTTP 404"), ("silent", "did not answer")])
def test_unknown_hub_id_fails_fast_and_says_what_was_tried(mode, words, tiny_dirs, tmp_path,
                                                           monkeypatch, capsys):
    """It took 52 s of retries to fail; one look-up with a short timeout now decides."""
    hub = _Hub(mode)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("FEATUREPATH_HUB_TIMEOUT", "2")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FEATUREPATH_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    try:
        t0 = time.monotonic()
        assert main(_patch_args(tiny_dirs, tmp_path / "run", "--model",
                                "no-such-org/no-such-model")) == 2
        assert time.monotonic() - t0 < 15
    finally:
        hub.close()
    line = _one_error_line(capsys.readouterr().err)
    assert "not in the local cache" in line and hub.url in line and words in line
