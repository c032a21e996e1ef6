"""The diffusion policy's training state and how a fresh one is made (parameters, AdamW, keys).

Shared by `train` (which updates it) and `checkpoint` (which saves and restores it), so neither imports
the other's internals.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from dexfly.policies.diffusion.config import DiffusionConfig
from dexfly.policies.diffusion.normalizer import Normalizer
from dexfly.policies.diffusion.unet import make_model


@flax.struct.dataclass
class TrainState:
    """Everything needed to resume training (and to build a policy).

    step: int32 [] optimizer steps taken; params / ema_params: U-Net parameter pytrees;
    opt_state: optax AdamW state; normalizer: the data normaliser (fixes obs_dim and action_dim; obs_dim is
    the dimension of the observation features, i.e. raw obs_dim + config.obs_extra_dims).
    """

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    normalizer: Normalizer

    @property
    def obs_dim(self) -> int:
        return int(self.normalizer.obs.lo.shape[-1])

    @property
    def action_dim(self) -> int:
        return int(self.normalizer.action.lo.shape[-1])


def _keys(config: DiffusionConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(init key, data-order key, noise key) derived from config.seed."""
    base = jax.random.PRNGKey(config.seed)
    return jax.random.fold_in(base, 0), jax.random.fold_in(base, 1), jax.random.fold_in(base, 2)


def lr_schedule(config: DiffusionConfig) -> optax.Schedule:
    """Linear warmup 0 -> lr over warmup_steps, then cosine decay to 0 at total_steps."""
    return optax.warmup_cosine_decay_schedule(
        0.0, config.lr, config.warmup_steps, max(config.total_steps, config.warmup_steps + 1), 0.0
    )


def make_optimizer(config: DiffusionConfig) -> optax.GradientTransformation:
    """AdamW as in Diffusion Policy (betas 0.95, 0.999; eps 1e-8) with `lr_schedule`."""
    return optax.adamw(
        lr_schedule(config), b1=config.adam_b1, b2=config.adam_b2, eps=1e-8, weight_decay=config.weight_decay
    )


def init_params(config: DiffusionConfig, obs_dim: int, action_dim: int) -> Any:
    """Fresh U-Net parameters (key derived from config.seed)."""
    model = make_model(config, action_dim)
    return model.init(
        _keys(config)[0],
        jnp.zeros((1, config.pred_horizon, action_dim)),
        jnp.zeros((1,), jnp.int32),
        jnp.zeros((1, config.obs_horizon * obs_dim)),
    )["params"]


def init_train_state(config: DiffusionConfig, normalizer: Normalizer) -> TrainState:
    """A step-0 TrainState; obs_dim and action_dim are read from the normaliser's shapes."""
    od, ad = int(normalizer.obs.lo.shape[-1]), int(normalizer.action.lo.shape[-1])
    params = init_params(config, od, ad)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=make_optimizer(config).init(params),
        normalizer=normalizer,
    )
