"""The discover stage: SAE activations at the decision token of every decision point that
``play`` recorded, then group A vs group B tests per feature (``analysis.discover``; the groups
are the task's ``split``).

Streaming, so memory does not grow with the number of decision points (issue 14: at Llama
Scope's 32 × 32,768 features the old ``[points, features]`` float32 matrix took 4 GB per 1,000
points, with every SAE on the device at once):

1. one forward pass per batch of prompts, stopped after the last SAE layer, keeps only the
   residual at the decision token of every SAE layer, in a memory-mapped file in the run
   directory (``points × layers × d_model`` — 0.5 MB per point for LLaMA-3.1-8B in bf16, on
   disk, deleted afterwards);
2. then layer by layer: that layer's SAE alone goes to the device (in float32), encodes the
   stored residuals chunk by chunk, and each chunk is folded into per-feature running moments
   (count, mean, M2, range) of the group A and the group B observations.

Peak memory is one layer's SAE plus one chunk of activations, whatever the number of points.
Games in neither group (e.g. a round limit, or an invalid answer) are left out.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from featurepath.analysis.discover import discover_from_moments
from featurepath.config import RunConfig, record_config, resolve_config
from featurepath.engine.generate import replay
from featurepath.engine.hooks import RecordSpec
from featurepath.errors import DataError
from featurepath.pipeline.runtime import Runtime, ensure_runtime
from featurepath.rundir import RunDir, atomic_write, parquet_bytes
from featurepath.sae.model import SAE
from featurepath.tasks import get_task
from featurepath.tasks.base import Task


def decision_points(run_dir: Path, confirm_share: float = 0.0, task: Task | None = None
                    ) -> pd.DataFrame:
    """Decision points of games in either group of the task's split (default task: the
    config's default) in the screen half of the games, with a ``group`` column (``"a"`` /
    ``"b"``): the confirm half is held out for ``featurepath confirm``."""
    from featurepath.tasks import DEFAULT_TASK, get_task

    split = (task if task is not None else get_task(DEFAULT_TASK)).split
    from featurepath.pipeline.prompt_sets import games_of_half

    path = RunDir(run_dir).decisions
    if not path.exists():
        raise DataError(f"{path} is missing; run `featurepath play {run_dir}` first")
    half = games_of_half(pd.read_parquet(path), "screen", confirm_share)
    group = half["end_reason"].map(split.group)
    df = half[group.notna()].assign(group=group[group.notna()])
    if df.empty or df["group"].nunique() < 2:
        counts = half.drop_duplicates("game_id")["end_reason"].value_counts().to_dict()
        raise DataError(f"discover needs games that ended '{split.label_a}' and games that "
                        f"ended '{split.label_b}' in the screen half of the games "
                        f"(analysis.confirm_share = {confirm_share:g}); end reasons there: "
                        f"{counts} — play more games")
    return df.reset_index(drop=True)


def decision_activations(model, tok, saes: dict[int, SAE], prompts: list[str],
                         batch_size: int = 32, progress: bool = True
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n_prompts, n_features] activations of every feature of every SAE layer at the last
    prompt token, plus the layer and id of each column. Holds the whole matrix: for small SAE
    sets and tests; the stage itself streams (``decision_moments``)."""
    from tqdm.auto import tqdm

    feats = [(layer, f) for layer, sae in sorted(saes.items()) for f in range(sae.d_sae)]
    spec = RecordSpec(feats)
    out = np.zeros((len(prompts), len(feats)), dtype=np.float32)
    for start in tqdm(range(0, len(prompts), batch_size), desc="discover", unit="batch",
                      disable=not progress, dynamic_ncols=True):
        chunk = prompts[start:start + batch_size]
        res = replay(model, tok, chunk, saes=saes, record=spec)
        out[start:start + len(chunk)] = res.decision.to(torch.float32).numpy()
    layers = np.array([a for a, _ in feats], dtype=np.int64)
    ids = np.array([b for _, b in feats], dtype=np.int64)
    return out, layers, ids


class _Enough(Exception):
    """Raised by the last SAE layer's hook: nothing above it is needed."""


