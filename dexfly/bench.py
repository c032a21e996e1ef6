"""Throughput measurements of every stage of the loop, shared by experiments/benchmark.py and the per-stage scripts.

Each measurement compiles its jitted function with a first call (timed: `compile_s` is that call less one
steady-state call) and then times `repeats` further calls (`run_s`, the fastest; `mean_s`). Results are plain
dicts so that the scripts can print and serialise them.

    env_throughput(env, batch=256, steps=50)          # MJX physics and control steps/s
    c_mujoco_throughput(env, seconds=3)               # sequential C `mj_step` on the same model
    augment_throughput("grasp", batch_size=64)        # A_EP attempts and successful demos/s
    diffusion_train_throughput(config, obs_dim, action_dim) / diffusion_sample_throughput(...)
    residual_throughput(env, base, num_envs=32)       # residual PPO: physics, base, combined rollout, whole update

With a device mesh (`dexfly.devices`), batches are split over its devices as the stages do in real runs.
This module sits above envs, dexfly.augment and dexfly.policies in the layering; nothing below imports it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jax.sharding import Mesh
from mujoco import mjx

import envs
from dexfly import devices
from dexfly.cpu_sim import CpuEnv


@dataclass(frozen=True)
class Timing:
    """One measured function: the first (compiling) call, then `repeats` steady-state calls."""

    first_s: float
    run_s: float  # fastest steady-state call
    mean_s: float

    @property
    def compile_s(self) -> float:
        return max(self.first_s - self.run_s, 0.0)

    def as_dict(self) -> dict:
        return {"first_s": self.first_s, "compile_s": self.compile_s, "run_s": self.run_s, "mean_s": self.mean_s}


def time_call(fn, *args, repeats: int = 1) -> Timing:
    """Time `fn(*args)` (blocking on its result): one compiling call, then `repeats` (>= 1) timed ones."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return Timing(first, min(times), float(np.mean(times)))


def device_info() -> dict:
    """The backend and devices this process runs on."""
    local = jax.local_devices()
    return {"platform": jax.default_backend(), "device_kind": local[0].device_kind, "local_devices": len(local),
            "global_devices": jax.device_count(), "processes": jax.process_count(), "devices": [str(d) for d in local]}


def batching_path(env, batch: int) -> str:
    """How `env.batched` maps `batch` envs on this backend, read from the traced computation (not from the
    env's settings): 'vmap', or 'lax.map chunks of N' where the CPU-only `cpu_vmap_chunk` workaround applies."""
    jaxpr = jax.make_jaxpr(env.batched(lambda x: x + 1))(jax.ShapeDtypeStruct((batch,), jnp.float32))
    if any(eqn.primitive.name == "scan" for eqn in jaxpr.jaxpr.eqns):
        return f"lax.map chunks of {env.cpu_vmap_chunk}"
    return "vmap"


