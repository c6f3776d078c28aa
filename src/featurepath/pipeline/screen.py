"""The screen stage: the first-order effect on P(exit) of clamping every feature of every SAE
layer, under every patched condition, from one forward and one backward pass per prompt batch
(attribution patching; Nanda 2023, Kramár et al. 2024).

Why: discover picks candidates by correlation, and what decides whether a clamp can move the
readout is mostly visible before any sampling — the clamp's size at the decision token and how
the readout's gradient lines up with the feature's decoder row. A delta patch of feature f at
layer L adds ``(v − a_f(x)) · W_dec[f]`` to the residual at the decision token, so to first
order it moves the readout by ``(v − a_f(x)) · (W_dec[f] · g_L(x))`` with ``g_L`` the readout's
gradient there: for all features of a layer, one matrix product ``W_dec @ g``. This is a
screen, not a verdict; the patch stage checks it on a random sample every run.

Streaming, like discover: per batch, the residual and the gradient at the decision token of
every SAE layer go to two memory-mapped files in the run directory (``prompts × layers ×
d_model`` each, float32, deleted afterwards); then layer by layer, that layer's SAE alone goes
to the device and the per-prompt attributions of each chunk are folded into per-feature running
moments. Peak memory is one layer's SAE plus one batch, whatever the number of prompts.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from featurepath.config import ConditionSpec, RunConfig, record_config, resolve_config
from featurepath.engine.generate import Readout
from featurepath.engine.gradients import readout_gradients
from featurepath.errors import ConfigError
from featurepath.pipeline.discover import _on_device
from featurepath.pipeline.runtime import Runtime, ensure_runtime
from featurepath.rundir import SCREEN_COLUMNS, RunDir, atomic_write, feature_key, parquet_bytes
from featurepath.sae.model import SAE

#: patch values of the ``safe`` / ``risky`` conditions: ``{layer: (mean_safe, mean_risky)}``
PatchValues = dict[int, tuple[np.ndarray, np.ndarray]]


@dataclass
class ScreenResult:
    """What ``run_screen`` wrote, and how long it took."""

    table: pd.DataFrame
    seconds: float
    n_prompts: dict[str, int]
    n_features: int
    skipped: list[str] = field(default_factory=list)


def screen_conditions(cfg: RunConfig) -> list[ConditionSpec]:
    """The patched conditions the screen scores: every condition of ``patch.all_conditions()``
    that clamps something (baselines have nothing to attribute)."""
    return [c for c in cfg.patch.all_conditions() if c.patch != "none"]


def discover_values(run_dir: Path, saes: dict[int, SAE]) -> PatchValues | None:
    """Per layer, every feature's mean activation in the split's group B (safe) and group A (risky) games from
    ``discover.parquet`` (NaN where discover did not test the feature); None without it."""
    path = RunDir(run_dir).discover
    if not path.exists():
        return None
    df = pd.read_parquet(path, columns=["layer", "feature_id", "mean_safe", "mean_risky"])
    out: PatchValues = {}
    for layer, sae in saes.items():
        safe = np.full(sae.d_sae, np.nan, dtype=np.float32)
        risky = safe.copy()
        sub = df[(df["layer"] == layer) & (df["feature_id"] < sae.d_sae)]
        ids = sub["feature_id"].to_numpy(dtype=np.int64)
        safe[ids] = sub["mean_safe"].to_numpy(dtype=np.float32)
        risky[ids] = sub["mean_risky"].to_numpy(dtype=np.float32)
        out[layer] = (safe, risky)
    return out


def _clamp(cond: ConditionSpec, a: torch.Tensor, values: tuple[torch.Tensor, torch.Tensor] | None
           ) -> torch.Tensor:
    """Per prompt and feature, the clamp size ``v − a`` of ``cond`` (``a`` [prompts, d_sae])."""
    if cond.patch == "value":
        return float(cond.value) - a
    if cond.patch == "scale":
        return (float(cond.scale) - 1.0) * a
    assert values is not None
    v = values[0] if cond.patch == "safe" else values[1]
    return v.unsqueeze(0) - a


def capture_gradients(model, tok, layers: list[int], prompts: list[str], readout: Readout,
                      res_path: Path, grad_path: Path, batch_size: int,
                      progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Residuals and readout gradients ``[n, layers, d_model]`` at the decision token, each
    backed by a memory-mapped float32 file, and the readout per prompt."""
    from tqdm.auto import tqdm

    n, L, d = len(prompts), len(layers), int(model.config.hidden_size)
    bufs = []
    for path in (res_path, grad_path):
        b = torch.from_file(str(path), shared=True, size=max(1, n * L * d), dtype=torch.float32)
        bufs.append(b[:n * L * d].view(n, L, d))
    values = np.zeros(n, dtype=np.float64)
    for start in tqdm(range(0, n, batch_size), desc="screen: gradients", unit="batch",
                      disable=not progress, dynamic_ncols=True):
        chunk = prompts[start:start + batch_size]
        g = readout_gradients(model, tok, chunk, layers, readout)
        bufs[0][start:start + len(chunk)] = g.residual.cpu()
        bufs[1][start:start + len(chunk)] = g.grad.cpu()
        values[start:start + len(chunk)] = g.readout.double().cpu().numpy()
    return bufs[0], bufs[1], values


