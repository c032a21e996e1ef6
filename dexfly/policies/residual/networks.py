"""The residual policy's networks (brax's PPO networks), its observation features and how its output
combines with the base action. No simulator is needed to import this.

Per arm the residual outputs 12 numbers, squashed into [-1, 1] by tanh: position 3, rotation vector 3,
hand targets 6. `combine` turns them into a correction of the base action (see ResidualConfig).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from brax.training.acme import running_statistics
from brax.training.agents.ppo import networks as ppo_networks

from dexfly import geometry, layout
from dexfly.policies.residual.config import ResidualConfig

RESIDUAL_DIM_PER_ARM = 12  # position 3, rotation vector 3, hand 6


class ResidualSpec(NamedTuple):
    """What the residual is built for: the task's observation layout and the hands' joint ranges."""

    n_objects: int
    n_arms: int
    hand_low: tuple[tuple[float, ...], ...]  # [n_arms][6] rad
    hand_high: tuple[tuple[float, ...], ...]

    @property
    def obs_layout(self) -> layout.ObsLayout:
        return layout.ObsLayout(self.n_objects, self.n_arms)

    @property
    def action_dim(self) -> int:
        return layout.ACTION_DIM_PER_ARM * self.n_arms

    @property
    def residual_dim(self) -> int:
        return RESIDUAL_DIM_PER_ARM * self.n_arms

    def feature_dim(self, config: ResidualConfig) -> int:
        lay = self.obs_layout
        dim = lay.dim + 2 * len(lay.quaternion_slots()) + 3 * len(lay.relative_position_pairs())
        return dim + self.action_dim * config.obs_base_action + 3 * self.n_objects * config.obs_geometry

    def to_dict(self) -> dict:
        return {"n_objects": self.n_objects, "n_arms": self.n_arms, "hand_low": [list(x) for x in self.hand_low],
                "hand_high": [list(x) for x in self.hand_high]}

    @classmethod
    def from_dict(cls, d: dict) -> ResidualSpec:
        return cls(int(d["n_objects"]), int(d["n_arms"]), tuple(tuple(float(v) for v in x) for x in d["hand_low"]),
                   tuple(tuple(float(v) for v in x) for x in d["hand_high"]))

    @classmethod
    def of_env(cls, env) -> ResidualSpec:
        """From a TaskEnv (duck-typed: roles, arms, hand_ctrl_low/high)."""
        return cls(len(env.roles), len(env.arms), tuple(tuple(float(v) for v in r) for r in env.hand_ctrl_low),
                   tuple(tuple(float(v) for v in r) for r in env.hand_ctrl_high))


def features(spec: ResidualSpec, config: ResidualConfig, obs: jax.Array, base_action: jax.Array, half_extents: jax.Array) -> jax.Array:
    """The residual's input [B, F]: s_obj and s_prop (`obs_vector` [B, D], quaternions as sign-free rot6d, plus
    end-effector-minus-object positions), optionally the base action [B, A] and the objects' half-extents
    [B, n_objects, 3] (m)."""
    lay = spec.obs_layout
    parts = [layout.obs_features(obs, lay.quaternion_slots(), lay.relative_position_pairs())]
    if config.obs_base_action:
        parts.append(base_action)
    if config.obs_geometry:
        parts.append(half_extents.reshape(half_extents.shape[0], -1))
    return jnp.concatenate(parts, axis=-1)


def combine(spec: ResidualSpec, config: ResidualConfig, base_action: jax.Array, delta: jax.Array) -> jax.Array:
    """Combined action [B, A] = base [B, A] corrected by delta [B, n_arms * 12] in [-1, 1].

    A component whose alpha is 0 is returned exactly as the base's (bit for bit); a corrected rotation is
    re-orthonormalised and corrected hand targets are clipped to the joint ranges, so the result is a valid action.
    """
    if config.alpha_pos == config.alpha_rot == config.alpha_hand == 0:
        return base_action
    a = layout.split_action(base_action, spec.n_arms)
    d = delta.reshape(*delta.shape[:-1], spec.n_arms, RESIDUAL_DIM_PER_ARM)
    pos, rot6d, hand = a.pos, a.rot6d, a.hand
    if config.alpha_pos:
        pos = pos + config.alpha_pos * d[..., 0:3]
    if config.alpha_rot:
        rot = geometry.mat_from_axis_angle(config.alpha_rot * d[..., 3:6]) @ geometry.mat_from_rot6d(rot6d)
        rot6d = geometry.rot6d_from_mat(rot)
    if config.alpha_hand:
        low, high = jnp.asarray(spec.hand_low, jnp.float32), jnp.asarray(spec.hand_high, jnp.float32)
        hand = jnp.clip(hand + config.alpha_hand * (high - low) * d[..., 6:12], low, high)
    return layout.join_action(pos, rot6d, hand)


def squash(raw: jax.Array) -> jax.Array:
    """Raw Gaussian residual action -> delta in [-1, 1] (tanh)."""
    return jnp.tanh(raw)


def make_networks(spec: ResidualSpec, config: ResidualConfig) -> ppo_networks.PPONetworks:
    """brax PPO networks: a Gaussian policy MLP (state-independent log std) whose mean layer starts at zero, a
    value MLP, observations normalised by running statistics. The sampled (raw) action is squashed by `squash`
    before `combine`; the squash belongs to the environment side, so PPO's likelihoods are the Gaussian's. With
    the zero mean layer the untrained policy's mean correction is 0: the combined policy's mean is the base."""
    return ppo_networks.make_ppo_networks(
        spec.feature_dim(config), spec.residual_dim,
        preprocess_observations_fn=running_statistics.normalize,
        policy_hidden_layer_sizes=config.hidden, value_hidden_layer_sizes=config.value_hidden,
        distribution_type="normal", noise_std_type="log", init_noise_std=config.init_noise_std,
        mean_kernel_init_fn=lambda: jax.nn.initializers.zeros,  # brax calls it to build the initializer
    )


__all__ = ["RESIDUAL_DIM_PER_ARM", "ResidualSpec", "combine", "features", "make_networks", "squash"]
