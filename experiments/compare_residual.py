"""Compare finished residual runs from their files: the settings that differ, success per object, and per seed the
gain over the base and the difference from the first run.

    python experiments/compare_residual.py runs/fw_a runs/fw_b            # flywheel runs: their iter1/residual
    python experiments/compare_residual.py runs/res_a runs/res_b --iteration 2

Each argument is a train_residual.py output folder, a flywheel run's iter<i>/residual, or a flywheel run folder (its
`iter<--iteration>/residual`). The runs must have been evaluated on the same scenes (objects, environment, poses,
seeds). They are paired when they share the base checkpoint (its content hash): then each seed's base episodes are
the same, and the difference from the first run is the residuals' alone; otherwise the gains over each run's own base
are what compares. Ends with the line `gain=<run 1>,<run 2>,...` (mean combined - base over the seeds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro
from rich.console import Console
from rich.table import Table

from dexfly.policies.residual.compare import Comparison, compare, load_eval


@dataclass(frozen=True)
class Args:
    runs: Annotated[tuple[Path, ...], tyro.conf.Positional]
    """Residual run folders, or flywheel run folders (see --iteration); the first is the reference."""
    iteration: int = 1
    """For a flywheel run folder: whose iter<i>/residual to read."""


def main(args: Args) -> Comparison:
    try:
        cmp = compare([load_eval(p, args.iteration) for p in args.runs])
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"compare_residual: {e}") from None
    console = Console()
    for i, run in enumerate(cmp.runs):
        console.print(f"{i}: {run.path}")
    if cmp.settings:
        table = Table(title="settings that differ")
        for col in ("setting", *map(str, range(len(cmp.runs)))):
            table.add_column(col)
        for k, values in cmp.settings.items():
            table.add_row(k, *map(str, values))
        console.print(table)
    else:
        console.print("the runs' residual settings are identical")
    first = cmp.runs[0].result
    where = f"{first['eval_env_id']}, poses {', '.join(first['eval_pose_ids'])}, seeds {', '.join(map(str, first['seeds']))}"
    table = Table(title=f"success per object ({where}); base -> combined")
    table.add_column("object")
    for i in range(len(cmp.runs)):
        table.add_column(str(i))
    for obj, rates in cmp.per_object.items():
        table.add_row(obj, *(f"{b:.2f} -> {c:.2f}" for b, c in zip(rates["base"], rates["combined"])))
    console.print(table)
    table = Table(title=f"over the seeds ({'paired: one base' if cmp.paired else 'unpaired: different bases'})")
    for col in ("run", "base", "combined", "gain over its base", "combined - run 0's"):
        table.add_column(col)
    for i, run in enumerate(cmp.runs):
        b, c = run.rates("base"), run.rates("combined")
        table.add_row(str(i), f"{b['mean']:.3f} ± {b['std']:.3f}", f"{c['mean']:.3f} ± {c['std']:.3f}", Comparison.summary(cmp.gain[i]),
                      "-" if i == 0 else Comparison.summary(cmp.vs_first[i]))
    console.print(table)
    print("gain=" + ",".join(f"{g.mean():.4f}" for g in cmp.gain))
    return cmp


if __name__ == "__main__":
    main(tyro.cli(Args))