# ---------------------------------------------------------------- env steps
def env_throughput(env, batch: int, steps: int = 50, repeats: int = 1, mesh: Mesh | None = None) -> dict:
    """Batched MJX on the env's default scene: physics steps/s (a jitted loop of `mjx.step` with the controls
    held, every env counted) and control steps/s (the full env step: IK + `n_substeps` physics steps)."""
    devices.check_batch(batch, mesh, "batch")
    scenes = env.make_scenes([env.default_scene()] * batch)
    with devices.use_mesh(mesh):  # traced in the mesh: MuJoCo Warp envs map their calls over the devices
        states = jax.jit(env.batched(env.reset))(*devices.shard_batch((scenes, jax.random.split(jax.random.PRNGKey(0), batch)), mesh))
        action = devices.shard_batch(jnp.broadcast_to(jnp.asarray(env.home_action()), (batch, env.action_dim)), mesh)
        n_phys = steps * env.n_substeps

        @jax.jit
        def physics(states):
            def one(scene, d):
                m = env.model_for(scene)
                return jax.lax.fori_loop(0, n_phys, lambda _, dd: mjx.step(m, dd), d)

            return env.batched(one)(states.info["scene"], states.data).qpos

        @jax.jit
        def control(states, action):
            def body(s, _):
                return env.batched(env.step)(s, action), None

            return jax.lax.scan(body, states, None, length=steps)[0].data.qpos

        phys = time_call(physics, states, repeats=repeats)
        ctrl = time_call(control, states, action, repeats=repeats)
    return {"batch": batch, "path": batching_path(env, batch // devices.size(mesh)), "physics": phys.as_dict(), "control": ctrl.as_dict(),
            "physics_sps": batch * n_phys / phys.run_s, "control_sps": batch * steps / ctrl.run_s,
            "compile_s": phys.compile_s + ctrl.compile_s}


def c_mujoco_throughput(env, seconds: float = 3.0) -> dict:
    """Sequential C MuJoCo on the same model (`dexfly.cpu_sim.CpuEnv`, one env, one thread): `mj_step`s/s and
    the C twin's full control steps/s."""
    cpu = CpuEnv(env)
    cpu.reset(env.default_scene())
    m, d = cpu.model, cpu.data
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            mujoco.mj_step(m, d)
        n += 100
    physics = n / (time.perf_counter() - t0)
    action = env.home_action()
    cpu.reset(env.default_scene())
    cpu.step(action)  # compiles the twin's jitted reward/success terms: not part of the steady state
    cpu.reset(env.default_scene())
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        cpu.step(action)
        n += 1
    return {"physics_sps": physics, "control_sps": n / (time.perf_counter() - t0)}


# ---------------------------------------------------------------- A_EP augmentation
def _augment_setup(task: str, num_poses: int, num_env_ids: int, env_config):
    from dexfly import dataset
    from dexfly.augment import AugmentConfig
    from dexfly.augment.config import with_counts
    from dexfly.paths import DEMOS_DIR

    seed_ep = dataset.read_dataset(DEMOS_DIR / f"{task}_seed.hdf5", task=task).episodes[0]
    caug = with_counts(AugmentConfig(env=env_config or envs.EnvConfig()), task, envs.episode_objects(seed_ep),
                       num_poses=num_poses, num_env_ids=num_env_ids)
    return seed_ep, caug


def augment_throughput(task: str, batch_size: int, num_batches: int = 1, *, num_poses: int = 15, num_env_ids: int = 3, seed: int = 0,
                       env_config=None, mesh: Mesh | None = None) -> dict:
    """`augment` from the task's seed demo over C_aug (num_poses x num_env_ids), `num_batches` batches of
    `batch_size` attempts: attempts/s and successful demos/s of execution (compilation reported apart)."""
    from dexfly.augment import augment

    seed_ep, caug = _augment_setup(task, num_poses, num_env_ids, env_config)
    n = batch_size * num_batches
    t0 = time.perf_counter()
    _, st = augment([seed_ep], task, caug, num_wanted=n, batch_size=batch_size, max_attempts=n, seed=seed, progress=False, mesh=mesh)
    wall = time.perf_counter() - t0
    return {"batch": batch_size, "attempts": st.attempts, "successes": st.successes, "success_rate": st.success_rate,
            "compile_s": st.compile_seconds, "run_s": st.run_seconds, "wall_s": wall, "batches": st.batches,
            "attempts_per_s": st.attempts / st.run_seconds, "demos_per_s": st.demos_per_second}


def augment_c_mujoco(task: str, attempts: int, *, stride: int = 1, num_poses: int = 15, num_env_ids: int = 3, seed: int = 0,
                     env_config=None) -> dict:
    """The same generator, one attempt at a time, executed in C MuJoCo (MimicGen-style): the per-step generator is
    jitted once for a single attempt and reads the live object pose of `CpuEnv` at every step. Attempts 0,
    stride, 2 * stride, ... (spread over C_aug like a batched run's first attempts)."""
    from dexfly.augment import gen_step
    from dexfly.augment.generate import plan_attempt, setup
    from dexfly.augment.schedule import init_carry
    from dexfly.augment.sources import stack_plans

    seed_ep, caug = _augment_setup(task, num_poses, num_env_ids, env_config)
    ctx = setup([seed_ep], task, caug, seed)
    env = ctx.cache.get(ctx.topos[0], ctx.configs[0].object_ids)
    cpu = CpuEnv(env)
    step_fn = jax.jit(gen_step, static_argnums=0)
    _, plan_np, _ = plan_attempt(ctx, env, 0)
    plan = jax.tree.map(lambda x: x[0], stack_plans([plan_np]))
    t0 = time.perf_counter()
    jax.block_until_ready(step_fn(ctx.static, plan, init_carry(plan), jnp.asarray(seed_ep.object_poses[0]), jnp.asarray(0)))
    compile_s = time.perf_counter() - t0
    successes, run_s = 0, 0.0
    for j in range(attempts):
        spec, plan_np, _ = plan_attempt(ctx, env, j * stride)
        plan = jax.tree.map(lambda x: x[0], stack_plans([plan_np]))
        t0 = time.perf_counter()
        cpu.reset(spec)
        carry = init_carry(plan)
        success = False
        for t in range(env.episode_steps):
            carry, action, _ = step_fn(ctx.static, plan, carry, jnp.asarray(cpu.object_pose(), jnp.float32), jnp.asarray(t))
            _, success, _ = cpu.step(np.asarray(action))
        run_s += time.perf_counter() - t0
        successes += int(success)
    return {"attempts": attempts, "successes": successes, "success_rate": successes / max(attempts, 1), "compile_s": compile_s, "run_s": run_s,
            "attempts_per_s": attempts / run_s if run_s else float("nan"), "demos_per_s": successes / run_s if run_s else float("nan"),
            "episode_steps": env.episode_steps}


# ---------------------------------------------------------------- diffusion policy
def task_diffusion_config(env, config=None):
    """The diffusion config a task's training would use (quaternion features from the env's layout), and the
    task's raw observation and action dimensions."""
    from dexfly.policies.diffusion.config import DiffusionConfig

    config = (config or DiffusionConfig()).replace(obs_quat_at=env.obs_layout.quaternion_slots())
    return config, int(sum(env.obs_dims.values())), int(env.action_dim)


def random_diffusion_policy(config, obs_dim: int, action_dim: int, seed: int = 0):
    """An untrained DiffusionPolicy of the given sizes (timing does not depend on the weights)."""
    from dexfly.policies.diffusion.normalizer import Normalizer
    from dexfly.policies.diffusion.policy import DiffusionPolicy
    from dexfly.policies.diffusion.state import init_train_state

    rng = np.random.default_rng(seed)
    # the normaliser works on the network's observation features (quaternions as rot6d, ...): config.obs_extra_dims more
    norm = Normalizer.fit(rng.normal(size=(100, obs_dim + config.obs_extra_dims)), rng.normal(size=(100, action_dim)))
    return DiffusionPolicy.from_state(init_train_state(config, norm), config)


def diffusion_train_throughput(config, obs_dim: int, action_dim: int, steps: int = 10, repeats: int = 1, mesh: Mesh | None = None) -> dict:
    """Training samples/s at `config.batch_size`, `steps` optimizer steps per jitted scan, on synthetic data
    (20 episodes x 200 steps)."""
    from dexfly.policies.diffusion.data import config_window_data
    from dexfly.policies.diffusion.state import init_train_state
    from dexfly.policies.diffusion.train import num_parameters, train_steps

    devices.check_batch(config.batch_size, mesh, "batch_size")
    rng = np.random.default_rng(0)
    eps = [{"obs": rng.normal(size=(200, obs_dim)).astype(np.float32),
            "actions": rng.normal(size=(200, action_dim)).astype(np.float32),
            "half_extents": rng.uniform(0.02, 0.05, size=(config.obs_geometry, 3)).astype(np.float32)} for _ in range(20)]
    data, norm = config_window_data(eps, config)
    state = init_train_state(config, norm)
    params = num_parameters(state.params)
    state, data = devices.replicate((state, data), mesh)
    t = time_call(lambda: train_steps(state, data, config, steps, mesh)[1], repeats=repeats)
    return {"batch": config.batch_size, "params": params, **t.as_dict(), "step_ms": 1e3 * t.run_s / steps,
            "samples_per_s": config.batch_size * steps / t.run_s, "steps_per_s": steps / t.run_s}


def diffusion_sample_throughput(config, obs_dim: int, action_dim: int, batch: int, repeats: int = 1, mesh: Mesh | None = None) -> dict:
    """DDIM action chunks/s for a batch of observation histories (`config.num_inference_steps` steps)."""
    from dexfly.policies.diffusion.policy import sample_actions

    devices.check_batch(batch, mesh, "batch")
    policy = devices.replicate(random_diffusion_policy(config, obs_dim, action_dim), mesh)
    rng = np.random.default_rng(0)
    obs = devices.shard_batch(jnp.asarray(rng.normal(size=(batch, config.obs_horizon, obs_dim)), jnp.float32), mesh)
    key = jax.random.PRNGKey(0)
    t = time_call(lambda: sample_actions(policy, obs, key), repeats=repeats)
    return {"batch": batch, **t.as_dict(), "call_ms": 1e3 * t.run_s, "chunks_per_s": batch / t.run_s,
            "ddim_steps": config.num_inference_steps}


# ---------------------------------------------------------------- residual PPO
RESIDUAL_PARTS = ("physics", "base", "combined", "update")


def residual_throughput(env, base, num_envs: int, *, parts: tuple[str, ...] = RESIDUAL_PARTS, repeats: int = 1, object_id: str | None = None,
                        mesh: Mesh | None = None) -> dict:
    """Residual PPO on `env` with the frozen diffusion `base`: `num_envs` envs, one full episode each. Times any of
      physics   the unroll without a policy, replaying the actions the base takes in `base` (the same contacts, so
                the same solver work: a constant action that touches nothing costs ~40% less per step),
      base      the unroll with the base sampling a chunk every action_horizon steps,
      combined  the same with the residual hook (sampled corrections on every env),
      update    one whole PPO update (the combined rollout, statistics, epochs of minibatches);
    returns their Timings and, with `update`, env steps/s of the whole update."""
    from dexfly.policies.residual import ResidualConfig, ResidualSpec
    from dexfly.policies.residual import train as rt
    from dexfly.unroll import unroll

    unknown = set(parts) - set(RESIDUAL_PARTS)
    if unknown:
        raise ValueError(f"unknown residual parts {sorted(unknown)}; choose from {RESIDUAL_PARTS}")
    devices.check_batch(num_envs, mesh, "num_envs")
    n, T = num_envs, env.episode_steps
    config = ResidualConfig(num_envs=n, explore_steps=1, num_minibatches=min(4, n))
    spec = ResidualSpec.of_env(env)
    state = rt.init_state(config, spec)
    objects = {role: (obj.id,) for role, obj in env.object_specs.items()}
    if object_id is not None:
        objects[env.roles[0]] = (object_id,)
    pool = env.make_scenes(env.sample_scenes(jax.random.PRNGKey(0), n, envs.SceneSet(objects=objects, sample_poses=True)))
    with devices.use_mesh(mesh):  # traced in the mesh: MuJoCo Warp envs map their calls over the devices
        # Reset from split scenes rather than splitting states: MuJoCo Warp's data holds buffers without an env axis.
        start = jax.jit(env.batched(env.reset))(*devices.shard_batch((pool, jax.random.split(jax.random.PRNGKey(1), n)), mesh))
        record = lambda step, action, after, extras: after.success  # noqa: E731
        key = jax.random.PRNGKey(2)
        timings = {}
        if "base" in parts or "physics" in parts:
            record_action = lambda step, action, after, extras: action  # noqa: E731
            base_fn = jax.jit(lambda s, k: unroll(env, base, s, k, num_steps=T, record=record_action)[1])
            if "base" in parts:
                timings["base"] = time_call(base_fn, start, key, repeats=repeats)
        if "physics" in parts:
            actions = base_fn(start, key)  # [T, B, A] the base's own actions (deterministic: the same as the timed calls')
            hook = functools.partial(_replay_action, actions)
            fn = jax.jit(lambda s, k: unroll(env, None, s, k, num_steps=T, hook=hook, record=record)[1])
            timings["physics"] = time_call(fn, start, key, repeats=repeats)
        if "combined" in parts:
            hook = functools.partial(rt.residual_hook, spec, config, False)
            params = rt.HookParams(state.params.policy, state.normalizer, True)
            fn = jax.jit(lambda s, k: unroll(env, base, s, k, num_steps=T, hook=hook, hook_params=params, record=record)[1])
            timings["combined"] = time_call(fn, start, key, repeats=repeats)
    out = {"batch": n, "episode_steps": T, "env_steps": n * T, "path": batching_path(env, n // devices.size(mesh)),
           "ddim_steps": base.config.num_inference_steps, "parts": {k: v.as_dict() for k, v in timings.items()}}
    if "update" in parts:
        update = rt.make_update(config, spec, (env,), base, mesh)
        update_state = state.replace(env_steps=jnp.asarray(1, jnp.int32))  # epsilon = 1: every env runs the residual
        update_state, pools = devices.replicate((update_state, (pool,)), mesh)
        timings["update"] = time_call(update, update_state, pools, key, repeats=repeats)
        out["parts"]["update"] = timings["update"].as_dict()
        out["env_steps_per_s"] = n * T / timings["update"].run_s
    return out


def _replay_action(actions, params, carry, step, key):
    return carry, actions[step.t], None


__all__ = ["RESIDUAL_PARTS", "Timing", "augment_c_mujoco", "augment_throughput", "batching_path", "c_mujoco_throughput", "device_info",
           "diffusion_sample_throughput", "diffusion_train_throughput", "env_throughput", "random_diffusion_policy", "residual_throughput",
           "task_diffusion_config", "time_call"]
