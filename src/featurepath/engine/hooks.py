"""Per-row interventions and activation recording, in forward hooks on decoder-block outputs.

Why one hook does both: the original study patched in one pass and wanted the downstream
activations of the same trials, so reading them in the same forward pass halves the cost and
guarantees they belong to the patched trajectory. At the patched layer the recorder reads the
stream *before* the patch is applied (what the feature "was"), later layers read the patched
stream.

Every batch row carries its own intervention (or none): the original hook wrote only row 0.

Positions, per forward call (a prefill over the prompt, then one call per generated token):
- ``last``: the decision token in the prefill, then each newly fed token (the original
  behaviour);
- ``prompt``: the decision token only;
- ``all``: every real (non-padding) position.

Methods:
- ``delta`` (default): ``h += (v - f(h)) · W_dec[f]`` — the SAE's reconstruction error is kept,
  so an unpatched-equivalent clamp (``v = f(h)``) leaves the model unchanged;
- ``reconstruct``: ``h = decode(encode(h) with f := v)`` — the original experiment's method,
  which drops the SAE error; its fair baseline is ``reconstruct`` with nothing clamped
  (``feature = -1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from featurepath.models import decoder_blocks
from featurepath.sae.model import SAE, SAESlice

METHODS = ("delta", "reconstruct")
POSITIONS = ("last", "prompt", "all")


@dataclass(frozen=True)
class Intervention:
    """What one batch row does at one layer: clamp ``feature`` to ``value`` (or to
    ``scale`` × its current value). ``feature = -1`` with ``reconstruct`` is the reconstruction
    baseline (nothing clamped).

    Control arms (``delta`` only) change *where* the clamp writes:

    - ``direction`` with a feature: a null arm. The row reads the feature and computes the same
      ``v - f(h)``, but writes it along ``‖W_dec[f]‖ · direction`` (a unit vector) instead of
      ``W_dec[f]``: the same intervention magnitude in another direction.
    - ``direction`` with ``readout = "projection"`` (no feature): the row reads ``a = h · u``
      and writes ``(v - a) · u``, so a scale clamp moves a plain direction (the behavioural
      direction) exactly as it moves an SAE feature.
    """

    layer: int
    feature: int
    value: float | None = None
    scale: float | None = None
    method: str = "delta"
    positions: str = "last"
    direction: torch.Tensor | None = field(default=None, compare=False, repr=False)
    readout: str = "feature"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown patch method {self.method!r}; use one of {METHODS}")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; use one of {POSITIONS}")
        if self.readout not in ("feature", "projection"):
            raise ValueError(f"unknown readout {self.readout!r}; use feature or projection")
        if self.readout == "projection":
            if self.direction is None or self.feature >= 0 or self.method != "delta":
                raise ValueError("a projection readout needs a direction, no feature and "
                                 "method delta")
            if (self.value is None) == (self.scale is None):
                raise ValueError("an intervention needs exactly one of value or scale")
            return
        if self.direction is not None and (self.feature < 0 or self.method != "delta"):
            raise ValueError("a null direction needs a feature and method delta")
        if self.feature >= 0 and (self.value is None) == (self.scale is None):
            raise ValueError("an intervention needs exactly one of value or scale")
        if self.feature < 0 and self.method != "reconstruct":
            raise ValueError("only a reconstruct intervention may clamp no feature")


@dataclass
class RecordSpec:
    """The recorded features: ``(layer, feature_id)`` pairs in a fixed column order."""

    features: list[tuple[int, int]]

    def by_layer(self) -> dict[int, tuple[list[int], list[int]]]:
        """layer -> (column indices, feature ids)."""
        out: dict[int, tuple[list[int], list[int]]] = {}
        for col, (layer, fid) in enumerate(self.features):
            cols, fids = out.setdefault(layer, ([], []))
            cols.append(col)
            fids.append(fid)
        return out


class CallState:
    """What the hooks need to know about the current forward call.

    ``rows`` maps the call's batch rows to the original rows (batches shrink as rows finish);
    ``decision_pos[r]`` is the decision token's index in this call (or -1);
    ``gen_mask[r, t]`` marks positions that count as generated tokens;
    ``real_mask[r, t]`` marks non-padding positions.
    """

    def __init__(self, rows: torch.Tensor, decision_pos: torch.Tensor, gen_mask: torch.Tensor,
                 real_mask: torch.Tensor, prefill: bool):
        self.rows = rows
        self.decision_pos = decision_pos
        self.gen_mask = gen_mask
        self.real_mask = real_mask
        self.prefill = prefill


class PatchRecorder:
    """Installs hooks that apply per-row interventions and record chosen features.

    Only SAE *slices* are kept: the recorded features' encoder columns per layer, and the
    patched features' encoder columns and decoder rows. A full SAE stays only for layers where
    some row uses ``reconstruct``.
    """

    def __init__(self, model, saes: dict[int, SAE], interventions: Sequence[Intervention | None],
                 record: RecordSpec | None = None, device=None, dtype=None):
        self.model = model
        self.n_rows = len(interventions)
        p = next(model.parameters())
        self.device = device or p.device
        self.dtype = dtype or p.dtype
        self.interventions = list(interventions)
        self.record = record or RecordSpec([])
        n_rec = len(self.record.features)
        self.decision = torch.full((self.n_rows, n_rec), float("nan"))
        self.gen_sum = torch.zeros(self.n_rows, n_rec, dtype=torch.float64)
        self.gen_max = torch.full((self.n_rows, n_rec), float("nan"))
        self.gen_count = torch.zeros(self.n_rows, dtype=torch.long)
        self._rec_slices: dict[int, tuple[torch.Tensor, SAESlice]] = {}
        for layer, (cols, fids) in self.record.by_layer().items():
            if layer not in saes:
                raise ValueError(f"no SAE for recorded layer {layer}")
            self._rec_slices[layer] = (torch.tensor(cols),
                                       saes[layer].slice(fids).to(self.device, torch.float32))
        self._patch: dict[int, dict] = {}
        by_layer: dict[int, list[int]] = {}
        for r, iv in enumerate(self.interventions):
            if iv is not None:
                if iv.layer not in saes:
                    raise ValueError(f"no SAE for patched layer {iv.layer}")
                by_layer.setdefault(iv.layer, []).append(r)
        for layer, rows in by_layer.items():
            ivs = [self.interventions[r] for r in rows]
            fids = sorted({iv.feature for iv in ivs if iv.feature >= 0})
            sl = saes[layer].slice(fids).to(self.device, torch.float32) if fids else None
            full = saes[layer].to(self.device) if any(iv.method == "reconstruct" for iv in ivs) \
                else None
            row_mask = torch.zeros(self.n_rows, dtype=torch.bool)
            row_mask[rows] = True
            col = torch.full((self.n_rows,), -1, dtype=torch.long)
            fid = torch.full((self.n_rows,), -1, dtype=torch.long)
            value = torch.full((self.n_rows,), float("nan"))
            scale = torch.full((self.n_rows,), float("nan"))
            recon = torch.zeros(self.n_rows, dtype=torch.bool)
            pos = torch.zeros(self.n_rows, dtype=torch.long)
            for r, iv in zip(rows, ivs, strict=True):
                if iv.feature >= 0:
                    col[r] = sl.index_of(iv.feature)
                    fid[r] = iv.feature
                value[r] = float("nan") if iv.value is None else iv.value
                scale[r] = float("nan") if iv.scale is None else iv.scale
                recon[r] = iv.method == "reconstruct"
                pos[r] = POSITIONS.index(iv.positions)
            self._patch[layer] = dict(rows=row_mask, col=col, fid=fid, value=value, scale=scale,
                                      recon=recon, pos=pos, slice=sl, full=full)
        self.state: CallState | None = None
        self._handles: list = []
        self._layers = sorted(set(self._rec_slices) | set(self._patch))

    # ------------------------------------------------------------------ hooks
    def __enter__(self) -> PatchRecorder:
        blocks = decoder_blocks(self.model)
        for layer in self._layers:
            if layer >= len(blocks):
                raise ValueError(f"layer {layer} is beyond the model's {len(blocks)} blocks")
            self._handles.append(blocks[layer].register_forward_hook(self._make_hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _make_hook(self, layer: int):
        def hook(module, args, output):
            if self.state is None:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            if layer in self._rec_slices:
                self._record(layer, hidden)
            if layer in self._patch:
                hidden = self._apply(layer, hidden)
                if isinstance(output, tuple):
                    return (hidden,) + tuple(output[1:])
                return hidden
            return None

        return hook

    def _record(self, layer: int, hidden: torch.Tensor) -> None:
        st = self.state
        cols, sl = self._rec_slices[layer]
        rows = st.rows
        has_dec = st.decision_pos >= 0
        if bool(has_dec.any()):
            b = torch.nonzero(has_dec).flatten()
            h = hidden[b, st.decision_pos[b]].float()
            vals = sl.encode(h).cpu()
            self.decision[rows[b].cpu().unsqueeze(1), cols.unsqueeze(0)] = vals
        if bool(st.gen_mask.any()):
            m = st.gen_mask
            f = sl.encode(hidden.float()) * m.unsqueeze(-1)  # [B, T, n]
            s = f.sum(1).double().cpu()
            mx = f.masked_fill(~m.unsqueeze(-1), float("-inf")).amax(1).cpu()
            r = rows.cpu()
            self.gen_sum[r.unsqueeze(1), cols.unsqueeze(0)] += s
            cur = self.gen_max[r.unsqueeze(1), cols.unsqueeze(0)]
            has = m.any(1).cpu().unsqueeze(1)
            new = torch.where(torch.isnan(cur), mx, torch.maximum(cur, mx))
            self.gen_max[r.unsqueeze(1), cols.unsqueeze(0)] = torch.where(has, new, cur)

    def count_generated(self) -> None:
        """Called once per forward call, after the hooks, to count generated positions."""
        st = self.state
        if st is not None and bool(st.gen_mask.any()):
            self.gen_count.index_add_(0, st.rows.cpu(), st.gen_mask.sum(1).cpu())

    def _apply(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        st = self.state
        p = self._patch[layer]
        rows_cpu = st.rows.cpu()
        active = p["rows"][rows_cpu]
        if not bool(active.any()):
            return hidden
        b = torch.nonzero(active).flatten()
        orig = rows_cpu[b]
        B, T, _ = hidden.shape
        # Which positions of each patched row to write.
        pos_kind = p["pos"][orig]
        mask = torch.zeros(len(b), T, dtype=torch.bool)
        dec = st.decision_pos.cpu()[b]
        real = st.real_mask.cpu()[b]
        gen = st.gen_mask.cpu()[b]
        for i in range(len(b)):
            kind = POSITIONS[int(pos_kind[i])]
            if kind == "all":
                mask[i] = real[i]
            else:
                if dec[i] >= 0:
                    mask[i, dec[i]] = True
                if kind == "last":
                    mask[i] |= gen[i]
        if not bool(mask.any()):
            return hidden
        mask = mask.to(hidden.device)
        hb = hidden[b.to(hidden.device)].float()  # [R, T, D]
        col = p["col"][orig]
        value = p["value"][orig].to(hidden.device)
        scale = p["scale"][orig].to(hidden.device)
        recon = p["recon"][orig]
        out = hb.clone()
        clamped = col >= 0
        cur = target = idx = None
        if p["slice"] is not None and bool(clamped.any()):
            f_all = p["slice"].encode(hb)  # [R, T, n_slice]
            idx = col.clamp(min=0).to(hidden.device)
            cur = f_all.gather(-1, idx.view(-1, 1, 1).expand(-1, T, 1)).squeeze(-1)  # [R, T]
            target = torch.where(torch.isnan(value).unsqueeze(1), cur * scale.unsqueeze(1),
                                 value.unsqueeze(1).expand(-1, T))
        delta_rows = (~recon) & clamped
        if bool(delta_rows.any()):
            d = delta_rows.to(hidden.device)
            direction = p["slice"].W_dec[idx]  # [R, D]
            add = (target - cur).unsqueeze(-1) * direction.unsqueeze(1)
            sel = (mask & d.unsqueeze(1)).unsqueeze(-1)
            out = torch.where(sel, hb + add, out)
        if bool(recon.any()):
            full: SAE = p["full"]
            r_idx = torch.nonzero(recon).flatten().to(hidden.device)
            f = full.encode(hb[r_idx])
            fids = p["fid"][orig][recon.cpu()]
            for j, fid in enumerate(fids.tolist()):
                if fid >= 0:
                    f[j, :, fid] = target[r_idx[j]]
            rec = full.decode(f)
            sel = mask[r_idx].unsqueeze(-1)
            out[r_idx] = torch.where(sel, rec, hb[r_idx])
        new_hidden = hidden.clone()
        new_hidden[b.to(hidden.device)] = out.to(hidden.dtype)
        return new_hidden

    # ---------------------------------------------------------------- results
    def gen_mean(self) -> torch.Tensor:
        cnt = self.gen_count.clamp(min=1).unsqueeze(1).double()
        out = (self.gen_sum / cnt).float()
        out[self.gen_count == 0] = float("nan")
        return out
