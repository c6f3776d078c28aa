"""Run configuration: one YAML file per run directory, validated by pydantic.

The config round-trips (``load_config(save_config(c)) == c``), unknown keys are errors (a typo
must not silently fall back to a default), and every problem is one :class:`ConfigError` line
naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from featurepath.choices import METHODS, MODES, POSITIONS, PROMPT_SETS, PROTOCOLS
from featurepath.errors import ConfigError
from featurepath.rundir import RunDir, atomic_write, parse_feature_key, parse_test_key
from featurepath.rundir import feature_key as feature_key  # re-exported

#: The registry key of the task a config without ``task:`` studies (``featurepath.tasks``'
#: ``DEFAULT_TASK``, spelled here so that importing the config does not import the tasks).
DEFAULT_TASK = "slot_machine"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingSection(_Strict):
    temperature: float = Field(0.7, ge=0.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(24, ge=1, le=4096)
    stop_strings: list[str] = Field(default_factory=lambda: ["\n\n"])
    answer: Literal["free", "constrained"] = Field(
        "free", description="constrained: completion answers drawn only from the option tokens "
                            "(and, for variable bets, '\\nAmount: $' + digits) — for small models "
                            "that rarely write a readable answer")

    def engine(self):
        """The engine's :class:`~featurepath.engine.generate.SamplingConfig` for this section:
        the one translation, so the config's defaults are the only defaults a run uses."""
        from featurepath.engine.generate import SamplingConfig

        return SamplingConfig(self.temperature, self.top_p, self.max_new_tokens,
                              tuple(self.stop_strings))


class PlaySection(_Strict):
    """Batched games: every prompt condition × bet type, ``games_per_condition`` games each."""

    conditions: list[str] = Field(default_factory=lambda: ["BASE", "GMHWP"],
                                  description="component combinations, e.g. BASE, G, GM, GMHWP")
    bet_types: list[Literal["fixed", "variable"]] = Field(
        default_factory=lambda: ["fixed", "variable"])
    games_per_condition: int = Field(10, ge=1)
    max_rounds: int = Field(20, ge=1)
    max_retries: int = Field(2, ge=0, description="resamples of an invalid answer")
    batch_size: int = Field(32, ge=1)
    protocol: Literal[PROTOCOLS] = "completion"
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    rules: dict[str, Any] = Field(
        default_factory=dict, description="the task's own rules (its config section, "
        "featurepath.tasks.get_task(task).config_class: e.g. initial_balance, min_bet, "
        "bet_cap); empty = the task's defaults. A rule key written directly under play: is "
        "moved here. Checked by featurepath.pipeline.play.validate_play")

    @model_validator(mode="after")
    def _constrained_needs_completion(self):
        if self.sampling.answer == "constrained" and self.protocol != "completion":
            raise ValueError("sampling.answer 'constrained' works with protocol 'completion' only")
        return self


class DiscoverSection(_Strict):
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    min_d: float = Field(0.3, ge=0.0)
    max_candidates: int = Field(24, ge=1, description="strongest candidates passed to patch")
    batch_size: int = Field(32, ge=1)


class ScreenSection(_Strict):
    """The attribution screen (``featurepath screen``) and how the patch stage uses it.

    Why these settings live together: the screen ranks every feature by its first-order effect,
    the patch stage patches its top ``top_n`` per context and intervention, and it also patches
    ``check_random`` features drawn across the whole ranking so that every run measures how
    well the screen predicts real patching (rank correlation, top-N recall in causal)."""

    top_n: int = Field(8, ge=0, description="features taken from the top of the screen per "
                                            "context x intervention (patch.candidates: screen "
                                            "or union)")
    check_random: int = Field(8, ge=0, description="features drawn at random across the "
                                                   "screen's whole ranking and patched too, to "
                                                   "check the screen against real patching")
    batch_size: int = Field(8, ge=1, description="prompts per forward + backward pass (memory "
                                                 "grows with it: ~2 GB at 8 on the embedded "
                                                 "model; speed barely does on a CPU)")


