"""Augmentation throughput: batched MJX generator vs the same generator one attempt at a time in C MuJoCo.

    python experiments/benchmark_augment.py --batch-size 64 --num-batches 2 --cpu-attempts 4

MJX: `augment` on the Grasp seed over C_aug = 15 poses x 3 environments; successful demos per second of
execution (compile time excluded, reported separately). C MuJoCo (MimicGen-style): the same attempts (same
configurations, plans and per-step generator, jitted once for a single attempt) executed sequentially with
`dexfly.cpu_sim.CpuEnv`, reading the live object pose at every step. Prints a table and the ratio. The
measurements are `dexfly.bench`'s (experiments/benchmark.py --stages augment runs them with a JSON record).
"""

from __future__ import annotations

from dataclasses import dataclass

import dexfly  # noqa: F401  (XLA flags before jax)
import tyro
from rich.console import Console
from rich.table import Table

from dexfly import bench


@dataclass(frozen=True)
class Args:
    batch_size: int = 64
    num_batches: int = 2
    """MJX batches to time (attempts = batch_size x num_batches)."""
    cpu_attempts: int = 4
    """Attempts executed one at a time in C MuJoCo."""
    num_poses: int = 15
    num_env_ids: int = 3
    """The first N catalog environments in C_aug."""
    seed: int = 0


def main(args: Args):
    task = "grasp"
    caug = dict(num_poses=args.num_poses, num_env_ids=args.num_env_ids, seed=args.seed)
    n_mjx = args.batch_size * args.num_batches
    m = bench.augment_throughput(task, args.batch_size, args.num_batches, **caug)
    # attempts spread over the grid like the MJX run's first attempts (every k-th so several poses are covered)
    c = bench.augment_c_mujoco(task, args.cpu_attempts, stride=max(1, n_mjx // max(1, args.cpu_attempts)), **caug)
    table = Table(title=f"augmentation throughput: {task}, T={c['episode_steps']} steps/attempt")
    for col in ("engine", "attempts", "successes", "success rate", "compile (s)", "run (s)", "attempts/s", "successful demos/s"):
        table.add_column(col, justify="right")
    for name, r in ((f"MJX batch {args.batch_size}", m), ("C MuJoCo, 1 at a time", c)):
        table.add_row(name, str(r["attempts"]), str(r["successes"]), f"{r['success_rate']:.3f}", f"{r['compile_s']:.1f}", f"{r['run_s']:.1f}",
                      f"{r['attempts_per_s']:.3f}", f"{r['demos_per_s']:.3f}")
    Console().print(table)
    ratio_att = m["attempts_per_s"] / c["attempts_per_s"]
    ratio = m["demos_per_s"] / c["demos_per_s"] if c["demos_per_s"] > 0 else float("nan")
    print(f"mjx_demos_per_s={m['demos_per_s']:.4f} cpu_demos_per_s={c['demos_per_s']:.4f} ratio_demos={ratio:.2f} ratio_attempts={ratio_att:.2f} "
          f"mjx_compile_s={m['compile_s']:.1f}")
    return table


if __name__ == "__main__":
    main(tyro.cli(Args))
