"""Which words a feature patch adds to, or removes from, the model's responses.

For each patched group (feature x prompt context x condition or scale) the word counts of its
responses are compared with those of its baseline group using the log-odds ratio with an
informative Dirichlet prior of Monroe, Colaresi & Quinn (2008), "Fightin' Words: Lexical Feature
Selection and Evaluation for Identifying the Content of Political Conflict", Political Analysis
16(4), section 3.5, eqs. 16-22.

Why this statistic: raw frequency differences are dominated by common words, and plain log-odds by
rare ones (a word seen once in one group and never in the other gets an infinite ratio). The
prior, proportional to each word's frequency in *all* responses of the input, shrinks rare words
toward no difference, and the z-score scales each difference by its own uncertainty, so one table
can rank "$100" and "stop" side by side.

Word counts are token counts by default. Sampled responses often loop ("Total amount: $100" eight
times); ``binary=True`` counts a word at most once per response, which keeps one looping response
from carrying a whole comparison.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import sparse

from featurepath.analysis.stats import bh_fdr
from featurepath.analysis.words_perm import permutation_p
from featurepath.errors import DataError
from featurepath.rundir import WORD_COLUMNS as TABLE_COLUMNS

__all__ = [
    "DEFAULT_TOKEN_PATTERN",
    "DEFAULT_GROUP_COLS",
    "DEFAULT_MATCH_COLS",
    "TABLE_COLUMNS",
    "Comparison",
    "BaselineSelector",
    "baseline_by_scale",
    "baseline_by_condition",
    "tokenize",
    "count_matrix",
    "compare_to_baseline",
    "log_odds_dirichlet",
    "word_table",
    "summarize_words",
    "baseline_by_patch",
    "summary_markdown",
    "write_outputs",
]

#: ``$10``, ``$1,000``, ``2.5``, ``bet``, ``stop`` and words of any script (``café``) all count:
#: amounts carry the behaviour in this game. Thousands separators are dropped afterwards, so
#: ``$1,000`` and ``$1000`` are one word.
DEFAULT_TOKEN_PATTERN = r"\$?\d{1,3}(?:,\d{3})+(?:\.\d+)?|\$?\d+(?:\.\d+)?|[^\W\d_]+"
_AMOUNT = re.compile(r"\$?[\d,]+(?:\.\d+)?")


def _norm(tok: str) -> str:
    """``$1,000`` -> ``$1000``: one spelling per amount."""
    return tok.replace(",", "") if "," in tok and _AMOUNT.fullmatch(tok) else tok
#: One comparison per distinct value of these columns (patched groups only).
DEFAULT_GROUP_COLS: tuple[str, ...] = ("layer", "feature_id", "context", "condition", "scale")
#: A patched group is compared with the baseline rows that agree on these columns.
DEFAULT_MATCH_COLS: tuple[str, ...] = ("layer", "feature_id", "context")

BaselineSelector = Callable[[pd.DataFrame], "pd.Series | NDArray[np.bool_]"]


# --------------------------------------------------------------------------------------------
# baseline selection


def baseline_by_scale(scale: float = 1.0) -> BaselineSelector:
    """Baseline rows are those at ``scale`` (JSONL logs of the original study: scale 1.0).

    Float scales are compared with ``isclose`` because they went through JSON.
    """

    def select(df: pd.DataFrame) -> NDArray[np.bool_]:
        s = pd.to_numeric(df["scale"], errors="coerce").to_numpy(dtype=float)
        return np.isclose(s, scale)

    return select


def baseline_by_patch() -> BaselineSelector:
    """Baseline rows are those that patch nothing (``patch == "none"``): what the patch stage
    wrote, whatever the conditions are named."""

    def select(df: pd.DataFrame) -> NDArray[np.bool_]:
        return (df["patch"].astype(str) == "none").to_numpy(dtype=bool)

    return select


def baseline_by_condition(pattern: str = r"(^|_)baseline$") -> BaselineSelector:
    """Baseline rows are those whose ``condition`` matches ``pattern`` (a regular expression).

    The default matches ``baseline`` and the pipeline's ``safe_baseline`` / ``risky_baseline``.
    """
    rx = re.compile(pattern)

    def select(df: pd.DataFrame) -> NDArray[np.bool_]:
        return np.array([bool(rx.search(str(c))) for c in df["condition"]], dtype=bool)

    return select


@dataclass(frozen=True)
class Comparison:
    """One patched group and the baseline rows it is compared against (row positions)."""

    key: tuple[object, ...]
    patched: NDArray[np.int64]
    baseline: NDArray[np.int64]


def _isna(v: object) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def compare_to_baseline(
    df: pd.DataFrame,
    baseline_mask_fn: BaselineSelector | None = None,
    group_cols: Sequence[str] = DEFAULT_GROUP_COLS,
    match_cols: Sequence[str] = DEFAULT_MATCH_COLS,
) -> tuple[list[Comparison], list[tuple[object, ...]]]:
    """Pair every patched group with its baseline rows.

    Rows selected by ``baseline_mask_fn`` (default: scale 1.0) are baselines; all other rows are
    grouped by ``group_cols``. A group's baseline is every baseline row that agrees with it on
    ``match_cols``; a baseline row whose match value is missing (e.g. an unpatched run with no
    feature) matches every group, so one shared baseline serves all features.

    Returns ``(comparisons, unmatched)``, where ``unmatched`` lists group keys without any
    baseline row (they cannot be compared and are left out, not silently compared to nothing).
    """
    fn = baseline_mask_fn or baseline_by_scale(1.0)
    is_base = np.asarray(fn(df), dtype=bool)
    if is_base.shape != (len(df),):
        raise DataError("baseline selector must return one boolean per row")
    positions = np.arange(len(df))
    base_pos = positions[is_base]
    base = df.iloc[base_pos]
    base_vals = {c: base[c].to_numpy(dtype=object) for c in match_cols}
    base_na = {c: pd.isna(base[c]).to_numpy() for c in match_cols}

    patched = df.iloc[positions[~is_base]]
    comparisons: list[Comparison] = []
    unmatched: list[tuple[object, ...]] = []
    if patched.empty:
        return comparisons, unmatched
    grouped = patched.groupby(list(group_cols), dropna=False, sort=True).indices
    cache: dict[tuple[object, ...], NDArray[np.int64]] = {}
    for key, local_idx in grouped.items():
        key_t = key if isinstance(key, tuple) else (key,)
        values = dict(zip(group_cols, key_t, strict=True))
        match_key = tuple(values[c] for c in match_cols)
        if match_key not in cache:
            ok = np.ones(base_pos.size, dtype=bool)
            for c, v in zip(match_cols, match_key, strict=True):
                if _isna(v):
                    ok &= base_na[c]
                else:
                    ok &= base_na[c] | (base_vals[c] == v)
            cache[match_key] = base_pos[ok]
        rows = positions[~is_base][local_idx]
        if cache[match_key].size == 0:
            unmatched.append(key_t)
            continue
        comparisons.append(Comparison(key_t, rows, cache[match_key]))
    return comparisons, unmatched


# --------------------------------------------------------------------------------------------
# tokens


def tokenize(text: str, token_pattern: str | None = None) -> list[str]:
    """Lower-case ``text`` and return its tokens (default :data:`DEFAULT_TOKEN_PATTERN`)."""
    return [_norm(t) for t in re.findall(token_pattern or DEFAULT_TOKEN_PATTERN, text.lower())]


def count_matrix(
    texts: Iterable[str], token_pattern: str | None = None, binary: bool = False
) -> tuple[sparse.csr_matrix, list[str]]:
    """Sparse document-term counts [n_texts, vocabulary] and the vocabulary.

    Why sparse: group totals are then one sparse product, instead of a pandas operation per
    word, which keeps a few thousand responses to well under a second.
    """
    rx = re.compile(token_pattern or DEFAULT_TOKEN_PATTERN)
    vocab: dict[str, int] = {}
    indptr = [0]
    indices: list[int] = []
    for text in texts:
        toks = rx.findall(text.lower() if isinstance(text, str) else "")
        for tok in map(_norm, toks):
            j = vocab.get(tok)
            if j is None:
                j = vocab[tok] = len(vocab)
            indices.append(j)
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float64)
    mat = sparse.csr_matrix(
        (data, np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(len(indptr) - 1, len(vocab)),
    )
    mat.sum_duplicates()  # repeated tokens in one response become one count entry
    if binary:
        mat.data[:] = 1.0
    words = [""] * len(vocab)
    for w, j in vocab.items():
        words[j] = w
    return mat, words


# --------------------------------------------------------------------------------------------
# the statistic


def log_odds_dirichlet(
    y_i: NDArray[np.float64],
    y_j: NDArray[np.float64],
    alpha: NDArray[np.float64],
    alpha0: float | None = None,
    n_i: float | NDArray[np.float64] | None = None,
    n_j: float | NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Log-odds ratio with informative Dirichlet prior and its z-score (Monroe et al. 2008).

    delta_w = log((y_iw + a_w) / (n_i + a0 - y_iw - a_w)) - log((y_jw + a_w) / (n_j + a0 - y_jw - a_w))
    var(delta_w) ~= 1 / (y_iw + a_w) + 1 / (y_jw + a_w)                      (eqs. 16 and 20)
    z_w = delta_w / sqrt(var(delta_w))                                         (eq. 22)

    ``y_i``/``y_j`` are full-vocabulary count vectors of group i (patched) and j (baseline);
    n_i, n_j are their totals and a0 = sum(alpha) unless given. Positive z: more frequent in i.
    ``n_i``/``n_j`` may be given (e.g. a column of totals, one per permutation, when ``y_i`` is
    [permutations, words] holding only the tested words).
    """
    a0 = float(alpha.sum()) if alpha0 is None else float(alpha0)
    n_i = float(y_i.sum()) if n_i is None else n_i
    n_j = float(y_j.sum()) if n_j is None else n_j
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.log((y_i + alpha) / (n_i + a0 - y_i - alpha)) - np.log(
            (y_j + alpha) / (n_j + a0 - y_j - alpha)
        )
        z = delta / np.sqrt(1.0 / (y_i + alpha) + 1.0 / (y_j + alpha))
    return delta, z


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in TABLE_COLUMNS})


