"""featurepath: which SAE features cause a behaviour, how they drive each other, and which words
they put into a model's output.

The notebook front door (docs/api.md): every stage is ``run_<stage>(run_dir, cfg=None, *,
runtime=None, ...)`` and a :class:`Runtime` holds the model, tokenizer and SAEs once for all of
them. The names below are imported on first use (module ``__getattr__``), so ``import
featurepath`` — and with it every ``featurepath`` command's start-up — loads no torch, pandas
or pydantic.
"""

from __future__ import annotations

__version__ = "0.1.0"

from featurepath.errors import FeaturepathError  # noqa: E402

#: Public name -> module that defines it (imported the first time the name is read).
_LAZY = {
    "Runtime": "featurepath.pipeline.runtime",
    "RunConfig": "featurepath.config",
    "RunDir": "featurepath.rundir",
    "resolve_config": "featurepath.config",
    "run_play": "featurepath.pipeline.play",
    "run_discover": "featurepath.pipeline.discover",
    "run_screen": "featurepath.pipeline.screen",
    "run_patch": "featurepath.pipeline.patch_stage",
    "run_estimate": "featurepath.pipeline.estimate",
    "run_causal": "featurepath.analysis.causal",
    "run_pathways": "featurepath.analysis.pathways",
    "run_words": "featurepath.analysis.words_run",
    "run_report": "featurepath.report.html",
}

#: ``typing`` is not imported for this (15 ms cold): type checkers honour a TYPE_CHECKING flag
TYPE_CHECKING = False
if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from featurepath.analysis.causal import run_causal
    from featurepath.analysis.pathways import run_pathways
    from featurepath.analysis.words_run import run_words
    from featurepath.config import RunConfig, resolve_config
    from featurepath.pipeline.discover import run_discover
    from featurepath.pipeline.estimate import run_estimate
    from featurepath.pipeline.patch_stage import run_patch
    from featurepath.pipeline.play import run_play
    from featurepath.pipeline.runtime import Runtime
    from featurepath.pipeline.screen import run_screen
    from featurepath.report.html import run_report
    from featurepath.rundir import RunDir


def load_model(spec: str = "embedded", device: str | None = None, dtype: str | None = None):
    """Load ``(model, tokenizer)``; see :func:`featurepath.models.load_model`."""
    from featurepath.models import load_model as _load

    return _load(spec, device=device, dtype=dtype)


def __getattr__(name: str) -> object:
    """Import a public name's module on first use and cache the name in this module."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featurepath' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["FeaturepathError", "RunConfig", "RunDir", "Runtime", "load_model", "resolve_config",
           "run_play", "run_discover", "run_screen", "run_patch", "run_estimate", "run_causal",
           "run_pathways", "run_words", "run_report", "__version__"]
