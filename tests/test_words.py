"""Tests of the word analysis (featurepath.analysis.words)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurepath.analysis import words as W
from featurepath.errors import DataError


def _planted(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Baseline (scale 1.0) vs patched (scale 2.0) responses of one feature.

    '$100' is planted in the patched responses, 'stop' only in the baseline ones; 'slot' is in
    every response of both groups (equally frequent), the filler words vary at random.
    """
    rng = np.random.default_rng(seed)
    filler = ["red", "blue", "green", "seven", "cherry", "lemon", "bell", "bar"]
    rows = []
    for scale, special in ((1.0, "stop"), (2.0, "$100")):
        for i in range(n):
            words = ["slot", special, *rng.choice(filler, 4)]
            rng.shuffle(words)
            rows.append({"layer": 30, "feature_id": 16039, "context": "risky",
                         "condition": "baseline" if scale == 1.0 else "scale_2.0",
                         "scale": scale, "trial_index": i, "response": " ".join(words)})
    return pd.DataFrame(rows)


def test_log_odds_matches_hand_computed_formula() -> None:
    # vocabulary of three words; background = both groups together
    y_i = np.array([10.0, 5.0, 5.0])  # n_i = 20
    y_j = np.array([2.0, 8.0, 10.0])  # n_j = 20
    bg = y_i + y_j  # 12, 13, 15 -> total 40
    alpha0 = 4.0
    alpha = alpha0 * bg / bg.sum()  # 1.2, 1.3, 1.5
    delta, z = W.log_odds_dirichlet(y_i, y_j, alpha, alpha0)
    # word 0 by hand: a_w = 1.2
    d0 = math.log((10 + 1.2) / (20 + 4 - 10 - 1.2)) - math.log((2 + 1.2) / (20 + 4 - 2 - 1.2))
    v0 = 1 / (10 + 1.2) + 1 / (2 + 1.2)
    assert d0 == pytest.approx(math.log(11.2 / 12.8) - math.log(3.2 / 20.8))
    assert delta[0] == pytest.approx(d0)
    assert z[0] == pytest.approx(d0 / math.sqrt(v0))
    # = (-0.133531 + 1.871802) / sqrt(0.089286 + 0.3125) = 1.738271 / 0.633866
    assert z[0] == pytest.approx(2.742333, abs=1e-5)
    assert z[1] < 0 and z[2] < 0


def test_word_table_on_planted_word_uses_the_formula() -> None:
    df = _planted()
    table = W.word_table(df, alpha0=1000.0, min_count=1)
    row = table.set_index("word").loc["$100"]
    counts, vocab = W.count_matrix(df["response"])
    bg = np.asarray(counts.sum(axis=0)).ravel()
    a_w = 1000.0 * bg[vocab.index("$100")] / bg.sum()
    n_i, n_j = row["tokens_patched"], row["tokens_baseline"]
    d = math.log((40 + a_w) / (n_i + 1000 - 40 - a_w)) - math.log(a_w / (n_j + 1000 - a_w))
    assert row["log_odds"] == pytest.approx(d)
    assert row["z"] == pytest.approx(d / math.sqrt(1 / (40 + a_w) + 1 / a_w))


def test_planted_word_recovered_and_equal_word_stays_out() -> None:
    table = W.word_table(_planted())
    by_word = table.set_index("word")
    assert by_word.loc["$100", "direction"] == "adds"
    assert by_word.loc["$100", "q"] < 0.05 and by_word.loc["$100", "significant"]
    assert by_word.loc["stop", "direction"] == "removes"
    assert by_word.loc["stop", "q"] < 0.05
    assert by_word.loc["slot", "count_patched"] == by_word.loc["slot", "count_baseline"] == 40
    assert not by_word.loc["slot", "significant"]
    assert by_word.loc["slot", "q"] > 0.5
    assert set(table[table["significant"]]["word"]) == {"$100", "stop"}
    assert list(table.columns[: len(W.TABLE_COLUMNS)]) == list(W.TABLE_COLUMNS)
    assert (table["layer"] == 30).all() and (table["scale"] == 2.0).all()


def test_bh_family_is_the_whole_table_and_min_count_filters() -> None:
    from statsmodels.stats.multitest import multipletests

    df = pd.concat([_planted(), _planted(seed=1).assign(feature_id=2)], ignore_index=True)
    df.loc[df.index[-1], "response"] += " zyzzyva"  # seen once: below min_count, not tested
    table = W.word_table(df, min_count=5)
    assert "zyzzyva" not in set(table["word"])
    assert table["feature_id"].nunique() == 2
    # one family over every word of every comparison (issue 11), checked against statsmodels
    np.testing.assert_allclose(table["q"], multipletests(table["p"], method="fdr_bh")[1])
    assert W.word_table(df, min_count=1)["word"].eq("zyzzyva").any()


def test_summary_line_format() -> None:
    table = W.word_table(_planted())
    summ = W.summarize_words(table)
    assert len(summ) == 1
    assert summ["summary"][0] == "L30-16039 (risky, scale 2.0) adds: $100; removes: stop"
    assert summ["n_adds"][0] == 1 and summ["n_removes"][0] == 1
    md = W.summary_markdown(table)
    assert "Monroe" in md and "L30-16039 (risky, scale 2.0) adds: \\$100" in md


