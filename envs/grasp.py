"""Grasp: the Panda + Inspire hand picks an object off the table and holds it up.

Objects: catalog entries with task `grasp` (boxes, cans, bottles, balls, mugs, irregular shapes).
Episode: 6 s at 50 Hz (300 control steps).

Reward (dense, per step, in [0, 3.5]):
  reach   = 1 - tanh(5 * |ee - object|)                      (hand approaches the object)
  enclose = 1 - tanh(10 * mean_fingertips |tip - object|)     (fingers close around it)
  lift    = clip(rise / 0.20, 0, 1)                            (object centre's rise above its resting height)
  success = 1 on success steps
  reward  = 0.25 reach + 0.25 enclose + lift + 2 success   (default_reward_scales)
Success (bool, per step): rise > 0.20 m AND the object is held: within 0.12 m of the hand's grasp
frame and moving slower than 0.5 m/s (lifted, not thrown). An episode succeeds if the last step succeeds.
"""

from __future__ import annotations

import jax.numpy as jnp

from envs.robots import PandaInspireEnv

LIFT_HEIGHT = 0.20
HOLD_DISTANCE = 0.12
HOLD_SPEED = 0.5


class Grasp(PandaInspireEnv):
    name = "grasp"
    roles = ("object",)
    default_episode_seconds = 6.0
    subtasks = ((("grasp", "object"),),)
    default_reward_scales = {"reach": 0.25, "enclose": 0.25, "lift": 1.0, "success": 2.0}

    def task_terms(self, m, d, info):
        adr, vadr = self.obj_qpos_adr[0], self.obj_dof_adr[0]
        pos, vel = d.qpos[adr : adr + 3], d.qvel[vadr : vadr + 3]
        rise = pos[2] - info["init_object_pose"][0, 2]
        ee = d.site_xpos[self.arm_index[0].site_id]
        dist = jnp.linalg.norm(ee - pos)
        tip_dist = jnp.mean(jnp.linalg.norm(d.site_xpos[self.tip_site_ids[0]] - pos, axis=-1))
        reach = 1.0 - jnp.tanh(5.0 * dist)
        enclose = 1.0 - jnp.tanh(10.0 * tip_dist)
        lift = jnp.clip(rise / LIFT_HEIGHT, 0.0, 1.0)
        held = (dist < HOLD_DISTANCE) & (jnp.linalg.norm(vel) < HOLD_SPEED)
        success = (rise > LIFT_HEIGHT) & held
        terms = {"reach": reach, "enclose": enclose, "lift": lift, "success": success.astype(jnp.float32)}
        return terms, success, {"rise": rise, "ee_object_dist": dist, "held": held}
