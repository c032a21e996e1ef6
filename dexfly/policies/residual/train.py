"""Residual PPO on the frozen diffusion policy, batched in MJX: PureJaxRL's shape, brax's math.

    update = make_update(config, spec, envs, base)       # envs: one compiled env per object topology
    state = init_state(config, spec)
    state, metrics = update(state, pools, key)           # one jit: rollout, normaliser, epochs of minibatches

One update: every topology group resets its envs (`num_envs`, or `envs_per_object` per object it holds) in scenes drawn from its scene pool and runs a full
episode on the one unroll (`dexfly.unroll`): the base samples an action chunk for the whole batch every
`action_horizon` steps, the residual hook corrects every step's action in the envs whose episode draw came up
"residual" (probability epsilon = min(env_steps / explore_steps, 1)). Then the observation normaliser is
updated, and `update_epochs` epochs of `num_minibatches` minibatches (split along envs, whole episodes) take
clipped-PPO gradient steps (`losses.residual_ppo_loss`). Everything random is a pure function of
(config.seed, update index), so a resumed run continues exactly like an uninterrupted one.

With a device mesh (`dexfly.devices`), each group's episodes (a multiple of the device count) and
the minibatches (when their size is one too) are split over the devices; XLA reduces the gradients and the
normaliser's statistics across them.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from brax.training import gradients
from brax.training.acme import running_statistics
from brax.training.agents.ppo import losses as brax_losses
from brax.training.types import Transition
from jax.sharding import Mesh

from dexfly import devices
from dexfly.layout import obs_vector
from dexfly.policies.residual.config import ResidualConfig
from dexfly.policies.residual.losses import residual_ppo_loss
from dexfly.policies.residual.networks import ResidualSpec, combine, features, make_networks, squash
from dexfly.unroll import ChunkPolicy, Step, unroll
from envs.base import Scene, State, TaskEnv


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs: network params, optimiser state, observation statistics, counters."""

    params: brax_losses.PPONetworkParams
    opt_state: Any
    normalizer: running_statistics.RunningStatisticsState
    env_steps: jax.Array  # [] int32 env steps taken (all groups)
    updates: jax.Array  # [] int32 updates taken


class HookParams(NamedTuple):
    """What the residual hook reads each step (a pytree)."""

    policy: Any  # policy network params
    normalizer: running_statistics.RunningStatisticsState
    active: jax.Array  # [B] bool: this env runs the residual


def epsilon(config: ResidualConfig, env_steps: jax.Array) -> jax.Array:
    """Progressive exploration (Eq. 1): the probability that an episode runs the residual, min(steps / T, 1)."""
    return jnp.minimum(jnp.asarray(env_steps, jnp.float32) / config.explore_steps, 1.0)


def make_optimizer(config: ResidualConfig) -> optax.GradientTransformation:
    """Clipped Adam; with `desired_kl` its learning rate is a hyperparameter in the optimiser state (adapted by
    `adapt_lr`, saved and restored with it)."""
    adam = optax.inject_hyperparams(optax.adam)(learning_rate=config.lr) if config.desired_kl else optax.adam(config.lr)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adam)


def learning_rate(config: ResidualConfig, opt_state) -> jax.Array:
    """The learning rate the next gradient step uses []."""
    return opt_state[1].hyperparams["learning_rate"] if config.desired_kl else jnp.asarray(config.lr, jnp.float32)


def adapt_lr(config: ResidualConfig, opt_state, kl: jax.Array, measured: jax.Array):
    """The KL-adaptive schedule (`ResidualConfig.desired_kl`): lr / 1.5 when the minibatch's KL from the rollout
    policy is above twice the target, x 1.5 below half of it, kept within `lr_bounds`. `measured` []: the minibatch
    held residual steps at all (a minibatch of base-only episodes has no KL and leaves the rate alone)."""
    if not config.desired_kl:
        return opt_state
    clip_state, adam_state = opt_state
    lr = adam_state.hyperparams["learning_rate"]
    lr = jnp.where(kl > 2.0 * config.desired_kl, lr / 1.5, jnp.where(kl < 0.5 * config.desired_kl, lr * 1.5, lr))
    lr = jnp.where(measured, lr, adam_state.hyperparams["learning_rate"])
    lr = jnp.clip(lr, *config.lr_bounds).astype(adam_state.hyperparams["learning_rate"].dtype)
    return clip_state, adam_state._replace(hyperparams={**adam_state.hyperparams, "learning_rate": lr})


