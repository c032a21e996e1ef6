"""Batched tasks: shapes, determinism and seed replay for every task; clear errors on bad input (on Grasp).

Compiles dominate the run time: every test takes its env from `envs.make_cached`, so each task compiles once
per batch shape for the whole session, and batches stay at N_ENVS scenes.
"""

from __future__ import annotations

import dexfly  # noqa: F401
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from dexfly import dataset
from dexfly.catalog import TASK_ROLES, TASKS, CatalogError
from dexfly.paths import DEMOS_DIR
from dexfly.rollout import run_actions
from dexfly.unroll import jit_unroll
from envs import EnvConfig

N_ENVS = 2
ARMS = {"grasp": 1, "pour": 1, "lift": 2, "handover": 2}  # Panda + Inspire hand; two RM75 arms + G0-R hands


@pytest.fixture(scope="module", params=TASKS)
def task_env(request):
    return envs.make_cached(request.param)


@pytest.fixture(scope="module")
def task_batch(task_env):
    """N_ENVS scenes with sampled poses on two tables of different heights, reset."""
    env = task_env
    env_ids = tuple(e.id for e in env.catalog.environments[:2])
    assert len({env.catalog.environment(e).table_height for e in env_ids}) == 2
    specs = [env.sample_scenes(jax.random.PRNGKey(i), 1, envs.SceneSet(env_ids=(e,), sample_poses=True))[0] for i, e in enumerate(env_ids)]
    scenes = env.make_scenes(specs)
    states = env.reset_batch(scenes, jax.random.split(jax.random.PRNGKey(0), N_ENVS))
    return specs, scenes, states


@pytest.fixture(scope="module")
def grasp_env():
    return envs.make_cached("grasp")


@pytest.fixture(scope="module")
def grasp_batch(grasp_env):
    env = grasp_env
    specs = env.sample_scenes(jax.random.PRNGKey(1), N_ENVS, envs.SceneSet(env_ids=tuple(e.id for e in env.catalog.environments[:3]), sample_poses=True))
    scenes = env.make_scenes(specs)
    states = env.reset_batch(scenes, jax.random.split(jax.random.PRNGKey(0), N_ENVS))
    return specs, scenes, states


def test_task_registry():
    assert envs.TASKS is TASKS
    for task in TASKS:
        cls = envs._registry()[task]
        assert cls.name == task and tuple(TASK_ROLES[task]) == cls.roles


def test_reset_step_shapes(task_env, task_batch):
    env = task_env
    _, scenes, states = task_batch
    n_arms, n_obj = ARMS[env.name], len(env.roles)
    assert len(env.arms) == n_arms and env.action_dim == 15 * n_arms
    assert env.obs_dims == {"obj": 13 * n_obj, "prop": 27 * n_arms}
    assert states.obs["obj"].shape == (N_ENVS, env.obs_dims["obj"])
    assert states.obs["prop"].shape == (N_ENVS, env.obs_dims["prop"])
    assert states.reward.shape == (N_ENVS,) and states.success.dtype == jnp.bool_
    actions = jnp.broadcast_to(jnp.asarray(env.home_action()), (N_ENVS, env.action_dim))
    nxt = env.step_batch(states, actions)
    assert nxt.data.qpos.shape == (N_ENVS, env.mj_model.nq)
    assert int(nxt.info["step"][0]) == 1
    assert np.isfinite(np.asarray(nxt.obs["prop"])).all() and np.isfinite(np.asarray(nxt.obs["obj"])).all()
    assert not np.asarray(nxt.success).any()
    # Objects start resting on the table of their own environment (different heights per scene).
    for k, role in enumerate(env.roles):
        z = np.asarray(states.obs["obj"][:, 13 * k + 2])
        np.testing.assert_allclose(z, np.asarray(scenes.table_height) + env.object_specs[role].rest_height, atol=2e-3, err_msg=role)
    with pytest.raises(ValueError, match="action must have shape"):
        env.step_batch(states, jnp.zeros((N_ENVS, env.action_dim + 1)))


