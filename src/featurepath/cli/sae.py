"""``featurepath sae``: train, inspect and list SAEs.

Registered on :data:`featurepath.cli.app` as the ``sae`` sub-app. The texts SAEs are trained and
measured on come from the default task (``Task.corpus``, ``Task.eval_texts``); the
``featurepath.sae`` package itself knows no task.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from featurepath.cli import app
from featurepath.errors import ConfigError

sae_app = typer.Typer(
    help=(
        "Train, inspect and list sparse autoencoders (SAEs).\n\n"
        "featurepath reads LlamaScope, SAELens and its own SAE directories, and trains TopK SAEs "
        "for models that have none (the embedded SmolLM2-135M-Instruct)."
    ),
    no_args_is_help=True,
)
app.add_typer(sae_app, name="sae")


def _parse_layers(text: str | None) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        layers = sorted({int(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise ConfigError(f"--layers must be comma-separated integers, got {text!r}") from None
    if not layers:
        raise ConfigError("--layers is empty")
    return layers


def _read_corpus(path: Path) -> list[str]:
    """One text per line of a .txt file, or the ``text`` field of each line of a .jsonl file."""
    if not path.exists():
        raise ConfigError(f"corpus file {path} does not exist")
    texts: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"corpus file {path} is not UTF-8 text (byte {exc.start}); give a .txt "
                          "or .jsonl file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read corpus file {path}: {exc.strerror or exc}") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(line)
                text = obj["text"] if isinstance(obj, dict) else obj
            except (ValueError, KeyError, TypeError):  # ValueError covers JSONDecodeError
                raise ConfigError(f"{path}:{i}: expected a JSON object with a 'text' field") \
                    from None
            if not isinstance(text, str):
                raise ConfigError(f"{path}:{i}: 'text' must be a string")
            texts.append(text)
        else:
            texts.append(line.replace("\\n", "\n"))
    if not texts:
        raise ConfigError(f"corpus file {path} holds no text")
    return texts


@sae_app.command("train")
def train_cmd(
    model: str = typer.Option("embedded", help="Model: 'embedded', a local Hugging Face "
                              "directory or a cached hub id."),
    layers: str = typer.Option(None, help="Comma-separated layers (block outputs), e.g. "
                               "3,8,13. Default: the embedded set's layers (3,8,13,18,23,27) "
                               "or, for other models, six layers spread over the depth."),
    preset: str = typer.Option("quick", help="quick (a few minutes on CPU) or full (more "
                               "text, longer training). Sets corpus size and training length."),
    expansion: int = typer.Option(None, help="d_sae = expansion x d_model (quick: 4, full: 8)."),
    k: int = typer.Option(None, help="Active features per token (preset: 32)."),
    epochs: float = typer.Option(None, help="Passes over the training tokens (preset value)."),
    seed: int = typer.Option(None, help="Seed for the corpus and training (preset: 0)."),
    corpus: Path = typer.Option(None, help="Train on this text instead of the built-in game "
                                "corpus: a .txt file (one text a line, \\n for newlines) or a "
                                ".jsonl file with a 'text' field."),
    out: Path = typer.Option(None, help="Output directory (one L<layer>/ subdirectory each). "
                             "Default for the embedded model: the featurepath cache, where "
                             "--saes embedded finds them."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    force: bool = typer.Option(False, help="Retrain layers that are already trained."),
    threads: int = typer.Option(None, help="CPU threads for torch (default: torch's choice). "
                                "Use 1 on a machine shared with other busy processes."),
) -> None:
    """Train TopK SAEs on a model's residual stream (output of each chosen block).

    The default corpus is the default task's game as the model sees it: varied game prompts
    (completion and chat form) with answers the model samples itself, plus a few general
    sentences. Each SAE is saved in featurepath's format with its quality on held-out text
    (FVU, L0, dead features, cross-entropy increase).
    """
    from dataclasses import replace

    from featurepath.embedded import EMBEDDED_LAYERS
    from featurepath.models import EMBEDDED, load_model, n_layers
    from featurepath.sae.formats import load_sae
    from featurepath.sae.registry import embedded_set_dir, get_preset
    from featurepath.sae.train import train_saes
    from featurepath.tasks import DEFAULT_TASK, get_task

    default_corpus = get_task(DEFAULT_TASK).corpus

    if threads is not None:
        import torch

        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    p = get_preset(preset)
    cfg = p.train
    overrides = {name: v for name, v in (("expansion", expansion), ("k", k), ("epochs", epochs),
                                         ("seed", seed)) if v is not None}
    cfg = replace(cfg, **overrides)
    cfg.validate()
    chosen = _parse_layers(layers)
    if out is None and model != EMBEDDED:
        raise ConfigError("--out is required for models other than 'embedded'")
    if out is None and (overrides or corpus is not None):
        raise ConfigError("custom settings or --corpus would overwrite the cached embedded "
                          "preset; give --out DIR")
    out_dir = out if out is not None else embedded_set_dir(preset)
    user_texts = _read_corpus(corpus) if corpus is not None else None  # before a model load
    t0 = time.perf_counter()
    m, tok = load_model(model, device=device)
    total = n_layers(m)
    if chosen is None:
        chosen = list(EMBEDDED_LAYERS) if model == EMBEDDED else \
            sorted({round(i * (total - 2) / 5) + 1 for i in range(6)} & set(range(total)))
    bad = [x for x in chosen if not 0 <= x < total]
    if bad:
        raise ConfigError(f"--layers {bad} out of range: the model has {total} blocks "
                          f"(0..{total - 1})")
    todo = [x for x in chosen if force or not (out_dir / f"L{x}" / "sae.json").exists()]
    if not todo:
        typer.echo(f"all layers already trained in {out_dir} (use --force to retrain)")
    else:
        texts = user_texts if user_texts is not None else default_corpus(
            m, tok, p.n_prompts, p.gen_tokens, cfg.seed, answered_fraction=p.answered_fraction)
        name = "SmolLM2-135M-Instruct" if model == EMBEDDED else model
        train_saes(m, tok, texts, todo, cfg, out_dir, heldout_fraction=p.heldout_fraction,
                   loss_texts=p.loss_texts, model_name=name)
    typer.echo(f"{'layer':>5} {'d_sae':>6} {'FVU':>7} {'L0':>6} {'dead':>6} {'dCE':>7}  path")
    for layer in chosen:
        path = out_dir / f"L{layer}"
        sae = load_sae(path)
        q = sae.meta.get("quality", {})
        typer.echo(f"{layer:>5} {sae.d_sae:>6} {_fmt(q.get('fvu'))} {_fmt(q.get('l0'), 1)} "
                   f"{_fmt(q.get('dead_fraction'), pct=True)} "
                   f"{_fmt(q.get('loss_increase'))}  {path}")
    typer.echo(f"done in {time.perf_counter() - t0:.0f} s")


def _fmt(v: Any, digits: int = 3, pct: bool = False) -> str:
    if v is None:
        return "      -"
    return f"{v:>6.1%}" if pct else f"{v:>7.{digits}f}"


_LS_THRESHOLD_HELP = ("Llama Scope threshold reading: 'scaled' compares jump_relu_threshold x s "
                      "with the normalised pre-activation (SAELens, default), 'stored' compares "
                      "the threshold as written (OpenMOSS's code). See docs/saes.md.")
_LS_DECNORM_HELP = ("Llama Scope: gate on pre-activation x decoder norm "
                    "(sparsity_include_decoder_norm), as OpenMOSS's code does.")


@sae_app.command("info")
def info_cmd(
    path: Path = typer.Argument(..., help="An SAE directory (LlamaScope, SAELens or "
                                "featurepath format)."),
    model: str = typer.Option(None, help="Also measure quality on this model ('embedded', a "
                              "directory or hub id): FVU, L0, dead features and cross-entropy "
                              "increase on held-out game text."),
    layer: int = typer.Option(None, help="Layer the SAE reads, when its files do not say."),
    n_texts: int = typer.Option(24, help="Held-out texts for the quality figures."),
    llamascope_threshold: str = typer.Option("scaled", help=_LS_THRESHOLD_HELP),
    llamascope_decoder_norm: bool = typer.Option(False, help=_LS_DECNORM_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
) -> None:
    """Show an SAE's format, shapes and activation, and with --model its quality."""
    from featurepath.sae.check import declared_l0
    from featurepath.sae.formats import detect_format, load_sae

    fmt = detect_format(path)
    d_model = None
    m = tok = None
    if model is not None:
        from featurepath.models import load_model

        m, tok = load_model(model, device=device)
        d_model = int(m.config.hidden_size)
    sae = load_sae(path, layer=layer, d_model=d_model, llamascope_threshold=llamascope_threshold,
                   llamascope_decoder_norm=llamascope_decoder_norm)
    info: dict[str, Any] = {
        "path": str(path), "format": fmt, "layer": sae.layer, "d_model": sae.d_model,
        "d_sae": sae.d_sae, "activation": sae.activation, "k": sae.k,
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "decoder_norm_mean": round(float(sae.W_dec.float().norm(dim=1).mean()), 4),
        "target_l0": declared_l0(sae),
    }
    for key in ("model", "hook", "architecture", "dtype", "n_tokens", "train_config", "quality"):
        if sae.meta.get(key) is not None:
            info[("stored_" if key == "quality" else "") + key] = sae.meta[key]
    if m is not None:
        from featurepath.sae.quality import measure_quality

        info["quality"] = measure_quality(m, tok, sae, quality_texts(tok, n_texts))
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            typer.echo(f"{key}:")
            for k2, v2 in value.items():
                typer.echo(f"  {k2}: {_short(v2)}")
        else:
            typer.echo(f"{key}: {_short(value)}")


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def quality_texts(tok: Any, n_texts: int = 24, seed: int = 12345) -> list[str]:
    """Fresh game prompts (a seed the training corpus does not use) plus a few general
    sentences: the held-out text ``sae info --model`` measures quality on."""
    from featurepath.tasks import DEFAULT_TASK, get_task

    return get_task(DEFAULT_TASK).eval_texts(tok, n_texts, seed)


