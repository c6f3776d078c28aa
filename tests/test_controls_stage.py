"""The control arms through the real stages on the tiny model: ``featurepath patch`` plans the
behavioural direction and its null arms, ``featurepath causal`` gives the direction a band of
its own size (the original study's z = +4.45 against z = +0.75 for the SAE direction)."""

from __future__ import annotations

import pandas as pd
import yaml

from featurepath.cli import main
from featurepath.rundir import RunDir

K = 3  # null directions


def test_behavioural_direction_gets_its_own_null_band(tmp_path, capsys):
    from featurepath.testing import write_play_decisions, write_tiny_inputs

    model_dir, sae_dir = write_tiny_inputs(tmp_path / "inputs")
    run = tmp_path / "run"
    write_play_decisions(run)
    cfg = {"model": model_dir, "saes": sae_dir,
           "patch": {"trials": 4, "batch_size": 16, "features": ["L1-3", "L2-5"],
                     "prompt_set": "states", "n_prompts": 4,
                     "sampling": {"max_new_tokens": 2}, "doses": [3.0],
                     "null_directions": K, "null_conditions": ["risky_dose3"],
                     "behavioural_direction": True}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["patch", str(run), "-c", str(tmp_path / "c.yaml"), "--no-progress"]) == 0
    assert ("(24 in 3 null directions, 16 along the behavioural direction and 24 in its null "
            "directions)") in capsys.readouterr().out
    trials = pd.read_parquet(RunDir(run).trials)
    dnull = trials[(trials["arm"] == "null") & (trials["feature"] == "")]
    # 2 direction layers x 1 null condition x K directions x 4 trials
    assert len(dnull) == 2 * K * 4
    assert set(dnull["condition"]) == {"risky_dose3"} and set(dnull["layer"]) == {1, 2}
    capsys.readouterr()
    assert main(["causal", str(run)]) == 0
    out = capsys.readouterr().out
    assert "(P(stop) against their band: largest |z|" in out
    assert "(P(stop) against its own band: largest |z|" in out
    tests = pd.read_parquet(RunDir(run).causal_tests)
    d = tests[(tests["arm"] == "direction") & (tests["condition"] == "risky_dose3")
              & (tests["metric"] == "p_stop")]
    assert sorted(d["feature"]) == ["L1~direction", "L2~direction"]
    assert (d["null_n"] == K).all()
    # a condition without null arms leaves the direction without a band
    other = tests[(tests["arm"] == "direction") & (tests["condition"] == "safe_dose3")]
    assert (other["null_n"] == 0).all()
    # pathways reads both signals of a run with null arms, each with its maxT table (two
    # frames carrying a table in .attrs once made pandas' concat fail)
    assert main(["pathways", str(run)]) == 0
    maxt = pd.read_parquet(RunDir(run).pathways / "edges_maxt.parquet")
    assert set(maxt["signal"]) == {"decision", "gen_mean"}
