"""Training: TrainState, AdamW (linear warmup + cosine decay), EMA, jitted (scanned) steps and `fit`.

Randomness is a pure function of (config.seed, step): the batch of step s is `batch_indices(data_key, s)`
and the diffusion noise / timesteps come from `fold_in(noise_key, s)`. So a run restored from a
checkpoint at step N continues exactly like an uninterrupted run.

With a device mesh (`dexfly.devices`), each batch is split over its devices (data parallel: the state and the
dataset are replicated, XLA averages the gradients across devices); `batch_size` must be a multiple of their number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from dexfly import devices, watchdog
from dexfly._jax_env import network_jit
from dexfly.policies.diffusion import checkpoint as ckpt
from dexfly.policies.diffusion.config import DiffusionConfig
from dexfly.policies.diffusion.data import WindowData, batch_indices, config_window_data
from dexfly.policies.diffusion.schedule import add_noise, make_schedule
from dexfly.policies.diffusion.state import TrainState, _keys, init_train_state, make_optimizer
from dexfly.policies.diffusion.unet import make_model
from dexfly.progress import progress_bar


def ema_decay(config: DiffusionConfig, step: jax.Array) -> jax.Array:
    """diffusers/Chi EMAModel power schedule: 0 for the first two updates, then
    clip(1 - (1 + (step-1)/inv_gamma)**-power, min_decay, max_decay). step = optimizer steps before this one."""
    s = jnp.maximum(jnp.asarray(step, jnp.float32) - 1.0, 0.0)
    val = 1.0 - (1.0 + s / config.ema_inv_gamma) ** (-config.ema_power)
    val = jnp.clip(val, config.ema_min_decay, config.ema_max_decay)
    return jnp.where(s <= 0, 0.0, val)


def diffusion_loss(params: Any, config: DiffusionConfig, obs: jax.Array, actions: jax.Array, key: jax.Array):
    """Epsilon-prediction MSE.

    obs [B, obs_horizon, obs_dim] and actions [B, pred_horizon, action_dim], both normalised. -> scalar.
    """
    B = actions.shape[0]
    sched = make_schedule(config.num_train_timesteps)
    kt, kn = jax.random.split(key)
    t = jax.random.randint(kt, (B,), 0, config.num_train_timesteps)
    noise = jax.random.normal(kn, actions.shape, actions.dtype)
    noisy = add_noise(sched, actions, noise, t)
    pred = make_model(config, actions.shape[-1]).apply({"params": params}, noisy, t, obs.reshape(B, -1))
    return jnp.mean((pred - noise) ** 2)


def _train_step(state: TrainState, data: WindowData, config: DiffusionConfig, mesh: Mesh | None = None) -> tuple[TrainState, jax.Array]:
    _, data_key, noise_key = _keys(config)
    idx = batch_indices(data_key, state.step, data.num_windows, config.batch_size)
    # The batch is gathered from the replicated dataset: only this constraint splits it (and its gradients) over the devices.
    obs, act = devices.constrain_batch(data.gather(idx), mesh)
    loss, grads = jax.value_and_grad(diffusion_loss)(
        state.params, config, obs, act, jax.random.fold_in(noise_key, state.step)
    )
    updates, opt_state = make_optimizer(config).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    d = ema_decay(config, state.step)
    ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema_params, params)
    return state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state), loss


train_step = network_jit(_train_step, static_argnames=("config", "mesh"))
train_step.__doc__ = """One optimizer step: (state, data, config, mesh=None) -> (state, loss []). Jitted; config and mesh static
(with a mesh, pass state and data replicated over it). On the CPU, compiled with XLA's fusion emitters (`network_jit`)."""


def _train_steps(state: TrainState, data: WindowData, config: DiffusionConfig, num_steps: int, mesh: Mesh | None = None):
    return jax.lax.scan(lambda s, _: _train_step(s, data, config, mesh), state, None, length=num_steps)


