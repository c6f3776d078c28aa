"""Constrained answers: sampled from the model, but always in a format the parser reads."""

from __future__ import annotations

import pytest

from featurepath.config import RunConfig
from featurepath.engine.generate import SamplingConfig, generate
from featurepath.tasks.slot_machine import parse_response
from featurepath.tasks.slot_machine.constrained import OptionAnswer, answer_constraints


@pytest.mark.parametrize("bet_type", ["fixed", "variable"])
def test_constrained_answers_always_parse(tiny, bet_type):
    model, tok = tiny
    prompts = ["Balance $60. Choice: "] * 12
    cons = answer_constraints(tok, [{"bet_type": bet_type, "balance": 60.0}] * 12,
                              "constrained")
    res = generate(model, tok, prompts, list(range(12)), SamplingConfig(1.0, 1.0, 16),
                   constraints=cons)
    for text in res.texts:
        d = parse_response(text, bet_type, balance=60.0)
        assert d.action in ("bet", "stop") and d.valid, text
        if d.action == "bet" and bet_type == "variable":
            assert text.startswith("1\nAmount: $") and 5 <= d.bet <= 60
        if d.action == "stop":
            assert text == "2"
    assert len({t for t in res.texts}) > 1  # still sampled, not fixed


def test_constraint_steps(tiny):
    _, tok = tiny
    c = OptionAnswer(tok, "variable")
    one = tok.encode("1", add_special_tokens=False)[0]
    two = tok.encode("2", add_special_tokens=False)[0]
    assert set(c.allowed([])) == {one, two}
    assert c.allowed([two]) == [tok.eos_token_id]
    assert OptionAnswer(tok, "fixed").allowed([one]) == [tok.eos_token_id]
    prefix = tok.encode("\nAmount: $", add_special_tokens=False)
    assert c.allowed([one]) == [prefix[0]]
    after = [one, *prefix]
    digit = {d: tok.encode(str(d), add_special_tokens=False)[0] for d in range(10)}
    # legal amounts are 5..100: a first digit 0 never, "1" may lead to 10-19 or 100
    assert digit[0] not in c.allowed(after)
    assert tok.eos_token_id not in c.allowed([*after, digit[1]])   # $1 is below the minimum
    assert set(c.allowed([*after, digit[1], digit[0]])) == {digit[0], tok.eos_token_id}
    assert c.allowed([*after, digit[1], digit[0], digit[0]]) == [tok.eos_token_id]
    assert digit[5] in c.allowed(after) and tok.eos_token_id in c.allowed([*after, digit[5]])
    assert {tok.eos_token_id, digit[9]} <= set(c.allowed([*after, digit[9]]))  # $9 or $90-99
    capped = OptionAnswer(tok, "variable", balance=20)
    assert digit[3] not in capped.allowed(after)  # 30+ would exceed the $20 balance


def test_constrained_needs_completion_protocol():
    from featurepath.config import config_from_dict
    from featurepath.errors import ConfigError

    with pytest.raises(ConfigError, match="constrained"):
        config_from_dict({"play": {"protocol": "chat", "sampling": {"answer": "constrained"}}})
    assert RunConfig().play.sampling.answer == "free"
