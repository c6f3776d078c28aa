"""The confirmation stage (``featurepath confirm``): a few pre-registered candidates, on the
held-out confirm half of the prompts, against random directions drawn until the answer is clear.

Order of work, each step persisted atomically under ``RUN/confirm/`` so a killed run resumes
with identical results: the pre-registration (before any trial) → the baseline and feature arms
on the confirm prompts (``arms.parquet``) → rounds of null directions per layer
(``rounds/L<layer>-r<k>.parquet``; which tests a round holds depends only on earlier rounds) →
the verdicts. The statistics live in :mod:`featurepath.analysis.confirm`, what is tested in
:mod:`featurepath.pipeline.confirm_plan`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from featurepath.analysis.confirm import (
    CONFIRM_COLUMNS,
    CONFIRM_DRAW_COLUMNS,
    Paired,
    SequentialTest,
    run_rounds,
    verdict_rows,
)
from featurepath.config import RunConfig, record_config, resolve_config
from featurepath.engine.hooks import Intervention
from featurepath.errors import ConfigError, DataError
from featurepath.pipeline import confirm_plan as cp
from featurepath.pipeline.prompt_sets import prompt_sets, record_split
from featurepath.pipeline.seeds import derive_seed
from featurepath.rundir import (
    RunDir,
    atomic_write,
    parquet_bytes,
    parse_test_key,
    write_table,
)

Say = Callable[[str], None]


@dataclass
class ConfirmResult:
    """The verdicts, the pre-registration's hash, and what the run cost."""

    verdicts: pd.DataFrame
    sha256: str
    source: str
    resumed: bool
    rows: int = 0
    seconds: float = 0.0
    tests: list[cp.ConfirmTest] = field(default_factory=list)
    row_kind: str = "decision-token rows"  # "sampled answers" for a sampled primary metric

    @property
    def draws_per_s(self) -> float:
        """Null draws per second this call (a draw = one decision-token forward per prompt)."""
        drawn = int(self.verdicts["null_draws"].sum())
        return drawn / self.seconds if self.seconds > 0 and self.rows > 0 else float("nan")

    def cost_line(self) -> str:
        """What this call ran, or that every round was already stored (a resumed run)."""
        if self.rows == 0:
            return "every round was already stored: nothing run this time"
        return (f"{self.rows} {self.row_kind} in {self.seconds:.1f}s "
                f"({self.draws_per_s:.2f} null draws/s)")

    def lines(self) -> list[str]:
        """One line per test, then the count: what the demo and the CLI print."""
        out = []
        for r in self.verdicts.itertuples():
            sign = {1: "+", -1: "-"}.get(int(r.predicted_sign), "two-sided")
            verdict = "CONFIRMED" if r.significant else \
                (f"degenerate ({r.test})" if r.degenerate else "not confirmed")
            out.append(f"{r.feature} {r.condition}: effect {r.effect:+.4f} (sign {sign}), "
                       f"p_baseline {r.p_baseline:.3g}, p_null {r.p_null:.3g} after "
                       f"{r.null_draws} null directions ({r.null_exceed} as extreme), "
                       f"q {r.q:.3g}: {verdict}")
        n = int(self.verdicts["significant"].sum())
        out.append(f"{n} of {len(self.verdicts)} pre-registered tests confirmed "
                   f"(pre-registration {self.sha256[:12]})" if n else
                   f"none of {len(self.verdicts)} pre-registered tests confirmed "
                   f"(pre-registration {self.sha256[:12]})")
        return out


def prompt_batch(cfg: RunConfig) -> int:
    """Prompts per prefill batch: ``patch.batch_size``, or 32 when it is ``auto`` (a
    confirmation's prefill is once per context; its arm batches are ``confirm.max_rows``)."""
    return cfg.patch.batch_size if isinstance(cfg.patch.batch_size, int) else 32


