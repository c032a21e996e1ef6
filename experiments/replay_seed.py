"""Replay a task's seed demonstration in N batched MJX envs, write a video, print the success rate.

    python experiments/replay_seed.py --task grasp --num-envs 8

Every env starts from the seed's own scene (object, environment, pose ids recorded in the file) and
executes the recorded actions open loop. Ends with a line `success_rate=<float>`.

    python experiments/replay_seed.py --task grasp --object ball_5cm

replays the seed with another catalog object in the task's first role (Pour: the source container), at the seed's
pose: does the seed's motion itself transfer to that object?
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import dexfly  # noqa: F401  (XLA flags before jax)
import jax
import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

import envs
from dexfly import dataset, render
from dexfly.catalog import CatalogError
from dexfly.paths import DEMOS_DIR
from dexfly.rollout import run_actions
from dexfly.scenes import object_scene
from envs.base import EnvConfig


@dataclass(frozen=True)
class Args:
    task: str = "grasp"
    num_envs: int = 8
    """Parallel simulated envs (the batch size), each replaying the seed."""
    demo: Path | None = None
    """Seed file (default assets/demos/<task>_seed.hdf5)."""
    video: Path | None = None
    """Output video (default outputs/replay_<task>.mp4); '.gif' works too."""
    video_envs: int = 4
    """How many envs to tile in the video."""
    object: str | None = None
    """A catalog object of the task to replay the seed with, in its first role (Pour: the source container)."""
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)


def main(args: Args) -> float:
    if args.task not in envs.TASKS:
        raise SystemExit(f"unknown task {args.task!r}; available: {list(envs.TASKS)}")
    if args.num_envs < 1:
        raise SystemExit("--num-envs must be >= 1")
    data = dataset.read_dataset(args.demo or DEMOS_DIR / f"{args.task}_seed.hdf5", task=args.task)
    demo = data.episodes[0]
    env = envs.make(args.task, args.env, objects=dict(envs.episode_objects(demo)))
    spec = env.scene_from_episode(demo)
    if args.object is not None:
        spec = object_scene(args.task, args.object, spec.env_id, dict(spec.poses), spec.pose_id)
        try:
            env = envs.make(args.task, args.env, objects=spec.object_ids)
        except (CatalogError, ValueError) as e:
            raise SystemExit(str(e)) from None
    scenes = env.make_scenes([spec] * args.num_envs)
    actions = np.broadcast_to(demo.actions, (args.num_envs, *demo.actions.shape))
    t0 = time.perf_counter()
    final, traj = run_actions(env, scenes, actions, jax.random.PRNGKey(args.seed))
    jax.block_until_ready(final)
    seconds = time.perf_counter() - t0
    success = np.asarray(traj.success)[:, -1]
    rate = float(success.mean())

    n_video = min(args.video_envs, args.num_envs)
    video = args.video or Path("outputs") / f"replay_{args.task}{'_' + args.object if args.object else ''}.mp4"
    qpos = np.asarray(traj.qpos)[:n_video].transpose(1, 0, 2)[::2]  # [T/2, B, nq] at 25 fps
    overrides = {k: np.asarray(v)[:n_video] for k, v in scenes.params.items()}
    frames = render.render_batch(env.mj_model, qpos, overrides_per_env=overrides, camera="front")
    render.write_video(video, frames, fps=1.0 / (2 * env.config.ctrl_dt))

    table = Table(title=f"seed replay: {args.task}, {', '.join(spec.object_ids.values())}")
    for col in ("envs", "steps", "successes", "wall time (s, incl. compile)", "video"):
        table.add_column(col)
    table.add_row(str(args.num_envs), str(demo.num_samples), f"{int(success.sum())}/{args.num_envs}", f"{seconds:.1f}", str(video))
    Console().print(table)
    print(f"success_rate={rate}")
    return rate


if __name__ == "__main__":
    main(tyro.cli(Args))