def word_table(
    responses: pd.DataFrame,
    group_cols: Sequence[str] = DEFAULT_GROUP_COLS,
    baseline_selector: BaselineSelector | None = None,
    token_pattern: str | None = None,
    alpha0: float = 1000.0,
    min_count: int = 5,
    match_cols: Sequence[str] = DEFAULT_MATCH_COLS,
    fdr_alpha: float = 0.05,
    binary: bool = False,
    n_perm: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Words each patched group adds or removes against its baseline, one row per (group, word).

    ``responses`` needs a ``response`` column plus ``group_cols`` and ``match_cols`` (missing
    ``condition``/``scale`` columns are filled with NA). The prior is
    ``alpha_w = alpha0 * background_w / background_total`` with the background = all responses
    of ``responses``. z ranks the words; p comes from ``n_perm`` permutations of whole responses
    between the patched and the baseline group (:mod:`featurepath.analysis.words_perm`), because
    the tokens of one response are not independent. Words with ``count_patched +
    count_baseline < min_count`` are not tested. One Benjamini–Hochberg family spans the whole
    table (every tested word of every comparison). ``direction`` is ``adds`` for z > 0,
    ``removes`` for z < 0; ``significant`` is q <= fdr_alpha.
    The keys of groups without a baseline are in ``table.attrs["unmatched"]``.
    """
    if alpha0 <= 0 or not math.isfinite(alpha0):
        raise DataError(f"alpha0 must be a positive number, got {alpha0}")
    if n_perm < 1:
        raise DataError(f"n_perm must be at least 1, got {n_perm}")
    df = responses.reset_index(drop=True).copy()
    for col in ("condition", "scale"):
        if col not in df.columns and (col in group_cols or col in match_cols):
            df[col] = pd.NA
    needed = {"response", *group_cols, *match_cols}
    missing = sorted(needed - set(df.columns))
    if missing:
        raise DataError(f"responses table lacks column(s): {', '.join(missing)}")
    if df.empty:
        raise DataError("responses table is empty: no words to analyse")
    try:
        re.compile(token_pattern or DEFAULT_TOKEN_PATTERN)
    except re.error as exc:
        raise DataError(f"invalid token pattern {token_pattern!r}: {exc}") from exc

    comparisons, unmatched = compare_to_baseline(df, baseline_selector, group_cols, match_cols)
    counts, vocab = count_matrix(df["response"], token_pattern, binary=binary)
    words = np.asarray(vocab, dtype=object)
    background = np.asarray(counts.sum(axis=0)).ravel()
    total = background.sum()
    if total == 0:
        raise DataError("no tokens found in any response (check the token pattern)")
    alpha = alpha0 * background / total

    base_cache: dict[bytes, NDArray[np.float64]] = {}
    parts: list[pd.DataFrame] = []
    row_tokens = np.asarray(counts.sum(axis=1)).ravel()
    for k, comp in enumerate(comparisons):
        y_i = np.asarray(counts[comp.patched].sum(axis=0)).ravel()
        bkey = comp.baseline.tobytes()
        if bkey not in base_cache:
            base_cache[bkey] = np.asarray(counts[comp.baseline].sum(axis=0)).ravel()
        y_j = base_cache[bkey]
        keep = (y_i + y_j) >= max(min_count, 1)
        if not keep.any() or y_i.sum() == 0 or y_j.sum() == 0:
            continue
        delta, z = log_odds_dirichlet(y_i, y_j, alpha, alpha0)
        delta, z = delta[keep], z[keep]
        both = np.concatenate([comp.patched, comp.baseline])
        p = permutation_p(counts[both][:, keep], row_tokens[both], comp.patched.size, z,
                          alpha[keep], alpha0, n_perm, log_odds_dirichlet, seed=seed + k)
        part = pd.DataFrame(
            {
                "word": words[keep],
                "count_patched": y_i[keep].astype(np.int64),
                "count_baseline": y_j[keep].astype(np.int64),
                "tokens_patched": int(y_i.sum()),
                "tokens_baseline": int(y_j.sum()),
                "responses_patched": comp.patched.size,
                "responses_baseline": comp.baseline.size,
                "log_odds": delta,
                "z": z,
                "p": p,
                "direction": np.where(z > 0, "adds", np.where(z < 0, "removes", "none")),
            }
        )
        for col, val in zip(group_cols, comp.key, strict=True):
            part.insert(0, col, [val] * len(part))
        parts.append(part.sort_values("z", ascending=False, kind="mergesort"))

    table = pd.concat(parts, ignore_index=True) if parts else _empty_table()
    if parts:  # one family over the whole table
        table["q"] = bh_fdr(table["p"].to_numpy(dtype=float))
        table["significant"] = table["q"] <= fdr_alpha
    lead = [c for c in TABLE_COLUMNS if c in table.columns]
    extra = [c for c in table.columns if c not in lead]
    table = table[lead + extra]
    table.attrs["unmatched"] = [list(k) for k in unmatched]
    table.attrs["params"] = {
        "alpha0": alpha0, "min_count": min_count, "fdr_alpha": fdr_alpha, "binary": binary,
        "n_perm": n_perm,
        "token_pattern": token_pattern or DEFAULT_TOKEN_PATTERN,
        "group_cols": list(group_cols), "match_cols": list(match_cols),
    }
    return table


# --------------------------------------------------------------------------------------------
# summaries and files


def _fmt_num(v: object) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def group_label(layer: object, feature_id: object, context: object = None,
                condition: object = None, scale: object = None) -> str:
    """``L30-16039 (risky, scale 2.0)``; the condition is shown unless it only names the scale."""
    bits: list[str] = []
    if not _isna(context) and context is not None and str(context):
        bits.append(str(context))
    cond = "" if condition is None or _isna(condition) else str(condition)
    if cond and not cond.startswith("scale"):
        bits.append(cond)
    if scale is not None and not _isna(scale):
        try:
            bits.append(f"scale {float(scale)}")  # type: ignore[arg-type]
        except (TypeError, ValueError):
            bits.append(f"scale {scale}")
    head = f"L{_fmt_num(layer)}-{_fmt_num(feature_id)}"
    return f"{head} ({', '.join(bits)})" if bits else head


def summarize_words(table: pd.DataFrame, top: int = 8, fdr_alpha: float | None = None) -> pd.DataFrame:
    """One row per compared group: counts of significant adds/removes and a one-line summary.

    The line reads ``L30-16039 (risky, scale 2.0) adds: $100, bet …; removes: stop …`` with the
    ``top`` significant words of each direction by |z| ("none" when there are none).
    """
    cols = [c for c in DEFAULT_GROUP_COLS if c in table.columns]
    out_cols = [*cols, "n_words", "n_adds", "n_removes", "top_adds", "top_removes", "summary"]
    if table.empty:
        return pd.DataFrame(columns=out_cols)
    sig = table["significant"] if fdr_alpha is None else table["q"] <= fdr_alpha
    rows = []
    for key, g in table.assign(_sig=sig).groupby(cols, dropna=False, sort=True):
        key_t = key if isinstance(key, tuple) else (key,)
        vals = dict(zip(cols, key_t, strict=True))
        s = g[g["_sig"]]
        adds = s[s["z"] > 0].sort_values("z", ascending=False)["word"].tolist()
        rem = s[s["z"] < 0].sort_values("z", ascending=True)["word"].tolist()

        def fmt(ws: list[str]) -> str:
            if not ws:
                return "none"
            return ", ".join(ws[:top]) + (" …" if len(ws) > top else "")

        label = group_label(vals.get("layer"), vals.get("feature_id"), vals.get("context"),
                            vals.get("condition"), vals.get("scale"))
        rows.append({**vals, "n_words": len(g), "n_adds": len(adds), "n_removes": len(rem),
                     "top_adds": ", ".join(adds[:top]), "top_removes": ", ".join(rem[:top]),
                     "summary": f"{label} adds: {fmt(adds)}; removes: {fmt(rem)}"})
    return pd.DataFrame(rows, columns=out_cols)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("$", "\\$")


def summary_markdown(table: pd.DataFrame, top: int = 8, title: str = "Words added and removed "
                     "by feature patches") -> str:
    """Markdown report: parameters, then one line per compared group (most words first)."""
    params = table.attrs.get("params", {})
    summ = summarize_words(table, top=top)
    lines = [f"# {title}", ""]
    if params:
        lines += [
            "Log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi & Quinn 2008), "
            f"alpha0 = {params.get('alpha0')}, prior from all responses of the input; "
            f"words seen fewer than {params.get('min_count')} times in a comparison are not "
            f"tested; p from {params.get('n_perm')} permutations of whole responses between "
            f"the groups (z only ranks); one Benjamini–Hochberg family over the whole table, "
            f"q <= {params.get('fdr_alpha')}; counts are "
            f"{'responses containing the word' if params.get('binary') else 'tokens'}; "
            f"token pattern `{params.get('token_pattern')}`.",
            "",
        ]
    if summ.empty:
        lines.append("No comparison could be made (no patched group had a baseline).")
        return "\n".join(lines) + "\n"
    n_sig = int((summ["n_adds"] + summ["n_removes"] > 0).sum())
    lines += [f"{len(summ)} comparisons, {n_sig} with at least one significant word.", ""]
    order = summ.assign(_n=summ["n_adds"] + summ["n_removes"]).sort_values(
        "_n", ascending=False, kind="mergesort")
    for _, r in order.iterrows():
        lines.append(f"- {_md_escape(str(r['summary']))}")
    unmatched = table.attrs.get("unmatched") or []
    if unmatched:
        lines += ["", f"{len(unmatched)} patched group(s) had no baseline and were skipped."]
    return "\n".join(lines) + "\n"


def write_outputs(table: pd.DataFrame, out_dir: str | Path, top: int = 8) -> dict[str, Path]:
    """Write ``words.parquet``, ``words.csv`` and ``words_summary.md`` into ``out_dir``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output directory {out}: {exc}") from exc
    paths = {
        "parquet": out / "words.parquet",
        "csv": out / "words.csv",
        "summary": out / "words_summary.md",
    }
    plain = table.copy()
    plain.attrs = {}  # parquet metadata must be JSON-serialisable; params go to the markdown
    for col in ("condition", "context", "word", "direction"):
        if col in plain.columns:
            plain[col] = plain[col].astype("string")
    plain.to_parquet(paths["parquet"], index=False)
    plain.to_csv(paths["csv"], index=False)
    paths["summary"].write_text(summary_markdown(table, top=top), encoding="utf-8")
    return paths
