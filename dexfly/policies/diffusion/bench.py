"""Throughput of Diffusion Policy training and batched DDIM inference on the current JAX backend.

    python -m dexfly.policies.diffusion.bench [--widths 64 128 256] [--obs-dim 40] [--action-dim 15]
"""

from __future__ import annotations

import dexfly  # noqa: F401  (XLA flags before jax)

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from dexfly.policies.diffusion.config import DiffusionConfig
from dexfly.policies.diffusion.data import make_window_data
from dexfly.policies.diffusion.normalizer import Normalizer
from dexfly.policies.diffusion.policy import DiffusionPolicy, sample_actions
from dexfly.policies.diffusion.state import init_train_state
from dexfly.policies.diffusion.train import num_parameters, train_steps


def _timeit(fn, repeats: int) -> tuple[float, float]:
    """(first-call seconds incl. compile, best seconds per call over `repeats`)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return first, best


def bench_train(config: DiffusionConfig, obs_dim: int, action_dim: int, steps: int = 10, repeats: int = 2) -> dict:
    """Training samples/s with `steps` optimizer steps per jitted scan, on synthetic data (20 eps x 200 steps)."""
    rng = np.random.default_rng(0)
    eps = [{"obs": rng.normal(size=(200, obs_dim)).astype(np.float32),
            "actions": rng.normal(size=(200, action_dim)).astype(np.float32)} for _ in range(20)]
    data, norm = make_window_data(eps, config.obs_horizon, config.pred_horizon)
    state = init_train_state(config, norm)
    first, best = _timeit(lambda: train_steps(state, data, config, steps)[1], repeats)
    return {"params": num_parameters(state.params), "batch": config.batch_size, "compile_s": first - best,
            "step_ms": 1e3 * best / steps, "samples_per_s": config.batch_size * steps / best}


def bench_infer(config: DiffusionConfig, obs_dim: int, action_dim: int, batch: int, repeats: int = 3) -> dict:
    """DDIM action chunks/s for a batch of observation histories."""
    rng = np.random.default_rng(0)
    norm = Normalizer.fit(rng.normal(size=(100, obs_dim)), rng.normal(size=(100, action_dim)))
    state = init_train_state(config, norm)
    policy = DiffusionPolicy.from_state(state, config)
    obs = jnp.asarray(rng.normal(size=(batch, config.obs_horizon, obs_dim)), jnp.float32)
    key = jax.random.PRNGKey(0)
    first, best = _timeit(lambda: sample_actions(policy, obs, key), repeats)
    return {"batch": batch, "compile_s": first - best, "call_ms": 1e3 * best, "chunks_per_s": batch / best}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--widths", type=int, nargs="+", default=list(DiffusionConfig().down_dims))
    ap.add_argument("--obs-dim", type=int, default=40, help="e.g. 13 (one object) + 27 (one arm's prop)")
    ap.add_argument("--action-dim", type=int, default=15)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--infer-batches", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--skip-train", action="store_true")
    a = ap.parse_args(argv)
    cfg = DiffusionConfig(down_dims=tuple(a.widths), batch_size=a.batch)
    print(f"backend={jax.default_backend()} devices={jax.devices()} config down_dims={cfg.down_dims} "
          f"obs_dim={a.obs_dim} action_dim={a.action_dim} ddim_steps={cfg.num_inference_steps}")
    if not a.skip_train:
        r = bench_train(cfg, a.obs_dim, a.action_dim)
        print(f"train: {r['params']:,} params, batch {r['batch']}: {r['step_ms']:.1f} ms/step, "
              f"{r['samples_per_s']:,.0f} samples/s (compile {r['compile_s']:.1f} s)")
    for b in a.infer_batches:
        r = bench_infer(cfg, a.obs_dim, a.action_dim, b)
        print(f"infer: batch {b:5d}: {r['call_ms']:8.1f} ms/call, {r['chunks_per_s']:10,.1f} chunks/s "
              f"(compile {r['compile_s']:.1f} s)")


if __name__ == "__main__":
    main()
