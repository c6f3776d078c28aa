"""The attribution screen (issue 21): exact first-order terms, planted features on top, the
statistics against scipy, streaming memory, the command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from featurepath.config import ConditionSpec
from featurepath.engine.generate import replay
from featurepath.engine.gradients import readout_gradients
from featurepath.engine.hooks import Intervention
from featurepath.pipeline.screen import screen_attributions
from featurepath.rundir import SCREEN_COLUMNS
from featurepath.sae.model import SAE
from featurepath.tasks.slot_machine.readout import p_stop_readout

_rng = np.random.default_rng(0)
PROMPTS = {c: ["".join(_rng.choice(list("abcdefgh $0123456789"), size=_rng.integers(8, 24)))
               + " Choice: " for _ in range(10)] for c in ("safe", "risky")}
CONDS = [ConditionSpec(name="safe_value", context="safe", patch="value", value=4.0),
         ConditionSpec(name="safe_ablated", context="safe", patch="scale", scale=0.0),
         ConditionSpec(name="risky_amplified", context="risky", patch="scale", scale=3.0)]


@pytest.fixture(scope="module")
def tiny64():
    """The tiny model in float64, so a finite difference of the real patch resolves 1e-3."""
    from featurepath.testing import tiny_llama, tiny_saes

    model, tok = tiny_llama()
    model = model.double()
    return model, tok, tiny_saes(model)


def test_first_order_term_matches_a_finite_difference_of_the_real_patch(tiny64):
    model, tok, saes = tiny64
    readout = p_stop_readout(tok)
    prompts = PROMPTS["safe"][:4]
    layer = 1
    g = readout_gradients(model, tok, prompts, [1, 2], readout)
    base = replay(model, tok, prompts, saes=saes, readout=readout).readout.double()
    np.testing.assert_allclose(g.readout.double().cpu(), base, rtol=1e-6)  # same forward
    sae = saes[layer]
    a = sae.encode(g.residual[:, 0].float()).double()
    dg = sae.W_dec.double() @ g.grad[:, 0].double().T  # [d_sae, prompts]
    # the feature active on every prompt whose clamp moves P(stop) most: a large change
    # keeps the float32 readout's rounding far below 1e-3 of it
    score = (a.T * dg).abs().min(1).values * (a > 0).all(0)
    f = int(score.argmax())
    eps = 1e-2
    moved = []
    for s in (1 + eps, 1 - eps):  # a scale clamp: the patch's own clamp size is eps * a_f
        ivs = [Intervention(layer, f, scale=s, positions="prompt")] * len(prompts)
        moved.append(replay(model, tok, prompts, saes=saes, interventions=ivs,
                            readout=readout).readout.double())
    finite = (moved[0] - moved[1]) / 2  # central: the second-order term cancels
    first = eps * a[:, f] * dg[f]
    np.testing.assert_allclose(finite, first, rtol=1e-3)
    # one-sided, the second-order term shows, and is still small at this size
    np.testing.assert_allclose(moved[0] - base, first, rtol=2e-2)


def _planted(model, tok, saes, layer: int, weights: list[float], ids: list[int]):
    """A copy of ``saes`` whose features ``ids`` at ``layer`` never fire and write along
    ``w · u + sqrt(1 − w²) · r``: ``u`` the mean readout gradient (the readout direction),
    ``r`` a random unit direction orthogonal to it."""
    g = readout_gradients(model, tok, PROMPTS["safe"], [layer], p_stop_readout(tok))
    u = g.grad[:, 0].double().mean(0)
    u = u / u.norm()
    r = torch.randn(u.shape[0], generator=torch.Generator().manual_seed(5), dtype=u.dtype)
    r = r - (r @ u) * u
    r = r / r.norm()
    s = saes[layer]
    W_enc, b_enc, W_dec = s.W_enc.data.clone(), s.b_enc.data.clone(), s.W_dec.data.clone()
    for f, w in zip(ids, weights, strict=True):
        W_dec[f] = (w * u + (1 - w * w) ** 0.5 * r).to(W_dec.dtype)
        W_enc[:, f] = 0.0
        b_enc[f] = -1.0
    out = dict(saes)
    out[layer] = SAE(W_enc, b_enc, W_dec, s.b_dec.data, s.activation, s.threshold.data, s.k,
                     s.apply_b_dec_to_input, layer)
    return out


def test_planted_features_rank_on_top_in_order(tiny, tiny_saes, tmp_path):
    model, tok = tiny
    ids, weights = [5, 77, 40], [1.0, 0.8, 0.6]
    saes = _planted(model, tok, tiny_saes, 2, weights, ids)
    table = screen_attributions(model, tok, saes, PROMPTS, CONDS, p_stop_readout(tok),
                                tmp_path, progress=False)
    assert list(table.columns) == SCREEN_COLUMNS
    assert len(table) == 2 * 4 * 128 + 4 * 128  # two safe conditions, one risky
    val = table[table["intervention"] == "safe_value"]
    top = val.head(3)
    assert top["feature"].tolist() == [f"L2-{f}" for f in ids]  # the readout direction, then
    assert top["rank"].tolist() == [1, 2, 3]                    # its mixtures, in order
    np.testing.assert_allclose(top["clamp_mean"], 4.0)  # never active: the clamp is v - 0
    assert (top["active_share"] == 0).all()
    # r is orthogonal to the mean gradient, so the mean attribution is v · w · |mean grad|:
    # exactly in the ratio of the weights
    att = top["attribution"].to_numpy()
    np.testing.assert_allclose(att / att[0], weights, rtol=1e-4)
    # a scale clamp of an inactive feature is zero: the planted features rank low there
    abl = table[(table["intervention"] == "safe_ablated") & table["feature"].isin(top["feature"])]
    assert (abl["attribution"] == 0).all() and (abl["rank"] > 3).all()
    # random decoder rows, however active, stay below the planted ones
    assert (val.set_index("feature").loc[[f"L2-{f}" for f in range(100, 110)], "rank"] > 3).all()


def test_mean_se_and_shares_equal_a_per_prompt_computation(tiny, tiny_saes, tmp_path):
    model, tok = tiny
    readout = p_stop_readout(tok)
    table = screen_attributions(model, tok, tiny_saes, PROMPTS, CONDS, readout, tmp_path,
                                batch_size=3, chunk=4, progress=False)
    g = readout_gradients(model, tok, PROMPTS["risky"], sorted(tiny_saes), readout)
    layer = 3
    sae = tiny_saes[layer]
    a = sae.encode(g.residual[:, layer]).double().numpy()
    dg = (g.grad[:, layer].double() @ sae.W_dec.double().T).numpy()
    per_prompt = (3.0 - 1.0) * a * dg  # risky_amplified: scale 3
    got = table[(table["intervention"] == "risky_amplified") & (table["layer"] == layer)]
    got = got.sort_values("feature_id")
    np.testing.assert_allclose(got["attribution"], per_prompt.mean(0), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(got["attribution_se"], stats.sem(per_prompt, axis=0), rtol=1e-3,
                               atol=1e-9)
    np.testing.assert_allclose(got["active_share"], (a != 0).mean(0))
    np.testing.assert_allclose(got["clamp_mean"], 2.0 * a.mean(0), rtol=1e-4, atol=1e-7)
    # rank 1 = the largest |attribution| within context x intervention
    want = (-np.abs(per_prompt.mean(0))).argsort(kind="stable")[:5]
    whole = table[table["intervention"] == "risky_amplified"]
    assert whole["rank"].is_monotonic_increasing
    assert set(whole[whole["layer"] == layer].head(1)["feature_id"]) <= set(want)


PEAK = textwrap.dedent("""
    import json, resource, sys, tempfile
    from pathlib import Path
    import numpy as np
    from featurepath.config import ConditionSpec
    from featurepath.pipeline.screen import screen_attributions
    from featurepath.tasks.slot_machine.readout import p_stop_readout
    from featurepath.testing import random_sae, tiny_llama
    n = int(sys.argv[1])
    model, tok = tiny_llama(n_layers=4)
    saes = {layer: random_sae(64, 32768, layer) for layer in range(4)}
    rng = np.random.default_rng(0)
    prompts = {"safe": ["".join(rng.choice(list("abcdefgh $0123456789"), size=16))
                        for _ in range(n)]}
    conds = [ConditionSpec(name="v", context="safe", patch="value", value=1.0)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        t = screen_attributions(model, tok, saes, prompts, conds, p_stop_readout(tok),
                                Path(tmp), batch_size=32, chunk=32, progress=False)
    assert len(t) == 4 * 32768
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"prompts": n, "before_kb": base, "peak_kb": peak}))
""")


def _peak(n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PEAK, str(n)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory_is_flat_in_the_number_of_prompts():
    """4 layers x 32,768 features: a [prompts, features] float32 attribution matrix would grow
    by 224 x 131,072 x 4 B = 117 MB from 32 to 256 prompts (one layer's activations alone by
    29 MB); the stream holds one chunk of 32. Measured: 84 MB and 81 MB."""
    small, big = _peak(32), _peak(256)
    # growth during the screen (the start-up peak itself wanders by ~30 MB between processes)
    grow = [r["peak_kb"] - r["before_kb"] for r in (small, big)]
    assert grow[1] - grow[0] < 24 * 1024, (small, big)


def test_screen_command_writes_the_table_and_refuses_bad_input(tmp_path, capsys):
    from featurepath.cli import main
    from featurepath.testing import write_tiny_inputs

    model_dir, sae_dir = write_tiny_inputs(tmp_path / "in")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: {model_dir}
        saes: {sae_dir}
        patch:
          prompt_set: states
          n_prompts: 4
          conditions:
            - {{name: safe_baseline, context: safe}}
            - {{name: safe_with_safe_patch, context: safe, patch: safe}}
            - {{name: safe_ablated, context: safe, patch: scale, scale: 0}}
            - {{name: risky_baseline, context: risky}}
            - {{name: risky_value, context: risky, patch: value, value: 2}}
    """))
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="no discover.parquet.*safe_with_safe_patch"):
        assert main(["screen", str(run), "-c", str(cfg), "--no-progress"]) == 0  # skipped
    assert "wrote" in capsys.readouterr().out
    table = pd.read_parquet(run / "screen.parquet")
    assert list(table.columns) == SCREEN_COLUMNS
    assert set(table["intervention"]) == {"safe_ablated", "risky_value"}
    assert len(table) == 2 * 4 * 128
    assert (table["n_prompts"] == 4).all()
    split = pd.read_parquet(run / "splits" / "screen.parquet")
    assert set(split["half"]) == {"screen"} and len(split) == 8
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(f"""
        model: {model_dir}
        saes: {sae_dir}
        patch:
          conditions:
            - {{name: safe_baseline, context: safe}}
            - {{name: safe_with_safe_patch, context: safe, patch: safe}}
    """))
    with pytest.warns(UserWarning, match="no discover.parquet"):
        assert main(["screen", str(tmp_path / "run2"), "-c", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error: no patched condition to screen" in err and "Traceback" not in err
    assert not Path(tmp_path / "run2" / "screen.parquet").exists()
