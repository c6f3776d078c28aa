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
    cons = answer_constraints(tok, [bet_type] * 12, "constrained")
    res = generate(model, tok, prompts, list(range(12)), SamplingConfig(1.0, 1.0, 16),
                   constraints=cons)
    for text in res.texts:
        d = parse_response(text, bet_type, balance=1000, max_bet=1000)
        assert d.action in ("bet", "stop"), text
        if d.action == "bet" and bet_type == "variable":
            assert text.startswith("1\nAmount: $") and d.valid and 1 <= d.bet <= 999
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
    assert tok.encode("0", add_special_tokens=False)[0] not in c.allowed(after)
    assert tok.eos_token_id in c.allowed([*after, one])
    assert c.allowed([*after, one, one, one]) == [tok.eos_token_id]


def test_constrained_needs_completion_protocol():
    from featurepath.config import config_from_dict
    from featurepath.errors import ConfigError

    with pytest.raises(ConfigError, match="constrained"):
        config_from_dict({"play": {"protocol": "chat", "sampling": {"answer": "constrained"}}})
    assert RunConfig().play.sampling.answer == "free"