class ConditionSpec(_Strict):
    """A named patch condition: a prompt context and what the patch sets the feature to.

    ``patch``: ``none`` (baseline), ``safe`` / ``risky`` (the feature's mean activation in
    group B / group A games of the task's split, from discover), ``value`` (``value``) or ``scale``
    (``scale`` × the feature's current activation).
    """

    name: str
    context: str
    patch: Literal["none", "safe", "risky", "value", "scale"] = "none"
    value: float | None = None
    scale: float | None = None

    @model_validator(mode="after")
    def _needs_number(self) -> ConditionSpec:
        if self.patch == "value" and self.value is None:
            raise ValueError(f"condition {self.name!r}: patch 'value' needs a value")
        if self.patch == "scale" and self.scale is None:
            raise ValueError(f"condition {self.name!r}: patch 'scale' needs a scale")
        return self


STANDARD_CONDITIONS = [
    ConditionSpec(name="safe_baseline", context="safe"),
    ConditionSpec(name="safe_with_safe_patch", context="safe", patch="safe"),
    ConditionSpec(name="safe_with_risky_patch", context="safe", patch="risky"),
    ConditionSpec(name="risky_baseline", context="risky"),
    ConditionSpec(name="risky_with_safe_patch", context="risky", patch="safe"),
    ConditionSpec(name="risky_with_risky_patch", context="risky", patch="risky"),
]


class PatchSection(_Strict):
    features: list[str] = Field(default_factory=list,
                                description="L{layer}-{id}; empty = candidates from discover")
    record: list[str] = Field(default_factory=list,
                              description="features to record; empty = the patched features "
                                          "plus discover's candidates")
    conditions: list[ConditionSpec] = Field(default_factory=lambda: list(STANDARD_CONDITIONS))
    trials: int = Field(30, ge=1, description="trials per feature × condition")
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="rows per work unit (one forward batch); auto: the largest power of "
        "two that fits the device's free memory, at most 256 rows on CPU (where the engine's "
        "speed flattens) and 1024 on a GPU; the plan line says what was chosen")
    mode: Literal[MODES] = "sample"
    method: Literal[METHODS] = "delta"
    positions: Literal[POSITIONS] = "last"
    candidates: Literal["discover", "screen", "union"] = Field(
        "union", description="where the patched features come from when patch.features is "
        "empty: discover (correlational candidates), screen (the top screen.top_n of "
        "screen.parquet per context x intervention) or union (both, each labelled with its "
        "source in trials.parquet; whichever exists when only one does)")
    prompt_set: Literal[PROMPT_SETS] = Field(
        "builtin", description="builtin: the study's safe/risky prompts; play: decision points "
                               "recorded by play (safe = the split's group B games, e.g. stopped; risky = "
                               "group A, e.g. ruined); "
                               "states: n_prompts distinct random game states per context "
                               "(safe = ahead with fixed bets, risky = behind with variable)")
    n_prompts: int = Field(32, ge=1, description="prompts per context for prompt_set: states")
    components: str | None = Field(None, description="prompt components for prompt_set: "
                                   "states (default: the task's state_components)")
    protocol: Literal[PROTOCOLS] = "completion"
    store_dtype: Literal["float16", "float32"] = "float16"
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    null_directions: int = Field(
        0, ge=0, le=4096, description="random-direction null arms per patched feature and "
        "condition: the same per-row intervention magnitude along a random unit direction "
        "(shared by every feature of a layer) instead of the feature's decoder row; causal and "
        "pathways compare each effect with this band (16 for a demo, >= 100 at scale)")
    null_span: Literal["random", "decoder"] = Field(
        "random", description="null directions uniform on the sphere, or random combinations "
                              "of the SAE's decoder rows ('another direction of the same kind')")
    null_conditions: list[str] = Field(
        default_factory=list, description="conditions that get null arms (default: every "
                                          "patched condition)")
    doses: list[float] = Field(
        default_factory=list, description="dose ladder: for each context, one condition per "
        "dose clamping the feature to dose x its own activation (1 = no-op), named "
        "<context>_dose<d>; null arms and the behavioural direction get the same ladder")
    seed_matched: bool = Field(
        True, description="trial t of a context uses the same prompt and the same sampling "
        "seed in every arm (baseline, features, nulls), so arms can be compared pair by pair; "
        "false: seeds also depend on the feature and condition (featurepath 0.1)")
    behavioural_direction: bool = Field(
        False, description="positive control: also patch, at each patched layer, the direction "
        "from stopping to continuing decisions (difference of mean residuals at the decision "
        "token over play's decision points), under every scale condition")
    direction_nulls: bool = Field(
        True, description="the behavioural direction also gets the null arms (in the null "
        "conditions that clamp by scale): the same per-row magnitude along the same random "
        "directions, so the positive control is measured against a band of its own size too")
    direction_from: str | None = Field(
        None, description="cross-task transfer: another run directory of the same model (any "
        "task) whose behavioural direction (continue minus exit of its own task) is patched "
        "here instead of this run's; implies behavioural_direction (see docs/tasks.md)")
    transfer_features: bool = Field(
        False, description="with direction_from: also patch the other run's confirmed "
        "features (confirm/verdicts.parquet, significant), labelled 'transfer'; needs the "
        "same SAEs")

    @model_validator(mode="after")
    def _transfer_needs_source(self):
        if self.transfer_features and not self.direction_from:
            raise ValueError("transfer_features needs direction_from (the run to take them from)")
        return self

    @model_validator(mode="after")
    def _constrained_needs_completion(self):
        if self.sampling.answer == "constrained" and self.protocol != "completion":
            raise ValueError("sampling.answer 'constrained' works with protocol 'completion' only")
        return self

    def all_conditions(self) -> list[ConditionSpec]:
        """The configured conditions plus the dose ladder's (``<context>_dose<d>``, a scale
        clamp per dose and context), in a fixed order."""
        contexts = list(dict.fromkeys(c.context for c in self.conditions))
        ladder = [ConditionSpec(name=f"{ctx}_dose{d:g}", context=ctx, patch="scale", scale=d)
                  for ctx in contexts for d in self.doses]
        return [*self.conditions, *ladder]

    @model_validator(mode="after")
    def _null_conditions_exist(self):
        names = {c.name for c in self.all_conditions()}
        unknown = [n for n in self.null_conditions if n not in names]
        if unknown:
            raise ValueError(f"null_conditions {unknown} are not conditions (have "
                             f"{sorted(names)})")
        return self

    @field_validator("features", "record")
    @classmethod
    def _feature_keys(cls, v: list[str]) -> list[str]:
        for key in v:
            parse_feature_key(key)
        return v

    @field_validator("conditions")
    @classmethod
    def _conditions_usable(cls, v: list[ConditionSpec]) -> list[ConditionSpec]:
        """Refuse condition lists that would run but give meaningless results.

        Trials are looked up by condition name, so two conditions with one name would run the
        rows of one under the other's context; and every patched condition is compared with
        a baseline (``patch: none``), so a list without any gives trials no analysis can use.
        """
        if not v:
            raise ValueError("no conditions; list at least a baseline and one patched condition")
        seen: set[str] = set()
        for c in v:
            if c.name in seen:
                raise ValueError(f"condition name {c.name!r} is used twice; names must be unique")
            seen.add(c.name)
        if not any(c.patch == "none" for c in v):
            raise ValueError("no baseline condition (patch: none); every patched condition is "
                             "compared with one, e.g. {name: safe_baseline, context: safe}")
        return v


