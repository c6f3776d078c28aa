"""The planted check: would the same confirmation have found a feature that really drives the
readout?

Why: "none confirmed" is only informative when the pipeline could have confirmed something. A
planted feature is a tested candidate whose decoder row, in an in-memory copy of its SAE, is
replaced by the readout direction (same norm, same encoder, so the same activations and clamp
sizes); it is confirmed with the same code, prompts and null design, in a scratch run directory
of its own, so the real confirmation's files are never touched.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch

from featurepath.config import RunConfig
from featurepath.pipeline.confirm import ConfirmResult, run_confirm
from featurepath.rundir import RunDir, parse_feature_key


def readout_direction(model, tok, task_name: str) -> torch.Tensor:
    """Unit vector in the residual stream that raises the task's readout (P(exit)) most
    directly: the final norm's gain times (mean unembedding of the exit option − of the other
    options). It ignores the layers above the write and the norm's scale, so it is an
    approximation (good near the top)."""
    from featurepath.tasks import get_task

    task = get_task(task_name)
    ids = task.option_token_ids(tok)
    W = model.get_output_embeddings().weight.detach().float().cpu()
    gain = model.model.norm.weight.detach().float().cpu()
    other = [i for a, toks in ids.items() if a != task.exit_action for i in toks]
    r = gain * (W[ids[task.exit_action]].mean(0) - W[other].mean(0))
    return r / r.norm()


def planted_saes(saes: dict, feature: str, direction: torch.Tensor, weight: float = 1.0) -> dict:
    """``saes`` with one SAE copied and ``feature``'s decoder row set to ``weight`` × the
    direction plus the rest of its own row's direction (cosine ``weight`` with the direction;
    the norm kept). The originals are not modified."""
    layer, fid = parse_feature_key(feature)
    sae = copy.deepcopy(saes[layer])
    with torch.no_grad():
        row = sae.W_dec[fid].float()
        d = direction.to(row.device, torch.float32)
        rest = row - (row @ d) * d
        rest = rest / rest.norm().clamp_min(1e-12)
        new = weight * d + (max(0.0, 1.0 - weight * weight)) ** 0.5 * rest
        sae.W_dec[fid] = (new * row.norm()).to(sae.W_dec.dtype)
    return {**saes, layer: sae}


def planted_feature(cfg: RunConfig, run_dir: str | Path, runtime, context: str,
                    n_prompts: int = 8) -> str:
    """The feature to plant: at the top SAE layer (the readout direction is what the output
    reads there; written far below, the layers in between transform it), the one whose
    smallest activation over the first confirm prompts of ``context`` is largest, so a scale
    clamp has a size on every prompt."""
    import numpy as np

    from featurepath.pipeline.patch_checks import decision_activations_by_context
    from featurepath.pipeline.prompt_sets import prompt_sets
    from featurepath.rundir import feature_key

    model, tok, saes = runtime
    layer = max(saes)
    sets, _ = prompt_sets(cfg, Path(run_dir), tok, "confirm")
    feats = [feature_key(layer, i) for i in range(saes[layer].d_sae)]
    texts = {context: [r.text for r in sets[context][:n_prompts]]}
    acts = decision_activations_by_context(model, tok, saes, feats, texts, {context}, n_prompts)
    return feats[int(np.argmax(np.nanmin(acts[context], axis=0)))]


def planted_check(run_dir: str | Path, cfg: RunConfig, runtime, feature: str,
                  weight: float = 1.0, progress: bool = False) -> ConfirmResult:
    """Confirm ``feature`` with its decoder row along the readout direction, in
    ``RUN/planted_check/`` (two-sided: no earlier stage predicts its sign there)."""
    model, tok, saes = runtime
    planted = planted_saes(saes, feature, readout_direction(model, tok, cfg.task), weight)
    out = Path(run_dir) / "planted_check"
    src = RunDir(run_dir).decisions
    if cfg.patch.prompt_set == "play" and src.exists():  # the same confirm half of play's games
        RunDir(out).play.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, RunDir(out).decisions)
    return run_confirm(out, cfg, runtime=(model, tok, planted), features=[feature],
                       progress=progress)


__all__ = ["readout_direction", "planted_saes", "planted_feature", "planted_check"]
