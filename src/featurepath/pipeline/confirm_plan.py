"""What a confirmation tests, fixed before its first trial: the candidates, the conditions, the
clamp values, the predicted signs and the pre-registration that hashes all of it.

Why a pre-registration: the screen half of the prompts chose the candidates, so a confirmation
is only a test if what it tests was fixed before it saw the confirm half. The file is written
first and hashed; a rerun with the same hash resumes, and one whose pre-registration differs is
refused (it would be a new confirmation, never an edit of the old one).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurepath.analysis.confirm import TIE_TOL, default_cap
from featurepath.config import ConditionSpec, ConfirmSection, RunConfig
from featurepath.errors import ConfigError
from featurepath.rundir import RunDir, atomic_write, feature_key, parse_test_key

#: The primary metric when none is named: the config's default (the task's readout metric).
PRIMARY = ConfirmSection.model_fields["metric"].default

#: Where a ``--top N`` ranking comes from, in order of preference.
SOURCES = ("screen", "discover", "causal")


@dataclass
class ConfirmTest:
    """One pre-registered test: a feature clamped under one condition, read on the primary
    metric; ``sign`` +1 / -1 when the earlier stage predicted the direction, 0 two-sided."""

    feature: str
    condition: str
    context: str
    patch: str
    value: float | None
    scale: float | None
    sign: int
    sign_source: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.feature, self.condition)

    @property
    def layer(self) -> int:
        return parse_test_key(self.feature)[0]

    @property
    def feature_id(self) -> int:
        return parse_test_key(self.feature)[1]

    @property
    def is_direction(self) -> bool:
        """A test of the layer's behavioural direction rather than of an SAE feature."""
        return self.feature_id < 0


@dataclass(frozen=True)
class Primary:
    """The pre-registered primary metric as the run's task defines it: ``readout`` (read at the
    decision token, one row per prompt and arm) or a sampled ``rate`` (the share of ``trials``
    sampled answers per prompt whose action is in ``actions``)."""

    name: str
    kind: str
    actions: tuple[str, ...] = ()
    trials: int = 1
    #: how a readout effect's sign maps onto this metric (the screen ranks by the readout):
    #: +1 same way, -1 opposite (a rate of the continuing actions), 0 unknown (two-sided)
    screen_sign: int = 1


def primary(cfg: RunConfig) -> Primary:
    """``confirm.metric`` resolved against the run's task (:data:`PRIMARY`, the default, names
    whichever readout the task has); ``ConfigError`` naming the choices otherwise."""
    from featurepath.tasks import get_task

    task = get_task(cfg.task)
    specs = {m.name: m for m in task.metrics}
    name = cfg.confirm.metric
    readout = next((m for m in task.metrics if m.kind == "readout"), None)
    if readout is not None and (name == PRIMARY or specs.get(name) is readout):
        return Primary(readout.name, "readout")
    m = specs.get(name)
    if m is not None and m.kind == "rate":
        flip = int(np.sign(m.toward_b) * np.sign(readout.toward_b)) if readout is not None else 0
        return Primary(m.name, "rate", tuple(m.actions), cfg.confirm.trials or cfg.patch.trials,
                       flip)
    allowed = [x.name for x in task.metrics if x.kind in ("readout", "rate")]
    raise ConfigError(f"confirm.metric {name!r} cannot be a primary metric of task {task.name}; "
                      f"use one of {', '.join(allowed)} (the readout, or a sampled rate)")


def screen_path(run_dir: Path) -> Path:
    """``RUN/screen.parquet``, the attribution screen's ranking (``featurepath screen``)."""
    return Path(run_dir) / "screen.parquet"


