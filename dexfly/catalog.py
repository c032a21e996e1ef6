"""Object, environment and initial-pose catalogs: JSON data files loaded into frozen dataclasses.

The catalogs live in ``dexfly.paths.CATALOGS_DIR`` (``assets/catalogs``) and are plain data:
adding an object, a table/lighting environment or an initial pose means adding a JSON entry.

Files
-----
- ``objects.json``: a list of objects (``id, category, tasks, role, mass, friction, geoms``). Each geom is
  ``{type: box|capsule|sphere, size, pos, quat?, rgba}`` in the object's body frame, whose origin is the
  centre of the object's axis-aligned bounding box (checked to 2 mm). Sizes follow MuJoCo's half-size
  semantics (box: 3 half-extents, capsule: [radius, half-length] along local z, sphere: [radius]).
- ``particles.json``: the small balls poured in the Pour task (``radius, mass, friction, count, rgba``).
- ``environments.json``: table height/friction/appearance and lighting (first entry = default).
- ``poses.json``: per task, sampling ``ranges`` and an enumerable set of named ``poses``
  (``p00`` = default) mapping each pose role to ``[x, y, yaw]`` on the table.

Derived per object: ``topology`` (the ordered tuple of geom types: objects with the same topology can
share one compiled MJX model, their sizes/poses/masses varied as per-env model parameters),
``half_extents`` (of the bounding box) and ``rest_height`` (body origin to lowest point; an object
resting on the table has its origin at ``z = env.table_height + obj.rest_height``).
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from dexfly import paths
from dexfly.utils import read_json

__all__ = [
    "CatalogError",
    "GeomSpec",
    "ObjectSpec",
    "ParticleSpec",
    "EnvSpec",
    "PoseSpec",
    "PoseRange",
    "TaskPoses",
    "Catalog",
    "TASKS",
    "main_role",
    "TASK_ROLES",
    "OBJECT_ROLES",
    "GEOM_TYPES",
    "TABLE_TEXTURES",
    "load_catalog",
]

# The tasks, in their canonical order (envs, datasets and scripts use this tuple).
TASKS = ("grasp", "pour", "lift", "handover")
# Task role (key in poses.json, `TaskEnv.roles`) -> object role (field `role` in objects.json), per task.
# The one map between the two; `TaskEnv.role_kind` and `Catalog.filter_objects` read it.
TASK_ROLES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "grasp": MappingProxyType({"object": "object"}),
        "pour": MappingProxyType({"source": "source_container", "target": "target_container"}),
        "lift": MappingProxyType({"object": "object"}),
        "handover": MappingProxyType({"object": "object"}),
    }
)
OBJECT_ROLES = ("object", "source_container", "target_container")


def main_role(task: str) -> str:
    """The role whose object a task's schedules, augmentation and test sets vary (its first in TASK_ROLES)."""
    return next(iter(TASK_ROLES[task]))

GEOM_TYPES = ("box", "capsule", "sphere")
_SIZE_LEN = {"box": 3, "capsule": 2, "sphere": 1}
# table texture name -> MJCF <texture> attributes (rgb1 = table_rgba[:3], rgb2 = table_texture_rgb2)
TABLE_TEXTURES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "plain": MappingProxyType({"builtin": "flat"}),
        "checker": MappingProxyType({"builtin": "checker"}),
        "gradient": MappingProxyType({"builtin": "gradient"}),
        "wood": MappingProxyType({"builtin": "gradient", "mark": "random", "random": "0.04"}),
        "marble": MappingProxyType({"builtin": "flat", "mark": "random", "random": "0.08"}),
    }
)
_CENTRE_TOL = 0.002  # m: geoms' bounding-box centre must be the body origin within this

FILES = ("objects.json", "environments.json", "poses.json", "particles.json")


class CatalogError(ValueError):
    """A catalog file is missing or malformed, or a lookup names an unknown id."""


# ----------------------------------------------------------------------------------------------
# dataclasses