@sae_app.command("check")
def check_cmd(
    model: str = typer.Argument(..., help="Model: 'embedded', a local Hugging Face directory or "
                                "a cached hub id."),
    saes: str = typer.Argument(..., help="SAEs: 'embedded', an SAE directory, a directory of "
                               "SAE directories, or a comma-separated list."),
    n_texts: int = typer.Option(24, help="Texts to run: game prompts plus four built-in "
                                "neutral sentences (a few thousand tokens)."),
    loss: bool = typer.Option(True, help="Also measure the loss increase with each SAE's "
                              "reconstruction spliced in (one more forward pass per layer)."),
    llamascope_threshold: str = typer.Option("scaled", help=_LS_THRESHOLD_HELP),
    llamascope_decoder_norm: bool = typer.Option(False, help=_LS_DECNORM_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, one object a layer."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
) -> None:
    """Check SAEs on real text: per layer L0, FVU, dead share and loss increase, and L0 against
    the SAE's declared target (top_k / k).

    When L0 is more than 2x off its target, the check says so and, for Llama Scope SAEs, reports
    L0 under the other threshold readings and names the options that bring it in line.
    """
    from featurepath.models import load_model
    from featurepath.sae.check import check_saes, format_check
    from featurepath.sae.registry import load_sae_set

    if n_texts < 1:
        raise ConfigError(f"--n-texts must be >= 1, got {n_texts}")
    m, tok = load_model(model, device=device)
    sets = load_sae_set(saes, m, tok, llamascope_threshold=llamascope_threshold,
                        llamascope_decoder_norm=llamascope_decoder_norm)
    rows = check_saes(m, tok, sets, quality_texts(tok, n_texts), loss=loss)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    for line in format_check(rows):
        typer.echo(line)


@sae_app.command("list")
def list_cmd(
    model: str = typer.Option("embedded", help="'embedded' (or embedded:quick / "
                              "embedded:full) for the trained cache, or an SAE set: a "
                              "directory of SAE directories or a comma-separated list."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List the SAEs of a set: preset (for the embedded cache), layer, format, d_sae, k and path
    (reads JSON files only)."""
    from featurepath.sae.registry import list_saes

    rows = list_saes(model)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no SAEs found" + (" (train them: featurepath sae train --preset quick)"
                                      if model.startswith("embedded") else ""))
        return
    for r in rows:
        q = r.get("quality") or {}
        extra = f" FVU {q['fvu']:.3f}" if isinstance(q.get("fvu"), float) else ""
        tag = f"[{r['preset']}] " if r.get("preset") else ""
        k = f" k={r['k']}" if r.get("k") is not None else ""
        typer.echo(f"{tag}L{r['layer']}: {r['format']} {r['activation']} d_sae={r['d_sae']}"
                   f"{k}{extra}  {r['path']}")
