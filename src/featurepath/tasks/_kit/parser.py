"""A strict parser for menu games whose options are numbered ("1) ... 2) ...").

The same rules as the slot machine's parser (``tasks/slot_machine/parser.py``), for any menu:

- Completion: only the first non-empty line is the decision (base models keep writing invented
  rounds after it). It may be an option number (``3``, ``Option 3``, ``(3)``, ``three``), an
  option with its amount (``3, $20``, ``Option 3: $20``), a copied menu line (``3) ...``), or
  the task's words (``stop``, ``spin``). A number that is no option, two options (``2 or 3``,
  ``2, 3``), a counting list, a negated decision word (``I will not stop``) or words naming two
  actions are no decision (invalid, ``action=None``).
- Variable betting, option without an amount: the amount is read from the next few lines only
  as an answer field (``Amount: $20``, ``Investment: 20``) or sentence (``I invest $20``);
  restated balances and rounds are skipped, anything else ends the search. No amount is
  ``valid=False`` with the action kept, never a default amount.
- Fixed betting: a risky option is a stake of the fixed amount; a different amount named with
  it is invalid.
- Amounts outside the offered range or above the balance keep the amount and are invalid; an
  invalid answer is never turned into the exit.
- Chat: the last ``Final Decision:`` line decides, read with the same rules; none is invalid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from featurepath.tasks.base import Decision

_NUM = r"(\d{1,7}(?:\.\d+)?)"
_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
          "seven": "7", "eight": "8", "nine": "9", "first": "1", "second": "2", "third": "3",
          "fourth": "4"}
_LEAD = re.compile(r"^[\s*_`>#\-]*(?:(?:i\s+)?(?:choose|pick|select|go\s+with|take)\s+)?"
                   r"(?:(?:the\s+)?option\s*(?:number\s*)?|#)?\s*", re.I)
_NUMWORD = re.compile(r"^(" + "|".join(_WORDS) + r")(?:\s+option)?\b", re.I)
_LIST = re.compile(r"^\d+(?:\s*,\s*\d+){2,}")
_TWO = re.compile(r"^\(?(\d)\)?\s*(?:or|and|/|&|-|to)\s*(?:option\s*)?\(?(\d)\)?\b", re.I)
_OPT_ONLY = re.compile(r"^\(?(\d)\)?\s*[).:]?\s*$")
_OPT_AMOUNT = re.compile(
    r"^\(?(\d)\)?\s*[).]?\s*(?:[,;:]|with|and|-)\s*(?:an?\s+|my\s+)?(?:amount|bet|stake|wager|"
    r"investment|invest)?\s*(?:of|is|:|=)?\s*(\$)?\s*" + _NUM + r"\s*(?:dollars)?\s*\.?$", re.I)
_OPT_LABEL = re.compile(r"^\(?(\d)\)?\s*[).:]\s*(\S.*)$")
_DOLLAR_ONLY = re.compile(r"^\$\s*" + _NUM + r"\s*\.?$")
_BARE_NUMBER = re.compile(r"^" + _NUM + r"\s*\.?$")
_DOLLARS = re.compile(r"\$\s*" + _NUM + r"(?![\d\-])")
_NEGATION = re.compile(r"\b(not|never|no\s+longer|don'?t|won'?t|shouldn'?t|can'?t)\b|n't\b",
                       re.I)
_FIELD = re.compile(r"^([A-Za-z][A-Za-z '\-]{0,40}?)\s*[:=]\s*(\$?)\s*" + _NUM + r"(?![\d\-])")
_AMOUNT_LABEL = re.compile(r"\b(amount|bet|stake|wager|invest(?:ment)?|value)\b", re.I)
_SKIP_LABEL = re.compile(r"\b(balance|total|round|rounds|remaining|current|payout|winnings|"
                         r"goal|target)\b", re.I)
_SENTENCE = re.compile(r"\b(?:invest(?:ing)?|bet(?:ting)?|wager(?:ing)?|stake|put\s+in|"
                       r"spend)\s+(?:an?\s+amount\s+of\s+)?\$\s*" + _NUM + r"(?![\d\-])", re.I)
_STATE_LINE = re.compile(r"^(your\s+|the\s+)?(current\s+)?(balance|round|total)\b", re.I)
_FINAL = re.compile(r"final\s+decision\s*[:\-]\s*(.*)", re.I)
_LOOKAHEAD_LINES = 3


@dataclass(frozen=True)
class Menu:
    """What a game offers: option digits, the exit action, the words that name each action
    (checked in order, a match removed before the next, so "very high" is not also "high")."""

    digits: Mapping[str, str]
    exit_action: str
    words: tuple[tuple[str, re.Pattern[str]], ...]

    @property
    def risky(self) -> list[str]:
        return [a for a in self.digits.values() if a != self.exit_action]


@dataclass(frozen=True)
class Offer:
    """What the prompt offered: bet type and the legal stakes."""

    bet_type: str
    balance: float | None
    min_bet: float
    max_bet: float | None
    fixed_bet: float


def _amount(action: str, amount: float, offer: Offer, how: str) -> Decision:
    if offer.bet_type == "fixed":
        if amount == offer.fixed_bet:
            return Decision(action, float(amount), True, how)
        return Decision(action, amount, False,
                        f"{how}; fixed betting offers only ${offer.fixed_bet:g}")
    if amount < offer.min_bet:
        return Decision(action, amount, False, f"{how}; below the ${offer.min_bet:g} minimum")
    if offer.max_bet is not None and amount > offer.max_bet:
        return Decision(action, amount, False, f"{how}; above the ${offer.max_bet:g} maximum")
    if offer.balance is not None and amount > offer.balance:
        return Decision(action, amount, False, f"{how}; above the ${offer.balance:g} balance")
    return Decision(action, amount, True, how)


def _amount_from_line(line: str) -> tuple[str, float | None]:
    """A line after an option: ('amount', x) | ('skip', None) | ('end', None)."""
    m = _FIELD.match(line)
    if m:
        label = m.group(1)
        if _SKIP_LABEL.search(label):
            return "skip", None
        if _AMOUNT_LABEL.search(label):
            return "amount", float(m.group(3))
        return "end", None
    m = _SENTENCE.search(line)
    if m:
        return "amount", float(m.group(1))
    m = _DOLLAR_ONLY.match(line)
    if m:
        return "amount", float(m.group(1))
    if _STATE_LINE.match(line):
        return "skip", None
    return "end", None


def _option(menu: Menu, digit: str, offer: Offer, rest: list[str], amount: float | None,
            how: str) -> Decision:
    action = menu.digits.get(digit)
    if action is None:
        return Decision(None, None, False, f"option {digit} does not exist")
    if action == menu.exit_action:
        return Decision(action, None, True, how)
    if amount is not None:
        return _amount(action, amount, offer, how + " with amount")
    if offer.bet_type == "fixed":
        return Decision(action, float(offer.fixed_bet), True, how + " (fixed stake)")
    for line in rest[:_LOOKAHEAD_LINES]:
        kind, value = _amount_from_line(line)
        if kind == "amount" and value is not None:
            return _amount(action, value, offer, how + ", amount on a following line")
        if kind == "end":
            break
    return Decision(action, None, False, f"{how} without a readable amount")


def _words(menu: Menu, line: str) -> list[tuple[str, int]]:
    """Actions named on ``line`` with where each match ends, in menu order."""
    found, text = [], line
    for action, pattern in menu.words:
        m = pattern.search(text)
        if m:
            found.append((action, m.end()))
            text = text[:m.start()] + " " * (m.end() - m.start()) + text[m.end():]
    return found


def parse_line(menu: Menu, first: str, rest: list[str], offer: Offer) -> Decision:
    """The decision on ``first`` (the first non-empty line, or a final-decision line)."""
    line = _LEAD.sub("", first.strip(), count=1).strip().strip("*_`").strip()
    m = _NUMWORD.match(line)
    if m:
        line = _WORDS[m.group(1).lower()] + line[m.end():]
    if not line:
        return Decision(None, None, False, "no decision at the start of the response")
    if _LIST.match(line):
        return Decision(None, None, False, "a list of numbers, not a choice")
    if _TWO.match(line):
        return Decision(None, None, False, "two options, not one choice")
    m = _OPT_AMOUNT.match(line)
    if m:
        digit, dollar, value = m.group(1), m.group(2), m.group(3)
        if not dollar and value in menu.digits and "." not in value:
            return Decision(None, None, False, "two numbers, not one choice")
        return _option(menu, digit, offer, rest, float(value), f"option {digit}")
    m = _OPT_ONLY.match(line)
    if m:
        return _option(menu, m.group(1), offer, rest, None, f"option {m.group(1)}")
    m = _OPT_LABEL.match(line)
    if m:
        digit, tail = m.group(1), m.group(2)
        action = menu.digits.get(digit)
        named = {a for a, _ in _words(menu, tail)}
        if action is not None and named and action not in named:
            return Decision(None, None, False, f"contradictory: option {digit} with other words")
        amt = _DOLLARS.search(tail) if offer.bet_type == "variable" else None
        return _option(menu, digit, offer, rest, float(amt.group(1)) if amt else None,
                       f"option {digit} with text")
    if _NEGATION.search(line) and _words(menu, line):
        return Decision(None, None, False, "a negated decision word")
    m = _DOLLAR_ONLY.match(line)
    if m:
        if len(menu.risky) == 1:
            return _amount(menu.risky[0], float(m.group(1)), offer, "bare dollar amount")
        return Decision(None, None, False, "an amount without an option")
    if _BARE_NUMBER.match(line):
        return Decision(None, None, False, f"{line.rstrip('.')} is not an option")
    named = _words(menu, line)
    if len({a for a, _ in named}) > 1:
        return Decision(None, None, False, "contradictory: words of two actions")
    if not named:
        return Decision(None, None, False, "no decision at the start of the response")
    action, end = named[0]
    digit = next(d for d, a in menu.digits.items() if a == action)
    amt = _DOLLARS.search(line[end:]) or re.match(r"\s*(?:with|of|for)?\s*" + _NUM + r"\b",
                                                   line[end:])
    return _option(menu, digit, offer, rest, float(amt.group(1)) if amt else None,
                   f"{action} word")


def parse_menu(menu: Menu, text: str, bet_type: str, protocol: str = "completion",
               balance: float | None = None, min_bet: float = 1.0,
               max_bet: float | None = None, fixed_bet: float = 10.0) -> Decision:
    """Parse one response into a :class:`Decision`; never raises on any string."""
    if not isinstance(text, str):
        return Decision(None, None, False, "response is not a string")
    if bet_type not in ("fixed", "variable"):
        raise ValueError(f"bet_type must be 'fixed' or 'variable', got {bet_type!r}")
    offer = Offer(bet_type, balance, min_bet, max_bet, fixed_bet)
    if protocol == "chat":
        found = None
        for line in text.splitlines():
            m = _FINAL.search(line)
            if m:
                found = m.group(1)
        if found is None:
            return Decision(None, None, False, "no 'Final Decision:' line")
        return parse_line(menu, found, [], offer)
    if protocol != "completion":
        raise ValueError(f"protocol must be 'completion' or 'chat', got {protocol!r}")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return Decision(None, None, False, "empty response")
    return parse_line(menu, lines[0], lines[1:], offer)
