"""Augmentation throughput: batched MJX generator vs the same generator one attempt at a time in C MuJoCo.

    python experiments/benchmark_augment.py --batch-size 64 --num-batches 2 --cpu-attempts 4

MJX: `augment` on the Grasp seed over C_aug = 15 poses x 3 environments; successful demos per second of
execution (compile time excluded, reported separately). C MuJoCo (MimicGen-style): the same attempts (same
configurations, plans and per-step generator, jitted once for a single attempt) executed sequentially with
`dexfly.cpu_sim.CpuEnv`, reading the live object pose at every step. Prints a table and the ratio.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dexfly  # noqa: F401  (XLA flags before jax)
import jax
import jax.numpy as jnp
import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

import envs
from dexfly import dataset
from dexfly.augment import AugmentConfig, augment, gen_step
from dexfly.augment.config import with_counts
from dexfly.augment.generate import plan_attempt, setup
from dexfly.augment.schedule import init_carry
from dexfly.augment.sources import stack_plans
from dexfly.cpu_sim import CpuEnv
from dexfly.paths import DEMOS_DIR


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
    seed_ep = dataset.read_dataset(DEMOS_DIR / "grasp_seed.hdf5", task=task).episodes[0]
    caug = with_counts(AugmentConfig(), task, envs.episode_objects(seed_ep), num_poses=args.num_poses, num_env_ids=args.num_env_ids)
    n_mjx = args.batch_size * args.num_batches
    _, st = augment([seed_ep], task, caug, num_wanted=n_mjx, batch_size=args.batch_size, max_attempts=n_mjx, seed=args.seed, progress=False)

    # ---- the same generator, one attempt at a time, in C MuJoCo
    ctx = setup([seed_ep], task, caug, args.seed)
    env = ctx.cache.get(ctx.topos[0], ctx.configs[0].object_ids)
    cpu = CpuEnv(env)
    step_fn = jax.jit(gen_step, static_argnums=0)
    spec, plan_np, _ = plan_attempt(ctx, env, 0)
    plan = jax.tree.map(lambda x: x[0], stack_plans([plan_np]))
    t0 = time.perf_counter()
    jax.block_until_ready(step_fn(ctx.static, plan, init_carry(plan), jnp.asarray(seed_ep.object_poses[0]), jnp.asarray(0)))
    cpu_compile = time.perf_counter() - t0
    cpu_succ, cpu_time = 0, 0.0
    # attempts spread over the grid like the MJX run's first attempts (every k-th so several poses are covered)
    stride = max(1, n_mjx // max(1, args.cpu_attempts))
    for j in range(args.cpu_attempts):
        spec, plan_np, _ = plan_attempt(ctx, env, j * stride)
        plan = jax.tree.map(lambda x: x[0], stack_plans([plan_np]))
        t0 = time.perf_counter()
        cpu.reset(spec)
        carry = init_carry(plan)
        success = False
        for t in range(env.episode_steps):
            carry, action, _ = step_fn(ctx.static, plan, carry, jnp.asarray(cpu.object_pose(), jnp.float32), jnp.asarray(t))
            _, success, _ = cpu.step(np.asarray(action))
        cpu_time += time.perf_counter() - t0
        cpu_succ += int(success)

    mjx_attempts_s = st.attempts / st.run_seconds
    cpu_attempts_s = args.cpu_attempts / cpu_time
    mjx_demos_s = st.demos_per_second
    cpu_demos_s = cpu_succ / cpu_time
    table = Table(title=f"augmentation throughput: {task}, T={env.episode_steps} steps/attempt")
    for col in ("engine", "attempts", "successes", "success rate", "compile (s)", "run (s)", "attempts/s", "successful demos/s"):
        table.add_column(col, justify="right")
    table.add_row(f"MJX batch {args.batch_size}", str(st.attempts), str(st.successes), f"{st.success_rate:.3f}", f"{st.compile_seconds:.1f}",
                  f"{st.run_seconds:.1f}", f"{mjx_attempts_s:.3f}", f"{mjx_demos_s:.3f}")
    table.add_row("C MuJoCo, 1 at a time", str(args.cpu_attempts), str(cpu_succ), f"{cpu_succ / args.cpu_attempts:.3f}", f"{cpu_compile:.1f}",
                  f"{cpu_time:.1f}", f"{cpu_attempts_s:.3f}", f"{cpu_demos_s:.3f}")
    Console().print(table)
    ratio_att = mjx_attempts_s / cpu_attempts_s
    ratio = mjx_demos_s / cpu_demos_s if cpu_demos_s > 0 else float("nan")
    print(f"mjx_demos_per_s={mjx_demos_s:.4f} cpu_demos_per_s={cpu_demos_s:.4f} ratio_demos={ratio:.2f} ratio_attempts={ratio_att:.2f} "
          f"mjx_compile_s={st.compile_seconds:.1f}")
    return table


if __name__ == "__main__":
    main(tyro.cli(Args))
