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

from dexfly.flywheel.baselines import BaselineConfig, Baselines
from dexfly.flywheel.stages import RunOptions, run_guarded


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
    run: Annotated[RunOptions, tyro.conf.arg(name="")] = field(default_factory=RunOptions)
    """How the stages run (no flag prefix: --impl, --no-video, --no-progress, --stall-timeout, --devices, ...)."""


def main(args: Args) -> dict:
    console = Console()

    def body() -> dict:
        suite = Baselines(args.task, args.preset, args.out, methods=args.methods, iterations=args.iterations, seed=args.seed,
                          flywheel_run=args.flywheel_run, config=args.baseline, log=console.print, **args.run.run_kwargs())
        return suite.run()

    return run_guarded(args.task, f"baselines {args.task}", args.run.stall_timeout, body)


if __name__ == "__main__":
    main(tyro.cli(Args))
