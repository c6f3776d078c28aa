"""Is this SAE read the way it was trained? A check on real text.

A synthetic file can say whether featurepath reads an SAE the way SAELens does, but not whether
that reading is what the SAE's authors meant. Llama Scope is the case in point: its scalar
JumpReLU threshold may be compared with the pre-activation scaled by the input normalisation
(SAELens's loader) or as stored (OpenMOSS's training code), and its gate may or may not include
the decoder norms (``sparsity_include_decoder_norm``). The published answer is a sparsity: Llama
Scope reports L0 ≈ 50 (its ``top_k``) on ordinary text. So the check runs a few hundred tokens of
text through the model, measures per layer L0, FVU, dead share and (optionally) the loss increase
with the reconstruction spliced in, and compares L0 with the target the SAE declares (``top_k``,
``k``). When L0 is more than :data:`L0_FACTOR` × off, it reports L0 under every Llama Scope
reading and names the options that bring it in line.

:func:`check_saes` is the library call behind ``featurepath sae check``; :func:`warn_if_l0_off`
is the cheap version ``discover`` and ``patch`` run on their first batch.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from featurepath.sae.formats import LLAMASCOPE_THRESHOLDS, llamascope_thresholds
from featurepath.sae.model import SAE

#: L0 further than this factor from the declared target (either way) is reported.
L0_FACTOR = 2.0


@dataclass
class LayerCheck:
    """The check of one SAE (one layer)."""

    layer: int
    l0: float
    target_l0: float | None
    fvu: float
    dead_fraction: float
    n_tokens: int
    loss_increase: float | None = None
    alternatives: dict[str, float] = field(default_factory=dict)
    """L0 under each other Llama Scope reading, keyed by the options that select it."""
    suggestion: str | None = None
    """The options whose reading brings L0 within :data:`L0_FACTOR` of the target."""

    @property
    def off(self) -> bool:
        return l0_off(self.l0, self.target_l0)

    def message(self) -> str | None:
        """One line when L0 is off, saying what to try; ``None`` when it is fine."""
        if not self.off:
            return None
        text = (f"L{self.layer}: L0 {self.l0:.1f} on real text, but the SAE declares a target "
                f"of {self.target_l0:g}: more than {L0_FACTOR:g}x off")
        if self.suggestion:
            text += (f"; with {self.suggestion} L0 is {self.alternatives[self.suggestion]:.1f} "
                     "- load it with those options")
        elif self.alternatives:
            alts = ", ".join(f"{k}: {v:.1f}" for k, v in self.alternatives.items())
            text += f"; no Llama Scope reading fits either ({alts})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "off": self.off}


def l0_off(l0: float, target: float | None, factor: float = L0_FACTOR) -> bool:
    """True when ``l0`` is more than ``factor`` times above or below ``target``."""
    if target is None or not target or not math.isfinite(l0):
        return False
    return l0 > factor * target or l0 < target / factor


def declared_l0(sae: SAE) -> float | None:
    """The L0 an SAE was made for: Llama Scope's ``top_k``, SAELens's / featurepath's ``k``."""
    target = sae.meta.get("target_l0")
    if target is None and sae.k is not None:
        target = sae.k
    return float(target) if target is not None else None


def _option_flags(threshold: str, decoder_norm: bool) -> str:
    """The command-line options that select one Llama Scope reading."""
    return f"--llamascope-threshold {threshold}" + (" --llamascope-decoder-norm"
                                                     if decoder_norm else "")


@torch.inference_mode()
def llamascope_alternatives(sae: SAE, acts: torch.Tensor, chunk: int = 4096
                            ) -> dict[tuple[str, bool], float]:
    """L0 on ``acts`` under every Llama Scope reading ``(threshold, decoder_norm)``.

    The loaded SAE has the input normalisation folded in, so its pre-activation already equals
    that of the normalised input; only the threshold changes between readings. The stored
    decoder's norms are the folded ones times ``s``.
    """
    s = float(sae.meta["norm_scale"])
    theta = float(sae.meta["jump_relu_threshold"])
    stored_norms = sae.W_dec.detach().float().norm(dim=1).cpu() * s
    readings = [(t, d) for t in LLAMASCOPE_THRESHOLDS for d in (False, True)]
    thresholds = {r: llamascope_thresholds(theta, s, stored_norms, *r) for r in readings}
    counts = dict.fromkeys(readings, 0.0)
    n = int(acts.shape[0])
    for start in range(0, n, chunk):
        pre = sae.pre_acts(acts[start:start + chunk].to(sae.W_enc.device)).float().cpu()
        for r, thr in thresholds.items():
            counts[r] += float(((pre > thr) & (pre > 0)).sum())
    return {r: c / max(n, 1) for r, c in counts.items()}


