"""Throughput of the batched MJX tasks against sequential C MuJoCo on the same model, in one run.

For each task and batch size: physics steps/s (a jitted `lax.scan` of `mjx.step` with fixed controls,
all envs counted) and control steps/s (the full env `step`: IK + `n_substeps` physics steps), excluding
compile time (reported separately). In the same run, C MuJoCo `mj_step` on the same scene, one env, one
thread, and the C twin's full control step (`dexfly.cpu_sim.CpuEnv`).

    python experiments/benchmark_env.py --tasks grasp pour lift handover --batch-sizes 1 16 64 256 1024
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field

import dexfly  # noqa: F401  (XLA flags before jax)
import jax
import jax.numpy as jnp
import mujoco
import tyro
from mujoco import mjx
from rich.console import Console
from rich.table import Table

import envs
from dexfly.cpu_sim import CpuEnv
from envs.base import EnvConfig


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


def _time(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    compile_and_run = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, compile_and_run, out


def bench_mjx(env, batch: int, steps: int):
    scenes = env.make_scenes([env.default_scene()] * batch)
    states = env.reset_batch(scenes, jax.random.split(jax.random.PRNGKey(0), batch))
    action = jnp.broadcast_to(jnp.asarray(env.home_action()), (batch, env.action_dim))
    n_phys = steps * env.n_substeps

    @jax.jit
    def physics(states):
        def one(scene, d):
            m = env.model_for(scene)
            return jax.lax.fori_loop(0, n_phys, lambda _, dd: mjx.step(m, dd), d)

        return env.batched(one)(states.info["scene"], states.data).qpos

    @jax.jit
    def control(states):
        def body(s, _):
            return env.batched(env.step)(s, action), None

        return jax.lax.scan(body, states, None, length=steps)[0].data.qpos

    t_phys, c_phys, _ = _time(physics, states)
    t_ctrl, c_ctrl, _ = _time(control, states)
    return {
        "physics_sps": batch * n_phys / t_phys,
        "control_sps": batch * steps / t_ctrl,
        "compile_s": max(c_phys - t_phys, 0) + max(c_ctrl - t_ctrl, 0),
    }


def bench_c(env, seconds: float):
    cpu = CpuEnv(env)
    cpu.reset(env.default_scene())
    m, d = cpu.model, cpu.data
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            mujoco.mj_step(m, d)
        n += 100
    physics = n / (time.perf_counter() - t0)
    cpu.reset(env.default_scene())
    action = env.home_action()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        cpu.step(action)
        n += 1
    return {"physics_sps": physics, "control_sps": n / (time.perf_counter() - t0)}


def main(args: Args) -> None:
    device = jax.devices()[0]
    console = Console()
    console.print(f"device: {device.device_kind} ({device.platform}), host {platform.processor() or platform.machine()}, impl={args.env.impl}")
    table = Table(title="env throughput (steps/s; physics counts every env's mjx.step)")
    for col in ("task", "engine", "batch", "physics steps/s", "control steps/s", "compile (s)"):
        table.add_column(col, justify="right")
    for task in args.tasks:
        env = envs.make(task, args.env)
        c = bench_c(env, args.c_seconds)
        table.add_row(task, "C mj_step (1 thread)", "1", f"{c['physics_sps']:,.0f}", f"{c['control_sps']:,.0f}", "-")
        console.print(f"{task}: C MuJoCo {c['physics_sps']:,.0f} physics steps/s, {c['control_sps']:,.0f} control steps/s")
        for batch in args.batch_sizes:
            try:
                r = bench_mjx(env, batch, args.steps)
            except Exception as exc:  # out of memory at large batches: report and stop growing
                console.print(f"{task} batch {batch}: failed ({type(exc).__name__}: {str(exc)[:120]})")
                break
            table.add_row(task, f"MJX {args.env.impl}", str(batch), f"{r['physics_sps']:,.0f}", f"{r['control_sps']:,.0f}", f"{r['compile_s']:.1f}")
            console.print(f"{task} batch {batch}: {r['physics_sps']:,.0f} physics steps/s, {r['control_sps']:,.0f} control steps/s")
    console.print(table)


if __name__ == "__main__":
    main(tyro.cli(Args))
