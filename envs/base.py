"""Shared machinery of the batched MJX tasks: scenes, reset/step, IK control, observations.

Every task is a `TaskEnv` subclass (one module each) that names its robot, object roles and subtasks and
implements `task_terms` (named reward terms, success, metrics); the reward is the sum of the terms times
the task's `reward_scales` (overridable per run through `EnvConfig.reward_scales`), and every scaled term is
logged in `metrics` as `reward/<name>`. `reset` and `step` are pure functions of one
env's `Scene` / `State`; batch them with `jax.vmap` (or use `reset_batch` / `step_batch`, already jitted).

Control: the action holds, per arm, an absolute end-effector target pose (position + rot6d, world frame)
and 6 hand joint targets (rad). Each control step (`ctrl_dt`, default 20 ms = 50 Hz) runs one damped
least-squares IK step on the current MJX data to get arm joint targets, then `n_substeps` physics steps
(`sim_dt` = the model's 4 ms timestep, so 5 substeps) with the arm and hand position servos tracking them.
"""

from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from mujoco import mjx

from dexfly import catalog as catalog_lib
from dexfly import devices
from dexfly import geometry
from dexfly import layout
from dexfly.layout import ACTION_DIM_PER_ARM, HAND_ACTUATORS
from dexfly.ik import ArmIndex, IKConfig, dls_ik
from envs import scene as scene_lib


IMPLS = ("jax", "warp")
"""MJX implementations a `TaskEnv` runs on (`EnvConfig.impl`)."""

def check_impl(impl: str) -> None:
    """ValueError naming an MJX implementation that is not one of `IMPLS`."""
    if impl not in IMPLS:
        raise ValueError(f"unknown MJX impl {impl!r}; use one of {IMPLS}")


class SimulationError(RuntimeError):
    """Raised on the host when a batched rollout produced NaN/inf states."""


@dataclass(frozen=True)
class EnvConfig:
    """Simulation and control settings shared by all tasks (tyro turns this into flags)."""

    impl: str = "jax"
    """MJX implementation: 'jax' (CPU and GPU) or 'warp' (needs mujoco-warp; fast on NVIDIA GPUs)."""
    ctrl_dt: float = 0.02
    """Control period (s); an integer multiple of the model timestep."""
    episode_seconds: float | None = None
    """Episode length (s); None uses the task's default."""
    ik: IKConfig = field(default_factory=IKConfig)
    reward_scales: tuple[tuple[str, float], ...] = ()
    """Overrides of the task's reward-term scales, e.g. (("success", 4.0),); unknown term names are an error."""
    friction_cone: str | None = None
    """'pyramidal' or 'elliptic' overrides the task's friction cone, for comparisons (benchmark_env.py); None keeps
    the task's own (Grasp elliptic; Pour, Lift, Handover pyramidal: docs/conventions.md). Flywheel runs always use
    the task's own."""


@dataclass(frozen=True)
class SceneSpec:
    """One scene as explicit data: which catalog objects (per role), which environment, which poses.

    `poses` maps each role to (x, y, yaw) on the table; `pose_id` names the catalog pose it came from
    (or 'sampled').
    """

    objects: tuple[tuple[str, str], ...]  # ((role, object id), ...)
    env_id: str
    pose_id: str
    poses: tuple[tuple[str, tuple[float, float, float]], ...]

    @property
    def object_ids(self) -> dict[str, str]:
        return dict(self.objects)


@dataclass(frozen=True)
class SceneSet:
    """Sets of objects / environments / poses to draw scenes from (None = the task's defaults only).

    `pose_ids=None` with `sample_poses=True` samples continuous poses from the task's ranges.
    """

    objects: dict[str, tuple[str, ...]] | None = None
    env_ids: tuple[str, ...] | None = None
    pose_ids: tuple[str, ...] | None = None
    sample_poses: bool = False


@struct.dataclass
class Scene:
    """Per-env scene arrays (batch them by stacking; `TaskEnv.make_scenes` does)."""

    params: dict[str, jax.Array]  # model-field overrides, see envs.scene.OBJECT_FIELDS
    object_pose: jax.Array  # [n_objects, 7] initial (pos, quat)
    particle_pos: jax.Array  # [n_particles, 3] initial positions (world)
    table_height: jax.Array  # [] table-top z (m)
    object_half_extents: jax.Array  # [n_objects, 3] bounding-box half-sizes in the object frame (m)


@struct.dataclass
class State:
    data: mjx.Data
    obs: dict[str, jax.Array]
    reward: jax.Array
    success: jax.Array
    done: jax.Array
    metrics: dict[str, jax.Array]
    info: dict[str, Any]


