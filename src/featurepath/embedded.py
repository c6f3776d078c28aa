"""The embedded default's presets: which layers get SAEs, how the SAE sets are trained, and how
large each demo run is.

Why a module of its own: these numbers were tuned together on a 2-core CPU (SAE expansion vs
dead features, games vs endings, prompts vs trials), and a newcomer changing the demo's size
should find them in one place, apart from the code that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featurepath.config import DEFAULT_TASK, ConditionSpec, RunConfig
from featurepath.errors import ConfigError
from featurepath.sae.train import TrainConfig

#: Layers of the embedded model (30 blocks) that get SAEs: spread from early to late, skipping the
#: last block, whose output mostly serves the unembedding.
EMBEDDED_LAYERS: tuple[int, ...] = (3, 8, 13, 18, 23, 27)


@dataclass(frozen=True)
class Preset:
    """How much text to build and how long to train, for one embedded SAE set."""

    name: str
    n_prompts: int
    """Game prompts in the corpus."""
    gen_tokens: int
    """Tokens the model samples after each answered prompt."""
    answered_fraction: float
    """Share of prompts followed by a sampled answer (generation is the slow part on CPU)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    heldout_fraction: float = 0.1
    loss_texts: int = 12
    seed: int = 0


SAE_PRESETS: dict[str, Preset] = {
    # Tuned on 2 CPU cores: ~30k training tokens; expansion 4 because at expansion 8 a third of
    # the early-layer features never fire on held-out text with this little data.
    "quick": Preset("quick", n_prompts=200, gen_tokens=40, answered_fraction=0.3,
                    train=TrainConfig(expansion=4, k=32, lr=1e-3, batch_size=512, epochs=3,
                                      dead_tokens=10_000),
                    heldout_fraction=0.15, loss_texts=8),
    "full": Preset("full", n_prompts=1500, gen_tokens=64, answered_fraction=0.5,
                   train=TrainConfig(expansion=8, k=32, lr=5e-4, batch_size=1024, epochs=6,
                                     dead_tokens=50_000),
                   heldout_fraction=0.1, loss_texts=48),
}


DEMO_PRESETS: dict[str, dict[str, Any]] = {
    # Sizes shared by every task; the play settings are the task's (``Task.demo``): the
    # embedded 135M model rarely writes a readable free answer, so play uses constrained
    # answers (option tokens, then a legal amount, sampled from the model) at temperature 1.
    # Patch samples free text, so the word analysis has something to read; causal also uses
    # P(exit), which needs no parsing.
    # The patch round's null band only describes (the claim is confirm's, with sequential null
    # directions), so the quick preset gives it 8 directions and 2 random checks: the patch
    # step is ~3,600 trials instead of ~6,500 (35 min on a contended 2-core machine).
    "quick": {
        "sae_preset": "quick", "n_features": 4, "trials": 24, "max_candidates": 8,
        "record_per_layer": 8,
        "patch_tokens": 16, "null_directions": 8, "screen_top_n": 1, "check_random": 2,
        "confirm_top_n": 4,
    },
    "full": {
        "sae_preset": "full", "n_features": 16, "trials": 30, "max_candidates": 32,
        "record_per_layer": 32,
        "patch_tokens": 24, "null_directions": 32, "screen_top_n": 2, "check_random": 8,
        "confirm_top_n": 8,
    },
}


def demo_config(preset: str, seed: int = 0, task: str = DEFAULT_TASK) -> RunConfig:
    """The demo's config for ``task``: the sizes of :data:`DEMO_PRESETS` with the task's own
    ``demo`` preset (play settings, rule overrides, patch components and extra conditions)."""
    from featurepath.tasks import get_task

    if preset not in DEMO_PRESETS:
        raise ConfigError(f"unknown demo preset {preset!r}; use quick or full")
    p = DEMO_PRESETS[preset]
    t = get_task(task).demo[preset]
    cfg = RunConfig(task=task, seed=seed, saes=f"embedded:{p['sae_preset']}")
    play = cfg.play.model_dump()
    play.update({k: v for k, v in t["play"].items() if k != "sampling"})
    play["sampling"].update(t["play"]["sampling"])
    play["rules"] = dict(t.get("rules") or {})
    cfg.play = type(cfg.play).model_validate(play)
    cfg.discover.max_candidates = p["max_candidates"]
    cfg.patch.trials = p["trials"]
    cfg.patch.prompt_set = "states"  # a population of distinct prompts per context
    cfg.patch.n_prompts = p["trials"]
    # Beside the six standard conditions (patch values = the feature's mean in the split's two
    # groups of games), the task's extra conditions, e.g. an ablation and an amplification:
    # clamping to a population mean moves a feature up on some prompts and down on others,
    # while these move it one way on every prompt, which is what a pathway test needs to see
    # downstream shifts.
    cfg.patch.components = t["patch"].get("components", cfg.patch.components)
    cfg.patch.conditions = [*cfg.patch.conditions,
                            *(ConditionSpec(**c) for c in t["patch"]["extra_conditions"])]
    cfg.patch.sampling.max_new_tokens = p["patch_tokens"]
    # Controls (issue 12): every feature's amplification is compared with the same clamp along
    # random directions of its size, and the behavioural direction (continue minus stop at the
    # decision token, from play) is patched under both scale conditions as a positive control.
    cfg.patch.null_directions = p["null_directions"]
    cfg.patch.null_conditions = list(t["patch"]["null_conditions"])
    cfg.patch.behavioural_direction = True
    # Candidates (issue 21): discover's picks plus the screen's top N per context x
    # intervention, and a random sample across the screen's ranking that checks it
    cfg.patch.candidates = "union"
    cfg.screen.top_n, cfg.screen.check_random = p["screen_top_n"], p["check_random"]
    # Confirmation (issue 22): the top N of the screen's ranking on the held-out prompts; N = 4
    # gives a cap of 159 null directions, and 1/160 still passes BH at alpha / N = 0.0125
    cfg.confirm.top_n = p["confirm_top_n"]
    return cfg
