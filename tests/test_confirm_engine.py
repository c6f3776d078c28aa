"""The confirmation's draw engine: one prefill per prompt, then one decision-token forward per
arm, must read exactly what a full replay of the prompt with the same clamp reads."""

from __future__ import annotations

import torch

from featurepath.engine.decision import DecisionPrefix, decision_readouts
from featurepath.engine.generate import replay
from featurepath.engine.hooks import Intervention
from featurepath.pipeline.controls import null_direction
from featurepath.tasks.slot_machine.readout import p_stop_readout

PROMPTS = ["You have $90. Choice: ", "Round 3, balance $140, last bet lost. Choice: ",
           "Balance $20. Choice: "]


def test_prefix_readouts_match_full_replay(tiny, tiny_saes) -> None:
    model, tok = tiny
    readout = p_stop_readout(tok)
    u = null_direction(0, 1, 3, model.config.hidden_size)
    arms = [None, Intervention(1, 5, value=4.0, positions="prompt"),
            Intervention(1, 5, value=4.0, positions="last", direction=u),
            Intervention(2, 7, scale=3.0, positions="prompt")]
    got = decision_readouts(model, tok, PROMPTS, arms, tiny_saes, readout, max_rows=5,
                            prompt_batch=2)
    assert got.shape == (4, 3)
    for a, iv in enumerate(arms):
        ref = replay(model, tok, PROMPTS, saes=tiny_saes, interventions=[iv] * 3,
                     readout=readout).readout
        torch.testing.assert_close(got[a], ref, atol=1e-5, rtol=0)
    # the clamps move P(stop): the comparison above is not between identical numbers
    assert (got[1] - got[0]).abs().max() > 1e-4
    # one prefill serves many calls: the prefix cache is put back after every batch
    prefix = DecisionPrefix(model, tok, PROMPTS, prompt_batch=2)
    for rows in (64, 3):
        again = prefix.readouts(arms[::-1], tiny_saes, readout, max_rows=rows)
        torch.testing.assert_close(again.flip(0), got, atol=1e-5, rtol=0)