def _with_alternatives(row: LayerCheck, sae: SAE, acts: torch.Tensor) -> None:
    """Fill ``row.alternatives`` / ``row.suggestion`` for a Llama Scope SAE whose L0 is off."""
    if sae.meta.get("format") != "llamascope" or "norm_scale" not in sae.meta:
        return
    current = (sae.meta.get("llamascope_threshold", "scaled"),
               bool(sae.meta.get("llamascope_decoder_norm", False)))
    alts = llamascope_alternatives(sae, acts)
    target = row.target_l0
    assert target is not None
    row.alternatives = {_option_flags(*r): v for r, v in alts.items() if r != current}
    fitting = [(abs(math.log(max(v, 1e-9) / target)), r) for r, v in alts.items()
               if r != current and not l0_off(v, target)]
    if fitting:
        row.suggestion = _option_flags(*min(fitting)[1])


def check_saes(model: Any, tok: Any, saes: dict[int, SAE], texts: Sequence[str],
               loss: bool = True, batch_size: int = 8, progress: bool = False
               ) -> list[LayerCheck]:
    """One :class:`LayerCheck` per SAE on ``texts`` (the CLI passes game prompts plus neutral
    sentences; this package knows no task): one forward pass collects every layer's block
    output; ``loss`` adds the cross-entropy increase with each SAE's reconstruction spliced in
    (one clean pass shared by all layers)."""
    from featurepath.sae.collect import collect_activations
    from featurepath.sae.quality import ce_losses, sae_quality

    texts = list(texts)
    acts = collect_activations(model, tok, texts, sorted(saes), batch_size=batch_size,
                               progress=progress, desc="sae check")
    rows: list[LayerCheck] = []
    clean: dict[str, float] | None = None
    for layer, sae in sorted(saes.items()):
        q = sae_quality(sae, acts[layer])
        row = LayerCheck(layer, q["l0"], declared_l0(sae), q["fvu"], q["dead_fraction"],
                         int(q["n_tokens"]))
        if row.off:
            _with_alternatives(row, sae, acts[layer])
        if loss:
            ce = ce_losses(model, tok, sae, texts, layer, batch_size=batch_size, clean=clean)
            clean = clean or {"ce_clean": ce["ce_clean"], "n_tokens": ce["n_tokens"]}
            row.loss_increase = ce["increase"]
        rows.append(row)
    return rows


def format_check(rows: Sequence[LayerCheck]) -> list[str]:
    """The table ``featurepath sae check`` prints, then one line per SAE that is off."""
    def num(v: float | None, spec: str) -> str:
        return format(v, spec) if v is not None and math.isfinite(v) else "-"

    lines = [f"{'layer':>5} {'L0':>8} {'target':>7} {'FVU':>7} {'dead':>6} {'dCE':>8} "
             f"{'tokens':>7}  status"]
    for r in rows:
        lines.append(f"{r.layer:>5} {num(r.l0, '.1f'):>8} {num(r.target_l0, 'g'):>7} "
                     f"{num(r.fvu, '.3f'):>7} {num(r.dead_fraction, '.1%'):>6} "
                     f"{num(r.loss_increase, '.4f'):>8} {r.n_tokens:>7}  "
                     f"{'L0 OFF' if r.off else 'ok' if r.target_l0 else 'no target'}")
    lines += [f"warning: {m}" for r in rows if (m := r.message())]
    return lines


_WARNED: set[tuple[str, int]] = set()


def _key(sae: SAE, layer: int) -> tuple[str, int]:
    return (str(sae.meta.get("path") or f"id:{id(sae)}"), layer)


def warn_if_l0_off(model: Any, tok: Any, saes: dict[int, SAE], texts: Sequence[str],
                   echo: Callable[[str], None] | None = None) -> list[str]:
    """The check without the loss, on ``texts`` (a stage's first batch): one ``warning:`` line
    per SAE whose L0 is off, each printed once per process (to stderr unless ``echo``). Returns
    the messages (empty when every SAE is in line or declares no target)."""
    todo = {layer: sae for layer, sae in saes.items() if declared_l0(sae) is not None
            and _key(sae, layer) not in _WARNED}
    if not todo or not texts:
        return []
    rows = check_saes(model, tok, todo, texts, loss=False)
    _WARNED.update(_key(sae, layer) for layer, sae in todo.items())
    out = []
    for r in rows:
        msg = r.message()
        if msg:
            line = f"warning: {msg} (run `featurepath sae check` for the full table)"
            (echo or (lambda s: print(s, file=sys.stderr)))(line)
            out.append(line)
    return out
