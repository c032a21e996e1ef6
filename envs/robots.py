"""The two robots, as base classes of their tasks: each holds the robot's model file and the facts the task
code needs of it (arm name prefixes, arm joint names, the CPU's vmap chunk). A task subclasses its robot."""

from __future__ import annotations

from envs.base import TaskEnv


class PandaInspireEnv(TaskEnv):
    """A Franka Panda arm with an Inspire RH56DFX right hand (Grasp, Pour)."""

    robot_file = "panda_inspire.xml"
    cpu_vmap_chunk = 64  # a 256-env vmap of this model hung XLA:CPU once (benchmark, 2026-11-21); 64 never did
    arms = ("",)
    arm_joint_format = "panda_joint{i}"


class BimanualRM75Env(TaskEnv):
    """Two RealMan RM75-6F arms with PsiBot G0-R hands (Lift, Handover)."""

    robot_file = "rm75_g0r_bimanual.xml"
    cpu_vmap_chunk = 16  # vmaps of 32 or more envs of this model hung XLA:CPU (tests/test_robots.py)
    arms = ("left_", "right_")
    arm_joint_format = "{arm}joint{i}"


__all__ = ["BimanualRM75Env", "PandaInspireEnv"]
