"""Where residual PPO's time goes: physics, diffusion sampling, the residual's forward pass, the PPO update.

    python experiments/benchmark_residual.py --base runs/dp_grasp --num-envs 32 --base-ddim-steps 4

Times four jitted functions on the same batch (one Grasp topology, `--num-envs` envs, one full episode each),
each after a warm-up call that compiles it:
  physics   the unroll with a constant action (no policy),
  base      the unroll with the diffusion base sampling a chunk every action_horizon steps,
  combined  the same with the residual hook (sampled corrections on every env),
  update    one whole PPO update (the combined rollout, statistics, epochs of minibatches).
Differences give the shares; prints env steps per second of the whole update and a table.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import dexfly  # noqa: F401  (XLA flags before jax)
import jax
import jax.numpy as jnp
import tyro
from rich.console import Console
from rich.table import Table

import envs
from dexfly.policies.diffusion import load_run
from dexfly.policies.residual import ResidualConfig, ResidualSpec
from dexfly.policies.residual import train as rt
from dexfly.unroll import unroll


@dataclass(frozen=True)
class Args:
    base: Path
    """A Grasp train_diffusion.py output folder."""
    object: str = "box_tea"
    num_envs: int = 32
    base_ddim_steps: int = 0
    """DDIM steps of the base (0: the checkpoint's)."""
    repeats: int = 2


def _time(fn, *args, repeats: int):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) / repeats, compile_s


def _constant(action, params, carry, step, key):
    return carry, jnp.broadcast_to(action, step.base_action.shape), None


def main(args: Args):
    base, base_config, _ = load_run(args.base, task="grasp")
    if args.base_ddim_steps:
        base = base.replace(config=base_config.replace(num_inference_steps=args.base_ddim_steps))
    env = envs.make_cached("grasp", (("object", args.object),))
    n, T = args.num_envs, env.episode_steps
    config = ResidualConfig(num_envs=n, explore_steps=1)
    spec = ResidualSpec.of_env(env)
    state = rt.init_state(config, spec)
    pool = env.make_scenes(env.sample_scenes(jax.random.PRNGKey(0), n, envs.SceneSet(objects={"object": (args.object,)}, sample_poses=True)))
    start = jax.jit(env.batched(env.reset))(pool, jax.random.split(jax.random.PRNGKey(1), n))
    home = jnp.asarray(env.home_action())
    hook = functools.partial(rt.residual_hook, spec, config, False)
    params = rt.HookParams(state.params.policy, state.normalizer, True)
    record = lambda step, action, after, extras: after.success  # noqa: E731
    physics = jax.jit(lambda s, k: unroll(env, None, s, k, num_steps=T, hook=functools.partial(_constant, home), record=record)[1])
    with_base = jax.jit(lambda s, k: unroll(env, base, s, k, num_steps=T, record=record)[1])
    combined = jax.jit(lambda s, k: unroll(env, base, s, k, num_steps=T, hook=hook, hook_params=params, record=record)[1])
    update = rt.make_update(config, spec, (env,), base)
    key = jax.random.PRNGKey(2)
    rows = {}
    rows["physics"] = _time(physics, start, key, repeats=args.repeats)
    rows["base"] = _time(with_base, start, key, repeats=args.repeats)
    rows["combined"] = _time(combined, start, key, repeats=args.repeats)
    update_state = state.replace(env_steps=jnp.asarray(1, jnp.int32))  # epsilon = 1: every env runs the residual
    rows["update"] = _time(update, update_state, (pool,), key, repeats=args.repeats)
    steps = n * T
    dev = jax.devices()[0]
    table = Table(title=f"residual PPO time per update: grasp, {n} envs x {T} steps, base DDIM {base.config.num_inference_steps} steps, "
                        f"{dev.platform} ({dev.device_kind})")
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
    print(f"rl_env_steps_per_s={steps / total:.0f} physics_only_env_steps_per_s={steps / rows['physics'][0]:.0f}")


if __name__ == "__main__":
    main(tyro.cli(Args))
