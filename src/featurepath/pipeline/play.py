"""Batched play of the run's task (``cfg.task``): many games at once, one round of every live game per forward batch.

Layout of a run directory's play stage::

    RUN/config.yaml                     resolved config (written if absent)
    RUN/play/config.yaml                the config this play stage ran with (checked on --resume)
    RUN/play/parts/games-0003.parquet   decision points of work unit 3 (its games all ended)
    RUN/play/decisions.parquet          every decision point, all units in order
    RUN/play/metrics.parquet / .csv     behavioural metrics per (condition, bet_type)

Why fixed work units: the games (every condition x bet type x game index, in config order) are cut
into units of ``batch_size`` games, and a unit is played to its end as one shrinking batch. A
game's seeds depend only on what the game *is* (run seed, condition, bet type, index), and its
batch-mates depend only on the unit, so a unit replays identically whether the run was interrupted
or not -- even where batched matmuls are not bit-identical to unbatched ones. A unit's rows are
committed in one atomic rename once all its games ended; a killed run redoes only the unit(s) in
flight, and the final ``decisions.parquet`` is rebuilt from the parts, equal to an uninterrupted
run's.

Columns of ``decisions.parquet`` (one row per decision point, see ``DECISION_COLUMNS``): ``prompt``
is the exact rendered text that produced ``response`` (with the reminder on a retry), while
``prompt_id`` identifies the game state's plain prompt, so equal states pair across games and
stages; ``readout`` (P(exit), the task's exit option) is read at that attempt's decision token (NaN for the chat protocol, whose
answer does not start at an option token); ``seed`` is the game's seed and ``sample_seed`` the
seed of the kept attempt (derived from the game seed, round and retry number); ``end_reason``
(the task's endings, or invalid) is on every row of the game; ``unit`` is its work unit. The task
adds its own columns (``Task.decision_columns``, e.g. the balance before and after).

Why invalid answers end the game: an answer the strict parser cannot read is resampled up to
``max_retries`` times with a reminder of the answer format before ``Choice:`` (the study re-asked
in the same way, ``Task.retry_prompt``). If it is still unreadable, the decision point is kept with ``valid = False`` and
the game ends with ``end_reason = 'invalid'``. Skipping the round instead would play on with
decisions the model never made, and counting it as an exit would inflate the exit rate (the
parser never turns an invalid answer into the exit, for the same reason). Invalid endings are reported as
their own share of games (``invalid_rate`` counts invalid decision points).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from featurepath.config import (
    RunConfig,
    config_from_dict,
    load_config,
    record_config,
    resolve_config,
    save_config,
)
from featurepath.engine.generate import GenResult, Readout, generate
from featurepath.errors import ConfigError, DataError
from featurepath.pipeline.runtime import Runtime, ensure_runtime
from featurepath.pipeline.seeds import derive_seed
from featurepath.rundir import RunDir, decision_columns, write_table
from featurepath.tasks import get_task
from featurepath.tasks.base import Prompt, Task

__all__ = ["GameSpec", "StepInfo", "game_configs", "plan_games", "run_play",
           "summary_table", "validate_play"]

INVALID = "invalid"
_PART = "games-{:04d}.parquet"

GenerateFn = Callable[..., GenResult]


@dataclass(frozen=True)
class GameSpec:
    """What a game *is*; its seed is a stable hash of it, so it replays anywhere."""

    game_id: str
    condition: str
    bet_type: str
    index: int
    seed: int


@dataclass(frozen=True)
class StepInfo:
    """Passed to ``after_step`` after every batched ``generate`` call (for progress hooks and
    for tests that simulate a kill)."""

    unit: int
    step: int
    n_rows: int
    calls: int


@dataclass
class _Live:
    spec: GameSpec
    state: Any
    retries: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------- config and plan
def task_rules(cfg: RunConfig) -> Any:
    """The task's rules for this run: its ``config_class`` from ``play.rules`` and
    ``play.max_rounds``; one-line :class:`ConfigError` on a bad key or value."""
    from pydantic import ValidationError

    task = get_task(cfg.task)
    fields = task.config_class.model_fields
    rules = dict(cfg.play.rules)
    if "max_rounds" in fields:
        rules["max_rounds"] = cfg.play.max_rounds
    try:
        return task.config_class(**rules)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].replace("Extra inputs are not permitted", "unknown key")
        raise ConfigError(f"play.rules.{loc} ({task.name}): {msg}; keys: "
                          f"{', '.join(sorted(fields))}") from None


def game_configs(cfg: RunConfig) -> dict[str, Any]:
    """The task's rules per configured bet type, each checked by starting a game under it (the
    rules check the bet range against the balance), so a bad range fails here, before any
    model is loaded."""
    task = get_task(cfg.task)
    rules = task_rules(cfg)
    out = {}
    for bt in cfg.play.bet_types:
        try:
            task.new_game(rules, bt, 0)
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"play ({bt} betting): {exc}") from None
        out[bt] = rules
    return out


#: Memory per planned game (its spec, and at least one decision row with its prompt text in the
#: final table) and disk per game (a compressed decision row), rounded up.
_GAME_MEMORY_BYTES = 2000
_GAME_DISK_BYTES = 500


def validate_play(cfg: RunConfig, run_dir: str | Path = ".") -> RunConfig:
    """Check everything play needs that pydantic alone cannot (component letters, duplicate
    conditions, bet range vs balance, a game count this machine can plan); one-line
    :class:`ConfigError` on failure."""
    from featurepath.pipeline.budget import check_fits

    p = cfg.play
    if not p.conditions:
        raise ConfigError("play.conditions is empty; name at least one, e.g. BASE or GMHWP")
    if not p.bet_types:
        raise ConfigError("play.bet_types is empty; use fixed, variable or both")
    seen: dict[str, str] = {}
    task = get_task(cfg.task)
    for c in p.conditions:
        name = task.condition_name(c)
        if name in seen:
            raise ConfigError(f"play.conditions names {name} twice ({seen[name]!r} and {c!r})")
        seen[name] = c
    if len(set(p.bet_types)) != len(p.bet_types):
        raise ConfigError(f"play.bet_types repeats a bet type: {p.bet_types}")
    game_configs(cfg)
    n_games = len(p.conditions) * len(p.bet_types) * p.games_per_condition
    check_fits(f"play ({n_games:,} games)", n_games * _GAME_MEMORY_BYTES,
               n_games * _GAME_DISK_BYTES, run_dir, "lower play.games_per_condition (--games)")
    return cfg


def plan_games(cfg: RunConfig) -> list[GameSpec]:
    """Every game of the run, in config order (condition, bet type, index)."""
    out = []
    task = get_task(cfg.task)
    for c in cfg.play.conditions:
        cond = task.condition_name(c)
        for bt in cfg.play.bet_types:
            for i in range(cfg.play.games_per_condition):
                out.append(GameSpec(f"{cond}-{bt}-{i:04d}", cond, bt, i,
                                    derive_seed(cfg.seed, "play", cond, bt, i)))
    return out


def _units(games: list[GameSpec], size: int) -> list[list[GameSpec]]:
    return [games[i:i + size] for i in range(0, len(games), size)]


# ---------------------------------------------------------------------------- one unit
def _play_unit(model: Any, tok: Any, cfg: RunConfig, task: Task, unit: int,
               specs: Sequence[GameSpec], rules: dict[str, Any], readout: Readout | None,
               generate_fn: GenerateFn, calls: list[int],
               after_step: Callable[[StepInfo], None] | None,
               on_game_end: Callable[[_Live], None]) -> pd.DataFrame:
    """Play the unit's games to their ends, one batched ``generate`` call per step: every live
    game contributes its next decision (or its retry of an unreadable one)."""
    p = cfg.play
    samp = p.sampling.engine()
    live = [_Live(s, task.new_game(rules[s.bet_type], s.bet_type, s.seed)) for s in specs]
    done: list[_Live] = []
    step = 0
    while live:
        base: list[Prompt] = [task.build_prompt(g.state, g.spec.condition, p.protocol)
                              for g in live]
        sent = [task.retry_prompt(b) if g.retries else b for g, b in zip(live, base, strict=True)]
        texts = [task.render(s, tok) for s in sent]
        seeds = [derive_seed(g.spec.seed, "sample", g.state.round, g.retries) for g in live]
        cons = task.answer_constraints(tok, [b.parse_kwargs() for b in base], p.sampling.answer)
        res = generate_fn(model, tok, texts, seeds, samp, readout=readout,
                          constraints=cons)
        calls[0] += 1
        still: list[_Live] = []
        for i, g in enumerate(live):
            b, response = base[i], res.texts[i]
            dec = task.parse(response, **b.parse_kwargs())
            if not dec.valid and g.retries < p.max_retries:
                g.retries += 1
                still.append(g)
                continue
            row = dict(game_id=g.spec.game_id, condition=g.spec.condition,
                       bet_type=g.spec.bet_type, game_index=g.spec.index,
                       round=g.state.round, prompt_id=b.prompt_id, prompt=texts[i],
                       response=response, action=dec.action, amount=dec.amount, valid=dec.valid,
                       retries=g.retries, reason=dec.reason, readout=float(res.readout[i]),
                       end_reason=None, seed=g.spec.seed, sample_seed=seeds[i], unit=unit,
                       **task.before_fields(g.state), **task.after_fields(g.state, None))
            g.retries = 0
            if dec.valid:
                try:
                    played = g.state.step(dec)
                except ValueError as exc:  # parser and rules disagree: keep it visible
                    row.update(valid=False, reason=f"rules refused: {exc}")
                    played = None
                    g.state.ended, g.state.end_reason = True, INVALID  # type: ignore[assignment]
                if played is not None:
                    row.update(task.after_fields(g.state, played))
            else:
                g.state.ended, g.state.end_reason = True, INVALID  # type: ignore[assignment]
            g.rows.append(row)
            if g.state.ended:
                for r in g.rows:
                    r["end_reason"] = g.state.end_reason
                done.append(g)
                on_game_end(g)
            else:
                still.append(g)
        live = still
        step += 1
        if after_step is not None:
            after_step(StepInfo(unit, step, len(texts), calls[0]))
    order = {s.game_id: k for k, s in enumerate(specs)}
    rows = [r for g in sorted(done, key=lambda g: order[g.spec.game_id]) for r in g.rows]
    return _frame(rows, task)


_DTYPES = {"game_index": "int64", "round": "int64", "amount": "float64", "valid": "bool",
           "retries": "int64", "readout": "float64", "seed": "int64", "sample_seed": "int64",
           "unit": "int64"}


def _frame(rows: list[dict[str, Any]], task: Task) -> pd.DataFrame:
    """Fixed column order and dtypes, so every part (and a resumed run) reads back the same."""
    df = pd.DataFrame(rows, columns=decision_columns(task))
    extra = {c: t for c, t in task.decision_columns.items() if t != "object"}
    df = df.astype({**_DTYPES, **extra})
    return _nulls(df, task)


def _nulls(df: pd.DataFrame, task: Task) -> pd.DataFrame:
    """Missing text values (action, end reason, the task's object columns) as ``None`` (a
    part whose column is all-missing reads back as a null-typed column, which pandas turns
    into NaN)."""
    text = [c for c, t in task.decision_columns.items() if t == "object"]
    for col in ("action", "end_reason", *text):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df


# ---------------------------------------------------------------------------- storage
def _read_part(path: Path, specs: Sequence[GameSpec], task: Task) -> pd.DataFrame | None:
    """A committed unit, or ``None`` if it is unreadable or holds other games (then redo it)."""
    try:
        df = pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - any unreadable part is simply redone
        return None
    if list(df.columns) != decision_columns(task):
        return None
    if list(dict.fromkeys(df["game_id"])) != [s.game_id for s in specs]:
        return None
    return df


_RESUME_KEYS = ("task", "seed", "model", "play")


def _check_play_dir(cfg: RunConfig, play_dir: Path, resume: bool) -> None:
    has_results = play_dir.exists() and any(play_dir.iterdir())
    if has_results and not resume:
        raise ConfigError(f"{play_dir} already holds play results; pass --resume to finish them "
                          "or use a new run directory")
    saved = play_dir / "config.yaml"
    if resume and saved.exists():
        old = load_config(saved).model_dump(mode="json")
        new = cfg.model_dump(mode="json")
        from featurepath.config import diff_configs

        diff = diff_configs({k: old[k] for k in _RESUME_KEYS}, {k: new[k] for k in _RESUME_KEYS})
        if diff:
            raise ConfigError(f"cannot resume {play_dir}: the config changed ({'; '.join(diff[:3])})"
                              "; rerun with the original settings or use a new run directory")


# ---------------------------------------------------------------------------- the stage
def run_play(run_dir: str | Path, cfg: RunConfig | None = None, *, runtime: Runtime | None = None,
             resume: bool = False, progress: bool = True, generate_fn: GenerateFn = generate,
             after_step: Callable[[StepInfo], None] | None = None) -> pd.DataFrame:
    """Play every configured game and return the decision table (also in
    ``RUN/play/decisions.parquet``), with metrics in ``RUN/play/metrics.{parquet,csv}``.

    ``cfg`` None resolves the run's config as the command line does; ``runtime`` (a loaded
    :class:`~featurepath.pipeline.runtime.Runtime`; play needs no SAEs) is loaded from the
    config when not given, after the config and the play directory were checked.
    ``resume=True`` keeps committed units and plays only the rest; without it an existing
    non-empty play directory is refused. ``generate_fn`` (default: the engine's ``generate``)
    and ``after_step`` exist for benchmarks and tests (counting calls, simulating a kill).
    """
    cfg = resolve_config(run_dir) if cfg is None else cfg
    cfg = config_from_dict(cfg.model_dump(mode="json"))  # a private, validated copy
    run_dir = Path(run_dir)
    validate_play(cfg, run_dir)
    _check_play_dir(cfg, RunDir(run_dir).play, resume)
    rt = ensure_runtime(runtime, cfg, progress=progress, needs_saes=False)
    model, tok = rt.model, rt.tokenizer
    rules = game_configs(cfg)
    task = get_task(cfg.task)
    rd = RunDir(run_dir)
    parts_dir = rd.play_parts
    parts_dir.mkdir(parents=True, exist_ok=True)
    for stale in parts_dir.glob(".*.tmp*"):
        stale.unlink(missing_ok=True)
    save_config(cfg, rd.play_config)

    # P(exit) is NaN without option tokens (chat protocol); play itself does not need it
    readout = task.readout(tok) if cfg.play.protocol == "completion" else None

    games = plan_games(cfg)
    units = _units(games, cfg.play.batch_size)
    frames: dict[int, pd.DataFrame] = {}
    for u, specs in enumerate(units):
        path = parts_dir / _PART.format(u)
        if resume and path.exists():
            df = _read_part(path, specs, task)
            if df is not None:
                frames[u] = df

    from tqdm.auto import tqdm

    n_done = sum(f["game_id"].nunique() for f in frames.values())
    label = task.split.label_a.replace(" ", "_")
    n_a = [sum(int(f.groupby("game_id")["end_reason"].first().map(task.split.group).eq("a")
                   .sum()) for f in frames.values())]
    bar = tqdm(total=len(games), initial=n_done, disable=not progress, unit="game",
               desc="play", dynamic_ncols=True)
    bar.set_postfix({label: n_a[0]})

    def _ended(g: _Live) -> None:
        if task.split.group(g.state.end_reason) == "a":
            n_a[0] += 1
        bar.update(1)
        bar.set_postfix({label: n_a[0]})

    calls = [0]
    try:
        for u, specs in enumerate(units):
            if u in frames:
                continue
            df = _play_unit(model, tok, cfg, task, u, specs, rules, readout, generate_fn, calls,
                            after_step, _ended)
            write_table(df, parts_dir / _PART.format(u), csv=False)
            frames[u] = df
    finally:
        bar.close()

    decisions = _nulls(pd.concat([pd.read_parquet(parts_dir / _PART.format(u))
                                  for u in range(len(units))], ignore_index=True), task)
    if decisions.empty:
        raise DataError("play produced no decision points")
    write_table(decisions, rd.decisions, csv=False)
    metrics = task.summarize(decisions, task_rules(cfg))
    write_table(metrics, rd.metrics)
    record_config(run_dir, cfg)
    return decisions


def summary_table(metrics: pd.DataFrame, task: Task | None = None) -> str:
    """A compact fixed-width table of the task's headline metrics for the terminal."""
    names = task.summary_columns if task is not None else tuple(metrics.columns)
    cols = [c for c in names if c in metrics.columns]
    view = metrics[cols].copy()
    for c in cols:
        if view[c].dtype.kind == "f":
            view[c] = view[c].map(lambda x: "—" if pd.isna(x) else f"{x:.3f}")
    return view.to_string(index=False)


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The play metrics of a run directory."""
    path = RunDir(run_dir).metrics
    if not path.exists():
        raise DataError(f"{path} does not exist; run `featurepath play` first")
    return pd.read_parquet(path)
