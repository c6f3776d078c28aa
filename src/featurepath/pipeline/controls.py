"""The directions of the control arms: random-direction nulls and the behavioural direction.

Why controls: the original study's authors found their SAE feature's dose-response inside the
band of norm-matched random directions (z = +0.75) while a direction built from the model's own
betting moved behaviour (z = +4.45), and withdrew the feature-patching claims. A feature counts
only when it beats the band of directions of the same size applied the same way; the behavioural
direction shows the setup can move behaviour at all.

- **Null directions** of a layer: unit vectors drawn from a seed that depends only on the run
  seed, the layer and the index k, so every feature of a layer shares the same band (it is
  reusable and the same in every resumed or sharded run). ``span: decoder`` draws a random
  Gaussian combination of the SAE's decoder rows instead ("another direction of the same kind").
- **Behavioural direction** of a layer: the difference between the mean residual at the decision
  token of decisions that continued betting and of decisions that stopped, over ``play``'s
  decision points, normalised to unit length. Its readout is the projection ``h · u``, so a scale
  clamp moves it exactly as it moves an SAE feature.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from featurepath.errors import DataError
from featurepath.pipeline.seeds import derive_seed
from featurepath.rundir import RunDir
from featurepath.tasks.base import Task


def null_direction(run_seed: int, layer: int, k: int, d_model: int, span: str = "random",
                   W_dec: torch.Tensor | None = None) -> torch.Tensor:
    """Null direction ``k`` of ``layer`` as a float32 unit vector ``[d_model]`` (CPU)."""
    g = torch.Generator().manual_seed(derive_seed(run_seed, "null-direction", layer, k))
    if span == "decoder":
        if W_dec is None:
            raise ValueError("span 'decoder' needs the SAE's decoder rows")
        w = torch.randn(W_dec.shape[0], generator=g)
        u = w @ W_dec.float().cpu()
    else:
        u = torch.randn(d_model, generator=g)
    return u / u.norm().clamp_min(1e-12)


def behavioural_directions(model: Any, tok: Any, run_dir: str | Path, layers: list[int],
                           batch_size: int = 16, max_points: int = 512,
                           task: Task | None = None,
                           work_dir: str | Path | None = None) -> dict[int, torch.Tensor]:
    """``{layer: unit vector}``: mean residual at the decision token of continuing minus
    exiting decisions, from ``RUN/play/decisions.parquet`` (first try of each decision, at most
    ``max_points`` of each kind, in a fixed order). Continuing = any of the task's actions but
    its ``exit_action`` (default task: the config's default). Scratch files go under
    ``work_dir`` (default ``run_dir``), so a transfer never writes into the run it reads."""
    import pandas as pd

    from featurepath.tasks import DEFAULT_TASK, get_task

    task = task if task is not None else get_task(DEFAULT_TASK)
    go = [a for a in task.actions if a != task.exit_action]

    path = RunDir(run_dir).decisions
    if not path.exists():
        raise DataError(f"patch.behavioural_direction needs {path}; run `featurepath play` "
                        "first")
    df = pd.read_parquet(path)
    if "retries" in df:
        df = df[df["retries"] == 0]
    groups = {k: df[df["action"].isin(acts)].sort_values(["game_id", "round"]).head(max_points)
              for k, acts in (("continue", go), ("exit", [task.exit_action]))}
    if any(len(g) < 2 for g in groups.values()):
        raise DataError(f"patch.behavioural_direction needs at least 2 decisions of "
                        f"{'/'.join(go)} and 2 of {task.exit_action} in {path} (have "
                        f"{len(groups['continue'])} and {len(groups['exit'])}); play more games")
    from featurepath.pipeline.discover import capture_residuals

    means: dict[str, torch.Tensor] = {}
    scratch = Path(work_dir) if work_dir is not None else RunDir(run_dir).root
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".directions-") as tmp:
        for action, g in groups.items():
            res = capture_residuals(model, tok, layers, g["prompt"].astype(str).tolist(),
                                    Path(tmp) / f"{action}.bin", batch_size, progress=False)
            means[action] = res.double().mean(0)  # [len(layers), d_model]
            del res
    out = {}
    for i, lay in enumerate(layers):
        d = (means["continue"][i] - means["exit"][i]).float()
        if float(d.norm()) == 0.0:
            raise DataError(f"the behavioural direction of layer {lay} is zero (continuing and "
                            "stopping decisions have the same mean residual)")
        out[lay] = d / d.norm()
    return out


def save_directions(path: Path, directions: dict[int, torch.Tensor]) -> None:
    """Write ``{layer: vector}`` as safetensors (keys ``L<layer>``)."""
    from safetensors.torch import save_file

    save_file({f"L{lay}": v.contiguous() for lay, v in directions.items()}, str(path))


def load_directions(path: Path) -> dict[int, torch.Tensor]:
    """Read what :func:`save_directions` wrote."""
    from safetensors.torch import load_file

    return {int(k[1:]): v for k, v in load_file(str(path)).items()}
