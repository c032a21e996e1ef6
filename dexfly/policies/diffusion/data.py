"""Training windows from demonstration episodes, gathered on device.

An episode is a dict `{"obs": float32[T, obs_dim], "actions": float32[T, action_dim]}`, plus
`"half_extents": float32[n_objects, 3]` for a policy that sees object geometry; for dexfly tasks obs is
`concat(obs["obj"], obs["prop"])` per step. For every step t of every episode there is one window:
  obs     at t - obs_horizon + 1, ..., t         (indices below 0 repeat the episode's first obs)
  actions at t, ..., t + pred_horizon - 1        (indices past the end repeat the episode's last action)
The index arrays are computed once in numpy; batches are `jnp.take` gathers on device.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dexfly.layout import obs_features  # noqa: F401  (re-exported: the policies' observation features)
from dexfly.policies.diffusion.normalizer import Normalizer


def window_indices(
    episode_lengths: Sequence[int], obs_horizon: int, pred_horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Global row indices (into the concatenation of all episodes) of every training window.

    Returns:
        obs_idx int32 [N, obs_horizon], act_idx int32 [N, pred_horizon], N = sum(episode_lengths).
    """
    obs_idx, act_idx = [], []
    start = 0
    for T in episode_lengths:
        t = np.arange(T)[:, None]
        obs_idx.append(start + np.clip(t + np.arange(-obs_horizon + 1, 1)[None], 0, T - 1))
        act_idx.append(start + np.clip(t + np.arange(pred_horizon)[None], 0, T - 1))
        start += T
    return (np.concatenate(obs_idx).astype(np.int32), np.concatenate(act_idx).astype(np.int32))


