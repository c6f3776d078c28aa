"""Which features the patch stage patches, and why each one (``trials.parquet``'s ``source``).

``patch.candidates`` chooses the route: ``discover`` (correlational: features that separate
the split's group A from group B games), ``screen`` (the top ``screen.top_n`` of ``screen.parquet`` by
|attribution| per context × intervention) or ``union`` (both; whichever exists when only one
does). Features named in ``patch.features`` are the user's and are patched as given.

Two rules hold whatever the route:

- a scale clamp of a feature inactive on every prompt of its context changes nothing (scale ×
  0 = 0), so a feature the screen saw inactive in a context with a scale condition is never
  *chosen* (the user may still name it; planning then warns and suggests a value clamp);
- whenever ``screen.parquet`` exists, ``screen.check_random`` more features are drawn across
  the screen's whole ranking (one from each of that many equal strata of the ranking,
  deterministic from the run seed), so that causal can say how well the screen predicted the
  real patch on features it did not pick (rank correlation, top-N recall).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from featurepath.analysis.screen_check import eligible_rank, inactive_where_scaled
from featurepath.config import RunConfig, feature_key, parse_feature_key
from featurepath.errors import ConfigError
from featurepath.pipeline.seeds import derive_seed
from featurepath.rundir import RunDir


@dataclass
class Candidates:
    """The features to patch, in plan order, and the source of each (``rundir.SOURCES``)."""

    features: list[str]
    sources: dict[str, str] = field(default_factory=dict)
    dropped_inactive: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.features:
            out[self.sources.get(f, "")] = out.get(self.sources.get(f, ""), 0) + 1
        return out


def discover_candidates(run_dir: Path, limit: int) -> pd.DataFrame | None:
    """discover's candidates (strongest first), at most ``limit``; None without discover."""
    path = RunDir(run_dir).discover
    if not path.exists():
        return None
    df = pd.read_parquet(path)
    if "candidate" in df:
        df = df[df["candidate"]]
    return df.head(limit)


def read_screen(run_dir: Path) -> pd.DataFrame | None:
    path = RunDir(run_dir).screen
    return pd.read_parquet(path) if path.exists() else None


def screen_top(screen: pd.DataFrame, top_n: int, exclude: set[str]) -> list[str]:
    """The top ``top_n`` features by |attribution| of each context × intervention, leaving
    out ``exclude``; in rank order, interventions interleaved (rank 1 of each first)."""
    ranked = screen.assign(k=eligible_rank(screen, exclude))
    top = ranked[ranked["k"] <= top_n].sort_values(["k", "context", "intervention"],
                                                   kind="stable")
    return list(dict.fromkeys(top["feature"]))


def random_check(screen: pd.DataFrame, n: int, seed: int, exclude: set[str]) -> list[str]:
    """``n`` features across the screen's whole ranking: the eligible features ordered by their
    best rank over the contexts × interventions, cut into ``n`` equal strata, one drawn from
    each (so the top, the middle and the tail are all checked). Deterministic in ``seed``."""
    best = screen.groupby("feature")["rank"].min()
    best = best[~best.index.isin(exclude)].sort_values(kind="stable")
    if n <= 0 or best.empty:
        return []
    rng = np.random.default_rng(derive_seed(seed, "screen-check"))
    keys = best.index.to_numpy()
    out = []
    for part in np.array_split(keys, min(n, len(keys))):
        out.append(str(part[rng.integers(len(part))]))
    return out


def choose_candidates(run_dir: Path, cfg: RunConfig, features: list[str] | None = None,
                      discover: list[str] | None = None) -> Candidates:
    """The plan's features: the user's (``features`` or ``patch.features``), else by
    ``patch.candidates``; plus the random check when ``screen.parquet`` exists.

    ``discover`` replaces discover's top ``discover.max_candidates`` as the correlational
    candidates (the demo picks its own among them); they are still labelled ``discover`` and
    still dropped where the screen saw them inactive under a scale clamp."""
    root = Path(run_dir)
    pc, sc = cfg.patch, cfg.screen
    screen = read_screen(root)
    user = list(features or pc.features)
    sources: dict[str, str] = {}
    dropped: list[str] = []
    if user:
        sources = {f: "user" for f in user}
    else:
        route = pc.candidates
        cands = discover_candidates(root, cfg.discover.max_candidates) \
            if route in ("discover", "union") and discover is None else None
        if route == "discover" and cands is None and discover is None:
            raise ConfigError("patch.candidates is 'discover' but there is no discover.parquet; "
                              "run `featurepath discover` first, or give --features")
        if route == "screen" and screen is None:
            raise ConfigError("patch.candidates is 'screen' but there is no screen.parquet; run "
                              "`featurepath screen` first, or give --features")
        inactive = inactive_where_scaled(screen, cfg) if screen is not None else set()
        disc = [] if cands is None else [feature_key(int(r.layer), int(r.feature_id))
                                         for r in cands.itertuples()]
        if discover is not None and route in ("discover", "union"):
            disc = list(discover)
        dropped = [f for f in disc if f in inactive]
        disc = [f for f in disc if f not in inactive]
        scr = screen_top(screen, sc.top_n, inactive) \
            if screen is not None and route in ("screen", "union") else []
        for f in disc:
            sources[f] = "discover"
        for f in scr:
            sources[f] = "both" if f in sources else "screen"
    if pc.direction_from and pc.transfer_features:  # another run's confirmed features
        from featurepath.pipeline.transfer import transfer_features

        for f in transfer_features(pc.direction_from, cfg):
            sources.setdefault(f, "transfer")
    if not sources and screen is None:
        raise ConfigError("no features to patch: give --features L12-345,... or run "
                          "`featurepath discover` or `featurepath screen` first")
    if screen is not None and sc.check_random > 0:
        excl = set(sources) | inactive_where_scaled(screen, cfg)
        for f in random_check(screen, sc.check_random, cfg.seed, excl):
            sources[f] = "random-check"
    if not sources:
        raise ConfigError("no features to patch: discover found no candidates, the screen's "
                          "top is empty and screen.check_random is 0; give --features")
    feats = list(sources) if user else sorted(sources, key=parse_feature_key)
    return Candidates(feats, sources, dropped)


__all__ = ["Candidates", "choose_candidates", "discover_candidates", "inactive_where_scaled",
           "random_check", "read_screen", "screen_top"]
