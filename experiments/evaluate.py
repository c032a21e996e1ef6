"""Evaluate a trained policy checkpoint closed loop on a scene set; write videos of a few episodes.

    python experiments/evaluate.py --checkpoint runs/diffusion --task grasp --num-objects 3 --num-poses 5
    python experiments/evaluate.py --checkpoint runs/diffusion --task grasp --objects can_soda box_soap --env-ids studio

The scene set is the product of objects x environments x poses (ids, or the first N of each from the
catalog; held-out catalog entries work the same), optionally subsampled to `--max-scenes`. Scenes are grouped
by object topology, one compiled env per group. Ends with `success_rate=<mean> std=<std>` over `--seeds`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import dexfly  # noqa: F401  (XLA flags before jax)
import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

import envs
from dexfly import evaluation, render
from dexfly.catalog import TASK_ROLES, load_catalog
from dexfly.policies.diffusion import load_policy


@dataclass(frozen=True)
class Args:
    checkpoint: Path
    """Training output folder (holds checkpoints/ and policy.json) or a checkpoints folder."""
    task: str = "grasp"
    objects: tuple[str, ...] = ()
    """Object ids for the task's main role (source container for Pour); empty: the first --num-objects."""
    num_objects: int = 1
    env_ids: tuple[str, ...] = ()
    num_envs: int = 1
    """Number of catalog environments when --env-ids is empty."""
    pose_ids: tuple[str, ...] = ()
    num_poses: int = 5
    max_scenes: int = 64
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    videos: int = 4
    """Episodes (of the first group, first seed) to render into one tiled video; 0 disables."""
    out: Path = Path("outputs/eval")
    action_horizon: int = 0
    """Actions executed per sampled chunk before re-planning (0: the checkpoint's, 8 by default)."""
    ddim_steps: int = 0
    """DDIM denoising steps at inference (0: the checkpoint's); must divide the training timesteps (100)."""


def resolve_checkpoint(path: Path) -> tuple[Path, dict]:
    path = path.resolve()
    meta_file = path / "policy.json"
    if meta_file.exists():
        return path / "checkpoints", json.loads(meta_file.read_text())
    if (path.parent / "policy.json").exists():
        return path, json.loads((path.parent / "policy.json").read_text())
    raise SystemExit(f"{path}: no policy.json found (expected a train_diffusion.py output folder)")


def scene_set(task: str, args: Args):
    cat = load_catalog()
    roles = envs.make_cached(task).roles
    main_role = roles[0]
    objects = args.objects or tuple(o.id for o in cat.filter_objects(task=task, role=TASK_ROLES[task][main_role])[: args.num_objects])
    env_ids = args.env_ids or tuple(e.id for e in cat.environments[: args.num_envs])
    pose_ids = args.pose_ids or cat.poses_for(task).ids[: args.num_poses]
    defaults = {r: o.id for r, o in cat.default_objects(task).items()}
    specs = []
    for obj, env_id, pose_id in itertools.product(objects, env_ids, pose_ids):
        objs = {r: defaults[r] for r in roles}
        objs[main_role] = obj
        env = envs.make_cached(task, tuple(objs.items()))
        specs.append(env.scene_spec(objs, env_id, pose_id))
    return specs[: args.max_scenes], len(set(objects)), len(set(env_ids)), len(set(pose_ids))


def main(args: Args) -> tuple[float, float]:
    ckpt_dir, meta = resolve_checkpoint(args.checkpoint)
    if meta["task"] != args.task:
        raise SystemExit(f"checkpoint {args.checkpoint} was trained for task {meta['task']!r}, not {args.task!r}")
    policy, config = load_policy(ckpt_dir)
    overrides = {k: v for k, v in (("action_horizon", args.action_horizon), ("num_inference_steps", args.ddim_steps)) if v}
    if overrides:
        try:
            policy = policy.replace(config=config.replace(**overrides))
        except ValueError as e:
            raise SystemExit(f"invalid inference override: {e}") from None
    specs, n_obj, n_env, n_pose = scene_set(args.task, args)
    from dexfly.utils import group_by_topology

    per_seed = np.zeros(len(args.seeds))
    video_written = None
    for objects, group in group_by_topology(args.task, specs).items():
        env = envs.make_cached(args.task, tuple(objects))
        want_video = args.videos > 0 and video_written is None
        res = evaluation.evaluate(env, policy, group, seeds=args.seeds, task=meta["task"], record_qpos=want_video)
        per_seed += np.asarray(res.per_seed) * len(group)
        if want_video:
            n = min(args.videos, len(group))
            scenes = env.make_scenes(group[:n])
            frames = render.render_batch(env.mj_model, res.qpos[::2, :n], overrides_per_env={k: np.asarray(v) for k, v in scenes.params.items()}, camera="front")
            video_written = render.write_video(args.out / f"eval_{args.task}.mp4", frames, fps=1.0 / (2 * env.config.ctrl_dt))
    per_seed /= len(specs)
    mean, std = float(per_seed.mean()), float(per_seed.std())
    table = Table(title=f"evaluation: {args.task}")
    for col in ("objects", "envs", "poses", "scenes", "seeds", "success rate", "video"):
        table.add_column(col)
    table.add_row(str(n_obj), str(n_env), str(n_pose), str(len(specs)), str(len(args.seeds)), f"{mean:.3f} ± {std:.3f}", str(video_written))
    Console().print(table)
    print(f"success_rate={mean} std={std}")
    return mean, std


if __name__ == "__main__":
    main(tyro.cli(Args))