@dataclass(frozen=True)
class GeomSpec:
    type: str
    size: tuple[float, ...]
    pos: tuple[float, float, float]
    quat: tuple[float, float, float, float]  # (w, x, y, z), normalised
    rgba: tuple[float, float, float, float]

    def rotation(self) -> np.ndarray:
        return _quat_to_mat(self.quat)

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of this geom's axis-aligned bounding box in the body frame (exact for these shapes)."""
        R = self.rotation()
        s = np.asarray(self.size, dtype=float)
        if self.type == "box":
            h = np.abs(R) @ s
        elif self.type == "capsule":
            h = np.abs(R[:, 2]) * s[1] + s[0]
        else:
            h = np.full(3, s[0])
        p = np.asarray(self.pos, dtype=float)
        return p - h, p + h

    def volume(self) -> float:
        s = np.asarray(self.size, dtype=float)
        if self.type == "box":
            return float(8.0 * np.prod(s[:3]))
        if self.type == "sphere":
            return float(4.0 / 3.0 * np.pi * s[0] ** 3)
        r, h = s[0], s[1]  # capsule
        return float(np.pi * r * r * 2 * h + 4.0 / 3.0 * np.pi * r**3)


@dataclass(frozen=True)
class ObjectSpec:
    id: str
    category: str
    tasks: tuple[str, ...]
    role: str
    mass: float
    friction: float
    geoms: tuple[GeomSpec, ...]
    # derived
    topology: tuple[str, ...] = field(default=())
    half_extents: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))
    rest_height: float = 0.0
    index: int = -1  # position in objects.json

    @property
    def ngeom(self) -> int:
        return len(self.geoms)

    def geom_masses(self) -> tuple[float, ...]:
        """Per-geom masses: the object's mass split in proportion to geom volume (uniform density)."""
        vols = np.array([g.volume() for g in self.geoms])
        return tuple(float(m) for m in self.mass * vols / vols.sum())


@dataclass(frozen=True)
class ParticleSpec:
    radius: float
    mass: float
    friction: float
    count: int
    max_count: int
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class EnvSpec:
    id: str
    table_height: float
    table_friction: float
    table_rgba: tuple[float, float, float, float]
    table_texture: str
    table_texture_rgb2: tuple[float, float, float]
    light_dir: tuple[float, float, float]
    light_diffuse: tuple[float, float, float]
    light_ambient: tuple[float, float, float]
    floor_rgba: tuple[float, float, float, float]
    index: int = -1

    def texture_attrs(self) -> dict[str, str]:
        """MJCF ``<texture type="2d">`` attributes for the table top (builtin, rgb1, rgb2, mark...)."""
        attrs = dict(TABLE_TEXTURES[self.table_texture])
        attrs["rgb1"] = " ".join(f"{v:g}" for v in self.table_rgba[:3])
        attrs["rgb2"] = " ".join(f"{v:g}" for v in self.table_texture_rgb2)
        if "mark" in attrs:
            attrs["markrgb"] = attrs["rgb2"]
        return attrs


@dataclass(frozen=True)
class PoseRange:
    x: tuple[float, float]
    y: tuple[float, float]
    yaw: tuple[float, float]

    @property
    def lo(self) -> tuple[float, float, float]:
        return (self.x[0], self.y[0], self.yaw[0])

    @property
    def hi(self) -> tuple[float, float, float]:
        return (self.x[1], self.y[1], self.yaw[1])

    def __iter__(self):
        """``lo, hi = pose_range`` (each ``(x, y, yaw)``)."""
        return iter((self.lo, self.hi))

    def contains(self, xyyaw: Sequence[float], tol: float = 1e-9) -> bool:
        return all(lo - tol <= v <= hi + tol for v, (lo, hi) in zip(xyyaw, (self.x, self.y, self.yaw)))

    def sample(self, rng: np.random.Generator) -> tuple[float, float, float]:
        return tuple(float(rng.uniform(lo, hi)) for lo, hi in (self.x, self.y, self.yaw))  # type: ignore[return-value]


