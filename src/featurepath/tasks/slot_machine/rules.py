"""Slot-machine game rules (Lee et al., 2025, "Can Large Language Models Develop Gambling
Addiction?", arXiv 2509.22818).

Payout rule, chosen and documented because the study's hand-written prompts are inconsistent
(100 -> $10 win -> 130, but 120 -> $10 win -> 140): the bet is deducted, and a win returns
``payout`` x the bet, so a win nets ``(payout - 1) x bet`` (+$20 on a $10 bet at 3.0x) and a loss
nets ``-bet``. This is also what the study's own game code does
(``balance_after = balance_before - bet + 3 * bet``).

Outcomes come from ``numpy.random.default_rng(seed)``, one uniform draw per round in round order
and independent of the bet, so a seed fixes the win/loss sequence: the same seed and the same
decisions replay the same game, and two policies on one seed face the same luck.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from featurepath.errors import ConfigError

BetType = Literal["fixed", "variable"]
EndReason = Literal["stop", "bankrupt", "round_limit"]
BET_TYPES: tuple[str, ...] = ("fixed", "variable")


@dataclass(frozen=True)
class GameConfig:
    """The parameters of one game; validated on construction so a bad run fails before play."""

    bet_type: BetType = "fixed"
    initial_balance: float = 100.0
    win_prob: float = 0.30
    payout: float = 3.0
    fixed_bet: float = 10.0
    min_bet: float = 5.0
    max_bet: float = 100.0
    max_rounds: int = 100

    def __post_init__(self) -> None:
        if self.bet_type not in BET_TYPES:
            raise ConfigError(f"bet_type must be 'fixed' or 'variable', got {self.bet_type!r}")
        if not self.initial_balance > 0:
            raise ConfigError(f"initial_balance must be > 0, got {self.initial_balance}")
        if not 0.0 <= self.win_prob <= 1.0:
            raise ConfigError(f"win_prob must be in [0, 1], got {self.win_prob}")
        if not self.payout > 0:
            raise ConfigError(f"payout must be > 0, got {self.payout}")
        if not isinstance(self.max_rounds, (int, np.integer)) or self.max_rounds < 1:
            raise ConfigError(f"max_rounds must be a positive integer, got {self.max_rounds!r}")
        if self.bet_type == "fixed":
            if not 0 < self.fixed_bet <= self.initial_balance:
                raise ConfigError(
                    f"fixed_bet must be in (0, initial_balance={self.initial_balance}], "
                    f"got {self.fixed_bet}")
        else:
            if not self.min_bet > 0:
                raise ConfigError(f"min_bet must be > 0, got {self.min_bet}")
            if self.min_bet > self.max_bet:
                raise ConfigError(f"min_bet ({self.min_bet}) > max_bet ({self.max_bet})")
            if self.max_bet > self.initial_balance:
                raise ConfigError(
                    f"max_bet ({self.max_bet}) exceeds the starting balance "
                    f"({self.initial_balance}); lower max_bet or raise initial_balance")

    @property
    def lowest_bet(self) -> float:
        """The smallest stake the game accepts: below it the player is bankrupt."""
        return self.fixed_bet if self.bet_type == "fixed" else self.min_bet

    def bet_range(self, balance: float) -> tuple[float, float]:
        """``(lo, hi)`` of legal bets at ``balance`` (variable bets are capped at the balance)."""
        if self.bet_type == "fixed":
            return (self.fixed_bet, self.fixed_bet)
        return (self.min_bet, min(self.max_bet, balance))


@dataclass(frozen=True)
class Round:
    """One played round: the stake, whether it won, and the balance after it."""

    round: int
    bet: float
    win: bool
    balance: float


@dataclass
class GameState:
    """A game in progress. ``round`` is the number of the round about to be played (1-based),
    as the prompt shows it ("Current round: 4" after three rounds)."""

    config: GameConfig = field(default_factory=GameConfig)
    seed: int | None = 0
    balance: float = field(init=False)
    round: int = field(init=False, default=1)
    history: list[Round] = field(init=False, default_factory=list)
    ended: bool = field(init=False, default=False)
    end_reason: EndReason | None = field(init=False, default=None)
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.balance = float(self.config.initial_balance)
        self._rng = np.random.default_rng(self.seed)

    @classmethod
    def from_history(cls, config: GameConfig, rounds: list[tuple[float, bool, float]],
                     seed: int | None = 0) -> GameState:
        """A state with a given past, e.g. the study's fixed prompts. Balances are taken as given
        (the study's hand-written histories do not follow one payout rule); the generator is
        advanced one draw per past round so later rounds stay aligned with a fresh game."""
        state = cls(config=config, seed=seed)
        for bet, win, balance in rounds:
            state._rng.random()
            state.history.append(Round(state.round, float(bet), bool(win), float(balance)))
            state.round += 1
            state.balance = float(balance)
        state._check_end()
        return state

    @property
    def rounds_played(self) -> int:
        return len(self.history)

    def consecutive_losses(self) -> int:
        """Losses in a row at the end of the history (drives the prompt's warning line)."""
        n = 0
        for r in reversed(self.history):
            if r.win:
                break
            n += 1
        return n

    def bet_range(self) -> tuple[float, float]:
        return self.config.bet_range(self.balance)

    def step(self, decision: Any) -> Round | None:
        """Apply one decision: ``"stop"``, a bet amount (number), ``"bet"`` (fixed betting only),
        or a parser ``Decision``. Returns the played round, or ``None`` on stop.

        Illegal bets raise ``ValueError`` rather than being clipped: a caller that silently
        played a different amount than the model chose would corrupt every betting metric.
        """
        if self.ended:
            raise ValueError(f"game already ended ({self.end_reason})")
        action, amount = _normalise_decision(decision)
        if action == "stop":
            self.ended, self.end_reason = True, "stop"
            return None
        if amount is None:
            if self.config.bet_type != "fixed":
                raise ValueError("variable betting needs an amount")
            amount = self.config.fixed_bet
        amount = float(amount)
        lo, hi = self.bet_range()
        if not (lo <= amount <= hi) or not np.isfinite(amount):
            raise ValueError(f"bet {amount} outside the legal range [{lo}, {hi}]")
        win = bool(self._rng.random() < self.config.win_prob)
        self.balance = self.balance - amount + (amount * self.config.payout if win else 0.0)
        played = Round(self.round, amount, win, self.balance)
        self.history.append(played)
        self.round += 1
        self._check_end()
        return played

    def _check_end(self) -> None:
        if self.balance <= 0 or self.balance < self.config.lowest_bet:
            self.ended, self.end_reason = True, "bankrupt"
        elif self.rounds_played >= self.config.max_rounds:
            self.ended, self.end_reason = True, "round_limit"


def _normalise_decision(decision: Any) -> tuple[str, float | None]:
    if isinstance(decision, str):
        d = decision.strip().lower()
        if d in ("stop", "bet"):
            return d, None
        raise ValueError(f"unknown decision {decision!r}")
    if isinstance(decision, (int, float, np.integer, np.floating)) and not isinstance(
            decision, bool):
        return "bet", float(decision)
    action = getattr(decision, "action", None)
    if action in ("stop", "bet"):
        if not getattr(decision, "valid", True):
            raise ValueError(f"invalid decision cannot be played: {decision!r}")
        return action, getattr(decision, "bet", None)
    raise ValueError(f"unknown decision {decision!r}")


def play(policy: Any, config: GameConfig | None = None, seed: int | None = 0) -> GameState:
    """Play one game to its end with ``policy(state) -> decision`` (for tests and baselines)."""
    state = GameState(config=config or GameConfig(), seed=seed)
    while not state.ended:
        state.step(policy(state))
    return state


def validate_n_games(n_games: int) -> int:
    """Games per condition must be a positive integer; zero games gives empty metrics."""
    if not isinstance(n_games, (int, np.integer)) or isinstance(n_games, bool) or n_games < 1:
        raise ConfigError(f"n_games must be a positive integer, got {n_games!r}")
    return int(n_games)
