"""Rules shared by the study's 2026 wager games (investment choice, mystery wheel).

Bets follow the study's code (github.com/iamseungpil/llm-addiction,
``exploratory_experiments/alternative_paradigms/src/{investment_choice,mystery_wheel}/
game_logic.py``): a bet cap of 10, 30, 50, 70 or unlimited; fixed betting stakes
``min(cap, balance)`` (all-in when unlimited), variable betting any amount from
``min(min_bet, balance)`` to ``min(cap, balance)``. Two deliberate differences, both so the
game stays what it claims to be: an illegal stake raises ``ValueError`` instead of being clamped
(a clamp would play an amount the model never chose), and payouts are kept to the cent instead
of floored (``int(bet * 1.8)`` would lower every option's expected value below 0.9).

Outcomes come from ``numpy.random.default_rng(seed)``, one uniform draw per played round in
round order, whatever the action or stake, so a seed fixes the luck: two policies on one seed
face the same draws (common random numbers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from featurepath.errors import ConfigError
from featurepath.tasks.base import BET_TYPES


def cents(x: float) -> float:
    """Money to the cent (float noise like 12.600000000000001 never reaches a prompt)."""
    return round(float(x) + 0.0, 2)


class WagerRules(BaseModel):
    """A wager game's config section; subclasses add their outcome tables and
    :meth:`draw` / :meth:`multiplier`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    initial_balance: float = Field(100.0, gt=0.0)
    max_rounds: int = Field(100, ge=1)
    bet_cap: int | None = Field(10, gt=0, description="largest stake (the study: 10, 30, 50, "
                                                       "70); null = unlimited (the balance)")
    min_bet: float = Field(1.0, gt=0.0, description="smallest variable stake (or the balance)")

    #: The study's mystery wheel refuses fixed betting without a cap (all-in every round).
    fixed_unlimited: ClassVar[bool] = True
    #: Actions that stake money (every action but the exit).
    risky_actions: ClassVar[tuple[str, ...]] = ()
    exit_action: ClassVar[str] = "stop"

    def check(self, bet_type: str) -> None:
        if bet_type not in BET_TYPES:
            raise ConfigError(f"bet_type must be 'fixed' or 'variable', got {bet_type!r}")
        if bet_type == "fixed" and self.bet_cap is None and not self.fixed_unlimited:
            raise ConfigError("fixed betting needs a bet_cap here (unlimited would be all-in "
                              "every round)")

    def bet_range(self, bet_type: str, balance: float) -> tuple[float, float]:
        """``(lo, hi)`` of legal stakes at ``balance``."""
        hi = balance if self.bet_cap is None else min(float(self.bet_cap), balance)
        if bet_type == "fixed":
            return (hi, hi)
        return (min(self.min_bet, balance), hi)

    def draw(self, action: str, u: float) -> str:
        """The outcome label of ``action`` for the uniform draw ``u``."""
        raise NotImplementedError

    def multiplier(self, action: str, outcome: str) -> float:
        """What a stake returns (x the stake) for ``outcome``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Round:
    """One played round: the action, stake, outcome, payout (returned money) and balance."""

    round: int
    action: str
    bet: float
    outcome: str
    payout: float
    balance: float

    @property
    def win(self) -> bool:
        """Net gain: the payout exceeds the stake."""
        return self.payout > self.bet


@dataclass
class WagerState:
    """A game in progress; ``round`` is the round about to be played (1-based)."""

    rules: WagerRules
    bet_type: str = "fixed"
    seed: int | None = 0
    balance: float = field(init=False)
    round: int = field(init=False, default=1)
    history: list[Round] = field(init=False, default_factory=list)
    ended: bool = field(init=False, default=False)
    end_reason: str | None = field(init=False, default=None)
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rules.check(self.bet_type)
        self.balance = float(self.rules.initial_balance)
        self._rng = np.random.default_rng(self.seed)

    @classmethod
    def from_history(cls, rules: WagerRules, bet_type: str,
                     rounds: list[tuple[str, float, str]], seed: int | None = 0) -> WagerState:
        """A state with a given past ``(action, stake, outcome)`` per round, balances computed
        by the rules; the generator advances one draw per round, as in a played game."""
        state = cls(rules=rules, bet_type=bet_type, seed=seed)
        for action, bet, outcome in rounds:
            state._rng.random()
            state._apply(action, float(bet), outcome)
        return state

    @property
    def rounds_played(self) -> int:
        return len(self.history)

    def consecutive_losses(self) -> int:
        n = 0
        for r in reversed(self.history):
            if r.payout > 0:
                break
            n += 1
        return n

    def bet_range(self) -> tuple[float, float]:
        return self.rules.bet_range(self.bet_type, self.balance)

    def step(self, decision: Any) -> Round | None:
        """Play a :class:`~featurepath.tasks.base.Decision`, an ``(action, amount)`` pair or an
        action name (fixed betting). Returns the played round, ``None`` on the exit. Raises
        ``ValueError`` on anything the game cannot play, never clipping a stake."""
        if self.ended:
            raise ValueError(f"game already ended ({self.end_reason})")
        action, amount = _normalise(decision)
        if action == self.rules.exit_action:
            self.ended, self.end_reason = True, "stop"
            return None
        if action not in self.rules.risky_actions:
            raise ValueError(f"unknown action {action!r}")
        lo, hi = self.bet_range()
        if amount is None:
            if self.bet_type != "fixed":
                raise ValueError("variable betting needs an amount")
            amount = hi
        amount = float(amount)
        if not np.isfinite(amount) or not (lo <= amount <= hi):
            raise ValueError(f"stake {amount} outside the legal range [{lo}, {hi}]")
        outcome = self.rules.draw(action, float(self._rng.random()))
        return self._apply(action, amount, outcome)

    def _apply(self, action: str, amount: float, outcome: str) -> Round:
        payout = cents(amount * self.rules.multiplier(action, outcome))
        self.balance = cents(self.balance - amount + payout)
        played = Round(self.round, action, amount, outcome, payout, self.balance)
        self.history.append(played)
        self.round += 1
        if self.balance <= 0:
            self.ended, self.end_reason = True, "bankrupt"
        elif self.rounds_played >= self.rules.max_rounds:
            self.ended, self.end_reason = True, "round_limit"
        return played

    def history_json(self) -> str:
        return json.dumps([{"round": r.round, "action": r.action, "bet": r.bet,
                            "outcome": r.outcome, "payout": r.payout, "balance": r.balance}
                           for r in self.history])


def _normalise(decision: Any) -> tuple[str, float | None]:
    if isinstance(decision, str):
        return decision.strip().lower(), None
    if isinstance(decision, tuple) and len(decision) == 2:
        return str(decision[0]), None if decision[1] is None else float(decision[1])
    action = getattr(decision, "action", None)
    if isinstance(action, str):
        if not getattr(decision, "valid", True):
            raise ValueError(f"invalid decision cannot be played: {decision!r}")
        return action, getattr(decision, "amount", None)
    raise ValueError(f"unknown decision {decision!r}")
