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

from featurepath.choices import METHODS, POSITIONS
from featurepath.models import decoder_blocks
from featurepath.sae.model import SAE, SAESlice


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
    - ``write`` with a projection readout: the row reads ``a = h · u`` but writes
      ``(v - a) · write`` (a unit vector): the behavioural direction's null arm, the same
      magnitude along a random direction.
    """

    layer: int
    feature: int
    value: float | None = None
    scale: float | None = None
    method: str = "delta"
    positions: str = "last"
    direction: torch.Tensor | None = field(default=None, compare=False, repr=False)
    readout: str = "feature"
    write: torch.Tensor | None = field(default=None, compare=False, repr=False)

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
        if self.write is not None:
            raise ValueError("a separate write direction needs a projection readout")
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

    ``rows`` stays on the host (the caller knows which rows are alive without asking the
    device); the other tensors may live anywhere. ``has_decision`` / ``has_gen`` say whether
    any row has a decision token / generated position in this call; the caller knows that from
    the kind of call (a decode step has no decision token and one generated position per
    row), so the hooks never have to ask the device. When they are not given they are read
    from the tensors, once, here — outside the hooks.
    """

    def __init__(self, rows: torch.Tensor, decision_pos: torch.Tensor, gen_mask: torch.Tensor,
                 real_mask: torch.Tensor, prefill: bool, has_decision: bool | None = None,
                 has_gen: bool | None = None):
        self.rows = rows.cpu()
        self.decision_pos = decision_pos
        self.gen_mask = gen_mask
        self.real_mask = real_mask
        self.prefill = prefill
        self.has_decision = bool((decision_pos >= 0).any()) if has_decision is None \
            else has_decision
        self.has_gen = bool(gen_mask.any()) if has_gen is None else has_gen


@dataclass
class _DeviceCall:
    """A call's state moved to the recorder's device, plus each patched layer's plan: built
    once per ``CallState`` (a prefill, or a decode step whose rows changed), so that the hooks
    themselves only launch device kernels and never wait for the device."""

    rows: torch.Tensor
    decision_pos: torch.Tensor
    gen_mask: torch.Tensor
    real_mask: torch.Tensor
    has_decision: bool
    has_gen: bool
    patch: dict[int, _PatchPlan]


@dataclass
class _PatchPlan:
    """The rows of the current call patched at one layer, and what each does."""

    b: torch.Tensor          # batch rows patched here (device)
    mask: torch.Tensor       # [R, T] positions to write
    col: torch.Tensor        # slice column of the clamped feature (-1: none)
    dirs: torch.Tensor | None    # [R, D] control-arm write directions (zeros: the feature's own)
    rdirs: torch.Tensor | None   # [R, D] projection rows' read directions
    has_dir: torch.Tensor | None  # [R] rows that write along ``dirs``
    proj: torch.Tensor | None    # [R] rows whose readout is ``h · dirs`` (no SAE feature)
    value: torch.Tensor
    scale: torch.Tensor
    delta: torch.Tensor      # [R] rows patched by ``delta``
    any_clamped: bool
    any_delta: bool
    r_idx: torch.Tensor | None   # rows (within b) patched by ``reconstruct``
    r_fid: torch.Tensor | None   # their clamped feature id (-1: baseline)
    any_r_fid: bool