def test_determinism(task_env, task_batch):
    env = task_env
    _, scenes, _ = task_batch
    keys = jax.random.split(jax.random.PRNGKey(3), N_ENVS)
    actions = jnp.broadcast_to(jnp.asarray(env.home_action()), (N_ENVS, env.action_dim)) + 0.01
    a = env.step_batch(env.reset_batch(scenes, keys), actions)
    b = env.step_batch(env.reset_batch(scenes, keys), actions)
    np.testing.assert_array_equal(np.asarray(a.data.qpos), np.asarray(b.data.qpos))
    np.testing.assert_array_equal(np.asarray(a.reward), np.asarray(b.reward))
    # The same key gives the same scenes.
    s1 = env.sample_scenes(jax.random.PRNGKey(7), 4, envs.SceneSet(sample_poses=True))
    s2 = env.sample_scenes(jax.random.PRNGKey(7), 4, envs.SceneSet(sample_poses=True))
    assert s1 == s2


def test_mixed_scenes_in_one_batch(grasp_env):
    """Objects of one topology but different sizes, and different environments, share one batch."""
    env = grasp_env
    topo = env.object_specs["object"].topology
    same_topo = [o for o in env.catalog.filter_objects(task="grasp", role="object") if o.topology == topo]
    a, b = same_topo[0], next(o for o in same_topo if o.half_extents != same_topo[0].half_extents)
    envs_ids = [e.id for e in env.catalog.environments[:2]]
    specs = [env.scene_spec({"object": a.id}, envs_ids[0], "p00"), env.scene_spec({"object": b.id}, envs_ids[1], "p03")]
    scenes = env.make_scenes(specs)
    gid = env.mj_model.geom("object_g0").id
    sizes = np.asarray(scenes.params["geom_size"][:, gid])
    assert not np.allclose(sizes[0], sizes[1])
    states = env.reset_batch(scenes, jax.random.split(jax.random.PRNGKey(0), 2))
    z = np.asarray(states.obs["obj"][:, 2])
    np.testing.assert_allclose(z, np.asarray(scenes.table_height) + [a.rest_height, b.rest_height], atol=2e-3)


def test_seed_replay_succeeds(task_env):
    """Each task's seed demo: a full episode whose subtasks all end, and whose replay succeeds and reproduces the
    recorded observations (same float32 simulation)."""
    env = task_env
    demo = dataset.read_dataset(DEMOS_DIR / f"{env.name}_seed.hdf5", task=env.name).episodes[0]
    assert demo.actions.shape == (env.episode_steps, env.action_dim)
    ends = np.asarray(demo.subtask_end)
    assert ends.shape[:2] == (env.episode_steps, len(env.arms))
    for arm, subs in enumerate(env.subtasks):
        for k in range(len(subs)):
            assert ends[-1, arm, k] == 1, f"arm {arm} subtask {k} never ends"
    spec = env.scene_spec(dict(zip(env.roles, demo.object_ids)), demo.env_id, demo.pose_id)
    _, traj = run_actions(env, env.make_scenes([spec]), demo.actions[None], jax.random.PRNGKey(0))
    assert np.asarray(traj.success)[0, -1]
    np.testing.assert_allclose(np.asarray(traj.obs_obj[0, :50]), demo.obs["obj"][:50], atol=1e-3)
    # a second replay of the same shapes reuses the compiled unroll (the stand-in replays batch after batch)
    misses = jit_unroll.cache_info().misses
    run_actions(env, env.make_scenes([spec]), demo.actions[None], jax.random.PRNGKey(1))
    assert jit_unroll.cache_info().misses == misses


def test_pour_seed_leaves_cup_still_until_the_hand_closes():
    """The Pour seed's hand reaches its grasp without touching the cup. A seed that shoves the cup first (the first
    one moved it 35 mm with the open thumb) teaches policies a push they cannot reproduce."""
    demo = dataset.read_dataset(DEMOS_DIR / "pour_seed.hdf5", task="pour").episodes[0]
    close = int(np.argmax(demo.hand_target[:, 0, 0] > 0.3))  # first step the fingers are commanded to curl (RH56 order: pinky first)
    assert close > 0
    cup = demo.object_poses[:close, 0, :3]
    assert np.linalg.norm(cup - cup[0], axis=1).max() < 0.003


