"""A fixed set of engine calls on the tiny model whose float32 outputs are frozen in
``fixtures/engine_golden.npz``: the hooks were rewritten to run without host syncs (issue 14)
and must give what the earlier host-side hooks gave.

The file was frozen on one CPU, so its floats are compared with a tolerance
(:func:`assert_matches_golden`), never bit for bit: oneDNN and MKL pick different kernels
(AVX2, AVX-512, AMX) on different CPUs, float32 sums come out in a different order, and the
outputs differ in the 7th significant digit (about 5e-7 relative). Tokens stay exact.
See docs/contributing.md.

Regenerate only on purpose (the file *is* the earlier behaviour):
    PYTHONPATH=src python tests/engine_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

GOLDEN = Path(__file__).parent / "fixtures" / "engine_golden.npz"

PROMPTS = ["Balance $20. Choice: ", "You won! Balance $140 now. Choice: ",
           "Stop or bet? ", "Round 3: Bet $10, Loss. Choice: ",
           "Balance $20. Choice: ", "Stop or bet? "]


def scenario(model, tok, saes) -> dict[str, np.ndarray]:
    """Mixed rows: unpatched, delta/reconstruct, value/scale, every position kind, a
    reconstruct baseline; sampled and greedy decoding with rows finishing early; replay."""
    from featurepath.engine.generate import SamplingConfig, generate, replay
    from featurepath.engine.hooks import Intervention, RecordSpec

    spec = RecordSpec([(0, 1), (0, 77), (1, 3), (1, 9), (2, 5), (2, 0), (3, 7), (3, 100)])
    ivs = [None,
           Intervention(1, 3, value=40.0),
           Intervention(2, 5, scale=0.0, positions="prompt"),
           Intervention(1, 9, value=30.0, method="reconstruct", positions="all"),
           Intervention(2, -1, method="reconstruct"),
           Intervention(0, 1, scale=3.0, method="reconstruct", positions="prompt")]
    seeds = [5, 6, 7, 8, 9, 10]
    out: dict[str, np.ndarray] = {}
    runs = {
        "sample": dict(sampling=SamplingConfig(temperature=1.0, max_new_tokens=7)),
        "greedy": dict(sampling=SamplingConfig(temperature=0.0, max_new_tokens=5)),
        "stops": dict(sampling=SamplingConfig(temperature=1.0, max_new_tokens=9,
                                              stop_strings=("a", "E", "4"))),
        "topp": dict(sampling=SamplingConfig(temperature=0.8, top_p=0.9, max_new_tokens=6),
                     shared_prefix=False),
    }
    for name, kw in runs.items():
        r = generate(model, tok, PROMPTS, seeds, saes=saes, interventions=ivs, record=spec, **kw)
        _put(out, name, r)
    # no "all" rows: the shared-prefix path
    ivs2 = [iv if iv is None or iv.positions != "all" else None for iv in ivs]
    r = generate(model, tok, PROMPTS, seeds, SamplingConfig(temperature=1.0, max_new_tokens=8),
                 saes, ivs2, spec)
    _put(out, "shared", r)
    responses = ["bet $10", "", "stop now please", "I stop.", "Bet 5", "x"]
    r = replay(model, tok, PROMPTS, responses, saes, ivs, spec)
    _put(out, "replay", r)
    out.update(patch_store(model, tok, saes))
    return out


def patch_store(model, tok, saes) -> dict[str, np.ndarray]:
    """The run store of a small patch stage (every standard condition, sampled)."""
    import tempfile

    from featurepath.config import RunConfig
    from featurepath.pipeline.backends.local import run_local
    from featurepath.pipeline.patch import prepare
    from featurepath.pipeline.store import RunStore

    cfg = RunConfig()
    cfg.patch.features = ["L1-3", "L2-5"]
    cfg.patch.record = ["L0-1", "L1-3", "L2-5", "L3-7", "L3-100"]
    cfg.patch.trials = 3
    cfg.patch.batch_size = 8
    cfg.patch.sampling.max_new_tokens = 6
    cfg.patch.sampling.temperature = 1.0
    cfg.patch.seed_matched = False  # the seeds the frozen store was made with (0.1)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        run_local(prepare(d, cfg, model, tok, saes), runtime=(model, tok, saes),
                  progress=False)
        st = RunStore(d)
        rows = st.trials()["row"].to_numpy()
        for name in ("decision", "gen_mean", "gen_max"):
            out[f"store/{name}"] = np.asarray(st.activations(name)[0])[rows]
    return out


# float32 outputs: float32 reduction order differs across CPU kernels (AVX-512, AMX), about
# 5e-7 relative; 20x that is still far below any change a code edit would make
RTOL_F32, ATOL_F32 = 1e-5, 1e-6
# the store keeps float16: a float32 difference of 5e-7 can round a value to the neighbouring
# float16, one unit in the last place (2**-10 relative)
RTOL_F16, ATOL_F16 = 2.0 ** -10, 1e-6


def assert_matches_golden(got: dict[str, np.ndarray], want) -> None:
    """``got`` equals the frozen arrays ``want``: same keys, dtypes and shapes; integer arrays
    (tokens) exactly, float arrays within the float32 / float16 tolerance above, NaN for NaN."""
    assert set(got) == set(want.files)
    for k in want.files:
        g, w = got[k], want[k]
        assert g.dtype == w.dtype and g.shape == w.shape, k
        if np.issubdtype(w.dtype, np.floating):
            rtol, atol = (RTOL_F16, ATOL_F16) if w.dtype == np.float16 else (RTOL_F32, ATOL_F32)
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol,
                                       atol=atol, equal_nan=True, err_msg=k)
        else:
            assert np.array_equal(g, w), k


def _put(out: dict, name: str, r) -> None:
    out[f"{name}/decision"] = r.decision.numpy().astype(np.float32)
    out[f"{name}/gen_mean"] = r.gen_mean.numpy().astype(np.float32)
    out[f"{name}/gen_max"] = r.gen_max.numpy().astype(np.float32)
    n = max(1, max(len(t) for t in r.tokens))
    toks = np.full((len(r.tokens), n), -1, dtype=np.int64)
    for i, t in enumerate(r.tokens):
        toks[i, :len(t)] = t
    out[f"{name}/tokens"] = toks


def main() -> None:
    from featurepath.testing import tiny_llama, tiny_saes

    torch.manual_seed(0)
    model, tok = tiny_llama()
    saes = tiny_saes(model)
    np.savez_compressed(GOLDEN, **scenario(model, tok, saes))
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
