"""Scene composition: robot MJCF + table + task objects (+ Pour particles) as one MuJoCo model.

A compiled model fixes the *topology* (which geom types each task object has). Everything else that
differs between scenes of one topology (object sizes, masses, inertias, frictions, colours, table height and
friction) is carried per env as model-parameter overrides (`SceneParams`), so one jitted step serves a
whole batch of mixed scenes.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from dexfly import catalog as catalog_lib
from dexfly.paths import ROBOTS_DIR

# Model fields that vary between scenes of one topology. Taken from a C model compiled for each object set,
# so inertias, bounding radii and invweights are exactly what MuJoCo would compute for that scene.
OBJECT_FIELDS = (
    "geom_size",
    "geom_pos",
    "geom_quat",
    "geom_rbound",
    "geom_aabb",
    "geom_friction",
    "geom_rgba",
    "body_mass",
    "body_inertia",
    "body_ipos",
    "body_iquat",
    "body_subtreemass",
    "body_invweight0",
    "dof_invweight0",
)

OBJECT_CONTYPE, OBJECT_CONAFFINITY = 4, 15
PARTICLE_CONTYPE, PARTICLE_CONAFFINITY = 8, 13
TORSIONAL_ROLLING_FRICTION = "0.01 0.001"  # of objects, particles and the table (after the sliding friction)
CONDIM = 3
TABLE_HALF_EXTENT = (0.45, 0.75)  # visible table top half-size (m); the collision plane is infinite
TABLE_CENTRE_X = 0.45


def _fmt(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in np.atleast_1d(values))


def _camera(name: str, pos, target) -> str:
    """A fixed camera at `pos` looking at `target` with world z up in the image."""
    pos, target = np.asarray(pos, float), np.asarray(target, float)
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return f'<camera name="{name}" pos="{_fmt(pos)}" xyaxes="{_fmt(right)} {_fmt(up)}" fovy="50"/>'


def object_body_xml(name: str, obj: catalog_lib.ObjectSpec, pos=(0.0, 0.0, 1.0)) -> str:
    """MJCF of one free catalog object, exactly as the tasks simulate it: a body `name` with a free joint
    `{name}_joint` and geoms `{name}_g{k}` whose masses split the catalog mass by volume
    (`ObjectSpec.geom_masses`), the object's sliding friction, condim 3 and the object collision bits."""
    geoms = []
    for k, (g, mass) in enumerate(zip(obj.geoms, obj.geom_masses())):
        geoms.append(
            f'<geom name="{name}_g{k}" type="{g.type}" size="{_fmt(g.size)}" pos="{_fmt(g.pos)}" quat="{_fmt(g.quat)}" '
            f'rgba="{_fmt(g.rgba)}" mass="{mass:.6g}" friction="{obj.friction:.4g} {TORSIONAL_ROLLING_FRICTION}" '
            f'contype="{OBJECT_CONTYPE}" conaffinity="{OBJECT_CONAFFINITY}" condim="{CONDIM}"/>'
        )
    return (
        f'<body name="{name}" pos="{_fmt(pos)}">\n  <freejoint name="{name}_joint"/>\n  '
        + "\n  ".join(geoms)
        + "\n</body>"
    )


def table_texture_xml(env: catalog_lib.EnvSpec) -> str:
    """The table top's `<texture>` for the environment's catalog texture (`EnvSpec.texture_attrs`). Visual only:
    an asset, no geom or body."""
    attrs = " ".join(f'{k}="{v}"' for k, v in env.texture_attrs().items())
    return f'<texture name="table_tex" type="2d" {attrs} width="256" height="256"/>'


