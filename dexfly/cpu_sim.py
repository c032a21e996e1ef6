"""The same task step executed sequentially in C MuJoCo (one env at a time, float64, numpy IK).

This is the reference the batched MJX envs are compared against: `benchmark_env.py` times it side by
side with MJX, and augmentation's throughput benchmark runs the generator one attempt at a time here, the
way MimicGen does. Control is identical to `envs.base.TaskEnv.step`: one damped-least-squares IK step per
control step, then `n_substeps` calls to `mj_step`. Rewards and success reuse the task's own `score`.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

from dexfly import geometry, layout
from dexfly.ik import joint_targets
from envs.base import SceneSpec, TaskEnv


MAX_CONTACTS = 128  # contacts passed to task functions (padded), so the jitted terms compile once


@struct.dataclass
class _Contacts:
    geom: jax.Array  # [MAX_CONTACTS, 2] geom ids (-1: padding), as MJX's `Data._impl.contact.geom`
    dist: jax.Array


@struct.dataclass
class _DataView:
    """The fields of `mjx.Data` that task functions read, filled from the C data."""

    qpos: jax.Array
    qvel: jax.Array
    site_xpos: jax.Array
    contact: _Contacts

    @property
    def _impl(self):  # `TaskEnv.touching` reads MJX's `d._impl.contact`
        return self


class CpuEnv:
    """Sequential C-MuJoCo twin of a `TaskEnv` (same model, scenes and control)."""

    def __init__(self, env: TaskEnv):
        self.env = env
        # The env's own compiled model (with any option a task or EnvConfig overrides, e.g. the friction cone),
        # copied because `reset` writes each scene's fields into it.
        self.model = copy.deepcopy(env.mj_model)
        self.data = mujoco.MjData(self.model)
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self.scene = None
        # The task's reward/success functions are jnp code: jit them once instead of dispatching op by op.
        self._terms = jax.jit(lambda view, info: env.score(None, view, info))
        self._update = jax.jit(lambda info, view: env.update_task_info(info, None, view))
        self._subtasks = jax.jit(lambda done, view, info: env.advance_subtasks(done, None, view, info))

    def reset(self, spec: SceneSpec) -> None:
        scene = self.env.scene_arrays(spec)
        for field, value in scene.params.items():
            getattr(self.model, field)[:] = value
        m, d, env = self.model, self.data, self.env
        mujoco.mj_resetData(m, d)
        d.qpos[:] = env.home_qpos
        for k, adr in enumerate(env.obj_qpos_adr):
            d.qpos[adr : adr + 7] = scene.object_pose[k]
        for k, adr in enumerate(env.compiled.particle_qpos_adr):
            d.qpos[adr : adr + 7] = np.concatenate([scene.particle_pos[k], [1, 0, 0, 0]])
        d.ctrl[:] = env.home_ctrl
        mujoco.mj_forward(m, d)
        self.scene = scene
        self.info = {"step": 0, "scene": scene, "init_object_pose": jnp.asarray(scene.object_pose), "ever_success": False,
                     "subtask_done": jnp.zeros(env.subtask_shape, bool), **env.initial_task_info()}

    def _ik(self, arm, target_pos, target_mat, q_command):
        m, d, cfg = self.model, self.data, self.env.config.ik
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, arm.site_id)
        jac = np.concatenate([self._jacp[:, arm.dof_adr], cfg.rot_weight * self._jacr[:, arm.dof_adr]])
        ee_mat = d.site_xmat[arm.site_id].reshape(3, 3)
        q = d.qpos[arm.qpos_adr].copy()
        return joint_targets(jac, d.site_xpos[arm.site_id].copy(), ee_mat, q, q_command, arm, target_pos, target_mat, cfg)

    def step(self, action: np.ndarray):
        env, m, d = self.env, self.model, self.data
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (env.action_dim,):
            raise ValueError(f"{env.name}: action must have shape ({env.action_dim},), got {action.shape}")
        parts = layout.split_action(action, len(env.arms))
        for i, arm in enumerate(env.arm_index):
            d.ctrl[env.arm_ctrl_ids[i]] = self._ik(arm, parts.pos[i], geometry.mat_from_rot6d(parts.rot6d[i]), d.ctrl[env.arm_ctrl_ids[i]].copy())
            d.ctrl[env.hand_ctrl_ids[i]] = np.clip(parts.hand[i], env.hand_ctrl_low[i], env.hand_ctrl_high[i])
        for _ in range(env.n_substeps):
            mujoco.mj_step(m, d)
        self.info["step"] += 1
        view = self._view()
        self.info = self._update(self.info, view)
        self.info["subtask_done"] = self._subtasks(self.info["subtask_done"], view, self.info)
        return self.terms()

    def _view(self) -> _DataView:
        d = self.data
        n = min(d.ncon, MAX_CONTACTS)
        geom = np.full((MAX_CONTACTS, 2), -1, np.int32)
        dist = np.full(MAX_CONTACTS, np.inf, np.float32)
        geom[:n, 0], geom[:n, 1], dist[:n] = d.contact.geom1[:n], d.contact.geom2[:n], d.contact.dist[:n]
        as32 = lambda x: np.asarray(x, np.float32)  # noqa: E731  (the MJX envs run in float32)
        return _DataView(as32(d.qpos), as32(d.qvel), as32(d.site_xpos), _Contacts(geom, dist))

    def terms(self):
        """(reward, success, metrics) of the current state, from the task's own `score` (its `task_terms` times the reward scales)."""
        reward, success, metrics = self._terms(self._view(), self.info)
        return float(reward), bool(success), {k: np.asarray(v) for k, v in metrics.items()}

    def object_pose(self) -> np.ndarray:
        return np.stack([self.data.qpos[a : a + 7] for a in self.env.obj_qpos_adr])
