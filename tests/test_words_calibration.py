"""Issue 11, item 6 (and the tokenizer of item 8): calibrated word p-values.

The reference values are independent of the implementation: an exhaustive enumeration of every
split of the responses (the exact permutation p), written here with plain loops, and a null
simulation in which nothing differs between the groups.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from featurepath.analysis import words as W


def test_tokenizer_keeps_thousands_and_non_ascii_words() -> None:
    assert W.tokenize("Bet $1,000 now, café au lait — stop at 2,500.") == [
        "bet", "$1000", "now", "café", "au", "lait", "stop", "at", "2500"]
    assert W.tokenize("I bet $10. Then $1000, then $1,000.") == [
        "i", "bet", "$10", "then", "$1000", "then", "$1000"]
    assert W.tokenize("Ставка 10") == ["ставка", "10"]
    mat, vocab = W.count_matrix(["$1,000 and $1000"])
    assert vocab == ["$1000", "and"] and mat.toarray().tolist() == [[2.0, 1.0]]


def _z_by_hand(counts: list[dict[str, int]], group: set[int], word: str,
               alpha: dict[str, float], a0: float) -> float:
    """Monroe et al. (2008) eqs. 16, 20, 22 with plain Python sums."""
    y_i = sum(c.get(word, 0) for r, c in enumerate(counts) if r in group)
    y_j = sum(c.get(word, 0) for r, c in enumerate(counts) if r not in group)
    n_i = sum(sum(c.values()) for r, c in enumerate(counts) if r in group)
    n_j = sum(sum(c.values()) for r, c in enumerate(counts) if r not in group)
    a = alpha[word]
    d = math.log((y_i + a) / (n_i + a0 - y_i - a)) - math.log((y_j + a) / (n_j + a0 - y_j - a))
    return d / math.sqrt(1 / (y_i + a) + 1 / (y_j + a))


def test_permutation_p_matches_exhaustive_enumeration() -> None:
    texts = ["bet bet bet bet stop", "bet bet bet", "bet stop", "bet bet bet bet",  # patched
             "stop stop", "stop bet", "stop", "bet stop stop"]  # baseline
    df = pd.DataFrame({"layer": 1, "feature_id": [1.0] * 4 + [np.nan] * 4, "context": "x",
                       "condition": ["c"] * 4 + ["baseline"] * 4, "scale": np.nan,
                       "response": texts})
    a0 = 10.0
    table = W.word_table(df, baseline_selector=W.baseline_by_condition(), alpha0=a0,
                         min_count=1, n_perm=40_000, seed=3).set_index("word")
    counts = [dict(zip(*np.unique(t.split(), return_counts=True), strict=True)) for t in texts]
    bg = {w: sum(c.get(w, 0) for c in counts) for w in ("bet", "stop")}
    alpha = {w: a0 * v / sum(bg.values()) for w, v in bg.items()}
    for word in ("bet", "stop"):
        obs = abs(_z_by_hand(counts, {0, 1, 2, 3}, word, alpha, a0))
        splits = list(itertools.combinations(range(8), 4))
        extreme = sum(abs(_z_by_hand(counts, set(s), word, alpha, a0)) >= obs - 1e-12
                      for s in splits)
        exact = extreme / len(splits)  # 70 splits; the observed one among them
        assert table.loc[word, "p"] == pytest.approx(exact, abs=0.01)
        assert table.loc[word, "z"] == pytest.approx(_z_by_hand(counts, {0, 1, 2, 3}, word,
                                                                alpha, a0))


def _null_responses(n_comparisons: int, n: int, seed: int) -> pd.DataFrame:
    """Patched and baseline responses from one distribution; each response loops one word."""
    rng = np.random.default_rng(seed)
    vocab = ["bet", "stop", "$10", "$20", "$50", "$100", "spin", "win", "lose", "again", "total",
             "amount"]
    rows = []
    for f in range(n_comparisons):
        for cond in ("baseline", "patched"):
            for _ in range(n):
                loop = [rng.choice(vocab)] * int(rng.integers(5, 40))
                words = loop + list(rng.choice(vocab, 3))
                rows.append({"layer": 5, "feature_id": float(f), "context": "risky",
                             "condition": cond, "scale": np.nan, "response": " ".join(words)})
    return pd.DataFrame(rows)


def test_null_comparisons_find_no_words() -> None:
    # Nothing differs between the groups. Token-level normal p-values flagged words in every one
    # of these 40 comparisons (229 words; 53% of p < 0.05); permutation p with one BH family over
    # the table keeps the chance of any false finding at about alpha.
    df = _null_responses(n_comparisons=40, n=30, seed=11)
    table = W.word_table(df, baseline_selector=W.baseline_by_condition(), min_count=5,
                         n_perm=1000)
    assert table["feature_id"].nunique() == 40
    assert int(table["significant"].sum()) == 0
    # and the p-values themselves are about uniform: ~5% below 0.05, not a multiple of it
    assert float((table["p"] < 0.05).mean()) < 0.09
