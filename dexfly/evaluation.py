"""Closed-loop evaluation of a chunked policy in the batched MJX tasks.

One jitted function rolls a policy and the env out over a batch of scenes: an outer `lax.scan` over action
chunks (the policy samples a chunk from the observation history, the first `action_horizon` actions are
executed), an inner scan over those env steps, every env stepped with `vmap`. Episode success is the
task's success after the last step (the envs' documented rule). `evaluate` repeats this over several seeds
and reports the mean and standard deviation of the success rate (the paper reports 5 runs).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import SceneSpec, TaskEnv, obs_vector


class ChunkPolicy(Protocol):
    """What a policy must offer: `sample(obs_history [B, H, D], key) -> actions [B, P, A]`."""

    obs_horizon: int
    action_horizon: int
    obs_dim: int
    action_dim: int

    def sample(self, obs_history: jax.Array, key: jax.Array) -> jax.Array: ...


# Layout of `obs_vector`: obs["obj"] per role [pos 3, quat 4, vel 6], then obs["prop"] per arm
# [joint qpos 7, joint qvel 7, hand qpos 6, ee pos 3, ee quat 4].
_OBJ_STRIDE, _OBJ_QUAT = 13, 3
_ARM_STRIDE, _EE_POS, _EE_QUAT = 27, 20, 23


def _obs_starts(env: TaskEnv) -> tuple[list[int], list[int]]:
    """Start index of each object's block and of each arm's block in `obs_vector` (ValueError on another layout)."""
    n_obj, n_arms = len(env.roles), len(env.arms)
    if env.obs_dims != {"obj": _OBJ_STRIDE * n_obj, "prop": _ARM_STRIDE * n_arms}:
        raise ValueError(f"{env.name}: unexpected observation layout {env.obs_dims}")
    return [_OBJ_STRIDE * r for r in range(n_obj)], [_OBJ_STRIDE * n_obj + _ARM_STRIDE * a for a in range(n_arms)]


def obs_quaternion_slots(env: TaskEnv) -> tuple[int, ...]:
    """Start indices of the unit quaternions (w, x, y, z) in `obs_vector` of the env's observation: each
    object's pose quaternion and each arm's end-effector quaternion. Their sign is arbitrary (the ee quaternion
    flips between steps), so policies should not read the raw components."""
    objects, arms = _obs_starts(env)
    return tuple(o + _OBJ_QUAT for o in objects) + tuple(a + _EE_QUAT for a in arms)


def obs_relative_position_pairs(env: TaskEnv) -> tuple[tuple[int, int], ...]:
    """(ee position start, object position start) in `obs_vector` for every (arm, object role): the policy's
    relative-position features (end effector minus object, world frame)."""
    objects, arms = _obs_starts(env)
    return tuple((a + _EE_POS, o) for a in arms for o in objects)


@dataclass(frozen=True)
class EvalResult:
    success_rate_mean: float
    success_rate_std: float
    per_seed: tuple[float, ...]
    per_scene: np.ndarray  # [n_seeds, n_scenes] bool
    qpos: np.ndarray | None  # [T, n_scenes, nq] of the first seed (for videos), if recorded


def check_policy_fits(env: TaskEnv, policy: ChunkPolicy, task: str | None = None) -> None:
    """ValueError when the policy was trained for another task or observation/action layout."""
    if task is not None and task != env.name:
        raise ValueError(f"policy was trained for task {task!r}, but the env is {env.name!r}")
    obs_dim = sum(env.obs_dims.values())
    if policy.obs_dim != obs_dim or policy.action_dim != env.action_dim:
        raise ValueError(
            f"policy expects obs_dim={policy.obs_dim}, action_dim={policy.action_dim}; task {env.name!r} has "
            f"obs_dim={obs_dim}, action_dim={env.action_dim} (a policy of another task?)"
        )


@functools.lru_cache(maxsize=16)
def _rollout_fn(env: TaskEnv, num_chunks: int, record_qpos: bool):
    def rollout(policy, scenes, key):
        batch = scenes.object_pose.shape[0]
        k_reset, k_policy = jax.random.split(key)
        states = env.batched(env.reset)(scenes, jax.random.split(k_reset, batch))
        history = jnp.repeat(obs_vector(states.obs)[:, None, :], policy.obs_horizon, axis=1)

        def chunk_step(carry, k):
            states, history = carry
            chunk = policy.sample(history, k)[:, : policy.action_horizon]  # [B, Ha, A]

            def env_step(c, action):
                s, h = c
                s = env.batched(env.step)(s, action)
                h = jnp.concatenate([h[:, 1:], obs_vector(s.obs)[:, None]], axis=1)
                return (s, h), (s.success, s.data.qpos if record_qpos else s.success)

            (states, history), (success, qpos) = jax.lax.scan(env_step, (states, history), jnp.swapaxes(chunk, 0, 1))
            return (states, history), (success, qpos)

        (states, _), (success, qpos) = jax.lax.scan(chunk_step, (states, history), jax.random.split(k_policy, num_chunks))
        success = success.reshape(-1, batch)  # [T, B]
        qpos = qpos.reshape(-1, batch, *qpos.shape[3:])
        return states.metrics["nan"], success, qpos

    return jax.jit(rollout)


def rollout_policy(env: TaskEnv, policy: ChunkPolicy, scenes, key, *, num_steps: int | None = None, record_qpos: bool = False):
    """Run the policy closed loop for `num_steps` env steps (default: the task's episode) in every scene.

    Returns (success [T, B] per step, qpos [T, B, nq] or None). Raises on NaN in the simulation.
    """
    num_steps = env.episode_steps if num_steps is None else num_steps
    if num_steps <= 0:
        raise ValueError(f"evaluation horizon must be positive, got num_steps={num_steps}")
    check_policy_fits(env, policy)
    num_chunks = math.ceil(num_steps / policy.action_horizon)
    nan, success, qpos = _rollout_fn(env, num_chunks, record_qpos)(policy, scenes, key)
    bad = np.flatnonzero(np.asarray(nan))
    if bad.size:
        raise RuntimeError(f"{env.name}: simulation produced NaN/inf in env(s) {bad.tolist()[:20]} during policy evaluation")
    success = np.asarray(success)[:num_steps]
    return success, (np.asarray(qpos)[:num_steps] if record_qpos else None)


def evaluate(
    env: TaskEnv,
    policy: ChunkPolicy,
    specs: list[SceneSpec],
    *,
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    num_steps: int | None = None,
    task: str | None = None,
    record_qpos: bool = False,
) -> EvalResult:
    """Success rate over the scenes, mean and std over seeds (each seed re-samples the policy's noise)."""
    if not specs:
        raise ValueError("no evaluation scenes")
    check_policy_fits(env, policy, task)
    scenes = env.make_scenes(specs)
    rates, per_scene, first_qpos = [], [], None
    for i, seed in enumerate(seeds):
        success, qpos = rollout_policy(env, policy, scenes, jax.random.PRNGKey(seed), num_steps=num_steps, record_qpos=record_qpos and i == 0)
        final = success[-1]
        per_scene.append(final)
        rates.append(float(final.mean()))
        if qpos is not None:
            first_qpos = qpos
    return EvalResult(float(np.mean(rates)), float(np.std(rates)), tuple(rates), np.stack(per_scene), first_qpos)


__all__ = ["ChunkPolicy", "EvalResult", "check_policy_fits", "evaluate", "obs_quaternion_slots", "obs_relative_position_pairs", "obs_vector",
           "rollout_policy"]
