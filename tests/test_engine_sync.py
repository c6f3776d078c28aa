"""The hooks never wait for the device (issue 14), and the rewrite changed no number.

On a GPU every ``.cpu()``/``.item()``/``bool(tensor)`` inside a forward hook drains the launch
queue at every layer of every decoding step. CPU has no queue to drain, so the tests count the
host reads that *would* sync, while the hooks run; a CUDA-only test runs the same call under
``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from featurepath.engine.generate import SamplingConfig, generate
from featurepath.engine.hooks import Intervention, PatchRecorder, RecordSpec

sys.path.insert(0, str(Path(__file__).parent))
from engine_golden import GOLDEN, assert_matches_golden, scenario  # noqa: E402

HOOK_FUNCS = ("_make_hook", "_record", "_apply", "count_generated")
# calls whose result size or value the host must read from the device
SYNCING = ("cpu", "item", "tolist", "numpy", "nonzero", "masked_select", "unique")


def test_engine_outputs_match_the_frozen_pre_rewrite_outputs(tiny, tiny_saes):
    """Against a file frozen on another machine: floats within the stated float32 tolerance
    (reduction order differs across CPU kernels), tokens exactly."""
    model, tok = tiny
    assert_matches_golden(scenario(model, tok, tiny_saes), np.load(GOLDEN))


def test_golden_comparison_is_not_vacuous():
    """The tolerance passes kernel-order noise and fails a real change."""
    want = np.load(GOLDEN)
    noisy = {k: (want[k] * np.float32(1 + 5e-7)).astype(want[k].dtype)
             if want[k].dtype == np.float32 else want[k] for k in want.files}
    assert_matches_golden(noisy, want)
    changed = dict(noisy)
    changed["sample/decision"] = want["sample/decision"] * np.float32(1.001)
    with pytest.raises(AssertionError):
        assert_matches_golden(changed, want)
    flipped = dict(noisy)
    flipped["greedy/tokens"] = want["greedy/tokens"] + 1
    with pytest.raises(AssertionError):
        assert_matches_golden(flipped, want)


def test_hook_source_has_no_host_reads_or_row_loops():
    """Source-level: no syncing calls, no bool()/int()/float() of a tensor, no loops."""
    for name in HOOK_FUNCS:
        tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(getattr(PatchRecorder,
                                                                            name))))
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.For, ast.While, ast.comprehension)), name
            if isinstance(node, ast.Call):
                fn = node.func
                if isinstance(fn, ast.Attribute):
                    assert fn.attr not in SYNCING, f"{name} calls .{fn.attr}()"
                if isinstance(fn, ast.Name) and fn.id in ("bool", "int", "float"):
                    # float("nan") is a constant; float(tensor) reads the device
                    assert all(isinstance(a, ast.Constant) for a in node.args), \
                        f"{name} calls {fn.id}() on a value"


class _SyncCounter:
    """Counts host reads of tensor values made while a hook runs."""

    def __init__(self, monkeypatch):
        self.inside = 0
        self.reads: list[str] = []
        for meth in ("cpu", "item", "tolist", "numpy", "__bool__", "__int__", "__float__",
                     "nonzero"):
            orig = getattr(torch.Tensor, meth)
            monkeypatch.setattr(torch.Tensor, meth, self._wrap(meth, orig))
        for name in ("_record", "_apply", "count_generated"):
            monkeypatch.setattr(PatchRecorder, name, self._inside(getattr(PatchRecorder, name)))

    def _wrap(self, meth, orig):
        def f(t, *a, **k):
            if self.inside:
                self.reads.append(meth)
            return orig(t, *a, **k)

        return f

    def _inside(self, fn):
        def f(*a, **k):
            self.inside += 1
            try:
                return fn(*a, **k)
            finally:
                self.inside -= 1

        return f


def _mixed_run(model, tok, saes):
    spec = RecordSpec([(0, 1), (1, 3), (2, 5), (3, 7)])
    ivs = [None, Intervention(1, 3, value=40.0), Intervention(2, 5, scale=0.0,
                                                             positions="prompt"),
           Intervention(1, 9, value=30.0, method="reconstruct", positions="all"),
           Intervention(2, -1, method="reconstruct")]
    prompts = ["Balance $20. Choice: ", "Stop or bet? ", "Round 3: Bet $10. ", "Hi ", "Bet "]
    return generate(model, tok, prompts, [1, 2, 3, 4, 5],
                    SamplingConfig(temperature=1.0, max_new_tokens=6, stop_strings=("a",)),
                    saes, ivs, spec, shared_prefix=False)


def test_hooks_read_nothing_back_from_the_device(tiny, tiny_saes, monkeypatch):
    counter = _SyncCounter(monkeypatch)
    res = _mixed_run(*tiny, tiny_saes)
    assert max(res.n_new_tokens) > 1  # decoding steps ran through the hooks
    assert counter.reads == []


def test_source_check_catches_a_syncing_hook(monkeypatch, tiny, tiny_saes):
    """The counter is not vacuous: a hook that syncs is seen."""
    counter = _SyncCounter(monkeypatch)
    orig = PatchRecorder._record

    def syncing(self, call, layer, hidden):
        bool(hidden.any())
        return orig(self, call, layer, hidden)

    monkeypatch.setattr(PatchRecorder, "_record", counter._inside(syncing))
    _mixed_run(*tiny, tiny_saes)
    assert "__bool__" in counter.reads


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_sync_in_hooks_on_cuda(tiny_saes):  # pragma: no cover - GPU only
    from featurepath.testing import tiny_llama

    model, tok = tiny_llama()
    model = model.cuda()
    saes = {k: v.cuda() for k, v in tiny_saes.items()}
    orig = {n: getattr(PatchRecorder, n) for n in ("_record", "_apply")}

    def strict(fn):
        def f(*a, **k):
            torch.cuda.set_sync_debug_mode("error")
            try:
                return fn(*a, **k)
            finally:
                torch.cuda.set_sync_debug_mode(0)

        return f

    for n, fn in orig.items():
        setattr(PatchRecorder, n, strict(fn))
    try:
        _mixed_run(model, tok, saes)
    finally:
        for n, fn in orig.items():
            setattr(PatchRecorder, n, fn)