class AnalysisSection(_Strict):
    """Thresholds of causal, pathways, words and the report (``featurepath causal RUN`` etc.
    read them from ``RUN/config.yaml``; a command-line flag overrides them)."""

    alpha: float = Field(0.05, gt=0.0, lt=1.0,
                         description="FDR level (Benjamini-Hochberg) of every analysis stage")
    min_d: float = Field(0.5, ge=0.0, description="minimum |d| of a pathway edge")
    confirm_share: float = Field(
        0.5, ge=0.0, lt=1.0, description="share of every prompt population (states, play's "
        "games) held out for `featurepath confirm`, by a hash of the prompt (or game); "
        "discover, screen and patch see only the rest (0: no held-out prompts)")
    same_effect_tol: float = Field(
        0.5, ge=0.0, description="flag a feature whose safe- and risky-value effects agree in "
                                 "sign and differ by at most this share of the larger")
    n_boot: int = Field(1000, ge=0, description="bootstrap resamples for bet-size CIs (0: none)")
    min_effect_p_stop: float = Field(
        0.01, ge=0.0, description="smallest |change in P(exit)| a causal test may call "
                                  "significant (a practical minimum, not only q <= alpha)")
    min_effect_rate: float = Field(
        0.05, ge=0.0, description="smallest |change in stop rate| or |change in invalid rate| "
                                  "a causal test may call significant")
    def min_effect_by_kind(self) -> dict[str, float]:
        """The practical minimum per metric kind (``MetricSpec.kind``): the readout's, the
        rates' (the invalid rate too) and the amount's."""
        return {"readout": self.min_effect_p_stop, "rate": self.min_effect_rate,
                "invalid": self.min_effect_rate, "amount": self.min_effect_bet}

    min_effect_bet: float = Field(
        0.1, ge=0.0, description="smallest |rank-biserial r| (within prompts) of bet sizes a "
                                 "causal test may call significant")
    words_prior: float = Field(1000.0, gt=0.0,
                               description="Dirichlet prior strength of the word analysis "
                                           "(Monroe et al. 2008)")
    words_permutations: int = Field(
        2000, ge=1, description="permutations of whole responses per word comparison (the "
                                "smallest word p-value is 1/(1 + this))")
    words_token_pattern: str | None = Field(
        None, description="regex for word tokens (default: dollar amounts, numbers, words)")


