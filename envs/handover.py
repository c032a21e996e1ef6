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
Success (bool, per step): only the receiving (left) hand touches the object (MJX contacts between hand and
object geoms) and the object's centre is at least 0.10 m above its resting height. An episode succeeds if the
last step succeeds.
"""

from __future__ import annotations

import jax.numpy as jnp

from envs.base import TaskEnv

LIFT_HEIGHT = 0.10


class Handover(TaskEnv):
    name = "handover"
    robot_file = "rm75_g0r_bimanual.xml"
    cpu_vmap_chunk = 16
    arms = ("left_", "right_")
    arm_joint_format = "{arm}joint{i}"
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
