"""Lift: two RealMan RM75-6F arms with PsiBot G0-R hands lift an object too large for one hand.

Objects: catalog entries with task `lift` (large boxes, trays, baskets, pots; 25-40 cm).
Episode: 6 s at 50 Hz (300 control steps). Both hands press on the object's sides and lift it together.

Reward (dense, per step, in [0, 4]):
  reach  = mean over hands of 1 - tanh(5 * |ee - nearest object side centre|)
  lift   = clip(rise / 0.15, 0, 1)
  level  = 1 - clip(tilt / 20 deg, 0, 1), counted only while lifted (rise > 0.02)
  hold   = clip(hold_time / 0.5 s, 0, 1)
  success = 1 on success steps
  reward = 0.5 reach + lift + 0.5 level + hold + success   (default_reward_scales)
Success (bool, per step): the object has been at least 0.15 m above its resting height with a tilt under
20 degrees for at least 0.5 s without interruption (a hold timer in `info`). An episode succeeds if the last
step succeeds.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from dexfly import geometry
from envs.robots import BimanualRM75Env

LIFT_HEIGHT = 0.15
MAX_TILT = np.deg2rad(20.0)
HOLD_SECONDS = 0.5


class Lift(BimanualRM75Env):
    name = "lift"
    roles = ("object",)
    default_episode_seconds = 6.0
    subtasks = ((("lift", "object"),), (("lift", "object"),))
    subtask_constraint = "coordination"
    default_reward_scales = {"reach": 0.5, "lift": 1.0, "level": 0.5, "hold": 1.0, "success": 1.0}

    def _lifted_level(self, d, info):
        adr = self.obj_qpos_adr[0]
        rise = d.qpos[adr + 2] - info["init_object_pose"][0, 2]
        up = geometry.quat_to_mat(d.qpos[adr + 3 : adr + 7])[:, 2]
        tilt = jnp.arccos(jnp.clip(up[2], -1.0, 1.0))
        return rise, tilt

    def initial_task_info(self):
        return {"hold_steps": jnp.zeros((), jnp.int32)}

    def update_task_info(self, info, m, d):
        rise, tilt = self._lifted_level(d, info)
        ok = (rise >= LIFT_HEIGHT) & (tilt < MAX_TILT)
        return {**info, "hold_steps": jnp.where(ok, info["hold_steps"] + 1, 0)}

    def task_terms(self, m, d, info):
        adr = self.obj_qpos_adr[0]
        pos = d.qpos[adr : adr + 3]
        rise, tilt = self._lifted_level(d, info)
        half_y = info["scene"].object_half_extents[0, 1]
        sides = jnp.stack([pos + jnp.array([0.0, 1.0, 0.0]) * half_y, pos - jnp.array([0.0, 1.0, 0.0]) * half_y])
        ee = jnp.stack([d.site_xpos[a.site_id] for a in self.arm_index])
        reach = jnp.mean(1.0 - jnp.tanh(5.0 * jnp.linalg.norm(ee - sides, axis=-1)))
        lift = jnp.clip(rise / LIFT_HEIGHT, 0.0, 1.0)
        level = (1.0 - jnp.clip(tilt / MAX_TILT, 0.0, 1.0)) * (rise > 0.02)
        hold_needed = int(round(HOLD_SECONDS / self.config.ctrl_dt))
        hold = jnp.clip(info["hold_steps"] / hold_needed, 0.0, 1.0)
        success = info["hold_steps"] >= hold_needed
        terms = {"reach": reach, "lift": lift, "level": level, "hold": hold, "success": success.astype(jnp.float32)}
        return terms, success, {"rise": rise, "tilt": tilt, "hold_steps": info["hold_steps"]}