def round_path(run_dir: Path, layer: int, index: int) -> Path:
    """``RUN/confirm/rounds/L<layer>-r<index>.parquet``: one round of a layer's null draws."""
    return RunDir(run_dir).confirm / "rounds" / f"L{layer}-r{index:04d}.parquet"


def null_seed(cfg: RunConfig) -> int:
    """The run seed of the confirmation's null directions: a stream of its own, so the
    directions the first patch round used (on the screen half) are not reused here."""
    return derive_seed(cfg.seed, "confirm-null")


def choose_features(run_dir: Path, cfg: RunConfig, features: Sequence[str] | None,
                    top: int | None) -> tuple[list[str], str]:
    """Explicit features (``--features`` or ``confirm.features``) or the top N of a ranking."""
    if features and top:
        raise ConfigError("give --features or --top, not both")
    explicit = list(features or ([] if top else cfg.confirm.features))
    if explicit:
        for f in explicit:
            parse_test_key(f)
        return list(dict.fromkeys(explicit)), "explicit"
    names = [c.name for c in cp.confirm_conditions(cfg)]
    return cp.top_features(run_dir, top or cfg.confirm.top_n, names, cfg.confirm.metric)


def behavioural_for(run_dir: Path, feats: Sequence[str]) -> dict:
    """``{layer: unit vector}`` of the behavioural directions among ``feats``
    (``L<layer>~direction``), from the patch round's ``patch/directions.safetensors`` (the
    run's own, or another run's with ``patch.direction_from``); one clear error when missing."""
    layers = sorted({parse_test_key(f)[0] for f in feats if parse_test_key(f)[1] < 0})
    if not layers:
        return {}
    path = RunDir(run_dir).directions
    if not path.exists():
        raise DataError(f"{', '.join(f'L{x}~direction' for x in layers)} needs the patch "
                        f"round's behavioural directions ({path}); run `featurepath patch` with "
                        "patch.behavioural_direction or patch.direction_from first")
    from featurepath.pipeline.controls import load_directions

    have = load_directions(path)
    missing = [x for x in layers if x not in have]
    if missing:
        raise DataError(f"{path} has no direction for layer(s) {missing} (it has "
                        f"{sorted(have)}): the patch round patched no feature there")
    return {x: have[x] for x in layers}


def _interventions(t: cp.ConfirmTest, positions: str, direction=None,
                   behavioural: dict | None = None) -> Intervention:
    """The arm of test ``t`` (``direction`` None) or its null arm along ``direction``. A
    behavioural-direction test reads ``h · u`` and writes along ``u`` (its null arm writes
    along ``direction`` instead): a scale clamp moves it as it moves a feature."""
    if t.is_direction:
        u = (behavioural or {})[t.layer]
        return Intervention(t.layer, -1, value=t.value, scale=t.scale, method="delta",
                            positions=positions, direction=u, readout="projection",
                            write=direction)
    return Intervention(t.layer, t.feature_id, value=t.value, scale=t.scale, method="delta",
                        positions=positions, direction=direction)


