"""Record the seed demonstration of a task with a scripted teleoperation stand-in (run once per task).

The paper's seed comes from VR teleoperation. This script stands in for the operator: it moves the hand(s)
through a few keyframes (poses relative to the task objects, hand open/close commands) with minimum-jerk
timing and a short human-like pause at each keyframe, turns them into end-effector target actions, executes
them in the default scene with MJX, and writes the result (one demo) in the dexfly dataset format to
`assets/demos/<task>_seed.hdf5`. It refuses to write a demo that does not succeed.

Nothing else in the pipeline uses this script: later stages start from the recorded HDF5 file.

    python experiments/record_seed.py --task grasp
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dexfly  # noqa: F401  (XLA flags before jax)
import jax
import jax.numpy as jnp
import numpy as np
import tyro

import envs
from dexfly import dataset, geometry
from dexfly.paths import DEMOS_DIR
from dexfly.rollout import episodes_from_trajectory, run_actions


@dataclass(frozen=True)
class Args:
    task: str = "grasp"
    out: Path | None = None
    """Output file (default assets/demos/<task>_seed.hdf5)."""
    seed: int = 0


@dataclass(frozen=True)
class Key:
    """One keyframe of one arm: reach `pos`/`rot` (world) with `hand` targets within `duration` s."""

    duration: float
    pos: np.ndarray
    rot: np.ndarray  # 3x3
    hand: np.ndarray  # 6 joint targets (rad)
    subtask_end: int | None = None  # index of the subtask that ends when this keyframe is reached


def interpolate(start_pos, start_rot, start_hand, keys: list[Key], ctrl_dt: float, total_steps: int):
    """Minimum-jerk position, slerped orientation and linear hand motion through the keyframes.

    Returns actions [T, 15] and subtask_end [T, n_subtasks] (uint8 0 -> 1 at each subtask's end).
    """
    n_sub = 1 + max([k.subtask_end for k in keys if k.subtask_end is not None] + [0])
    actions, ends = [], np.zeros((total_steps, n_sub), np.uint8)
    pos, quat, hand = np.asarray(start_pos), np.asarray(geometry.mat_to_quat(jnp.asarray(start_rot))), np.asarray(start_hand)
    t = 0
    for key in keys:
        steps = max(1, int(round(key.duration / ctrl_dt)))
        q_goal = np.asarray(geometry.mat_to_quat(jnp.asarray(key.rot)))
        s = np.asarray(geometry.min_jerk(jnp.arange(1, steps + 1) / steps))
        p = pos[None] + s[:, None] * (key.pos - pos)[None]
        q = np.asarray(geometry.quat_slerp(jnp.asarray(quat)[None], jnp.asarray(q_goal)[None], jnp.asarray(s)))
        h = hand[None] + s[:, None] * (key.hand - hand)[None]
        mats = np.asarray(geometry.quat_to_mat(jnp.asarray(q)))
        actions.append(np.concatenate([p, mats[:, :, 0], mats[:, :, 1], h], axis=1))
        t += steps
        if key.subtask_end is not None:
            ends[min(t, total_steps) - 1 :, key.subtask_end] = 1
        pos, quat, hand = key.pos, q_goal, key.hand
    actions = np.concatenate(actions)
    if len(actions) > total_steps:
        raise ValueError(f"keyframes last {len(actions)} steps, longer than the episode ({total_steps})")
    pad = np.repeat(actions[-1:], total_steps - len(actions), axis=0)
    ends[:, -1] = 0
    ends[-1, -1] = 1  # the last subtask ends with the episode
    return np.concatenate([actions, pad]).astype(np.float32), ends


def rot_z(yaw):
    return np.asarray(geometry.quat_to_mat(geometry.quat_from_yaw(jnp.asarray(yaw))))


def script(env, spec) -> tuple[np.ndarray, np.ndarray]:
    """Task-specific keyframes -> (actions [T, A], subtask_end [T, n_arms, n_subtasks])."""
    from experiments import seed_scripts

    return seed_scripts.SCRIPTS[env.name](env, spec, interpolate)


def main(args: Args) -> None:
    env = envs.make(args.task)
    spec = env.default_scene()
    actions, subtask_end = script(env, spec)
    scenes = env.make_scenes([spec])
    final, traj = run_actions(env, scenes, actions[None], jax.random.PRNGKey(args.seed))
    success = bool(np.asarray(traj.success)[0, -1])
    print(f"{args.task}: seed demo of {actions.shape[0]} steps, success={success}")
    if not success:
        raise SystemExit(f"{args.task}: the scripted seed demo failed; not writing it")
    episodes = episodes_from_trajectory(env, traj, actions[None], [spec], subtask_end=subtask_end[None], source="seed", seed=args.seed)
    out = args.out or DEMOS_DIR / f"{args.task}_seed.hdf5"
    dataset.write_dataset(out, episodes, task=args.task, env_args=env.env_args())
    print(f"wrote {out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
