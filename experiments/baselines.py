"""Baselines and ablations against the flywheel on the same T_OEP set: the paper's Tables 2 and 3 and Figure 5.

    python experiments/baselines.py --task grasp --preset tiny --iterations 2 --out runs/baselines_tiny
    python experiments/baselines.py --task grasp --preset cpu --methods all --out runs/baselines_grasp --flywheel-run runs/flywheel_grasp
    python experiments/baselines.py --task grasp --preset cpu --methods replay-1 flywheel --out runs/baselines_grasp

Methods (--methods, or all): human-default, human-enhanced, replay-1, replay-10, no-residual, no-aep, no-both,
flywheel (see docs/baselines.md). Each method is a resumable run folder under --out; rerunning skips what
finished. --flywheel-run reuses a finished flywheel run of the same task, preset and seed instead of running one.
Writes table2.json, table2.md, table3.md and figure5.png in --out (built from the evaluation files on disk) and
prints the tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import dexfly  # noqa: F401  (XLA flags before jax)
import tyro
from rich.console import Console

from dexfly import watchdog
from dexfly.devices import DeviceConfig
from dexfly.flywheel.baselines import BaselineConfig, Baselines
from dexfly.flywheel.stages import run_guarded


@dataclass(frozen=True)
class Args:
    task: str = "grasp"
    preset: str = "tiny"
    """A preset of assets/schedules/<task>.json: tiny (minutes on a CPU), cpu, paper (a GPU)."""
    methods: tuple[str, ...] = ("all",)
    """Method ids, or all: human-default human-enhanced replay-1 replay-10 no-residual no-aep no-both flywheel."""
    iterations: int = 3
    """The flywheel's iterations n: the replays cover its last iteration's scenarios and dataset size."""
    out: Path = Path("runs/baselines")
    flywheel_run: Path | None = None
    """A finished flywheel run folder (same task, preset, seed and iterations) to reuse for the `flywheel` row."""
    seed: int = 0
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    impl: str = "jax"
    """MJX implementation of every stage that simulates: jax, or warp (MuJoCo Warp, NVIDIA GPUs' fast path; pip install -e
    '.[warp]'; docs/multi_device.md). Part of the run's identity: a run is resumed with its own."""
    video: bool = True
    progress: bool = True
    stall_timeout: float = watchdog.DEFAULT_TIMEOUT_S
    """Seconds without progress after which a stage stops with an error (0: no watchdog); rerun to resume."""
    parallel: Annotated[DeviceConfig, tyro.conf.arg(name="")] = field(default_factory=DeviceConfig)
    """Devices that batches are split over (no flag prefix: --devices, ...)."""


def main(args: Args) -> dict:
    console = Console()

    def run() -> dict:
        suite = Baselines(args.task, args.preset, args.out, methods=args.methods, iterations=args.iterations, seed=args.seed,
                          flywheel_run=args.flywheel_run, config=args.baseline, log=console.print, progress=args.progress,
                          video=args.video, mesh=args.parallel.mesh(), impl=args.impl)
        return suite.run()

    return run_guarded(args.task, f"baselines {args.task}", args.stall_timeout, run)


if __name__ == "__main__":
    main(tyro.cli(Args))
