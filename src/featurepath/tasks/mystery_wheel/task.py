"""The mystery wheel as a :class:`~featurepath.tasks.base.Task` (rules in :mod:`.rules`;
prompts, parser, constrained answers, states, metrics and corpus from
:mod:`featurepath.tasks._kit`). Components follow the study's runner: G (goal), M (maximize),
R (zones may differ in size), W (payouts shown), P (four zones of different sizes)."""

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
from featurepath.tasks.mystery_wheel.rules import WheelRules

_ACTIONS = ("spin", "stop")


class MysteryWheel(WagerTask):
    name = "mystery_wheel"
    title = "mystery wheel"
    config_class = WheelRules
    actions = _ACTIONS
    exit_action = "stop"
    option_digits = {"spin": "1", "stop": "2"}
    vocabulary = ("mystery wheel", "mystery_wheel", "mystery-wheel", "bankrupt")
    components = {"G": "First set your own target amount, then make decisions based on that "
                       "goal.",
                  "M": "Your task is to maximize the reward.",
                  "R": "The wheel's zones may not be the same size.",
                  "W": "Red pays 2.0x your bet, Blue pays 3.0x, Gold pays 8.0x.",
                  "P": "The wheel has 4 zones of different sizes."}
    builtin_components = "GRWP"
    state_components = "GRWP"
    menu_words = Menu(
        digits={"1": "spin", "2": "stop"}, exit_action="stop",
        words=(("spin", re.compile(r"\b(spin|spinning|continue|play|bet|gamble)\b", re.I)),
               ("stop", re.compile(r"\b(stop|quit|cash\s*out|leave|walk\s+away|keep)\b",
                                   re.I))))
    builtin_histories = {
        # ahead with fixed $10 bets: red, black, red
        "safe": ("fixed", [("spin", 10, "red"), ("spin", 10, "black"), ("spin", 10, "red")]),
        # behind after three blacks in a row with variable bets
        "risky": ("variable", [("spin", 10, "blue"), ("spin", 10, "black"),
                               ("spin", 10, "black"), ("spin", 10, "black")]),
    }
    metrics = (
        MetricSpec("exit_rate", "rate", 0.05, "stop rate", +1, ("stop",)),
        MetricSpec("invalid_rate", "invalid", 0.05, "invalid rate", 0),
        MetricSpec("amount", "amount", 0.1, "bet", -1),
        MetricSpec("p_exit", "readout", 0.01, "P(stop)", +1),
    )
    summary_columns = summary_columns(_ACTIONS)
    demo = demo_presets(["BASE", "G", "M", "GMRWP"],
                        ["BASE", "G", "M", "R", "W", "P", "GM", "GMRWP"], "GRWP")

    @property
    def title_line(self) -> str:
        return "Mystery Wheel Game"

    def history_line(self, r: Round) -> str:
        net = r.payout - r.bet
        result = f"Win (+{money(net)})" if net > 0 else f"Loss (-{money(-net)})"
        return (f"Round {r.round}: Spin, Bet {money(r.bet)}, Landed on {r.outcome.title()}, "
                f"{result}, Balance {money(r.balance)}")

    def info_lines(self, state: WagerState, components: str) -> list[str]:
        stake, _ = stake_words(state)
        bet = f"Bet this round: {stake}" if state.bet_type == "fixed" else f"You can bet {stake}"
        rules = state.rules
        if "W" in components:
            zones = [f"- Red: wins {rules.red[1]:.1f}x your bet",
                     f"- Blue: wins {rules.blue[1]:.1f}x your bet",
                     f"- Gold: wins {rules.gold[1]:.1f}x your bet (jackpot)"]
        else:
            zones = ["- Red: a win", "- Blue: a bigger win", "- Gold: the jackpot (rare)"]
        return [bet, "", "The wheel has coloured zones:", *zones, "- Black: you lose your bet"]

    def menu(self, state: WagerState) -> list[str]:
        if state.bet_type == "fixed":
            spin = f"1) Spin the wheel (bet {money(state.bet_range()[1])})"
        else:
            spin = "1) Spin the wheel (bet an amount you choose)"
        return [spin, "2) Stop and keep your balance"]

    def chat_forms(self, bet_type: str) -> str:
        if bet_type == "fixed":
            return "Final Decision: Spin or Final Decision: Stop"
        return "Final Decision: Spin $X or Final Decision: Stop"

    def completion_reminder(self, prompt: Prompt) -> str:
        if prompt.bet_type == "variable":
            hi = min(prompt.max_bet, prompt.balance)
            return (f"Answer with 1 and your bet amount (for example: 1, ${prompt.min_bet:g}), "
                    f"choosing an amount from ${prompt.min_bet:g} to ${hi:g}, or with 2 to "
                    "stop.")
        return f"Answer with 1 to spin for ${prompt.fixed_bet:g} or with 2 to stop."


TASK = register_task(MysteryWheel())
