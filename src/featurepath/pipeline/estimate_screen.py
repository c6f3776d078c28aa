"""The screen's share of a plan: how many prompts and passes it costs, timed on this machine.

Why beside the patch estimate: the screen is what makes a small patch plan possible. It costs
one forward and one backward pass per prompt batch (about three forward passes) plus one
``W_dec @ grad`` product per SAE layer, whatever the number of features; patching costs a
sampled answer per feature × condition × trial. Printing both from one calibration shows what
a screen-then-top-N plan saves against patching every correlational candidate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from featurepath.config import RunConfig


@dataclass
class ScreenEstimate:
    """The screen of a plan: features scored, prompts, forward+backward passes, and the
    measured seconds per pass and per pass's SAE products (all layers)."""

    n_features: int
    n_layers: int
    n_interventions: int
    n_prompts: int
    passes: int
    seconds_per_pass: float
    seconds_products: float

    @property
    def seconds(self) -> float:
        return self.passes * (self.seconds_per_pass + self.seconds_products)


def calibrate_screen(cfg: RunConfig, model, tok, saes, prompts: list[str],
                     n_prompts: int) -> ScreenEstimate:
    """Time one forward + backward pass on a batch of ``prompts`` (``screen.batch_size``, the
    prompts repeated if fewer) and the SAE products of every layer for that batch, after one
    warm-up pass; ``n_prompts`` is the size of the whole screen."""
    from featurepath.engine.gradients import readout_gradients
    from featurepath.pipeline.discover import _on_device
    from featurepath.pipeline.screen import screen_conditions
    from featurepath.tasks import get_task

    readout = get_task(cfg.task).readout(tok)
    bs = cfg.screen.batch_size
    batch = (prompts * math.ceil(bs / max(len(prompts), 1)))[:bs]
    layers = sorted(saes)
    device = next(model.parameters()).device
    readout_gradients(model, tok, batch[:1], layers, readout)  # warm-up
    t0 = time.perf_counter()
    g = readout_gradients(model, tok, batch, layers, readout)
    t1 = time.perf_counter()
    for li, layer in enumerate(layers):
        sae = _on_device(saes[layer], device)
        a = sae.encode(g.residual[:, li])
        (g.grad[:, li] @ sae.W_dec.T * a).sum()
        del sae
    if device.type == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    return ScreenEstimate(sum(s.d_sae for s in saes.values()), len(layers),
                          len(screen_conditions(cfg)), n_prompts, math.ceil(n_prompts / bs),
                          t1 - t0, t2 - t1)


def format_screen_estimate(e: ScreenEstimate, seconds_per_trial: float | None = None) -> str:
    """Lines for the CLI: the screen's size and time, and (given the patch rate) how many
    patch trials the screen's time would buy."""
    from featurepath.pipeline.formatting import _fmt_seconds

    line = (f"screen   {e.n_features:,} features x {e.n_interventions} interventions over "
            f"{e.n_prompts} prompts -> {e.passes} forward+backward passes "
            f"({e.seconds_per_pass:.2f} s each + {e.seconds_products:.2f} s of SAE products "
            f"for {e.n_layers} layers) = {_fmt_seconds(e.seconds)}")
    if seconds_per_trial:
        line += f", the time of {e.seconds / seconds_per_trial:,.0f} patch trials"
    return line


__all__ = ["ScreenEstimate", "calibrate_screen", "format_screen_estimate"]
