"""Open-loop replay of action sequences in a batched task env, and the per-step record datasets store.

`run_actions` replays actions [B, T, A] on the one unroll (`dexfly.unroll`, with a hook that returns the
recorded action of each step); `record_dataset_step` is the recorder every stage that writes datasets uses
(observations, simulator states, object and end-effector poses, rewards, success).
Recording convention: entry t holds the observation/state *before* action t and the reward/success
*after* it.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dexfly import geometry, layout
from dexfly.unroll import Step, jit_unroll
from envs.base import Scene, SceneSpec, State, TaskEnv


@struct.dataclass
class Trajectory:
    """Per-step records, leading axes [B, T]."""

    obs_obj: jax.Array
    obs_prop: jax.Array
    states: jax.Array  # [B, T, nq + nv] flattened qpos, qvel
    object_pose: jax.Array  # [B, T, n_objects, 7]
    ee_pose: jax.Array  # [B, T, n_arms, 7]
    reward: jax.Array  # [B, T]
    success: jax.Array  # [B, T] bool, after the action
    nan: jax.Array  # [B, T] bool
    qpos: jax.Array  # [B, T, nq] (for rendering)
    subtask_done: jax.Array  # [B, T, n_arms, n_subtasks] bool, after the action (the env's subtask detector)


def record_dataset_step(env: TaskEnv, step: Step, action: jax.Array, after: State, extras) -> dict:
    """The per-step record datasets store ([B, ...] each): observation and simulator state *before* the action,
    reward / success / NaN flag *after* it. Bind the env with functools.partial to use it as an unroll recorder."""
    d = step.state.data
    return {
        "obs_obj": step.state.obs["obj"],
        "obs_prop": step.state.obs["prop"],
        "states": jnp.concatenate([d.qpos, d.qvel], axis=-1),
        "object_pose": jax.vmap(env.object_pose)(d),
        "ee_pose": jax.vmap(env.ee_pose)(d),
        "qpos": d.qpos,
        "reward": after.reward,
        "success": after.success,
        "nan": after.metrics["nan"],
        "subtask_done": after.info["subtask_done"],
    }


def rollout_subtask_end(subtask_done) -> np.ndarray:
    """A recorded rollout's detected subtask ends [B, T, n_arms, n_subtasks] bool -> the datasets' `subtask_end`
    signals (uint8): the detector's ends, with every subtask ended at the last step (each arm's last subtask
    ends with the episode, as in the seeds; augmentation marks its demos the same way)."""
    ends = np.asarray(subtask_done).astype(np.uint8).copy()
    ends[:, -1] = 1
    return ends


def trajectory_from_records(records: dict) -> Trajectory:
    """Unroll records [T, B, ...] of `record_dataset_step` -> Trajectory [B, T, ...]."""
    return Trajectory(**jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), records))


def _replay_hook(actions, carry, step: Step, key):
    """Unroll hook of open-loop replay: the recorded action of this step, actions [B, T, A]."""
    return carry, jax.lax.dynamic_index_in_dim(actions, step.t, axis=1, keepdims=False), None


def run_actions(env: TaskEnv, scenes: Scene, actions, key: jax.Array, *, check_finite: bool = True):
    """Execute actions [B, T, action_dim] from a fresh reset in each scene; returns (final State, Trajectory)."""
    actions = jnp.asarray(actions, dtype=jnp.float32)
    batch = scenes.object_pose.shape[0]
    if actions.ndim != 3 or actions.shape[0] != batch or actions.shape[2] != env.action_dim:
        raise ValueError(f"{env.name}: actions must have shape [B={batch}, T, {env.action_dim}], got {tuple(actions.shape)}")
    if actions.shape[1] == 0:
        raise ValueError(f"{env.name}: zero-step horizon: nothing to roll out")
    fn = jit_unroll(env, int(actions.shape[1]), _replay_hook, functools.partial(record_dataset_step, env))
    final, records = fn(None, scenes, key, actions, None)
    if check_finite:
        env.check_finite(final.state, where="replay")
    return final.state, trajectory_from_records(records)


def held_steps(success) -> int:
    """success [T] bool (after each step) -> how many final steps in a row were successful (0: failed at the end)."""
    success = np.asarray(success, dtype=bool)
    failed = np.flatnonzero(~success)
    return int(len(success) - (failed[-1] + 1 if len(failed) else 0))


def episodes_from_trajectory(
    env: TaskEnv,
    traj: Trajectory,
    actions,
    specs: list[SceneSpec],
    *,
    subtask_end,
    source: str,
    seed: int,
    keep=None,
):
    """Convert a recorded batch into dataset `Episode`s (one per env where `keep` is True).

    actions: [B, T, A]; subtask_end: [B, T, n_arms, n_subtasks] uint8 signals (0 -> 1 edge = end).
    Episode success is the success flag after the last step; `extra["held_steps"]` counts the final steps in
    a row that were successful (how long before the end the task was done and held: a margin of success).
    """
    from dexfly import dataset

    traj = jax.tree.map(np.asarray, traj)
    actions = np.asarray(actions, dtype=np.float32)
    subtask_end = np.asarray(subtask_end, dtype=np.uint8)
    n_arms = len(env.arms)
    out = []
    for b, spec in enumerate(specs):
        if keep is not None and not keep[b]:
            continue
        T = actions.shape[1]
        a = layout.split_action(actions[b], n_arms)
        ee_quat = geometry.quat_from_rot6d(jnp.asarray(a.rot6d))  # in JAX float32, as datasets record it
        ee_target = np.concatenate([a.pos, np.asarray(ee_quat)], axis=-1)
        dones = np.zeros(T, np.uint8)
        dones[-1] = 1
        out.append(
            dataset.Episode(
                actions=actions[b],
                states=traj.states[b].astype(np.float32),
                rewards=traj.reward[b].astype(np.float32),
                dones=dones,
                obs={"obj": traj.obs_obj[b].astype(np.float32), "prop": traj.obs_prop[b].astype(np.float32)},
                ee_target_pose=ee_target.astype(np.float32),
                hand_target=a.hand.astype(np.float32),
                object_poses=traj.object_pose[b].astype(np.float32),
                subtask_end=subtask_end[b],
                success=bool(traj.success[b, -1]),
                object_ids=[oid for _, oid in spec.objects],
                env_id=spec.env_id,
                pose_id=spec.pose_id,
                seed=int(seed),
                source=source,
                extra={"poses": json.dumps(dict(spec.poses)), "roles": json.dumps([r for r, _ in spec.objects]),
                       "held_steps": held_steps(traj.success[b])},
            )
        )
    return out
