"""Evaluate a trained policy checkpoint closed loop on a scene set; write videos of a few episodes.

    python experiments/evaluate.py --checkpoint runs/diffusion --task grasp --num-objects 3 --num-poses 5 --num-env-ids 2
    python experiments/evaluate.py --checkpoint runs/diffusion --task grasp --objects can_soda box_soap --env-ids studio
    python experiments/evaluate.py --checkpoint runs/fw/iter2/diffusion --task grasp --t-oep

The scene set is the product of objects x environments x poses (ids, or the first N of each from the
catalog; held-out catalog entries work the same), optionally subsampled to `--max-scenes`; or, with `--t-oep`,
the task's T_OEP test set, scored as the flywheel and the baselines score it. Scenes are grouped by object
topology, one compiled env per group. Writes `<out>/eval.json` (per-seed, per-object and per-environment rates),
prints per-object and per-environment tables when there are several, and ends with
`success_rate=<mean> std=<std>` over `--seeds`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import dexfly  # noqa: F401  (XLA flags before jax)
import tyro
from rich.console import Console
from rich.table import Table

from dexfly import evaluation, watchdog
from dexfly.catalog import TASKS, CatalogError
from dexfly.devices import DeviceConfig
from dexfly.flywheel.loop import EVAL_PAD_TO
from dexfly.flywheel.testsets import load_t_oep
from dexfly.policies.diffusion import load_run
from dexfly.policies.residual import checkpoint as residual_checkpoint
from dexfly.progress import ProgressCallback
from dexfly.scenes import scene_grid
from dexfly.utils import atomic_write_text
from envs.base import EnvConfig


@dataclass(frozen=True)
class Args:
    checkpoint: Path
    """A train_diffusion.py output folder (or its checkpoints/), or a train_residual.py output folder (evaluates the
    combined policy: the base it was trained on plus the residual)."""
    task: str = "grasp"
    objects: tuple[str, ...] = ()
    """Object ids for the task's main role (source container for Pour); empty: the first --num-objects."""
    num_objects: int = 1
    env_ids: tuple[str, ...] = ()
    num_env_ids: int = 1
    """Number of catalog environments (the first N) when --env-ids is empty."""
    pose_ids: tuple[str, ...] = ()
    num_poses: int = 5
    max_scenes: int = 64
    t_oep: bool = False
    """Score the task's T_OEP test set (assets/testsets/<task>.json, all its scenes, batched as the flywheel's evaluate
    stage batches them from iteration 2 on and as the baselines do, so such a base gets the number its run recorded;
    iteration 1 scores T_OEP in one batch with T_O^1, whose random draws differ); the object, environment and pose
    flags must be empty, and --max-scenes does not apply."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    videos: int = 4
    """Episodes (of the first group, first seed) to render, tiled, into one video (480x360 each); 0 disables."""
    out: Path = Path("outputs/eval")
    action_horizon: int = 0
    """Actions executed per sampled chunk before re-planning (0: the checkpoint's, 8 by default)."""
    ddim_steps: int = 0
    """DDIM denoising steps at inference (0: the checkpoint's); must divide the training timesteps (100)."""
    stall_timeout: float = watchdog.DEFAULT_TIMEOUT_S
    """Seconds without progress after which the evaluation stops with an error (0: no watchdog)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    parallel: Annotated[DeviceConfig, tyro.conf.arg(name="")] = field(default_factory=DeviceConfig)
    """Devices that batches are split over, and the multi-host setup (no flag prefix: --devices, --coordinator-address, ...)."""


def main(args: Args) -> tuple[float, float]:
    if args.task not in TASKS:
        raise SystemExit(f"unknown task {args.task!r}; available: {list(TASKS)}")
    hook = hook_params = None
    try:
        if (args.checkpoint / residual_checkpoint.RUN_FILE).exists():  # a residual run: its combined policy
            policy, hook, hook_params, _ = residual_checkpoint.load_combined(args.checkpoint, task=args.task)
            config = policy.config
        else:
            policy, config, _ = load_run(args.checkpoint, task=args.task)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None
    overrides = {k: v for k, v in (("action_horizon", args.action_horizon), ("num_inference_steps", args.ddim_steps)) if v}
    if overrides:
        try:
            policy = policy.replace(config=config.replace(**overrides))
        except ValueError as e:
            raise SystemExit(f"invalid inference override: {e}") from None
    pad_to = 1
    try:
        if args.t_oep:
            if args.objects or args.env_ids or args.pose_ids:
                raise ValueError("--t-oep scores the task's T_OEP scenes; leave --objects, --env-ids and --pose-ids empty")
            specs, pad_to = load_t_oep(args.task), EVAL_PAD_TO
        else:
            specs = scene_grid(args.task, objects=args.objects, num_objects=args.num_objects, env_ids=args.env_ids,
                               num_env_ids=args.num_env_ids, pose_ids=args.pose_ids, num_poses=args.num_poses)[: args.max_scenes]
    except (CatalogError, ValueError) as e:
        raise SystemExit(str(e)) from None
    mesh = args.parallel.mesh()
    with watchdog.stage(f"evaluate {args.task}", timeout_s=args.stall_timeout), ProgressCallback("evaluation") as on_progress:
        res = evaluation.evaluate_scenes(args.task, policy, specs, seeds=args.seeds, record_qpos_first=args.videos > 0,
                                         env_config=args.env, hook=hook, hook_params=hook_params, mesh=mesh, pad_to=pad_to,
                                         on_progress=on_progress)
    video = None
    if args.videos > 0:
        video = evaluation.write_video(args.out / f"eval_{args.task}.mp4", args.task, res, episodes=args.videos, env_config=args.env)
    count = lambda key: len({key(s) for s in specs})  # noqa: E731
    table = Table(title=f"evaluation: {args.task}")
    for col in ("objects", "envs", "poses", "scenes", "seeds", "success rate", "video"):
        table.add_column(col)
    table.add_row(str(count(lambda s: s.objects)), str(count(lambda s: s.env_id)), str(count(lambda s: s.pose_id)), str(len(specs)),
                  str(len(args.seeds)), f"{res.success_rate_mean:.3f} ± {res.success_rate_std:.3f}", str(video))
    console = Console()
    for name, rates in (("object", res.per_object()), ("environment", res.per_env())):
        if len(rates) > 1:
            by_key = Table(title=f"per {name} ({len(args.seeds)} seeds)")
            by_key.add_column(name)
            by_key.add_column("success rate")
            for key, rate in rates.items():
                by_key.add_row(key, f"{rate:.3f}")
            console.print(by_key)
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "eval.json", json.dumps({
        "task": args.task, "checkpoint": str(args.checkpoint), "seeds": list(args.seeds), "scenes": len(specs),
        "scene_set": "t_oep" if args.t_oep else "grid",
        "success": res.summary(),
        "ddim_steps": policy.config.num_inference_steps, "action_horizon": policy.config.action_horizon}, indent=2))
    print(f"success_rate={res.success_rate_mean} std={res.success_rate_std}")
    return res.success_rate_mean, res.success_rate_std


if __name__ == "__main__":
    main(tyro.cli(Args))
