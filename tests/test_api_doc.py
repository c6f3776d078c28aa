"""docs/api.md's notebook example, run as written on a tiny random model, so the doc cannot rot.

Only the first block's three names change (run directory, model, SAEs): every other line of
every ``python`` block runs unchanged, in order, in one namespace, as a notebook would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _tiny_gambler(root: Path) -> tuple[str, str]:
    """A tiny model directory that keeps betting, and its SAEs.

    A random tiny LLaMA stops at once in every game, so discover would find no bankrupt games
    to compare with; here the stop token's output row is the bet row minus a push along the
    decision-token state, so P(stop) is about 0.2 and some games go bankrupt."""
    import torch

    from featurepath.sae.formats import save_sae
    from featurepath.tasks.slot_machine.readout import option_token_ids
    from featurepath.testing import tiny_llama, tiny_saes

    model, tok = tiny_llama()
    ids = option_token_ids(tok)
    x = tok("Round 1. Balance $100. Choice: ", return_tensors="pt")
    with torch.no_grad():
        h = model.model(**x).last_hidden_state[0, -1]
        w = model.lm_head.weight
        w[ids["stop"][0]] = w[ids["bet"][0]] - 2.0 * h / h.norm() ** 2
    model.save_pretrained(root / "model", safe_serialization=True)
    tok.save_pretrained(root / "model")
    for layer, sae in tiny_saes(model).items():
        save_sae(sae, root / "saes" / f"L{layer}")
    return str(root / "model"), str(root / "saes")


def test_api_doc_example_runs_on_the_tiny_model(tmp_path):
    model_dir, sae_dir = _tiny_gambler(tmp_path / "inputs")
    blocks = _blocks(DOC.read_text())
    assert len(blocks) >= 4
    setup = {'RUN = "runs/notebook"': f"RUN = {str(tmp_path / 'run')!r}",
             'MODEL = "embedded"': f"MODEL = {model_dir!r}",
             'SAES = "embedded:quick"': f"SAES = {sae_dir!r}"}
    first = blocks[0]
    for old, new in setup.items():
        assert old in first, f"docs/api.md's first block no longer sets {old}"
        first = first.replace(old, new)
    ns: dict = {}
    for code in [first, *blocks[1:]]:
        exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102 - the doc's own example
    page = Path(ns["page"])
    assert page.exists() and page.stat().st_size > 1000
    assert (tmp_path / "run" / "causal_features.parquet").exists()
    assert ns["rt"].saes_spec == sae_dir  # one runtime served every stage


def test_import_featurepath_exposes_the_stages_without_loading_torch():
    code = ("import sys, featurepath as fp; "
            "heavy = sorted(m for m in ('torch', 'pandas', 'pydantic', 'transformers') "
            "if m in sys.modules); "
            "print(heavy, all(callable(getattr(fp, n)) for n in fp.__all__ "
            "if n != '__version__'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[] True"