def _strong(tree):
    """Every leaf a strongly typed array: brax initialises some leaves weakly typed (the log std) or as Python
    floats (the normaliser's std_eps), which the first update returns as arrays, and jit would compile twice."""
    return jax.tree.map(lambda x: jax.lax.convert_element_type(jnp.asarray(x), jnp.asarray(x).dtype), tree)


def init_state(config: ResidualConfig, spec: ResidualSpec) -> TrainState:
    """Fresh networks (the policy's mean layer at zero), Adam, empty statistics; keyed by config.seed."""
    network = make_networks(spec, config)
    k_policy, k_value = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0))
    params = brax_losses.PPONetworkParams(policy=network.policy_network.init(k_policy), value=network.value_network.init(k_value))
    normalizer = running_statistics.init_state(jax.ShapeDtypeStruct((spec.feature_dim(config),), jnp.float32))
    params = _strong(params)
    return _strong(TrainState(params, make_optimizer(config).init(params), normalizer, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)))


def residual_hook(spec: ResidualSpec, config: ResidualConfig, deterministic: bool, params: HookParams, carry, step: Step, key):
    """Unroll hook: the residual's correction of the base action in the active envs.

    Returns (carry, action [B, A], extras {obs [B, F], raw_action [B, R], log_prob [B]}). Inactive envs execute
    the base action unchanged (bit for bit). `deterministic` uses the Gaussian's mean (evaluation). With
    `config.hold_steps` > 1 the carry holds the last decision (raw [B, R], log_prob [B]); between decisions the
    held correction is applied again and the extras repeat it (PPO reads the decision steps only).
    """
    network = make_networks(spec, config)
    dist = network.parametric_action_distribution
    obs = features(spec, config, obs_vector(step.state.obs), step.base_action, step.state.info["scene"].object_half_extents)
    logits = network.policy_network.apply(params.normalizer, params.policy, obs)
    raw = dist.mode(logits) if deterministic else dist.sample_no_postprocessing(logits, key)
    log_prob = dist.log_prob(logits, raw)
    if config.hold_steps > 1:
        if carry is not None:  # None only while `unroll` traces the carry's shape
            decide = step.t % config.hold_steps == 0
            raw, log_prob = jax.tree.map(lambda new, held: jnp.where(decide, new, held), (raw, log_prob), carry)
        carry = (raw, log_prob)
    active = jnp.broadcast_to(params.active, step.base_action.shape[:1])  # [B] (a scalar applies to all envs)
    action = jnp.where(active[:, None], combine(spec, config, step.base_action, squash(raw)), step.base_action)
    return carry, action, {"obs": obs, "raw_action": raw, "log_prob": log_prob}


def combined_hook(spec: ResidualSpec, config: ResidualConfig, deterministic: bool = True):
    """The residual hook bound to (spec, config, deterministic); `dexfly.unroll.jit_unroll` compiles it once per
    such triple. Pass HookParams(policy params, normalizer, active=True) as its hook_params."""
    return functools.partial(residual_hook, spec, config, deterministic)


def _record(step: Step, action, after: State, extras) -> dict:
    return {**extras, "reward": after.reward, "success": after.success, "nan": after.metrics["nan"]}


