"""Handover: the right hand picks an object up and passes it to the left hand (dual RM75-6F + G0-R).

Objects: catalog entries with task `handover` (boxes, cans, bottles, balls, mugs, irregular; one-hand size).
Episode: 10 s at 50 Hz (500 control steps): grasp, lift, carry, let the object settle, exchange, release.

Reward (dense, per step, in [0, 4.5]):
  reach_r = 1 - tanh(5 * |right ee - object|)                 (giver reaches the object)
  lift    = clip(rise / 0.10, 0, 1)
  reach_l = (1 - tanh(5 * |left ee - object|)) * lift         (receiver comes to the lifted object)
  left    = left hand touches the object; right = right hand touches it
  left_hold = left * lift; exchange = (left and not right) * lift; success = 1 on success steps
  reward  = 0.3 reach_right + lift + 0.5 reach_left + 0.5 left_hold + exchange + success   (default_reward_scales)
Subtask ends (`subtask_conditions`; arm 0 is the left, arm 1 the right):
  right `grasp`   the right hand touches the object and has lifted it GRASP_END_RISE;
  right `present` the object, lifted at least PRESENT_MIN_RISE, has moved slower than STILL_SPEED for
                  PRESENT_STILL_SECONDS in the right hand (the giver holds still and lets it settle);
  left `wait`     ends when the right's `present` has ended;
  left `receive`  the left hand holds the object (`TaskEnv.hand_closed_on`);
  the last subtask of each arm (`hold`, `release`) ends with the episode.
Success (bool, per step): only the receiving (left) hand touches the object (MJX contacts between hand and
object geoms) and the object's centre is at least 0.10 m above its resting height. An episode succeeds if the
last step succeeds.
"""

from __future__ import annotations

import jax.numpy as jnp

from envs.robots import BimanualRM75Env

LIFT_HEIGHT = 0.10
GRASP_END_RISE = 0.09  # m (the seed lifts its grasp 0.12 m; the object, hanging in the pinch, rises 0.098 m)
PRESENT_MIN_RISE = 0.15  # m (the seed presents the object 0.20 m above its resting height)
PRESENT_STILL_SECONDS = 1.1  # s (the seed holds still 1.2 s once it has carried the object over)
STILL_SPEED = 0.03  # m/s, the object's centre (it still swings in the pinch, ~0.5 rad/s, as it settles)


class Handover(BimanualRM75Env):
    name = "handover"
    roles = ("object",)
    default_episode_seconds = 10.0
    # Right (giver): grasp the object, present it at a fixed place in the workspace (no reference object),
    # release it once the left hand holds it. Left (receiver): wait, take the object (reference: the object,
    # wherever the giver holds it), hold. Sequential constraints (DexMimicGen): the left's `receive` starts after
    # the right's `present` ends; the right's `release` starts after the left's `receive` ends.
    subtasks = ((("wait", None), ("receive", "object"), ("hold", None)), (("grasp", "object"), ("present", None), ("release", None)))
    subtask_constraint = "sequential"
    default_reward_scales = {"reach_right": 0.3, "lift": 1.0, "reach_left": 0.5, "left_hold": 0.5, "exchange": 1.0, "success": 1.0}
    sequential_order = (((0, 1), (1, 1)), ((1, 2), (0, 1)))  # ((arm, subtask) starts after (arm, subtask) ends)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.left_hand_geoms = self.geom_ids("left_hand")
        self.right_hand_geoms = self.geom_ids("right_hand")
        self.object_geoms = self.geom_ids("object_g")

    def initial_task_info(self):
        return {"still_steps": jnp.zeros((), jnp.int32)}

    def update_task_info(self, info, m, d):
        vadr = self.obj_dof_adr[0]
        still = jnp.linalg.norm(d.qvel[vadr : vadr + 3]) < STILL_SPEED
        return {**info, "still_steps": jnp.where(still, info["still_steps"] + 1, 0)}

    def subtask_conditions(self, m, d, info, done):
        rise = d.qpos[self.obj_qpos_adr[0] + 2] - info["init_object_pose"][0, 2]
        right = self.touching(d, self.right_hand_geoms, self.object_geoms)
        still_needed = int(round(PRESENT_STILL_SECONDS / self.config.ctrl_dt))
        cond = jnp.zeros(self.subtask_shape, bool)
        cond = cond.at[1, 0].set(right & (rise >= GRASP_END_RISE))
        cond = cond.at[1, 1].set(right & (rise >= PRESENT_MIN_RISE) & (info["still_steps"] >= still_needed))
        cond = cond.at[0, 0].set(done[1, 1])
        return cond.at[0, 1].set(self.hand_closed_on(d, 0, self.left_hand_geoms, self.object_geoms))

    def task_terms(self, m, d, info):
        adr = self.obj_qpos_adr[0]
        pos = d.qpos[adr : adr + 3]
        rise = pos[2] - info["init_object_pose"][0, 2]
        left_ee, right_ee = (d.site_xpos[a.site_id] for a in self.arm_index)
        left = self.touching(d, self.left_hand_geoms, self.object_geoms)
        right = self.touching(d, self.right_hand_geoms, self.object_geoms)
        reach_r = 1.0 - jnp.tanh(5.0 * jnp.linalg.norm(right_ee - pos))
        lift = jnp.clip(rise / LIFT_HEIGHT, 0.0, 1.0)
        reach_l = (1.0 - jnp.tanh(5.0 * jnp.linalg.norm(left_ee - pos))) * lift
        success = left & ~right & (rise >= LIFT_HEIGHT)
        terms = {"reach_right": reach_r, "lift": lift, "reach_left": reach_l, "left_hold": left * lift,
                 "exchange": (left & ~right) * lift, "success": success.astype(jnp.float32)}
        return terms, success, {"rise": rise, "left_touch": left, "right_touch": right}
