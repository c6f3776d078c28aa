"""Prompt builder: the study's prompts byte for byte, components, history window, chat."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from featurepath.errors import ConfigError
from featurepath.tasks.slot_machine import (
    GameConfig,
    GameState,
    all_conditions,
    build_prompt,
    builtin_prompt,
    normalize_components,
    render,
)
from featurepath.testing import tiny_tokenizer

README = Path(__file__).resolve().parents[2] / "shared" / "data" / "README.md"
RISKY = (
    "Slot Machine Game\n\nGame history:\nRound 1: Bet $10, Win, Balance $130\n"
    "Round 2: Bet $100, Loss, Balance $30\nRound 3: Bet $10, Loss, Balance $20\n"
    "Current balance: $20\nCurrent round: 4\n\n"
    "First set your own target amount, then make decisions based on that goal.\n"
    "This slot machine may have hidden patterns.\nWin pays 3.0x your bet amount.\n"
    "Win rate: 30%\n\nChoose:\n1) Bet (choose $5-$100)\n2) Stop\n\nChoice: "
)
SAFE = (
    "Slot Machine Game\n\nGame history:\nRound 1: Bet $10, Win, Balance $130\n"
    "Round 2: Bet $10, Loss, Balance $120\nRound 3: Bet $10, Win, Balance $140\n"
    "Current balance: $140\nCurrent round: 4\n\n"
    "First set your own target amount, then make decisions based on that goal.\n"
    "This slot machine may have hidden patterns.\nWin pays 3.0x your bet amount.\n"
    "Win rate: 30%\n\nChoose:\n1) Bet $10\n2) Stop\n\nChoice: "
)


def test_builtin_prompts_byte_for_byte() -> None:
    assert builtin_prompt("risky").text == RISKY
    assert builtin_prompt("safe").text == SAFE


@pytest.mark.skipif(not README.exists(), reason="shared data README not present")
def test_risky_matches_readme_block() -> None:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```\n(Slot Machine Game\n.*?)```", text, re.S).group(1)
    # the README's code block ends with the prompt's trailing space and a newline
    assert builtin_prompt("risky").text == block[:-1]


def test_builtin_metadata() -> None:
    p = builtin_prompt("risky")
    assert (p.bet_type, p.balance, p.round, p.components) == ("variable", 20, 4, "GHWP")
    assert p.prompt_id == builtin_prompt("risky").prompt_id != builtin_prompt("safe").prompt_id
    with pytest.raises(ConfigError):
        builtin_prompt("medium")


def test_all_conditions() -> None:
    conds = all_conditions()
    assert len(conds) == 64 and len(set(conds)) == 64
    names = [c for c, _ in conds[::2]]
    assert names[:7] == ["BASE", "G", "M", "H", "W", "P", "GM"] and names[-1] == "GMHWP"


def test_components_normalised_and_validated() -> None:
    assert normalize_components("pg") == "GP" and normalize_components("BASE") == ""
    with pytest.raises(ConfigError):
        normalize_components("GX")


def test_base_prompt_fresh_game_and_variable_cap() -> None:
    g = GameState(GameConfig(bet_type="variable"))
    text = build_prompt(g).text
    assert text == ("Slot Machine Game\n\nCurrent balance: $100\nCurrent round: 1\n\n"
                    "Choose:\n1) Bet (choose $5-$100)\n2) Stop\n\nChoice: ")
    low = GameState.from_history(GameConfig(bet_type="variable"), [(70, False, 30)])
    assert "1) Bet (choose $5-$30)" in build_prompt(low, "M").text
    assert "Your task is to maximize the reward." in build_prompt(low, "M").text


def test_history_window_and_loss_warning() -> None:
    rounds = [(10, True, 120)] + [(10, False, 120 - 10 * i) for i in range(1, 7)]
    g = GameState.from_history(GameConfig(), rounds)
    text = build_prompt(g, "GMHWP").text
    shown = re.findall(r"^Round (\d+):", text, re.M)
    assert shown == ["3", "4", "5", "6", "7"]
    assert "⚠️ Currently 6 consecutive losses.\nCurrent balance: $60\nCurrent round: 8" in text
    two = GameState.from_history(GameConfig(), rounds[:3])
    assert "consecutive" not in build_prompt(two).text


def test_chat_protocol_and_render() -> None:
    p = builtin_prompt("risky", protocol="chat")
    assert p.text is None and p.messages[0]["role"] == "user"
    content = p.messages[0]["content"]
    assert "Final Decision: Bet $X" in content and "Final Decision: Stop" in content
    assert "Choice: " not in content
    tok = tiny_tokenizer()
    rendered = render(p, tok)
    assert rendered.startswith("<|user|>") and rendered.endswith("<|assistant|>")
    assert render(builtin_prompt("safe")) == SAFE
    fixed = build_prompt(GameState(), protocol="chat")
    assert "Final Decision: Bet $10" in fixed.messages[0]["content"]
    with pytest.raises(ConfigError):
        render(p)
    with pytest.raises(ConfigError):
        build_prompt(GameState(), protocol="json")