class ConfirmSection(_Strict):
    """``featurepath confirm``: a pre-registered test of a few candidates on the held-out
    prompts, against random directions drawn sequentially (see docs/confirm.md)."""

    top_n: int = Field(8, ge=1, description="candidates taken from the screen, discover or the "
                                            "first patch round when no features are given")
    features: list[str] = Field(default_factory=list, description="L{layer}-{id} or "
                                "L{layer}~direction; empty = the top_n candidates")
    conditions: list[str] = Field(
        default_factory=list, description="patched conditions to confirm (default: "
        "patch.null_conditions, else every patched condition); tests = features x conditions")
    metric: str = Field(
        "p_stop", description="the one primary metric: the task's readout at the decision token "
        "(p_stop, or the task's readout metric's name; one row per prompt and draw), or its "
        "sampled rate (a metric of the task of kind rate; trials rows per prompt)")
    trials: int | None = Field(None, ge=1, description="sampled answers per prompt and arm for "
                               "a sampled metric (default patch.trials)")
    h: int = Field(10, ge=1, description="a feature stops drawing null directions after h "
                                         "null effects at least as extreme as its own")
    round_size: int = Field(16, ge=1, description="null directions per round, shared by every "
                                                  "undecided test of a layer")
    cap: int | None = Field(None, ge=1, description="most null directions per test (default "
                                                    "max(99, ceil(2N/alpha) - 1))")
    max_rows: int = Field(256, ge=1, description="rows (arms x prompts) per forward batch")

    @field_validator("features")
    @classmethod
    def _feature_keys(cls, v: list[str]) -> list[str]:
        for key in v:  # an SAE feature, or a layer's behavioural direction
            parse_test_key(key)
        return v


class LlamaScopeSection(_Strict):
    """How Llama Scope thresholds are read (see docs/saes.md; ``featurepath sae check`` says
    which reading fits). Other SAE formats ignore this section."""

    threshold: Literal["scaled", "stored"] = Field(
        "scaled", description="scaled: jump_relu_threshold x s (SAELens); stored: as written")
    decoder_norm: bool = Field(False, description="gate on pre-activation x decoder norm")


#: Devices torch can be asked for by name; availability is checked when the model loads
#: (:func:`featurepath.models.check_device`), so a config written on a GPU machine still loads.
DEVICE_PATTERN = r"(cpu|cuda|mps|xpu)(:\d+)?"
#: Seeds are stored in int64 parquet columns and fed to torch generators: 0 <= seed < 2**63.
MAX_SEED = 2**63 - 1


