"""Train a residual PPO policy on top of a frozen diffusion policy, on objects the base has not seen.

    python experiments/train_residual.py --task grasp --base runs/dp_grasp \
        --objects box_tea box_soap can_soda can_tuna ball_tennis ball_orange --env-ids studio \
        --num-envs 32 --total-steps 2000000 --out runs/res_grasp

The residual corrects every step of the base's action chunks (combined action a + alpha * delta, see
docs/residual_policy.md); epsilon, the probability that an episode runs the residual, rises from 0 to 1 over
--explore-steps env steps. Rerunning the same command resumes from the last checkpoint. Writes
`<out>/eval.json`, `<out>/curve.png`, `<out>/combined_<task>.mp4`, `<out>/train_log.jsonl` and ends with
`base_success=<mean> combined_success=<mean>` on the evaluation scenes (each object in --eval-env-id at
--eval-pose-ids, 5 seeds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import dexfly  # noqa: F401  (XLA flags before jax)
import tyro
from rich.console import Console
from rich.table import Table

from dexfly import watchdog
from dexfly.catalog import TASKS, CatalogError
from dexfly.devices import DeviceConfig
from dexfly.policies.residual.config import ResidualConfig
from dexfly.policies.residual.fit import EvalSet, fit
from envs.base import EnvConfig


@dataclass(frozen=True)
class Args:
    base: Path
    """The frozen base: a train_diffusion.py output folder."""
    objects: tuple[str, ...]
    """Catalog object ids for the task's main role; several topologies may be mixed (one compiled env each)."""
    task: str = "grasp"
    env_ids: tuple[str, ...] = ("studio",)
    """Catalog environments that training episodes draw from."""
    pose_ids: tuple[str, ...] | None = None
    """Catalog poses that training episodes draw from (the flywheel: those of the base's data); default: poses sampled
    from the task's continuous ranges."""
    alpha: float = 1.0
    """Overall residual scale: multiplies --alpha-pos, --alpha-rot and --alpha-hand (0: the base alone)."""
    out: Path = Path("runs/residual")
    eval: EvalSet = field(default_factory=lambda: EvalSet(every=10))
    """The evaluation scenes; --eval.every N adds combined success on them (first seed) to the learning curve every N
    updates (0: at the end only, as the flywheel's residual stage does to save its CPU budget)."""
    checkpoint_every: int = 5
    """Updates between checkpoints."""
    stall_timeout: float = watchdog.DEFAULT_TIMEOUT_S
    """Seconds without progress after which the run stops with an error (0: no watchdog); rerun to resume."""
    video: bool = True
    env: EnvConfig = field(default_factory=EnvConfig)
    residual: Annotated[ResidualConfig, tyro.conf.arg(name="")] = field(default_factory=ResidualConfig)
    """The residual and PPO settings (flags without a prefix: --num-envs, --total-steps, --explore-steps, --seed, ...)."""
    parallel: Annotated[DeviceConfig, tyro.conf.arg(name="")] = field(default_factory=DeviceConfig)
    """Devices that batches are split over, and the multi-host setup (no flag prefix: --devices, --coordinator-address, ...)."""


def main(args: Args):
    if args.task not in TASKS:
        raise SystemExit(f"unknown task {args.task!r}; available: {list(TASKS)}")
    if args.alpha < 0:
        raise SystemExit(f"--alpha must be >= 0, got {args.alpha}")
    r = args.residual
    config = r.replace(alpha_pos=r.alpha_pos * args.alpha, alpha_rot=r.alpha_rot * args.alpha, alpha_hand=r.alpha_hand * args.alpha)
    console = Console()
    try:
        with watchdog.stage(f"train_residual {args.task}", timeout_s=args.stall_timeout):
            res = fit(args.task, args.base, args.objects, args.env_ids, config, args.out, pose_ids=args.pose_ids, eval_set=args.eval, env_config=args.env,
                      checkpoint_every=args.checkpoint_every, video=args.video, log=console.print, mesh=args.parallel.mesh())
    except (FileNotFoundError, ValueError, CatalogError) as e:
        raise SystemExit(str(e)) from None
    table = Table(title=f"residual PPO: {args.task}, evaluation scenes ({args.eval.env_id}, {len(args.eval.pose_ids)} poses, "
                        f"{len(args.eval.seeds)} seeds)")
    for col in ("object", "base", "combined"):
        table.add_column(col)
    for obj in args.objects:
        table.add_row(obj, f"{res.base_success['per_object'][obj]:.2f}", f"{res.combined_success['per_object'][obj]:.2f}")
    table.add_row("all", f"{res.base_success['mean']:.3f} ± {res.base_success['std']:.3f}",
                  f"{res.combined_success['mean']:.3f} ± {res.combined_success['std']:.3f}")
    console.print(table)
    console.print(f"{int(res.state.env_steps):,} env steps, {int(res.state.updates)} updates, {res.seconds:.0f} s of training in this call")
    print(f"base_success={res.base_success['mean']} combined_success={res.combined_success['mean']}")
    return res


if __name__ == "__main__":
    main(tyro.cli(Args))
