"""The ``screen`` command: attribution patching over every feature of every SAE layer."""

from __future__ import annotations

from pathlib import Path

import typer

from featurepath.cli import app
from featurepath.cli.options import CONFIG, MODEL, PROGRESS, RUN_DIR, SAES, config_for


@app.command("screen", short_help="First-order effect of clamping every feature on P(exit): "
                                  "one forward + backward per prompt batch.")
def screen_cmd(
    run_dir: Path = RUN_DIR,
    config: Path = CONFIG,
    model: str = MODEL,
    saes: str = SAES,
    batch_size: int = typer.Option(None, "--batch-size", help="Prompts per forward + backward "
                                                              "pass (screen.batch_size)."),
    progress: bool = PROGRESS,
) -> None:
    """Screen every SAE feature of every layer: over the screen half of the patch stage's
    prompts (patch.prompt_set), the gradient of P(exit) at the decision token at every SAE
    layer, and for each feature and patched condition the first-order effect of its clamp,
    (v - a) * W_dec[f] . grad, averaged over prompts. Writes RUN_DIR/screen.parquet, ranked
    within context x intervention; `patch` takes its top screen.top_n (patch.candidates) and
    checks the screen on screen.check_random features drawn across the ranking. A screen, not a
    verdict: see docs/screen.md for where first-order estimates fail."""
    from featurepath.pipeline.screen import run_screen
    from featurepath.rundir import RunDir

    cfg = config_for(run_dir, config, model=model, saes=saes,
                     **{"screen.batch_size": batch_size})
    res = run_screen(run_dir, cfg, progress=progress)
    prompts = ", ".join(f"{n} {ctx}" for ctx, n in res.n_prompts.items())
    typer.echo(f"{res.n_features} features x {res.table['intervention'].nunique()} "
               f"interventions over {prompts} prompts in {res.seconds:.1f}s")
    top = res.table[res.table["rank"] <= 3]
    typer.echo(top[["context", "intervention", "rank", "feature", "attribution",
                    "attribution_se", "active_share", "clamp_mean"]].to_string(index=False))
    typer.echo(f"wrote {RunDir(run_dir).screen}")
