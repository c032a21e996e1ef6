"""The one loop that runs batched envs over time: a closed-loop, chunk-synchronous unroll.

    final, records = unroll(env, policy, states, key, num_steps=300, hook=..., record=...)

Structure (in the spirit of brax's `acting.generate_unroll`, for policies that emit action chunks):
- an outer `lax.scan` over action chunks: the chunk policy samples ONE chunk for the whole batch from the
  observation history, every `policy.action_horizon` env steps (never per step);
- an inner `lax.scan` over the chunk's executed steps: at each step an optional `hook` sees the step
  (state, observation history, the chunk policy's action for this step) and returns the action actually
  executed. The residual policy corrects the base action here; open-loop replay and augmentation's
  generator return actions of their own;
- per-step records chosen by the caller (`record`): success, reward, observations, states, whatever a
  dataset writer or a PPO update needs, stacked [T, B, ...].

Without a policy (`policy=None`) the base action is zeros and the whole horizon is one chunk: the hook
alone decides. `num_steps` that is not a multiple of the action horizon runs the last chunk to its end; the
records are cut to `num_steps` (the final state is the one after the last step actually run; callers that
need the state at `num_steps` exactly pick a horizon that divides it).

Every env is stepped through `env.batched(env.step)` (a vmap over the batch). Nothing here is jitted: wrap
`unroll` in your own jit, or use `jit_unroll` (cached per env, horizon, hook, recorder and device mesh; equal
partials share one entry).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from dexfly import devices
from dexfly.layout import history_init, history_push, obs_vector
from envs.base import State, TaskEnv


class ChunkPolicy(Protocol):
    """What a chunk policy offers: `sample(obs_history [B, obs_horizon, obs_dim], key, step [B], half_extents [B,
    n_objects, 3]) -> [B, P, action_dim]`, P >= action_horizon (raw units; chunk[:, 0] is the action for the newest
    observation; `step`: env steps since each episode's reset at the newest observation, for policies that condition
    on the phase; `half_extents`: the scene's objects' bounding-box half-sizes (m), for policies that see geometry;
    others ignore them)."""

    obs_horizon: int
    action_horizon: int
    obs_dim: int
    action_dim: int

    def sample(self, obs_history: jax.Array, key: jax.Array, step: jax.Array | None = None,
               half_extents: jax.Array | None = None) -> jax.Array: ...


class Step(NamedTuple):
    """What a hook and a recorder see at one env step."""

    t: jax.Array  # [] int32 env step index from the start of the unroll
    state: State  # [B] state before the action
    history: jax.Array  # [B, obs_horizon, obs_dim] observation history, newest last (= obs_vector(state.obs))
    base_action: jax.Array  # [B, action_dim] the chunk policy's action for this step (zeros without a policy)


# hook(hook_params, hook_carry, step, key) -> (hook_carry, action [B, action_dim], extras pytree)
Hook = Callable[[Any, Any, Step, jax.Array], tuple[Any, jax.Array, Any]]
# record(step, action [B, A], state_after [B], extras) -> pytree of [B, ...] arrays
Record = Callable[[Step, jax.Array, State, Any], Any]


def record_success(step: Step, action: jax.Array, after: State, extras: Any) -> jax.Array:
    """Default record: success after the action, [B] bool."""
    return after.success


class UnrollCarry(NamedTuple):
    state: State  # [B]
    history: jax.Array  # [B, H, D]
    hook_carry: Any


def unroll(
    env: TaskEnv,
    policy: ChunkPolicy | None,
    state: State,
    key: jax.Array,
    *,
    num_steps: int,
    hook: Hook | None = None,
    hook_params: Any = None,
    hook_carry: Any = None,
    record: Record = record_success,
    history: jax.Array | None = None,
) -> tuple[UnrollCarry, Any]:
    """Run `num_steps` env steps from the batched `state` [B]; returns (final carry, records [num_steps, B, ...]).

    `history` continues an earlier unroll's observation history (default: the current observation repeated).
    The key is split into one policy key per chunk and one hook key per step, so the same key gives the same
    unroll.
    """
    if num_steps <= 0:
        raise ValueError(f"unroll horizon must be positive, got num_steps={num_steps}")
    obs_horizon = policy.obs_horizon if policy is not None else 1
    chunk_len = policy.action_horizon if policy is not None else num_steps
    num_chunks = math.ceil(num_steps / chunk_len)
    step_fn = env.batched(env.step)
    obs = obs_vector(state.obs)
    if history is None:
        history = history_init(obs, obs_horizon)
    batch = obs.shape[0]
    if hook is not None and hook_carry is None:
        # A hook that keeps state across steps and is given no initial carry starts from zeros of the carry it
        # returns (traced once, abstractly; a stateless hook returns None and keeps None).
        step0 = Step(jnp.zeros((), jnp.int32), state, history, jnp.zeros((batch, env.action_dim), jnp.float32))
        shapes = jax.eval_shape(lambda: hook(hook_params, None, step0, key)[0])
        hook_carry = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def _chunk(carry: UnrollCarry, xs):
        chunk_index, key = xs
        k_policy, k_steps = jax.random.split(key)
        if policy is not None:
            scene = carry.state.info["scene"]
            chunk = policy.sample(carry.history, k_policy, carry.state.info["step"], scene.object_half_extents)[:, :chunk_len]  # [B, Ha, A]
        else:
            chunk = jnp.zeros((batch, chunk_len, env.action_dim), jnp.float32)
        ts = chunk_index * chunk_len + jnp.arange(chunk_len, dtype=jnp.int32)

        def _env_step(carry: UnrollCarry, xs):
            t, base_action, k = xs
            step = Step(t, carry.state, carry.history, base_action)
            hook_carry, action, extras = (carry.hook_carry, base_action, None) if hook is None else hook(hook_params, carry.hook_carry, step, k)
            after = step_fn(carry.state, action)
            rec = record(step, action, after, extras)
            return UnrollCarry(after, history_push(carry.history, obs_vector(after.obs)), hook_carry), rec

        keys = jax.random.split(k_steps, chunk_len)
        return jax.lax.scan(_env_step, carry, (ts, jnp.swapaxes(chunk, 0, 1), keys))

    xs = (jnp.arange(num_chunks, dtype=jnp.int32), jax.random.split(key, num_chunks))
    carry, records = jax.lax.scan(_chunk, UnrollCarry(state, history, hook_carry), xs)
    records = jax.tree.map(lambda r: r.reshape(num_chunks * chunk_len, *r.shape[2:])[:num_steps], records)
    return carry, records


class _ByValue:
    """A hook or recorder as a cache key. `functools.partial` has no equality of its own, so a partial made per
    call (`partial(record_dataset_step, env)`) would miss an identity-keyed cache every time and compile (and keep)
    a new executable per call; here a partial is keyed by its (func, args, keywords) when those are hashable, and
    by identity otherwise (e.g. a partial holding arrays). Any other callable is keyed by itself."""

    __slots__ = ("fn", "key")

    def __init__(self, fn: Callable):
        self.fn, self.key = fn, _value_key(fn)

    def __eq__(self, other) -> bool:
        return isinstance(other, _ByValue) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


def _value_key(fn: Callable):
    if not isinstance(fn, functools.partial):
        return fn
    key = ("partial", fn.func, fn.args, tuple(sorted(fn.keywords.items())))
    try:
        hash(key)
    except TypeError:  # unhashable bound values (arrays): this object alone
        return ("id", id(fn))
    return key


def jit_unroll(env: TaskEnv, num_steps: int, hook: Hook | None = None, record: Record = record_success, mesh: Mesh | None = None):
    """Jitted reset-and-unroll, cached per (env, horizon, hook, recorder, mesh): hooks and recorders that are module
    functions or `functools.partial`s of hashable values hit the cache when equal (a partial made anew per call
    included); a partial of unhashable values is cached by identity.

    fn(policy, scenes, key, hook_params, hook_carry) resets every env in `scenes` (one reset key per env) and
    unrolls; returns (final UnrollCarry, records [num_steps, B, ...]). With a `mesh` (`dexfly.devices`), the
    scenes [B] are split over its devices (B a multiple of their number) and everything else is replicated.
    `jit_unroll.cache_info()` counts compilations (misses).
    """
    return _jit_unroll(env, num_steps, None if hook is None else _ByValue(hook), _ByValue(record), mesh)


@functools.lru_cache(maxsize=64)
def _jit_unroll(env: TaskEnv, num_steps: int, hook_key: _ByValue | None, record_key: _ByValue, mesh: Mesh | None):
    hook, record = None if hook_key is None else hook_key.fn, record_key.fn

    def run(policy, scenes, key, hook_params, hook_carry):
        k_reset, k_unroll = jax.random.split(key)
        batch = scenes.object_pose.shape[0]
        with devices.use_mesh(mesh):  # MuJoCo Warp envs map their calls over the devices (`TaskEnv.batched`)
            start = env.batched(env.reset)(scenes, jax.random.split(k_reset, batch))
            return unroll(env, policy, start, k_unroll, num_steps=num_steps, hook=hook, hook_params=hook_params,
                          hook_carry=hook_carry, record=record)

    fn = jax.jit(run)
    if mesh is None:
        return fn

    def sharded(policy, scenes, key, hook_params, hook_carry):
        policy, key, hook_params, hook_carry = devices.replicate((policy, key, hook_params, hook_carry), mesh)
        return fn(policy, devices.shard_batch(scenes, mesh), key, hook_params, hook_carry)

    return sharded


jit_unroll.cache_info = _jit_unroll.cache_info  # type: ignore[attr-defined]
jit_unroll.cache_clear = _jit_unroll.cache_clear  # type: ignore[attr-defined]


__all__ = ["ChunkPolicy", "Hook", "Record", "Step", "UnrollCarry", "history_init", "history_push", "jit_unroll", "record_success", "unroll"]
