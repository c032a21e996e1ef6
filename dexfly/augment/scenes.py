"""C_aug as explicit data: expand an AugmentConfig into scene configurations and assign them to attempts."""

from __future__ import annotations

import itertools
import math

import numpy as np

from dexfly.augment.config import AugmentConfig
from envs.base import SceneSpec


def scene_configs(caug: AugmentConfig, env, source, seed: int) -> list[SceneSpec]:
    """All configurations of C_aug (objects x environments x poses) as SceneSpecs, grouped by object topology.

    `env` is any env of the task (for the catalog and role checks); `source` is the first source Episode
    (its objects / environment are used where C_aug leaves them empty). Unknown ids raise ValueError.
    """
    cat, roles = env.catalog, env.roles
    objects = dict(caug.objects)
    unknown_roles = set(objects) - set(roles)
    if unknown_roles:
        raise ValueError(f"C_aug names object role(s) {sorted(unknown_roles)} that task {env.name!r} does not have (roles {list(roles)})")
    per_role = []
    for i, role in enumerate(roles):
        ids = tuple(objects.get(role) or (source.object_ids[i],))
        for oid in ids:
            env._object_for_role(role, oid)  # CatalogError (a ValueError) for unknown or unfit ids
        per_role.append(ids)
    env_ids = tuple(caug.env_ids) or (source.env_id,)
    for e in env_ids:
        cat.environment(e)
    pose_set = cat.poses_for(env.name)
    poses = [pose_set.pose(p) for p in caug.pose_ids]
    if caug.num_sampled_poses < 0:
        raise ValueError(f"num_sampled_poses must be >= 0, got {caug.num_sampled_poses}")
    rng = np.random.default_rng([seed, 7919])
    poses += [pose_set.sample(rng) for _ in range(caug.num_sampled_poses)]
    if not poses:
        poses = [pose_set.default_pose]
    # Grid mode takes the configurations in this order, cycling, and a run that wants fewer demos than there are
    # configurations stops within the first pass; so consecutive configurations cycle through the U (objects,
    # environment) units and the P poses at once: entry t is unit t % U at pose (t + t // lcm(U, P)) % P, which is
    # every (unit, pose) pair exactly once (the shift per lcm block reaches the pairs the plain cycle skips when U and
    # P share a factor). Listed unit by unit, a 20-demo run over 8 environments x 10 poses had drawn its demos from the
    # first 2 or 3 environments only.
    units = [(combo, e) for combo in itertools.product(*per_role) for e in env_ids]
    n_units, n_poses = len(units), len(poses)
    block = math.lcm(n_units, n_poses)
    specs = []
    for t in range(n_units * n_poses):
        (combo, e), p = units[t % n_units], poses[(t + t // block) % n_poses]
        specs.append(SceneSpec(
            objects=tuple(zip(roles, combo)),
            env_id=e,
            pose_id=p.id,
            poses=tuple((r, tuple(float(v) for v in p[r])) for r in roles),
        ))
    # Stable sort by topology so that grid cycling yields long same-topology runs (one compiled env each); within a
    # topology the interleaving above is kept.
    topo = [cat.scene_topology(s.objects) for s in specs]
    order = sorted(range(len(specs)), key=lambda i: (str(topo[i]), i))
    return [specs[i] for i in order]


def attempt_config(caug: AugmentConfig, n_configs: int, attempt: int, seed: int) -> int:
    """Index of the configuration used by attempt `attempt` (grid: cycled; sample: seeded uniform draw)."""
    if caug.mode == "grid":
        return (caug.grid_start + attempt) % n_configs
    if caug.mode == "sample":
        return int(np.random.default_rng([seed, attempt, 1]).integers(n_configs))
    raise ValueError(f"unknown C_aug mode {caug.mode!r}; use 'grid' or 'sample'")
