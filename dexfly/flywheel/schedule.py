"""Flywheel schedules: per task and preset, what each iteration covers and how large each stage is. Data, not
code: `assets/schedules/<task>.json`.

    preset = load_preset("grasp", "tiny")
    preset.iteration(1).objects          # O_1 (the seed's object), E_1 and P_1: C_1 of the warm-up
    preset.diffusion_config()            # the base policy's DiffusionConfig for this preset

File format (`format: dexfly.schedule/1`):
    {"task": ..., "presets": {name: {
        "iterations": [{"objects": [...], "env_ids": [...], "num_poses": N, "trajectories": M, "sampled_poses": bool}, ...],
        "diffusion": {DiffusionConfig fields},   "residual": {ResidualConfig fields},   (a `seed` here: that
                                                    stage's seed instead of the run's)
        "augment": {AugmentConfig fields, "batch_size": B},
        "rollouts_per_object": R, "collect_batch_size": B,
        "evaluation": {"seeds": [...], "t_o_pose_ids": [...], "t_oep_scenes": N or [indices]},
        "keep_previous_data": bool, "warm_start": bool, "warm_start_steps": N,
        "rollout_min_held_steps": N, "rollout_source_smoothing": W, "rollout_sources_per_object": K}}}

Iteration i's entry is D_i's scenario set: its objects O_i, environments E_i and the first `num_poses`
catalog poses P_i, and `trajectories`, the size of D_i. Entry 1 is C_1 of the warm-up (the seed's object);
entry i+1 is C_aug^{i+1}, which the rollouts of iteration i (on the objects O_{i+1}) are augmented across.
Iterations past the last entry repeat it (the paper stops at 3; any n runs). `t_oep_scenes` picks the T_OEP
scenes a preset scores: the first N of the task's 40, or a list of their indices (the `tiny` preset's two scenes
share the seed object's topology, so its smoke run compiles one evaluation env instead of three).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dexfly import paths
from dexfly.catalog import TASK_ROLES, TASKS, load_catalog
from dexfly.utils import read_json

FORMAT = "dexfly.schedule/1"
SCHEDULES_DIR = paths.ASSETS_DIR / "schedules"


@dataclass(frozen=True)
class IterationSpec:
    objects: tuple[str, ...]
    env_ids: tuple[str, ...]
    num_poses: int
    trajectories: int
    sampled_poses: bool = False
    """Where A_EP puts the objects of D_i: False, the first `num_poses` catalog poses, cycled; True, every attempt at a
    pose of its own drawn uniformly from the task's ranges (as T_OEP's poses are), so that the base sees the pose
    space rather than a few points of it. Rollouts (residual training, collection) stay on the catalog poses."""
    seed_source_share: float | None = None
    """The preset's `seed_source_share` for D_i alone (the augment stage of iteration i - 1); None: the preset's.
    Not part of `to_dict`: the augment stage's record holds the share it applied, so a run whose preset set the
    same share another way (preset-wide, or a probe) made the same stage."""

    def pose_ids(self, task: str) -> tuple[str, ...]:
        """The first `num_poses` catalog poses: where rollouts and, unless `sampled_poses`, A_EP put the objects."""
        ids = load_catalog().poses_for(task).ids
        if self.num_poses > len(ids):
            raise ValueError(f"num_poses={self.num_poses}: task {task!r} has {len(ids)} catalog poses")
        return tuple(ids[: self.num_poses])

    def augment_poses(self, task: str, max_attempts: int, grid_start: int = 0) -> dict[str, Any]:
        """The pose and grid fields of an `AugmentConfig` for an A_EP call into D_i of `max_attempts` attempts from
        grid entry `grid_start`: with `sampled_poses`, enough drawn poses (`grid_start + max_attempts`) that the
        call's entries, each pose index once below the grid's first lcm block, all differ in pose."""
        if self.sampled_poses:
            return {"pose_ids": (), "num_sampled_poses": grid_start + max_attempts, "grid_start": grid_start}
        return {"pose_ids": self.pose_ids(task), "grid_start": grid_start}

    def to_dict(self) -> dict[str, Any]:
        d = {"objects": list(self.objects), "env_ids": list(self.env_ids), "num_poses": self.num_poses, "trajectories": self.trajectories}
        if self.sampled_poses:  # absent when off, so that the stage records of runs made before it still match
            d["sampled_poses"] = True
        return d  # without seed_source_share: the augment stage records the share it applies (Preset.seed_share)


@dataclass(frozen=True)
class Preset:
    task: str
    name: str
    iterations: tuple[IterationSpec, ...]
    diffusion: dict[str, Any]
    residual: dict[str, Any]
    augment: dict[str, Any]
    rollouts_per_object: int
    collect_batch_size: int
    evaluation: dict[str, Any]
    keep_previous_data: bool
    warm_start: bool
    warm_start_steps: int | None = None
    """Training steps of a warm-started base (iterations 2 and on, with `warm_start`); None: the diffusion's own
    `total_steps`, as from scratch."""
    rollout_min_held_steps: int = 0
    """The quality bar for data grown from rollouts: the augment stage takes as A_EP sources only the rollouts whose
    success held for at least this many final steps (`Episode.extra["held_steps"]`), and A_EP keeps only generated
    demos that held as long (`AugmentConfig.min_held_steps`); without A_EP (the ablation) the filtered rollouts
    themselves. 0: every successful rollout and demo (the paper)."""
    rollout_source_smoothing: int = 0
    """The augment stage's `AugmentConfig.source_smoothing` for rollouts as A_EP sources (an odd window of steps;
    0: replayed as recorded, the paper). The warm-up's seed is replayed as recorded whatever this is: a policy's
    rollouts jump where one action chunk hands over to the next (the Grasp base's hand targets change 3 times as
    much per step there as inside a chunk, and 6 times as much as the seed's), and A_EP would pass that on."""
    rollout_sources_per_object: int = 0
    """How many of each object's successful rollouts the augment stage gives A_EP as sources: those whose success
    held longest (`Episode.extra["held_steps"]`), ties to the smoothest (`loop.best_sources`); after the
    `rollout_min_held_steps` filter, with A_EP only (the ablation without A_EP keeps its rollouts). 0: every one
    (the paper). Meant to give rollout-born demos one motion per object, as a seed's transfers share one; on the
    Grasp `cpu` run's iteration 2 with 1 per object the next base scored 56.5 and 53.5% on T_OEP (two training seeds)
    against 53.5 and 52.0% with every rollout, inside a base's seed spread; no preset sets it (BENCHMARKS.md, session 45)."""
    seed_source_share: float = 0.0
    """The share of each new object's demos in D_{i+1} that the augment stage makes by A_EP from the seed (replayed
    as recorded, as in the warm-up) instead of from that object's successful rollouts; an object of O_{i+1} whose
    rollouts all failed gets its whole share from the seed. With A_EP only (the ablation without A_EP keeps its
    rollouts). 0: rollouts alone (the paper). An iteration's own `seed_source_share` overrides it for its D_i
    (`seed_share`). Meant for catalogs where the seed's own motion transfers to most new
    objects: there a demo replayed from the seed teaches the base more than one grown from a rollout (Grasp
    `cpu`, session 48: replay-1's 116 seed-born demos 65.5% on T_OEP, the flywheel's 148 mostly rollout-born 52.0%)."""

    def iteration(self, i: int) -> IterationSpec:
        """The scenario set of D_i (1-based); past the schedule's end, its last entry."""
        if i < 1:
            raise ValueError(f"iterations count from 1, got {i}")
        return self.iterations[min(i, len(self.iterations)) - 1]

    def seed_share(self, i: int) -> float:
        """The `seed_source_share` of D_i's new demos (i >= 2): iteration i's own when its entry sets one, else the
        preset's."""
        own = self.iteration(i).seed_source_share
        return self.seed_source_share if own is None else own

    def diffusion_config(self, warm: bool = False, run_seed: int = 0):
        """The base policy's DiffusionConfig; `warm`: for a base warm-started from the previous iteration's, whose
        `total_steps` are `warm_start_steps` when the preset sets them. Its seed is the preset's `diffusion.seed` when
        given, else `run_seed` (the run's --seed)."""
        from dexfly.policies.diffusion.config import DiffusionConfig

        kw = {"seed": run_seed, **self.diffusion}
        if warm and self.warm_start_steps is not None:
            kw["total_steps"] = self.warm_start_steps
        base = DiffusionConfig.paper() if kw.pop("size", "default") == "paper" else DiffusionConfig()
        cfg = base.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})
        return cfg.replace(warmup_steps=min(cfg.warmup_steps, max(cfg.total_steps // 10, 1)))

    def residual_config(self, run_seed: int = 0):
        """The residual stage's ResidualConfig; its seed is the preset's `residual.seed` when given (to repeat the RL
        on the same base with another seed: the earlier stages keep their config and are copied from a donor run),
        else `run_seed` (the run's --seed)."""
        from dexfly.policies.residual.config import ResidualConfig

        return ResidualConfig.from_dict({**ResidualConfig().to_dict(), "seed": run_seed, **self.residual})

    def augment_config(self):
        from dexfly.augment.config import AugmentConfig

        return dataclasses.replace(AugmentConfig(), **{k: v for k, v in self.augment.items() if k != "batch_size"})

    def t_oep_specs(self) -> list:
        """The T_OEP scenes this preset scores (`evaluation.t_oep_scenes`: the first N, or a list of indices)."""
        from dexfly.flywheel.testsets import load_t_oep

        return load_t_oep(self.task, self.evaluation["t_oep_scenes"])

    @property
    def augment_batch_size(self) -> int:
        return int(self.augment.get("batch_size", 64))


_PRESET_KEYS = {"iterations", "diffusion", "residual", "augment", "rollouts_per_object", "collect_batch_size", "evaluation",
                "keep_previous_data", "warm_start", "warm_start_steps", "rollout_min_held_steps",
                "rollout_source_smoothing", "rollout_sources_per_object", "seed_source_share", "note"}
_ITERATION_KEYS = {"objects", "env_ids", "num_poses", "trajectories", "sampled_poses", "seed_source_share", "note"}
_EVAL_KEYS = {"seeds", "t_o_pose_ids", "t_oep_scenes", "video_episodes"}


def schedule_path(task: str) -> Path:
    return SCHEDULES_DIR / f"{task}.json"


def presets_of(task: str) -> tuple[str, ...]:
    return tuple(_read(task)["presets"])


def read_task_file(path: Path, task: str, fmt: str, what: str) -> dict:
    """A per-task JSON data file (schedule, test set): FileNotFoundError or ValueError naming the file when it
    is missing, not JSON, or not a `fmt` file of `task`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {list(TASKS)}")
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} for task {task!r} ({path})") from None
    if not isinstance(data, dict) or data.get("format") != fmt or data.get("task") != task:
        raise ValueError(f"{path}: not a {fmt} {what} for task {task!r}")
    return data


def _read(task: str) -> dict:
    return read_task_file(schedule_path(task), task, FORMAT, "flywheel schedule")


def _check_share(share, where: str) -> None:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ValueError(f"{where}: seed_source_share must be a number from 0 to 1, got {share!r}")


def load_preset(task: str, preset: str) -> Preset:
    """The preset of the task's schedule, validated (unknown preset, keys, objects or environments: an error
    naming them)."""
    data = _read(task)
    where = f"{schedule_path(task)} preset {preset!r}"
    if preset not in data["presets"]:
        raise ValueError(f"unknown preset {preset!r} for task {task!r}; available: {list(data['presets'])}")
    p = data["presets"][preset]
    unknown = sorted(set(p) - _PRESET_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}")
    cat = load_catalog()
    main_kind = next(iter(TASK_ROLES[task].values()))  # the object role of the task's main role
    its = []
    for i, it in enumerate(p["iterations"], 1):
        unknown_it = sorted(set(it) - _ITERATION_KEYS)
        if unknown_it:
            raise ValueError(f"{where}, iteration {i}: unknown keys {unknown_it}")
        sampled = it.get("sampled_poses", False)
        if not isinstance(sampled, bool):
            raise ValueError(f"{where}, iteration {i}: sampled_poses must be true or false, got {sampled!r}")
        own_share = it.get("seed_source_share")
        if own_share is not None:
            _check_share(own_share, f"{where}, iteration {i}")
        spec = IterationSpec(tuple(it["objects"]), tuple(it["env_ids"]), int(it["num_poses"]), int(it["trajectories"]), sampled,
                             None if own_share is None else float(own_share))
        for oid in spec.objects:
            obj = cat.object(oid)  # CatalogError naming the id
            if task not in obj.tasks or obj.role != main_kind:
                raise ValueError(f"{where}, iteration {i}: object {oid!r} is not a {task} {main_kind}")
        for e in spec.env_ids:
            cat.environment(e)
        spec.pose_ids(task)
        if not spec.objects or not spec.env_ids or spec.num_poses < 1 or spec.trajectories < 1:
            raise ValueError(f"{where}, iteration {i}: needs objects, env_ids, num_poses >= 1 and trajectories >= 1")
        its.append(spec)
    if not its:
        raise ValueError(f"{where}: no iterations")
    evaluation = dict(p.get("evaluation", {}))
    if set(evaluation) - _EVAL_KEYS:
        raise ValueError(f"{where}: unknown evaluation keys {sorted(set(evaluation) - _EVAL_KEYS)}")
    evaluation = {"seeds": [0, 1, 2, 3, 4], "t_o_pose_ids": ["p00"], "t_oep_scenes": 40, "video_episodes": 4, **evaluation}
    preset_obj = Preset(task, preset, tuple(its), dict(p.get("diffusion", {})), dict(p.get("residual", {})), dict(p.get("augment", {})),
                        int(p.get("rollouts_per_object", 8)), int(p.get("collect_batch_size", 64)), evaluation,
                        bool(p.get("keep_previous_data", True)), bool(p.get("warm_start", False)), p.get("warm_start_steps"),
                        rollout_min_held_steps=p.get("rollout_min_held_steps", 0),
                        rollout_source_smoothing=p.get("rollout_source_smoothing", 0),
                        rollout_sources_per_object=p.get("rollout_sources_per_object", 0),
                        seed_source_share=p.get("seed_source_share", 0.0))
    ws = preset_obj.warm_start_steps
    if ws is not None and (isinstance(ws, bool) or not isinstance(ws, int) or ws < 1):
        raise ValueError(f"{where}: warm_start_steps must be a positive integer, got {ws!r}")
    for name in ("rollout_min_held_steps", "rollout_sources_per_object"):
        value = getattr(preset_obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: {name} must be a non-negative integer, got {value!r}")
    _check_share(preset_obj.seed_source_share, where)
    from dexfly.augment.config import check_smoothing_window

    check_smoothing_window(preset_obj.rollout_source_smoothing, f"{where}: rollout_source_smoothing")
    preset_obj.diffusion_config()  # unknown fields fail here, naming them
    preset_obj.residual_config()
    preset_obj.augment_config()
    preset_obj.t_oep_specs()  # indices the test set does not hold fail here, naming them
    return preset_obj


__all__ = ["FORMAT", "IterationSpec", "Preset", "load_preset", "presets_of", "schedule_path"]
