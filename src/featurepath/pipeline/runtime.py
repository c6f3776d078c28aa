"""Loading a run's model and SAEs, shared by the stages that run the model."""

from __future__ import annotations

from featurepath.config import RunConfig


def load_runtime(cfg: RunConfig, progress: bool = True):
    """``(model, tokenizer, {layer: SAE})`` for a config.

    The embedded SAE set is trained on first use, on the default task's corpus (the text the
    model reads and writes in that game), whatever the run's task, so one cached set serves
    every task; ``featurepath.sae`` itself knows no task, so the corpus builder is passed in
    here.
    """
    from featurepath.models import load_model
    from featurepath.sae.registry import load_sae_set
    from featurepath.tasks import DEFAULT_TASK, get_task

    default_corpus = get_task(DEFAULT_TASK).corpus

    model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    saes = load_sae_set(cfg.saes, model, tok, progress=progress, corpus=default_corpus,
                        llamascope_threshold=cfg.llamascope.threshold,
                        llamascope_decoder_norm=cfg.llamascope.decoder_norm,
                        dtype=cfg.sae_dtype)
    return model, tok, saes
