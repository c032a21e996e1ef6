"""Batched dual-arm tasks (Lift, Handover): shapes, determinism, seed replay."""

from __future__ import annotations

import dexfly  # noqa: F401
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from dexfly import dataset
from dexfly.paths import DEMOS_DIR
from dexfly.rollout import run_actions

N_ENVS = 2
TASKS = ("lift", "handover")


@pytest.fixture(scope="module", params=TASKS)
def dual_env(request):
    return envs.make(request.param)


@pytest.fixture(scope="module")
def dual_batch(dual_env):
    env = dual_env
    scenes = env.make_scenes([env.default_scene()] * N_ENVS)
    states = env.reset_batch(scenes, jax.random.split(jax.random.PRNGKey(0), N_ENVS))
    return scenes, states


def test_reset_step_shapes(dual_env, dual_batch):
    env = dual_env
    scenes, states = dual_batch
    assert env.action_dim == 30 and len(env.arms) == 2
    assert env.obs_dims == {"obj": 13, "prop": 54}
    assert states.obs["obj"].shape == (N_ENVS, 13)
    assert states.obs["prop"].shape == (N_ENVS, 54)
    assert states.reward.shape == (N_ENVS,) and states.success.dtype == jnp.bool_
    actions = jnp.broadcast_to(jnp.asarray(env.home_action()), (N_ENVS, env.action_dim))
    nxt = env.step_batch(states, actions)
    assert nxt.data.qpos.shape == (N_ENVS, env.mj_model.nq)
    assert int(nxt.info["step"][0]) == 1
    assert np.isfinite(np.asarray(nxt.obs["prop"])).all()
    assert not np.asarray(nxt.success).any()
    z = np.asarray(states.obs["obj"][:, 2])
    np.testing.assert_allclose(z, np.asarray(scenes.table_height) + env.object_specs["object"].rest_height, atol=2e-3)
    with pytest.raises(ValueError):
        env.step_batch(states, jnp.zeros((N_ENVS, 15)))


def test_determinism(dual_env, dual_batch):
    env = dual_env
    scenes, _ = dual_batch
    keys = jax.random.split(jax.random.PRNGKey(3), N_ENVS)
    actions = jnp.broadcast_to(jnp.asarray(env.home_action()), (N_ENVS, env.action_dim)) + 0.01
    a = env.step_batch(env.reset_batch(scenes, keys), actions)
    b = env.step_batch(env.reset_batch(scenes, keys), actions)
    np.testing.assert_array_equal(np.asarray(a.data.qpos), np.asarray(b.data.qpos))
    np.testing.assert_array_equal(np.asarray(a.reward), np.asarray(b.reward))
    s1 = env.sample_scenes(jax.random.PRNGKey(7), 4, envs.SceneSet(sample_poses=True))
    s2 = env.sample_scenes(jax.random.PRNGKey(7), 4, envs.SceneSet(sample_poses=True))
    assert s1 == s2


def test_seed_replay_succeeds(dual_env):
    env = dual_env
    path = DEMOS_DIR / f"{env.name}_seed.hdf5"
    if not path.exists():
        pytest.skip(f"no recorded seed {path} (python experiments/record_seed.py --task {env.name})")
    demo = dataset.read_dataset(path, task=env.name).episodes[0]
    assert demo.actions.shape == (env.episode_steps, env.action_dim)
    ends = np.asarray(demo.subtask_end)
    assert ends.shape[:2] == (env.episode_steps, 2)
    for arm, subs in enumerate(env.subtasks):
        for k in range(len(subs)):
            assert ends[-1, arm, k] == 1, f"arm {arm} subtask {k} never ends"
    spec = env.scene_spec({"object": demo.object_ids[0]}, demo.env_id, demo.pose_id)
    scenes = env.make_scenes([spec] * N_ENVS)
    actions = np.broadcast_to(demo.actions, (N_ENVS, *demo.actions.shape))
    _, traj = run_actions(env, scenes, actions, jax.random.PRNGKey(0))
    assert np.asarray(traj.success)[:, -1].all()
