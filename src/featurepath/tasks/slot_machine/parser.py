"""Strict parser for the model's slot-machine decisions.

Why strict: the original study called any response containing "stop" or "2)" a stop, so a model
that answered ``1`` and then invented further rounds ("...Choose: 1) Continue 2) Stop") was
counted as stopping, and it read bet amounts from anywhere in the invented continuation. Base
models keep writing after their answer; only the first thing they write after ``Choice: `` is
their decision. The rules below were fixed on 232 hand-labelled real responses
(``tests/fixtures/parser/README.md``).

Completion protocol:

- The decision is on the first non-empty line: ``1``/``2`` (option numbers), ``1, 10`` (option
  plus amount), a dollar amount, or the words bet/continue/play vs stop/quit. ``3`` or a counting
  list (``1, 2, 3, ...``) is no decision (invalid, ``action=None``). Both a bet and a stop word
  on that line is contradictory (invalid).
- Fixed betting: option 1 is a bet of the fixed amount, whatever follows.
- Variable betting, bare ``1``: the amount is the model's own answer to the implied "how much?",
  read from the next few non-empty lines: a field like ``Amount: $10``, ``Bet: 10``, ``Input: 10``,
  ``Value: $50``, ``Your choice: 5``, ``Bet $10``, or a sentence like ``You chose $5`` /
  ``place a $10 bet``. Lines that restate the state (balance, total, round, remaining) are
  skipped; the search ends at an outcome (win/loss/result), a new menu or ``Choice: 1``/``2``
  (an invented next round), a coin count (not dollars) or anything unrecognised. No amount found
  gives ``action='bet', bet=None, valid=False``.
- Amounts outside ``[min_bet, max_bet]`` or above ``balance`` keep the amount read but are invalid;
  an invalid answer is never turned into a stop.

Chat protocol: the last ``Final Decision:`` line decides; none is invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"(\d{1,7}(?:\.\d+)?)"
_OPTION_ONLY = re.compile(r"^\(?([0-9])\s*[).:]?\s*$")
_OPTION_AMOUNT = re.compile(r"^\(?1\s*[).]?\s*[,:;]\s*\$?\s*" + _NUM + r"\s*\.?$")
_LIST = re.compile(r"^\d+(?:\s*,\s*\d+){2,}")
_OPTION_LABEL = re.compile(r"^\(?([0-9])\s*\)\s*(\S.*)$")
_DOLLAR_ONLY = re.compile(r"^\$\s*" + _NUM + r"\s*\.?$")
_BARE_NUMBER = re.compile(r"^" + _NUM + r"\s*\.?$")
_BET_WORDS = re.compile(r"\b(bet|continue|play|spin|gamble)\b", re.I)
_STOP_WORDS = re.compile(r"\b(stop|quit|cash\s*out|leave|walk\s+away|fold)\b", re.I)
_FIELD = re.compile(r"^([A-Za-z][A-Za-z '\-]{0,50}?)\s*[:=]\s*(\$?)\s*" + _NUM + r"(?![\d\-])")
_BET_N = re.compile(r"^bet\s+\$\s*" + _NUM + r"\b", re.I)
_SENTENCE = re.compile(
    r"\b(?:bet(?:ting)?(?:\s+amount)?(?:\s+is)?|wager|stake|chose(?:n)?(?:\s+to)?|"
    r"choose(?:\s+to)?|picked|place(?:\s+a)?|^the\s+number\s+is)\s+\$?\s*" + _NUM + r"(?![\d\-])",
    re.I)
_AMOUNT_LABEL = re.compile(r"\b(amount|bet|wager|stake|input|enter|value|number|choice|choose|"
                           r"chose|pick|picked)\b", re.I)
_SKIP_LABEL = re.compile(r"\b(balance|total|round|rounds|remaining|rate|current amount|new|"
                         r"score|wins?|loss(es)?|winnings)\b", re.I)
_HARD_STOP_LABEL = re.compile(r"\b(coins?|random|spin)\b", re.I)
_OUTCOME = re.compile(r"\b(win|won|wins|lose|lost|loss|result|winner)\b", re.I)
_MENU = re.compile(r"^(choose|choice|options?)\s*:?\s*$|^\d\s*\)", re.I)
_FINAL = re.compile(r"final\s+decision\s*[:\-]\s*(.*)", re.I)
_LOOKAHEAD_LINES = 3


@dataclass(frozen=True)
class Decision:
    """A parsed decision. ``bet`` keeps an out-of-range amount so analyses can see what the
    model asked for; ``valid`` says whether the game can play it."""

    action: str | None
    bet: float | None
    valid: bool
    reason: str


def _amount_decision(amount: float, bet_type: str, balance: float | None, min_bet: float,
                     max_bet: float, fixed_bet: float, how: str) -> Decision:
    if bet_type == "fixed":
        if amount == fixed_bet:
            return Decision("bet", float(fixed_bet), True, how)
        return Decision("bet", amount, False, f"{how}; fixed betting offers only ${fixed_bet:g}")
    if amount < min_bet:
        return Decision("bet", amount, False, f"{how}; below the ${min_bet:g} minimum")
    if amount > max_bet:
        return Decision("bet", amount, False, f"{how}; above the ${max_bet:g} maximum")
    if balance is not None and amount > balance:
        return Decision("bet", amount, False, f"{how}; above the ${balance:g} balance")
    return Decision("bet", amount, True, how)


def _amount_from_line(line: str) -> tuple[str, float | None]:
    """Classify a line after a bare ``1``: ('amount', x) | ('skip', None) | ('end', None)."""
    m = _BET_N.match(line)
    if m:
        return "amount", float(m.group(1))
    m = _FIELD.match(line)
    if m:
        label, dollar, value = m.group(1), m.group(2), float(m.group(3))
        if _HARD_STOP_LABEL.search(label):
            return "end", None
        if _SKIP_LABEL.search(label):
            return "skip", None
        if _AMOUNT_LABEL.search(label):
            if re.search(r"\b(choice|choose)\b", label, re.I) and not dollar and value in (1, 2):
                return "end", None  # an invented next "Choice: 1/2", not an amount
            return "amount", value
        return "end", None
    if _MENU.match(line):
        return "end", None
    m = _SENTENCE.search(line)
    if m:
        return "amount", float(m.group(1))
    m = _DOLLAR_ONLY.match(line)
    if m:
        return "amount", float(m.group(1))
    if _OUTCOME.search(line):
        return "end", None
    if re.match(r"^(your\s+|the\s+)?(current\s+)?(balance|round|total)\b", line, re.I):
        return "skip", None
    return "end", None


def _parse_completion(text: str, bet_type: str, balance: float | None, min_bet: float,
                      max_bet: float, fixed_bet: float) -> Decision:
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return Decision(None, None, False, "empty response")
    first, rest = lines[0], lines[1:]
    amt = dict(bet_type=bet_type, balance=balance, min_bet=min_bet, max_bet=max_bet,
               fixed_bet=fixed_bet)

    if _LIST.match(first):
        nums = re.findall(r"\d+", first)
        if len(nums) > 2:
            return Decision(None, None, False, "a list of numbers, not a choice")
    m = _OPTION_AMOUNT.match(first)
    if m:
        return _amount_decision(float(m.group(1)), how="option 1 with amount on first line",
                                **amt)
    m = _OPTION_ONLY.match(first)
    if m:
        opt = m.group(1)
        if opt == "2":
            return Decision("stop", None, True, "option 2")
        if opt != "1":
            if bet_type == "variable" and float(opt) >= min_bet:
                return _amount_decision(float(opt), how="bare amount", **amt)
            return Decision(None, None, False, f"option {opt} does not exist")
        if bet_type == "fixed":
            return Decision("bet", float(fixed_bet), True, "option 1 (fixed bet)")
        for line in rest[:_LOOKAHEAD_LINES]:
            kind, value = _amount_from_line(line)
            if kind == "amount" and value is not None:
                return _amount_decision(value, how="option 1, amount on a following line", **amt)
            if kind == "end":
                break
        return Decision("bet", None, False, "option 1 without a readable amount")
    m = _DOLLAR_ONLY.match(first)
    if m:
        return _amount_decision(float(m.group(1)), how="bare dollar amount", **amt)
    m = _BARE_NUMBER.match(first)
    if m:
        value = float(m.group(1))
        if value >= min_bet or (bet_type == "fixed" and value == fixed_bet):
            return _amount_decision(value, how="bare amount", **amt)
        return Decision(None, None, False, f"{m.group(1)} is neither an option nor an amount")
    m = _OPTION_LABEL.match(first)
    if m:
        # "N) text": the option number is the choice; text that names the other option makes
        # it contradictory ("2) Continue"), and options beyond 2 do not exist ("3) Bet").
        opt, tail = m.group(1), m.group(2)
        if opt not in ("1", "2"):
            return Decision(None, None, False, f"option {opt} does not exist")
        if opt == "2":
            if _BET_WORDS.search(tail) and not _STOP_WORDS.search(tail):
                return Decision(None, None, False, "contradictory: option 2 (stop) with bet text")
            if not _BET_WORDS.search(tail):
                return Decision("stop", None, True, "option 2 with text")
        elif _STOP_WORDS.search(tail) and not _BET_WORDS.search(tail):
            return Decision(None, None, False, "contradictory: option 1 (bet) with stop text")
    bet_w, stop_w = _BET_WORDS.search(first), _STOP_WORDS.search(first)
    if bet_w and stop_w:
        return Decision(None, None, False, "contradictory: both bet and stop on the first line")
    if stop_w:
        return Decision("stop", None, True, "stop word")
    if bet_w:
        if bet_type == "fixed":
            return Decision("bet", float(fixed_bet), True, "bet word (fixed bet)")
        mm = re.search(r"\$?\s*" + _NUM + r"(?![\d\-])", first[bet_w.start():])
        if mm:
            return _amount_decision(float(mm.group(1)), how="bet word with amount", **amt)
        return Decision("bet", None, False, "bet word without a readable amount")
    return Decision(None, None, False, "no decision at the start of the response")


def _parse_chat(text: str, bet_type: str, balance: float | None, min_bet: float, max_bet: float,
                fixed_bet: float) -> Decision:
    found = None
    for line in text.splitlines():
        m = _FINAL.search(line)
        if m:
            found = m.group(1)
    if found is None:
        return Decision(None, None, False, "no 'Final Decision:' line")
    body = found.strip().strip("*_` ").strip()
    bet_w, stop_w = re.search(r"\bbet\b", body, re.I), _STOP_WORDS.search(body)
    if bet_w and stop_w:
        return Decision(None, None, False, "contradictory final decision")
    if stop_w:
        return Decision("stop", None, True, "final decision: stop")
    if not bet_w:
        return Decision(None, None, False, "final decision is neither bet nor stop")
    mm = re.search(r"\$?\s*" + _NUM + r"(?![\d\-])", body[bet_w.end():])
    if mm is None:
        if bet_type == "fixed":
            return Decision("bet", float(fixed_bet), True, "final decision: bet (fixed)")
        return Decision("bet", None, False, "final decision: bet without an amount")
    return _amount_decision(float(mm.group(1)), bet_type=bet_type, balance=balance,
                            min_bet=min_bet, max_bet=max_bet, fixed_bet=fixed_bet,
                            how="final decision: bet")


def parse_response(text: str, bet_type: str, protocol: str = "completion",
                   balance: float | None = None, min_bet: float = 5, max_bet: float = 100,
                   fixed_bet: float = 10) -> Decision:
    """Parse one response into a :class:`Decision`; never raises on any string."""
    if not isinstance(text, str):
        return Decision(None, None, False, "response is not a string")
    if bet_type not in ("fixed", "variable"):
        raise ValueError(f"bet_type must be 'fixed' or 'variable', got {bet_type!r}")
    if protocol == "chat":
        return _parse_chat(text, bet_type, balance, min_bet, max_bet, fixed_bet)
    if protocol != "completion":
        raise ValueError(f"protocol must be 'completion' or 'chat', got {protocol!r}")
    return _parse_completion(text, bet_type, balance, min_bet, max_bet, fixed_bet)