def screen_attributions(model, tok, saes: dict[int, SAE], prompts: dict[str, list[str]],
                        conditions: list[ConditionSpec], readout: Readout, work_dir: Path,
                        values: PatchValues | None = None, batch_size: int = 16,
                        chunk: int = 256, progress: bool = True) -> pd.DataFrame:
    """The screen table (``SCREEN_COLUMNS``) for ``conditions`` over ``prompts`` by context.

    ``safe``/``risky`` conditions need ``values``; the caller drops them when it has none."""
    from tqdm.auto import tqdm

    from featurepath.analysis.moments import ColumnMoments

    layers = sorted(saes)
    contexts = [c for c in prompts if any(k.context == c for k in conditions)]
    texts = [t for c in contexts for t in prompts[c]]
    bounds, at = {}, 0
    for c in contexts:
        bounds[c] = (at, at + len(prompts[c]))
        at += len(prompts[c])
    device = next(model.parameters()).device
    res, grad, _ = capture_gradients(model, tok, layers, texts, readout,
                                     work_dir / "residuals.bin", work_dir / "gradients.bin",
                                     batch_size, progress)
    frames = []
    for li, layer in enumerate(tqdm(layers, desc="screen: SAE layers", unit="layer",
                                    disable=not progress, dynamic_ncols=True)):
        sae = _on_device(saes[layer], device)
        vals = None
        if values is not None and layer in values:
            vals = tuple(torch.as_tensor(v, device=device) for v in values[layer])
        for ctx in contexts:
            conds = [k for k in conditions if k.context == ctx]
            moms = [ColumnMoments.empty(sae.d_sae, device) for _ in conds]
            clamp_sum = [torch.zeros(sae.d_sae, dtype=torch.float64, device=device)
                         for _ in conds]
            active = torch.zeros(sae.d_sae, dtype=torch.float64, device=device)
            a0, a1 = bounds[ctx]
            for s in range(a0, a1, chunk):
                e = min(a1, s + chunk)
                a = sae.encode(res[s:e, li].to(device))
                dg = grad[s:e, li].to(device) @ sae.W_dec.T  # [c, d_sae]: W_dec[f] · g
                active += (a != 0).sum(0).double()
                for k, cond in enumerate(conds):
                    cl = _clamp(cond, a, vals)
                    moms[k].update(cl * dg)
                    clamp_sum[k] += cl.sum(0).double()
            n = a1 - a0
            for k, cond in enumerate(conds):
                cnt, mean, m2 = (x.cpu().numpy() for x in (moms[k].n, moms[k].mean, moms[k].m2))
                se = np.sqrt(m2 / np.maximum(cnt - 1, 1) / np.maximum(cnt, 1))
                se[cnt < 2] = np.nan
                frames.append(pd.DataFrame({
                    "layer": layer, "feature_id": np.arange(sae.d_sae), "context": ctx,
                    "intervention": cond.name, "patch": cond.patch,
                    "attribution": np.where(cnt > 0, mean, np.nan), "attribution_se": se,
                    "active_share": active.cpu().numpy() / max(n, 1),
                    "clamp_mean": clamp_sum[k].cpu().numpy() / max(n, 1), "n_prompts": n}))
        del sae
    return rank_table(pd.concat(frames, ignore_index=True) if frames else
                      pd.DataFrame(columns=[c for c in SCREEN_COLUMNS if c not in
                                            ("feature", "rank")]))


