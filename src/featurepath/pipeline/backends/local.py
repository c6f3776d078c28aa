"""The local backend: pending units run one after another in this process."""

from __future__ import annotations

import time
from collections.abc import Callable

from featurepath.pipeline.backends import BackendSummary
from featurepath.pipeline.patch import PatchJob, run_unit
from featurepath.pipeline.store import RunStore, Unit


def run_local(job: PatchJob, units: list[Unit] | None = None, *, runtime=None,
              progress: bool = True, on_unit: Callable[[int], None] | None = None
              ) -> BackendSummary:
    """Run ``units`` (default: every pending unit) in this process, committing each as it
    finishes. ``runtime`` is the loaded ``(model, tok, saes)``; without it they are loaded
    from the job's config."""
    from tqdm.auto import tqdm

    if runtime is None:
        from featurepath.pipeline.runtime import load_runtime

        runtime = load_runtime(job.cfg, progress)
    model, tok, saes = runtime
    store = RunStore(job.run_dir)
    todo = units if units is not None else store.pending()
    t0 = time.time()
    n_trials = 0
    bar = tqdm(total=len(todo), desc="patch units", unit="unit", disable=not progress,
               dynamic_ncols=True)
    for unit in todo:
        df, arrays = run_unit(job, unit, model, tok, saes)
        store.commit(unit, df, arrays)
        n_trials += len(df)
        bar.set_postfix(trials_per_s=f"{n_trials / max(time.time() - t0, 1e-9):.2f}")
        bar.update(1)
        if on_unit is not None:
            on_unit(unit.index)
    bar.close()
    store.consolidate()
    return BackendSummary(units=len(todo), trials=n_trials, seconds=time.time() - t0)


__all__ = ["run_local"]
