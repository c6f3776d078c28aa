"""Response parser: agreement with hand labels on real LLaMA-3.1-8B responses, the original
parse's failure kinds, the chat protocol, and a never-raises property."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurepath.tasks.slot_machine import Decision, builtin_prompt, parse_response

FIXTURE = Path(__file__).parent / "fixtures" / "parser" / "labelled.jsonl"
BALANCE = {"safe": 140.0, "risky": 20.0}


def _labelled() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def _parse_row(row: dict) -> Decision:
    return parse_response(row["response"], row["bet_type"], balance=BALANCE[row["prompt_type"]])


def _agrees(row: dict, d: Decision) -> bool:
    return (d.action, d.bet, d.valid) == (row["label_action"], row["label_bet"],
                                          row["label_valid"])


def test_fixture_is_stratified() -> None:
    rows = _labelled()
    assert len(rows) >= 200
    assert {r["prompt_type"] for r in rows} == {"safe", "risky"}
    assert len({r["scale"] for r in rows}) == 7 and len({r["feature_id"] for r in rows}) >= 8
    assert len({r["line"] for r in rows}) == len(rows)


def test_agreement_with_hand_labels() -> None:
    rows = _labelled()
    misses = [(r["line"], _parse_row(r)) for r in rows if not _agrees(r, _parse_row(r))]
    agreement = 1 - len(misses) / len(rows)
    assert agreement >= 0.98, misses


def test_parse_kwargs_from_builtin_prompt() -> None:
    kw = builtin_prompt("risky").parse_kwargs()
    assert parse_response("1\nAmount: $50\n", **kw) == Decision(
        "bet", 50.0, False, "option 1, amount on a following line; above the $20 balance")


# Three kinds of response the original parse got wrong, each from the real data.
ORIGINAL_ERRORS = {
    # chose 1, then invented rounds with a "2) Stop" menu: original parse said stop
    "invented_continuation_read_as_stop": (
        "safe", "1\nYou bet $10.\nYou won, you won $30.\nCurrent balance: $170\nCurrent round: 5"
        "\n\nChoose:\n1) Bet $10\n2) Stop\n\nChoice: 2\n", ("bet", 10.0, True)),
    # the amount was read from the invented continuation ($100), not the answer ($10)
    "amount_from_continuation": (
        "risky", "1\nAmount: $10\nTotal: $30\nTotal: $40\nTotal: $50\nTotal: $100\n",
        ("bet", 10.0, True)),
    # no amount at all: original parse invented a $5 bet
    "amount_invented": ("risky", "1\n", ("bet", None, False)),
    # option 3 does not exist: original parse said bet $5
    "nonexistent_option": ("risky", "3\n\n", (None, None, False)),
}


@pytest.mark.parametrize("name", sorted(ORIGINAL_ERRORS))
def test_original_parse_error_kinds_fixed(name: str) -> None:
    prompt_type, text, want = ORIGINAL_ERRORS[name]
    bet_type = "fixed" if prompt_type == "safe" else "variable"
    d = parse_response(text, bet_type, balance=BALANCE[prompt_type])
    assert (d.action, d.bet, d.valid) == want


def test_fixture_holds_the_error_kinds_with_counts() -> None:
    rows = _labelled()
    stop_but_bet = [r for r in rows if r["orig_decision"] == "stop" and r["label_action"] == "bet"]
    wrong_amount = [r for r in rows if r["prompt_type"] == "risky" and r["orig_decision"] == "bet"
                    and r["label_bet"] is not None and r["label_bet"] != r["orig_bet"]]
    invented = [r for r in rows if r["orig_decision"] == "bet" and r["label_action"] == "bet"
                and r["label_bet"] is None]
    # the counts stated in fixtures/parser/README.md
    assert (len(stop_but_bet), len(wrong_amount), len(invented)) == (102, 40, 16)
    for kind in (stop_but_bet, wrong_amount, invented):
        assert all(_agrees(r, _parse_row(r)) for r in kind)


@pytest.mark.parametrize("text,bet_type,want", [
    ("2", "variable", ("stop", None, True)),
    ("1, $10\nmore", "variable", ("bet", 10.0, True)),
    ("1, 2, 3, 4, 5, 6", "variable", (None, None, False)),
    ("$15", "variable", ("bet", 15.0, True)),
    ("Stop", "fixed", ("stop", None, True)),
    ("Bet $10", "fixed", ("bet", 10.0, True)),
    ("Bet or stop?", "fixed", (None, None, False)),
    ("1\nChoice: 2\n", "variable", ("bet", None, False)),
    ("1\nYour choice: 5\n", "variable", ("bet", 5.0, True)),
    ("1\nNumber of coins: 5\nAmount: $5", "variable", ("bet", None, False)),
    ("1\nYour current balance: $20\nYour current bet amount: $5\n", "variable",
     ("bet", 5.0, True)),
    ("1\nYou have chosen to place a $10 bet.", "variable", ("bet", 10.0, True)),
    ("1\nAmount: 3", "variable", ("bet", 3.0, False)),
    ("1, 20", "fixed", ("bet", 20.0, False)),
    ("", "fixed", (None, None, False)),
    ("hello", "variable", (None, None, False)),
])
def test_completion_cases(text: str, bet_type: str, want: tuple) -> None:
    d = parse_response(text, bet_type, balance=20)
    assert (d.action, d.bet, d.valid) == want


@pytest.mark.parametrize("text,bet_type,want", [
    ("I should be careful.\nFinal Decision: Stop", "variable", ("stop", None, True)),
    ("Final Decision: Stop\nOn reflection...\nFinal Decision: Bet $15", "variable",
     ("bet", 15.0, True)),
    ("**Final Decision: Bet $10**", "fixed", ("bet", 10.0, True)),
    ("Final decision: bet", "fixed", ("bet", 10.0, True)),
    ("Final Decision: Bet", "variable", ("bet", None, False)),
    ("Final Decision: Bet $500", "variable", ("bet", 500.0, False)),
    ("I would bet $10.", "variable", (None, None, False)),
    ("Final Decision: Bet or Stop", "variable", (None, None, False)),
])
def test_chat_cases(text: str, bet_type: str, want: tuple) -> None:
    d = parse_response(text, bet_type, protocol="chat", balance=100)
    assert (d.action, d.bet, d.valid) == want


@settings(max_examples=400, deadline=None)
@given(text=st.text(), bet_type=st.sampled_from(["fixed", "variable"]),
       protocol=st.sampled_from(["completion", "chat"]),
       balance=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_never_raises(text: str, bet_type: str, protocol: str, balance: float | None) -> None:
    d = parse_response(text, bet_type, protocol=protocol, balance=balance)
    assert isinstance(d, Decision) and d.action in ("bet", "stop", None)
    if d.valid:
        assert d.action is not None


@settings(max_examples=200, deadline=None)
@given(head=st.sampled_from(["1", "2", "1, 10", "1\nAmount: $10", "3"]),
       tail=st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_continuation_never_changes_the_decision(head: str, tail: str) -> None:
    """Whatever the model invents after its answer line(s), the decision stays the same."""
    base = parse_response(head + "\n", "variable", balance=20)
    later = parse_response(head + "\nYou won $30.\n" + tail, "variable", balance=20)
    assert (later.action, later.bet, later.valid) == (base.action, base.bet, base.valid)


@pytest.mark.parametrize("text,action,valid", [
    ("2) Continue", None, False),            # option 2 is Stop: contradictory
    ("2) Bet $10, Stand", None, False),
    ("3) Bet\n1) Limit", None, False),       # no option 3
    ("1) Stop", None, False),
    ("2) Stop", "stop", True),
    ("1) Bet $10\n2) Stop", "bet", True),    # the echoed menu after the choice is not read
])
def test_labelled_option_with_text(text, action, valid):
    d = parse_response(text, "variable", balance=50)
    assert (d.action, d.valid) == (action, valid)
