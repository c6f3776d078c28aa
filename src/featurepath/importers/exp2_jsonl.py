"""Import the original study's JSONL logs of patched responses and analyse them.

The logs (e.g. ``exp2_patched_responses_dev.jsonl``) hold one trial a line: the patched feature,
the prompt context, the patch scale and the generated text, plus the study's own parse of it.
That parse is *not* ground truth (it called any response containing "stop" a stop), so every
response is parsed again with featurepath's strict parser; the original fields are kept as
``orig_*`` columns so the two can be compared.

Why a line-by-line reader instead of ``pandas.read_json(lines=True)``: one bad line would abort
the whole read, and the user needs to know *which* lines were bad. Bad lines are reported with
their line numbers and skipped.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurepath.analysis.stats import bh_fdr, spearman
from featurepath.analysis.words import baseline_by_scale, summarize_words, word_table, write_outputs
from featurepath.errors import DataError

__all__ = [
    "CONTEXTS",
    "ImportReport",
    "read_exp2_jsonl",
    "reparse",
    "pool_by_direction",
    "rates_by_scale",
    "scale_trend_by_log",
    "run_words_jsonl",
]

#: prompt context -> (bet type, balance at the decision), from the two prompts of the study.
CONTEXTS: dict[str, tuple[str, float]] = {"safe": ("fixed", 140.0), "risky": ("variable", 20.0)}
_INT_FIELDS = ("layer", "feature_id", "trial_index")
_BASELINE_SCALE = 1.0
_MAX_REPORTED = 20
#: Integer fields are stored as int64; layers, feature ids and trial indices are never negative.
_INT_MAX = 2**63 - 1
#: Steering scales beyond this magnitude are typos or corrupt lines (the study used 0-3); they
#: would also become condition names and plot axes.
MAX_ABS_SCALE = 1000.0


@dataclass
class ImportReport:
    """What the importer read, skipped and why; ``text()`` is what the CLI prints."""

    path: str
    n_lines: int = 0
    n_rows: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    duplicate_keys: int = 0
    parser: str = "featurepath.tasks.slot_machine.parse_response"

    def text(self, max_lines: int = _MAX_REPORTED) -> str:
        """Multi-line report: one line per skipped input line (first ``max_lines``), then counts."""
        out = [f"skipped line {n}: {why}" for n, why in self.skipped[:max_lines]]
        if len(self.skipped) > max_lines:
            out.append(f"... and {len(self.skipped) - max_lines} more skipped lines")
        out.append(
            f"{self.path}: {self.n_rows} trials read, {len(self.skipped)} of {self.n_lines} "
            f"non-blank lines skipped"
        )
        if self.duplicate_keys:
            out.append(
                f"note: {self.duplicate_keys} (feature, context, scale, trial_index) keys occur "
                f"more than once; all their trials are kept"
            )
        return "\n".join(out)


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return None


def _clip(v: Any, n: int = 40) -> str:
    """``repr`` short enough for a one-line report (a 10,000-digit integer is not)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**30:
        return f"an integer of about {int(v.bit_length() * 0.30103) + 1} digits"
    text = repr(v)
    return text if len(text) <= n else text[:n - 3] + "..."