def top_features(run_dir: Path, n: int, conditions: list[str] | None = None,
                 metric: str = PRIMARY) -> tuple[list[str], str]:
    """``(the n best-ranked features, source)``: the screen's ``rank`` (1 = largest
    |attribution| within a context × intervention; only the interventions to be confirmed when
    the screen scored them), else discover's candidates in its order, else the first patch
    round's largest |P(exit) effect|."""
    rd = RunDir(run_dir)
    if screen_path(run_dir).exists():
        df = pd.read_parquet(screen_path(run_dir))
        if conditions and "intervention" in df and \
                df["intervention"].astype(str).isin(conditions).any():
            df = df[df["intervention"].astype(str).isin(conditions)]
        df = df.assign(_a=-df["attribution"].abs())
        df = df.sort_values(["rank", "_a"] if "rank" in df else ["_a"], kind="mergesort")
        return list(dict.fromkeys(df["feature"].astype(str)))[:n], "screen"
    if rd.discover.exists():
        df = pd.read_parquet(rd.discover)
        if "candidate" in df:
            df = df[df["candidate"]]
        if not df.empty:
            return [feature_key(int(r.layer), int(r.feature_id))
                    for r in df.head(n).itertuples()], "discover"
    if rd.causal_tests.exists():
        df = pd.read_parquet(rd.causal_tests)
        df = df[(df["arm"] == "feature") & (df["metric"] == metric) & (df["feature"] != "")]
        if not df.empty:
            df = df.assign(_a=-df["effect"].abs()).sort_values("_a", kind="mergesort")
            return list(dict.fromkeys(df["feature"].astype(str)))[:n], "causal"
    raise ConfigError(f"--top needs a ranking: none of {screen_path(run_dir).name}, "
                      f"{rd.discover.name} (with candidates) or {rd.causal_tests.name} is in "
                      f"{run_dir}; run `featurepath screen`, `discover` or `patch` + `causal` "
                      "first, or name the features with --features L12-345,...")


def confirm_conditions(cfg: RunConfig) -> list[ConditionSpec]:
    """``confirm.conditions``, else ``patch.null_conditions`` (the conditions a run claims),
    else every patched condition."""
    allc = {c.name: c for c in cfg.patch.all_conditions()}
    names = cfg.confirm.conditions or cfg.patch.null_conditions or \
        [c.name for c in allc.values() if c.patch != "none"]
    unknown = [n for n in names if n not in allc]
    if unknown:
        raise ConfigError(f"confirm.conditions {unknown} are not conditions (have "
                          f"{sorted(allc)})")
    base = [n for n in names if allc[n].patch == "none"]
    if base:
        raise ConfigError(f"confirm.conditions {base} patch nothing; name patched conditions")
    return [allc[n] for n in names]


def check_design(cfg: RunConfig) -> None:
    """Refuse what this confirmation cannot test validly, before anything loads."""
    if cfg.patch.method != "delta":
        raise ConfigError("confirm needs patch.method delta (null directions are delta arms)")
    if cfg.patch.positions == "all":
        raise ConfigError("confirm reads P(exit) at the decision token: patch.positions must be "
                          "last or prompt (a clamp at every position changes the prefix)")


def predicted_sign(run_dir: Path, feature: str, cond: ConditionSpec, metric: str = PRIMARY,
                   screen_sign: int = 1) -> tuple[int, str]:
    """The direction an earlier stage (screen half only) predicts for this test: the screen's
    attribution of the feature in the condition's context (a readout effect, times
    ``screen_sign`` for another metric; 0 there means the screen cannot say), else the first
    patch round's effect on ``metric`` under the same condition; ``(0, "none")`` when neither
    says (two-sided)."""
    sp = screen_path(run_dir)
    if sp.exists() and screen_sign != 0:
        df = pd.read_parquet(sp)
        df = df[df["feature"].astype(str) == feature]
        if "intervention" in df and (df["intervention"].astype(str) == cond.name).any():
            df = df[df["intervention"].astype(str) == cond.name]
        elif "context" in df:  # other interventions of the context: only when they all agree
            df = df[df["context"].astype(str) == cond.context]
        signs = set(np.sign(df["attribution"].to_numpy(float))) - {0.0}
        if len(signs) == 1 and all(np.isfinite(list(signs))):
            return int(signs.pop()) * screen_sign, "screen"
    ct = RunDir(run_dir).causal_tests
    if ct.exists():
        df = pd.read_parquet(ct)
        df = df[(df["feature"] == feature) & (df["condition"] == cond.name)
                & (df["metric"] == metric) & df["arm"].isin(["feature", "direction"])]
        if not df.empty and np.isfinite(df["effect"].iloc[0]) and \
                abs(float(df["effect"].iloc[0])) > TIE_TOL:
            return int(np.sign(float(df["effect"].iloc[0]))), "patch"
    return 0, "none"


