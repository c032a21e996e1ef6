"""DDPM noise schedule (squared-cosine, `squaredcos_cap_v2`), forward noising and DDIM sampling (eta = 0).

Follows diffusers' DDPMScheduler / DDIMScheduler with epsilon prediction, `set_alpha_to_one=True`,
`steps_offset=0`, `clip_sample=True` (range 1.0), `use_clipped_model_output=False`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class NoiseSchedule(NamedTuple):
    """Arrays of a discrete diffusion schedule, each [num_train_timesteps] float32."""

    betas: jax.Array
    alphas_cumprod: jax.Array


def squaredcos_cap_v2_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """betas[i] = min(1 - abar((i+1)/N) / abar(i/N), max_beta), abar(t) = cos((t + 0.008)/1.008 * pi/2)**2.

    Returns float64 [N].
    """
    abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    n = num_train_timesteps
    return np.array([min(1.0 - abar((i + 1) / n) / abar(i / n), max_beta) for i in range(n)], np.float64)


def make_schedule(num_train_timesteps: int = 100) -> NoiseSchedule:
    """The squared-cosine DDPM schedule (computed in float64, stored as float32)."""
    betas = squaredcos_cap_v2_betas(num_train_timesteps)
    ac = np.cumprod(1.0 - betas)
    return NoiseSchedule(jnp.asarray(betas, jnp.float32), jnp.asarray(ac, jnp.float32))


def add_noise(sched: NoiseSchedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """Forward process q(x_t | x_0): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.

    x0, noise: [B, ...]; t: [B] int -> [B, ...].
    """
    ac = sched.alphas_cumprod[t].reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.sqrt(ac) * x0 + jnp.sqrt(1.0 - ac) * noise


def ddim_timesteps(num_train_timesteps: int, num_inference_steps: int) -> np.ndarray:
    """DDIM's descending timesteps (diffusers 'leading' spacing): e.g. 100, 10 -> [90, 80, ..., 0]. int32 [S]."""
    ratio = num_train_timesteps // num_inference_steps
    return (np.arange(num_inference_steps) * ratio)[::-1].astype(np.int32)


def ddim_step(
    sched: NoiseSchedule,
    eps: jax.Array,
    t: jax.Array,
    x_t: jax.Array,
    step_ratio: int,
    clip_sample: bool = True,
) -> jax.Array:
    """One deterministic DDIM update x_t -> x_{t - step_ratio} (eta = 0).

    eps: predicted noise, x_t: current sample, both [B, ...]; t: scalar int timestep.
    Uses abar_prev = 1 when t - step_ratio < 0.
    """
    a_t = sched.alphas_cumprod[t]
    prev = t - step_ratio
    a_prev = jnp.where(prev >= 0, sched.alphas_cumprod[jnp.maximum(prev, 0)], 1.0)
    x0 = (x_t - jnp.sqrt(1.0 - a_t) * eps) / jnp.sqrt(a_t)
    if clip_sample:
        x0 = jnp.clip(x0, -1.0, 1.0)
    return jnp.sqrt(a_prev) * x0 + jnp.sqrt(1.0 - a_prev) * eps


def ddim_sample(
    denoise_fn,
    sched: NoiseSchedule,
    x_T: jax.Array,
    num_inference_steps: int,
    clip_sample: bool = True,
) -> jax.Array:
    """Run DDIM from pure noise x_T [B, ...] to a clean sample [B, ...] with `lax.scan`.

    denoise_fn(x_t [B, ...], t [B] int32) -> eps [B, ...].
    """
    n_train = sched.betas.shape[0]
    ts = jnp.asarray(ddim_timesteps(n_train, num_inference_steps))
    ratio = n_train // num_inference_steps

    def body(x, t):
        eps = denoise_fn(x, jnp.full(x.shape[:1], t, jnp.int32))
        return ddim_step(sched, eps, t, x, ratio, clip_sample), None

    x, _ = jax.lax.scan(body, x_T, ts)
    return x
