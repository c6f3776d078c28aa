"""Loading a run directory for the report: every input optional, read through
:mod:`featurepath.rundir`.

A section whose file is missing says "not run yet", one whose file cannot be read says so, and
the rest of the page is still built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from featurepath.errors import DataError
from featurepath.report.format import _feature_name, _int, _jsonable, _records
from featurepath.rundir import RunDir

if TYPE_CHECKING:
    from featurepath.config import RunConfig

NEURONPEDIA = "https://www.neuronpedia.org/llama3.1-8b/{layer}-llamascope-res-32k/{feature_id}"
NOT_RUN = "not run yet"
MAX_TRIAL_ROWS_SCANNED = 200_000
# columns of pathways/edges.parquet added to each graph edge when present (graph.json, written
# before the null bands existed, does not carry them)
EDGE_EXTRAS = ("mechanism", "null_z", "null_p", "null_q", "beats_null", "carry_share",
               "vs_baseline")


@dataclass(frozen=True)
class MetricView:
    """What the report needs of the run's task: its title, its metric names by role and their
    labels, its summary columns and its split labels. Why a view: the report's sections and
    figures name no game; they ask this (built from ``Task.metrics`` et al.)."""

    title: str
    behaviour: tuple[str, ...]
    """causal metrics that are behaviour (rates, readout, amounts); the invalid rate is not"""
    readout: str
    """the readout metric (P(exit)): band figures and direction slopes"""
    dose: tuple[str, ...]
    """metrics of the dose ladders and the null-band figures: the readout, then the rates"""
    labels: dict[str, str]
    summary: tuple[tuple[str, str], ...]
    """(label, column) of play's metrics table drawn in the behaviour figure"""
    label_a: str
    label_b: str

    @classmethod
    def of(cls, cfg: Any = None) -> MetricView:
        """The view of ``cfg``'s task (the default task for ``None``)."""
        from featurepath.config import task_of

        task = task_of(cfg)
        ms = task.metrics
        readout = [m.name for m in ms if m.kind == "readout"]
        rates = [m.name for m in ms if m.kind == "rate"]
        wanted = [c for c in task.summary_columns if c.endswith("_rate") or c.startswith("mean_")]
        summary = tuple((c, c) for c in wanted if c not in ("invalid_rate", "round_limit_rate",
                                                            "mean_rounds", "mean_net"))[:3]
        return cls(title=task.title,
                   behaviour=tuple(m.name for m in ms if m.kind != "invalid"),
                   readout=readout[0] if readout else "", dose=tuple(readout + rates),
                   labels={m.name: m.label for m in ms}, summary=summary,
                   label_a=task.split.label_a, label_b=task.split.label_b)