def test_friction_cone_override():
    """EnvConfig.friction_cone overrides the task's cone (for comparisons); None keeps the task's own: the Panda
    model's elliptic for Grasp, pyramidal for Pour (its seed pours by letting the cup turn in the hand)."""
    assert envs.make_cached("grasp").mj_model.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC
    assert envs.make_cached("pour").mj_model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
    assert envs.make("grasp", EnvConfig(friction_cone="pyramidal")).mj_model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
    with pytest.raises(ValueError, match="unknown friction_cone 'conic'"):
        envs.make("grasp", EnvConfig(friction_cone="conic"))


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'juggle'"):
        envs.make("juggle")


def test_unknown_object_and_environment(grasp_env):
    with pytest.raises(CatalogError, match="no_such_object"):
        envs.make("grasp", objects={"object": "no_such_object"})
    with pytest.raises(CatalogError, match="no_such_env"):
        grasp_env.scene_spec({"object": grasp_env.default_objects()["object"]}, "no_such_env", "p00")
    with pytest.raises(CatalogError, match="cannot fill role"):
        envs.make("grasp", objects={"object": "bowl_white"})


def test_replay_seed_with_another_object_refuses_one_the_task_cannot_hold(experiment_script):
    """experiments/replay_seed.py --object: the seed's motion with another catalog object; a bad id is one line."""
    script = experiment_script("replay_seed")
    with pytest.raises(SystemExit, match="cannot fill role 'object' of task 'grasp'"):
        script.main(script.Args(task="grasp", object="cup_red"))
    with pytest.raises(SystemExit, match="unknown object id 'no_such_object'"):
        script.main(script.Args(task="grasp", object="no_such_object"))


def test_wrong_action_shape(grasp_env, grasp_batch):
    _, _, states = grasp_batch
    with pytest.raises(ValueError, match="action must have shape"):
        grasp_env.step_batch(states, jnp.zeros((N_ENVS, grasp_env.action_dim + 1)))
    with pytest.raises(ValueError, match="actions must have shape"):
        run_actions(grasp_env, grasp_batch[1], np.zeros((N_ENVS, 5, 3)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="zero-step horizon"):
        run_actions(grasp_env, grasp_batch[1], np.zeros((N_ENVS, 0, grasp_env.action_dim)), jax.random.PRNGKey(0))


def test_nan_is_reported(grasp_env, grasp_batch):
    _, _, states = grasp_batch
    bad = states.replace(metrics={**states.metrics, "nan": states.metrics["nan"].at[1].set(True)})
    with pytest.raises(envs.SimulationError, match=r"env\(s\) \[1\]"):
        grasp_env.check_finite(bad)


def test_warp_impl_missing_gives_clear_error():
    try:
        import mujoco_warp  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs MuJoCo Warp"):
            envs.make("grasp", envs.EnvConfig(impl="warp"))
    with pytest.raises(ValueError, match="unknown MJX impl"):
        envs.make("grasp", envs.EnvConfig(impl="cuda"))


@pytest.mark.parametrize("batch", [3, 8, 10])
def test_chunked_vmap_matches_vmap_for_any_batch(batch):
    """`batched` maps chunks of `cpu_vmap_chunk` envs; batches that are not a multiple are padded, not
    sent to a full-width vmap (the width that hangs XLA:CPU), and give the same results as a plain vmap."""
    from types import SimpleNamespace

    from envs.base import TaskEnv

    fake_env = SimpleNamespace(cpu_vmap_chunk=4, config=envs.EnvConfig())
    fn = lambda x, y: {"sum": x.sum() + y, "x2": 2 * x}  # noqa: E731
    xs, ys = jnp.arange(batch * 3.0).reshape(batch, 3), jnp.arange(batch, dtype=jnp.float32)
    out = jax.jit(TaskEnv.batched(fake_env, fn))(xs, ys)
    ref = jax.vmap(fn)(xs, ys)
    assert out["sum"].shape == (batch,) and out["x2"].shape == (batch, 3)
    np.testing.assert_array_equal(out["sum"], ref["sum"])
    np.testing.assert_array_equal(out["x2"], ref["x2"])
