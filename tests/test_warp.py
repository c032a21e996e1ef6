"""MuJoCo Warp (`EnvConfig(impl="warp")`), the fast path on NVIDIA GPUs, checked on the CPU (Warp runs there too):
its data are sized so that no contact is dropped, and it steps a batch as MJX-jax does."""

import dexfly  # noqa: F401  (sets XLA flags before jax is imported)
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from dexfly import bench

pytest.importorskip("mujoco_warp")

BATCH = 16  # the resting objects alone make more contacts than Warp's default buffer (48 for the whole batch)
STEPS = 10


@pytest.fixture(scope="module")
def stepped():
    """The same 16 scenes reset and stepped 10 control steps (arm at home, objects resting) under both impls,
    in one jitted scan each -> {impl: (env, final State)}."""
    out = {}
    for impl in ("jax", "warp"):
        env = envs.make("grasp", envs.EnvConfig(impl=impl))
        scenes = env.make_scenes(env.sample_scenes(jax.random.PRNGKey(0), BATCH, envs.SceneSet(sample_poses=True)))
        action = jnp.broadcast_to(jnp.asarray(env.home_action()), (BATCH, env.action_dim))

        @jax.jit
        def run(scenes, keys, env=env, action=action):
            start = env.batched(env.reset)(scenes, keys)
            return jax.lax.scan(lambda s, _: (env.batched(env.step)(s, action), None), start, None, length=STEPS)[0]

        out[impl] = (env, run(scenes, jax.random.split(jax.random.PRNGKey(1), BATCH)))
    return out


def test_warp_contact_buffer_holds_every_contact(stepped):
    env, state = stepped["warp"]
    nacon = int(np.asarray(state.data._impl.nacon).reshape(-1)[0])
    naconmax = int(state.data._impl.naconmax)
    assert naconmax == BATCH * env.warp_contacts_per_world
    assert 4 * BATCH <= nacon < naconmax  # every resting object touches the table; nothing overflowed


def test_warp_steps_as_mjx_jax_does(stepped):
    """Objects stay on the table and the whole state agrees with MJX-jax's (both float32) to a millimetre."""
    (env, jx), (_, wp) = stepped["jax"], stepped["warp"]
    adr = env.obj_qpos_adr[0]
    z = np.asarray(wp.data.qpos[:, adr + 2])
    rest = np.asarray(jx.data.qpos[:, adr + 2])
    np.testing.assert_allclose(z, rest, atol=1e-3)
    np.testing.assert_allclose(np.asarray(wp.data.qpos), np.asarray(jx.data.qpos), atol=1e-3)
    assert np.isfinite(np.asarray(wp.reward)).all()


def test_warp_batches_are_never_chunked(stepped):
    """The CPU's chunked vmap (`cpu_vmap_chunk`) works around MJX-jax's solver loops; one Warp call steps the batch."""
    env, _ = stepped["warp"]
    assert bench.batching_path(env, 4 * env.cpu_vmap_chunk) == "vmap"


def test_the_flywheel_simulates_with_the_runs_impl(tmp_path, monkeypatch):
    """`Flywheel(impl="warp")` (flywheel.py --impl warp): the warm-up's A_EP runs on Warp envs, and the run folder
    records the impl."""
    import json

    from dexfly import dataset
    from dexfly.flywheel.loop import Flywheel

    built = []
    make = envs.make
    monkeypatch.setattr(envs, "make", lambda task, config=envs.EnvConfig(), objects=None: built.append(config.impl) or make(task, config, objects))
    Flywheel("grasp", "tiny", tmp_path / "run", impl="warp", stop_after="warmup", video=False, progress=False, log=lambda *_: None).run()
    assert built and set(built) == {"warp"}
    assert json.loads((tmp_path / "run" / "flywheel.json").read_text())["impl"] == "warp"
    assert len(dataset.read_dataset(tmp_path / "run" / "d1.hdf5", task="grasp").episodes) == 4  # the tiny preset's D_1


@pytest.mark.parametrize("task", ["handover", "pour"])
def test_contact_reading_tasks_step_on_warp(task):
    """Handover's success and Pour's and Handover's subtask detectors read contacts (`TaskEnv.touching`), which Warp
    keeps in one buffer for all the worlds of a call: each env reads its own world's (this crashed on Warp before)."""
    env = envs.make(task, envs.EnvConfig(impl="warp"))
    scenes = env.make_scenes(env.sample_scenes(jax.random.PRNGKey(0), 2))
    state = env.reset_batch(scenes, jax.random.split(jax.random.PRNGKey(1), 2))
    state = env.step_batch(state, jnp.broadcast_to(jnp.asarray(env.home_action()), (2, env.action_dim)))
    assert np.isfinite(np.asarray(state.reward)).all()
    assert not np.asarray(state.info["subtask_done"]).any()  # at home nothing is held