def test_token_pattern_is_configurable() -> None:
    assert W.tokenize("Bet $10, then 100 more. STOP!") == ["bet", "$10", "then", "100", "more",
                                                           "stop"]
    table = W.word_table(_planted(), token_pattern=r"\b[a-z]+\b", min_count=1)
    assert "$100" not in set(table["word"]) and "100" not in set(table["word"])
    with pytest.raises(DataError):
        W.word_table(_planted(), token_pattern="(")


def test_binary_counts_once_per_response() -> None:
    df = _planted()
    df.loc[df["scale"] == 2.0, "response"] += " loop loop loop loop loop"
    tokens = W.word_table(df).set_index("word")
    binary = W.word_table(df, binary=True).set_index("word")
    assert tokens.loc["loop", "count_patched"] == 200
    assert binary.loc["loop", "count_patched"] == 40
    assert binary.loc["loop", "z"] < tokens.loc["loop", "z"]


def test_condition_baselines_shared_across_features() -> None:
    """Pipeline layout: one unpatched baseline per context (feature_id missing) serves all."""
    base = _planted()
    rows = []
    for ctx in ("safe", "risky"):
        b = base[base["scale"] == 1.0].assign(context=ctx, condition=f"{ctx}_baseline",
                                               feature_id=np.nan, layer=np.nan, scale=np.nan)
        p1 = base[base["scale"] == 2.0].assign(context=ctx, condition=f"{ctx}_with_risky_patch",
                                               scale=np.nan)
        rows += [b, p1, p1.assign(feature_id=7, layer=9)]
    df = pd.concat(rows, ignore_index=True)
    comps, unmatched = W.compare_to_baseline(
        df, W.baseline_by_condition(), W.DEFAULT_GROUP_COLS, W.DEFAULT_MATCH_COLS)
    assert len(comps) == 4 and not unmatched
    for c in comps:
        assert df.iloc[c.baseline]["condition"].str.endswith("baseline").all()
        assert df.iloc[c.baseline]["context"].nunique() == 1
        assert df.iloc[c.baseline]["context"].iloc[0] == df.iloc[c.patched]["context"].iloc[0]
    table = W.word_table(df, baseline_selector=W.baseline_by_condition())
    summ = W.summarize_words(table)
    assert "L9-7 (risky, risky_with_risky_patch) adds: $100; removes: stop" in set(summ["summary"])


def test_unmatched_groups_reported() -> None:
    df = _planted()
    extra = df[df["scale"] == 2.0].assign(feature_id=99)  # no baseline rows for feature 99
    table = W.word_table(pd.concat([df, extra], ignore_index=True))
    assert table.attrs["unmatched"] == [[30, 99, "risky", "scale_2.0", 2.0]]
    assert set(table["feature_id"]) == {16039}


def test_bad_inputs_raise_data_error() -> None:
    with pytest.raises(DataError, match="response"):
        W.word_table(_planted().drop(columns="response"))
    with pytest.raises(DataError):
        W.word_table(_planted().iloc[0:0])
    with pytest.raises(DataError):
        W.word_table(_planted(), alpha0=0)
    with pytest.raises(DataError):
        W.word_table(_planted().assign(response=""))


def test_no_baseline_at_all_gives_empty_table_and_outputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    df = _planted()
    table = W.word_table(df[df["scale"] == 2.0])
    assert table.empty and list(table.columns) == list(W.TABLE_COLUMNS)
    paths = W.write_outputs(table, tmp_path)
    assert "No comparison" in paths["summary"].read_text()


def test_write_outputs_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    table = W.word_table(_planted())
    paths = W.write_outputs(table, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"words.parquet", "words.csv", "words_summary.md"}
    back = pd.read_parquet(paths["parquet"])
    assert len(back) == len(table)
    np.testing.assert_allclose(back["z"], table["z"])
    assert len(pd.read_csv(paths["csv"])) == len(table)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 50), min_size=2, max_size=12),
    st.lists(st.integers(0, 50), min_size=2, max_size=12),
    st.floats(0.1, 5000),
)
def test_log_odds_antisymmetric_and_finite(a: list[int], b: list[int], alpha0: float) -> None:
    m = min(len(a), len(b))
    y_i, y_j = np.array(a[:m], float), np.array(b[:m], float)
    bg = y_i + y_j + 1.0  # background includes other groups, so every word has some prior
    alpha = alpha0 * bg / bg.sum()
    d1, z1 = W.log_odds_dirichlet(y_i, y_j, alpha, alpha0)
    d2, z2 = W.log_odds_dirichlet(y_j, y_i, alpha, alpha0)
    assert np.isfinite(z1).all()
    np.testing.assert_allclose(z1, -z2, atol=1e-9)
    np.testing.assert_allclose(d1, -d2, atol=1e-9)
    same = y_i == y_j
    if y_i.sum() == y_j.sum():
        np.testing.assert_allclose(z1[same], 0.0, atol=1e-9)
