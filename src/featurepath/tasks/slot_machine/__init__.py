"""The slot-machine gambling task of Lee et al. (2025), arXiv 2509.22818: rules, prompts, a strict
response parser, the decision-token P(stop) read-out and behavioural metrics."""

from __future__ import annotations

from featurepath.tasks.slot_machine.metrics import game_table, summarize_games
from featurepath.tasks.slot_machine.parser import Decision, parse_response
from featurepath.tasks.slot_machine.prompts import (
    COMPONENTS,
    Prompt,
    all_conditions,
    build_prompt,
    builtin_prompt,
    builtin_state,
    condition_name,
    normalize_components,
    render,
)
from featurepath.tasks.slot_machine.readout import option_token_ids, p_stop_from_logits
from featurepath.tasks.slot_machine.rules import (
    GameConfig,
    GameState,
    Round,
    play,
    validate_n_games,
)

__all__ = [
    "COMPONENTS", "Decision", "GameConfig", "GameState", "Prompt", "Round", "all_conditions",
    "build_prompt", "builtin_prompt", "builtin_state", "condition_name", "game_table",
    "normalize_components", "option_token_ids", "p_stop_from_logits", "parse_response", "play",
    "render", "summarize_games", "validate_n_games",
]
