"""The patch stage as one call: load, plan (or check the plan), run pending units on a backend,
record the config. The CLI and the demo call :func:`run_patch`; the unit logic lives in
:mod:`featurepath.pipeline.patch` and the backends in :mod:`featurepath.pipeline.backends`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from featurepath.config import RunConfig, record_config, resolve_config
from featurepath.errors import ConfigError
from featurepath.pipeline.backends import BackendSummary
from featurepath.pipeline.patch import PatchJob, prepare
from featurepath.pipeline.patch_checks import check_backend
from featurepath.pipeline.runtime import Runtime, ensure_runtime
from featurepath.pipeline.store import RunStore


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)``: run only units whose index is I modulo N (job arrays)."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return i, n


@dataclass
class PatchResult:
    """What ``run_patch`` did: the job, the backend's summary, units left, bytes stored."""

    job: PatchJob
    summary: BackendSummary
    left: int
    bytes_stored: int


def run_patch(run_dir: str | Path, cfg: RunConfig | None = None, *,
              runtime: Runtime | None = None, resume: bool = False,
              backend: str = "local", workers: int | None = None, address: str | None = None,
              shard: tuple[int, int] | None = None, progress: bool = True,
              on_plan: Callable[[PatchJob], None] | None = None,
              batch_size_given: int | None = None,
              say: Callable[[str], None] | None = None) -> PatchResult:
    """The patch stage: load the model and SAEs (unless ``runtime`` is given), plan (or check
    the stored plan), run the pending units (of one shard) on ``backend``, record the config.
    ``cfg`` None resolves the run's config (``RUN/patch/config.yaml`` first when a plan exists,
    so a resumed run keeps the settings it was planned with). ``on_plan`` sees the job before
    any unit runs (the CLI prints the plan). On the ray backend the workers load their own
    copies; the local one runs on ``runtime``."""
    if cfg is None:
        from featurepath.rundir import RunDir

        planned = RunDir(run_dir).patch_config
        cfg = resolve_config(run_dir, planned if planned.exists() else None)
    check_backend(backend)  # before a model load, and before anything is planned
    rt = ensure_runtime(runtime, cfg, progress=progress)
    model, tok, saes = rt
    if not RunStore(run_dir).exists():  # a fresh plan: a batch size that fits the device
        from featurepath.pipeline.memory import with_batch_size

        cfg, why = with_batch_size(model, cfg, batch_size_given)
        if why and say is not None:
            say(why)
    job = prepare(run_dir, cfg, model, tok, saes, resume=resume or shard is not None)
    if on_plan is not None:
        on_plan(job)
    store = RunStore(run_dir)
    todo = store.pending()
    if shard is not None:
        todo = [u for u in todo if u.index % shard[1] == shard[0]]
    if backend == "ray":
        from featurepath.pipeline.backends.ray import release_memory, run_ray

        if runtime is None:  # the workers load their own copies: free a GPU they need
            del model, saes, rt
        release_memory()
        summary = run_ray(job, todo, workers=workers, address=address, progress=progress)
    else:
        from featurepath.pipeline.backends.local import run_local

        summary = run_local(job, todo, runtime=rt, progress=progress)
    record_config(run_dir, cfg)
    return PatchResult(job, summary, len(store.pending(verify=False)), store.bytes_stored())


__all__ = ["run_patch", "parse_shard", "PatchResult"]
