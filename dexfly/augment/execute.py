"""Batched, jitted execution of generation attempts in an MJX task, on the one unroll (`dexfly.unroll`): the
generator (`schedule.gen_step`, vmapped over attempts) is the unroll's per-step hook, and every step is
recorded by `dexfly.rollout.record_dataset_step`, exactly as replay records it. With a device mesh
(`dexfly.devices`), the attempts are split over its devices."""

from __future__ import annotations

import functools
import time

import jax
from jax.sharding import Mesh

from dexfly import devices
from dexfly.augment.schedule import GenStatic, Plan, executed_action, gen_step, init_carry
from dexfly.rollout import Trajectory, record_dataset_step, trajectory_from_records
from dexfly.unroll import Step, unroll
from envs.base import Scene, State, TaskEnv


def _gen_hook(env: TaskEnv, static: GenStatic, plans: Plan, carry, step: Step, key):
    """Unroll hook: every attempt's generator step on the live object poses -> (carry, executed action [B, A],
    (signals, recorded action [B, A])); the two actions differ only with DART perturbation (`GenStatic.dart_noise`)."""
    object_pose = jax.vmap(env.object_pose)(step.state.data)
    carry, action, signals = jax.vmap(gen_step, in_axes=(None, 0, 0, 0, None))(static, plans, carry, object_pose, step.t)
    return carry, jax.vmap(executed_action)(action, carry), (signals, action)


def _record(env: TaskEnv, step: Step, executed, after: State, extras):
    signals, action = extras
    return {**record_dataset_step(env, step, executed, after, None), "action": action, "signals": signals}


def _run(env: TaskEnv, static: GenStatic, mesh: Mesh | None, scenes: Scene, keys, plans: Plan):
    with devices.use_mesh(mesh):  # MuJoCo Warp envs map their calls over the devices (`TaskEnv.batched`)
        state = env.batched(env.reset)(scenes, keys)
        final, rec = unroll(env, None, state, keys[0], num_steps=env.episode_steps, hook=functools.partial(_gen_hook, env, static),
                            hook_params=plans, hook_carry=jax.vmap(init_carry)(plans), record=functools.partial(_record, env))
    actions, signals = rec.pop("action"), rec.pop("signals")
    swap = functools.partial(jax.numpy.swapaxes, axis1=0, axis2=1)
    return final.state, trajectory_from_records(rec), swap(actions), swap(signals)


_COMPILED: dict = {}


def compiled_executor(env: TaskEnv, static: GenStatic, scenes: Scene, keys, plans: Plan, mesh: Mesh | None = None):
    """AOT-compiled executor for these shapes and mesh (cached); returns (fn, compile seconds (0 if cached)).
    With a mesh, the arguments must already be split over it (`execute` does that)."""
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), (scenes, keys, plans))
    cache_key = (id(env), static, mesh, str(jax.tree.structure(shapes)), str(jax.tree.leaves(shapes)))
    if cache_key in _COMPILED:
        return _COMPILED[cache_key], 0.0
    t0 = time.perf_counter()
    fn = jax.jit(functools.partial(_run, env, static, mesh)).lower(scenes, keys, plans).compile()
    _COMPILED[cache_key] = fn
    return fn, time.perf_counter() - t0


def execute(env: TaskEnv, static: GenStatic, scenes: Scene, keys, plans: Plan,
            mesh: Mesh | None = None) -> tuple[State, Trajectory, jax.Array, jax.Array, float]:
    """Run a batch of attempts -> (final State, Trajectory [B, T], actions [B, T, A], signals [B, T, n_arms, n_sub],
    compile seconds). With a `mesh`, B must be a multiple of its device count."""
    scenes, keys, plans = devices.shard_batch((scenes, keys, plans), mesh)
    fn, compile_s = compiled_executor(env, static, scenes, keys, plans, mesh)
    final, traj, actions, signals = devices.gather(fn(scenes, keys, plans))
    return final, traj, actions, signals, compile_s