@flax.struct.dataclass
class WindowData:
    """Normalised step data plus window indices (all on device).

    obs [S, obs_dim], actions [S, action_dim] (S = total steps, normalised to [-1, 1]);
    obs_idx [N, obs_horizon], act_idx [N, pred_horizon] int32.
    """

    obs: jax.Array
    actions: jax.Array
    obs_idx: jax.Array
    act_idx: jax.Array

    @property
    def num_windows(self) -> int:
        return int(self.obs_idx.shape[0])

    def gather(self, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Windows idx [B] -> (obs [B, obs_horizon, obs_dim], actions [B, pred_horizon, action_dim])."""
        o = jnp.take(self.obs, jnp.take(self.obs_idx, idx, axis=0), axis=0)
        a = jnp.take(self.actions, jnp.take(self.act_idx, idx, axis=0), axis=0)
        return o, a


def concat_episodes(episodes: Sequence[Mapping[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """-> (obs [S, obs_dim] float32, actions [S, action_dim] float32, episode lengths)."""
    if not episodes:
        raise ValueError("no episodes")
    lengths = []
    for i, ep in enumerate(episodes):
        T = len(ep["obs"])
        if len(ep["actions"]) != T or T == 0:
            raise ValueError(f"episode {i}: obs has {T} steps, actions {len(ep['actions'])} (need equal, > 0)")
        lengths.append(T)
    obs = np.concatenate([np.asarray(ep["obs"], np.float32) for ep in episodes])
    act = np.concatenate([np.asarray(ep["actions"], np.float32) for ep in episodes])
    return obs, act, lengths


def phase_feature(steps, phase_steps: int):
    """The episode's phase [..., 1] from env steps since reset [...] (numpy or jax): min(step / phase_steps, 1)."""
    xp = jnp if isinstance(steps, jax.Array) else np
    return xp.minimum(xp.asarray(steps, xp.float32) / phase_steps, 1.0)[..., None]


def geometry_feature(half_extents, n_objects: int):
    """The first `n_objects` objects' half-extents [..., n, 3] (m; numpy or jax) flattened to [..., 3 * n_objects].
    ValueError when the scene holds fewer objects."""
    if half_extents.shape[-2] < n_objects or half_extents.shape[-1] != 3:
        raise ValueError(f"half_extents of shape {tuple(half_extents.shape)}: need [..., >= {n_objects}, 3]")
    return half_extents[..., :n_objects, :].reshape(*half_extents.shape[:-2], 3 * n_objects)


def history_steps(step, obs_horizon: int):
    """Env steps since reset of each row of an observation history [..., obs_horizon] whose newest row is at `step`
    [...]: rows before the reset repeat the first observation (as `history_init` and the training windows do), so
    they count as step 0."""
    return jnp.maximum(jnp.asarray(step, jnp.int32)[..., None] - jnp.arange(obs_horizon - 1, -1, -1, dtype=jnp.int32), 0)


def make_window_data(
    episodes: Sequence[Mapping[str, np.ndarray]],
    obs_horizon: int,
    pred_horizon: int,
    normalizer: Normalizer | None = None,
    quat_at: Sequence[int] = (),
    rel_pos: Sequence[tuple[int, int]] = (),
    phase_steps: int = 0,
    geometry: int = 0,
) -> tuple[WindowData, Normalizer]:
    """Build the device dataset; fits a Normalizer on all steps unless one is given.

    Observations are turned into `obs_features(obs, quat_at, rel_pos)` first (the normaliser is fitted on those),
    followed, when `phase_steps` > 0, by each step's `phase_feature` (its index in its episode) and, when `geometry`
    (N) > 0, by the episode's `geometry_feature` (its first N objects' half-extents)."""
    obs, act, lengths = concat_episodes(episodes)
    obs = obs_features(obs, tuple(quat_at), tuple(rel_pos))
    if phase_steps:
        obs = np.concatenate([obs, phase_feature(np.concatenate([np.arange(T) for T in lengths]), phase_steps)], axis=-1)
    if geometry:
        if any("half_extents" not in ep for ep in episodes):
            raise ValueError(f"geometry={geometry}: every episode needs its objects' 'half_extents' [n_objects, 3]")
        geo = [np.broadcast_to(geometry_feature(np.asarray(ep["half_extents"], np.float32), geometry), (T, 3 * geometry))
               for ep, T in zip(episodes, lengths)]
        obs = np.concatenate([obs, np.concatenate(geo)], axis=-1)
    if normalizer is None:
        normalizer = Normalizer.fit(obs, act)
    oi, ai = window_indices(lengths, obs_horizon, pred_horizon)
    data = WindowData(
        obs=normalizer.obs.normalize(jnp.asarray(obs)),
        actions=normalizer.action.normalize(jnp.asarray(act)),
        obs_idx=jnp.asarray(oi),
        act_idx=jnp.asarray(ai),
    )
    return data, normalizer


def config_window_data(episodes: Sequence[Mapping[str, np.ndarray]], config, normalizer: Normalizer | None = None
                       ) -> tuple[WindowData, Normalizer]:
    """`make_window_data` with the windows and observation features of a DiffusionConfig (its horizons, quaternion
    slots, position pairs, phase and geometry): how training, warm starts and benchmarks build their data."""
    return make_window_data(episodes, config.obs_horizon, config.pred_horizon, normalizer, quat_at=config.obs_quat_at,
                            rel_pos=config.obs_rel_pos, phase_steps=config.phase_steps, geometry=config.obs_geometry)


def batch_indices(key: jax.Array, step: jax.Array, num_windows: int, batch_size: int) -> jax.Array:
    """Window indices of batch number `step` [batch_size] int32; jittable (num_windows, batch_size static).

    Epoch e is the permutation `jax.random.permutation(fold_in(key, e), N)` cut into N // B batches
    (remainder dropped). If N < B, each batch concatenates ceil(B/N) fresh permutations. The batch is a pure
    function of (key, step), so training resumes exactly from a step count.
    """
    n, b = num_windows, batch_size
    if n >= b:
        spe = n // b
        perm = jax.random.permutation(jax.random.fold_in(key, step // spe), n)
        return jax.lax.dynamic_slice(perm, ((step % spe) * b,), (b,)).astype(jnp.int32)
    reps = -(-b // n)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(key, step), jnp.arange(reps))
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
    return perms.reshape(-1)[:b].astype(jnp.int32)


def iterate_batches(
    data: WindowData, batch_size: int, key: jax.Array, start_step: int = 0, num_steps: int | None = None
) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Yields (obs [B, obs_horizon, obs_dim], actions [B, pred_horizon, action_dim]) batches, seeded."""
    n = data.num_windows
    get = jax.jit(lambda d, s: d.gather(batch_indices(key, s, n, batch_size)))
    step = start_step
    while num_steps is None or step < start_step + num_steps:
        yield get(data, jnp.int32(step))
        step += 1
