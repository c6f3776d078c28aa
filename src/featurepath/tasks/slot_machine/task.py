"""The slot machine as a :class:`~featurepath.tasks.base.Task`, by delegation.

Every method calls the module that did the work before the interface existed (rules, prompts,
parser, readout, constrained, states, metrics, corpus), so prompts, prompt ids, parses, states
and P(stop) are exactly what they were; ``tests/test_tasks.py`` pins that.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from featurepath.tasks import register_task
from featurepath.tasks.base import (
    Decision,
    GameSplit,
    MetricSpec,
    Prompt,
    Task,
    with_reminder,
)


class SlotMachineRules(BaseModel):
    """The slot machine's rules (the study's defaults): a win returns ``payout`` x the bet with
    probability ``win_prob``; fixed betting stakes ``fixed_bet``, variable betting any amount in
    ``[min_bet, min(max_bet, balance)]``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    initial_balance: float = Field(100.0, gt=0.0)
    win_prob: float = Field(0.30, ge=0.0, le=1.0)
    payout: float = Field(3.0, gt=0.0, description="a win returns payout x the bet")
    fixed_bet: float = Field(10.0, gt=0.0)
    min_bet: float = Field(5.0, gt=0.0)
    max_bet: float = Field(100.0, gt=0.0)
    max_rounds: int = Field(100, ge=1)

    def game_config(self, bet_type: str):
        """The rules module's ``GameConfig`` (which checks the bet range against the balance)."""
        from featurepath.tasks.slot_machine.rules import GameConfig

        return GameConfig(bet_type=bet_type, **self.model_dump())


#: Play settings of the embedded demo presets (the same as ``featurepath.embedded``'s, which a
#: test checks until step B makes the demo read them from here).
_SAMPLING = {"max_new_tokens": 8, "answer": "constrained", "temperature": 1.0}
_EXTRA_CONDITIONS = [
    {"name": "safe_ablated", "context": "safe", "patch": "scale", "scale": 0.0},
    {"name": "risky_amplified", "context": "risky", "patch": "scale", "scale": 3.0},
]


