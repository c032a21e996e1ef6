"""Comparing finished residual runs from their files (dexfly.policies.residual.compare, experiments/compare_residual.py).
No simulation: the runs are residual.json and eval.json written here."""

import json

import numpy as np
import pytest

from dexfly.policies.residual import ResidualConfig
from dexfly.policies.residual.checkpoint import EVAL_FILE, FORMAT, RUN_FILE
from dexfly.policies.residual.compare import TRAINED, compare, load_eval

OBJECTS = ["box_cube_5cm", "ball_5cm"]


def _rates(per_seed, per_object):
    per_seed = np.asarray(per_seed, float)
    return {"mean": float(per_seed.mean()), "std": float(per_seed.std()), "per_seed": list(per_seed), "per_object": per_object, "per_env": {}}


def _write_run(folder, *, base_sha="a" * 64, config=None, base=(0.4, 0.6), combined=(0.5, 0.9), seeds=(0, 1), env_steps=1000):
    folder.mkdir(parents=True)
    config = (config or ResidualConfig()).to_dict()
    (folder / RUN_FILE).write_text(json.dumps({"format": FORMAT, "task": "grasp", "config": config, "base": {"path": "b", "sha256": base_sha}}))
    result = {"task": "grasp", "objects": OBJECTS, "eval_env_id": "studio", "eval_pose_ids": ["p00"], "seeds": list(seeds),
              "base_success": _rates(base, {"box_cube_5cm": 0.8, "ball_5cm": 0.2}),
              "combined_success": _rates(combined, {"box_cube_5cm": 1.0, "ball_5cm": 0.4}), "env_steps": env_steps}
    (folder / EVAL_FILE).write_text(json.dumps(result))
    return folder


def test_compare_pairs_runs_on_one_base_and_reads_every_number_from_the_files(tmp_path, experiment_script, capsys):
    a = _write_run(tmp_path / "fw_a" / "iter1" / "residual")
    b = _write_run(tmp_path / "b", config=ResidualConfig(update_epochs=8), combined=(0.7, 0.9))
    cmp = compare([load_eval(tmp_path / "fw_a"), load_eval(b)])  # a flywheel run folder resolves to its iter1/residual
    assert cmp.runs[0].path == a and cmp.paired
    assert cmp.settings == {"update_epochs": [4, 8]}
    np.testing.assert_allclose(cmp.gain[0], [0.1, 0.3])
    np.testing.assert_allclose(cmp.gain[1], [0.3, 0.3])
    np.testing.assert_allclose(cmp.vs_first[1], [0.2, 0.0])
    assert cmp.per_object["ball_5cm"] == {"base": [0.2, 0.2], "combined": [0.4, 0.4]}
    experiment_script("compare_residual").main(experiment_script("compare_residual").Args(runs=(tmp_path / "fw_a", b)))
    out = capsys.readouterr().out
    assert "paired: one base" in out and "update_epochs" in out
    assert out.strip().splitlines()[-1] == "gain=0.2000,0.3000"

    # another base: still compared, as unpaired; a changed number on disk changes the result
    c = _write_run(tmp_path / "c", base_sha="c" * 64, combined=(0.5, 1.0))
    cmp = compare([load_eval(a), load_eval(c)])
    assert not cmp.paired
    np.testing.assert_allclose(cmp.gain[1], [0.1, 0.4])

    # runs whose settings match and whose training lengths differ (eval.json's env_steps): the length shows
    d = _write_run(tmp_path / "d", env_steps=2000)
    assert compare([load_eval(a), load_eval(d)]).settings == {TRAINED: [1000, 2000]}


def test_compare_refuses_runs_scored_on_other_scenes_and_folders_that_are_not_runs(tmp_path, experiment_script):
    a = _write_run(tmp_path / "a")
    with pytest.raises(ValueError, match=r"not evaluated on the same scenes:\n  seeds: \[0, 1\]"):
        compare([load_eval(a), load_eval(_write_run(tmp_path / "b", seeds=(0, 2)))])
    with pytest.raises(ValueError, match="at least two runs"):
        compare([load_eval(a)])
    with pytest.raises(FileNotFoundError, match="no eval.json here or in iter1/residual"):
        load_eval(tmp_path)
    bad = _write_run(tmp_path / "bad")
    (bad / EVAL_FILE).write_text(json.dumps({"task": "grasp"}))
    with pytest.raises(ValueError, match="not a residual evaluation"):
        load_eval(bad)
    (bad / EVAL_FILE).write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_eval(bad)
    (a / RUN_FILE).write_text(json.dumps({"format": "dexfly.diffusion/1"}))
    with pytest.raises(ValueError, match="not a dexfly residual run"):
        load_eval(a)
    script = experiment_script("compare_residual")
    with pytest.raises(SystemExit, match="compare_residual: .*not a dexfly residual run"):
        script.main(script.Args(runs=(a, a)))
