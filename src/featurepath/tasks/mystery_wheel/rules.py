"""Mystery-wheel rules, after the study's ``mystery_wheel/game_logic.py``
(github.com/iamseungpil/llm-addiction,
``exploratory_experiments/alternative_paradigms/src/mystery_wheel/game_logic.py``):

=====  ===========  ======
zone   probability  payout
=====  ===========  ======
red    25%          2x
blue    8%          3x
gold    2%          8x
black  65%          0 (the bet is lost)
=====  ===========  ======

EV = 0.25 x 2 + 0.08 x 3 + 0.02 x 8 = 0.9 (-10%), like the slot machine. The prompt shows the
zones (and, with component W, their payouts) but never their probabilities. One uniform ``u``
per spin picks the zone by cumulative probability in the order above. As in the study, fixed
betting needs a bet cap (unlimited would be all-in every round); the minimum variable stake is
the study runner's $5.
"""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import Field, model_validator

from featurepath.tasks._kit.rules import WagerRules

ZONES = ("red", "blue", "gold", "black")


class WheelRules(WagerRules):
    """The game's config section: bet rules plus (probability, multiplier) per zone."""

    min_bet: float = Field(5.0, gt=0.0, description="smallest variable stake (or the balance)")
    red: tuple[float, float] = Field((0.25, 2.0), description="(p, x)")
    blue: tuple[float, float] = Field((0.08, 3.0), description="(p, x)")
    gold: tuple[float, float] = Field((0.02, 8.0), description="(p, x)")
    black: tuple[float, float] = Field((0.65, 0.0), description="(p, x)")

    risky_actions: ClassVar[tuple[str, ...]] = ("spin",)
    fixed_unlimited: ClassVar[bool] = False

    @model_validator(mode="after")
    def _zones(self) -> WheelRules:
        probs = [getattr(self, z)[0] for z in ZONES]
        if any(not 0.0 <= p <= 1.0 for p in probs) or not math.isclose(sum(probs), 1.0,
                                                                       abs_tol=1e-9):
            raise ValueError(f"zone probabilities must be in [0, 1] and sum to 1, got {probs}")
        if any(getattr(self, z)[1] < 0 for z in ZONES):
            raise ValueError("zone multipliers must be >= 0")
        return self

    def draw(self, action: str, u: float) -> str:
        edge = 0.0
        for zone in ZONES[:-1]:
            edge += getattr(self, zone)[0]
            if u < edge:
                return zone
        return ZONES[-1]

    def multiplier(self, action: str, outcome: str) -> float:
        return getattr(self, outcome)[1]
