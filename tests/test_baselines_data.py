"""Baselines, the four data-source methods at the tiny preset: human demos (the teleoperation stand-in, one scene and
spread over environments) and replay-only A_EP (from the seed and from stand-in sources); the tables built from the
evaluation files on disk; the stand-in itself. They need no flywheel run (test_baselines.py has its variants)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dexfly.flywheel.baselines import Baselines, last_dataset_size, write_tables
from dexfly.flywheel.schedule import load_preset
from test_baselines import ITERATIONS, SMALL, _record  # the same iterations, sizes and record reader as the variants

DATA_SOURCES = ("human-default", "human-enhanced", "replay-1", "replay-10")


@pytest.fixture(scope="module")
def data_suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines_data") / "grasp_tiny"
    tables = Baselines("grasp", "tiny", out, methods=DATA_SOURCES, iterations=ITERATIONS, config=SMALL, progress=False, video=False).run()
    return out, tables


def test_every_data_source_method_runs_at_the_tiny_preset(data_suite):
    out, tables = data_suite
    assert list(tables["table2"]) == list(DATA_SOURCES)
    for m, r in tables["table2"].items():
        assert 0.0 <= r["mean"] <= 1.0 and len(r["per_seed"]) == 1, m
    for name in ("table2.json", "table2.md", "table3.md", "figure5.png"):
        assert (out / name).exists(), name
    preset = load_preset("grasp", "tiny")
    # replay-1: A_EP from the seed over the last iteration's objects, as many trajectories as D_n is scheduled to hold
    replay = _record(out / "replay-1", "augment")
    assert replay["config"]["c_aug"]["objects"] == list(preset.iteration(ITERATIONS).objects)
    assert replay["summary"]["wanted"] == last_dataset_size(preset, ITERATIONS)
    assert _record(out / "human-default", "demos")["summary"]["configs"] == 1  # one fixed scene
    assert _record(out / "human-enhanced", "demos")["summary"]["environments"] == len(preset.iteration(ITERATIONS).env_ids)
    sources = {(r["method"], r["source"]) for r in tables["table3"]}
    assert {("replay-1", "A_EP from the seed"), ("replay-10", "teleoperation stand-in"), ("replay-10", "A_EP from 2 stand-in demos"),
            ("human-default", "teleoperation stand-in")} <= sources


def test_tables_come_from_the_evaluation_files_on_disk(data_suite, tmp_path):
    out, tables = data_suite
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
