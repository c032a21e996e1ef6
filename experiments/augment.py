"""Augment source demos into new scenes (A_EP, MimicGen-style, batched in MJX) and write a dataset.

    python experiments/augment.py --task grasp --num-poses 15 --num-env-ids 3 --num-wanted 500 \
        --batch-size 64 --out outputs/grasp_d1.hdf5

C_aug is given either as counts (the first N catalog poses / environments / objects of the source's
topology) or as explicit id lists (--augment.pose-ids, --augment.env-ids, --objects role=id1,id2); the
generator's settings are --augment.* (--augment.env.impl warp for MuJoCo Warp). Keeps generating until
--num-wanted successful demos exist or --max-attempts are spent; prints a summary table and ends with
`generated=<int> attempts=<int> success_rate=<float>`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import dexfly  # noqa: F401  (XLA flags before jax)
import tyro
from rich.console import Console

import envs
from dexfly import dataset, watchdog
from dexfly.augment import AugmentConfig, augment
from dexfly.augment.config import parse_object_sets, with_counts
from dexfly.devices import DeviceConfig
from dexfly.paths import DEMOS_DIR


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
    """Attempts simulated at once (one batched env per attempt); a multiple of the device count."""
    seed: int = 0
    # ---- C_aug as counts (ids given in --augment.* win)
    num_poses: int = 0
    """Use the first N catalog poses of the task (0: see --augment.pose-ids / the default pose)."""
    num_env_ids: int = 0
    """Use the first N catalog environments (0: see --augment.env-ids / the source's environment)."""
    num_objects: int = 0
    """Per role, use the first N catalog objects of the source object's topology (0: the source's objects)."""
    objects: tuple[str, ...] = ()
    """Explicit object sets as role=id1,id2 entries, e.g. --objects object=box_tea,box_soap."""
    progress: bool = True
    stall_timeout: float = watchdog.DEFAULT_TIMEOUT_S
    """Seconds without progress after which the run stops with an error (0: no watchdog)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """C_aug ids and the generator's settings (see dexfly.augment.AugmentConfig)."""
    parallel: Annotated[DeviceConfig, tyro.conf.arg(name="")] = field(default_factory=DeviceConfig)
    """Devices that batches are split over, and the multi-host setup (no flag prefix: --devices, --coordinator-address, ...)."""


def build_caug(args: Args, first_source) -> AugmentConfig:
    caug = args.augment
    if args.objects:
        try:
            caug = dataclasses.replace(caug, objects=parse_object_sets(args.objects))
        except ValueError as e:
            raise SystemExit(f"--objects: {e}") from None
    return with_counts(caug, args.task, envs.episode_objects(first_source), num_poses=args.num_poses,
                       num_env_ids=args.num_env_ids, num_objects=args.num_objects)


def main(args: Args):
    paths = args.sources or (DEMOS_DIR / f"{args.task}_seed.hdf5",)
    sources, env_args = [], None
    for p in paths:
        data = dataset.read_dataset(p, task=args.task)  # DatasetError (ValueError) for a wrong task
        sources += list(data.episodes)
        env_args = env_args or dict(data.env_args)
    caug = build_caug(args, sources[0])
    mesh = args.parallel.mesh()
    with watchdog.stage(f"augment {args.task}", timeout_s=args.stall_timeout):
        episodes, stats = augment(sources, args.task, caug, num_wanted=args.num_wanted, batch_size=args.batch_size,
                                  max_attempts=args.max_attempts, seed=args.seed, progress=args.progress, mesh=mesh)
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