@dataclass
class Loaded:
    """A loaded input, or why it is absent (``problem`` is shown in place of the section)."""

    value: Any = None
    problem: str | None = None
    path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _load(path: Path, reader: Callable[[Path], Any]) -> Loaded:
    if not path.exists():
        return Loaded(problem=NOT_RUN, path=path)
    try:
        return Loaded(value=reader(path), path=path)
    except Exception as exc:  # a broken file spoils one section, not the page
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Loaded(problem=f"could not read {path.name}: {first}", path=path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_yaml_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _read_trials(path: Path) -> pd.DataFrame:
    """Only the columns the examples need, and only the first rows of a huge table."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if "response" not in names:
        raise DataError("no 'response' column")
    wanted = [c for c in names if c in {"response", "condition", "bet_type", "feature", "layer",
                                        "feature_id", "context", "scale", "trial", "trial_index",
                                        "decision", "bet", "valid", "prompt_type"}]
    frames, seen = [], 0
    for batch in pf.iter_batches(columns=wanted, batch_size=8192):
        frames.append(batch.to_pandas())
        seen += batch.num_rows
        if seen >= MAX_TRIAL_ROWS_SCANNED:
            break
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=wanted)


@dataclass
class RunData:
    """Everything the report reads from one run directory."""

    run_dir: Path
    config: Loaded
    run: Loaded
    sae_quality: Loaded
    metrics: Loaded
    discover: Loaded
    causal_tests: Loaded
    causal_features: Loaded
    edges: Loaded
    graph: Loaded
    chains: Loaded
    words: Loaded
    trials: Loaded
    causal_null: Loaded = field(default_factory=lambda: Loaded(problem=NOT_RUN))
    dose_slopes: Loaded = field(default_factory=lambda: Loaded(problem=NOT_RUN))
    dose_curves: Loaded = field(default_factory=lambda: Loaded(problem=NOT_RUN))
    screen_check: Loaded = field(default_factory=lambda: Loaded(problem=NOT_RUN))
    screen_points: Loaded = field(default_factory=lambda: Loaded(problem=NOT_RUN))
    extra: dict[str, Any] = field(default_factory=dict)
    #: A config given to :func:`featurepath.report.html.run_report`: read instead of the run's
    #: ``config.yaml``, so a notebook can redraw the marks at another alpha without rewriting it.
    cfg: RunConfig | None = None

    @classmethod
    def load(cls, run_dir: Path) -> RunData:
        rd = RunDir(run_dir)
        pq_ = pd.read_parquet
        return cls(
            run_dir=rd.root,
            config=_load(rd.config, _read_yaml_text),
            run=_load(rd.run_json, _read_json),
            sae_quality=_load(rd.sae_quality, _read_json),
            metrics=_load(rd.metrics, pq_),
            discover=_load(rd.discover, pq_),
            causal_tests=_load(rd.causal_tests, pq_),
            causal_features=_load(rd.causal_features, pq_),
            edges=_load(rd.edges, pq_),
            graph=_load(rd.graph_json, _read_json),
            chains=_load(rd.chains, pq_),
            words=_load(rd.words, pq_),
            trials=_load(rd.trials, _read_trials),
            causal_null=_load(rd.causal_null, pq_),
            dose_slopes=_load(rd.dose_slopes, pq_),
            dose_curves=_load(rd.dose_curves, pq_),
            screen_check=_load(rd.screen_check, pq_),
            screen_points=_load(rd.screen_points, pq_),
        )

    def run_config(self) -> RunConfig | None:
        """The given config, else the run's ``config.yaml`` as the stages read it; None when
        missing or unreadable."""
        from featurepath.config import load_config

        if self.cfg is not None:
            return self.cfg
        try:
            return load_config(RunDir(self.run_dir).config)
        except Exception:  # noqa: BLE001 - a report of a broken config still renders
            return None

    def view(self) -> MetricView:
        """The run's task as the report reads it (default task when the config is missing)."""
        return MetricView.of(self.run_config())

    @property
    def alpha(self) -> float:
        """The run's ``analysis.alpha`` (what the stages decided with), else the default."""
        from featurepath.config import AnalysisSection

        cfg = self.run_config()
        return cfg.analysis.alpha if cfg is not None else AnalysisSection().alpha

    def model_name(self) -> str | None:
        """The model's name from run.json, else from config.yaml."""
        if self.run.ok and isinstance(self.run.value, dict):
            m = self.run.value.get("model")
            if isinstance(m, dict):
                m = m.get("name") or m.get("spec") or m.get("id")
            if m:
                return str(m)
        if self.config.ok:
            m = re.search(r"^\s*(?:model|name|spec)\s*:\s*['\"]?([^'\"\n#]+)", self.config.value,
                          flags=re.M)
            if m:
                return m.group(1).strip()
        return None

    def neuronpedia_template(self) -> str | None:
        """The Neuronpedia URL pattern when features are LlamaScope SAEs of LLaMA-3.1-8B.

        Neuronpedia hosts only those dashboards, so a link for any other model or SAE would
        point at an unrelated feature.
        """
        model = (self.model_name() or "").lower().replace("_", "-")
        if "llama-3.1-8b" not in model:
            return None
        sae_text = ""
        if self.run.ok and isinstance(self.run.value, dict):
            sae_text += json.dumps(_jsonable(self.run.value.get("saes", "")))
        if self.config.ok:
            m = re.search(r"^saes?\s*:(.*?)(?=^\S|\Z)", self.config.value, flags=re.M | re.S)
            sae_text += m.group(1) if m else ""
        sae_text = sae_text.lower()
        if not sae_text.strip(' "{}[]') or any(
                k in sae_text for k in ("llamascope", "llama_scope", "llama-scope", "lxr")):
            return NEURONPEDIA
        return None



def graph_payload(data: RunData) -> dict[str, Any] | None:
    """Graph JSON for the page; from graph.json, else rebuilt from edges.parquet."""
    if data.graph.ok and isinstance(data.graph.value, dict):
        g = data.graph.value
        signal = None
        nodes = [dict(n) for n in g.get("nodes", []) if isinstance(n, dict)]
        edges = [dict(e) for e in g.get("edges", []) if isinstance(e, dict)]
    elif data.edges.ok:
        df = data.edges.value
        if "edge" in df.columns:
            df = df[df["edge"].fillna(False).astype(bool)]
        signal = None
        if "signal" in df.columns and not df.empty:  # one graph per signal, as pathways does
            sigs = [str(x) for x in df["signal"].dropna().unique()]
            signal = "decision" if "decision" in sigs else (sigs[0] if sigs else None)
            if signal is not None:
                df = df[df["signal"].astype(str) == signal]
        nodes_by: dict[str, dict[str, Any]] = {}
        edges = []
        for rec in _records(df):
            for end in ("source", "target"):
                nid = rec.get(end) or _feature_name(rec.get(f"{end}_layer"),
                                                    rec.get(f"{end}_feature"))
                nodes_by.setdefault(nid, {"id": nid, "layer": _int(rec.get(f"{end}_layer")),
                                          "feature": _int(rec.get(f"{end}_feature"))})
            d = rec.get("d")
            edges.append(dict(source=rec.get("source"), target=rec.get("target"),
                              weight=abs(d) if isinstance(d, (int, float)) else None,
                              sign=rec.get("sign"), d=d, q=rec.get("q"),
                              mean_shift=rec.get("mean_shift"), condition=rec.get("condition"),
                              signal=rec.get("signal"), n_pairs=rec.get("n_pairs"),
                              **{c: rec[c] for c in EDGE_EXTRAS if c in rec}))
        nodes = list(nodes_by.values())
    else:
        return None
    ids = {str(n.get("id")) for n in nodes}
    for e in edges:  # an edge naming an unknown node still gets drawn
        for end in ("source", "target"):
            nid = str(e.get(end))
            if nid not in ids:
                m = re.match(r"L(\d+)-(\d+)$", nid)
                nodes.append({"id": nid, "layer": int(m.group(1)) if m else None,
                              "feature": int(m.group(2)) if m else None})
                ids.add(nid)
    for n in nodes:
        if n.get("layer") is None:
            m = re.match(r"L(\d+)-(\d+)$", str(n.get("id")))
            if m:
                n["layer"], n["feature"] = int(m.group(1)), int(m.group(2))
    out: dict[str, Any] = {"nodes": nodes, "edges": edges}
    if data.graph.ok and isinstance(data.graph.value, dict):
        signal = data.graph.value.get("signal")
        _add_edge_extras(edges, data.edges, signal)
    if signal:
        out["signal"] = signal
    return out


def _add_edge_extras(edges: list[dict[str, Any]], table: Loaded, signal: Any) -> None:
    """Copy :data:`EDGE_EXTRAS` from ``pathways/edges.parquet`` onto graph.json's edges.

    Matched on source, target and condition (and the graph's signal): graph.json keeps one edge
    per source and target, the row of edges.parquet with that condition."""
    if not table.ok or not edges:
        return
    df = table.value
    extras = [c for c in EDGE_EXTRAS if c in df.columns]
    if not extras or not {"source", "target", "condition"} <= set(df.columns):
        return
    if "edge" in df.columns:
        df = df[df["edge"].fillna(False).astype(bool)]
    if signal and "signal" in df.columns:
        df = df[df["signal"].astype(str) == str(signal)]
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for rec in _records(df[["source", "target", "condition", *extras]]):
        key = (str(rec["source"]), str(rec["target"]), str(rec["condition"]))
        found.setdefault(key, {c: rec[c] for c in extras})
    for e in edges:
        hit = found.get((str(e.get("source")), str(e.get("target")), str(e.get("condition"))))
        if hit:
            for c, v in hit.items():
                e.setdefault(c, v)
