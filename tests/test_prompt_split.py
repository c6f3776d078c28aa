"""The held-out split: deterministic, by key alone, at the configured share, by game for play."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from featurepath.pipeline.prompt_sets import games_of_half, state_prompt_sets
from featurepath.pipeline.prompt_split import half_of, split_u, take_half


def test_split_u_is_a_fixed_function_of_the_key():
    # sha256(salt + "abc") read as a fraction: pinned, so the split is the same everywhere
    assert split_u("abc") == split_u("abc")
    assert split_u("abc") != split_u("abd")
    assert 0.0 <= split_u("abc") < 1.0


@settings(max_examples=20, deadline=None)
@given(st.floats(0.1, 0.9))
def test_share_of_keys_in_confirm_matches_the_config(share):
    keys = [f"prompt-{i}" for i in range(4000)]
    n_conf = sum(half_of(k, share) == "confirm" for k in keys)
    # binomial(4000, share): 5 standard deviations
    sd = (4000 * share * (1 - share)) ** 0.5
    assert abs(n_conf - 4000 * share) < 5 * sd


def test_a_key_keeps_its_half_whatever_else_is_in_the_population():
    a = take_half([f"k{i}" for i in range(50)], str, "confirm", 0.5)
    b = take_half([f"k{i}" for i in range(50, 100)] + [f"k{i}" for i in range(50)], str,
                  "confirm", 0.5)
    assert set(a) <= set(b) and set(b) - set(a) <= {f"k{i}" for i in range(50, 100)}


def test_halves_are_disjoint_and_share_zero_keeps_the_old_population():
    screen = state_prompt_sets(None, "completion", 6, "GHWP", 0, "screen", 0.5)
    confirm = state_prompt_sets(None, "completion", 6, "GHWP", 0, "confirm", 0.5)
    for ctx in ("safe", "risky"):
        ids_s = {r.prompt_id for r in screen[ctx]}
        ids_c = {r.prompt_id for r in confirm[ctx]}
        assert len(ids_s) == len(ids_c) == 6 and not ids_s & ids_c
        assert all(half_of(i, 0.5) == "screen" for i in ids_s)
    whole = state_prompt_sets(None, "completion", 6, "GHWP", 0, None)
    unsplit = state_prompt_sets(None, "completion", 6, "GHWP", 0, "screen", 0.0)
    assert [r.prompt_id for r in whole["safe"]] == [r.prompt_id for r in unsplit["safe"]]


def test_play_points_split_by_game_not_by_decision():
    df = pd.DataFrame({"game_id": [f"g{i // 5}" for i in range(400)], "round": range(400)})
    scr = games_of_half(df, "screen", 0.5)
    con = games_of_half(df, "confirm", 0.5)
    assert len(scr) + len(con) == 400
    assert not set(scr["game_id"]) & set(con["game_id"])
    assert (scr.groupby("game_id").size() == 5).all()