def _particles(spec: catalog_lib.ParticleSpec | None) -> str:
    if spec is None:
        return ""
    bodies = []
    for i in range(spec.count):
        bodies.append(
            f'<body name="particle{i}" pos="0 0 {1.0 + 0.05 * i:.3f}"><freejoint name="particle{i}_joint"/>'
            f'<geom name="particle{i}_g" type="sphere" size="{spec.radius:.5g}" mass="{spec.mass:.5g}" '
            f'rgba="{_fmt(spec.rgba)}" friction="{spec.friction:.4g} {TORSIONAL_ROLLING_FRICTION}" '
            f'contype="{PARTICLE_CONTYPE}" conaffinity="{PARTICLE_CONAFFINITY}" condim="{CONDIM}"/></body>'
        )
    return "\n".join(bodies)


_XML_COMMENT = re.compile(r"<!--.*?-->", re.S)
FRICTION_CONES = {"pyramidal": mujoco.mjtCone.mjCONE_PYRAMIDAL, "elliptic": mujoco.mjtCone.mjCONE_ELLIPTIC}


def physics_fingerprint(
    robot_file: str | Path,
    objects: dict[str, catalog_lib.ObjectSpec],
    env: catalog_lib.EnvSpec,
    particles: catalog_lib.ParticleSpec | None = None,
    friction_cone: str | None = None,
) -> str:
    """SHA-256 (16 hex digits) of a scene's model: the robot MJCF and the scene text around it (`scene_xml`),
    without XML comments and layout (they change no physics) and without the robot file's path or name (they
    differ between machines), and the friction cone when a task overrides the model's (`TaskEnv.friction_cone`).
    Flywheel run folders record it (`envs.physics_fingerprint`), so that no run mixes stages simulated on two
    models, e.g. the Panda's friction cone before and after it became elliptic."""
    robot_file = Path(robot_file).resolve()
    scene = scene_xml(robot_file, objects, env, particles).replace(str(robot_file), "ROBOT")
    h = hashlib.sha256()
    for text in (robot_file.read_text(), scene):
        h.update(" ".join(_XML_COMMENT.sub("", text).split()).encode())
    if friction_cone is not None:
        h.update(f"friction_cone={friction_cone}".encode())
    return h.hexdigest()[:16]


def scene_xml(
    robot_file: str | Path,
    objects: dict[str, catalog_lib.ObjectSpec],
    env: catalog_lib.EnvSpec,
    particles: catalog_lib.ParticleSpec | None = None,
    *,
    camera_target=(0.45, 0.0, 0.1),
) -> str:
    """The full MJCF text of a scene: robot, table, lights, cameras, task objects (keyed by role)."""
    robot_file = Path(robot_file).resolve()
    tx, ty = TABLE_HALF_EXTENT
    h = env.table_height
    cx, cy, cz = camera_target
    body_xml = "\n".join(object_body_xml(role, obj) for role, obj in objects.items())
    return f"""<mujoco model="dexfly_scene">
  <include file="{robot_file}"/>
  <visual><headlight ambient="0.25 0.25 0.25" diffuse="0.4 0.4 0.4"/><global offwidth="1280" offheight="960"/></visual>
  <asset>
    {table_texture_xml(env)}
    <material name="table_mat" texture="table_tex" texrepeat="4 4" rgba="1 1 1 1"/>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.62 0.7 0.8" rgb2="0.12 0.14 0.18" width="256" height="256"/>
  </asset>
  <worldbody>
    <light name="key" directional="true" pos="0 0 3" dir="{_fmt(env.light_dir)}" diffuse="{_fmt(env.light_diffuse)}" ambient="{_fmt(env.light_ambient)}" castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.05" pos="0 0 {h - 0.75:.4f}" rgba="{_fmt(env.floor_rgba)}" contype="0" conaffinity="0"/>
    <geom name="table" type="plane" size="{tx} {ty} 0.05" pos="{TABLE_CENTRE_X} 0 {h:.4f}" material="table_mat"
          friction="{env.table_friction:.4g} {TORSIONAL_ROLLING_FRICTION}" contype="1" conaffinity="0" condim="{CONDIM}"/>
    <geom name="table_slab" type="box" size="{tx} {ty} 0.02" pos="{TABLE_CENTRE_X} 0 {h - 0.021:.4f}" rgba="{_fmt(env.table_rgba)}" contype="0" conaffinity="0" group="1"/>
    {_camera("front", (cx + 0.75, cy + 0.55, cz + 0.55), camera_target)}
    {_camera("close", (cx + 0.4, cy - 0.4, cz + 0.2), (cx, cy, cz - 0.05))}
    {_camera("side", (cx + 0.1, cy - 0.95, cz + 0.45), camera_target)}
{body_xml}
{_particles(particles)}
  </worldbody>
</mujoco>
"""