class RunConfig(_Strict):
    task: str = Field(DEFAULT_TASK, description="the behaviour studied: a registered task "
                                                  "(featurepath.tasks.task_names())")
    model: str = "embedded"
    saes: str = "embedded"
    llamascope: LlamaScopeSection = Field(default_factory=LlamaScopeSection)
    dtype: str | None = None
    #: dtype the SAEs are held and computed in; None keeps each file's (an SAELens config's
    #: dtype, float32 for the other formats), as SAELens's load_from_disk(dtype=...) does
    sae_dtype: Literal["float32", "bfloat16", "float16", "float64"] | None = None
    device: str | None = None
    seed: int = Field(0, ge=0, le=MAX_SEED)
    play: PlaySection = Field(default_factory=PlaySection)
    discover: DiscoverSection = Field(default_factory=DiscoverSection)
    screen: ScreenSection = Field(default_factory=ScreenSection)
    patch: PatchSection = Field(default_factory=PatchSection)
    analysis: AnalysisSection = Field(default_factory=AnalysisSection)
    confirm: ConfirmSection = Field(default_factory=ConfirmSection)

    @model_validator(mode="before")
    @classmethod
    def _rules_under_play(cls, data: Any) -> Any:
        """Move the task's rule keys written directly under ``play:`` (how configs spelled
        them before ``play.rules`` existed) into ``play.rules``, so old configs keep working
        and every task's rules live in one place."""
        if not isinstance(data, dict) or not isinstance(data.get("play"), dict):
            return data
        from featurepath.tasks import get_task, task_names

        name = data.get("task", DEFAULT_TASK)
        if name not in task_names():
            return data  # the task validator says so
        fields = set(get_task(name).config_class.model_fields) - set(PlaySection.model_fields)
        play = dict(data["play"])
        moved = {k: play.pop(k) for k in list(play) if k in fields}
        if moved:
            play["rules"] = {**moved, **dict(play.get("rules") or {})}
            data = {**data, "play": play}
        return data

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        from featurepath.tasks import task_names

        if v not in task_names():
            raise ValueError(f"unknown task {v!r}; known tasks: {', '.join(task_names())}")
        return v

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str | None) -> str | None:
        import re

        if v is not None and not re.fullmatch(DEVICE_PATTERN, v):
            raise ValueError(f"unknown device {v!r}; use cpu, cuda, cuda:N or mps")
        return v


def task_of(cfg: RunConfig | None = None) -> Any:
    """The :class:`~featurepath.tasks.base.Task` a config studies (the default task for
    ``None``). Why here: the analysis stages read the task's metrics and split labels through
    the config, as they read its thresholds, and never import a task themselves."""
    from featurepath.tasks import get_task

    return get_task(cfg.task if cfg is not None else DEFAULT_TASK)


def _fmt_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"].replace("Extra inputs are not permitted", "unknown key")
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return f"{source}: " + "; ".join(parts) + more


def config_from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(_fmt_error(exc, source)) from None


def load_config(path: str | Path) -> RunConfig:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a text file (not UTF-8); give a YAML config") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of settings")
    return config_from_dict(data or {}, str(p))


def base_config(run_dir: Path, config: Path | None = None) -> RunConfig:
    """``--config FILE`` if given, else ``RUN/config.yaml`` if the run has one, else defaults."""
    if config is not None:
        return load_config(config)
    if (Path(run_dir) / "config.yaml").exists():
        return load_config(Path(run_dir) / "config.yaml")
    return RunConfig()


def resolve_config(run_dir: str | Path, config: str | Path | None = None,
                   **overrides: Any) -> RunConfig:
    """``--config FILE`` > ``RUN/config.yaml`` > defaults, then non-None command-line overrides
    (dotted keys like ``analysis.alpha``). Nothing is written: a command that fails on bad input
    must not rewrite the run's config; :func:`record_config` does that once a stage succeeded."""
    return with_overrides(base_config(Path(run_dir), Path(config) if config else None),
                          overrides)


def record_config(run_dir: str | Path, cfg: RunConfig) -> Path:
    """Write ``RUN/config.yaml`` after a stage succeeded, so the run says how it was made.

    The one place the run's config is written; every ``run_<stage>`` calls it last."""
    path = RunDir(run_dir).config
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_config(cfg, path)


def with_overrides(cfg: RunConfig, overrides: dict[str, Any] | None) -> RunConfig:
    """``cfg`` with dotted-key overrides (``{"patch.trials": 5}``; ``None`` values skipped),
    validated as a whole so an error names the key."""
    data = cfg.model_dump(mode="json")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config_from_dict(data, "command line")


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """``cfg`` as YAML at ``path``, atomically (a kill leaves the old file or the new one)."""
    return atomic_write(Path(path), dump_config(cfg))


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + " ...]" if text[0] == "[" \
        else text[:limit - 3] + "..."


def diff_configs(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (for refusing a resume with a changed config)."""
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_configs(va, vb, key + ".")
        elif va != vb:
            out.append(f"{key}: {_short(va)} -> {_short(vb)}")
    return out
