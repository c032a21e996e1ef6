"""Baselines and ablations: every method at the tiny preset (one suite run for the session, reusing conftest's tiny
flywheel run), the tables built from the files on disk, resume, refusals, and the teleoperation stand-in."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dexfly.flywheel.baselines import METHODS, BaselineConfig, Baselines, build_tables, check_flywheel_run, last_dataset_size, write_tables
from dexfly.flywheel.schedule import load_preset
from dexfly.flywheel.stages import RunFolder, StageError

ITERATIONS = 2  # as conftest's tiny flywheel run
# The paper's sizes (20 human demos, 10 sources) cost compile-free but real simulation time; the tests need only a
# few of each to exercise every path.
SMALL = BaselineConfig(human_demos=4, replay_sources=2, teleop_batch_size=4)


def _suite(out, flywheel_run, methods=("all",), log=lambda *a: None):
    return Baselines("grasp", "tiny", out, methods=methods, iterations=ITERATIONS, flywheel_run=flywheel_run, config=SMALL, log=log,
                     progress=False, video=False)


@pytest.fixture(scope="session")
def suite(tiny_run, tmp_path_factory):
    """All eight methods once, in one process (the same shapes: jit cache hits), the flywheel reused."""
    fw_out, fw_report = tiny_run
    out = tmp_path_factory.mktemp("baselines") / "grasp_tiny"
    tables = _suite(out, fw_out).run()
    return out, tables, fw_out, fw_report


def _record(root, stage):
    return json.loads((root / "stages" / (stage.replace("/", "__") + ".json")).read_text())


def test_every_method_runs_at_the_tiny_preset(suite):
    out, tables, fw_out, fw_report = suite
    assert list(tables["table2"]) == list(METHODS)
    for m, r in tables["table2"].items():
        assert 0.0 <= r["mean"] <= 1.0 and len(r["per_seed"]) == 1, m
    assert tables["table2"]["flywheel"]["mean"] == fw_report["table1"][-1]["t_oep"]["mean"]  # the reused run's last iteration
    assert tables["trajectories"]["flywheel"] == fw_report["table1"][-1]["trajectories"]
    for name in ("table2.json", "table2.md", "table3.md", "figure5.png"):
        assert (out / name).exists(), name
    assert json.loads((out / "table2.json").read_text()) == tables["table2"]
    preset = load_preset("grasp", "tiny")
    # replay-1: A_EP from the seed over the last iteration's objects, as many trajectories as D_n is scheduled to hold
    replay = _record(out / "replay-1", "augment")
    assert replay["config"]["c_aug"]["objects"] == list(preset.iteration(ITERATIONS).objects)
    assert replay["summary"]["wanted"] == last_dataset_size(preset, ITERATIONS)
    assert _record(out / "human-default", "demos")["summary"]["configs"] == 1  # one fixed scene
    assert _record(out / "human-enhanced", "demos")["summary"]["environments"] == len(preset.iteration(ITERATIONS).env_ids)
    sources = {(r["method"], r["source"]) for r in tables["table3"]}
    assert {("replay-1", "A_EP from the seed"), ("replay-10", "teleoperation stand-in"), ("replay-10", "A_EP from 2 stand-in demos"),
            ("human-default", "teleoperation stand-in"), ("flywheel", "A_EP from the seed"), ("flywheel", "combined-policy rollouts"),
            ("no-residual", "base-policy rollouts")} <= sources
    assert ("no-aep", "A_EP from rollouts") not in sources and ("no-both", "combined-policy rollouts") not in sources
    assert _record(out / "no-aep", "iter1/augment")["summary"]["augmented"] is False
    # the ablations are flywheel variants, named as such, and copy the stages they share instead of recomputing them
    assert json.loads((out / "no-aep" / "flywheel.json").read_text())["variant"] == {"augment_rollouts": False}
    for stage in ("warmup", "iter1/diffusion", "iter1/evaluate", "iter1/residual", "iter1/collect"):
        assert _record(out / "no-aep", stage)["adopted_from"] == str(fw_out.resolve()), stage
    assert not (out / "no-residual" / "iter1" / "residual").exists()
    assert _record(out / "no-both", "iter1/collect")["adopted_from"] == str((out / "no-residual").resolve())
    assert _record(out / "no-both", "iter1/augment")["config"]["augment_rollouts"] is False


def test_tables_come_from_the_evaluation_files_on_disk(suite, tmp_path):
    out, tables, _, _ = suite
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    path = copy / "replay-1" / "eval.json"
    result = json.loads(path.read_text())
    result["t_oep"].update(mean=0.123, std=0.0, per_seed=[0.123])
    path.write_text(json.dumps(result))
    edited = write_tables(copy, "grasp", "tiny", ITERATIONS)
    assert edited["table2"]["replay-1"] == {"mean": 0.123, "std": 0.0, "per_seed": [0.123]}
    assert json.loads((copy / "table2.json").read_text())["replay-1"]["mean"] == 0.123
    assert "| 12.3 ± 0.0 |" in (copy / "table2.md").read_text()
    assert {m: r for m, r in edited["table2"].items() if m != "replay-1"} == {m: r for m, r in tables["table2"].items() if m != "replay-1"}
    (copy / "no-both" / "iter2" / "eval.json").unlink()
    assert "no-both" not in build_tables(copy, "grasp", "tiny", ITERATIONS)["table2"]


def test_a_rerun_skips_every_finished_method(suite):
    out, tables, fw_out, _ = suite
    said = []
    again = _suite(out, fw_out, log=said.append).run()
    assert again["table2"] == tables["table2"]
    started = [s for s in said if s.startswith("[bold]")]
    assert not started, started  # every stage of every method was found finished


def test_refusals_name_the_problem(suite, tmp_path):
    out, _, fw_out, _ = suite
    with pytest.raises(StageError, match="is a run of the plain flywheel, not"):
        _suite(fw_out, None)  # a flywheel run is no baselines folder
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(StageError, match="not a flywheel run folder"):
        _suite(tmp_path / "mine", None)
    RunFolder.open(tmp_path / "lift_run", task="lift", preset="tiny", seed=0)
    with pytest.raises(StageError, match="task 'lift', not 'grasp'"):
        _suite(tmp_path / "b", tmp_path / "lift_run")
    RunFolder.open(tmp_path / "unfinished", task="grasp", preset="tiny", seed=0)
    with pytest.raises(StageError, match="has not finished an iteration"):
        check_flywheel_run(tmp_path / "unfinished", task="grasp", preset="tiny", seed=0, iterations=ITERATIONS)
    with pytest.raises(StageError, match="not a finished 3-iteration run .*--iterations 2"):
        check_flywheel_run(fw_out, task="grasp", preset="tiny", seed=0, iterations=3)
    with pytest.raises(StageError, match=r'is a run of \{"augment_rollouts": false\}, not the plain flywheel'):
        check_flywheel_run(out / "no-aep", task="grasp", preset="tiny", seed=0, iterations=ITERATIONS)  # an ablation is not the flywheel
    from dexfly.flywheel.loop import Flywheel

    with pytest.raises(StageError, match=r'is a run of \{"augment_rollouts": false\}, not \{"residual": false\}'):
        Flywheel("grasp", "tiny", out / "no-aep", iterations=ITERATIONS, residual=False, progress=False, video=False)


def test_the_stand_in_replays_the_seed_script_and_varies_it_like_a_human():
    import envs
    from dexfly import dataset
    from dexfly.paths import DEMOS_DIR
    from dexfly.teleop import HumanVariation, KeyJitter, script

    for task in ("grasp", "lift"):  # one arm and two: the library's script is the one that recorded the seeds
        seed = dataset.read_dataset(DEMOS_DIR / f"{task}_seed.hdf5", task=task).episodes[0]
        env = envs.make_cached(task, envs.episode_objects(seed))
        actions, _ = script(env, env.scene_from_episode(seed))
        np.testing.assert_allclose(actions, seed.actions, atol=1e-6, err_msg=task)
    env = envs.make_cached("grasp")
    spec = env.default_scene()
    plain, _ = script(env, spec)
    a, ends_a = script(env, spec, KeyJitter(HumanVariation(), (0, 1)))
    b, _ = script(env, spec, KeyJitter(HumanVariation(), (0, 1)))
    c, _ = script(env, spec, KeyJitter(HumanVariation(), (0, 2)))
    np.testing.assert_array_equal(a, b)  # deterministic per (seed, attempt)
    assert not np.allclose(a, c)
    last_move = lambda x: int(np.flatnonzero(np.any(np.abs(np.diff(x, axis=0)) > 1e-7, axis=1)).max())  # noqa: E731
    assert last_move(a) <= last_move(plain) + 5  # timing jitter never makes a demo longer than the script (5 keyframes' rounding)
    offset = np.abs(a[-1, :3] - plain[-1, :3])  # the final hold: one keyframe's position jitter
    assert 0 < offset.max() < 0.02
    assert ends_a.shape == script(env, spec)[1].shape


def test_identical_stages_are_copied_from_a_donor_run(tmp_path):
    donor = RunFolder.open(tmp_path / "donor", task="grasp", preset="tiny", seed=0)
    (donor.root / "d1.hdf5").write_bytes(b"data")
    (donor.root / "model").mkdir()
    (donor.root / "model" / "w.bin").write_bytes(b"weights")
    donor.finish("warmup", {"x": 1}, ["d1.hdf5", "model"], 12.0, {"generated": 4})
    run = RunFolder.open(tmp_path / "ablation", task="grasp", preset="tiny", seed=0, variant={"residual": False})
    assert run.adopt("warmup", {"x": 2}, donor) is None  # another config: computed, not copied
    rec = run.adopt("warmup", {"x": 1}, donor)
    assert rec["adopted_from"] == str(donor.root) and rec["summary"] == {"generated": 4}
    assert (run.root / "model" / "w.bin").read_bytes() == b"weights" and run.done("warmup", {"x": 1})
    (donor.root / "d1.hdf5").write_bytes(b"edited")
    assert RunFolder.open(tmp_path / "other", task="grasp", preset="tiny", seed=0).adopt("warmup", {"x": 1}, donor) is None  # corrupt donor
    with pytest.raises(StageError, match=r'is a run of \{"residual": false\}, not the plain flywheel'):
        RunFolder.open(tmp_path / "ablation", task="grasp", preset="tiny", seed=0)
    with pytest.raises(ValueError, match=r"unknown method id\(s\) \['replay-2'\]"):
        _suite(tmp_path / "a", None, methods=("replay-1", "replay-2"))