def run_confirm(run_dir: str | Path, cfg: RunConfig | None = None, *, runtime=None,
                features: Sequence[str] | None = None, top: int | None = None,
                progress: bool = True, say: Say | None = None,
                readout=None, source: str | None = None) -> ConfirmResult:
    """Pre-register, run and judge a confirmation; see the module docstring. ``runtime``: a
    :class:`~featurepath.pipeline.runtime.Runtime` (or ``(model, tokenizer, saes)``) already
    loaded; ``readout`` overrides the task's P(exit)
    readout (tests); ``source`` names where explicit ``features`` came from (the demo: its
    discover-chosen candidates)."""
    t0 = time.time()
    root = Path(run_dir)
    cfg = cfg or resolve_config(root)
    say = say or (lambda s: None)
    cp.check_design(cfg)
    metric = cp.primary(cfg)  # the task's readout, or a sampled rate
    feats, chosen_by = choose_features(root, cfg, features, top)
    source = source if source and chosen_by == "explicit" else chosen_by
    conditions = cp.confirm_conditions(cfg)
    from featurepath.pipeline.runtime import ensure_runtime

    model, tok, saes = ensure_runtime(runtime, cfg, progress=progress)
    from featurepath.pipeline.patch_checks import validate_features

    validate_features([f for f in feats if parse_test_key(f)[1] >= 0], [], saes)
    directions = behavioural_for(root, feats)
    if readout is None:
        from featurepath.tasks import get_task

        readout = get_task(cfg.task).readout(tok)
        if readout is None:
            raise DataError("the tokenizer has no single-token option digits, so the task's "
                            "readout cannot be read; confirm needs it as the primary metric")
    sets, held_out = prompt_sets(cfg, root, tok, "confirm")
    if not held_out:
        warnings.warn("patch.prompt_set builtin has one prompt per context and cannot be split: "
                      "the confirmation reuses the screen's prompt and p_baseline is degenerate; "
                      "use prompt_set states or play for a held-out confirmation", stacklevel=2)
    missing = {c.context for c in conditions} - set(sets)
    if missing:
        raise ConfigError(f"conditions use unknown contexts {sorted(missing)}")

    def measure(fs: list[str]) -> dict[str, dict[str, float]]:
        from featurepath.pipeline.patch import measure_patch_values
        from featurepath.pipeline.patch_checks import decision_activations_by_context

        screen, _ = prompt_sets(cfg, root, tok, "screen")
        acts = decision_activations_by_context(
            model, tok, saes, fs, {k: [r.text for r in v] for k, v in screen.items()},
            {"safe", "risky"}, prompt_batch(cfg))
        return measure_patch_values(fs, fs, acts)

    values = cp.clamp_values(root, cfg, feats, conditions, measure)
    tests = cp.build_tests(root, feats, conditions, values, metric.name, metric.screen_sign)
    ids = {ctx: [r.prompt_id for r in recs] for ctx, recs in sets.items()
           if ctx in {c.context for c in conditions}}
    prereg = cp.preregistration(cfg, tests, source, ids, held_out, metric)
    sha, resumed = cp.write_or_check(root, prereg)
    record_split(root, "confirm", sets, "confirm" if held_out else None, held_out)
    say(f"pre-registered {len(tests)} tests ({source}) as {sha[:12]}"
        + (" (resuming)" if resumed else "") + f" -> {RunDir(root).preregistration}")
    engine = _Engine(root, cfg, model, tok, saes, readout, sets, tests, progress, metric,
                     directions)
    pairs = engine.arms()
    nd = prereg["null_design"]
    seq = {t.key: SequentialTest(float(np.mean(pairs[t.key].patched - pairs[t.key].baseline)),
                                 t.sign, nd["h"], nd["cap"]) for t in tests}
    try:
        run_rounds(seq, {t.key: t.layer for t in tests}, nd["round_size"], engine.draw_round)
    finally:
        engine.close()
    rows = verdict_rows([t.key for t in tests], pairs, seq, cfg.analysis.alpha,
                        cfg.analysis.min_effect_by_kind()[metric.kind])
    table = pd.DataFrame([{
        "feature": t.feature, "layer": t.layer, "feature_id": t.feature_id,
        "context": t.context, "condition": t.condition, "metric": cfg.confirm.metric,
        "patch": t.patch, "value": np.nan if t.value is None else t.value,
        "scale": np.nan if t.scale is None else t.scale, "predicted_sign": t.sign,
        "sign_source": t.sign_source, **r, "prereg_sha256": sha}
        for t, r in zip(tests, rows, strict=True)], columns=CONFIRM_COLUMNS)
    table.attrs["prereg_sha256"] = sha
    write_table(table, RunDir(root).verdicts)
    record_config(root, cfg)
    return ConfirmResult(table, sha, source, resumed, engine.rows, time.time() - t0, tests,
                         "decision-token rows" if metric.kind == "readout" else
                         "sampled answers")


