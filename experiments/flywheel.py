"""The data flywheel end to end: warm-up, then self-improving iterations, then the paper's Table 1.

    python experiments/flywheel.py --task grasp --preset tiny --iterations 2 --out runs/flywheel_tiny
    python experiments/flywheel.py --task grasp --preset cpu --out runs/flywheel_grasp
    python experiments/flywheel.py --task grasp --preset cpu --out runs/flywheel_grasp2 --donors runs/flywheel_grasp

Presets and per-iteration object / environment / pose sets are data: assets/schedules/<task>.json. Every
stage writes its outputs atomically and then a record; rerunning the same command skips finished stages and
resumes an unfinished one (diffusion and residual training from their last checkpoint). A finished stage whose
settings changed is an error unless --redo-from <stage> is given (that stage and all later ones are redone).
--stop-after <stage> ends the run after that stage. To try a residual setting (edited in the schedule) on another run's
iteration-1 base, whose earlier stages are copied:

    python experiments/flywheel.py --task grasp --preset cpu --out runs/try_residual --donors runs/flywheel_grasp --stop-after iter1/residual

Ends by printing Table 1 and the line `t_oep_success=<i1>,<i2>,...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import dexfly  # noqa: F401  (XLA flags before jax)
import tyro
from rich.console import Console

from dexfly.flywheel.loop import Flywheel
from dexfly.flywheel.stages import RunOptions, run_guarded


@dataclass(frozen=True)
class Args:
    task: str = "grasp"
    preset: str = "tiny"
    """A preset of assets/schedules/<task>.json: tiny (minutes on a CPU), cpu, paper (a GPU)."""
    iterations: int = 3
    """Flywheel iterations n (past the schedule's last entry, it repeats)."""
    out: Path = Path("runs/flywheel")
    seed: int = 0
    redo_from: str | None = None
    """Redo this stage (e.g. iter2/residual) and every later one; their outputs are removed first."""
    stop_after: str | None = None
    """Stop after this stage (e.g. iter1/residual) and report what is done; the same command without it goes on."""
    residual: bool = True
    """Ablation --no-residual: rollouts by the base policy alone, no residual stage (a run of its own: another --out)."""
    augment_rollouts: bool = True
    """Ablation --no-augment-rollouts: D_(i+1) is the successful rollouts themselves, without A_EP (another --out)."""
    donors: tuple[Path, ...] = ()
    """Finished runs of the same task, preset and seed whose identical stages (same settings and inputs: warm-up,
    iteration 1's base, ...) are copied instead of recomputed; each copied stage keeps its record and donor."""
    run: Annotated[RunOptions, tyro.conf.arg(name="")] = field(default_factory=RunOptions)
    """How the stages run (no flag prefix: --impl, --no-video, --no-progress, --stall-timeout, --devices, ...)."""


def main(args: Args) -> dict:
    console = Console()

    def body() -> dict:
        fw = Flywheel(args.task, args.preset, args.out, iterations=args.iterations, seed=args.seed, log=console.print,
                      residual=args.residual, augment_rollouts=args.augment_rollouts, donors=args.donors,
                      stop_after=args.stop_after, **args.run.run_kwargs())
        if args.redo_from:
            removed = fw.redo_from(args.redo_from)
            console.print(f"redoing from {args.redo_from}: forgot {removed or 'nothing (not run yet)'}")
        return fw.run()

    return run_guarded(args.task, f"flywheel {args.task}", args.run.stall_timeout, body)


if __name__ == "__main__":
    main(tyro.cli(Args))
