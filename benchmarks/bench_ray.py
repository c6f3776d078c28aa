"""Trials per second of the patch stage: local backend vs Ray with 1 and 2 CPU workers.

On the tiny test model a unit takes milliseconds, so this measures the backends' overhead
(scheduling, transfer, the driver's commits) more than compute: it tells whether Ray keeps the
workers busy, not how fast a real model runs. Ray's start-up (~10 s) and each worker's model
load are reported apart from the steady-state rate, which is timed from the first commit on.

    python benchmarks/bench_ray.py [--units 40] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import yaml


def make_inputs(root: Path, units: int, batch_size: int) -> Path:
    """A tiny model and SAEs on disk, and a config planned to ``units`` work units."""
    from featurepath.sae.formats import save_sae
    from featurepath.testing import save_tiny_llama, tiny_llama, tiny_saes

    save_tiny_llama(root / "model")
    model, _ = tiny_llama()
    for layer, sae in tiny_saes(model).items():
        save_sae(sae, root / "saes" / f"L{layer}")
    features = ["L1-3", "L2-5"]
    conds = [{"name": "safe_baseline", "context": "safe"},
             {"name": "safe_with_risky_patch", "context": "safe", "patch": "risky"},
             {"name": "risky_with_safe_patch", "context": "risky", "patch": "safe"}]
    # rows = trials * (1 baseline + features * 2 patched conditions)
    trials = max(1, units * batch_size // (1 + 2 * len(features)))
    cfg = {"model": str(root / "model"), "saes": str(root / "saes"), "device": "cpu",
           "patch": {"features": features, "record": ["L0-1", "L1-3", "L2-5", "L3-7"],
                     "conditions": conds, "trials": trials, "batch_size": batch_size,
                     "sampling": {"max_new_tokens": 6, "temperature": 1.0}}}
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_run(cfg_path: Path, run: Path, backend: str, workers: int | None,
            threads: int | None = None) -> dict:
    from featurepath.config import resolve_config
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.backends.ray import run_ray, start_ray
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.runtime import load_runtime
    from featurepath.pipeline.store import RunStore

    cfg = resolve_config(run, cfg_path)
    model, tok, saes = load_runtime(cfg, progress=False)
    job = prepare(run, cfg, model, tok, saes)
    todo = RunStore(run).pending()
    first: list[float] = []

    def on_unit(_: int) -> None:
        if not first:
            first.append(time.time())

    t0 = time.time()
    if backend == "local":
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            out = run_local(job, todo, runtime=(model, tok, saes), progress=False, on_unit=on_unit)
        finally:
            torch.set_num_threads(before)
        start = 0.0
    else:
        import ray

        s0 = time.time()
        start_ray(num_cpus=2)
        start = time.time() - s0
        t0 = time.time()
        try:
            out = run_ray(job, todo, workers=workers, progress=False, on_unit=on_unit)
        finally:
            ray.shutdown()
    end = time.time()
    per_unit = out.trials / max(out.units, 1)
    steady = (out.trials - per_unit) / max(end - first[0], 1e-9) if first else 0.0
    import torch

    name = f"local ({threads or torch.get_num_threads()} threads)" if backend == "local" \
        else f"ray x{workers}"
    return {"backend": name,
            "units": out.units, "trials": out.trials, "ray_start_s": start,
            "total_s": end - t0, "first_commit_s": first[0] - t0 if first else float("nan"),
            "trials_per_s": out.trials / (end - t0), "steady_trials_per_s": steady}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    import pandas as pd

    root = Path(tempfile.mkdtemp(prefix="fp_bench_ray_"))
    try:
        cfg = make_inputs(root, args.units, args.batch_size)
        rows = [one_run(cfg, root / "local", "local", None),
                one_run(cfg, root / "local1", "local", None, threads=1),
                one_run(cfg, root / "ray1", "ray", 1),
                one_run(cfg, root / "ray2", "ray", 2)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    df = pd.DataFrame(rows)
    print(df.to_string(index=False, float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