def rank_table(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``feature`` and ``rank`` (1 = largest |attribution| within context × intervention;
    ties keep layer/feature order; NaN attributions last) and order the columns."""
    df = df.copy()
    df["feature"] = [feature_key(a, b) for a, b in zip(df["layer"], df["feature_id"],
                                                        strict=True)]
    key = df["attribution"].abs().fillna(-1.0)
    df["rank"] = key.groupby([df["context"], df["intervention"]]).rank(
        ascending=False, method="first").astype(np.int64)
    df = df.sort_values(["context", "intervention", "rank"], kind="stable")
    return df[SCREEN_COLUMNS].reset_index(drop=True)


def run_screen(run_dir: str | Path, cfg: RunConfig | None = None, *,
               runtime: Runtime | None = None, progress: bool = True) -> ScreenResult:
    """Score every feature of every SAE layer over the screen half of the patch stage's prompt
    sets and write ``RUN/screen.parquet`` (and ``RUN/splits/screen.parquet``).

    ``cfg`` None resolves the run's config; the model and SAEs are loaded from it unless a
    ``runtime`` is given. ``safe``/``risky`` conditions need discover's per-feature means;
    without ``discover.parquet`` they are skipped with one warning."""
    from featurepath.pipeline.prompt_sets import prompt_sets, record_split
    from featurepath.tasks import get_task

    root = Path(run_dir)
    cfg = resolve_config(root) if cfg is None else cfg
    t0 = time.time()
    model, tok, saes = ensure_runtime(runtime, cfg, progress=progress)
    readout = get_task(cfg.task).readout(tok)
    if readout is None:
        raise ConfigError("the tokenizer has no single-token spelling of the option digits, so "
                          "P(exit) cannot be read at the decision token and nothing can be "
                          "screened")
    conditions = screen_conditions(cfg)
    values = discover_values(root, saes)
    skipped = [c.name for c in conditions if c.patch in ("safe", "risky")] if values is None \
        else []
    if skipped:
        warnings.warn(f"screen: no discover.parquet, so the conditions that clamp to discover's "
                      f"means ({', '.join(skipped)}) are skipped; run `featurepath discover` "
                      "first to screen them", stacklevel=2)
        conditions = [c for c in conditions if c.name not in skipped]
    if not conditions:
        raise ConfigError("no patched condition to screen (patch.conditions holds baselines "
                          "only, or only safe/risky clamps without discover.parquet)")
    sets, held_out = prompt_sets(cfg, root, tok, "screen")
    missing = {c.context for c in conditions} - set(sets)
    if missing:
        raise ConfigError(f"conditions use unknown contexts {sorted(missing)}; known: "
                          f"{sorted(sets)}")
    texts = {ctx: [r.text for r in recs] for ctx, recs in sets.items()
             if any(c.context == ctx for c in conditions)}
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".screen-") as tmp:
        table = screen_attributions(model, tok, saes, texts, conditions, readout, Path(tmp),
                                    values, cfg.screen.batch_size, progress=progress)
    rd = RunDir(root)
    atomic_write(rd.screen, parquet_bytes(table))
    record_split(root, "screen", {k: v for k, v in sets.items() if k in texts},
                 "screen" if held_out else None, held_out)
    record_config(root, cfg)
    return ScreenResult(table, time.time() - t0, {k: len(v) for k, v in texts.items()},
                        sum(s.d_sae for s in saes.values()), skipped)


__all__ = ["ScreenResult", "run_screen", "screen_attributions", "screen_conditions",
           "discover_values", "rank_table", "capture_gradients"]
