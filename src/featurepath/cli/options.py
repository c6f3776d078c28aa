"""Options and choices shared by the commands, and how flags become config overrides.

Every choice a config field restricts (``patch.mode`` and friends) is an Enum here whose values
are the config's literals, so ``--help`` lists them and a typo is refused by the parser.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from featurepath.choices import BACKENDS, METHODS, MODES, POSITIONS, PROMPT_SETS, PROTOCOLS
from featurepath.config import RunConfig, resolve_config
from featurepath.errors import ConfigError
from featurepath.rundir import SIGNALS


def choice_enum(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A ``str`` Enum whose members are ``values`` (so ``--help`` lists them and click refuses a
    typo), built from the one spelling in :mod:`featurepath.choices`."""
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


Mode = choice_enum("Mode", MODES)
Method = choice_enum("Method", METHODS)
PromptSet = choice_enum("PromptSet", PROMPT_SETS)
Positions = choice_enum("Positions", POSITIONS)
Backend = choice_enum("Backend", BACKENDS)
Protocol = choice_enum("Protocol", PROTOCOLS)
#: pathways --signal: the recorded signals plus "both" (decision and gen_mean)
Signal = choice_enum("Signal", (*SIGNALS, "both"))


RUN_DIR = typer.Argument(..., help="Run directory (created if missing); every stage reads and "
                                   "writes here.")
EXISTING_RUN = typer.Argument(..., help="Run directory of an earlier stage.")
CONFIG = typer.Option(None, "--config", "-c", help="YAML config (default: RUN_DIR/config.yaml, "
                                                   "else built-in defaults).")
PROGRESS = typer.Option(True, help="Show progress bars.")
# Every stage that runs the model takes --model, and every stage that loads SAEs --saes: the
# same option objects, so the flags read the same everywhere (config keys model and saes).
MODEL = typer.Option(None, "--model", help="'embedded' (SmolLM2-135M-Instruct), a local HF "
                                           "model directory or a cached HF id (config: model).")
SAES = typer.Option(None, "--saes", help="'embedded', an SAE directory, a directory of SAE "
                                         "directories, or a comma-separated list of SAE "
                                         "directories (config: saes).")
# The behaviour studied: one option object for the stages that start a run (play, demo).
TASK = typer.Option(None, "--task", help="The game played (config: task; default: the config's, "
                                         "else the default task): a registered task, listed "
                                         "in docs/tasks.md.")
ALPHA = typer.Option(None, "--alpha", help="FDR level, Benjamini-Hochberg (overrides "
                                           "analysis.alpha of the run's config; default 0.05).")


def value(choice: Enum | None) -> Any:
    """An Enum option's config value (None stays None: "not given")."""
    return None if choice is None else choice.value


def csv_list(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None stays None; an empty list is refused."""
    if text is None:
        return None
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"empty list {text!r}; give comma-separated names")
    return items


def config_for(run_dir: Path, config: Path | None, **overrides: Any) -> RunConfig:
    """The run's config (``--config`` > ``RUN/config.yaml`` > defaults) with the flags given
    (dotted keys, e.g. ``**{"analysis.alpha": 0.01}``) applied and validated. A ``--config``
    that leaves out settings in which the run differs from the defaults gets one warning."""
    cfg = resolve_config(run_dir, config, **overrides)
    if config is not None:
        unnamed = unnamed_differences(run_dir, config)
        if unnamed:
            import warnings

            shown = "; ".join(unnamed[:4]) + (f"; and {len(unnamed) - 4} more"
                                               if len(unnamed) > 4 else "")
            warnings.warn(f"--config {config} replaces {run_dir}/config.yaml, and settings it "
                          f"does not name take their defaults, unlike the run's: {shown}. Name "
                          "them in the file, or leave out --config to use the run's own",
                          stacklevel=2)
    return cfg


def unnamed_differences(run_dir: Path, config: Path) -> list[str]:
    """Dotted keys the run's ``config.yaml`` sets differently from ``config`` although
    ``config`` does not name them (``"key: run -> default"``); ``[]`` without a run config.

    Why: ``--config`` replaces the run's config rather than merging into it, so a file holding
    only the section a user meant to change silently resets every other section."""
    import yaml

    from featurepath.config import diff_configs, load_config

    run_cfg = Path(run_dir) / "config.yaml"
    if not run_cfg.exists():
        return []
    try:
        named_raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        run, given = load_config(run_cfg), load_config(config)
    except (ConfigError, OSError, ValueError, yaml.YAMLError):
        return []  # the caller's own load says what is wrong with the file

    def keys(d: Any, prefix: str = "") -> set[str]:
        out = set()
        for k, v in (d.items() if isinstance(d, dict) else ()):
            out.add(prefix + str(k))
            out |= keys(v, f"{prefix}{k}.")
        return out

    named = keys(named_raw)
    diffs = diff_configs(run.model_dump(mode="json"), given.model_dump(mode="json"))
    return [d for d in diffs if d.split(":")[0] not in named
            and not any(d.startswith(n + ".") for n in named)]