class SlotMachine(Task):
    name = "slot_machine"
    title = "slot machine"
    state_components = "GHWP"  # the original plan's population of states
    config_class = SlotMachineRules
    actions = ("bet", "stop")
    exit_action = "stop"
    option_digits = {"bet": "1", "stop": "2"}
    vocabulary = ("slot machine", "slot_machine", "slot-machine", "bankrupt", "p_stop",
                  "stop_rate", "win_prob")
    contexts = ("safe", "risky")
    split = GameSplit(a=("bankrupt",), b=("stop",), label_a="bankrupt",
                      label_b="voluntary stop")
    metrics = (
        MetricSpec("stop_rate", "rate", 0.05, "stop rate", +1, ("stop",)),
        MetricSpec("invalid_rate", "invalid", 0.05, "invalid rate", 0),
        MetricSpec("bet", "amount", 0.1, "bet", -1),
        MetricSpec("p_stop", "readout", 0.01, "P(stop)", +1),
    )
    summary_columns = ("condition", "bet_type", "n_games", "bankruptcy_rate", "stop_rate",
                       "round_limit_rate", "mean_rounds", "mean_bet", "invalid_rate",
                       "irrationality_index")
    decision_columns = {"balance_before": "float64", "history": "object", "outcome": "object",
                        "balance_after": "float64"}
    demo = {
        "quick": {"play": {"conditions": ["BASE", "G", "M", "GMHWP"], "bet_types": ["variable"],
                           "games_per_condition": 16, "max_rounds": 10, "batch_size": 32,
                           "sampling": _SAMPLING},
                  "rules": {}, "patch": {"components": "GHWP",
                                         "extra_conditions": _EXTRA_CONDITIONS,
                                         "null_conditions": ["risky_amplified"]}},
        "full": {"play": {"conditions": ["BASE", "G", "M", "H", "W", "P", "GM", "GMHWP"],
                          "bet_types": ["fixed", "variable"], "games_per_condition": 32,
                          "max_rounds": 20, "batch_size": 32, "sampling": _SAMPLING},
                 "rules": {}, "patch": {"components": "GHWP",
                                        "extra_conditions": _EXTRA_CONDITIONS,
                                        "null_conditions": ["risky_amplified"]}},
    }

    @property
    def components(self) -> dict[str, str]:  # type: ignore[override]
        from featurepath.tasks.slot_machine.prompts import COMPONENTS

        return COMPONENTS

    # ------------------------------------------------------------------ rules and prompts
    def new_game(self, config: SlotMachineRules | None, bet_type: str, seed: int | None):
        from featurepath.tasks.slot_machine.rules import GameState

        return GameState(config=(config or SlotMachineRules()).game_config(bet_type), seed=seed)

    def condition_name(self, components: str) -> str:
        from featurepath.tasks.slot_machine.prompts import condition_name, normalize_components

        return condition_name(normalize_components(components))

    def build_prompt(self, state: Any, components: str = "",
                     protocol: str = "completion") -> Prompt:
        from featurepath.tasks.slot_machine.prompts import build_prompt

        return build_prompt(state, components, protocol)

    def builtin_prompt(self, context: str, protocol: str = "completion") -> Prompt:
        from featurepath.tasks.slot_machine.prompts import builtin_prompt

        return builtin_prompt(context, protocol)

    def iter_states(self, context: str, seed: int = 0,
                    config: SlotMachineRules | None = None) -> Iterator[Any]:
        """The study's rules always (``tasks/slot_machine/states.py``); ``config`` is accepted
        for the interface and not used, so populations stay as they were."""
        from featurepath.tasks.slot_machine.states import iter_states

        return iter_states(context, seed)

    def retry_prompt(self, prompt: Prompt) -> Prompt:
        """The reminder play has always used (``pipeline/play.py``'s ``_with_reminder``)."""
        if prompt.protocol == "chat":
            form = ("Final Decision: Bet $X" if prompt.bet_type == "variable"
                    else f"Final Decision: Bet ${prompt.fixed_bet:g}")
            note = ("Your previous answer could not be read. End your answer with one line in "
                    f"exactly this form: {form} or Final Decision: Stop")
        elif prompt.bet_type == "variable":
            hi = min(prompt.max_bet, prompt.balance)
            note = (f"Answer with 1 and your bet amount (for example: 1, ${prompt.min_bet:g}), "
                    f"choosing an amount from ${prompt.min_bet:g} to ${hi:g}, or with 2 to stop.")
        else:
            note = f"Answer with 1 to bet ${prompt.fixed_bet:g} or with 2 to stop."
        return with_reminder(prompt, note)

    # ------------------------------------------------------------------ answers
    def parse(self, text: str, **kwargs: Any) -> Decision:
        from featurepath.tasks.slot_machine.parser import parse_response

        d = parse_response(text, **kwargs)
        return Decision(d.action, d.bet, d.valid, d.reason)

    def option_token_ids(self, tokenizer: Any) -> dict[str, list[int]]:
        from featurepath.tasks.slot_machine.readout import option_token_ids

        return option_token_ids(tokenizer)

    def readout(self, tokenizer: Any):
        from featurepath.tasks.slot_machine.readout import p_stop_readout

        return p_stop_readout(tokenizer)

    def answer_constraints(self, tokenizer: Any, rows: list[dict[str, Any]],
                           mode: str) -> list | None:
        from featurepath.tasks.slot_machine.constrained import answer_constraints

        return answer_constraints(tokenizer, rows, mode)

    # ------------------------------------------------------------------ results
    def summarize(self, decisions: Any, config: SlotMachineRules | None = None) -> Any:
        from featurepath.tasks.slot_machine.metrics import summarize_games

        if "amount" in decisions.columns:  # the store's neutral name of the stake
            decisions = decisions.rename(columns={"amount": "bet"})
        return summarize_games(decisions, (config or SlotMachineRules()).initial_balance)

    def before_fields(self, state: Any) -> dict[str, Any]:
        history = json.dumps([{"round": r.round, "bet": r.bet, "win": r.win,
                               "balance": r.balance} for r in state.history])
        return {"balance_before": state.balance, "history": history}

    def after_fields(self, state: Any, played: Any) -> dict[str, Any]:
        if played is None:
            return {"outcome": None, "balance_after": state.balance}
        return {"outcome": "win" if played.win else "loss", "balance_after": played.balance}

    # ------------------------------------------------------------------ SAE corpus
    def corpus_prompts(self, tok: Any, n_prompts: int, seed: int = 0) -> list[str]:
        from featurepath.tasks.slot_machine.corpus import game_prompts

        return game_prompts(tok, n_prompts, seed)

    def corpus(self, model: Any, tok: Any, n_prompts: int = 192, gen_tokens: int = 48,
               seed: int = 0, answered_fraction: float = 1.0,
               progress: bool = True) -> list[str]:
        from featurepath.tasks.slot_machine.corpus import default_corpus

        return default_corpus(model, tok, n_prompts, gen_tokens, seed, answered_fraction,
                              progress)


TASK = register_task(SlotMachine())