@torch.no_grad()
def capture_residuals(model, tok, layers: list[int], prompts: list[str], path: Path,
                      batch_size: int = 32, progress: bool = True) -> torch.Tensor:
    """The residual stream after each of ``layers`` at the last token of every prompt, as a
    ``[n_prompts, len(layers), d_model]`` tensor backed by the file ``path`` (memory-mapped:
    pages go to disk, not to the process's memory). The forward pass stops after the last of
    ``layers`` (no later blocks, no LM head)."""
    from tqdm.auto import tqdm

    from featurepath.models import decoder_blocks

    blocks = decoder_blocks(model)
    p = next(model.parameters())
    d = int(model.config.hidden_size)
    n, L = len(prompts), len(layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = torch.from_file(str(path), shared=True, size=max(1, n * L * d), dtype=p.dtype)
    buf = buf[:n * L * d].view(n, L, d)
    got: dict[int, torch.Tensor] = {}
    top = max(layers)

    def make_hook(layer: int):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            got[layer] = h[:, -1]
            if layer == top:
                raise _Enough

        return hook

    handles = [blocks[layer].register_forward_hook(make_hook(layer)) for layer in layers]
    tok.padding_side = "left"
    try:
        for start in tqdm(range(0, n, batch_size), desc="discover: residuals", unit="batch",
                          disable=not progress, dynamic_ncols=True):
            chunk = prompts[start:start + batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            ids = enc["input_ids"].to(p.device)
            mask = enc["attention_mask"].to(p.device)
            pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
            got.clear()
            try:
                model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
            except _Enough:
                pass
            buf[start:start + len(chunk)] = torch.stack([got[lay] for lay in layers], 1).cpu()
    finally:
        for h in handles:
            h.remove()
    return buf


def _on_device(sae: SAE, device) -> SAE:
    """A float32 copy of ``sae`` on ``device`` (the caller's SAE is not moved)."""
    def mv(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=device, dtype=torch.float32)

    return SAE(mv(sae.W_enc), mv(sae.b_enc), mv(sae.W_dec), mv(sae.b_dec), sae.activation,
               mv(sae.threshold), sae.k, sae.apply_b_dec_to_input, sae.layer)


@dataclass
class DecisionMoments:
    """Per feature of every SAE layer (in layer order): moments of the group A and the group B
    observations, the number of each, and each column's layer and feature id."""

    a: tuple[np.ndarray, ...]
    b: tuple[np.ndarray, ...]
    n_a: int
    n_b: int
    layers: np.ndarray
    feature_ids: np.ndarray


def decision_moments(model, tok, saes: dict[int, SAE], prompts: list[str],
                     in_a: np.ndarray, work_dir: Path, batch_size: int = 32,
                     chunk: int = 256, observations: np.ndarray | None = None,
                     progress: bool = True) -> DecisionMoments:
    """Stream the SAE activations at the decision tokens into per-feature moments of the
    group A and the group B, one layer's SAE on the device at a time.

    ``observations[i]`` (optional) names the unit of analysis point ``i`` belongs to (e.g. its
    game): the points of one observation are averaged first, and the test counts observations,
    not points. Without it every point is its own observation.
    """
    from tqdm.auto import tqdm

    from featurepath.analysis.moments import ColumnMoments

    n = len(prompts)
    y = np.asarray(in_a, dtype=bool)
    obs = np.arange(n) if observations is None else np.asarray(observations)
    order = np.argsort(obs, kind="stable")
    _, obs_idx = np.unique(obs[order], return_inverse=True)  # dense ids, ascending in order
    n_obs = int(obs_idx.max()) + 1 if n else 0
    n_b = np.bincount(obs_idx, weights=y[order], minlength=n_obs)
    if ((n_b > 0) & (n_b < np.bincount(obs_idx, minlength=n_obs))).any():
        raise DataError("an observation (game) holds decision points of both groups")
    bounds = _chunks(obs_idx, chunk)
    layers = sorted(saes)
    device = next(model.parameters()).device
    ordered = [prompts[i] for i in order]
    y_obs = np.zeros(n_obs, dtype=bool)
    y_obs[obs_idx] = y[order]
    res = capture_residuals(model, tok, layers, ordered, work_dir / "residuals.bin",
                            batch_size, progress)
    parts_b, parts_s = [], []
    for li, layer in enumerate(tqdm(layers, desc="discover: SAE layers", unit="layer",
                                    disable=not progress, dynamic_ncols=True)):
        sae = _on_device(saes[layer], device)
        mb = ColumnMoments.empty(sae.d_sae, device)
        ms = ColumnMoments.empty(sae.d_sae, device)
        for a, b in bounds:
            f = sae.encode(res[a:b, li].to(device))
            f, lab = _per_observation(f, obs_idx[a:b], y_obs, device)
            mb.update(f[lab])
            ms.update(f[~lab])
        parts_b.append(mb.numpy())
        parts_s.append(ms.numpy())
        del sae
    cat = [np.concatenate(x) for x in zip(*parts_b, strict=True)]
    cat_s = [np.concatenate(x) for x in zip(*parts_s, strict=True)]
    lay = np.concatenate([np.full(saes[la].d_sae, la, dtype=np.int64) for la in layers])
    ids = np.concatenate([np.arange(saes[la].d_sae, dtype=np.int64) for la in layers])
    return DecisionMoments(tuple(cat), tuple(cat_s), int(y_obs.sum()), int((~y_obs).sum()),
                           lay, ids)


def _chunks(obs_idx: np.ndarray, size: int) -> list[tuple[int, int]]:
    """``[a, b)`` ranges of about ``size`` points that never split an observation."""
    out, a, n = [], 0, len(obs_idx)
    while a < n:
        b = min(n, a + size)
        while b < n and obs_idx[b] == obs_idx[b - 1]:
            b += 1
        out.append((a, b))
        a = b
    return out


def _per_observation(f: torch.Tensor, obs: np.ndarray, y_obs: np.ndarray, device
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean activation per observation in the chunk, and whether each is in group A."""
    uniq, inv = np.unique(obs, return_inverse=True)
    lab = torch.as_tensor(y_obs[uniq], device=device)
    if len(uniq) == len(obs):
        return f, lab
    idx = torch.as_tensor(inv, device=device)
    sums = torch.zeros(len(uniq), f.shape[1], dtype=f.dtype, device=device).index_add_(0, idx, f)
    cnt = torch.bincount(idx, minlength=len(uniq)).to(f.dtype).unsqueeze(1)
    return sums / cnt, lab


def run_discover(run_dir: str | Path, cfg: RunConfig | None = None, *,
                 runtime: Runtime | None = None, progress: bool = True) -> pd.DataFrame:
    """Candidate features from play's decision points: one mean SAE activation per game,
    the task's split group A vs group B games, Welch t + Cohen's d, BH-FDR over every feature; writes
    ``RUN/discover.parquet``. ``cfg`` None resolves the run's config; ``runtime`` is loaded
    from it when not given (after play's decisions were read, so a missing play fails first)."""
    root = Path(run_dir)
    cfg = resolve_config(root) if cfg is None else cfg
    t0 = time.time()
    points = decision_points(root, cfg.analysis.confirm_share, get_task(cfg.task))
    model, tok, saes = ensure_runtime(runtime, cfg, progress=progress)
    from featurepath.sae.check import warn_if_l0_off

    warn_if_l0_off(model, tok, saes, points["prompt"].tolist()[:cfg.discover.batch_size])
    in_a = (points["group"] == "a").to_numpy()
    # the unit of analysis is the game: its decision points are averaged first
    with tempfile.TemporaryDirectory(dir=root, prefix=".discover-") as tmp:
        mom = decision_moments(model, tok, saes, points["prompt"].tolist(), in_a,
                               Path(tmp), cfg.discover.batch_size,
                               observations=points["game_id"].to_numpy(), progress=progress)
    table = discover_from_moments(mom.a, mom.b, mom.n_a, mom.n_b,
                                  mom.layers, mom.feature_ids, cfg.discover.alpha,
                                  cfg.discover.min_d)
    rd = RunDir(root)
    atomic_write(rd.discover, parquet_bytes(table))
    atomic_write(rd.discover_top, table.head(200).to_csv(index=False))
    record_config(root, cfg)
    table.attrs["seconds"] = time.time() - t0
    table.attrs["n_points"] = len(points)
    table.attrs["n_a"] = int(in_a.sum())
    return table