def _validate(obj: Any) -> tuple[dict[str, Any] | None, str]:
    """One JSON value -> a row dict, or (None, reason) when it cannot be used."""
    if not isinstance(obj, dict):
        return None, f"not a JSON object ({type(obj).__name__})"
    missing = [k for k in (*_INT_FIELDS, "prompt_type", "scale", "response") if k not in obj]
    if missing:
        return None, f"missing field(s): {', '.join(missing)}"
    row: dict[str, Any] = {}
    for k in _INT_FIELDS:
        iv = _as_int(obj[k])
        if iv is None:
            return None, f"field {k!r} is not an integer: {_clip(obj[k])}"
        if not 0 <= iv <= _INT_MAX:
            return None, f"field {k!r} is out of range (0 to 2^63-1): {_clip(iv)}"
        row[k] = iv
    ctx = obj["prompt_type"]
    if not isinstance(ctx, str) or ctx not in CONTEXTS:
        return None, f"field 'prompt_type' must be one of {sorted(CONTEXTS)}, got {ctx!r}"
    scale = obj["scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        return None, f"field 'scale' is not a finite number: {_clip(scale)}"
    if abs(scale) > MAX_ABS_SCALE:
        return None, f"field 'scale' is out of range (|scale| <= {MAX_ABS_SCALE:g}): {_clip(scale)}"
    if not isinstance(obj["response"], str):
        return None, f"field 'response' is not a string: {type(obj['response']).__name__}"
    row["context"] = ctx
    row["scale"] = float(scale)
    row["response"] = obj["response"]
    # the study's own parse, kept only for comparison; wrong types become missing, not errors
    dec = obj.get("decision")
    row["orig_decision"] = dec if isinstance(dec, str) else None
    bet = obj.get("bet")
    row["orig_bet"] = (
        float(bet) if isinstance(bet, (int, float)) and not isinstance(bet, bool) else math.nan
    )
    valid = obj.get("valid")
    row["orig_valid"] = valid if isinstance(valid, bool) else None
    src = obj.get("source")
    row["orig_source"] = src if isinstance(src, str) else None
    return row, ""


def _condition(scale: float) -> str:
    return "baseline" if math.isclose(scale, _BASELINE_SCALE) else f"scale_{scale}"


def reparse(df: pd.DataFrame) -> pd.DataFrame:
    """Add featurepath's parse of every response: action, bet, valid, parse_reason, stop.

    Safe context: fixed $10 betting with $140; risky: variable $5-$100 betting with $20 (the
    balances of the study's two prompts, so a $50 bet in the risky prompt is invalid).
    """
    from featurepath.tasks import get_task

    parse_response = get_task("slot_machine").parse  # the study's logs are slot-machine games

    out = df.copy()
    actions: list[str | None] = []
    bets: list[float] = []
    valids: list[bool] = []
    reasons: list[str] = []
    for text, ctx in zip(out["response"], out["context"], strict=True):
        bet_type, balance = CONTEXTS[ctx]
        d = parse_response(text, bet_type=bet_type, protocol="completion", balance=balance)
        actions.append(d.action)
        bets.append(math.nan if d.bet is None else float(d.bet))
        valids.append(bool(d.valid))
        reasons.append(d.reason)
    out["bet_type"] = [CONTEXTS[c][0] for c in out["context"]]
    out["balance"] = [CONTEXTS[c][1] for c in out["context"]]
    out["action"] = pd.array(actions, dtype="string")
    out["bet"] = np.asarray(bets, dtype=float)
    out["valid"] = np.asarray(valids, dtype=bool)
    out["parse_reason"] = pd.array(reasons, dtype="string")
    out["stop"] = (out["action"] == "stop").fillna(False).astype(bool)
    return out


def read_exp2_jsonl(path: str | Path) -> tuple[pd.DataFrame, ImportReport]:
    """Read an exp2 JSONL log into a trial table, skipping and reporting malformed lines.

    Columns: line, layer, feature_id, context (from ``prompt_type``), condition (``baseline`` at
    scale 1.0, else ``scale_<s>``), scale, trial_index, response, orig_decision, orig_bet,
    orig_valid, orig_source, and the new parse (see :func:`reparse`). Raises ``DataError`` when
    the file is missing or unreadable or has no usable line.
    """
    p = Path(path)
    report = ImportReport(path=str(p))
    if not p.is_file():
        raise DataError(f"JSONL log not found: {p}")
    rows: list[dict[str, Any]] = []
    try:
        with p.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue  # blank lines are allowed in JSONL
                report.n_lines += 1
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    report.skipped.append((lineno, "not valid UTF-8"))
                    continue
                except json.JSONDecodeError as exc:
                    report.skipped.append((lineno, f"bad JSON ({exc.msg} at column {exc.colno})"))
                    continue
                except (ValueError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
                    report.skipped.append((lineno, f"bad JSON ({str(exc).splitlines()[0][:80]})"))
                    continue
                row, why = _validate(obj)
                if row is None:
                    report.skipped.append((lineno, why))
                    continue
                row["line"] = lineno
                rows.append(row)
    except OSError as exc:
        raise DataError(f"cannot read JSONL log {p}: {exc}") from exc
    if not rows:
        raise DataError(
            f"no usable trial in {p} ({report.n_lines} non-blank lines, "
            f"{len(report.skipped)} malformed)"
        )
    df = pd.DataFrame(rows)
    df["condition"] = [_condition(s) for s in df["scale"]]
    cols = ["line", "layer", "feature_id", "context", "condition", "scale", "trial_index",
            "response", "orig_decision", "orig_bet", "orig_valid", "orig_source"]
    df = df[cols]
    keys = Counter(zip(df["layer"], df["feature_id"], df["context"], df["scale"],
                       df["trial_index"], strict=True))
    report.duplicate_keys = sum(1 for v in keys.values() if v > 1)
    report.n_rows = len(df)
    return reparse(df), report


def pool_by_direction(df: pd.DataFrame) -> pd.DataFrame:
    """Merge the scales of each (feature, context) into two patched groups, for more power.

    Scales below 1 move the patch value toward the safe-game mean (``toward_safe``), scales
    above 1 toward the bankrupt-game mean (``toward_bankrupt``); mixing the two would cancel
    opposite effects. Pooled rows get ``scale = NaN``; baseline rows (scale 1.0) are unchanged.
    """
    s = df["scale"].to_numpy(dtype=float)
    base = np.isclose(s, _BASELINE_SCALE)
    out = df.copy()
    out["condition"] = np.where(base, "baseline",
                                np.where(s < _BASELINE_SCALE, "toward_safe", "toward_bankrupt"))
    out["scale"] = np.where(base, _BASELINE_SCALE, np.nan)
    return out


# --------------------------------------------------------------------------------------------
# behaviour against scale


def rates_by_scale(df: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, feature, context, scale): stop rate and mean bet by the new parse.

    stop_rate = stops / responses with a decision (bet or stop, valid or not): a response with no
    decision is neither. mean_bet is over valid bets only. ``orig_stop_rate`` is the study's own
    rate (stops / all trials) for comparison.
    """
    need = {"layer", "feature_id", "context", "scale", "action", "bet", "valid"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise DataError(f"trial table lacks column(s): {', '.join(missing)}")
    d = df.assign(
        _stop=(df["action"] == "stop").fillna(False).astype(bool),
        _bet=(df["action"] == "bet").fillna(False).astype(bool),
        _vbet=np.where((df["action"] == "bet").fillna(False) & df["valid"], df["bet"], np.nan),
        _ostop=(df["orig_decision"] == "stop") if "orig_decision" in df else False,
    )
    g = d.groupby(["layer", "feature_id", "context", "scale"], sort=True)
    out = g.agg(
        n=("_stop", "size"), n_stop=("_stop", "sum"), n_bet=("_bet", "sum"),
        mean_bet=("_vbet", "mean"), orig_stop_rate=("_ostop", "mean"),
    ).reset_index()
    decided = out["n_stop"] + out["n_bet"]
    out["n_no_decision"] = out["n"] - decided
    out["stop_rate"] = np.where(decided > 0, out["n_stop"] / decided.where(decided > 0, 1), np.nan)
    return out[["layer", "feature_id", "context", "scale", "n", "n_stop", "n_bet",
                "n_no_decision", "stop_rate", "mean_bet", "orig_stop_rate"]]


def scale_trend_by_log(df: pd.DataFrame) -> pd.DataFrame:
    """Does behaviour follow the patch scale? Spearman over scales, per (layer, feature, context).

    Spearman's rho of scale against the per-scale stop rate and against the per-scale mean bet
    (from :func:`rates_by_scale`), with Benjamini–Hochberg q-values across all (feature, context)
    rows of each outcome. Constant outcomes (fixed betting always bets $10) are degenerate:
    rho, p and q are NaN.
    """
    rates = rates_by_scale(df)
    rows = []
    for (layer, fid, ctx), g in rates.groupby(["layer", "feature_id", "context"], sort=True):
        s_stop = spearman(g["scale"], g["stop_rate"])
        s_bet = spearman(g["scale"], g["mean_bet"])
        rows.append({
            "layer": layer, "feature_id": fid, "context": ctx, "n_scales": len(g),
            "n_trials": int(g["n"].sum()),
            "stop_rate_min": g["stop_rate"].min(), "stop_rate_max": g["stop_rate"].max(),
            "rho_stop": s_stop.statistic, "p_stop": s_stop.p, "degenerate_stop": s_stop.degenerate,
            "mean_bet_min": g["mean_bet"].min(), "mean_bet_max": g["mean_bet"].max(),
            "rho_bet": s_bet.statistic, "p_bet": s_bet.p, "degenerate_bet": s_bet.degenerate,
        })
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out.insert(out.columns.get_loc("degenerate_stop"), "q_stop", bh_fdr(out["p_stop"]))
    out.insert(out.columns.get_loc("degenerate_bet"), "q_bet", bh_fdr(out["p_bet"]))
    return out


# --------------------------------------------------------------------------------------------
# the CLI entry point


def run_words_jsonl(
    path: str | Path,
    out_dir: str | Path,
    alpha0: float = 1000.0,
    token_pattern: str | None = None,
    fdr_alpha: float = 0.05,
    min_count: int = 5,
    binary: bool = False,
    top: int = 8,
    pool_scales: bool = False,
) -> dict[str, Any]:
    """Word analysis plus dose-response of one JSONL log, written to ``out_dir``.

    Baseline = scale 1.0 of the same feature and context. Writes ``words.parquet``,
    ``words.csv``, ``words_summary.md``, ``stop_rates.csv``, ``dose_response.csv`` and
    ``import_report.txt``. ``pool_scales`` compares two pooled groups per (feature, context)
    instead of each scale (see :func:`pool_by_direction`). Returns ``{"paths": {name: Path}, "summary": str, "report":
    ImportReport, "n_comparisons": int, "n_significant": int, "seconds": float}``; ``summary``
    is the short text the CLI prints.
    """
    t0 = time.perf_counter()
    df, report = read_exp2_jsonl(path)
    table = word_table(
        pool_by_direction(df) if pool_scales else df, baseline_selector=baseline_by_scale(_BASELINE_SCALE), token_pattern=token_pattern,
        alpha0=alpha0, min_count=min_count, fdr_alpha=fdr_alpha, binary=binary,
    )
    paths = write_outputs(table, out_dir, top=top)
    out = Path(out_dir)
    rates = rates_by_scale(df)
    dose = scale_trend_by_log(df)
    paths["stop_rates"] = out / "stop_rates.csv"
    paths["dose_response"] = out / "dose_response.csv"
    paths["import_report"] = out / "import_report.txt"
    rates.to_csv(paths["stop_rates"], index=False)
    dose.to_csv(paths["dose_response"], index=False)
    paths["import_report"].write_text(report.text(max_lines=len(report.skipped)) + "\n",
                                      encoding="utf-8")

    summ = summarize_words(table, top=top)
    n_sig = int(table["significant"].sum()) if not table.empty else 0
    lines = [report.text()]
    lines.append(
        f"{len(summ)} comparisons against scale 1.0, {n_sig} significant (q <= {fdr_alpha}) "
        f"word shifts"
    )
    if not summ.empty:
        ranked = summ.assign(_n=summ["n_adds"] + summ["n_removes"]).sort_values(
            "_n", ascending=False, kind="mergesort")
        for s in ranked[ranked["_n"] > 0]["summary"].head(5):
            lines.append(f"  {s}")
    if not dose.empty:
        hits = dose[(dose["q_stop"] <= fdr_alpha) | (dose["q_bet"] <= fdr_alpha)]
        lines.append(
            f"dose-response: {len(hits)} of {len(dose)} (feature, context) pairs with q <= "
            f"{fdr_alpha} for stop rate or mean bet against scale"
        )
    seconds = time.perf_counter() - t0
    lines.append(f"wrote {out} in {seconds:.1f} s")
    return {"paths": paths, "summary": "\n".join(lines), "report": report,
            "n_comparisons": len(summ), "n_significant": n_sig, "seconds": seconds}