@dataclass(frozen=True)
class PoseSpec:
    """An initial pose of a task: pose role (e.g. ``object``, ``source``) -> (x, y, yaw) on the table."""

    task: str
    id: str
    placements: Mapping[str, tuple[float, float, float]]

    def __getitem__(self, role: str) -> tuple[float, float, float]:
        return self.placements[role]


@dataclass(frozen=True)
class TaskPoses:
    task: str
    ranges: Mapping[str, PoseRange]
    poses: tuple[PoseSpec, ...]

    @property
    def default(self) -> str:
        """Id of the default pose (the first listed, ``p00``)."""
        return self.poses[0].id

    @property
    def default_pose(self) -> PoseSpec:
        return self.poses[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.poses)

    def pose(self, pose_id: str) -> PoseSpec:
        for p in self.poses:
            if p.id == pose_id:
                return p
        raise _unknown(f"{self.task} pose", pose_id, self.ids, " in poses.json")

    def sample(self, rng: np.random.Generator, pose_id: str = "sampled") -> PoseSpec:
        """A pose drawn uniformly from the task's ranges (roles sampled independently)."""
        return PoseSpec(self.task, pose_id, MappingProxyType({r: rg.sample(rng) for r, rg in self.ranges.items()}))


# ----------------------------------------------------------------------------------------------
# the catalog


def _unknown(kind: str, key: str, known: Iterable[str], where: str = "") -> CatalogError:
    known = list(known)
    close = difflib.get_close_matches(key, known, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return CatalogError(f"unknown {kind} id {key!r}{where}{hint} ({len(known)} known)")


@dataclass(frozen=True)
class Catalog:
    root: Path
    objects: tuple[ObjectSpec, ...]
    environments: tuple[EnvSpec, ...]
    poses: Mapping[str, TaskPoses]
    particles: ParticleSpec

    # --- lookups -----------------------------------------------------------------------------
    def object(self, object_id: str) -> ObjectSpec:
        for o in self.objects:
            if o.id == object_id:
                return o
        raise _unknown("object", object_id, (o.id for o in self.objects), f" in {self.root / 'objects.json'}")

    def environment(self, env_id: str) -> EnvSpec:
        for e in self.environments:
            if e.id == env_id:
                return e
        raise _unknown("environment", env_id, (e.id for e in self.environments),
                       f" in {self.root / 'environments.json'}")

    def pose(self, task: str, pose_id: str) -> PoseSpec:
        tp = self.poses_for(task)
        for p in tp.poses:
            if p.id == pose_id:
                return p
        raise _unknown(f"{task} pose", pose_id, tp.ids, f" in {self.root / 'poses.json'}")

    def poses_for(self, task: str) -> TaskPoses:
        """The task's pose ranges and enumerated poses."""
        _check_task(task)
        return self.poses[task]

    def filter_objects(self, task: str | None = None, role: str | None = None,
                       category: str | None = None) -> tuple[ObjectSpec, ...]:
        """Objects in file order matching all given criteria. ``role`` is an object role
        (``object``/``source_container``/``target_container``) or, with ``task``, a pose role (``source``)."""
        if task is not None:
            _check_task(task)
            if role is not None and role in TASK_ROLES[task]:
                role = TASK_ROLES[task][role]
        if role is not None and role not in OBJECT_ROLES:
            raise CatalogError(f"unknown role {role!r}; expected one of {OBJECT_ROLES}")
        return tuple(
            o for o in self.objects
            if (task is None or task in o.tasks) and (role is None or o.role == role)
            and (category is None or o.category == category)
        )

    def categories(self, task: str | None = None, role: str | None = None) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o.category for o in self.filter_objects(task=task, role=role)))

    def task_objects(self, task: str) -> dict[str, tuple[ObjectSpec, ...]]:
        """Pose role -> candidate objects for that role in the task (e.g. pour: source, target)."""
        _check_task(task)
        return {r: self.filter_objects(task=task, role=orole) for r, orole in TASK_ROLES[task].items()}

    def default_objects(self, task: str) -> dict[str, ObjectSpec]:
        """Pose role -> default object (the first listed in objects.json for that task and role)."""
        return {r: objs[0] for r, objs in self.task_objects(task).items()}

    def default_object(self, task: str, role: str | None = None) -> ObjectSpec:
        d = self.default_objects(task)
        if role is None:
            return next(iter(d.values()))
        if role in TASK_ROLES[task].values():
            role = next(k for k, v in TASK_ROLES[task].items() if v == role)
        if role not in d:
            raise CatalogError(f"task {task!r} has no role {role!r}; roles: {list(d)}")
        return d[role]

    @property
    def default_env(self) -> EnvSpec:
        return self.environments[0]

    def default_pose(self, task: str) -> PoseSpec:
        return self.poses_for(task).default_pose

    def topologies(self, task: str | None = None, role: str | None = None) -> dict[tuple[str, ...], tuple[ObjectSpec, ...]]:
        """Topology (ordered geom types) -> objects sharing it (file order)."""
        out: dict[tuple[str, ...], list[ObjectSpec]] = {}
        for o in self.filter_objects(task=task, role=role):
            out.setdefault(o.topology, []).append(o)
        return {k: tuple(v) for k, v in out.items()}

    def scene_topology(self, objects: Mapping[str, str | ObjectSpec] | Iterable[tuple[str, str | ObjectSpec]]) -> tuple:
        """The key of a scene's compiled model: ``((role, object topology), ...)`` in the given role order.

        ``objects`` maps (or pairs) each task role to a catalog object id or ``ObjectSpec``. Scenes with the
        same key share one compiled MJX model (sizes, masses, frictions vary as per-env parameters)."""
        pairs = objects.items() if isinstance(objects, Mapping) else objects
        return tuple((role, (o if isinstance(o, ObjectSpec) else self.object(o)).topology) for role, o in pairs)

    @staticmethod
    def rest_z(obj: ObjectSpec, env: EnvSpec) -> float:
        """World z of the object's body origin when resting upright on the env's table."""
        return env.table_height + obj.rest_height