def per_decision(steps: dict[str, jax.Array], reward: jax.Array, hold: int) -> dict[str, jax.Array]:
    """Per-step records [B, T, ...] -> PPO's time steps, the residual's decisions [B, ceil(T / hold), ...]: each
    record at its decision step (every `hold`-th step from 0), and `reward` [B, T] summed over the steps the
    decision was held (the last hold may be shorter)."""
    num_steps = reward.shape[1]
    num_decisions = -(-num_steps // hold)
    summed = jnp.pad(reward, ((0, 0), (0, num_decisions * hold - num_steps))).reshape(reward.shape[0], num_decisions, hold).sum(-1)
    return {**{k: v[:, ::hold] for k, v in steps.items()}, "reward": summed}


def _mean_over(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of x [B] over the envs in mask [B]; NaN when the mask is empty (no episode of that kind ran)."""
    return jnp.sum(jnp.where(mask, x, 0)) / jnp.where(jnp.any(mask), jnp.sum(mask), jnp.nan)


def _take(pool: Scene, idx: jax.Array) -> Scene:
    return jax.tree.map(lambda x: x[idx], pool)


def make_learn(config: ResidualConfig, spec: ResidualSpec, batch: int, mesh: Mesh | None = None):
    """PPO's learning half of an update: (state, data, active, valid, key) -> (state, losses). `update_epochs` epochs,
    each a shuffle of the `batch` episodes into `num_minibatches` minibatches (whole episodes) and one clipped-PPO
    gradient step per minibatch (`losses.residual_ppo_loss`, brax's gradient step); the losses [epochs, minibatches].
    data: Transition [B, D] (a row per residual decision), active, valid [B]. With a `mesh`, each minibatch is split
    over its devices when its size is a multiple of their number (data-parallel gradients, reduced by XLA)."""
    if batch % config.num_minibatches:
        raise ValueError(f"{batch} episodes per update not divisible by num_minibatches={config.num_minibatches}")
    minibatch = batch // config.num_minibatches
    network = make_networks(spec, config)
    optimizer = make_optimizer(config)

    def loss_fn(params, normalizer, data, active, valid, key):
        return residual_ppo_loss(params, normalizer, data, active, valid, key, network, config)

    grad_step = gradients.gradient_update_fn(loss_fn, optimizer, pmap_axis_name=None, has_aux=True)

    def _update_epoch(carry, key):
        state, data, active, valid = carry
        k_perm, k_loss = jax.random.split(key)
        perm = jax.random.permutation(k_perm, batch)
        shuffle = lambda x: jnp.take(x, perm, axis=0).reshape(config.num_minibatches, minibatch, *x.shape[1:])  # noqa: E731
        mb = (jax.tree.map(shuffle, data), shuffle(active), shuffle(valid))
        if minibatch % devices.size(mesh) == 0:  # data-parallel gradients; otherwise XLA places the minibatch as it likes
            mb = devices.constrain_batch(mb, mesh, axis=1)
        mb = (*mb, jax.random.split(k_loss, config.num_minibatches))

        def _update_minibatch(carry, xs):
            params, opt_state = carry
            d, a, v, k = xs
            (_, metrics), params, opt_state = grad_step(params, state.normalizer, d, a, v, k, optimizer_state=opt_state)
            opt_state = adapt_lr(config, opt_state, metrics["approx_kl"], jnp.any(a & v))  # KL of the params the step started from
            return (params, opt_state), {**metrics, "lr": learning_rate(config, opt_state)}

        (params, opt_state), metrics = jax.lax.scan(_update_minibatch, (state.params, state.opt_state), mb)
        return (state.replace(params=params, opt_state=opt_state), data, active, valid), metrics

    def learn(state: TrainState, data: Transition, active: jax.Array, valid: jax.Array, key: jax.Array):
        (state, _, _, _), losses = jax.lax.scan(_update_epoch, (state, data, active, valid), jax.random.split(key, config.update_epochs))
        return state, losses

    return learn


def make_update(config: ResidualConfig, spec: ResidualSpec, envs: tuple[TaskEnv, ...], base: ChunkPolicy, mesh: Mesh | None = None,
                group_envs: tuple[int, ...] | None = None):
    """The jitted update: (state, pools, key) -> (state, metrics). `pools[g]` is group g's Scene pool [P, ...] and
    `group_envs[g]` its episodes per update (default: `config.num_envs` each; `ResidualConfig.group_envs` derives them
    from the objects per group). With a `mesh`, pass `state` and `pools` replicated over it (`devices.replicate`).
    The metrics' `scene_index` [B] is each episode's index in its group's pool, episodes in group order."""
    sizes = tuple(group_envs) if group_envs is not None else tuple(config.num_envs for _ in envs)
    if len(sizes) != len(envs):
        raise ValueError(f"{len(sizes)} group sizes for {len(envs)} topology groups")
    for size in sizes:
        devices.check_batch(size, mesh, "episodes per topology group")
    num_steps = envs[0].episode_steps  # the task's fixed episode length (every group is the same task)
    hold = config.hold_steps
    num_decisions = -(-num_steps // hold)  # the residual's decisions per episode (PPO's time steps)
    batch = sum(sizes)
    if batch % config.num_minibatches:
        raise ValueError(f"{batch} episodes per update ({' + '.join(map(str, sizes))}) not divisible by num_minibatches={config.num_minibatches}")
    hook = functools.partial(residual_hook, spec, config, False)
    learn = make_learn(config, spec, batch, mesh)

    def _rollout(state: TrainState, pools, key):
        """Every group's episodes; returns Transition [B, ceil(T / hold_steps)] (a row per residual decision), active [B],
        valid [B], episode stats, scene indices."""
        eps = epsilon(config, state.env_steps)
        out = []
        for g, (env, n) in enumerate(zip(envs, sizes)):
            k_scene, k_draw, k_reset, k_unroll = jax.random.split(jax.random.fold_in(key, g), 4)
            pool_size = jax.tree.leaves(pools[g])[0].shape[0]
            idx = jax.random.randint(k_scene, (n,), 0, pool_size)
            active = jax.random.uniform(k_draw, (n,)) < eps  # drawn once per episode (docs/residual_policy.md)
            # The episodes are drawn from a replicated pool: only this constraint splits them over the devices.
            scenes, reset_keys = devices.constrain_batch((_take(pools[g], idx), jax.random.split(k_reset, n)), mesh)
            with devices.use_mesh(mesh):  # MuJoCo Warp envs map their calls over the devices (`TaskEnv.batched`)
                start = env.batched(env.reset)(scenes, reset_keys)
                _, rec = unroll(env, base, start, k_unroll, num_steps=num_steps, hook=hook,
                                hook_params=HookParams(state.params.policy, state.normalizer, active), record=_record)
            out.append((jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rec), active, idx))  # [n, T, ...]
        rec = jax.tree.map(lambda *xs: jnp.concatenate(xs), *[o[0] for o in out])
        active = jnp.concatenate([o[1] for o in out])
        scene_idx = jnp.concatenate([o[2] for o in out])  # [B]
        valid = ~rec["nan"][:, -1]  # sticky flag: NaN anywhere in the episode
        episode_return = jnp.sum(jnp.where(valid[:, None], rec["reward"], 0.0), axis=1)
        dec = per_decision({k: rec[k] for k in ("obs", "raw_action", "log_prob")}, rec["reward"], hold)
        obs = jnp.where(valid[:, None, None], dec["obs"], 0.0)  # a NaN env must not reach the statistics
        done = jnp.zeros_like(dec["reward"]).at[:, -1].set(1.0)  # the episode ends at its fixed length
        data = Transition(observation=obs, action=dec["raw_action"], reward=jnp.where(valid[:, None], dec["reward"], 0.0),
                          discount=1.0 - done, next_observation=obs,
                          extras={"policy_extras": {"raw_action": dec["raw_action"], "log_prob": dec["log_prob"]}, "state_extras": {}})
        final_success = rec["success"][:, -1]
        stats = {"epsilon": eps, "return": jnp.mean(episode_return), "success": jnp.mean(final_success),
                 # NaN when no episode of that kind ran in this update
                 "success_residual": _mean_over(final_success, active), "success_base": _mean_over(final_success, ~active),
                 "return_residual": _mean_over(episode_return, active & valid), "return_base": _mean_over(episode_return, ~active & valid),
                 "active_fraction": jnp.mean(active), "nan_envs": jnp.sum(~valid),
                 "nan_env_flags": ~valid, "scene_index": scene_idx}
        return data, active, valid, stats

    def update(state: TrainState, pools, key):
        k_rollout, k_epochs = jax.random.split(key)
        data, active, valid, stats = _rollout(state, pools, k_rollout)
        normalizer = running_statistics.update(
            state.normalizer, data.observation.reshape(-1, data.observation.shape[-1]),
            weights=jnp.repeat(valid.astype(jnp.float32), num_decisions))
        state = state.replace(normalizer=normalizer)
        state, losses = learn(state, data, active, valid, k_epochs)
        state = state.replace(env_steps=state.env_steps + batch * num_steps, updates=state.updates + 1)
        return _strong(state), {**stats, **jax.tree.map(jnp.mean, losses)}

    return jax.jit(update)


def update_key(config: ResidualConfig, update_index: int) -> jax.Array:
    """The key of update `update_index`: a pure function of the seed and the index (exact resume)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), update_index)


def steps_per_update(config: ResidualConfig, envs: tuple[TaskEnv, ...], group_envs: tuple[int, ...] | None = None) -> int:
    sizes = tuple(group_envs) if group_envs is not None else tuple(config.num_envs for _ in envs)
    return sum(sizes) * envs[0].episode_steps


__all__ = ["HookParams", "TrainState", "adapt_lr", "combined_hook", "epsilon", "init_state", "learning_rate", "make_learn", "make_optimizer", "make_update",
           "per_decision", "residual_hook", "steps_per_update", "update_key"]
