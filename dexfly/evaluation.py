"""Closed-loop evaluation of a chunked policy in the batched MJX tasks, on the one unroll (`dexfly.unroll`).

`rollout_policy` resets every scene and runs the policy (optionally corrected per step by a hook, e.g. the
residual policy) for an episode; episode success is the task's success after the last step (the envs'
documented rule). `evaluate` repeats this over several seeds and reports the mean and standard deviation
of the success rate (the paper reports 5 runs); `evaluate_scenes` does it for scenes of any topologies,
one compiled env per topology, weighting each group by its number of scenes.

With a device mesh (`dexfly.devices`), the scenes are split over its devices; a scene count that is not a
multiple of the device count is padded with copies of the first scene, whose results are dropped (every random
draw is per env, so the real scenes get the same numbers as without padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

import envs
from dexfly import devices, watchdog
from dexfly.unroll import ChunkPolicy, Hook, Step, jit_unroll
from dexfly.utils import group_by_topology, topology_indices
from envs.base import SceneSpec, State, TaskEnv


@dataclass(frozen=True)
class EvalResult:
    success_rate_mean: float
    success_rate_std: float
    per_seed: tuple[float, ...]
    per_scene: np.ndarray  # [n_seeds, n_scenes] bool
    qpos: np.ndarray | None  # [T, n_scenes, nq] of the first seed (for videos), if recorded


def check_policy_fits(env: TaskEnv, policy: ChunkPolicy, task: str | None = None) -> None:
    """ValueError when the policy was trained for another task or observation/action layout."""
    if task is not None and task != env.name:
        raise ValueError(f"policy was trained for task {task!r}, but the env is {env.name!r}")
    obs_dim = sum(env.obs_dims.values())
    if policy.obs_dim != obs_dim or policy.action_dim != env.action_dim:
        raise ValueError(
            f"policy expects obs_dim={policy.obs_dim}, action_dim={policy.action_dim}; task {env.name!r} has "
            f"obs_dim={obs_dim}, action_dim={env.action_dim} (a policy of another task?)"
        )


def _record_success_qpos(step: Step, action, after: State, extras):
    return after.success, after.data.qpos


def rollout_policy(env: TaskEnv, policy: ChunkPolicy, scenes, key, *, num_steps: int | None = None, record_qpos: bool = False,
                   hook: Hook | None = None, hook_params: Any = None, specs: list[SceneSpec] | None = None, mesh: Mesh | None = None):
    """Run the policy closed loop for `num_steps` env steps (default: the task's episode) in every scene.

    `hook` / `hook_params` change each step's action (see `dexfly.unroll`). Returns (success [T, B] per step,
    qpos [T, B, nq] or None). Raises SimulationError (naming the scenes, given `specs`) on NaN in the simulation.
    With a `mesh`, B must be a multiple of its device count (`evaluate` pads).
    """
    num_steps = env.episode_steps if num_steps is None else num_steps
    if num_steps <= 0:
        raise ValueError(f"evaluation horizon must be positive, got num_steps={num_steps}")
    check_policy_fits(env, policy)
    # qpos is always recorded (a few MB), whether or not it is wanted: one compiled rollout then serves the video
    # seed and every other seed; a rollout with another recorder is another program to compile (about 100 s here).
    final, (success, qpos) = devices.gather(jit_unroll(env, num_steps, hook, _record_success_qpos, mesh)(policy, scenes, key, hook_params, None))
    env.check_finite(final.state, specs, where="policy evaluation")
    return np.asarray(success), (np.asarray(qpos) if record_qpos else None)


def evaluate(
    env: TaskEnv,
    policy: ChunkPolicy,
    specs: list[SceneSpec],
    *,
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    num_steps: int | None = None,
    task: str | None = None,
    record_qpos: bool = False,
    hook: Hook | None = None,
    hook_params: Any = None,
    mesh: Mesh | None = None,
    pad_to: int = 1,
    on_seed: Callable[[], None] | None = None,
) -> EvalResult:
    """Success rate over the scenes, mean and std over seeds (each seed re-samples the policy's noise).

    The batch is padded to a multiple of `pad_to` (and of the mesh's device count) with copies of the first
    scene, whose results are dropped: evaluations of slightly different sizes then share one compiled rollout.
    `on_seed()` is called after each seed's rollout."""
    if not specs:
        raise ValueError("no evaluation scenes")
    if pad_to < 1:
        raise ValueError(f"pad_to must be >= 1, got {pad_to}")
    check_policy_fits(env, policy, task)
    n = len(specs)
    multiple = math.lcm(pad_to, devices.size(mesh))
    padded = list(specs) + [specs[0]] * (-n % multiple)  # a whole number of envs per device; dropped below
    scenes = env.make_scenes(padded)
    rates, per_scene, first_qpos = [], [], None
    for i, seed in enumerate(seeds):
        success, qpos = rollout_policy(env, policy, scenes, jax.random.PRNGKey(seed), num_steps=num_steps,
                                       record_qpos=record_qpos and i == 0, hook=hook, hook_params=hook_params, specs=padded, mesh=mesh)
        success, qpos = success[:, :n], None if qpos is None else qpos[:, :n]
        watchdog.beat(f"evaluate {env.name}: {len(specs)} scenes of {dict(specs[0].objects)}, seed {seed}")
        final = success[-1]
        per_scene.append(final)
        rates.append(float(final.mean()))
        if qpos is not None:
            first_qpos = qpos
        if on_seed is not None:
            on_seed()
    return EvalResult(float(np.mean(rates)), float(np.std(rates)), tuple(rates), np.stack(per_scene), first_qpos)


@dataclass(frozen=True)
class GroupedEval:
    """`evaluate_scenes`' result: overall rates weighted by scenes, and each topology group's EvalResult."""

    success_rate_mean: float
    success_rate_std: float
    per_seed: tuple[float, ...]
    groups: tuple[tuple[tuple[tuple[str, str], ...], tuple[SceneSpec, ...], EvalResult], ...]  # (env objects, specs, result)

    def _per(self, key: Callable[[SceneSpec], str]) -> dict[str, float]:
        """Mean success per `key(scene)`, over the scenes that share it and all seeds."""
        hits: dict[str, list[float]] = {}
        for _, specs, res in self.groups:
            for j, spec in enumerate(specs):
                hits.setdefault(key(spec), []).append(float(res.per_scene[:, j].mean()))
        return {k: float(np.mean(v)) for k, v in hits.items()}

    def per_object(self) -> dict[str, float]:
        """Mean success per object id of the task's first role, over its scenes and all seeds."""
        return self._per(lambda spec: spec.objects[0][1])

    def per_env(self) -> dict[str, float]:
        """Mean success per environment id, over its scenes and all seeds."""
        return self._per(lambda spec: spec.env_id)

    def summary(self) -> dict[str, Any]:
        """{mean, std, per_seed, per_object, per_env}: the JSON form that run folders record."""
        return {"mean": self.success_rate_mean, "std": self.success_rate_std, "per_seed": list(self.per_seed),
                "per_object": self.per_object(), "per_env": self.per_env()}


def evaluate_scenes(task: str, policy: ChunkPolicy, specs: list[SceneSpec], *, seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
                    num_steps: int | None = None, record_qpos_first: bool = False, hook: Hook | None = None,
                    hook_params: Any = None, env_config: envs.EnvConfig | None = None, mesh: Mesh | None = None,
                    pad_to: int = 1, on_progress: Callable[[int, int], None] | None = None) -> GroupedEval:
    """`evaluate` over scenes of any object topologies: one compiled env per topology group; overall per-seed
    rates weight each group by its number of scenes. With `record_qpos_first`, the first group's first seed
    keeps its qpos (for a video). `on_progress(done, total)` counts rollouts (a topology group's batch for one
    seed): called with done = 0 before the first and after each."""
    if not specs:
        raise ValueError("no evaluation scenes")
    grouped = group_by_topology(task, specs)
    groups, per_seed, total = [], np.zeros(len(seeds)), len(grouped) * len(seeds)
    rollouts = iter(range(1, total + 1))
    on_seed = None if on_progress is None else (lambda: on_progress(next(rollouts), total))
    if on_progress is not None:
        on_progress(0, total)
    for i, (objects, group) in enumerate(grouped.items()):
        env = envs.make_cached(task, tuple(objects), env_config)
        res = evaluate(env, policy, group, seeds=seeds, num_steps=num_steps, task=task, record_qpos=record_qpos_first and i == 0,
                       hook=hook, hook_params=hook_params, mesh=mesh, pad_to=pad_to, on_seed=on_seed)
        per_seed += np.asarray(res.per_seed) * len(group)
        groups.append((tuple(objects), tuple(group), res))
    per_seed /= len(specs)
    return GroupedEval(float(per_seed.mean()), float(per_seed.std()), tuple(float(r) for r in per_seed), tuple(groups))


def evaluate_sets(task: str, policy: ChunkPolicy, sets: dict[str, list[SceneSpec]], **kw) -> dict[str, GroupedEval]:
    """`evaluate_scenes` over several scene sets at once (e.g. T_OEP and T_O): scenes of one topology share one
    batch, so one compiled rollout and one run per seed serve every set. Each set's rates are over its own scenes
    only; a scene's random draws follow its place in the joint batch (the sets in order, then their scenes).
    Keyword arguments as `evaluate_scenes`'; `record_qpos_first` records the first set's first group."""
    empty = [name for name, specs in sets.items() if not specs]
    if empty:
        raise ValueError(f"empty evaluation set(s): {empty}")
    joint = [spec for specs in sets.values() for spec in specs]
    tags = [name for name, specs in sets.items() for _ in specs]
    res = evaluate_scenes(task, policy, joint, **kw)
    column: dict[int, tuple[int, int]] = {}  # joint index -> (group, column in that group's results)
    for g, idx in enumerate(topology_indices(task, joint).values()):  # the order evaluate_scenes grouped them in
        column.update({k: (g, c) for c, k in enumerate(idx)})
    out = {}
    for name in sets:
        mine = [k for k, t in enumerate(tags) if t == name]
        groups, hits = [], 0.0
        for g, (objects, specs, r) in enumerate(res.groups):
            cols = [column[k][1] for k in mine if column[k][0] == g]
            if not cols:
                continue
            sub = r.per_scene[:, cols]  # [n_seeds, n]
            rates = sub.mean(axis=1)
            groups.append((objects, tuple(specs[c] for c in cols),
                           EvalResult(float(rates.mean()), float(rates.std()), tuple(float(x) for x in rates), sub,
                                      None if r.qpos is None else r.qpos[:, cols])))
            hits = hits + sub.sum(axis=1)
        per_seed = np.asarray(hits) / len(mine)
        out[name] = GroupedEval(float(per_seed.mean()), float(per_seed.std()), tuple(float(r) for r in per_seed), tuple(groups))
    return out


def write_video(path, task: str, res: GroupedEval, *, episodes: int = 4, env_config: envs.EnvConfig | None = None, camera: str = "front"):
    """Render the first `episodes` episodes of the first group's first seed (evaluated with record_qpos_first),
    tiled into one video at the control rate / 2. Returns the path."""
    from dexfly import render

    objects, group, first = res.groups[0]
    if first.qpos is None:
        raise ValueError("no recorded episodes to render: evaluate with record_qpos_first=True")
    env = envs.make_cached(task, tuple(objects), env_config)
    n = min(episodes, len(group))
    scenes = env.make_scenes(list(group[:n]))
    frames = render.render_batch(env.mj_model, first.qpos[::2, :n], overrides_per_env={k: np.asarray(v) for k, v in scenes.params.items()},
                                 camera=camera)
    return render.write_video(path, frames, fps=1.0 / (2 * env.config.ctrl_dt))


__all__ = ["ChunkPolicy", "EvalResult", "GroupedEval", "check_policy_fits", "evaluate", "evaluate_scenes", "evaluate_sets", "rollout_policy", "write_video"]
