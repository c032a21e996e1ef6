"""Scene sets built from the catalogs: the object x environment x pose grids that evaluation (and the
flywheel's test sets) run on."""

from __future__ import annotations

import itertools

import numpy as np

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


def object_scene(task: str, obj: str, env_id: str, poses, pose_id: str = "sampled") -> SceneSpec:
    """A scene with `obj` in the task's first role (the others keep their default objects) at explicit poses
    `{role: (x, y, yaw)}`; no compiled env is needed."""
    cat = load_catalog()
    roles = tuple(TASK_ROLES[task])
    defaults = {r: o.id for r, o in cat.default_objects(task).items()}
    objects = tuple((r, obj if r == roles[0] else defaults[r]) for r in roles)
    return SceneSpec(objects=objects, env_id=env_id, pose_id=pose_id, poses=tuple((r, tuple(float(v) for v in poses[r])) for r in roles))


def catalog_poses(task: str, pose_ids: tuple[str, ...] | None) -> list | None:
    """The task's catalog poses (PoseSpec) of `pose_ids`; None for None (draws sample continuous poses). Unknown ids
    raise CatalogError naming them; an empty tuple, ValueError."""
    if pose_ids is None:
        return None
    if not pose_ids:
        raise ValueError("pose_ids is empty (None samples continuous poses)")
    pose_set = load_catalog().poses_for(task)
    return [pose_set.pose(p) for p in pose_ids]


def sample_object_scenes(task: str, objects: tuple[str, ...], env_ids: tuple[str, ...], per_object: int, seed: int,
                         pose_ids: tuple[str, ...] | None = None) -> list[SceneSpec]:
    """`per_object` scenes of every object: a uniformly drawn environment of `env_ids` and a uniformly drawn
    catalog pose of `pose_ids`, or with `pose_ids=None` a pose sampled from the task's continuous ranges (numpy,
    seeded: the same arguments give the same scenes)."""
    cat = load_catalog()
    for oid in objects:
        cat.object(oid)
    for e in env_ids:
        cat.environment(e)
    pose_set = cat.poses_for(task)
    named = catalog_poses(task, pose_ids)
    rng = np.random.default_rng([seed, 6151])
    specs = []
    for obj in objects:
        for _ in range(per_object):
            env_id = env_ids[int(rng.integers(len(env_ids)))]
            pose = pose_set.sample(rng) if named is None else named[int(rng.integers(len(named)))]
            specs.append(object_scene(task, obj, env_id, pose, pose.id))
    return specs


__all__ = ["catalog_poses", "object_scene", "sample_object_scenes", "scene_grid"]
