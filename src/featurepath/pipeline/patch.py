"""The patch + cache stage: for every feature and condition, N trials with the feature clamped,
recording every recorded feature at every SAE layer in the same forward hooks.

Work is a fixed list of units (one forward batch each, mixing features and conditions), planned
once and stored, so a resumed or sharded run computes each unit with the same batch
composition and seeds as an uninterrupted one: identical results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurepath.config import (
    ConditionSpec,
    PatchSection,
    RunConfig,
    feature_key,
    load_config,
    parse_feature_key,
    save_config,
)
from featurepath.engine.generate import generate, replay
from featurepath.engine.hooks import Intervention, RecordSpec
from featurepath.errors import ConfigError
from featurepath.pipeline.patch_checks import (
    amplified_contexts,
    check_plan_size,
    decision_activations_by_context,
    validate_features,
    warn_inactive_scale_clamps,
)
from featurepath.pipeline.prompt_sets import PromptRecord, record_split
from featurepath.pipeline.prompt_sets import prompt_sets as screen_prompt_sets
from featurepath.pipeline.seeds import derive_seed
from featurepath.pipeline.store import Plan, RunStore, Unit
from featurepath.rundir import TRIAL_COLUMNS, PlanItem, RunDir
from featurepath.tasks import get_task


# ---------------------------------------------------------------- planning
def _row_protos(features: list[str], conditions: list[ConditionSpec], method: str,
                null_directions: int = 0, null_conditions: list[str] | None = None,
                direction_layers: list[int] | None = None,
                direction_nulls: bool = False) -> list[PlanItem]:
    """One prototype item per (arm, condition), in plan order; each stands for ``trials``
    rows. Small (features x conditions x arms), so counting rows costs nothing."""
    protos: list[PlanItem] = []
    layers = sorted({parse_feature_key(f)[0] for f in features})
    patched = [c for c in conditions if c.patch != "none"]
    for cond in conditions:
        if cond.patch == "none":
            if method == "delta":
                protos.append(PlanItem("baseline", cond.name, 0, 0))
            for lay in layers if method != "delta" else ():
                protos.append(PlanItem("layer_baseline", cond.name, 0, 0, layer=lay))
    for f in features:
        layer, fid = parse_feature_key(f)
        for cond in patched:
            protos.append(PlanItem("feature", cond.name, 0, 0, layer=layer, feature_id=fid))
    with_null = [c for c in patched if not null_conditions or c.name in null_conditions]
    for f in features:
        layer, fid = parse_feature_key(f)
        for cond in with_null:
            for k in range(null_directions):
                protos.append(PlanItem("null", cond.name, 0, 0, layer, fid, k))
    for lay in direction_layers or ():
        for cond in patched:
            if cond.patch == "scale":
                protos.append(PlanItem("direction", cond.name, 0, 0, layer=lay))
    for lay in direction_layers or () if direction_nulls else ():
        for cond in with_null:
            if cond.patch == "scale":
                for k in range(null_directions):
                    protos.append(PlanItem("null", cond.name, 0, 0, lay, -1, k))
    return protos


def count_rows(features: list[str], conditions: list[ConditionSpec], trials: int, method: str,
               null_directions: int = 0, null_conditions: list[str] | None = None,
               direction_layers: list[int] | None = None, direction_nulls: bool = False) -> int:
    """Rows :func:`plan_units` will plan, without planning them (nothing large allocated)."""
    return trials * len(_row_protos(features, conditions, method, null_directions,
                                    null_conditions, direction_layers, direction_nulls))


def plan_shape(cfg: RunConfig, features: list[str]) -> dict[str, Any]:
    """The keyword arguments of :func:`count_rows` / :func:`plan_units` that a config implies
    for ``features`` (every condition including the dose ladder, the null arms, the layers of
    the behavioural direction) — one source, so ``featurepath estimate`` counts exactly the
    rows the patch stage plans."""
    pc = cfg.patch
    return {"conditions": pc.all_conditions(), "trials": pc.trials, "method": pc.method,
            "null_directions": pc.null_directions, "null_conditions": pc.null_conditions,
            "direction_layers": sorted({parse_feature_key(f)[0] for f in features})
            if pc.behavioural_direction or pc.direction_from else [],
            "direction_nulls": pc.direction_nulls}


def plan_units(features: list[str], conditions: list[ConditionSpec], trials: int,
               batch_size: int, method: str, null_directions: int = 0,
               null_conditions: list[str] | None = None,
               direction_layers: list[int] | None = None,
               direction_nulls: bool = False) -> list[Unit]:
    """Rows in a fixed order, cut into units of ``batch_size`` rows: baselines (once per
    context, or once per layer and context for ``reconstruct``), every feature × patched
    condition, then the controls — ``null_directions`` null arms per feature × condition in
    ``null_conditions`` (default: every patched condition), and the behavioural direction of
    each of ``direction_layers`` under every ``scale`` condition, and (``direction_nulls``) its
    null arms under the null conditions that clamp by scale."""
    rows = [(proto, t) for proto in _row_protos(features, conditions, method, null_directions,
                                                null_conditions, direction_layers,
                                                direction_nulls)
            for t in range(trials)]
    units = []
    for u, start in enumerate(range(0, len(rows), batch_size)):
        items: list[PlanItem] = []
        for proto, t in rows[start:start + batch_size]:
            last = items[-1] if items else None
            if last and last.key == proto.key and last.condition == proto.condition and \
                    last.trial_start + last.n == t:
                last.n += 1
            else:
                items.append(PlanItem(proto.kind, proto.condition, t, 1, proto.layer,
                                      proto.feature_id, proto.null_index))
        units.append(Unit(u, items, u * batch_size))
    return units


def _relevant(cfg: RunConfig) -> dict[str, Any]:
    """The settings that change a patch run's results (what a resume must keep)."""
    out = {"model": cfg.model, "saes": cfg.saes, "dtype": cfg.dtype, "seed": cfg.seed,
           "patch": cfg.patch.model_dump(mode="json")}
    if cfg.patch.prompt_set != "builtin":  # which prompts the screen half holds
        out["confirm_share"] = cfg.analysis.confirm_share
    out["patch"].pop("candidates", None)  # chooses the features, which the plan stores
    if out["patch"].get("components") is None:  # the task's, as plans before None spelled it
        out["patch"]["components"] = get_task(cfg.task).state_components
    for key in NEWER_PATCH_KEYS:  # only when set, so plans made before them still resume
        if out["patch"].get(key) == PatchSection.model_fields[key].default:
            out["patch"].pop(key, None)
    if cfg.llamascope != type(cfg.llamascope)():  # only when set, so older plans still resume
        out["llamascope"] = cfg.llamascope.model_dump(mode="json")
    if cfg.sae_dtype is not None:  # likewise
        out["sae_dtype"] = cfg.sae_dtype
    return out


