"""Record the seed demonstration of a task with a scripted teleoperation stand-in (run once per task).

The paper's seed comes from VR teleoperation. The teleoperation stand-in (`dexfly.teleop`) moves the hand(s)
through a few keyframes (poses relative to the task objects, hand open/close commands) with minimum-jerk
timing and a short human-like pause at each keyframe; this script turns them into end-effector target actions,
executes them in the default scene with MJX, and writes the result (one demo) in the dexfly dataset format to
`assets/demos/<task>_seed.hdf5`. It refuses to write a demo that does not succeed.

Later stages start from the recorded HDF5 file; only the human-demo baselines (docs/baselines.md) run the
stand-in again, with human-like variation.

    python experiments/record_seed.py --task grasp
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dexfly  # noqa: F401  (XLA flags before jax)
import jax
import numpy as np
import tyro

import envs
from dexfly import dataset
from dexfly.paths import DEMOS_DIR
from dexfly.rollout import episodes_from_trajectory, run_actions
from dexfly.teleop import script


@dataclass(frozen=True)
class Args:
    task: str = "grasp"
    out: Path | None = None
    """Output file (default assets/demos/<task>_seed.hdf5)."""
    seed: int = 0


def main(args: Args) -> None:
    env = envs.make(args.task)
    spec = env.default_scene()
    actions, subtask_end = script(env, spec)
    declared = [len(arm_subtasks) for arm_subtasks in env.subtasks]
    if subtask_end.shape[1:] != (len(declared), max(declared)):
        raise SystemExit(f"{args.task}: script marks subtask ends {subtask_end.shape[1:]}, env declares {declared} per arm")
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