class PatchRecorder:
    """Installs hooks that apply per-row interventions and record chosen features.

    Only SAE *slices* are kept: the recorded features' encoder columns per layer, and the
    patched features' encoder columns and decoder rows. A full SAE stays only for layers where
    some row uses ``reconstruct``.

    Nothing in a hook waits for the device: the per-call masks and row indices are built when
    ``state`` is set (once per prefill, and once per decode step only if rows finished), and
    the accumulators (decision values, sums, maxima, counts) stay on the device, per recorded
    layer, until the results are read. On a GPU a host sync in a hook would drain the launch
    queue at every layer of every decoding step.
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
        self._rec_slices: dict[int, tuple[torch.Tensor, SAESlice]] = {}
        self._acc: dict[int, dict[str, torch.Tensor]] = {}
        dev = self.device
        for layer, (cols, fids) in self.record.by_layer().items():
            if layer not in saes:
                raise ValueError(f"no SAE for recorded layer {layer}")
            self._rec_slices[layer] = (torch.tensor(cols),
                                       saes[layer].slice(fids).to(dev, torch.float32))
            k = len(cols)
            self._acc[layer] = dict(
                decision=torch.full((self.n_rows, k), float("nan"), device=dev),
                gen_sum=torch.zeros(self.n_rows, k, dtype=torch.float64, device=dev),
                gen_max=torch.full((self.n_rows, k), float("nan"), device=dev))
        self._gen_count = torch.zeros(self.n_rows, dtype=torch.long, device=dev)
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
            any_dir = any(iv.direction is not None for iv in ivs)
            d_model = saes[layer].d_model
            dirs = torch.zeros(self.n_rows, d_model) if any_dir else None
            rdirs = torch.zeros(self.n_rows, d_model) if any_dir else None
            has_dir = torch.zeros(self.n_rows, dtype=torch.bool) if any_dir else None
            proj = torch.zeros(self.n_rows, dtype=torch.bool) if any_dir else None
            for r, iv in zip(rows, ivs, strict=True):
                if iv.direction is not None:
                    u = iv.direction.float().cpu().reshape(-1)
                    if iv.readout == "projection":
                        rdirs[r], proj[r] = u, True
                        dirs[r] = u if iv.write is None else iv.write.float().cpu().reshape(-1)
                    else:  # a null arm: the feature's decoder norm along another direction
                        dirs[r] = u * saes[layer].W_dec[iv.feature].float().norm().cpu()
                    has_dir[r] = True
                if iv.feature >= 0:
                    col[r] = sl.index_of(iv.feature)
                    fid[r] = iv.feature
                value[r] = float("nan") if iv.value is None else iv.value
                scale[r] = float("nan") if iv.scale is None else iv.scale
                recon[r] = iv.method == "reconstruct"
                pos[r] = POSITIONS.index(iv.positions)
            self._patch[layer] = dict(rows=row_mask, col=col, fid=fid, value=value, scale=scale,
                                      recon=recon, pos=pos, slice=sl, full=full, dirs=dirs,
                                      rdirs=rdirs, has_dir=has_dir, proj=proj)
        self._state: CallState | None = None
        self._call: _DeviceCall | None = None
        self._handles: list = []
        self._layers = sorted(set(self._rec_slices) | set(self._patch))

    # ------------------------------------------------------------ call state
    @property
    def state(self) -> CallState | None:
        return self._state

    @state.setter
    def state(self, st: CallState | None) -> None:
        """Setting the same ``CallState`` again (every decode step while no row finishes) costs
        nothing; a new one is moved to the device and planned once."""
        if st is self._state and (st is None or self._call is not None):
            return
        self._state = st
        self._call = None if st is None else self._plan(st)

    def _plan(self, st: CallState) -> _DeviceCall:
        dev = self.device
        rows = st.rows
        dec = st.decision_pos.to(dev)
        gen = st.gen_mask.to(dev)
        real = st.real_mask.to(dev)
        plans: dict[int, _PatchPlan] = {}
        for layer, p in self._patch.items():
            active = p["rows"][rows]
            b_host = torch.nonzero(active).flatten()
            if b_host.numel() == 0:
                continue
            orig = rows[b_host]
            kinds = p["pos"][orig]
            # a row can write here only if its position kind has something in this call
            may = ((kinds == POSITIONS.index("all"))
                   | ((kinds == POSITIONS.index("last")) & (st.has_decision or st.has_gen))
                   | ((kinds == POSITIONS.index("prompt")) & st.has_decision))
            if not bool(may.any()):
                continue
            b = b_host.to(dev)
            T = gen.shape[1]
            kind_d = kinds.to(dev).unsqueeze(1)
            at_dec = torch.arange(T, device=dev).unsqueeze(0) == dec[b].unsqueeze(1)
            mask = torch.where(kind_d == POSITIONS.index("all"), real[b],
                               torch.where(kind_d == POSITIONS.index("last"), at_dec | gen[b],
                                           at_dec))
            col = p["col"][orig]
            recon = p["recon"][orig]
            proj = p["proj"][orig] if p["proj"] is not None else None
            clamped = col >= 0
            delta = (~recon) & (clamped if proj is None else clamped | proj)
            r_host = torch.nonzero(recon).flatten()
            r_fid = p["fid"][orig][r_host]
            plans[layer] = _PatchPlan(
                b=b, mask=mask, col=col.to(dev),
                dirs=p["dirs"][orig].to(dev) if proj is not None else None,
                rdirs=p["rdirs"][orig].to(dev) if proj is not None else None,
                has_dir=p["has_dir"][orig].to(dev) if proj is not None else None,
                proj=proj.to(dev) if proj is not None else None,
                value=p["value"][orig].to(dev),
                scale=p["scale"][orig].to(dev), delta=delta.to(dev),
                any_clamped=p["slice"] is not None and bool(clamped.any()),
                any_delta=bool(delta.any()),
                r_idx=r_host.to(dev) if r_host.numel() else None,
                r_fid=r_fid.to(dev) if r_host.numel() else None,
                any_r_fid=bool((r_fid >= 0).any()))
        return _DeviceCall(rows.to(dev), dec, gen, real, st.has_decision, st.has_gen, plans)

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
            call = self._call
            if call is None:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            if layer in self._rec_slices:
                self._record(call, layer, hidden)
            plan = call.patch.get(layer)
            if plan is not None:
                hidden = self._apply(plan, self._patch[layer], hidden)
                if isinstance(output, tuple):
                    return (hidden,) + tuple(output[1:])
                return hidden
            return None

        return hook

    def _record(self, call: _DeviceCall, layer: int, hidden: torch.Tensor) -> None:
        _, sl = self._rec_slices[layer]
        acc = self._acc[layer]
        rows = call.rows
        if call.has_decision:
            dec = call.decision_pos
            h = hidden[torch.arange(hidden.shape[0], device=hidden.device), dec.clamp(min=0)]
            vals = sl.encode(h.float())
            acc["decision"][rows] = torch.where((dec >= 0).unsqueeze(1), vals,
                                                acc["decision"][rows])
        if call.has_gen:
            m = call.gen_mask
            f = sl.encode(hidden.float()) * m.unsqueeze(-1)  # [B, T, n]
            acc["gen_sum"][rows] += f.sum(1).double()
            mx = f.masked_fill(~m.unsqueeze(-1), float("-inf")).amax(1)
            cur = acc["gen_max"][rows]
            new = torch.where(torch.isnan(cur), mx, torch.maximum(cur, mx))
            acc["gen_max"][rows] = torch.where(m.any(1).unsqueeze(1), new, cur)

    def count_generated(self) -> None:
        """Called once per forward call, after the hooks, to count generated positions."""
        call = self._call
        if call is not None and call.has_gen:
            self._gen_count.index_add_(0, call.rows, call.gen_mask.sum(1))

    def _apply(self, plan: _PatchPlan, p: dict, hidden: torch.Tensor) -> torch.Tensor:
        b = plan.b
        T = hidden.shape[1]
        hb = hidden[b].float()  # [R, T, D]
        out = hb.clone()
        cur = target = idx = None
        if plan.any_clamped:
            f_all = p["slice"].encode(hb)  # [R, T, n_slice]
            idx = plan.col.clamp(min=0)
            cur = f_all.gather(-1, idx.view(-1, 1, 1).expand(-1, T, 1)).squeeze(-1)  # [R, T]
        if plan.proj is not None:  # projection readout of plain directions: a = h · u
            a = (hb * plan.rdirs.unsqueeze(1)).sum(-1)
            cur = a if cur is None else torch.where(plan.proj.unsqueeze(1), a, cur)
        if cur is not None:
            target = torch.where(torch.isnan(plan.value).unsqueeze(1),
                                 cur * plan.scale.unsqueeze(1),
                                 plan.value.unsqueeze(1).expand(-1, T))
        if plan.any_delta:
            if p["slice"] is not None:
                direction = p["slice"].W_dec[plan.col.clamp(min=0)]  # [R, D]
                if plan.has_dir is not None:
                    direction = torch.where(plan.has_dir.unsqueeze(1), plan.dirs, direction)
            else:
                direction = plan.dirs
            add = (target - cur).unsqueeze(-1) * direction.unsqueeze(1)
            sel = (plan.mask & plan.delta.unsqueeze(1)).unsqueeze(-1)
            out = torch.where(sel, hb + add, out)
        if plan.r_idx is not None:
            full: SAE = p["full"]
            r_idx = plan.r_idx
            f = full.encode(hb[r_idx])
            if plan.any_r_fid:
                fid = plan.r_fid
                clamp = f.scatter(-1, fid.clamp(min=0).view(-1, 1, 1).expand(-1, T, 1),
                                  target[r_idx].unsqueeze(-1).to(f.dtype))
                f = torch.where((fid >= 0).view(-1, 1, 1), clamp, f)
            rec = full.decode(f)
            sel = plan.mask[r_idx].unsqueeze(-1)
            out[r_idx] = torch.where(sel, rec, hb[r_idx])
        new_hidden = hidden.clone()
        new_hidden[b] = out.to(hidden.dtype)
        return new_hidden

    # ---------------------------------------------------------------- results
    def _gather(self, name: str, fill: float, dtype: torch.dtype) -> torch.Tensor:
        """One copy per recorded layer from the device, into the record's column order."""
        out = torch.full((self.n_rows, len(self.record.features)), fill, dtype=dtype)
        for layer, (cols, _) in self._rec_slices.items():
            out[:, cols] = self._acc[layer][name].cpu()
        return out

    @property
    def decision(self) -> torch.Tensor:
        """[rows, recorded features] at the decision token (NaN: none seen)."""
        return self._gather("decision", float("nan"), torch.float32)

    @property
    def gen_max(self) -> torch.Tensor:
        """[rows, recorded features] maximum over generated tokens (NaN: none)."""
        return self._gather("gen_max", float("nan"), torch.float32)

    @property
    def gen_sum(self) -> torch.Tensor:
        return self._gather("gen_sum", 0.0, torch.float64)

    @property
    def gen_count(self) -> torch.Tensor:
        return self._gen_count.cpu()

    def gen_mean(self) -> torch.Tensor:
        count = self.gen_count
        cnt = count.clamp(min=1).unsqueeze(1).double()
        out = (self.gen_sum / cnt).float()
        out[count == 0] = float("nan")
        return out
