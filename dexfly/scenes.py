"""Scene sets built from the catalogs: the object x environment x pose grids that evaluation (and the
flywheel's test sets) run on."""

from __future__ import annotations

import itertools

import envs
from dexfly.catalog import TASK_ROLES, load_catalog
from envs.base import SceneSpec


def scene_grid(task: str, *, objects: tuple[str, ...] = (), num_objects: int = 1, env_ids: tuple[str, ...] = (), num_env_ids: int = 1,
               pose_ids: tuple[str, ...] = (), num_poses: int = 1) -> list[SceneSpec]:
    """Every (object, environment, pose) of the task, in that nesting order.

    The objects fill the task's first role (the source container for Pour; other roles keep their default
    objects); empty id lists take the first N catalog entries. Objects of different geometry topologies may
    be mixed (evaluation groups them). Unknown ids raise CatalogError naming them.
    """
    cat = load_catalog()
    roles = tuple(TASK_ROLES[task])
    main_role = roles[0]
    objects = tuple(objects) or tuple(o.id for o in cat.filter_objects(task=task, role=TASK_ROLES[task][main_role])[:num_objects])
    env_ids = tuple(env_ids) or tuple(e.id for e in cat.environments[:num_env_ids])
    pose_ids = tuple(pose_ids) or cat.poses_for(task).ids[:num_poses]
    defaults = {r: o.id for r, o in cat.default_objects(task).items()}
    specs, env_of_topology = [], {}
    for obj, env_id, pose_id in itertools.product(objects, env_ids, pose_ids):
        chosen = tuple((r, obj if r == main_role else defaults[r]) for r in roles)
        topology = cat.scene_topology(chosen)
        if topology not in env_of_topology:  # one env per topology: scene_spec only validates against it
            env_of_topology[topology] = envs.make_cached(task, chosen)
        specs.append(env_of_topology[topology].scene_spec(dict(chosen), env_id, pose_id))
    return specs


__all__ = ["scene_grid"]