def _check_task(task: str) -> None:
    if task not in TASKS:
        close = difflib.get_close_matches(task, TASKS, n=2)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CatalogError(f"unknown task {task!r}{hint}; expected one of {TASKS}")


# ----------------------------------------------------------------------------------------------
# parsing helpers


class _Ctx:
    def __init__(self, file: Path, where: str):
        self.file, self.where = file, where

    def err(self, msg: str) -> CatalogError:
        return CatalogError(f"{self.file}: {self.where}: {msg}")

    def get(self, d: Mapping[str, Any], key: str, default: Any = ...):
        if not isinstance(d, Mapping):
            raise self.err(f"expected a JSON object, got {type(d).__name__}")
        if key not in d:
            if default is not ...:
                return default
            raise self.err(f"missing field {key!r}")
        return d[key]

    def num(self, d, key, *, lo=None, hi=None, positive=False, default=...) -> float:
        v = self.get(d, key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.err(f"field {key!r} must be a finite number, got {v!r}")
        if positive and v <= 0:
            raise self.err(f"field {key!r} must be positive, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.err(f"field {key!r}={v!r} outside [{lo}, {hi}]")
        return float(v)

    def vec(self, d, key, n: int | Sequence[int], *, default=..., lo=None, hi=None) -> tuple[float, ...]:
        v = self.get(d, key, default)
        ns = (n,) if isinstance(n, int) else tuple(n)
        if not isinstance(v, (list, tuple)) or len(v) not in ns:
            raise self.err(f"field {key!r} must be a list of {' or '.join(map(str, ns))} numbers, got {v!r}")
        out = []
        for x in v:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise self.err(f"field {key!r} has a non-number entry {x!r}")
            if (lo is not None and x < lo) or (hi is not None and x > hi):
                raise self.err(f"field {key!r} entry {x!r} outside [{lo}, {hi}]")
            out.append(float(x))
        return tuple(out)

    def string(self, d, key, choices: Sequence[str] | None = None) -> str:
        v = self.get(d, key)
        if not isinstance(v, str) or not v:
            raise self.err(f"field {key!r} must be a non-empty string, got {v!r}")
        if choices is not None and v not in choices:
            close = difflib.get_close_matches(v, choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.err(f"field {key!r}={v!r} is not one of {tuple(choices)}{hint}")
        return v


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CatalogError(f"{path}: catalog file not found")
    return read_json(path, CatalogError)


def _quat_to_mat(q: Sequence[float]) -> np.ndarray:
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _parse_geom(ctx: _Ctx, g: Any) -> GeomSpec:
    t = ctx.string(g, "type", GEOM_TYPES)
    size = ctx.get(g, "size")
    if not isinstance(size, (list, tuple)) or len(size) != _SIZE_LEN[t]:
        raise ctx.err(f"field 'size' of a {t} must have {_SIZE_LEN[t]} entries "
                      f"({'3 half-extents' if t == 'box' else '[radius, half-length]' if t == 'capsule' else '[radius]'}), "
                      f"got {size!r}")
    sz = ctx.vec(g, "size", _SIZE_LEN[t])
    if any(s <= 0 for s in sz):
        raise ctx.err(f"field 'size' entries must be positive, got {list(sz)}")
    pos = ctx.vec(g, "pos", 3)
    quat = ctx.vec(g, "quat", 4, default=[1.0, 0.0, 0.0, 0.0])
    n = math.sqrt(sum(v * v for v in quat))
    if n < 1e-9:
        raise ctx.err("field 'quat' must be non-zero")
    quat = tuple(v / n for v in quat)
    rgba = ctx.vec(g, "rgba", (3, 4), default=[0.6, 0.6, 0.6, 1.0], lo=0.0, hi=1.0)
    if len(rgba) == 3:
        rgba = rgba + (1.0,)
    return GeomSpec(t, sz, pos, quat, rgba)  # type: ignore[arg-type]


def _parse_object(file: Path, i: int, d: Any) -> ObjectSpec:
    ident = d.get("id") if isinstance(d, Mapping) else None
    ctx = _Ctx(file, f"entry {i}" + (f" (id {ident!r})" if isinstance(ident, str) else ""))
    oid = ctx.string(d, "id")
    category = ctx.string(d, "category")
    tasks = ctx.get(d, "tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ctx.err(f"field 'tasks' must be a non-empty list of {TASKS}, got {tasks!r}")
    for t in tasks:
        if t not in TASKS:
            raise ctx.err(f"field 'tasks' has unknown task {t!r}; expected among {TASKS}")
    role = ctx.string(d, "role", OBJECT_ROLES)
    for t in tasks:
        if role not in TASK_ROLES[t].values():
            raise ctx.err(f"role {role!r} is not used by task {t!r} (roles: {tuple(TASK_ROLES[t].values())})")
    mass = ctx.num(d, "mass", positive=True)
    friction = ctx.num(d, "friction", positive=True)
    geoms_raw = ctx.get(d, "geoms")
    if not isinstance(geoms_raw, list) or not geoms_raw:
        raise ctx.err("field 'geoms' must be a non-empty list")
    geoms = tuple(_parse_geom(_Ctx(file, f"{ctx.where} geoms[{j}]"), g) for j, g in enumerate(geoms_raw))
    lo = np.min([g.aabb()[0] for g in geoms], axis=0)
    hi = np.max([g.aabb()[1] for g in geoms], axis=0)
    centre = (lo + hi) / 2
    if np.max(np.abs(centre)) > _CENTRE_TOL:
        raise ctx.err(
            f"field 'geoms': the bounding-box centre is {np.round(centre, 4).tolist()} but the body origin must be "
            f"the centre of the object's bounding box (within {_CENTRE_TOL} m); subtract it from every geom 'pos'"
        )
    return ObjectSpec(
        id=oid, category=category, tasks=tuple(tasks), role=role, mass=mass, friction=friction, geoms=geoms,
        topology=tuple(g.type for g in geoms),
        half_extents=tuple(float(v) for v in (hi - lo) / 2),  # type: ignore[arg-type]
        rest_height=float(-lo[2]), index=i,
    )


def _parse_env(file: Path, i: int, d: Any) -> EnvSpec:
    ident = d.get("id") if isinstance(d, Mapping) else None
    ctx = _Ctx(file, f"entry {i}" + (f" (id {ident!r})" if isinstance(ident, str) else ""))
    return EnvSpec(
        id=ctx.string(d, "id"),
        table_height=ctx.num(d, "table_height", lo=-0.04, hi=0.04),
        table_friction=ctx.num(d, "table_friction", lo=0.5, hi=1.2),
        table_rgba=_rgba(ctx, d, "table_rgba"),
        table_texture=ctx.string(d, "table_texture", tuple(TABLE_TEXTURES)),
        table_texture_rgb2=ctx.vec(d, "table_texture_rgb2", 3, lo=0.0, hi=1.0),  # type: ignore[arg-type]
        light_dir=ctx.vec(d, "light_dir", 3),  # type: ignore[arg-type]
        light_diffuse=ctx.vec(d, "light_diffuse", 3, lo=0.0, hi=1.0),  # type: ignore[arg-type]
        light_ambient=ctx.vec(d, "light_ambient", 3, lo=0.0, hi=1.0),  # type: ignore[arg-type]
        floor_rgba=_rgba(ctx, d, "floor_rgba"),
        index=i,
    )


def _rgba(ctx: _Ctx, d, key) -> tuple[float, float, float, float]:
    v = ctx.vec(d, key, (3, 4), lo=0.0, hi=1.0)
    return v + (1.0,) if len(v) == 3 else v  # type: ignore[return-value]


def _parse_poses(file: Path, raw: Any) -> dict[str, TaskPoses]:
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{file}: expected a JSON object keyed by task, got {type(raw).__name__}")
    for t in raw:
        if t not in TASKS:
            raise CatalogError(f"{file}: unknown task {t!r}; expected among {TASKS}")
    out = {}
    for task in TASKS:
        if task not in raw:
            raise CatalogError(f"{file}: missing task {task!r}")
        roles = tuple(TASK_ROLES[task])
        ctx = _Ctx(file, f"task {task!r}")
        ranges_raw = ctx.get(raw[task], "ranges")
        ranges = {}
        for r in roles:
            rc = _Ctx(file, f"task {task!r} ranges[{r!r}]")
            rr = rc.get(ranges_raw, r)
            lims = {k: rc.vec(rr, k, 2) for k in ("x", "y", "yaw")}
            for k, (lo, hi) in lims.items():
                if lo > hi:
                    raise rc.err(f"field {k!r} has min {lo} > max {hi}")
            ranges[r] = PoseRange(**lims)  # type: ignore[arg-type]
        for r in ranges_raw:
            if r not in roles:
                raise ctx.err(f"ranges has unknown role {r!r}; roles of {task!r}: {roles}")
        poses_raw = ctx.get(raw[task], "poses")
        if not isinstance(poses_raw, Mapping) or not poses_raw:
            raise ctx.err("field 'poses' must be a non-empty object {pose_id: {role: [x, y, yaw]}}")
        poses = []
        for pid, pr in poses_raw.items():
            pc = _Ctx(file, f"task {task!r} pose {pid!r}")
            if not isinstance(pr, Mapping):
                raise pc.err("expected {role: [x, y, yaw]}")
            for r in pr:
                if r not in roles:
                    raise pc.err(f"unknown role {r!r}; roles of {task!r}: {roles}")
            pl = {}
            for r in roles:
                v = pc.vec(pr, r, 3)
                if not ranges[r].contains(v):
                    rg = ranges[r]
                    raise pc.err(f"role {r!r} placement {list(v)} outside the task's ranges "
                                 f"x={list(rg.x)} y={list(rg.y)} yaw={list(rg.yaw)}")
                pl[r] = v
            poses.append(PoseSpec(task, str(pid), MappingProxyType(pl)))
        out[task] = TaskPoses(task, MappingProxyType(ranges), tuple(poses))
    return out


def _parse_particles(file: Path, raw: Any) -> ParticleSpec:
    ctx = _Ctx(file, "particles")
    count = ctx.get(raw, "count", 6)
    max_count = ctx.get(raw, "max_count", count)
    for k, v in (("count", count), ("max_count", max_count)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 5:
            raise ctx.err(f"field {k!r} must be an integer >= 5, got {v!r}")
    if max_count < count:
        raise ctx.err(f"field 'max_count'={max_count} is smaller than 'count'={count}")
    return ParticleSpec(
        radius=ctx.num(raw, "radius", positive=True), mass=ctx.num(raw, "mass", positive=True),
        friction=ctx.num(raw, "friction", positive=True), count=count, max_count=max_count,
        rgba=_rgba(ctx, raw, "rgba"),
    )


def _parse(root: Path) -> Catalog:
    obj_file, env_file, pose_file, part_file = (root / f for f in FILES)
    raw_objs = _read_json(obj_file)
    if not isinstance(raw_objs, list) or not raw_objs:
        raise CatalogError(f"{obj_file}: expected a non-empty JSON list of objects")
    objects = tuple(_parse_object(obj_file, i, d) for i, d in enumerate(raw_objs))
    _check_dupes(obj_file, [o.id for o in objects])
    for task in TASKS:
        for orole in TASK_ROLES[task].values():
            if not any(task in o.tasks and o.role == orole for o in objects):
                raise CatalogError(f"{obj_file}: task {task!r} has no object with role {orole!r}")
    raw_envs = _read_json(env_file)
    if not isinstance(raw_envs, list) or not raw_envs:
        raise CatalogError(f"{env_file}: expected a non-empty JSON list of environments")
    envs = tuple(_parse_env(env_file, i, d) for i, d in enumerate(raw_envs))
    _check_dupes(env_file, [e.id for e in envs])
    poses = _parse_poses(pose_file, _read_json(pose_file))
    for task, tp in poses.items():
        _check_dupes(pose_file, [p.id for p in tp.poses], f"task {task!r} ")
    particles = _parse_particles(part_file, _read_json(part_file))
    return Catalog(root=root, objects=objects, environments=envs, poses=MappingProxyType(poses), particles=particles)


def _check_dupes(file: Path, ids: list[str], what: str = "") -> None:
    seen: dict[str, int] = {}
    for i, k in enumerate(ids):
        if k in seen:
            raise CatalogError(f"{file}: {what}entry {i}: duplicate id {k!r} (first at entry {seen[k]})")
        seen[k] = i


@functools.lru_cache(maxsize=8)
def _load_cached(root: str, stamp: tuple) -> Catalog:
    return _parse(Path(root))


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate the catalogs in ``path`` (default ``dexfly.paths.CATALOGS_DIR``).

    Cached per directory; editing a file (its mtime/size changes) triggers a reload.
    Raises ``CatalogError`` naming the file, entry and field of the first problem found.
    """
    root = Path(path if path is not None else paths.CATALOGS_DIR).expanduser().resolve()
    if not root.is_dir():
        raise CatalogError(f"{root}: catalog directory not found")
    stamp = []
    for f in FILES:
        p = root / f
        st = p.stat() if p.exists() else None
        stamp.append((f, st.st_mtime_ns if st else None, st.st_size if st else None))
    return _load_cached(str(root), tuple(stamp))
