"""The flywheel's test sets, as in the paper's Section 5: T_O^i (the objects of iteration i in one fixed scene)
and T_OEP (fixed multi-factor configurations: object x environment x pose).

T_OEP is data: `assets/testsets/<task>.json` holds 40 configurations per task, each an object of the task's
"similar objects" set (iteration 2 of the `paper` schedule), one of the catalog's environments and a pose drawn
from the task's continuous pose ranges (so no dataset's named-pose grid contains it). Every flywheel run and
every baseline of a task is scored on the same file. `make_t_oep` wrote them (seeded); `load_t_oep` reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dexfly import paths
from dexfly.catalog import TASK_ROLES, load_catalog
from dexfly.flywheel.schedule import read_task_file
from dexfly.scenes import object_scene, scene_grid
from envs.base import SceneSpec

FORMAT = "dexfly.testset/1"
TESTSETS_DIR = paths.ASSETS_DIR / "testsets"
T_OEP_SIZE = 40


def testset_path(task: str) -> Path:
    return TESTSETS_DIR / f"{task}.json"


def make_t_oep(task: str, objects: tuple[str, ...], n: int = T_OEP_SIZE, seed: int = 0) -> dict:
    """A T_OEP file's contents: `n` configurations, object and environment cycled through shuffled orders so each
    appears about equally often, poses sampled uniformly from the task's ranges (seeded)."""
    cat = load_catalog()
    rng = np.random.default_rng([seed, 4409])
    env_ids = [e.id for e in cat.environments]
    obj_order = [objects[i % len(objects)] for i in rng.permutation(n)]
    env_order = [env_ids[i % len(env_ids)] for i in rng.permutation(n)]
    pose_set = cat.poses_for(task)
    configs = []
    for k in range(n):
        pose = pose_set.sample(rng)
        configs.append({"object": obj_order[k], "env_id": env_order[k], "pose": {r: [round(float(v), 4) for v in pose[r]] for r in TASK_ROLES[task]}})
    return {"format": FORMAT, "task": task, "seed": seed, "objects": list(objects), "t_oep": configs}


def load_t_oep(task: str, which: int | list[int] | tuple[int, ...] | None = None) -> list[SceneSpec]:
    """T_OEP's scenes: all of them, the first `which` (an int), or those at the indices `which` (a list); ValueError
    naming the file when it is malformed or of another task, or an index it does not hold."""
    path = testset_path(task)
    configs = read_task_file(path, task, FORMAT, "T_OEP test set")["t_oep"]
    if isinstance(which, (list, tuple)):
        bad = [k for k in which if not isinstance(k, int) or not 0 <= k < len(configs)]
        if bad or not which:
            raise ValueError(f"{path}: T_OEP scene indices {list(which)} must be a non-empty list of 0..{len(configs) - 1}")
        picked = [(k, configs[k]) for k in which]
    else:
        picked = list(enumerate(configs[:which] if which else configs))
    return [object_scene(task, c["object"], c["env_id"], c["pose"], f"t_oep_{k:02d}") for k, c in picked]


def t_o_scenes(task: str, objects: tuple[str, ...], pose_ids: tuple[str, ...] = ("p00",), env_id: str | None = None) -> list[SceneSpec]:
    """T_O: each object in one fixed scene (the default environment, the given catalog poses)."""
    env_id = env_id or load_catalog().environments[0].id
    return scene_grid(task, objects=tuple(objects), env_ids=(env_id,), pose_ids=tuple(pose_ids))


__all__ = ["T_OEP_SIZE", "load_t_oep", "make_t_oep", "t_o_scenes", "testset_path"]