class _Engine:
    """The model work of one confirmation: arms once, then rounds of null draws, each read
    back from ``RUN/confirm/`` when a killed run already wrote it."""

    def __init__(self, root: Path, cfg: RunConfig, model, tok, saes, readout, sets,
                 tests: list[cp.ConfirmTest], progress: bool, metric: cp.Primary | None = None,
                 behavioural: dict | None = None):
        self.root, self.cfg, self.model, self.tok, self.saes = root, cfg, model, tok, saes
        self.readout, self.tests = readout, {t.key: t for t in tests}
        self.metric = metric or cp.Primary(cp.PRIMARY, "readout")
        self.behavioural = behavioural or {}
        self.texts = {ctx: [r.text for r in recs] for ctx, recs in sets.items()}
        self.ids = {ctx: [r.prompt_id for r in recs] for ctx, recs in sets.items()}
        self.parse = {ctx: [r.parse for r in recs] for ctx, recs in sets.items()}
        # the decision token (what P(exit) reads under last or prompt); a sampled metric
        # clamps as the patch stage does, through the generated tokens
        self.positions = "prompt" if self.metric.kind == "readout" else cfg.patch.positions
        self.rows = 0
        self.base: dict[str, np.ndarray] = {}
        self._prefix: dict[str, object] = {}
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(desc="confirm", unit="row", leave=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def _read(self, ctx: str, arms: list[Intervention | None]) -> np.ndarray:
        """Readouts of ``arms`` on the confirm prompts of ``ctx``; the prefixes are prefilled
        once per context for the whole confirmation."""
        from featurepath.engine.decision import DecisionPrefix

        def tick(n: int) -> None:
            self.rows += n
            if self._bar is not None:
                self._bar.update(n)

        if self.metric.kind == "rate":
            return self._sampled(ctx, arms, tick)
        if ctx not in self._prefix:
            self._prefix[ctx] = DecisionPrefix(self.model, self.tok, self.texts[ctx],
                                               prompt_batch(self.cfg))
        return self._prefix[ctx].readouts(arms, self.saes, self.readout,
                                          self.cfg.confirm.max_rows,
                                          tick).numpy().astype(np.float64)

    def _sampled(self, ctx: str, arms: list[Intervention | None], tick) -> np.ndarray:
        """``[arms, prompts]``: per prompt, the share of ``trials`` sampled answers (among the
        valid ones; 0 when none is valid) whose action is in the metric's actions. Trial t of
        a prompt has the same seed in every arm (common random numbers), so arms differ only
        by their clamp."""
        from featurepath.engine.generate import generate
        from featurepath.engine.hooks import RecordSpec
        from featurepath.tasks import get_task

        task, s, T = get_task(self.cfg.task), self.cfg.patch.sampling, self.metric.trials
        n = len(self.texts[ctx])
        rows = [(a, i, t) for a in range(len(arms)) for i in range(n) for t in range(T)]
        hits = np.zeros((len(arms), n, T))
        valid = np.zeros((len(arms), n, T))
        step = self.cfg.confirm.max_rows
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            parse = [self.parse[ctx][i] for _, i, _ in chunk]
            res = generate(self.model, self.tok, [self.texts[ctx][i] for _, i, _ in chunk],
                           [derive_seed(self.cfg.seed, "confirm-trial", self.ids[ctx][i], t)
                            for _, i, t in chunk], s.engine(), self.saes,
                           [arms[a] for a, _, _ in chunk], RecordSpec([]), None,
                           constraints=task.answer_constraints(self.tok, parse, s.answer))
            for (a, i, t), text, kw in zip(chunk, res.texts, parse, strict=True):
                d = task.parse(text, **kw)
                valid[a, i, t] = bool(d.valid)
                hits[a, i, t] = bool(d.valid) and d.action in self.metric.actions
            tick(len(chunk))
        return hits.sum(2) / np.maximum(valid.sum(2), 1.0)

    def arms(self) -> dict[tuple[str, str], Paired]:
        """Baseline and feature arms on every confirm prompt of the tested contexts."""
        path = RunDir(self.root).confirm_arms
        if path.exists():
            df = pd.read_parquet(path)
        else:
            recs = []
            for ctx in sorted({t.context for t in self.tests.values()}):
                keys = [k for k, t in self.tests.items() if t.context == ctx]
                arms = [None] + [_interventions(self.tests[k], self.positions,
                                                behavioural=self.behavioural) for k in keys]
                vals = self._read(ctx, arms)
                for a, key in enumerate([("", "")] + keys):
                    for i, pid in enumerate(self.ids[ctx]):
                        recs.append(dict(context=ctx, feature=key[0], condition=key[1],
                                         prompt_id=pid, readout=float(vals[a, i])))
            df = pd.DataFrame(recs)
            atomic_write(path, parquet_bytes(df))
        out = {}
        for ctx, g in df.groupby("context"):
            base = g[g["feature"] == ""].set_index("prompt_id")["readout"]
            self.base[str(ctx)] = base.loc[self.ids[str(ctx)]].to_numpy()
        for k, t in self.tests.items():
            g = df[(df["feature"] == k[0]) & (df["condition"] == k[1])]
            if g.empty:
                raise DataError(f"{path} lacks {k[0]} under {k[1]}; it belongs to another "
                                "confirmation — move RUN/confirm aside and rerun")
            out[k] = Paired(g.set_index("prompt_id")["readout"].loc[self.ids[t.context]]
                            .to_numpy(), self.base[t.context])
        return out

    def directions(self, layer: int, start: int, n: int) -> list:
        from featurepath.pipeline.controls import null_direction

        sae = self.saes[layer]
        return [null_direction(null_seed(self.cfg), layer, k, sae.d_model,
                               self.cfg.patch.null_span, sae.W_dec)
                for k in range(start, start + n)]

    def draw_round(self, layer: int, index: int, n: int, keys: list) -> dict:
        """Null effects of draws ``index * round_size ...`` for ``keys`` (one layer)."""
        path = round_path(self.root, layer, index)
        start = index * self.cfg.confirm.round_size
        if path.exists():
            df = pd.read_parquet(path)
        else:
            dirs = self.directions(layer, start, n)
            recs = []
            for ctx in sorted({self.tests[k].context for k in keys}):
                ks = [k for k in keys if self.tests[k].context == ctx]
                arms = [_interventions(self.tests[k], self.positions, u, self.behavioural)
                        for k in ks for u in dirs]
                vals = self._read(ctx, arms) - self.base[ctx][None, :]
                eff = vals.mean(1).reshape(len(ks), n)
                for j, k in enumerate(ks):
                    for d in range(n):
                        recs.append(dict(feature=k[0], condition=k[1], draw=start + d,
                                         null_effect=float(eff[j, d])))
            df = pd.DataFrame(recs, columns=CONFIRM_DRAW_COLUMNS)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, parquet_bytes(df))
        out = {}
        for k in keys:
            g = df[(df["feature"] == k[0]) & (df["condition"] == k[1])].sort_values("draw")
            if len(g) != n:
                raise DataError(f"{path} does not hold this round of {k[0]} under {k[1]}; it "
                                "belongs to another confirmation — move RUN/confirm aside")
            out[k] = g["null_effect"].to_numpy()
        return out


def null_draws(run_dir: str | Path) -> pd.DataFrame:
    """Every stored null draw of a confirmation (for the report's figure)."""
    d = RunDir(run_dir).confirm / "rounds"
    parts = [pd.read_parquet(p) for p in sorted(d.glob("L*-r*.parquet"))] if d.exists() else []
    return pd.concat(parts, ignore_index=True) if parts else \
        pd.DataFrame(columns=CONFIRM_DRAW_COLUMNS)


__all__ = ["run_confirm", "ConfirmResult", "choose_features", "null_draws", "null_seed"]
