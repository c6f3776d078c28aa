"""The prompt populations of the patch, screen and confirm stages, one builder for all three.

``patch.prompt_set`` names the population: ``builtin`` (the task's hand-written prompt per
context, ``Task.builtin_prompt``), ``states`` (``patch.n_prompts`` distinct random game states
per context, ``Task.iter_states``) or ``play`` (decision points recorded by ``play``, each
context filled from the split group it belongs to, ``Task.split``). Every population is the
run's task's (``cfg.task``). Each population is split into a screen and a confirm
half (:mod:`featurepath.pipeline.prompt_split`); a stage asks for its half, so the prompts that
chose a candidate never confirm it. ``builtin`` has one prompt per context and cannot be split:
both halves get it, and :func:`prompt_sets` says so (``held_out`` is False).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from featurepath.errors import DataError
from featurepath.pipeline.prompt_split import Half, take_half
from featurepath.rundir import RunDir, atomic_write, parquet_bytes
from featurepath.tasks import DEFAULT_TASK, get_task
from featurepath.tasks.base import Task


@dataclass
class PromptRecord:
    prompt_id: str
    text: str
    parse: dict[str, Any]


def _task(task: Task | None) -> Task:
    return task if task is not None else get_task(DEFAULT_TASK)


def builtin_prompt_sets(tok, protocol: str, task: Task | None = None
                        ) -> dict[str, list[PromptRecord]]:
    """The task's hand-written prompt of each of its contexts (default task: the config's
    default)."""
    t = _task(task)
    out = {}
    for name in t.contexts:
        p = t.builtin_prompt(name, protocol)
        out[name] = [PromptRecord(p.prompt_id, t.render(p, tok), p.parse_kwargs())]
    return out


def state_prompt_sets(tok, protocol: str, n: int, components: str, seed: int,
                      half: Half | None = None, confirm_share: float = 0.0,
                      task: Task | None = None) -> dict[str, list[PromptRecord]]:
    """``n`` distinct game states per context (``Task.iter_states``) whose prompts
    fall in ``half`` (every state for ``half=None``): the population is read in its fixed order
    until ``n`` of the half are found, so with ``confirm_share`` 0 the screen half is exactly
    the first ``n`` states."""
    from featurepath.errors import ConfigError

    t = _task(task)
    out = {}
    for ctx in t.contexts:
        prompts = (t.build_prompt(st, components, protocol) for st in t.iter_states(ctx, seed))
        chosen = take_half(prompts, lambda p: p.prompt_id, half, confirm_share, n)
        if len(chosen) < n:
            raise ConfigError(f"could not draw {n} distinct {ctx} game states"
                              f"{f' in the {half} half' if half else ''}; ask for fewer")
        out[ctx] = [PromptRecord(p.prompt_id, t.render(p, tok), p.parse_kwargs())
                    for p in chosen]
    return out


def play_prompt_sets(run_dir: Path, max_per_set: int = 256, half: Half | None = None,
                     confirm_share: float = 0.0, task: Task | None = None
                     ) -> dict[str, list[PromptRecord]]:
    """Decision points recorded by ``play``: context ``split.context_b`` from the games of
    the task's split group B, ``split.context_a`` from group A (``Task.split``).
    Deterministic order (by prompt id). The split is by game (its decision points are not
    independent): only games of ``half``."""
    t = _task(task)
    split = t.split
    path = RunDir(run_dir).decisions
    if not path.exists():
        raise DataError(f"prompt_set 'play' needs {path}; run `featurepath play` first")
    df = games_of_half(pd.read_parquet(path), half, confirm_share)
    out: dict[str, list[PromptRecord]] = {}
    groups = df["end_reason"].map(split.group)
    for ctx, group, label in ((split.context_b, "b", split.label_b),
                              (split.context_a, "a", split.label_a)):
        sub = df[groups == group]
        if "retries" in sub:  # the plain prompt, not a retry carrying the format reminder
            sub = sub[sub["retries"] == 0]
        sub = sub.drop_duplicates("prompt_id").sort_values("prompt_id")
        recs = []
        for row in sub.head(max_per_set).itertuples():
            parse = {"bet_type": row.bet_type, "protocol": getattr(row, "protocol", "completion"),
                     "balance": float(row.balance_before)}
            recs.append(PromptRecord(str(row.prompt_id), str(row.prompt), parse))
        if not recs:
            where = f" in the {half} half of the games" if half else ""
            raise DataError(f"play recorded no decision points from games that ended with "
                            f"'{label}'{where}; play more games or use prompt_set: states")
        out[ctx] = recs
    return out


def games_of_half(decisions: pd.DataFrame, half: Half | None, confirm_share: float
                  ) -> pd.DataFrame:
    """The decision points of the games in ``half`` (all for ``half=None``), keyed by game."""
    if half is None:
        return decisions
    games = take_half(decisions["game_id"].astype(str).unique(), str, half, confirm_share)
    return decisions[decisions["game_id"].astype(str).isin(set(games))]


def prompt_sets(cfg, run_dir: Path, tok, half: Half | None
                ) -> tuple[dict[str, list[PromptRecord]], bool]:
    """``(prompt sets by context, held_out)`` of the config's ``patch.prompt_set`` for one half
    of the split (``analysis.confirm_share``); ``held_out`` is False for ``builtin``, whose one
    prompt per context serves both halves."""
    pc, share, task = cfg.patch, cfg.analysis.confirm_share, get_task(cfg.task)
    if pc.prompt_set == "builtin":
        return builtin_prompt_sets(tok, pc.protocol, task), False
    if pc.prompt_set == "play":
        return play_prompt_sets(Path(run_dir), half=half, confirm_share=share, task=task), True
    components = pc.components if pc.components is not None else task.state_components
    return state_prompt_sets(tok, pc.protocol, pc.n_prompts, components, cfg.seed,
                             half, share, task), True


def record_split(run_dir: Path, stage: str, sets: dict[str, list[PromptRecord]],
                 half: Half | None, held_out: bool) -> Path:
    """``RUN/splits/<stage>.parquet``: which prompts a stage used and from which half, so the
    run directory shows that nothing used to choose a candidate confirmed it."""
    rows = [{"stage": stage, "context": ctx, "prompt_id": r.prompt_id,
             "half": half or "all", "held_out": held_out}
            for ctx, recs in sets.items() for r in recs]
    path = RunDir(run_dir).split(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, parquet_bytes(pd.DataFrame(rows)))