#: patch keys added after plans were first stored: left out of the digest at their default
NEWER_PATCH_KEYS = ("direction_from", "transfer_features")


def _digest(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(_relevant(cfg), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- features
def measure_patch_values(features: list[str], feats: list[str],
                         acts: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Fallback patch values when discover has not run: each of ``features``' mean activation
    at the decision token over the safe and over the risky prompt set (``acts`` from
    :func:`~featurepath.pipeline.patch_checks.decision_activations_by_context`, columns in
    ``feats`` order)."""
    cols = [feats.index(f) for f in features]
    return {f: {ctx: float(acts[ctx][:, j].mean()) for ctx in ("safe", "risky")}
            for f, j in zip(features, cols, strict=True)}


# ---------------------------------------------------------------- running
@dataclass
class PatchJob:
    """Everything a worker needs to run any unit of a run (picklable, for Ray)."""

    run_dir: str
    cfg: RunConfig
    plan: Plan


def prepare(run_dir: str | Path, cfg: RunConfig, model, tok, saes, resume: bool = False,
            features: list[str] | None = None,
            discover_features: list[str] | None = None) -> PatchJob:
    """Plan the run (or check the stored plan on resume) and create the store.

    ``features`` are the user's; ``discover_features`` replace discover's top candidates in
    ``patch.candidates`` (see :func:`featurepath.pipeline.candidates.choose_candidates`).

    Everything that can be refused is checked before the first write, under the planning lock
    (see :meth:`RunStore.planning_lock`): a process that had to wait for another planner joins
    that plan as a resume.
    """
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    store = RunStore(root)
    if cfg.patch.batch_size == "auto":  # the planned size on resume, else the stage's rule
        from featurepath.pipeline.memory import choose_batch_size

        size = load_config(RunDir(root).patch_config).patch.batch_size if store.exists() \
            else choose_batch_size(model, cfg, None)[0]
        cfg = cfg.model_copy(deep=True)
        cfg.patch.batch_size = size
    with store.planning_lock() as waited:
        if store.exists():
            return _resume_job(root, store, cfg, resume or waited)
        return _plan(root, store, cfg, model, tok, saes, features, discover_features)


def _resume_job(root: Path, store: RunStore, cfg: RunConfig, resume: bool) -> PatchJob:
    plan = store.plan()
    stored = load_config(RunDir(root).patch_config)
    if plan.config_digest != _digest(cfg):
        from featurepath.config import diff_configs

        diffs = diff_configs(_relevant(stored), _relevant(cfg)) or [
            "the same settings, digested by another featurepath version"]
        raise ConfigError(f"{root} was planned with another config ({'; '.join(diffs[:4])}); "
                          "use the same config to resume, or a new run directory")
    if not resume:
        raise ConfigError(f"{root} already holds a patch run; pass --resume to continue it "
                          "or choose a new run directory")
    return PatchJob(str(root), cfg, plan)


def _plan(root: Path, store: RunStore, cfg: RunConfig, model, tok, saes,
          features: list[str] | None, discover_features: list[str] | None = None) -> PatchJob:
    from featurepath.faults import pause_point

    pause_point("patch-planning")  # tests kill here: lock held, nothing written yet
    rd = RunDir(root)
    pc = cfg.patch
    from featurepath.pipeline.candidates import choose_candidates, discover_candidates

    chosen = choose_candidates(root, cfg, features, discover_features)
    feats = chosen.features
    cands = discover_candidates(root, cfg.discover.max_candidates)
    record = list(pc.record) or sorted(
        set(feats) | ({feature_key(int(r.layer), int(r.feature_id)) for r in cands.itertuples()}
                      if cands is not None else set()), key=lambda k: parse_feature_key(k))
    validate_features(feats, record, saes)
    shape = plan_shape(cfg, feats)
    conditions, direction_layers = shape["conditions"], shape["direction_layers"]
    n_rows = count_rows(feats, **shape)
    batch = check_plan_size(root, cfg, n_rows, len(record))
    contexts = {c.context for c in conditions}
    # the first patch round sees the screen half only; `featurepath confirm` the other
    prompt_sets, held_out = screen_prompt_sets(cfg, root, tok, "screen")
    missing = contexts - set(prompt_sets)
    if missing:
        raise ConfigError(f"conditions use unknown contexts {sorted(missing)}; known: "
                          f"{sorted(prompt_sets)}")
    from featurepath.sae.check import warn_if_l0_off

    first = next(iter(prompt_sets.values()), [])
    warn_if_l0_off(model, tok, saes, [r.text for r in first[:pc.batch_size]])
    values: dict[str, dict[str, float]] = {}
    needs_values = any(c.patch in ("safe", "risky") for c in conditions)
    by_key = {feature_key(int(r.layer), int(r.feature_id)): r for r in cands.itertuples()} \
        if needs_values and cands is not None and not cands.empty else {}
    unknown = [f for f in feats if f not in by_key] if needs_values else []
    # one replay per context serves both the measured values and the zero-clamp warning
    acts = decision_activations_by_context(
        model, tok, saes, feats, {k: [r.text for r in v] for k, v in prompt_sets.items()},
        amplified_contexts(conditions) | ({"safe", "risky"} if unknown else set()), batch)
    if needs_values:
        measured = measure_patch_values(unknown, feats, acts) if unknown else {}
        for f in feats:
            if f in by_key:
                values[f] = {"safe": float(by_key[f].mean_safe),
                             "risky": float(by_key[f].mean_risky), "source": "discover"}
            else:
                values[f] = {**measured[f], "source": "measured on the safe/risky prompts"}
    warn_inactive_scale_clamps(feats, conditions, acts)
    if direction_layers:
        from featurepath.pipeline.controls import behavioural_directions, save_directions
        from featurepath.pipeline.transfer import record_source, transferred_directions

        source = None
        if pc.direction_from:  # cross-task transfer: another run's direction, recorded
            directions, source = transferred_directions(pc.direction_from, cfg, model, tok,
                                                        direction_layers, root)
        else:
            directions = behavioural_directions(model, tok, root, direction_layers,
                                                task=get_task(cfg.task))
        rd.patch.mkdir(parents=True, exist_ok=True)
        save_directions(rd.directions, directions)
        if source is not None:
            record_source(rd, source)
    units = plan_units(feats, batch_size=batch, **shape)
    plan = Plan(units, batch, record, _digest(cfg), {
        "features": feats, "values": values, "sources": chosen.sources,
        "prompts": {k: [vars(r) for r in v] for k, v in prompt_sets.items()},
    })
    rd.patch.mkdir(parents=True, exist_ok=True)
    record_split(root, "patch", prompt_sets, "screen" if held_out else None, held_out)
    save_config(cfg, rd.patch_config)
    rec = [parse_feature_key(f) for f in record]
    store.create(plan, [a for a, _ in rec], [b for _, b in rec], pc.store_dtype,
                 carry=carry_matrix(saes, feats, rec))
    return PatchJob(str(root), cfg, plan)


def carry_matrix(saes, features: list[str], rec: list[tuple[int, int]]):
    """``[len(features), len(rec)]``: ``W_dec[S] · W_enc[:, T]`` for each patched S and recorded
    T above it (0 elsewhere) — what pathways needs to tell carry from mechanism, computed while
    the SAEs are loaded."""
    import numpy as np

    out = np.zeros((len(features), len(rec)), dtype=np.float32)
    for i, f in enumerate(features):
        ls, fs = parse_feature_key(f)
        d = saes[ls].W_dec[fs].float()
        for j, (lt, ft) in enumerate(rec):
            if lt > ls:
                out[i, j] = float(d @ saes[lt].W_enc[:, ft].float())
    return out


def _trial_seed(cfg: RunConfig, item: PlanItem, cond: ConditionSpec, t: int) -> int:
    """Seed-matched (default): trial t of a context draws the same numbers in every arm, so a
    patched trial and its baseline differ only by the patch. Else (0.1): per feature and
    condition."""
    if cfg.patch.seed_matched:
        return derive_seed(cfg.seed, "trial", cond.context, t)
    return derive_seed(cfg.seed, item.key, cond.name, t)


def _control_directions(job: PatchJob, unit: Unit, saes) -> dict[tuple[str, int, int], Any]:
    """The unit vectors its null and direction rows need, keyed ``(kind, layer, k)``."""
    from featurepath.pipeline.controls import load_directions, null_direction

    pc, out = job.cfg.patch, {}
    behavioural = None
    for it in unit.items:
        if it.direction_null and ("direction", it.layer, 0) not in out:
            behavioural = behavioural or load_directions(RunDir(job.run_dir).directions)
            out[("direction", it.layer, 0)] = behavioural[it.layer]
        if it.kind == "null" and ("null", it.layer, it.null_index) not in out:
            sae = saes[it.layer]
            out[("null", it.layer, it.null_index)] = null_direction(
                job.cfg.seed, it.layer, it.null_index, sae.d_model, pc.null_span, sae.W_dec)
        elif it.kind == "direction" and ("direction", it.layer, 0) not in out:
            behavioural = behavioural or load_directions(RunDir(job.run_dir).directions)
            out[("direction", it.layer, 0)] = behavioural[it.layer]
    return out


def _intervention(item: PlanItem, cond: ConditionSpec, values: dict, pc,
                  dirs: dict) -> Intervention | None:
    """What one row of ``item`` under ``cond`` does (None: nothing)."""
    kw = dict(method=pc.method, positions=pc.positions)
    if item.kind == "layer_baseline":  # no-clamp reconstruction at this layer
        return Intervention(item.layer, -1, method="reconstruct", positions=pc.positions)
    if item.kind == "baseline":
        return None
    if cond.patch in ("safe", "risky"):
        kw["value"] = values[item.feature][cond.patch]
    elif cond.patch == "value":
        kw["value"] = float(cond.value)
    else:
        kw["scale"] = float(cond.scale)
    if item.direction_null:
        return Intervention(item.layer, -1, readout="projection",
                            direction=dirs[("direction", item.layer, 0)],
                            write=dirs[("null", item.layer, item.null_index)], **kw)
    if item.kind == "null":
        return Intervention(item.layer, item.feature_id, direction=dirs[
            ("null", item.layer, item.null_index)], **kw)
    if item.kind == "direction":
        return Intervention(item.layer, -1, readout="projection",
                            direction=dirs[("direction", item.layer, 0)], **kw)
    return Intervention(item.layer, item.feature_id, **kw)


def _unit_rows(job: PatchJob, unit: Unit, saes) -> list[dict[str, Any]]:
    pc = job.cfg.patch
    conds = {c.name: c for c in pc.all_conditions()}
    dirs = _control_directions(job, unit, saes)
    prompts = {k: [PromptRecord(**r) for r in v] for k, v in job.plan.extra["prompts"].items()}
    values = job.plan.extra["values"]
    sources = job.plan.extra.get("sources", {})
    rows = []
    r = unit.row_start
    for it in unit.items:
        cond = conds[it.condition]
        recs = prompts[cond.context]
        for t in range(it.trial_start, it.trial_start + it.n):
            pr = recs[t % len(recs)]
            iv = _intervention(it, cond, values, pc, dirs)
            value = iv.value if iv is not None and iv.value is not None else float("nan")
            scale = iv.scale if iv is not None and iv.scale is not None else float("nan")
            rows.append(dict(
                unit=unit.index, row=r, feature=it.feature, layer=it.layer,
                feature_id=it.feature_id, condition=cond.name, context=cond.context,
                patch=cond.patch, value=value, scale=scale, method=pc.method, trial=t,
                seed=_trial_seed(job.cfg, it, cond, t), arm=it.arm, null_index=it.null_index,
                prompt_id=pr.prompt_id, source=sources.get(it.feature, ""), _text=pr.text,
                _parse=pr.parse, _iv=iv))
            r += 1
    return rows


def run_unit(job: PatchJob, unit: Unit, model, tok, saes) -> tuple[pd.DataFrame, dict]:
    """Compute one unit (no writing): the trials table and the recorded arrays. The run's task
    parses each answer, reads P(exit) at the decision token and constrains small models'
    answers."""
    task = get_task(job.cfg.task)
    pc = job.cfg.patch
    rows = _unit_rows(job, unit, saes)
    spec = RecordSpec([parse_feature_key(f) for f in job.plan.record])
    readout = task.readout(tok)
    prompts = [r["_text"] for r in rows]
    ivs = [r["_iv"] for r in rows]
    if pc.mode == "sample":
        s = pc.sampling
        cons = task.answer_constraints(tok, [r["_parse"] for r in rows], s.answer)
        res = generate(model, tok, prompts, [r["seed"] for r in rows],
                       s.engine(), saes, ivs, spec, readout,
                       constraints=cons)
    else:
        res = replay(model, tok, prompts, None, saes, ivs, spec, readout)
    out = []
    for i, r in enumerate(rows):
        text = res.texts[i]
        if pc.mode == "sample":
            d = task.parse(text, **r["_parse"])
            action, amount, valid = d.action, d.amount, d.valid
        else:
            action, amount, valid = None, None, False
        rec = {k: v for k, v in r.items() if not k.startswith("_")}
        rec.update(response=text, action=action,
                   amount=float("nan") if amount is None else float(amount),
                   valid=bool(valid), readout=float(res.readout[i]),
                   n_new_tokens=int(res.n_new_tokens[i]))
        out.append(rec)
    df = pd.DataFrame(out, columns=TRIAL_COLUMNS)
    arrays = {"decision": res.decision.numpy(), "gen_mean": res.gen_mean.numpy(),
              "gen_max": res.gen_max.numpy()}
    return df, arrays


def describe(job: PatchJob) -> str:
    """One line: what the plan holds (arms, trials, units, recorded features)."""
    p = job.plan
    n_rows = sum(u.n_rows for u in p.units)
    by_kind: dict[str, int] = {}
    for u in p.units:
        for it in u.items:
            kind = "direction_null" if it.direction_null else it.kind
            by_kind[kind] = by_kind.get(kind, 0) + it.n
    controls = ""
    if by_kind.get("null") or by_kind.get("direction"):
        controls = (f" ({by_kind.get('null', 0)} in {job.cfg.patch.null_directions} null "
                    f"directions, {by_kind.get('direction', 0)} along the behavioural "
                    f"direction" + (f" and {by_kind['direction_null']} in its null directions"
                                    if by_kind.get("direction_null") else "") + ")")
    src: dict[str, int] = {}
    for f in p.extra["features"]:
        key = p.extra.get("sources", {}).get(f, "")
        src[key] = src.get(key, 0) + 1
    from_ = " (" + ", ".join(f"{n} {k or 'other'}" for k, n in src.items()) + ")" \
        if set(src) - {"", "user"} else ""
    return (f"{len(p.extra['features'])} features{from_} x "
            f"{len(job.cfg.patch.all_conditions())} "
            f"conditions -> {n_rows} trials{controls} in {len(p.units)} units of <= "
            f"{p.batch_size}; recording {len(p.record)} features")


__all__ = ["prepare", "run_unit", "plan_units", "plan_shape", "PatchJob", "describe",
           "count_rows"]
