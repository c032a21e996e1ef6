"""The tasks' subtask-end detectors (`TaskEnv.subtask_conditions`) against the seeds' recorded ends.

Each seed is replayed in the C-MuJoCo twin (`dexfly.cpu_sim`, same control, cheap to run) and the detector's
ends are compared with the `subtask_end` signals the seed was recorded with.
"""

from __future__ import annotations

import numpy as np
import pytest

import envs
from dexfly import dataset
from dexfly.cpu_sim import CpuEnv
from dexfly.paths import DEMOS_DIR

TOLERANCE = 8  # steps (0.16 s); measured: pour 1, handover 3 to 7


def _detected_and_recorded(task: str):
    ep = dataset.read_dataset(DEMOS_DIR / f"{task}_seed.hdf5", task=task).episodes[0]
    env = envs.make_cached(task, envs.episode_objects(ep))
    sim = CpuEnv(env)
    sim.reset(env.scene_from_episode(ep))
    done = []
    for action in ep.actions:
        sim.step(action)
        done.append(np.asarray(sim.info["subtask_done"]))
    return env, np.stack(done), np.asarray(ep.subtask_end)


@pytest.mark.parametrize("task", ["pour", "handover"])
def test_detector_agrees_with_the_seed(task):
    env, done, recorded = _detected_and_recorded(task)
    assert done.shape == recorded.shape
    for arm, subtasks in enumerate(env.subtasks):
        for k, (name, _) in enumerate(subtasks[:-1]):  # the last subtask of an arm ends with the episode
            assert done[:, arm, k].any(), f"{task}: {name} (arm {arm}) never detected"
            got, want = int(np.argmax(done[:, arm, k])), int(np.argmax(recorded[:, arm, k]))
            assert abs(got - want) <= TOLERANCE, f"{task}: {name} (arm {arm}) detected at step {got}, the seed ends it at {want}"
        assert not done[:, arm, len(subtasks) - 1 :].any(), "an arm's last subtask is never detected (it ends with the episode)"
    # ends are sticky and ordered
    assert np.all(np.diff(done.astype(int), axis=0) >= 0)
    assert np.all(done[:, :, 1:] <= done[:, :, :-1])


@pytest.mark.parametrize("task", ["grasp", "lift"])
def test_one_subtask_per_arm_has_no_detector(task):
    env, done, recorded = _detected_and_recorded(task)
    assert done.shape == recorded.shape
    assert not done.any()
    assert np.all(recorded[-1] == 1)
