"""Augment source demos into new scenes (A_EP, MimicGen-style, batched in MJX) and write a dataset.

    python experiments/augment.py --task grasp --num-poses 15 --num-envs-cfg 3 --num-wanted 500 \
        --batch-size 64 --out outputs/grasp_d1.hdf5

C_aug is given either as counts (the first N catalog poses / environments / objects of the source's
topology) or as explicit id lists (--pose-ids, --env-ids, --objects role=id1,id2). Keeps generating until
--num-wanted successful demos exist or --max-attempts are spent; prints a summary table and ends with
`generated=<int> attempts=<int> success_rate=<float>`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dexfly  # noqa: F401  (XLA flags before jax)
import tyro
from rich.console import Console

import envs
from dexfly import catalog as catalog_lib
from dexfly import dataset
from dexfly.augment import AugmentConfig, augment
from dexfly.paths import DEMOS_DIR
from envs.base import EnvConfig


@dataclass(frozen=True)
class Args:
    task: str = "grasp"
    sources: tuple[Path, ...] = ()
    """Source dataset(s) (default assets/demos/<task>_seed.hdf5); all their demos are sources."""
    out: Path = Path("outputs/augmented.hdf5")
    num_wanted: int = 500
    """Successful demos to generate."""
    max_attempts: int | None = None
    """Attempt budget (default 4 x num_wanted)."""
    batch_size: int = 64
    seed: int = 0
    # ---- C_aug as counts
    num_poses: int = 0
    """Use the first N catalog poses of the task (0: see --pose-ids / default pose)."""
    num_envs_cfg: int = 0
    """Use the first N catalog environments (0: see --env-ids / the source's environment)."""
    num_objects: int = 0
    """Per role, use the first N catalog objects of the source object's topology (0: the source's objects)."""
    num_sampled_poses: int = 0
    """Poses sampled from the task's ranges, in addition to catalog poses."""
    # ---- C_aug as explicit ids
    pose_ids: tuple[str, ...] = ()
    env_ids: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    """role=id1,id2 entries, e.g. --objects object=box_tea,box_soap."""
    mode: Literal["grid", "sample"] = "grid"
    # ---- generator
    offset_range: int = 5
    bridge_steps: int = 10
    action_noise: float = 0.0
    source_selection: Literal["random", "nearest"] = "random"
    skip_source_wait: bool = True
    """A subtask waiting for another arm's subtask replays its source from that subtask's source end on."""
    keep_failed: bool = False
    impl: str = "jax"
    progress: bool = True


def build_caug(args: Args, first_source) -> AugmentConfig:
    cat = catalog_lib.load_catalog()
    pose_ids = tuple(args.pose_ids) or cat.poses_for(args.task).ids[: args.num_poses]
    env_ids = tuple(args.env_ids) or tuple(e.id for e in cat.environments[: args.num_envs_cfg])
    objects: dict[str, tuple[str, ...]] = {}
    for entry in args.objects:
        if "=" not in entry:
            raise SystemExit(f"--objects entries look like role=id1,id2; got {entry!r}")
        role, ids = entry.split("=", 1)
        objects[role] = tuple(i for i in ids.split(",") if i)
    if args.num_objects and not objects:
        for role, oid in envs.episode_objects(first_source):
            obj = cat.object(oid)
            same = [o.id for o in cat.objects if o.role == obj.role and args.task in o.tasks and o.topology == obj.topology]
            objects[role] = tuple(same[: args.num_objects])
    return AugmentConfig(
        objects=tuple(objects.items()), env_ids=env_ids, pose_ids=pose_ids, num_sampled_poses=args.num_sampled_poses,
        mode=args.mode, offset_range=args.offset_range, bridge_steps=args.bridge_steps, action_noise=args.action_noise,
        source_selection=args.source_selection, skip_source_wait=args.skip_source_wait, keep_failed=args.keep_failed, env=EnvConfig(impl=args.impl),
    )


def main(args: Args):
    paths = args.sources or (DEMOS_DIR / f"{args.task}_seed.hdf5",)
    sources, env_args = [], None
    for p in paths:
        data = dataset.read_dataset(p, task=args.task)  # DatasetError (ValueError) for a wrong task
        sources += list(data.episodes)
        env_args = env_args or dict(data.env_args)
    caug = build_caug(args, sources[0])
    episodes, stats = augment(sources, args.task, caug, num_wanted=args.num_wanted, batch_size=args.batch_size,
                              max_attempts=args.max_attempts, seed=args.seed, progress=args.progress)
    console = Console()
    console.print(stats.table())
    console.print(stats.breakdown(), markup=False)
    if episodes:
        out = dataset.write_dataset(
            args.out, episodes, task=args.task, env_args=env_args, seed=args.seed,
            extra_attrs={"augment_config": dataclasses.asdict(caug) | {"env": dataclasses.asdict(caug.env)},
                         "augment_sources": [str(p) for p in paths], "augment_seed": args.seed},
        )
        console.print(f"wrote {len(episodes)} demos to {out}")
    else:
        console.print("no successful demos: nothing written")
    print(f"generated={stats.generated} attempts={stats.attempts} success_rate={stats.success_rate:.4f}")
    return episodes, stats


if __name__ == "__main__":
    main(tyro.cli(Args))