def clamp_values(run_dir: Path, cfg: RunConfig, features: list[str],
                 conditions: list[ConditionSpec], measure) -> dict[str, dict[str, float]]:
    """``{feature: {"safe": v, "risky": v}}`` for conditions that clamp to a patch value:
    discover's means (screen-half games), else the patch plan's values, else ``measure(feats)``
    (means over the screen half's prompts). Never from the confirm half."""
    features = [f for f in features if parse_test_key(f)[1] >= 0]  # directions scale only
    if not any(c.patch in ("safe", "risky") for c in conditions) or not features:
        return {}
    rd = RunDir(run_dir)
    out: dict[str, dict[str, float]] = {}
    if rd.discover.exists():
        df = pd.read_parquet(rd.discover)
        for r in df.itertuples():
            f = feature_key(int(r.layer), int(r.feature_id))
            if f in features:
                out[f] = {"safe": float(r.mean_safe), "risky": float(r.mean_risky)}
    if rd.plan.exists():
        from featurepath.pipeline.store import RunStore

        for f, v in RunStore(run_dir).plan().extra.get("values", {}).items():
            if f in features and f not in out:
                out[f] = {"safe": float(v["safe"]), "risky": float(v["risky"])}
    missing = [f for f in features if f not in out]
    if missing:
        out.update(measure(missing))
    return out


def build_tests(run_dir: Path, features: list[str], conditions: list[ConditionSpec],
                values: dict[str, dict[str, float]], metric: str = PRIMARY,
                screen_sign: int = 1) -> list[ConfirmTest]:
    tests = []
    for f in features:
        for c in conditions:
            if parse_test_key(f)[1] < 0 and c.patch not in ("scale", "value"):
                raise ConfigError(f"{f} is a direction, which has no {c.patch} mean to be "
                                  f"patched to ({c.name}); name scale or value conditions in "
                                  "confirm.conditions")
            value = values[f][c.patch] if c.patch in ("safe", "risky") else \
                (float(c.value) if c.patch == "value" else None)
            scale = float(c.scale) if c.patch == "scale" else None
            sign, source = predicted_sign(run_dir, f, c, metric, screen_sign)
            tests.append(ConfirmTest(f, c.name, c.context, c.patch, value, scale, sign, source))
    return tests


def preregistration(cfg: RunConfig, tests: list[ConfirmTest], source: str,
                    prompts: dict[str, list[str]], held_out: bool,
                    metric: Primary | None = None) -> dict[str, Any]:
    """Everything the confirmation will do and decide by, as plain JSON (no timestamps: the
    same design hashes the same). A sampled primary metric adds its kind, trials, actions and
    sampling settings (a readout's pre-registration is as it always was, so its hash holds)."""
    cap = cfg.confirm.cap or default_cap(len(tests), cfg.analysis.alpha)
    out = _prereg(cfg, tests, source, prompts, held_out, cap)
    if metric is not None and metric.kind == "rate":
        out.update({
            "metric_kind": "rate", "rows_per_prompt": metric.trials,
            "actions": list(metric.actions),
            "min_effect": cfg.analysis.min_effect_by_kind()["rate"],
            "intervention": {"method": cfg.patch.method, "positions": cfg.patch.positions},
            "sampling": cfg.patch.sampling.model_dump(mode="json"),
            "trial_seeds": "derive_seed(seed, 'confirm-trial', prompt_id, t): the same in "
                           "every arm (common random numbers)"})
        out["null_design"]["statistic"] = (
            f"mean over confirm prompts of the share of {metric.trials} sampled answers whose "
            f"action is in {list(metric.actions)} (among valid answers; 0 when none is "
            "valid), arm minus baseline")
    return out


