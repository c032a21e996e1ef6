"""Batched, jitted execution of generation attempts in an MJX task: one `lax.scan` over time, `vmap` over
attempts (`env.batched`: in chunks of `env.cpu_vmap_chunk` on the CPU backend for the bimanual tasks),
`env.reset` / `env.step`, recorded exactly like `dexfly.rollout.run_actions`."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from dexfly.augment.schedule import GenStatic, Plan, gen_step, init_carry
from dexfly.rollout import Trajectory, _record
from envs.base import Scene, TaskEnv


def _one_attempt(env: TaskEnv, static: GenStatic, scene: Scene, key, plan: Plan):
    state = env.reset(scene, key)

    def body(carry, t):
        s, g = carry
        before = _record(env, s)
        g, action, signal = gen_step(static, plan, g, env.object_pose(s.data), t)
        s = env.step(s, action)
        rec = {**before, "reward": s.reward, "success": s.success, "nan": s.metrics["nan"]}
        return (s, g), (rec, action, signal)

    (final, _), (rec, actions, signals) = jax.lax.scan(body, (state, init_carry(plan)), jnp.arange(env.episode_steps))
    return final, Trajectory(**rec), actions, signals


@functools.lru_cache(maxsize=16)
def _jitted(env: TaskEnv, static: GenStatic):
    # env.batched: vmap, or on the CPU backend for the bimanual tasks a lax.map over vmapped chunks of
    # env.cpu_vmap_chunk attempts (XLA:CPU hangs with >= 32 bimanual envs in one vmap)
    return jax.jit(env.batched(functools.partial(_one_attempt, env, static)))


_COMPILED: dict = {}


def compiled_executor(env: TaskEnv, static: GenStatic, scenes: Scene, keys, plans: Plan):
    """AOT-compiled executor for these shapes (cached); returns (fn, compile seconds (0 if cached))."""
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), (scenes, keys, plans))
    cache_key = (id(env), static, str(jax.tree.structure(shapes)), str(jax.tree.leaves(shapes)))
    if cache_key in _COMPILED:
        return _COMPILED[cache_key], 0.0
    t0 = time.perf_counter()
    fn = _jitted(env, static).lower(scenes, keys, plans).compile()
    _COMPILED[cache_key] = fn
    return fn, time.perf_counter() - t0


def execute(env: TaskEnv, static: GenStatic, scenes: Scene, keys, plans: Plan):
    """Run a batch of attempts -> (final State, Trajectory [B, T], actions [B, T, A], signals [B, T, n_arms, n_sub],
    compile seconds)."""
    fn, compile_s = compiled_executor(env, static, scenes, keys, plans)
    final, traj, actions, signals = fn(scenes, keys, plans)
    return final, traj, actions, signals, compile_s
