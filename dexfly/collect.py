"""Closed-loop rollouts of a policy recorded as dataset episodes: the flywheel's data collection (D_O^i).

    episodes, stats = collect("grasp", base, specs, hook=combined_hook(spec, config), hook_params=params, seed=0)

Every scene of `specs` is rolled out once on the one unroll (`dexfly.unroll`: the base samples a chunk for
the whole batch every `action_horizon` steps; the hook, for example the residual policy, corrects every step),
recording what a dataset holds (`dexfly.rollout.record_dataset_step`) plus the executed actions and the
task's detected subtask ends (`TaskEnv.subtask_conditions`). Successful episodes whose intermediate subtask
ends were all detected are returned as `Episode`s, so they can be augmented (A_EP) exactly like a seed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import envs
from dexfly import devices, watchdog
from dexfly.evaluation import check_policy_fits
from dexfly.rollout import episodes_from_trajectory, record_dataset_step, rollout_subtask_end, trajectory_from_records
from dexfly.unroll import ChunkPolicy, Hook, Step, jit_unroll
from dexfly.utils import group_by_topology
from envs.base import SceneSpec, State, TaskEnv


@dataclass
class CollectStats:
    """Counts of one collection: `success_rate` is the paper's generation success rate of policy rollouts."""

    attempts: int = 0
    successes: int = 0
    kept: int = 0
    undetected: int = 0  # successful episodes left out: an intermediate subtask end was never detected
    seconds: float = 0.0
    per_object: dict[str, list[int]] = field(default_factory=dict)  # object id -> [attempts, successes]

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "successes": self.successes, "kept": self.kept, "undetected": self.undetected,
                "success_rate": self.success_rate, "seconds": round(self.seconds, 1), "per_object": self.per_object}


def _record(env: TaskEnv, step: Step, action, after: State, extras) -> dict:
    return {**record_dataset_step(env, step, action, after, None), "action": action}


def _intermediate(env: TaskEnv) -> np.ndarray:
    """[n_arms, n_subtasks] bool: subtasks that are not their arm's last (their ends must be detected)."""
    mask = np.zeros(env.subtask_shape, bool)
    for arm, subs in enumerate(env.subtasks):
        mask[arm, : len(subs) - 1] = True
    return mask


def collect(task: str, policy: ChunkPolicy | None, specs: list[SceneSpec], *, hook: Hook | None = None, hook_params: Any = None, seed: int = 0,
            batch_size: int = 64, env_config: envs.EnvConfig | None = None, source: str = "rollout",
            on_batch: Callable[[int, int], None] | None = None, mesh: Mesh | None = None) -> tuple[list, CollectStats]:
    """Roll the policy out once in every scene; returns (successful Episodes, CollectStats).

    Scenes are grouped by object topology (one compiled env each) and run `batch_size` at a time (a short last
    batch is padded with copies of its first scene, whose results are dropped). Batch k of the whole call uses
    the key fold_in(PRNGKey(seed), k), so the same scenes, seed and batch size give the same episodes.
    `on_batch(done, total)` is called with done = 0 before the first batch and after every batch. A NaN in the
    simulation fails the episode. With a device `mesh` (`dexfly.devices`), each batch is split over its devices
    (`batch_size` a multiple of their number).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    devices.check_batch(batch_size, mesh, "batch_size")
    if not specs:
        raise ValueError("no scenes to collect in")
    stats, episodes, batch_index, done = CollectStats(), [], 0, 0
    t0 = time.perf_counter()
    if on_batch is not None:
        on_batch(0, len(specs))
    for objects, group in group_by_topology(task, specs).items():
        env = envs.make_cached(task, tuple(objects), env_config)
        if policy is not None:  # None: the hook alone acts (e.g. replay), as in `dexfly.unroll`
            check_policy_fits(env, policy, task)
        run = jit_unroll(env, env.episode_steps, hook, functools.partial(_record, env), mesh)
        intermediate = _intermediate(env)
        for start in range(0, len(group), batch_size):
            chunk = list(group[start : start + batch_size])
            n = len(chunk)
            scenes = env.make_scenes(chunk + [chunk[0]] * (batch_size - n))
            _, rec = devices.gather(run(policy, scenes, jax.random.fold_in(jax.random.PRNGKey(seed), batch_index), hook_params, None))
            actions = np.asarray(jnp.swapaxes(rec.pop("action"), 0, 1))[:n]
            traj = jax.tree.map(lambda x, n=n: np.asarray(x)[:n], trajectory_from_records(rec))
            success = traj.success[:, -1] & ~traj.nan.any(axis=1)
            detected = np.all(traj.subtask_done[:, -1] | ~intermediate, axis=(1, 2))
            keep = success & detected
            eps = episodes_from_trajectory(env, traj, actions, chunk, subtask_end=rollout_subtask_end(traj.subtask_done), source=source,
                                           seed=seed, keep=keep)
            kept_index = [done + int(i) for i in np.flatnonzero(keep)]  # the scene's position in this call
            episodes += [_with_seed(ep, seed, i) for ep, i in zip(eps, kept_index)]
            stats.attempts += n
            stats.successes += int(success.sum())
            stats.kept += int(keep.sum())
            stats.undetected += int((success & ~detected).sum())
            for spec, ok in zip(chunk, success):
                c = stats.per_object.setdefault(spec.objects[0][1], [0, 0])
                c[0] += 1
                c[1] += int(ok)
            batch_index += 1
            done += n
            watchdog.beat(f"collect {task}: {done}/{len(specs)} episodes")
            if on_batch is not None:
                on_batch(done, len(specs))
    stats.seconds = time.perf_counter() - t0
    return episodes, stats


def _with_seed(ep, seed: int, index: int):
    import dataclasses

    return dataclasses.replace(ep, seed=int(seed) * 1_000_003 + int(index), extra={**ep.extra, "scene_index": str(index)})


__all__ = ["CollectStats", "collect"]
