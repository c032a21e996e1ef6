"""Where residual PPO's time goes: physics, diffusion sampling, the residual's forward pass, the PPO update.

    python experiments/benchmark_residual.py --base runs/dp_grasp --num-envs 32 --base-ddim-steps 4 [--devices 1]

Times four jitted functions on the same batch (one Grasp topology, `--num-envs` envs, one full episode each),
each after a warm-up call that compiles it (`dexfly.bench.residual_throughput`):
  physics   the unroll without a policy, replaying the base's own actions (the same contacts and solver work),
  base      the unroll with the diffusion base sampling a chunk every action_horizon steps,
  combined  the same with the residual hook (sampled corrections on every env),
  update    one whole PPO update (the combined rollout, statistics, epochs of minibatches).
Differences give the shares; prints env steps per second of the whole update and a table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import dexfly  # noqa: F401  (XLA flags before jax)
import jax
import tyro
from rich.console import Console
from rich.table import Table

import envs
from dexfly import bench
from dexfly.devices import DeviceConfig, size
from dexfly.policies.diffusion import load_run


@dataclass(frozen=True)
class Args:
    base: Path
    """A Grasp train_diffusion.py output folder."""
    object: str = "box_tea"
    num_envs: int = 32
    base_ddim_steps: int = 0
    """DDIM steps of the base (0: the checkpoint's)."""
    repeats: int = 2
    parallel: Annotated[DeviceConfig, tyro.conf.arg(name="")] = field(default_factory=DeviceConfig)
    """Devices that the envs are split over (no flag prefix: --devices; default all, on a CPU DEXFLY_CPU_DEVICES)."""


def main(args: Args):
    base, base_config, _ = load_run(args.base, task="grasp")
    if args.base_ddim_steps:
        base = base.replace(config=base_config.replace(num_inference_steps=args.base_ddim_steps))
    env = envs.make_cached("grasp", (("object", args.object),))
    mesh = args.parallel.mesh()
    r = bench.residual_throughput(env, base, args.num_envs, repeats=args.repeats, object_id=args.object, mesh=mesh)
    rows = {name: (p["mean_s"], p["compile_s"]) for name, p in r["parts"].items()}
    n, T = args.num_envs, r["episode_steps"]
    dev = jax.devices()[0]
    table = Table(title=f"residual PPO time per update: grasp, {n} envs x {T} steps, base DDIM {base.config.num_inference_steps} steps, "
                        f"{size(mesh)} x {dev.platform} ({dev.device_kind})")
    for col in ("part", "seconds", "share of the update", "compile s"):
        table.add_column(col)
    total = rows["update"][0]
    parts = {"physics (env steps)": rows["physics"][0], "diffusion sampling": rows["base"][0] - rows["physics"][0],
             "residual forward + sampling": rows["combined"][0] - rows["base"][0], "PPO update (statistics, epochs)": total - rows["combined"][0]}
    for name, sec in parts.items():
        table.add_row(name, f"{sec:.2f}", f"{100 * sec / total:.0f}%", "")
    for name, (sec, comp) in rows.items():
        table.add_row(f"[dim]{name} (measured)", f"{sec:.2f}", "", f"{comp:.0f}")
    Console().print(table)
    print(f"rl_env_steps_per_s={r['env_steps'] / total:.0f} physics_only_env_steps_per_s={r['env_steps'] / rows['physics'][0]:.0f}")


if __name__ == "__main__":
    main(tyro.cli(Args))
