"""Batched MJX manipulation tasks, one module per task, sharing `envs.base`.

    env = envs.make("grasp")                        # compiled for the task's default object topology
    scenes = env.make_scenes([env.default_scene()] * 8)
    states = env.reset_batch(scenes, jax.random.split(key, 8))
    states = env.step_batch(states, actions)        # actions [8, env.action_dim]
"""

import functools

import dexfly  # noqa: F401  (sets XLA flags and the compilation cache before jax is imported)
from envs.base import EnvConfig, Scene, SceneSet, SceneSpec, SimulationError, State, TaskEnv, episode_objects, obs_vector


def _registry():
    from envs.grasp import Grasp
    from envs.pour import Pour

    tasks = {"grasp": Grasp, "pour": Pour}
    try:
        from envs.handover import Handover
        from envs.lift import Lift

        tasks.update({"lift": Lift, "handover": Handover})
    except ImportError:  # dual-arm tasks not present in this checkout
        pass
    return tasks


TASKS = ("grasp", "pour", "lift", "handover")


def make(task: str, config: EnvConfig | None = None, objects: dict[str, str] | None = None) -> TaskEnv:
    """Build the task env; `objects` (role -> catalog id) picks the compiled topology (default objects otherwise)."""
    registry = _registry()
    if task not in registry:
        raise ValueError(f"unknown task {task!r}; available: {sorted(registry)}")
    return registry[task](config or EnvConfig(), objects)


@functools.lru_cache(maxsize=32)
def make_cached(task: str, objects: tuple[tuple[str, str], ...] | None = None, config: EnvConfig | None = None) -> TaskEnv:
    """`make`, memoised on (task, objects, config): reuse one env (and its compiled functions) per topology."""
    return make(task, config, dict(objects) if objects else None)


__all__ = ["EnvConfig", "Scene", "SceneSet", "SceneSpec", "SimulationError", "State", "TaskEnv", "make", "make_cached", "TASKS", "episode_objects", "obs_vector"]
