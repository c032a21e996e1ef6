"""What PPO's exploration noise costs a base policy: the base alone against the base with an untrained residual
sampled as in training (its mean correction is zero, so the difference is the noise), same scenes, same keys.

    python experiments/exploration_cost.py --base runs/dp_grasp --objects box_cube_5cm box_cube_6cm \
        --env-ids studio --pose-ids p00 p01 p02 --init-noise-std 0.05 --hold-steps 8

Prints per-object success of both and the line `base_success=<mean> explore_success=<mean>`; `--out` also writes
them as JSON. Pick the residual's noise (--init-noise-std, --alpha-*, --hold-steps) where the loss is small.
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

from dexfly.catalog import TASKS, CatalogError
from dexfly.devices import DeviceConfig
from dexfly.policies.diffusion.checkpoint import load_run
from dexfly.policies.residual.config import ResidualConfig
from dexfly.policies.residual.explore import exploration_cost
from dexfly.scenes import scene_grid
from dexfly.utils import atomic_write_text
from envs.base import EnvConfig


@dataclass(frozen=True)
class Args:
    base: Path
    """A train_diffusion.py output folder."""
    objects: tuple[str, ...]
    task: str = "grasp"
    env_ids: tuple[str, ...] = ("studio",)
    pose_ids: tuple[str, ...] = ("p00", "p01", "p02", "p03", "p04")
    seeds: tuple[int, ...] = (0,)
    out: Path | None = None
    """Also write the result here (JSON)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    residual: Annotated[ResidualConfig, tyro.conf.arg(name="")] = field(default_factory=ResidualConfig)
    """The exploration to measure: --init-noise-std, --hold-steps, --alpha-pos, --alpha-rot, --alpha-hand."""
    parallel: Annotated[DeviceConfig, tyro.conf.arg(name="")] = field(default_factory=DeviceConfig)
    """Devices that the evaluation batches are split over (no flag prefix: --devices, ...)."""


def main(args: Args):
    if args.task not in TASKS:
        raise SystemExit(f"unknown task {args.task!r}; available: {list(TASKS)}")
    try:
        base, _, _ = load_run(args.base, task=args.task)
        specs = scene_grid(args.task, objects=args.objects, env_ids=args.env_ids, pose_ids=args.pose_ids)
        cost = exploration_cost(args.task, base, specs, args.residual, seeds=args.seeds, env_config=args.env, mesh=args.parallel.mesh())
    except (FileNotFoundError, ValueError, CatalogError) as e:
        raise SystemExit(str(e)) from None
    r = args.residual
    table = Table(title=f"exploration cost: std {r.init_noise_std}, hold {r.hold_steps} steps, alphas {r.alpha_pos} m / {r.alpha_rot} rad / "
                        f"{r.alpha_hand} of range; {len(specs)} scenes x {len(args.seeds)} seeds")
    for col in ("object", "base", "base + untrained residual, sampled"):
        table.add_column(col)
    for obj in args.objects:
        table.add_row(obj, f"{cost['base']['per_object'][obj]:.2f}", f"{cost['explore']['per_object'][obj]:.2f}")
    table.add_row("all", f"{cost['base']['mean']:.3f}", f"{cost['explore']['mean']:.3f}")
    Console().print(table)
    if args.out is not None:
        atomic_write_text(args.out, json.dumps({"args": {"base": str(args.base), "objects": list(args.objects), "env_ids": list(args.env_ids),
                                                         "pose_ids": list(args.pose_ids), "seeds": list(args.seeds)},
                                                "residual": r.to_dict(), **cost}, indent=2))
    print(f"base_success={cost['base']['mean']} explore_success={cost['explore']['mean']}")
    return cost


if __name__ == "__main__":
    main(tyro.cli(Args))