train_steps = network_jit(_train_steps, static_argnames=("config", "num_steps", "mesh"))
train_steps.__doc__ = """num_steps optimizer steps in one lax.scan: (state, data, config, num_steps, mesh=None) ->
(state, losses [num_steps]). Jitted; config, num_steps and mesh static (each distinct num_steps compiles once; with a
mesh, pass state and data replicated over it)."""


class FitResult(NamedTuple):
    state: TrainState
    losses: np.ndarray
    """[steps run in this call] float32 training losses"""
    data: WindowData


def fit(
    episodes: Sequence[Mapping[str, np.ndarray]],
    config: DiffusionConfig,
    *,
    num_steps: int | None = None,
    callback: Callable[[int, TrainState], Any] | None = None,
    callback_every: int = 0,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 0,
    scan_steps: int = 50,
    progress: bool = True,
    state: TrainState | None = None,
    mesh: Mesh | None = None,
) -> FitResult:
    """Train a Diffusion Policy on demonstration episodes.

    Args:
        episodes: list of {"obs": [T, obs_dim], "actions": [T, action_dim]} (raw units).
        config: hyper-parameters; trains until state.step == config.total_steps (or num_steps more steps).
        num_steps: optional cap on steps run by this call.
        callback: called as callback(step, state) every `callback_every` steps (and at the end), e.g. for
            closed-loop evaluation with `DiffusionPolicy.from_state(state, config)`.
        checkpoint_dir: directory (relative paths are made absolute); if it holds a checkpoint, training resumes from the latest one
            (ValueError if its architecture differs); saves every `checkpoint_every` steps and at the end.
        scan_steps: steps per jitted lax.scan chunk (chunks are cut shorter at callback/checkpoint steps).
        state: start from this state instead (the normaliser is taken from it).
        mesh: split every batch over these devices (`dexfly.devices`; None: one device).
    Returns:
        FitResult(state, losses [steps run by this call], data).
    """
    devices.check_batch(config.batch_size, mesh, "batch_size")
    if state is None and checkpoint_dir is not None:
        od, ad = (np.shape(episodes[0]["obs"])[-1], np.shape(episodes[0]["actions"])[-1])
        state = ckpt.restore_latest(checkpoint_dir, config, obs_dim=od + config.obs_extra_dims, action_dim=ad)
    data, normalizer = config_window_data(episodes, config, None if state is None else state.normalizer)
    if state is None:
        state = init_train_state(config, normalizer)
    state, data = devices.replicate((state, data), mesh)
    start = int(state.step)
    end = config.total_steps if num_steps is None else min(config.total_steps, start + num_steps)
    events = {end}
    for every in (callback_every if callback else 0, checkpoint_every if checkpoint_dir else 0):
        if every > 0:
            events.update(range((start // every + 1) * every, end, every))
    events = sorted(e for e in events if e > start)

    losses: list[np.ndarray] = []
    step = start
    with progress_bar("diffusion", total=end, completed=start, enabled=progress) as bar:
        t0 = time.perf_counter()
        for ev in events:
            while step < ev:
                k = min(scan_steps, ev - step)
                state, chunk_losses = train_steps(state, data, config, k, mesh)
                chunk_losses = np.asarray(chunk_losses)
                losses.append(chunk_losses)
                step += k
                rate = (step - start) * config.batch_size / (time.perf_counter() - t0)
                bar.update(step, info=f"loss {float(chunk_losses.mean()):.4f}  {rate:,.0f} samples/s")
                watchdog.beat(f"diffusion training: step {step}/{end}")
            if checkpoint_dir is not None and (step == end or (checkpoint_every and step % checkpoint_every == 0)):
                ckpt.save_checkpoint(checkpoint_dir, state, config)
            if callback is not None and (step == end or (callback_every and step % callback_every == 0)):
                callback(step, state)
    out = np.concatenate(losses) if losses else np.zeros((0,), np.float32)
    return FitResult(state, out, data)


def num_parameters(params: Any) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))
