"""PPO loss of the residual policy: brax's GAE, networks and distributions, with a per-env mask.

brax's `compute_ppo_loss` has no mask, and progressive exploration needs one: an env whose episode ran the
base alone (probability 1 - epsilon) executed no residual action, so its steps must not enter the policy
gradient (their recorded residual samples were never executed). They still train the value function, which
estimates the return of the mixed policy being run. The rest is brax's loss: GAE (`compute_gae`), the
clipped surrogate on the Gaussian's log-likelihood ratio, the value MSE and an entropy bonus.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from brax.training.agents.ppo import losses as brax_losses
from brax.training.agents.ppo import networks as ppo_networks
from brax.training.types import Transition

from dexfly.policies.residual.config import ResidualConfig


def _masked_mean(x: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def residual_ppo_loss(
    params: brax_losses.PPONetworkParams,
    normalizer_params: Any,
    data: Transition,
    policy_mask: jax.Array,
    valid: jax.Array,
    rng: jax.Array,
    ppo_network: ppo_networks.PPONetworks,
    config: ResidualConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """data: Transition [B, T] (extras: policy_extras.raw_action, policy_extras.log_prob); policy_mask [B]: the env
    ran the residual this episode; valid [B]: the env's simulation stayed finite (others enter no term).
    Returns (loss, metrics)."""
    data = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), data)  # time first: [T, B]
    dist = ppo_network.parametric_action_distribution
    logits = ppo_network.policy_network.apply(normalizer_params, params.policy, data.observation)
    baseline = ppo_network.value_network.apply(normalizer_params, params.value, data.observation)
    bootstrap = ppo_network.value_network.apply(normalizer_params, params.value, data.next_observation[-1])
    termination = 1.0 - data.discount
    vs, advantages = brax_losses.compute_gae(
        truncation=jnp.zeros_like(termination), termination=termination, rewards=data.reward * config.reward_scaling,
        values=baseline, bootstrap_value=bootstrap, lambda_=config.gae_lambda, discount=config.discount)
    w_pol = jnp.broadcast_to((policy_mask & valid)[None, :], advantages.shape).astype(jnp.float32)
    w_val = jnp.broadcast_to(valid[None, :], advantages.shape).astype(jnp.float32)

    mean = _masked_mean(advantages, w_pol)
    std = jnp.sqrt(_masked_mean((advantages - mean) ** 2, w_pol))
    advantages = (advantages - mean) / (std + 1e-8)
    log_prob = dist.log_prob(logits, data.extras["policy_extras"]["raw_action"])
    rho = jnp.exp(log_prob - data.extras["policy_extras"]["log_prob"])
    surrogate = jnp.minimum(rho * advantages, jnp.clip(rho, 1 - config.clip_eps, 1 + config.clip_eps) * advantages)
    policy_loss = -_masked_mean(surrogate, w_pol)

    v_loss = 0.5 * config.vf_coef * _masked_mean((jax.lax.stop_gradient(vs) - baseline) ** 2, w_val)
    entropy = _masked_mean(dist.entropy(logits, rng), w_pol)
    entropy_loss = -config.entropy_cost * entropy
    total = policy_loss + v_loss + entropy_loss
    return total, {"total_loss": total, "policy_loss": policy_loss, "v_loss": v_loss, "entropy_loss": entropy_loss,
                   "entropy": entropy, "approx_kl": _masked_mean(0.5 * (log_prob - data.extras["policy_extras"]["log_prob"]) ** 2, w_pol)}


__all__ = ["residual_ppo_loss"]
