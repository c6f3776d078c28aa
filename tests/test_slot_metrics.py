"""Behavioural metrics against values computed by hand on a small decision table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from featurepath.tasks.slot_machine import GameConfig, game_table, play, summarize_games

COLS = ["game_id", "condition", "bet_type", "round", "balance_before", "action", "bet", "valid",
        "outcome", "balance_after", "end_reason"]
ROWS = [
    # game A: lose $10, then bet half the balance and win, then stop
    ("A", "G", "variable", 1, 100, "bet", 10, True, "loss", 90, None),
    ("A", "G", "variable", 2, 90, "bet", 45, True, "win", 180, None),
    ("A", "G", "variable", 3, 180, "stop", None, True, None, 180, "stop"),
    # game B: one unreadable answer, then all-in and bust
    ("B", "G", "variable", 1, 100, "bet", None, False, None, None, None),
    ("B", "G", "variable", 1, 100, "bet", 100, True, "loss", 0, "bankrupt"),
    # game C: fixed $10, win, loss, stop
    ("C", "BASE", "fixed", 1, 100, "bet", 10, True, "win", 120, None),
    ("C", "BASE", "fixed", 2, 120, "bet", 10, True, "loss", 110, None),
    ("C", "BASE", "fixed", 3, 110, "stop", None, True, None, None, "stop"),
]


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=COLS)


def test_per_game_indices(table: pd.DataFrame) -> None:
    g = game_table(table).set_index("game_id")
    # A: ratios 0.1, 0.5; loss at t=1 then ratio 0.1 -> 0.5 is +400%
    assert g.loc["A", "i_ba"] == pytest.approx(0.3)
    assert g.loc["A", "i_eb"] == pytest.approx(0.5)
    assert g.loc["A", "i_lc"] == pytest.approx(4.0)
    assert g.loc["A", "lc_bet"] == pytest.approx(3.5)
    # B: all-in (ratio 1), terminal loss contributes 0
    assert (g.loc["B", "i_ba"], g.loc["B", "i_eb"], g.loc["B", "i_lc"]) == (1.0, 1.0, 0.0)
    # C: ratios 0.1 and 10/120; loss then stop contributes 0
    assert g.loc["C", "i_ba"] == pytest.approx((0.1 + 10 / 120) / 2)
    assert g.loc["C", "net"] == 10 and g.loc["C", "final_balance"] == 110


def test_summary_hand_values(table: pd.DataFrame) -> None:
    s = summarize_games(table).set_index("condition")
    g = s.loc["G"]
    assert g["bet_type"] == "variable" and g["n_games"] == 2
    assert g["bankruptcy_rate"] == 0.5 and g["stop_rate"] == 0.5
    assert g["mean_rounds"] == 1.5
    assert g["mean_bet"] == pytest.approx(155 / 3)
    assert g["total_bet"] == pytest.approx(77.5)
    assert g["mean_net"] == pytest.approx(-10.0)
    assert g["invalid_rate"] == pytest.approx(0.2)
    assert g["betting_aggressiveness"] == pytest.approx(0.65)
    assert g["extreme_betting"] == pytest.approx(0.75)
    assert g["loss_chasing"] == pytest.approx(2.0)
    assert g["loss_chasing_bet"] == pytest.approx(1.75)
    assert g["irrationality_index"] == pytest.approx(0.4 * 0.65 + 0.3 * 2.0 + 0.3 * 0.75)
    b = s.loc["BASE"]
    assert b["stop_rate"] == 1.0 and b["bankruptcy_rate"] == 0.0 and b["mean_bet"] == 10
    assert b["irrationality_index"] == pytest.approx(0.4 * (0.1 + 10 / 120) / 2)
    assert b["invalid_rate"] == 0.0


def test_missing_columns_raise(table: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="outcome"):
        summarize_games(table.drop(columns=["outcome"]))


def test_summary_of_simulated_games_matches_rules() -> None:
    """Metrics from real rule-engine games: bet $10 until $150 or bust."""
    rows = []
    for seed in range(20):
        state = play(lambda s: "stop" if s.balance >= 150 else "bet", GameConfig(), seed=seed)
        bal = 100.0
        for r in state.history:
            rows.append((seed, "BASE", "fixed", r.round, bal, "bet", r.bet, True,
                         "win" if r.win else "loss", r.balance, None))
            bal = r.balance
        if state.end_reason == "stop":
            rows.append((seed, "BASE", "fixed", state.round, bal, "stop", None, True, None,
                         bal, "stop"))
        else:
            rows[-1] = rows[-1][:-1] + (state.end_reason,)
    s = summarize_games(pd.DataFrame(rows, columns=COLS)).iloc[0]
    assert s["n_games"] == 20 and s["mean_bet"] == 10
    assert math.isclose(s["bankruptcy_rate"] + s["stop_rate"] + s["round_limit_rate"], 1.0)
    assert s["extreme_betting"] == pytest.approx(
        game_table(pd.DataFrame(rows, columns=COLS))["i_eb"].mean())


# --- decision-token read-out (kept here: it is part of the task's behavioural measurement) ---

def test_option_token_ids_tiny_tokenizer() -> None:
    from featurepath.tasks.slot_machine import option_token_ids
    from featurepath.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    ids = option_token_ids(tok)
    assert ids == {"bet": [tok.convert_tokens_to_ids("1")],
                   "stop": [tok.convert_tokens_to_ids("2")]}


def test_p_stop_from_logits_hand_values() -> None:
    import torch

    from featurepath.tasks.slot_machine import p_stop_from_logits

    ids = {"bet": [1, 2], "stop": [3]}
    logits = torch.zeros(2, 3, 6)
    # row 0: bet ids each logit 0 (mass 2), stop logit log(2) (mass 2) -> 0.5
    logits[0, :, 3] = math.log(2.0)
    # row 1: stop mass e^1, bet mass 2 -> e / (e + 2); an irrelevant token does not matter
    logits[1, :, 3] = 1.0
    logits[1, :, 5] = 50.0
    p = p_stop_from_logits(logits, ids)
    assert p.shape == (2, 3)
    assert torch.allclose(p[0], torch.full((3,), 0.5))
    assert torch.allclose(p[1], torch.full((3,), math.e / (math.e + 2)))
    # extreme logits stay finite (no overflow in a naive softmax)
    big = torch.tensor([[0.0, 1e4, -1e4, 1e4 + 1, 0.0, 0.0]], dtype=torch.bfloat16)
    out = p_stop_from_logits(big, ids)
    assert torch.isfinite(out).all() and 0.0 <= float(out) <= 1.0
