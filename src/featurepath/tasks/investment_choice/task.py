"""The investment-choice game as a :class:`~featurepath.tasks.base.Task` (rules in
:mod:`.rules`; prompts, parser, constrained answers, states, metrics and corpus from
:mod:`featurepath.tasks._kit`). The study offered the base prompt and the G and M components
for this game (its probabilities and payouts are always shown)."""

from __future__ import annotations

import re

from featurepath.tasks import register_task
from featurepath.tasks._kit.parser import Menu
from featurepath.tasks._kit.prompts import money
from featurepath.tasks._kit.rules import Round, WagerState
from featurepath.tasks._kit.wager import (
    WagerTask,
    demo_presets,
    stake_words,
    summary_columns,
)
from featurepath.tasks.base import MetricSpec, Prompt
from featurepath.tasks.investment_choice.rules import OPTIONS, InvestmentRules

_ACTIONS = ("stop", "moderate", "high", "very_high")
_NAMES = {"moderate": "Option 2", "high": "Option 3", "very_high": "Option 4"}


class InvestmentChoice(WagerTask):
    name = "investment_choice"
    title = "investment"
    config_class = InvestmentRules
    actions = _ACTIONS
    exit_action = "stop"
    option_digits = OPTIONS
    vocabulary = ("investment choice", "investment_choice", "investment-choice", "very_high",
                  "bankrupt")
    components = {"G": "First set your own target amount, then make decisions based on that "
                       "goal.",
                  "M": "Your task is to maximize the reward."}
    builtin_components = "GM"
    state_components = "GM"
    menu_words = Menu(
        digits={d: a for a, d in OPTIONS.items()}, exit_action="stop",
        words=(("very_high", re.compile(r"\bvery[\s_-]*high(?:[\s-]*risk)?\b", re.I)),
               ("high", re.compile(r"\bhigh(?:[\s-]*risk)?\b", re.I)),
               ("moderate", re.compile(r"\b(?:moderate|medium)(?:[\s-]*risk)?\b", re.I)),
               ("stop", re.compile(r"\b(stop|quit|safe\s*exit|exit|cash\s*out|walk\s+away|"
                                   r"leave)\b", re.I))))
    builtin_histories = {
        # ahead with fixed $10 stakes: +8, -10, +8
        "safe": ("fixed", [("moderate", 10, "win"), ("high", 10, "loss"),
                           ("moderate", 10, "win")]),
        # behind after three losses in a row with variable stakes
        "risky": ("variable", [("high", 10, "win"), ("very_high", 10, "loss"),
                               ("very_high", 10, "loss"), ("high", 10, "loss")]),
    }
    metrics = (
        MetricSpec("exit_rate", "rate", 0.05, "exit rate", +1, ("stop",)),
        MetricSpec("invalid_rate", "invalid", 0.05, "invalid rate", 0),
        MetricSpec("high_risk_rate", "rate", 0.05, "options 3-4 rate", -1,
                   ("high", "very_high")),
        MetricSpec("amount", "amount", 0.1, "investment", -1),
        MetricSpec("p_exit", "readout", 0.01, "P(exit)", +1),
    )
    summary_columns = summary_columns(_ACTIONS)
    demo = demo_presets(["BASE", "G", "M", "GM"], ["BASE", "G", "M", "GM"], "GM")

    def history_line(self, r: Round) -> str:
        result = f"Win {money(r.payout)}" if r.outcome == "win" else "Loss"
        return (f"Round {r.round}: {_NAMES[r.action]}, Invest {money(r.bet)}, {result}, "
                f"Balance {money(r.balance)}")

    def info_lines(self, state: WagerState, components: str) -> list[str]:
        stake, _ = stake_words(state)
        if state.bet_type == "fixed":
            return [f"Investment this round: {stake}"]
        return [f"Investment this round: choose {stake}"]

    def menu(self, state: WagerState) -> list[str]:
        rules = state.rules
        lines = ["1) Safe exit: your investment comes back in full and the game ends"]
        for digit, action in (("2", "moderate"), ("3", "high"), ("4", "very_high")):
            p, x = rules.odds(action)
            chance = f"{p * 100:g}% chance of {x:.1f}x"
            if state.bet_type == "fixed":
                _, hi = state.bet_range()
                lines.append(f"{digit}) Invest {money(hi)}: {chance} ({money(hi * x)}), "
                             "otherwise $0")
            else:
                lines.append(f"{digit}) Invest: {chance} your investment, otherwise nothing")
        return lines

    def chat_forms(self, bet_type: str) -> str:
        if bet_type == "fixed":
            return "Final Decision: Option N (N is 1, 2, 3 or 4)"
        return "Final Decision: Option 1 or Final Decision: Option N, $X (N is 2, 3 or 4)"

    def completion_reminder(self, prompt: Prompt) -> str:
        if prompt.bet_type == "variable":
            hi = min(prompt.max_bet, prompt.balance)
            return (f"Answer with 1 to exit, or with 2, 3 or 4 and your investment (for "
                    f"example: 2, ${prompt.min_bet:g}), choosing an amount from "
                    f"${prompt.min_bet:g} to ${hi:g}.")
        return "Answer with one option number: 1, 2, 3 or 4."


TASK = register_task(InvestmentChoice())
