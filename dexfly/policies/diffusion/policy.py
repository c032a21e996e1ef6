"""Inference: raw observation history -> raw action chunk, by DDIM sampling with the EMA parameters."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from dexfly.policies.diffusion.config import DiffusionConfig
from dexfly.policies.diffusion.data import geometry_feature, history_steps, obs_features, phase_feature
from dexfly.policies.diffusion.normalizer import Normalizer
from dexfly.policies.diffusion.schedule import ddim_sample, make_schedule
from dexfly.policies.diffusion.unet import make_model
from dexfly.layout import history_init, history_push, obs_vector  # noqa: F401  (re-exported: the observation layout)


@flax.struct.dataclass
class DiffusionPolicy:
    """A trained policy: a pytree (params, normalizer) with a static config, safe to pass through jit/vmap.

    `policy(obs_history, key)` samples an action chunk; execute `chunk[:, :policy.action_horizon]`
    (chunk[:, 0] is the action for the newest observation in the history), then re-plan.
    """

    params: Any
    normalizer: Normalizer
    config: DiffusionConfig = flax.struct.field(pytree_node=False)

    @classmethod
    def from_state(cls, state: Any, config: DiffusionConfig, use_ema: bool = True) -> DiffusionPolicy:
        """From a train.TrainState (EMA parameters by default)."""
        return cls(state.ema_params if use_ema else state.params, state.normalizer, config)

    @property
    def obs_horizon(self) -> int:
        return self.config.obs_horizon

    @property
    def pred_horizon(self) -> int:
        return self.config.pred_horizon

    @property
    def action_horizon(self) -> int:
        return self.config.action_horizon

    @property
    def obs_dim(self) -> int:
        """Raw observation dimension (the normaliser works on features with config.obs_extra_dims more)."""
        return int(self.normalizer.obs.lo.shape[-1]) - self.config.obs_extra_dims

    @property
    def action_dim(self) -> int:
        return int(self.normalizer.action.lo.shape[-1])

    @property
    def uses_phase(self) -> bool:
        """Whether `sample` needs `step` (the policy conditions on the episode's phase: config.phase_steps)."""
        return self.config.phase_steps > 0

    @property
    def uses_geometry(self) -> bool:
        """Whether `sample` needs `half_extents` (the policy sees object sizes: config.obs_geometry)."""
        return self.config.obs_geometry > 0

    def sample(self, obs_history: jax.Array, key: jax.Array, step: jax.Array | None = None,
               half_extents: jax.Array | None = None) -> jax.Array:
        """Un-jitted sampling (use inside your own jit/scan).

        obs_history: [B, obs_horizon, obs_dim] raw (or [obs_horizon, obs_dim] for one sample);
        key: PRNG key; step: [B] (or []) env steps since the episode's reset at the newest observation, needed
        when the policy conditions on the phase (`uses_phase`), ignored otherwise; half_extents: [B, n_objects, 3]
        (or [n_objects, 3]) the scene's objects' bounding-box half-sizes (m, role order), needed when the policy sees
        geometry (`uses_geometry`), ignored otherwise.
        Returns raw actions [B, pred_horizon, action_dim] (or [pred_horizon, action_dim]).
        """
        if obs_history.ndim == 2:
            return self.sample(obs_history[None], key, None if step is None else jnp.reshape(step, (1,)),
                               None if half_extents is None else half_extents[None])[0]
        x_T = jax.random.normal(key, (obs_history.shape[0], self.config.pred_horizon, self.action_dim), jnp.float32)
        return self.sample_from_noise(obs_history, x_T, step, half_extents)

    def features(self, obs_history: jax.Array, step: jax.Array | None = None, half_extents: jax.Array | None = None) -> jax.Array:
        """The network's observation features [B, obs_horizon, obs_dim + config.obs_extra_dims], not normalised."""
        cfg = self.config
        feats = obs_features(obs_history.astype(jnp.float32), cfg.obs_quat_at, cfg.obs_rel_pos)
        B, H = obs_history.shape[:2]
        if cfg.phase_steps:
            if step is None:
                raise ValueError(f"this policy conditions on the episode's phase (phase_steps={cfg.phase_steps}): "
                                 "pass `step`, the env steps since reset at the newest observation")
            steps = history_steps(jnp.broadcast_to(jnp.asarray(step), (B,)), cfg.obs_horizon)
            feats = jnp.concatenate([feats, phase_feature(steps, cfg.phase_steps)], axis=-1)
        if cfg.obs_geometry:
            if half_extents is None:
                raise ValueError(f"this policy sees object geometry (obs_geometry={cfg.obs_geometry}): pass `half_extents`, "
                                 "the scene's objects' bounding-box half-sizes [B, n_objects, 3]")
            geo = geometry_feature(jnp.asarray(half_extents, jnp.float32), cfg.obs_geometry)  # [B, 3N]
            feats = jnp.concatenate([feats, jnp.broadcast_to(geo[:, None], (B, H, geo.shape[-1]))], axis=-1)
        return feats

    def sample_from_noise(self, obs_history: jax.Array, x_T: jax.Array, step: jax.Array | None = None,
                          half_extents: jax.Array | None = None) -> jax.Array:
        """`sample` with its one random draw given: DDIM (eta = 0) is deterministic given the initial noise, so
        this is a pure function (what `dexfly.export` serialises).

        obs_history: [B, obs_horizon, obs_dim] raw; x_T: [B, pred_horizon, action_dim] standard normal noise;
        step: [B] and half_extents [B, n_objects, 3] as in `sample`. Returns raw actions [B, pred_horizon, action_dim].
        """
        cfg = self.config
        B = obs_history.shape[0]
        feats = self.features(obs_history, step, half_extents)
        cond = self.normalizer.obs.normalize(feats).reshape(B, -1)
        model = make_model(cfg, self.action_dim)
        denoise = lambda x, t: model.apply({"params": self.params}, x, t, cond)  # noqa: E731
        x0 = ddim_sample(denoise, make_schedule(cfg.num_train_timesteps), x_T, cfg.num_inference_steps,
                         cfg.clip_sample)
        return self.normalizer.action.unnormalize(x0)

    def __call__(self, obs_history: jax.Array, key: jax.Array, step: jax.Array | None = None,
                 half_extents: jax.Array | None = None) -> jax.Array:
        """Jitted `sample`: [B, obs_horizon, obs_dim] raw, key[, step [B][, half_extents [B, n_objects, 3]]] ->
        [B, pred_horizon, action_dim] raw."""
        return sample_actions(self, obs_history, key, step, half_extents)


sample_actions = jax.jit(DiffusionPolicy.sample)
sample_actions.__doc__ = """jit(DiffusionPolicy.sample): (policy, obs_history, key, step=None) -> action chunk (raw units).
Vmappable: jax.vmap(sample_actions, in_axes=(None, 0, 0)) maps over an extra leading axis."""
