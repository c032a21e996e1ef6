"""`augment`: the A_EP data-augmentation module (MimicGen-style, batched in MJX), usable in-process.

    episodes, stats = augment(sources, "grasp", AugmentConfig(pose_ids=..., env_ids=...), num_wanted=500,
                              batch_size=64, max_attempts=2000, seed=0)

Attempts are numbered 0, 1, ...; everything random about attempt i (its configuration in `sample` mode,
source choice, boundary offsets, action noise) is seeded by (seed, i), so the same seed gives the same data
whatever the batching. Attempts are run in batches of `batch_size` of one object topology (one compiled env
per topology, cached); a partial batch is padded with copies that are discarded, to half or a quarter of
`batch_size` where the attempts left fit (`batch_shape`). With a device mesh
(`dexfly.devices`), every batch is split over its devices (`batch_size` must be a multiple of their number).

Success rule: an attempt succeeds iff the task's success flag holds after the final step of the episode
(the env's episode success, the same rule as seed replay) and the simulation stayed finite.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import envs
from dexfly import devices, watchdog
from dexfly import catalog as catalog_lib
from dexfly.augment.config import AugmentConfig
from dexfly.augment.constraints import CONSTRAINTS
from dexfly.augment.schedule import GenStatic
from dexfly.augment.scenes import attempt_config, scene_configs
from dexfly.augment.sources import SourceSet, attempt_key, attempt_offsets, make_plan, prepare_sources, select_source, stack_plans
from dexfly.augment.execute import execute
from dexfly.progress import progress_bar
from dexfly.rollout import episodes_from_trajectory, held_steps


@dataclass
class AugmentStats:
    task: str
    attempts: int = 0
    successes: int = 0
    generated: int = 0  # successful demos returned (<= num_wanted)
    num_objects: int = 0  # O: distinct object sets among the generated demos
    num_envs: int = 0  # E: distinct environments among the generated demos
    num_poses: int = 0  # P: distinct spatial poses among the generated demos
    num_configs: int = 0  # distinct (objects, env, pose) configurations among the generated demos
    caug_configs: int = 0  # size of C_aug
    caug_objects: int = 0
    caug_envs: int = 0
    caug_poses: int = 0
    compile_seconds: float = 0.0
    run_seconds: float = 0.0  # execution, excluding compilation
    batches: int = 0
    per_topology: dict = field(default_factory=dict)  # topology -> [attempts, successes]
    per_env: dict = field(default_factory=dict)  # environment id -> [attempts, successes]
    per_pose: dict = field(default_factory=dict)  # pose id -> [attempts, successes]

    def breakdown(self) -> str:
        """One line per axis: successes/attempts per environment and per pose (where failures come from)."""
        def fmt(d):
            return " ".join(f"{k}:{s}/{n}" for k, (n, s) in sorted(d.items()))
        return f"per env: {fmt(self.per_env)}\nper pose: {fmt(self.per_pose)}"

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0

    @property
    def demos_per_second(self) -> float:
        return self.successes / self.run_seconds if self.run_seconds else 0.0

    def table(self):
        from rich.table import Table

        t = Table(title=f"augmentation: {self.task}")
        t.add_column("quantity")
        t.add_column("value", justify="right")
        rows = [
            ("C_aug objects x envs x poses", f"{self.caug_objects} x {self.caug_envs} x {self.caug_poses} = {self.caug_configs} configs"),
            ("attempts", str(self.attempts)),
            ("successes", str(self.successes)),
            ("generation success rate", f"{self.success_rate:.3f}"),
            ("demos returned", str(self.generated)),
            ("O / E / P (distinct, returned demos)", f"{self.num_objects} / {self.num_envs} / {self.num_poses}"),
            ("distinct configs (returned demos)", str(self.num_configs)),
            ("batches", str(self.batches)),
            ("compile time (s)", f"{self.compile_seconds:.1f}"),
            ("run time excl. compile (s)", f"{self.run_seconds:.1f}"),
            ("successful demos / s (excl. compile)", f"{self.demos_per_second:.2f}"),
        ]
        for topo, (n, s) in self.per_topology.items():
            rows.append((f"topology {topo}", f"{s}/{n}"))
        for r in rows:
            t.add_row(*r)
        return t


class _EnvCache:
    """The env of each object topology for one task and EnvConfig (shared process-wide via `shared_env_cache`).

    Envs come from `envs.make_cached`; this only remembers which object set stands for a topology (the first
    one asked for), so every batch of that topology runs in the same compiled env."""

    def __init__(self, task: str, config):
        self.task, self.config, self.objects = task, config, {}

    def get(self, topo, objects: dict[str, str]):
        rep = self.objects.setdefault(topo, tuple(objects.items()))
        return envs.make_cached(self.task, rep, self.config)


_ENV_CACHES: dict = {}


def shared_env_cache(task: str, config) -> _EnvCache:
    """The process-wide env cache of (task, EnvConfig): repeated `augment` calls reuse envs and compiled executors."""
    return _ENV_CACHES.setdefault((task, config), _EnvCache(task, config))


def batch_shape(batch_size: int, attempts_left: int, mesh: Mesh | None = None) -> int:
    """The compiled batch of the next batch: the smallest of `batch_size`, half and a quarter of it (each rounded up to a
    multiple of the mesh's devices) that holds the `attempts_left` of the attempt budget.

    Padded attempts cost as much as real ones, and a call with a small budget (the flywheel's per-object A_EP: 8 to 16
    attempts against the `cpu` preset's batch of 40) would otherwise simulate mostly padding. Two sizes below
    `batch_size` bound the extra compiles at two per topology."""
    for parts in (4, 2):
        b = -(-batch_size // parts)
        b += devices.padding(b, mesh)
        if attempts_left <= b < batch_size:
            return b
    return batch_size


ATTEMPTS_PER_DEMO = 4
"""`augment`'s attempt budget per wanted demo when no `max_attempts` is given."""


def augment(sources, task: str, caug: AugmentConfig = AugmentConfig(), num_wanted: int = 100, batch_size: int = 64,
            max_attempts: int | None = None, seed: int = 0, progress: bool = True, env_cache: _EnvCache | None = None,
            mesh: Mesh | None = None):
    """Generate up to `num_wanted` successful demos from source Episodes into the scenes of C_aug.

    Returns (episodes, AugmentStats). Episodes carry object / environment / pose ids, `source="augment"`, the
    executed schedule's `subtask_end` signals and, in `extra`, the attempt index, source index and offsets.
    """
    if num_wanted < 1 or batch_size < 1:
        raise ValueError(f"num_wanted and batch_size must be >= 1 (got {num_wanted}, {batch_size})")
    devices.check_batch(batch_size, mesh, "batch_size")
    max_attempts = max_attempts if max_attempts is not None else ATTEMPTS_PER_DEMO * num_wanted
    sources = list(sources)
    if not sources:
        raise ValueError("no source demos given")
    cache = env_cache or shared_env_cache(task, caug.env)
    ctx = setup(sources, task, caug, seed, cache)
    configs, topos, static = ctx.configs, ctx.topos, ctx.static

    stats = AugmentStats(task=task, caug_configs=len(configs), caug_objects=len({s.objects for s in configs}),
                         caug_envs=len({s.env_id for s in configs}), caug_poses=len({(s.pose_id, s.poses) for s in configs}))
    good, failed = [], []
    attempt = 0
    bar = progress_bar(f"augment {task}: successful demos", num_wanted, enabled=progress).start()
    try:
        while len(good) < num_wanted and attempt < max_attempts:
            first = attempt_config(caug, len(configs), attempt, seed)
            topo = topos[first]
            shape = batch_shape(batch_size, max_attempts - attempt, mesh)
            idx, cfg_ids = [], []
            while len(idx) < shape and attempt < max_attempts:
                c = attempt_config(caug, len(configs), attempt, seed)
                if topos[c] != topo:
                    break
                idx.append(attempt)
                cfg_ids.append(c)
                attempt += 1
            env = cache.get(topo, configs[first].object_ids)
            specs, plans, meta = [], [], []
            for i, c in zip(idx, cfg_ids):
                spec, plan, m = plan_attempt(ctx, env, i, c)
                specs.append(spec)
                plans.append(plan)
                meta.append(m)
            n_real = len(specs)
            pad = shape - n_real  # pad to a compiled shape; padded attempts are discarded
            specs_p, plans_p = specs + [specs[0]] * pad, plans + [plans[0]] * pad
            scenes = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *[ctx.scene_cache[s] for s in specs_p])
            keys = jnp.stack([attempt_key(seed + 1, i) for i in idx] + [attempt_key(seed + 1, idx[0])] * pad)
            t0 = time.perf_counter()
            final, traj, actions, signals, compile_s = execute(env, static, scenes, keys, stack_plans(plans_p), mesh)
            jax.block_until_ready(traj)
            stats.run_seconds += time.perf_counter() - t0 - compile_s
            stats.compile_seconds += compile_s
            stats.batches += 1
            success = np.asarray(traj.success[:n_real, -1]) & ~np.asarray(traj.nan[:n_real].any(-1))
            if caug.min_held_steps:
                success &= np.array([held_steps(s) >= caug.min_held_steps for s in np.asarray(traj.success[:n_real])])
            signals = np.asarray(signals[:n_real]).astype(np.uint8)
            signals[:, -1] = 1  # every subtask has ended when the demo ends
            traj = jax.tree.map(lambda x, n=n_real: x[:n], traj)
            keep = success if not caug.keep_failed else np.ones(n_real, bool)
            eps = episodes_from_trajectory(env, traj, actions[:n_real], specs, subtask_end=signals, source="augment", seed=seed, keep=keep)
            kept_meta = [m for m, k in zip(meta, keep) if k]
            kept_success = [bool(s) for s, k in zip(success, keep) if k]
            for ep, m, ok in zip(eps, kept_meta, kept_success):
                attrs = {k: json.dumps(v) if not isinstance(v, (int, str)) else v for k, v in m.items()}
                ep = dataclasses.replace(ep, seed=int(seed) * 1_000_003 + m["attempt"], extra={**ep.extra, **attrs})
                (good if ok else failed).append(ep)
            stats.attempts += n_real
            stats.successes += int(success.sum())
            pt = stats.per_topology.setdefault(_topo_name(topo), [0, 0])
            pt[0] += n_real
            pt[1] += int(success.sum())
            for spec, ok in zip(specs, success):
                for d, key in ((stats.per_env, spec.env_id), (stats.per_pose, spec.pose_id)):
                    c = d.setdefault(key, [0, 0])
                    c[0] += 1
                    c[1] += int(ok)
            bar.update(min(len(good), num_wanted), info=f"{stats.attempts} attempts, rate {stats.success_rate:.2f}")
            watchdog.beat(f"augment {task}: batch {stats.batches}, {stats.attempts} attempts")
    finally:
        bar.close()
    good = good[:num_wanted]
    stats.generated = len(good)
    stats.num_objects = len({ep.object_ids for ep in good})
    stats.num_envs = len({ep.env_id for ep in good})
    stats.num_poses = len({(ep.pose_id, ep.extra.get("poses")) for ep in good})
    stats.num_configs = len({(ep.object_ids, ep.env_id, ep.pose_id, ep.extra.get("poses")) for ep in good})
    return good + (failed if caug.keep_failed else []), stats


@dataclass
class Context:
    """Everything an attempt needs besides its index: validated sources, C_aug configs, generator settings."""

    task: str
    caug: AugmentConfig
    seed: int
    src: SourceSet
    configs: list
    topos: list
    static: GenStatic
    cache: _EnvCache
    scene_cache: dict = field(default_factory=dict)


def setup(sources, task: str, caug: AugmentConfig, seed: int, cache: _EnvCache | None = None) -> Context:
    """Validate sources and C_aug (ValueError naming the problem) and expand C_aug into configurations."""
    sources = list(sources)
    if not sources:
        raise ValueError("no source demos given")
    cache = cache or shared_env_cache(task, caug.env)
    base_env = _base_env(task, sources[0], cache, caug)
    if base_env.subtask_constraint not in CONSTRAINTS:
        raise ValueError(f"{task}: unknown subtask_constraint {base_env.subtask_constraint!r}")
    src = prepare_sources(sources, base_env, smoothing=int(caug.source_smoothing))
    configs = scene_configs(caug, base_env, sources[0], seed)
    topos = [base_env.catalog.scene_topology(s.objects) for s in configs]
    static = GenStatic(bridge_steps=int(caug.bridge_steps), action_noise=float(caug.action_noise), constraint=base_env.subtask_constraint,
                       dart_noise=float(caug.dart_noise), dart_steps=float(caug.dart_steps))
    if static.bridge_steps < 0 or static.action_noise < 0 or static.dart_noise < 0:
        raise ValueError("bridge_steps, action_noise and dart_noise must be >= 0")
    if static.dart_steps <= 0:
        raise ValueError(f"dart_steps must be > 0, got {static.dart_steps}")
    return Context(task, caug, seed, src, configs, topos, static, cache)


def plan_attempt(ctx: Context, env, attempt: int, config: int | None = None):
    """(SceneSpec, numpy Plan dict, metadata) of attempt `attempt`, seeded by (seed, attempt) only."""
    if config is None:
        config = attempt_config(ctx.caug, len(ctx.configs), attempt, ctx.seed)
    spec = ctx.configs[config]
    if spec not in ctx.scene_cache:
        ctx.scene_cache[spec] = env.scene_arrays(spec)
    rng = np.random.default_rng([ctx.seed, attempt, 2])
    s = select_source(ctx.src, ctx.caug, np.asarray(ctx.scene_cache[spec].object_pose), rng)
    off = attempt_offsets(ctx.src, env, ctx.caug, rng)
    plan = make_plan(ctx.src, env, ctx.caug, s, off, attempt_key(ctx.seed, attempt), _home_action(env))
    return spec, plan, {"attempt": attempt, "source_index": s, "offsets": off.tolist(), "augment_seed": ctx.seed}


def _base_env(task: str, source, cache: _EnvCache, caug: AugmentConfig):
    """The env of the first source's object topology (the task's default env if those objects do not fit
    the task; `prepare_sources` then reports the mismatch)."""
    registry = envs._registry()
    if task not in registry:
        raise ValueError(f"unknown task {task!r}; available: {sorted(registry)}")
    cls = registry[task]
    cat = catalog_lib.load_catalog()
    objs = dict(zip(cls.roles, source.object_ids))
    fits = len(source.object_ids) == len(cls.roles) and all(
        o in {x.id for x in cat.objects} and task in cat.object(o).tasks and cat.object(o).role == catalog_lib.TASK_ROLES[task][r]
        for r, o in objs.items()
    )
    if not fits:
        return envs.make_cached(task, None, caug.env)
    return cache.get(cat.scene_topology(objs), objs)


def _topo_name(topo) -> str:
    return ",".join(f"{r}:{'+'.join(t)}" for r, t in topo)


@functools.lru_cache(maxsize=32)
def _home_action(env):
    return env.home_action()
