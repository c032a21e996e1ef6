"""Train the state-based diffusion policy on dexfly datasets, with periodic closed-loop evaluation.

    python experiments/train_diffusion.py --datasets outputs/grasp_d1.hdf5 --task grasp --steps 6000
    python experiments/train_diffusion.py --datasets runs/fw/d3.hdf5 --init-from runs/fw/iter2/diffusion --steps 2000 --out runs/d3_warm

Checkpoints (orbax) go to `<out>/checkpoints`; re-running with the same `--out` resumes from the latest.
Evaluation scenes default to the training episodes' own scenes (object, environment, exact pose), at most
`--eval-scenes` of them. Writes `<out>/loss.png`, `<out>/eval.json`, `<out>/policy.json` (task, dims,
datasets) and ends with `success_rate=<float>` (mean over `--eval-seeds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import dexfly  # noqa: F401  (XLA flags before jax)
import tyro
from rich.console import Console
from rich.table import Table

import envs
from dexfly import dataset, watchdog
from dexfly.devices import DeviceConfig
from dexfly.policies.diffusion import DiffusionConfig, num_parameters
from dexfly.policies.diffusion.run import task_config, train_run


@dataclass(frozen=True)
class Args:
    datasets: tuple[Path, ...]
    """Training dataset files (dexfly HDF5)."""
    task: str = "grasp"
    out: Path = Path("runs/diffusion")
    size: str = "default"
    """'default' (CPU-sized U-Net) or 'paper' (256, 512, 1024 widths)."""
    steps: int = 6000
    """Optimizer steps (6000 at batch 256: ~25 min on a 2-core CPU)."""
    batch_size: int = 256
    """Training windows per step (all devices together); a multiple of the device count."""
    lr: float = 1e-3
    seed: int = 0
    init_from: Path | None = None
    """A diffusion run folder whose latest weights start this run (fresh optimiser, the new data's normaliser), as the
    flywheel warm-starts each iteration's base from the previous one; its network and features must match these flags.
    Used only when --out holds no checkpoint yet (a rerun resumes from --out's own)."""
    eval_every: int = 0
    """Closed-loop evaluation every N steps (0: only at the end)."""
    eval_scenes: int = 20
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    checkpoint_every: int = 1000
    quat_features: bool = True
    """Feed observation quaternions to the network as sign-invariant rot6d features (sets policy.obs_quat_at)."""
    relative_features: bool = False
    """Also feed end-effector-minus-object positions for every (arm, object) (sets policy.obs_rel_pos)."""
    phase_feature: bool = False
    """Also feed the episode's phase, step / episode length (sets policy.phase_steps to the task's episode steps)."""
    geometry_feature: bool = False
    """Also feed every object's bounding-box half-extents (sets policy.obs_geometry to the task's object count)."""
    stall_timeout: float = watchdog.DEFAULT_TIMEOUT_S
    """Seconds without progress after which training stops with an error (0: no watchdog); rerun to resume."""
    policy: DiffusionConfig = field(default_factory=DiffusionConfig)
    """Network and schedule settings (horizons, widths, DDIM steps); --size paper overrides the widths."""
    parallel: Annotated[DeviceConfig, tyro.conf.arg(name="")] = field(default_factory=DeviceConfig)
    """Devices that batches are split over, and the multi-host setup (no flag prefix: --devices, --coordinator-address, ...)."""


def main(args: Args) -> float:
    if args.task not in envs.TASKS:
        raise SystemExit(f"unknown task {args.task!r}; available: {list(envs.TASKS)}")
    console = Console()
    try:
        episodes = dataset.load_episodes(args.datasets, task=args.task)
    except (OSError, dataset.DatasetError) as e:
        raise SystemExit(str(e)) from None
    config = args.policy if args.size == "default" else DiffusionConfig.paper()
    if args.size not in ("default", "paper"):
        raise SystemExit(f"unknown --size {args.size!r}; use 'default' or 'paper'")
    config = config.replace(total_steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            warmup_steps=min(config.warmup_steps, max(args.steps // 10, 1)))
    config = task_config(args.task, episodes, config, quat_features=args.quat_features, relative_features=args.relative_features,
                         phase_feature=args.phase_feature, geometry_feature=args.geometry_feature)
    console.print(f"{args.task}: {len(episodes)} episodes, {sum(len(e.actions) for e in episodes)} steps, "
                  f"evaluation on up to {args.eval_scenes} of their scenes")
    try:
        with watchdog.stage(f"train_diffusion {args.task}", timeout_s=args.stall_timeout):
            result = train_run(args.task, episodes, args.out, config, datasets=tuple(str(p) for p in args.datasets),
                               eval_scenes=args.eval_scenes, eval_seeds=args.eval_seeds, eval_every=args.eval_every,
                               checkpoint_every=args.checkpoint_every, init_from=args.init_from, log=console.print,
                               mesh=args.parallel.mesh())
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None
    history, losses, seconds = result.history, result.losses, result.seconds

    table = Table(title=f"diffusion policy: {args.task}")
    for col in ("params", "steps", "final loss", "train time (s)", "success rate"):
        table.add_column(col)
    final = history[-1] if history else {"success_rate": float("nan"), "std": float("nan")}
    table.add_row(f"{num_parameters(result.state.params):,}", str(int(result.state.step)),
                  f"{float(losses[-50:].mean()):.4f}" if losses.size else "-", f"{seconds:.0f}",
                  f"{final['success_rate']:.3f} ± {final['std']:.3f}")
    console.print(table)
    print(f"success_rate={final['success_rate']}")
    return final["success_rate"]


if __name__ == "__main__":
    main(tyro.cli(Args))