@dataclass(frozen=True)
class CompiledScene:
    """A C MuJoCo model of one scene plus the indices tasks need."""

    model: mujoco.MjModel
    object_roles: tuple[str, ...]
    object_body_ids: tuple[int, ...]
    object_qpos_adr: tuple[int, ...]
    object_dof_adr: tuple[int, ...]
    particle_qpos_adr: tuple[int, ...]
    particle_dof_adr: tuple[int, ...]
    table_geom_id: int
    table_slab_geom_id: int
    floor_geom_id: int


def compile_scene(robot_file, objects, env, particles=None) -> CompiledScene:
    xml = scene_xml(robot_file, objects, env, particles)
    try:
        model = mujoco.MjModel.from_xml_string(xml)
    except ValueError as exc:  # MuJoCo's compile errors name the element; add the scene.
        ids = {role: o.id for role, o in objects.items()}
        raise catalog_lib.CatalogError(f"scene with objects {ids} and environment {env.id!r} does not compile: {exc}") from exc

    def jnt(name):
        return model.joint(name)

    roles = tuple(objects)
    n_particles = 0 if particles is None else particles.count
    return CompiledScene(
        model=model,
        object_roles=roles,
        object_body_ids=tuple(model.body(r).id for r in roles),
        object_qpos_adr=tuple(int(jnt(f"{r}_joint").qposadr[0]) for r in roles),
        object_dof_adr=tuple(int(jnt(f"{r}_joint").dofadr[0]) for r in roles),
        particle_qpos_adr=tuple(int(jnt(f"particle{i}_joint").qposadr[0]) for i in range(n_particles)),
        particle_dof_adr=tuple(int(jnt(f"particle{i}_joint").dofadr[0]) for i in range(n_particles)),
        table_geom_id=model.geom("table").id,
        table_slab_geom_id=model.geom("table_slab").id,
        floor_geom_id=model.geom("floor").id,
    )


@functools.lru_cache(maxsize=512)
def object_set_params(robot_file: str, object_ids: tuple[tuple[str, str], ...], particles_key: str | None):
    """Per-scene model fields (OBJECT_FIELDS) for a set of (role, object id), from a C compile; cached."""
    cat = catalog_lib.load_catalog()
    objects = {role: cat.object(oid) for role, oid in object_ids}
    particles = cat.particles if particles_key else None
    compiled = compile_scene(robot_file, objects, cat.environments[0], particles)
    return {f: np.array(getattr(compiled.model, f)) for f in OBJECT_FIELDS}


def apply_environment(params: dict[str, np.ndarray], compiled: CompiledScene, env: catalog_lib.EnvSpec) -> dict[str, np.ndarray]:
    """Environment physics (table height and friction) and appearance on top of an object set's params."""
    params = {k: v.copy() for k, v in params.items()}
    for gid, dz in ((compiled.table_geom_id, 0.0), (compiled.table_slab_geom_id, -0.021)):
        params["geom_pos"][gid, 2] = env.table_height + dz
    params["geom_pos"][compiled.floor_geom_id, 2] = env.table_height - 0.75
    params["geom_friction"][compiled.table_geom_id, 0] = env.table_friction
    params["geom_rgba"][compiled.table_slab_geom_id] = env.table_rgba
    params["geom_rgba"][compiled.floor_geom_id] = env.floor_rgba
    return params


def robot_path(name: str) -> Path:
    path = ROBOTS_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"robot model {path} is missing")
    return path
