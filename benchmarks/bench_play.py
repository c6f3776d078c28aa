"""Games per second of batched play against one game at a time, same games, one run.

Why this comparison: batched play exists to make the play stage cheap; the sequential reference
(``batch_size = 1``: one ``generate`` call per decision of one game) is what a straightforward
loop over games costs. Both use the same config and seeds, so they play the same games (up to
the rare token where a batched matmul rounds differently from an unbatched one; the table shows
how many decision points agree).

Usage::

    FEATUREPATH_HOME=/tmp/fphome python benchmarks/bench_play.py [--games 8] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from featurepath.config import RunConfig
from featurepath.engine.generate import generate
from featurepath.models import load_model
from featurepath.pipeline.play import run_play
from featurepath.pipeline.runtime import Runtime


def _timed(model, tok, cfg: RunConfig, run_dir: Path) -> tuple[pd.DataFrame, float, int]:
    calls = [0]

    def counting(*args, **kwargs):
        calls[0] += 1
        return generate(*args, **kwargs)

    t0 = time.perf_counter()
    df = run_play(run_dir, cfg, runtime=Runtime(model, tok), progress=False, generate_fn=counting)
    return df, time.perf_counter() - t0, calls[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--games", type=int, default=8, help="games per condition x bet type")
    ap.add_argument("--conditions", default="GMHWP")
    ap.add_argument("--bet-types", default="fixed,variable")
    ap.add_argument("--max-rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    model, tok = load_model(args.model, args.device)
    base = {"seed": 0, "play": {
        "conditions": args.conditions.split(","), "bet_types": args.bet_types.split(","),
        "games_per_condition": args.games, "max_rounds": args.max_rounds}}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up (first-call overheads) on one tiny game
        warm = RunConfig.model_validate({"play": {**base["play"], "games_per_condition": 1,
                                                  "max_rounds": 1, "bet_types": ["fixed"]}})
        run_play(Path(tmp) / "warm", warm, runtime=Runtime(model, tok), progress=False)
        for name, bs in (("batched", args.batch_size), ("sequential", 1)):
            cfg = RunConfig.model_validate({**base, "play": {**base["play"], "batch_size": bs}})
            results[name] = _timed(model, tok, cfg, Path(tmp) / name)

    key = ["game_id", "round", "response"]
    a, b = results["batched"][0], results["sequential"][0]
    agree = len(a[key].merge(b[key], on=key)) / max(len(a), len(b))
    rows = []
    for name, (df, secs, calls) in results.items():
        n_games = df["game_id"].nunique()
        rows.append(dict(mode=name, batch=args.batch_size if name == "batched" else 1,
                         games=n_games, decisions=len(df), generate_calls=calls,
                         seconds=round(secs, 1), games_per_s=round(n_games / secs, 3),
                         decisions_per_s=round(len(df) / secs, 3)))
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    speedup = table["games_per_s"].iloc[0] / table["games_per_s"].iloc[1]
    print(f"speed-up (batched / sequential games per second): {speedup:.2f}x")
    print(f"decision points identical in both runs: {agree:.0%}")


if __name__ == "__main__":
    main()
