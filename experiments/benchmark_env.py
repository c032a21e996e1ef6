"""Throughput of the batched MJX tasks against sequential C MuJoCo on the same model, in one run.

For each task and batch size: physics steps/s (a jitted loop of `mjx.step` with fixed controls,
all envs counted) and control steps/s (the full env `step`: IK + `n_substeps` physics steps), excluding
compile time (reported separately). In the same run, C MuJoCo `mj_step` on the same scene, one env, one
thread, and the C twin's full control step (`dexfly.cpu_sim.CpuEnv`). The measurements are `dexfly.bench`'s;
experiments/benchmark.py runs them (and every other stage) with a JSON record.

    python experiments/benchmark_env.py --tasks grasp pour lift handover --batch-sizes 1 16 64 256 1024
    python experiments/benchmark_env.py --tasks grasp --friction-cones pyramidal elliptic   # the cones side by side
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field, replace

import dexfly  # noqa: F401  (XLA flags before jax)
import jax
import tyro
from rich.console import Console
from rich.table import Table

import envs
from dexfly import bench
from envs.base import EnvConfig
from envs.scene import FRICTION_CONES


@dataclass(frozen=True)
class Args:
    tasks: tuple[str, ...] = ("grasp", "pour", "lift", "handover")
    batch_sizes: tuple[int, ...] = (1, 16, 64, 256, 1024)
    """Batch sizes to time (add 4096 on a GPU)."""
    steps: int = 50
    """Control steps per timed scan (physics scans run steps * n_substeps)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The envs' settings (--env.impl warp for MuJoCo Warp)."""
    c_seconds: float = 3.0
    """Wall time to spend timing each C MuJoCo measurement."""
    friction_cones: tuple[str, ...] = ()
    """Time each task once per friction cone (pyramidal, elliptic: EnvConfig.friction_cone), side by side; empty:
    once, with --env's setting (by default the task's own cone)."""


def main(args: Args) -> None:
    device = jax.devices()[0]
    console = Console()
    console.print(f"device: {device.device_kind} ({device.platform}), host {platform.processor() or platform.machine()}, impl={args.env.impl}")
    table = Table(title="env throughput (steps/s; physics counts every env's mjx.step)")
    for col in ("task", "cone", "engine", "batch", "batching", "physics steps/s", "control steps/s", "compile (s)"):
        table.add_column(col, justify="right")
    configs = [replace(args.env, friction_cone=c) for c in args.friction_cones] or [args.env]
    for task in args.tasks:
        for config in configs:
            env = envs.make(task, config)
            cone = {v: k for k, v in FRICTION_CONES.items()}[env.mj_model.opt.cone]
            c = bench.c_mujoco_throughput(env, args.c_seconds)
            table.add_row(task, cone, "C mj_step (1 thread)", "1", "-", f"{c['physics_sps']:,.0f}", f"{c['control_sps']:,.0f}", "-")
            console.print(f"{task} {cone}: C MuJoCo {c['physics_sps']:,.0f} physics steps/s, {c['control_sps']:,.0f} control steps/s")
            for batch in args.batch_sizes:
                try:
                    r = bench.env_throughput(env, batch, args.steps)
                except Exception as exc:  # out of memory at large batches: report and stop growing
                    console.print(f"{task} batch {batch}: failed ({type(exc).__name__}: {str(exc)[:120]})")
                    break
                table.add_row(task, cone, f"MJX {config.impl}", str(batch), r["path"], f"{r['physics_sps']:,.0f}", f"{r['control_sps']:,.0f}",
                              f"{r['compile_s']:.1f}")
                console.print(f"{task} {cone} batch {batch} ({r['path']}): {r['physics_sps']:,.0f} physics steps/s, "
                              f"{r['control_sps']:,.0f} control steps/s")
    console.print(table)


if __name__ == "__main__":
    main(tyro.cli(Args))
