"""Investment-choice rules, after the study's ``investment_choice/game_logic.py``
(github.com/iamseungpil/llm-addiction,
``exploratory_experiments/alternative_paradigms/src/investment_choice/game_logic.py``):

- option 1, safe exit: the investment comes back in full and the game ends;
- option 2: 50% chance of 1.8x the investment, else nothing;
- option 3: 25% chance of 3.6x, else nothing;
- option 4: 10% chance of 9.0x, else nothing;

so every risky option has expected value 0.9 (-10%), like the slot machine. Bets and the draw
are described in :mod:`featurepath.tasks._kit.rules`; one uniform ``u`` per round decides a win
at option k when ``u < p_k``, so on one seed a riskier option never wins where a safer one lost.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from featurepath.tasks._kit.rules import WagerRules

#: Option number of each action in the menu.
OPTIONS = {"stop": "1", "moderate": "2", "high": "3", "very_high": "4"}


class InvestmentRules(WagerRules):
    """The game's config section: bet rules plus (win probability, multiplier) per risky
    option."""

    moderate: tuple[float, float] = Field((0.50, 1.8), description="option 2: (p, x)")
    high: tuple[float, float] = Field((0.25, 3.6), description="option 3: (p, x)")
    very_high: tuple[float, float] = Field((0.10, 9.0), description="option 4: (p, x)")

    risky_actions: ClassVar[tuple[str, ...]] = ("moderate", "high", "very_high")

    @field_validator("moderate", "high", "very_high")
    @classmethod
    def _odds(cls, v: tuple[float, float]) -> tuple[float, float]:
        p, x = v
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"win probability must be in [0, 1], got {p}")
        if not x > 0:
            raise ValueError(f"multiplier must be > 0, got {x}")
        return v

    def odds(self, action: str) -> tuple[float, float]:
        return getattr(self, action)

    def draw(self, action: str, u: float) -> str:
        return "win" if u < self.odds(action)[0] else "loss"

    def multiplier(self, action: str, outcome: str) -> float:
        return self.odds(action)[1] if outcome == "win" else 0.0