def _prereg(cfg: RunConfig, tests: list[ConfirmTest], source: str,
            prompts: dict[str, list[str]], held_out: bool, cap: int) -> dict[str, Any]:
    cc, n = cfg.confirm, len(tests)
    return {
        "format": 1, "model": cfg.model, "saes": cfg.saes, "seed": cfg.seed,
        "candidates_from": source, "metric": cc.metric, "n_tests": n,
        "alpha": cfg.analysis.alpha, "min_effect": cfg.analysis.min_effect_by_kind()["readout"],
        "tests": [asdict(t) for t in tests],
        "intervention": {"method": cfg.patch.method, "positions": "decision token"},
        "null_design": {
            "directions": f"uniform random unit vectors (patch.null_span: "
                          f"{cfg.patch.null_span}) at the feature's layer, written with the "
                          "feature arm's per-row magnitude |v - a_f(x)| x ||W_dec[f]||",
            "seed_stream": "derive_seed(seed, 'confirm-null') per layer and draw index",
            "statistic": "mean over confirm prompts of readout(arm) - readout(baseline)",
            "exceedance": "|null| >= |effect| (two-sided) or sign*null >= sign*effect, "
                          f"ties within {TIE_TOL} count",
            "sequential": "Besag & Clifford 1991: stop at h exceedances, p = h/k; at the cap "
                          "p = (g+1)/(cap+1)",
            "h": cc.h, "round_size": cc.round_size, "cap": cap, "span": cfg.patch.null_span},
        "verdict": "p = max(p_baseline, p_null) (intersection-union); BH over the n tests; "
                   "significant: q <= alpha, |effect| >= min_effect, sign as predicted",
        "prompts": {"half": "confirm" if held_out else "all (builtin: not split)",
                    "confirm_share": cfg.analysis.confirm_share,
                    "prompt_set": cfg.patch.prompt_set, "ids": prompts},
    }


def digest(prereg: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of the pre-registration."""
    blob = json.dumps(prereg, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def write_or_check(run_dir: Path, prereg: dict[str, Any]) -> tuple[str, bool]:
    """``(sha256, resumed)``. Writes ``RUN/confirm/preregistration.json`` when there is none; an
    existing one with the same hash is resumed; one that differs is refused, naming the keys
    that differ — a changed pre-registration is a new confirmation, not an edit."""
    sha = digest(prereg)
    path = RunDir(run_dir).preregistration
    if path.exists():
        old = json.loads(path.read_text())
        old_sha = old.get("sha256", "")
        if old_sha == sha:
            return sha, True
        from featurepath.config import diff_configs

        old.pop("sha256", None)
        diffs = diff_configs(old, prereg)
        raise ConfigError(
            f"{path.parent} holds confirmation {old_sha[:12]}, pre-registered with another "
            f"design ({'; '.join(diffs[:3]) or 'content differs'}); a changed pre-registration "
            f"is a new confirmation, never an edit: move {path.parent} aside (e.g. to "
            f"{path.parent.name}-{old_sha[:12]}) and rerun")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"sha256": sha, **prereg}, indent=2, sort_keys=True))
    return sha, False


__all__ = ["ConfirmTest", "Primary", "SOURCES", "primary", "top_features",
           "confirm_conditions", "check_design", "predicted_sign", "clamp_values",
           "build_tests", "preregistration", "digest", "write_or_check", "screen_path"]
