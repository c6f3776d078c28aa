"""The loaded model, tokenizer and SAEs a run's stages share (:class:`Runtime`).

Loading SmolLM2 and six SAEs takes seconds to minutes; a notebook that calls play, discover,
screen and patch one after another should pay that once. Every stage that runs the model takes
``runtime=`` and loads its own (:func:`ensure_runtime`) only when given none, so the command
line (one stage per process) and a notebook (one process, many stages) call the same functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from featurepath.config import RunConfig
from featurepath.errors import ConfigError


@dataclass
class Runtime:
    """A model, its tokenizer and (loaded on first use) the run's SAEs, by layer.

    ``model_spec`` / ``saes_spec`` are what the runtime was loaded from (``None`` for one built
    by hand around an already loaded model): a stage whose config names another model or SAE
    set refuses the runtime instead of recording a config that does not say what ran. SAEs load
    lazily because play needs none and the embedded set is trained on first use (minutes).
    Unpacks as ``model, tok, saes = runtime`` for code written against the old tuple.
    """

    model: Any
    tokenizer: Any
    saes_given: dict[int, Any] | None = None
    cfg: RunConfig | None = None
    progress: bool = True
    model_spec: str | None = None
    saes_spec: str | None = None
    #: Seconds spent loading the model and (once loaded) the SAEs: ``estimate`` counts a
    #: worker's start-up in its wall time.
    load_seconds: float = 0.0
    _saes: dict[int, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._saes = self.saes_given

    @classmethod
    def load(cls, cfg: RunConfig | None = None, *, progress: bool = True,
             saes: bool = False) -> Runtime:
        """Load ``cfg.model`` (default config: the embedded model) now, and its SAEs now when
        ``saes`` is true, else the first time :attr:`saes` is read."""
        import time

        from featurepath.models import load_model

        cfg = cfg if cfg is not None else RunConfig()
        t0 = time.time()
        model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
        rt = cls(model, tok, cfg=cfg, progress=progress, model_spec=cfg.model,
                 saes_spec=_saes_spec(cfg), load_seconds=time.time() - t0)
        if saes:
            rt.saes  # noqa: B018 - load now: the caller wants the cost paid here
        return rt

    @property
    def tok(self) -> Any:
        """Short name the stages use for the tokenizer."""
        return self.tokenizer

    @property
    def device(self) -> Any:
        """The device the model's weights are on."""
        return next(self.model.parameters()).device

    @property
    def saes(self) -> dict[int, Any]:
        """``{layer: SAE}``, loaded (or trained, for the embedded set) on first read."""
        if self._saes is None:
            if self.cfg is None:
                raise ConfigError("this Runtime was built without SAEs or a config to load "
                                  "them from; pass saes_given=... or use Runtime.load(cfg)")
            import time

            t0 = time.time()
            self._saes = _load_saes(self.cfg, self.model, self.tokenizer, self.progress)
            self.load_seconds += time.time() - t0
        return self._saes

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.tokenizer, self.saes))

    def check(self, cfg: RunConfig, needs_saes: bool) -> None:
        """Refuse a runtime loaded from another model or SAE set than ``cfg`` names: the stage
        would record ``cfg`` as how the run was made while another model ran."""
        if self.model_spec is not None and self.model_spec != cfg.model:
            raise ConfigError(f"the runtime holds model {self.model_spec!r} but the config "
                              f"names {cfg.model!r}; load a Runtime for this config")
        if needs_saes and self.saes_spec is not None and self.saes_spec != _saes_spec(cfg):
            raise ConfigError(f"the runtime's SAEs are {self.saes_spec!r} but the config "
                              f"names {_saes_spec(cfg)!r}; load a Runtime for this config")


def _saes_spec(cfg: RunConfig) -> str:
    return str(cfg.saes)


def _load_saes(cfg: RunConfig, model: Any, tok: Any, progress: bool) -> dict[int, Any]:
    """The config's SAE set. The embedded set is trained on first use on the default task's
    corpus (the text the model reads and writes in that game), whatever the run's task, so one
    cached set serves every task; ``featurepath.sae`` itself knows no task, so the corpus
    builder is passed in here."""
    from featurepath.sae.registry import load_sae_set
    from featurepath.tasks import DEFAULT_TASK, get_task

    default_corpus = get_task(DEFAULT_TASK).corpus

    return load_sae_set(cfg.saes, model, tok, progress=progress, corpus=default_corpus,
                        llamascope_threshold=cfg.llamascope.threshold,
                        llamascope_decoder_norm=cfg.llamascope.decoder_norm,
                        dtype=cfg.sae_dtype)


def ensure_runtime(runtime: Runtime | tuple | None, cfg: RunConfig, *, progress: bool = True,
                   needs_saes: bool = True) -> Runtime:
    """The stage's runtime: the one given (checked against ``cfg``; a ``(model, tok, saes)``
    tuple is wrapped) or a fresh :meth:`Runtime.load` of ``cfg``."""
    if runtime is None:
        return Runtime.load(cfg, progress=progress, saes=needs_saes)
    if isinstance(runtime, tuple):
        model, tok, saes = runtime
        return Runtime(model, tok, saes_given=saes, cfg=cfg, progress=progress)
    runtime.check(cfg, needs_saes)
    return runtime


def load_runtime(cfg: RunConfig, progress: bool = True) -> Runtime:
    """The model and SAEs of ``cfg``, loaded now (unpacks as ``model, tok, saes``); used by
    workers that hold a runtime for a whole job (the Ray actors, the local backend)."""
    return Runtime.load(cfg, progress=progress, saes=True)