# How many worlds the Warp call being traced steps at once (`TaskEnv.batched` sets it while it traces `fn`):
# MuJoCo Warp keeps one contact buffer for all the worlds of a call, so `reset` sizes its data for that many.
_WARP_WORLDS: contextvars.ContextVar[int] = contextvars.ContextVar("dexfly_warp_worlds", default=1)

ENV_AXIS = "env"
"""Name of the env axis `TaskEnv.batched` maps over: a Warp env finds its world (its own contacts) by it."""


# `TaskEnv.hand_closed_on`: a hand holds an object once its fingers are closed this far (mean of the four fingers'
# normalised joint positions; the seeds' closed grasps reach 0.5-0.6) and have stopped moving. With these values the
# subtask detectors mark the seeds' hand-closing ends within 1-3 steps (tests/test_subtasks.py).
HAND_CLOSED_FRACTION = 0.3
HAND_SETTLED_SPEED = 0.6  # rad/s


class TaskEnv:
    """Base of all tasks. Subclasses set the class attributes and implement `task_terms`."""

    name: ClassVar[str]
    robot_file: ClassVar[str]
    arms: ClassVar[tuple[str, ...]]  # name prefixes, e.g. ("",) or ("left_", "right_")
    arm_joint_format: ClassVar[str]  # e.g. "panda_joint{i}" or "{arm}joint{i}"
    roles: ClassVar[tuple[str, ...]]  # task object roles, e.g. ("object",) or ("source", "target")
    uses_particles: ClassVar[bool] = False
    friction_cone: ClassVar[str | None] = None  # None: the robot model's own; a task may override it (Pour)
    default_episode_seconds: ClassVar[float] = 6.0
    # Per arm: ((subtask name, reference object role or None), ...) for augmentation.
    subtasks: ClassVar[tuple[tuple[tuple[str, str | None], ...], ...]]
    subtask_constraint: ClassVar[str] = "none"  # "none" | "coordination" | "sequential"
    # Reward term name -> scale; `task_terms` returns exactly these terms (the task's docstring defines them).
    default_reward_scales: ClassVar[dict[str, float]]
    # XLA:CPU intermittently hangs (threads parked, 0% CPU) when MJX's solver loops run for many envs in one
    # vmap: >= 32 envs of the bimanual model (tests/test_robots.py), 256 of the Panda one (benchmark). On the
    # CPU backend, `batched` therefore maps over chunks of this many envs; None = plain vmap.
    cpu_vmap_chunk: ClassVar[int | None] = None

    def __init__(self, config: EnvConfig = EnvConfig(), objects: dict[str, str] | None = None):
        check_impl(config.impl)
        if config.impl == "warp":
            try:
                import mujoco_warp  # noqa: F401
            except ImportError as exc:
                raise ValueError("impl='warp' needs MuJoCo Warp: pip install -e '.[warp]'") from exc
        self.config = config
        unknown = sorted({k for k, _ in config.reward_scales} - set(self.default_reward_scales))
        if unknown:
            raise ValueError(f"unknown reward term(s) {unknown} for task {self.name!r}; its terms: {list(self.default_reward_scales)}")
        self.reward_scales = {**self.default_reward_scales, **{k: float(v) for k, v in config.reward_scales}}
        self.catalog = catalog_lib.load_catalog()
        self.robot_path = str(scene_lib.robot_path(self.robot_file))
        objects = dict(objects) if objects else self.default_objects()
        missing = set(self.roles) - set(objects)
        if missing:
            raise ValueError(f"task {self.name!r} needs objects for roles {sorted(missing)}")
        self.object_specs = {r: self._object_for_role(r, objects[r]) for r in self.roles}
        self.topology = self.catalog.scene_topology(self.object_specs)
        particles = self.catalog.particles if self.uses_particles else None
        self.particles = particles
        self.compiled = scene_lib.compile_scene(self.robot_path, self.object_specs, self.catalog.environments[0], particles)
        self.mj_model = self.compiled.model
        cone = config.friction_cone or self.friction_cone
        if cone is not None:
            if cone not in scene_lib.FRICTION_CONES:
                raise ValueError(f"unknown friction_cone {cone!r}; one of {sorted(scene_lib.FRICTION_CONES)} (or None: the task's own)")
            self.mj_model.opt.cone = scene_lib.FRICTION_CONES[cone]
        self.sim_dt = float(self.mj_model.opt.timestep)
        self.n_substeps = int(round(config.ctrl_dt / self.sim_dt))
        if self.n_substeps < 1 or abs(self.n_substeps * self.sim_dt - config.ctrl_dt) > 1e-9:
            raise ValueError(f"ctrl_dt={config.ctrl_dt} is not a multiple of the model timestep {self.sim_dt}")
        seconds = config.episode_seconds or self.default_episode_seconds
        self.episode_steps = int(round(seconds / config.ctrl_dt))
        self.mjx_model = mjx.put_model(self.mj_model, impl=config.impl)
        jax_data = mjx.make_data(self.mj_model, impl="jax")
        self._data_template = jax_data if config.impl == "jax" else None  # Warp's: `warp_data_template`, per batch size
        if config.impl == "warp":
            # MJX-jax allocates every contact and constraint row this model can produce; Warp allocates what it is
            # told (by default 48 contacts for the whole batch: contacts were dropped, "narrowphase overflow").
            # Give Warp the same capacities, contacts per world times the worlds of a call, so nothing overflows.
            self.warp_contacts_per_world = int(jax_data._impl.contact.dist.shape[0])
            self.warp_njmax = int(jax_data._impl.efc_J.shape[0])
            self._warp_templates: dict[int, mjx.Data] = {}
            # The solver runs the model's few iterations by design (MJX-jax does the same without a word); Warp would
            # print a warning for every step that stops there. Capacity overflows (contacts, constraints) still warn.
            import mujoco_warp

            quiet = mujoco_warp.OverflowType.ITERATIONS | mujoco_warp.OverflowType.LS_ITERATIONS
            opt = self.mjx_model.opt
            self.mjx_model = self.mjx_model.replace(opt=opt.replace(_impl=opt._impl.replace(warn_overflow=int(opt._impl.warn_overflow) & ~int(quiet))))
        self._index_model()
        self.reset_batch = jax.jit(self.batched(self.reset))
        self.step_batch = jax.jit(self.batched(self.step))

    def batched(self, fn):
        """`jax.vmap(fn)` over the leading axis of every argument (axis name `ENV_AXIS`); on the CPU backend, for
        tasks that set `cpu_vmap_chunk`, a `lax.map` over chunks of that many envs (same results, avoids an XLA:CPU
        hang). MuJoCo Warp envs are never chunked; under `devices.use_mesh` they are mapped over the mesh's devices.

        Chunk j holds envs j, j + n, j + 2n, ... (n chunks), not a contiguous block: a batch split over several
        devices is split into contiguous blocks, so every chunk then spans all devices and each device steps its
        share of every chunk. With contiguous chunks the map would run one device's envs at a time (a 64-env Lift
        batch over two CPU devices did not finish 20 control steps in 5 minutes; BENCHMARKS.md, session 33)."""
        vfn = jax.vmap(fn, axis_name=ENV_AXIS)
        if self.config.impl == "warp":
            # One Warp call steps the whole batch, or each device's block of it under a mesh (the hang is in
            # MJX-jax's XLA solver loops, so no chunks); `reset` sizes the call's contact buffer for its worlds.
            def warp_batched(*args):
                call, worlds = vfn, jax.tree.leaves(args)[0].shape[0]
                mesh = devices.current_mesh()
                shards = devices.size(mesh)
                if shards > 1:
                    # XLA does not split a Warp call (an FFI call): it would run the whole batch on every device.
                    # Under a mesh (`devices.use_mesh`) each device calls Warp on its own block of envs. Every leaf
                    # is split along its first axis: env arrays [B], Warp's contact buffers [B x contacts per
                    # world] (a buffer per device) and its counters ([1] per device, [devices] outside), so states
                    # made under a mesh are stepped under the same mesh. check_vma=False: Warp's buffers enter a
                    # scan unvarying and leave it varying.
                    devices.check_batch(worlds, mesh, "Warp batch")
                    spec = jax.sharding.PartitionSpec(devices.BATCH_AXIS)
                    call = jax.shard_map(vfn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
                    worlds //= shards
                self.warp_data_template(worlds)  # made here, where no device axis is manual (shard_map's is)
                token = _WARP_WORLDS.set(worlds)
                try:
                    return call(*args)
                finally:
                    _WARP_WORLDS.reset(token)

            return warp_batched
        chunk = self.cpu_vmap_chunk
        if not chunk or jax.default_backend() != "cpu":
            return vfn

        def chunked(*args):
            batch = jax.tree.leaves(args)[0].shape[0]
            if batch <= chunk:
                return vfn(*args)
            # A batch that is not a multiple of the chunk is padded with copies of its first env (a full-width
            # vmap is what hangs), and the padding is dropped from the result.
            padded = -(-batch // chunk) * chunk
            if padded != batch:
                args = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[:1], padded - batch, axis=0)]), args)
            n = padded // chunk
            split = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(chunk, n, *x.shape[1:]), 0, 1), args)  # [n, chunk, ...]
            out = jax.lax.map(lambda a: vfn(*a), split)
            return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape(padded, *x.shape[2:])[:batch], out)

        return chunked

    def warp_data_template(self, worlds: int) -> mjx.Data:
        """Initial MuJoCo Warp data for a call that steps `worlds` envs at once (cached per size): contacts for
        `worlds` x `warp_contacts_per_world` in one shared buffer, `warp_njmax` constraint rows per world."""
        if worlds not in self._warp_templates:
            with jax.ensure_compile_time_eval():  # called while tracing: the cached arrays must be concrete
                self._warp_templates[worlds] = mjx.make_data(
                    self.mj_model, impl="warp", naconmax=worlds * self.warp_contacts_per_world, njmax=self.warp_njmax
                )
        return self._warp_templates[worlds]

    # ------------------------------------------------------------------ static model indices
    def _index_model(self):
        m = self.mj_model
        key = m.keyframe("home") if m.nkey and "home" in [m.key(i).name for i in range(m.nkey)] else None
        self.home_qpos = np.array(key.qpos if key is not None else m.qpos0, dtype=np.float32)
        self.home_ctrl = np.array(key.ctrl if key is not None else np.zeros(m.nu), dtype=np.float32)
        self.arm_index: list[ArmIndex] = []
        self.arm_ctrl_ids, self.hand_ctrl_ids, self.hand_qpos_adr, self.hand_dof_adr = [], [], [], []
        self.tip_site_ids = []
        for arm in self.arms:
            joints = [m.joint(self.arm_joint_format.format(arm=arm, i=i)) for i in range(1, 8)]
            qadr = np.array([int(j.qposadr[0]) for j in joints])
            site = m.site(f"{arm}ee")
            self.arm_index.append(
                ArmIndex(
                    site_id=site.id,
                    body_id=int(m.site_bodyid[site.id]),
                    qpos_adr=qadr,
                    dof_adr=np.array([int(j.dofadr[0]) for j in joints]),
                    lower=np.array([j.range[0] for j in joints], dtype=np.float32),
                    upper=np.array([j.range[1] for j in joints], dtype=np.float32),
                    rest=self.home_qpos[qadr],
                )
            )
            self.arm_ctrl_ids.append(np.array([m.actuator(j.name).id for j in joints]))
            hand_ids = np.array([m.actuator(f"{arm}hand_{h}").id for h in HAND_ACTUATORS])
            self.hand_ctrl_ids.append(hand_ids)
            self.hand_qpos_adr.append(np.array([int(m.jnt_qposadr[m.actuator_trnid[a, 0]]) for a in hand_ids]))
            self.hand_dof_adr.append(np.array([int(m.jnt_dofadr[m.actuator_trnid[a, 0]]) for a in hand_ids]))
            self.tip_site_ids.append(np.array([m.site(f"{arm}tip_{f}").id for f in ("thumb", "index", "middle", "ring", "pinky")]))
        self.hand_ctrl_low = np.stack([m.actuator_ctrlrange[ids, 0] for ids in self.hand_ctrl_ids]).astype(np.float32)
        self.hand_ctrl_high = np.stack([m.actuator_ctrlrange[ids, 1] for ids in self.hand_ctrl_ids]).astype(np.float32)
        self.action_dim = ACTION_DIM_PER_ARM * len(self.arms)
        self.obj_qpos_adr = np.array(self.compiled.object_qpos_adr)
        self.obj_dof_adr = np.array(self.compiled.object_dof_adr)
        self.object_rest_height = {r: float(o.rest_height) for r, o in self.object_specs.items()}

    # ------------------------------------------------------------------ scenes
    def default_objects(self) -> dict[str, str]:
        defaults = self.catalog.default_objects(self.name)
        return {role: defaults[role].id for role in self.roles}

    def role_kind(self, role: str) -> str:
        """Catalog `role` of the objects that may fill this task role (`dexfly.catalog.TASK_ROLES`)."""
        return catalog_lib.TASK_ROLES[self.name][role]

    def _object_for_role(self, role: str, object_id: str) -> catalog_lib.ObjectSpec:
        obj = self.catalog.object(object_id)
        if self.name not in obj.tasks or obj.role != self.role_kind(role):
            raise catalog_lib.CatalogError(
                f"object {object_id!r} (role {obj.role!r}, tasks {list(obj.tasks)}) cannot fill role {role!r} of task {self.name!r}"
            )
        return obj

    def default_scene(self) -> SceneSpec:
        pose_id = self.catalog.poses_for(self.name).default
        return self.scene_spec(self.default_objects(), self.catalog.environments[0].id, pose_id)

    def scene_spec(self, objects: dict[str, str], env_id: str, pose_id: str) -> SceneSpec:
        poses = self.catalog.poses_for(self.name).pose(pose_id)
        self.catalog.environment(env_id)  # validates the id
        for role in self.roles:
            self._object_for_role(role, objects[role])
        return SceneSpec(
            objects=tuple((r, objects[r]) for r in self.roles),
            env_id=env_id,
            pose_id=pose_id,
            poses=tuple((r, tuple(float(v) for v in poses[r])) for r in self.roles),
        )

    def scene_from_episode(self, episode) -> SceneSpec:
        """The scene a dataset episode was recorded in (objects, environment and exact initial poses)."""
        objects = dict(episode_objects(episode))
        if "poses" in episode.extra:
            poses = {r: tuple(float(v) for v in p) for r, p in json.loads(episode.extra["poses"]).items()}
            for role in self.roles:
                self._object_for_role(role, objects[role])
            self.catalog.environment(episode.env_id)
            return SceneSpec(tuple((r, objects[r]) for r in self.roles), episode.env_id, episode.pose_id, tuple((r, poses[r]) for r in self.roles))
        return self.scene_spec(objects, episode.env_id, episode.pose_id)

    def sample_scenes(self, key: jax.Array, n: int, scene_set: SceneSet = SceneSet()) -> list[SceneSpec]:
        """n scenes drawn uniformly (seeded by `key`) from the scene set; deterministic given key."""
        pose_set = self.catalog.poses_for(self.name)
        objects = scene_set.objects or {r: (oid,) for r, oid in self.default_objects().items()}
        for role in self.roles:
            for oid in objects.get(role, ()):
                obj = self._object_for_role(role, oid)
                if obj.topology != self.object_specs[role].topology:
                    raise ValueError(
                        f"object {oid!r} has geom topology {obj.topology}, but this {self.name!r} env was compiled for "
                        f"{self.object_specs[role].topology}; build one env per topology (envs.make(..., objects=...))"
                    )
        env_ids = scene_set.env_ids or (self.catalog.environments[0].id,)
        for e in env_ids:
            self.catalog.environment(e)
        pose_ids = scene_set.pose_ids or ((pose_set.default,) if not scene_set.sample_poses else None)
        k_obj, k_env, k_pose = jax.random.split(key, 3)
        rng_obj = np.asarray(jax.random.randint(k_obj, (n, len(self.roles)), 0, 1 << 30))
        rng_env = np.asarray(jax.random.randint(k_env, (n,), 0, len(env_ids)))
        specs = []
        if pose_ids is None:
            samples = np.asarray(jax.random.uniform(k_pose, (n, len(self.roles), 3)))
        else:
            rng_pose = np.asarray(jax.random.randint(k_pose, (n,), 0, len(pose_ids)))
        for i in range(n):
            objs = {r: objects[r][rng_obj[i, j] % len(objects[r])] for j, r in enumerate(self.roles)}
            if pose_ids is None:
                poses = {}
                for j, r in enumerate(self.roles):
                    lo, hi = pose_set.ranges[r]
                    poses[r] = tuple(float(v) for v in np.asarray(lo) + samples[i, j] * (np.asarray(hi) - np.asarray(lo)))
                specs.append(SceneSpec(tuple((r, objs[r]) for r in self.roles), env_ids[rng_env[i]], "sampled", tuple((r, poses[r]) for r in self.roles)))
            else:
                specs.append(self.scene_spec(objs, env_ids[rng_env[i]], pose_ids[rng_pose[i]]))
        return specs

    def make_scenes(self, specs: list[SceneSpec]) -> Scene:
        """Stack scene specs into a batched `Scene` (leading axis = env)."""
        if not specs:
            raise ValueError("no scenes given")
        per_env = [self.scene_arrays(s) for s in specs]
        return jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *per_env)

    def scene_arrays(self, spec: SceneSpec) -> Scene:
        objects = {r: self._object_for_role(r, oid) for r, oid in spec.objects}
        if self.catalog.scene_topology(objects) != self.topology:
            raise ValueError(f"scene objects {spec.object_ids} do not match this env's topology {self.topology}")
        env = self.catalog.environment(spec.env_id)
        params = scene_lib.object_set_params(self.robot_path, spec.objects, "p" if self.uses_particles else None)
        params = scene_lib.apply_environment(params, self.compiled, env)
        poses = dict(spec.poses)
        object_pose = []
        for r in self.roles:
            x, y, yaw = poses[r]
            z = env.table_height + objects[r].rest_height
            object_pose.append(np.concatenate([[x, y, z], np.asarray(geometry.quat_from_yaw(yaw))]))
        object_pose = np.asarray(object_pose, dtype=np.float32)
        particle_pos = self.particle_positions(objects, object_pose)
        return Scene(
            params={k: np.asarray(v, dtype=np.float32) for k, v in params.items()},
            object_pose=object_pose,
            particle_pos=particle_pos,
            table_height=np.float32(env.table_height),
            object_half_extents=np.asarray([objects[r].half_extents for r in self.roles], dtype=np.float32),
        )

    def particle_positions(self, objects, object_pose) -> np.ndarray:
        return np.zeros((0, 3), dtype=np.float32)

    # ------------------------------------------------------------------ dynamics
    def model_for(self, scene: Scene) -> mjx.Model:
        """The MJX model of one env's scene (per-scene fields replaced; C-model layouts reshaped to the
        impl's, e.g. warp stores `geom_aabb` as [ngeom, 2, 3])."""
        m = self.mjx_model
        return m.replace(**{k: v.reshape(jnp.shape(getattr(m, k))) for k, v in scene.params.items()})

    def reset(self, scene: Scene, key: jax.Array) -> State:
        """Initial state of one env in `scene` (pure; vmap for batches). `key` seeds nothing physical yet
        but is kept in `info` for stochastic tasks and policies."""
        m = self.model_for(scene)
        qpos = jnp.asarray(self.home_qpos)
        for k, adr in enumerate(self.obj_qpos_adr):
            qpos = qpos.at[adr : adr + 7].set(scene.object_pose[k])
        for k, adr in enumerate(self.compiled.particle_qpos_adr):
            qpos = qpos.at[adr : adr + 7].set(jnp.concatenate([scene.particle_pos[k], jnp.array([1.0, 0, 0, 0])]))
        template = self.warp_data_template(_WARP_WORLDS.get()) if self.config.impl == "warp" else self._data_template
        d = template.replace(qpos=qpos, qvel=jnp.zeros_like(template.qvel), ctrl=jnp.asarray(self.home_ctrl))
        d = mjx.forward(m, d)
        info = {
            "step": jnp.zeros((), jnp.int32),
            "scene": scene,
            "key": key,
            "ever_success": jnp.zeros((), bool),
            "init_object_pose": scene.object_pose,
            "subtask_done": jnp.zeros(self.subtask_shape, bool),
            **self.initial_task_info(),
        }
        reward, success, metrics = self.score(m, d, info)
        metrics = {**metrics, "nan": jnp.zeros((), bool)}
        return State(d, self.observe(d), reward, success, jnp.zeros((), bool), metrics, info)

    def apply_action(self, m: mjx.Model, d: mjx.Data, action: jax.Array) -> mjx.Data:
        """IK for each arm, hand targets clipped to their ranges; returns data with the new ctrl."""
        if action.shape != (self.action_dim,):
            raise ValueError(f"{self.name}: action must have shape ({self.action_dim},) per env, got {action.shape}")
        ctrl = d.ctrl
        parts = layout.split_action(action, len(self.arms))
        for i, arm in enumerate(self.arm_index):
            q = dls_ik(m, d, arm, parts.pos[i], geometry.mat_from_rot6d(parts.rot6d[i]), self.config.ik, d.ctrl[self.arm_ctrl_ids[i]])
            ctrl = ctrl.at[self.arm_ctrl_ids[i]].set(q)
            ctrl = ctrl.at[self.hand_ctrl_ids[i]].set(jnp.clip(parts.hand[i], self.hand_ctrl_low[i], self.hand_ctrl_high[i]))
        return d.replace(ctrl=ctrl)

    def step(self, state: State, action: jax.Array) -> State:
        """One control step of one env (pure; vmap for batches)."""
        m = self.model_for(state.info["scene"])
        d = self.apply_action(m, state.data, action)
        d = jax.lax.fori_loop(0, self.n_substeps, lambda _, dd: mjx.step(m, dd), d)
        nan = ~(jnp.all(jnp.isfinite(d.qpos)) & jnp.all(jnp.isfinite(d.qvel)))
        info = self.update_task_info({**state.info, "step": state.info["step"] + 1}, m, d)
        info["subtask_done"] = self.advance_subtasks(state.info["subtask_done"], m, d, info)
        reward, success, metrics = self.score(m, d, info)
        info["ever_success"] = state.info["ever_success"] | success
        metrics = {**metrics, "nan": nan | state.metrics["nan"]}
        done = (info["step"] >= self.episode_steps) | nan
        return State(d, self.observe(d), reward, success, done, metrics, info)

    def rollout(self, state: State, actions: jax.Array) -> tuple[State, State]:
        """Scan `step` over actions [T, action_dim] for one env; returns (final state, per-step states)."""
        def body(s, a):
            s = self.step(s, a)
            return s, s
        return jax.lax.scan(body, state, actions)

    # ------------------------------------------------------------------ observations
    def object_pose(self, d: mjx.Data) -> jax.Array:
        """[n_objects, 7] current object poses (pos, quat)."""
        return jnp.stack([d.qpos[a : a + 7] for a in self.obj_qpos_adr])

    def ee_pose(self, d: mjx.Data) -> jax.Array:
        """[n_arms, 7] end-effector site poses (pos, quat)."""
        return jnp.stack(
            [jnp.concatenate([d.site_xpos[a.site_id], geometry.mat_to_quat(d.site_xmat[a.site_id].reshape(3, 3))]) for a in self.arm_index]
        )

    def observe(self, d: mjx.Data) -> dict[str, jax.Array]:
        obj = jnp.concatenate([jnp.concatenate([d.qpos[a : a + 7], d.qvel[v : v + 6]]) for a, v in zip(self.obj_qpos_adr, self.obj_dof_adr)])
        ee = self.ee_pose(d)
        prop = []
        for i, arm in enumerate(self.arm_index):
            prop += [d.qpos[arm.qpos_adr], d.qvel[arm.dof_adr], d.qpos[self.hand_qpos_adr[i]], ee[i]]
        return {"obj": obj, "prop": jnp.concatenate(prop)}

    @property
    def obs_dims(self) -> dict[str, int]:
        return layout.obs_dims(len(self.roles), len(self.arms))

    @property
    def obs_layout(self) -> layout.ObsLayout:
        """Where each object's and arm's block sits in `obs_vector` of this env's observation."""
        return layout.ObsLayout(len(self.roles), len(self.arms))

    def score(self, m: mjx.Model, d: mjx.Data, info: dict) -> tuple[jax.Array, jax.Array, dict]:
        """(reward [], success [] bool, metrics) after a step: the task's terms times their scales, summed in
        the terms' order; metrics gain `reward/<name>` (scaled) for every term."""
        terms, success, metrics = self.task_terms(m, d, info)
        if set(terms) != set(self.reward_scales):
            raise ValueError(f"{self.name}: task_terms returned terms {sorted(terms)}, the scales name {sorted(self.reward_scales)}")
        scaled = {k: self.reward_scales[k] * v for k, v in terms.items()}
        reward = sum(scaled.values())
        return reward, success, {**metrics, **{f"reward/{k}": v for k, v in scaled.items()}}

    def task_terms(self, m: mjx.Model, d: mjx.Data, info: dict) -> tuple[dict[str, jax.Array], jax.Array, dict]:
        """(unscaled reward terms {name: []}, success [] bool, metrics dict) of one env after a step."""
        raise NotImplementedError

    # ------------------------------------------------------------------ subtask ends (rollouts as augmentation sources)
    @property
    def subtask_shape(self) -> tuple[int, int]:
        """(n_arms, n_subtasks): the shape of the subtask signals (arms with fewer subtasks are padded)."""
        return len(self.arms), max(len(s) for s in self.subtasks)

    def subtask_conditions(self, m: mjx.Model, d: mjx.Data, info: dict, done: jax.Array) -> jax.Array:
        """[n_arms, n_subtasks] bool: the end condition of each subtask holds in this state. `done` [n_arms,
        n_subtasks] says which subtasks have ended before (for conditions on the other arm's progress). The last
        subtask of each arm ends with the episode (as in the seeds), so its entry is never read. Default: no
        condition (tasks with one subtask per arm: Grasp, Lift)."""
        return jnp.zeros(self.subtask_shape, bool)

    def hand_closed_on(self, d: mjx.Data, arm: int, hand_geoms: np.ndarray, object_geoms: np.ndarray) -> jax.Array:
        """[] bool: arm's hand holds the object: it touches it, its four fingers are closed past
        HAND_CLOSED_FRACTION of their range on average, and they have stopped closing (every finger joint
        slower than HAND_SETTLED_SPEED)."""
        adr, low, high = self.hand_qpos_adr[arm][:4], self.hand_ctrl_low[arm][:4], self.hand_ctrl_high[arm][:4]
        closure = jnp.mean((d.qpos[adr] - low) / (high - low))
        settled = jnp.all(jnp.abs(d.qvel[self.hand_dof_adr[arm][:4]]) < HAND_SETTLED_SPEED)
        return self.touching(d, hand_geoms, object_geoms) & (closure >= HAND_CLOSED_FRACTION) & settled

    def advance_subtasks(self, done: jax.Array, m: mjx.Model, d: mjx.Data, info: dict) -> jax.Array:
        """Sticky, ordered subtask ends after a step: subtask k of an arm ends at the first step whose condition
        holds once subtask k-1 of that arm has ended. Recorded per step, these are the datasets' `subtask_end`
        signals of a rollout (`dexfly.rollout.rollout_subtask_end` sets each arm's last subtask at the last step)."""
        cond = self.subtask_conditions(m, d, info, done)
        ready = jnp.concatenate([jnp.ones_like(done[:, :1]), done[:, :-1]], axis=1)
        last = np.zeros(self.subtask_shape, bool)
        for arm, subs in enumerate(self.subtasks):
            last[arm, len(subs) - 1 :] = True
        return done | (cond & ready & ~last)

    def initial_task_info(self) -> dict:
        """Extra per-env task state carried in `info` (e.g. hold timers); arrays, set at reset."""
        return {}

    def update_task_info(self, info: dict, m: mjx.Model, d: mjx.Data) -> dict:
        """Advance the extra task state after the physics substeps, before `task_terms`."""
        return info

    # ------------------------------------------------------------------ contacts
    def geom_ids(self, prefix: str) -> np.ndarray:
        """Ids of the collision geoms whose names start with `prefix` (e.g. 'right_hand', 'object_g')."""
        m = self.mj_model
        ids = [g for g in range(m.ngeom) if (m.geom(g).name or "").startswith(prefix) and (m.geom_contype[g] or m.geom_conaffinity[g])]
        if not ids:
            raise ValueError(f"no collision geoms named {prefix}*")
        return np.asarray(ids)

    def touching(self, d: mjx.Data, geoms_a: np.ndarray, geoms_b: np.ndarray, margin: float = 1e-3) -> jax.Array:
        """[] bool: some active contact (distance < margin) between a geom of set a and one of set b."""
        geom, dist, mine = self._contacts(d)
        g1, g2 = geom[:, 0], geom[:, 1]
        a1, b1 = jnp.isin(g1, geoms_a), jnp.isin(g1, geoms_b)
        a2, b2 = jnp.isin(g2, geoms_a), jnp.isin(g2, geoms_b)
        pair = (a1 & b2) | (a2 & b1)
        return jnp.any(pair & (dist < margin) & mine)

    def _contacts(self, d: mjx.Data) -> tuple[jax.Array, jax.Array, jax.Array]:
        """This env's contact slots: geom pair [n, 2], distance [n] (m), and whether the slot is this env's [n].

        MJX-jax holds every contact the model can make, per env (`Data.contact` is deprecated, `_impl` is not).
        MuJoCo Warp fills one buffer for all the worlds of a call: slots past `nacon` are left over from earlier
        steps, and the others belong to the world `worldid` names, this env's index in `batched`'s map."""
        impl = d._impl
        if self.config.impl != "warp":
            return impl.contact.geom, impl.contact.dist, jnp.ones(impl.contact.dist.shape, bool)
        try:
            world = jax.lax.axis_index(ENV_AXIS)
        except NameError:  # one env stepped without `batched`: the call's only world
            world = 0
        filled = jnp.arange(impl.contact__dist.shape[0]) < impl.nacon[0]
        return impl.contact__geom, impl.contact__dist, filled & (impl.contact__worldid == world)

    # ------------------------------------------------------------------ helpers for tasks and scripts
    def home_action(self) -> np.ndarray:
        """The action that holds the home posture: current ee poses and home hand targets."""
        d = mujoco.MjData(self.mj_model)
        d.qpos[:] = self.home_qpos
        mujoco.mj_forward(self.mj_model, d)
        parts = []
        for i, arm in enumerate(self.arm_index):
            mat = d.site_xmat[arm.site_id].reshape(3, 3)
            parts += [d.site_xpos[arm.site_id], mat[:, 0], mat[:, 1], self.home_ctrl[self.hand_ctrl_ids[i]]]
        return np.concatenate(parts).astype(np.float32)

    def env_args(self) -> dict:
        """robomimic-style `env_args` recorded in datasets, enough to rebuild this env."""
        cfg = self.config
        return {
            "env_name": self.name,
            "type": "dexfly-mjx",
            "env_kwargs": {"impl": cfg.impl, "ctrl_dt": cfg.ctrl_dt, "episode_steps": self.episode_steps, "objects": self.default_objects()},
        }

    def check_finite(self, state: State, specs: list[SceneSpec] | None = None, where: str = "") -> None:
        """Raise SimulationError naming the envs (and their scenes, when `specs` are given) whose simulation
        produced NaN/inf. `state.metrics['nan']` is sticky, so checking the final state covers the episode."""
        nan = np.asarray(state.metrics["nan"]).reshape(-1)
        bad = np.flatnonzero(nan)
        if bad.size:
            scenes = ""
            if specs is not None:
                scenes = "; scenes: " + ", ".join(
                    f"#{i} {dict(specs[i].objects)} env={specs[i].env_id} pose={specs[i].pose_id}" for i in bad[:5] if i < len(specs))
            raise SimulationError(f"{self.name}: simulation produced NaN/inf{' during ' + where if where else ''} in env(s) "
                                  f"{bad.tolist()[:20]} (of {nan.size}){scenes}")


def episode_objects(episode) -> tuple[tuple[str, str], ...]:
    """((role, object id), ...) of a dataset episode, from the roles recorded in its `extra` attrs."""
    if "roles" not in episode.extra:
        raise ValueError("episode does not record its object roles (extra attr 'roles')")
    roles = json.loads(episode.extra["roles"])
    if len(roles) != len(episode.object_ids):
        raise ValueError(f"episode records {len(episode.object_ids)} objects for roles {roles}")
    return tuple(zip(roles, episode.object_ids))

