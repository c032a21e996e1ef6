"""Batched MJX manipulation tasks, one module per task, sharing `envs.base`.

    env = envs.make("grasp")                        # compiled for the task's default object topology
    scenes = env.make_scenes([env.default_scene()] * 8)
    states = env.reset_batch(scenes, jax.random.split(key, 8))
    states = env.step_batch(states, actions)        # actions [8, env.action_dim]
"""

import functools

import dexfly  # noqa: F401  (sets XLA flags and the compilation cache before jax is imported)
from dexfly.catalog import TASKS, load_catalog
from dexfly.layout import obs_vector
from envs.base import (IMPLS, EnvConfig, Scene, SceneSet, SceneSpec, SimulationError, State, TaskEnv, check_impl,
                       episode_objects)


def _registry() -> dict[str, type[TaskEnv]]:
    """Task name -> TaskEnv class, for each of `dexfly.catalog.TASKS` in that order."""
    from envs.grasp import Grasp
    from envs.handover import Handover
    from envs.lift import Lift
    from envs.pour import Pour

    classes = {cls.name: cls for cls in (Grasp, Pour, Lift, Handover)}
    return {task: classes[task] for task in TASKS}


def make(task: str, config: EnvConfig | None = None, objects: dict[str, str] | None = None) -> TaskEnv:
    """Build the task env; `objects` (role -> catalog id) picks the compiled topology (default objects otherwise)."""
    registry = _registry()
    if task not in registry:
        raise ValueError(f"unknown task {task!r}; available: {sorted(registry)}")
    return registry[task](config or EnvConfig(), objects)


def make_cached(task: str, objects: tuple[tuple[str, str], ...] | None = None, config: EnvConfig | None = None) -> TaskEnv:
    """`make`, memoised on (task, objects, config): the process's one env cache. Reuse one env (and its compiled
    functions) per object set; `objects=None` and `config=None` mean the task's default objects and `EnvConfig()`,
    and share the env built for them when given explicitly."""
    config = config or EnvConfig()
    if not objects and task in TASKS:
        objects = tuple((role, obj.id) for role, obj in load_catalog().default_objects(task).items())
    return _make_cached(task, tuple(objects) if objects else None, config)


@functools.lru_cache(maxsize=None)
def physics_fingerprint(task: str) -> str:
    """The task's simulation model as a short hash (`envs.scene.physics_fingerprint` of its robot, default scene
    and friction cone), without compiling it; flywheel run folders record it and refuse to resume on another model."""
    from envs import scene as scene_lib

    registry = _registry()
    if task not in registry:
        raise ValueError(f"unknown task {task!r}; available: {sorted(registry)}")
    cls, cat = registry[task], load_catalog()
    return scene_lib.physics_fingerprint(scene_lib.robot_path(cls.robot_file), dict(cat.default_objects(task)), cat.environments[0],
                                         cat.particles if cls.uses_particles else None, cls.friction_cone)


@functools.lru_cache(maxsize=32)
def _make_cached(task: str, objects: tuple[tuple[str, str], ...] | None, config: EnvConfig) -> TaskEnv:
    return make(task, config, dict(objects) if objects else None)


__all__ = ["IMPLS", "EnvConfig", "Scene", "SceneSet", "SceneSpec", "SimulationError", "State", "TaskEnv", "make",
           "make_cached", "TASKS", "check_impl", "episode_objects", "obs_vector", "physics_fingerprint"]
