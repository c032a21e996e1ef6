"""The observation and action layouts of every dexfly task: the one description the envs, datasets,
augmentation and policies share (no simulator needed to import it).

Observation (`obs_vector`: concat(obs["obj"], obs["prop"]) on the last axis):
    obs["obj"]  per object role, in the task's role order:  pos 3 (m, world) | quat 4 (w, x, y, z) | vel 6 (lin, ang)
    obs["prop"] per arm, in the task's arm order:           joint qpos 7 | joint qvel 7 | hand qpos 6 |
                                                            ee pos 3 (m, world) | ee quat 4
Action, per arm in the task's arm order (`ACTION_DIM_PER_ARM` = 15 numbers):
    end-effector target position 3 (m, world) | target rotation as rot6d 6 (first two matrix columns) |
    hand joint targets 6 (rad; HAND_ACTUATORS order: pinky, ring, middle, index, thumb_bend, thumb_rot)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dexfly.geometry import quat_to_mat, rot6d_from_mat

HAND_ACTUATORS = ("pinky", "ring", "middle", "index", "thumb_bend", "thumb_rot")

# observation blocks: sizes and offsets inside one object's / one arm's block
OBJ_STRIDE = 13
OBJ_POS, OBJ_QUAT, OBJ_VEL = 0, 3, 7
ARM_STRIDE = 27
ARM_QPOS, ARM_QVEL, ARM_HAND, ARM_EE_POS, ARM_EE_QUAT = 0, 7, 14, 20, 23

# action blocks
ACTION_POS, ACTION_ROT6D, ACTION_HAND = slice(0, 3), slice(3, 9), slice(9, 15)
ACTION_DIM_PER_ARM = 15


def obs_dims(n_objects: int, n_arms: int) -> dict[str, int]:
    """Sizes of obs["obj"] and obs["prop"]."""
    return {"obj": OBJ_STRIDE * n_objects, "prop": ARM_STRIDE * n_arms}


def obs_vector(obs: dict[str, jax.Array]) -> jax.Array:
    """Policy input of a dexfly observation: concat(obs['obj'], obs['prop']) on the last axis."""
    xp = np if all(isinstance(v, np.ndarray) for v in obs.values()) else jnp
    return xp.concatenate([obs["obj"], obs["prop"]], axis=-1)


def history_init(obs: jax.Array, obs_horizon: int) -> jax.Array:
    """Start-of-episode observation history: obs [..., D] repeated -> [..., obs_horizon, D] (oldest first)."""
    return jnp.repeat(obs[..., None, :], obs_horizon, axis=-2)


def history_push(history: jax.Array, obs: jax.Array) -> jax.Array:
    """Drop the oldest entry, append obs: [..., H, D], [..., D] -> [..., H, D]."""
    return jnp.concatenate([history[..., 1:, :], obs[..., None, :]], axis=-2)


def obs_features(obs, quat_at: Sequence[int] = (), rel_pos: Sequence[tuple[int, int]] = ()):
    """Raw observations [..., D] -> network features [..., D + 2 len(quat_at) + 3 len(rel_pos)] (numpy or jax).

    Each unit quaternion (w, x, y, z) starting at an index in `quat_at` is replaced by the rot6d (first two
    rotation-matrix columns) of its rotation: q and -q give the same features, and they vary continuously,
    whereas raw quaternion components jump by 2 where the observation's sign flips. For each pair (a, b) in
    `rel_pos`, the difference of the position 3-vectors obs[a:a+3] - obs[b:b+3] (m) is appended, e.g. the
    end effector relative to an object, which a grasp needs to centimetre precision. Identity if both are empty.
    """
    if not quat_at and not rel_pos:
        return obs
    xp = jnp if isinstance(obs, jax.Array) else np
    parts, prev = [], 0
    for i in sorted(quat_at):
        q = obs[..., i : i + 4]
        q = q / xp.maximum(xp.linalg.norm(q, axis=-1, keepdims=True), 1e-9)
        parts += [obs[..., prev:i], rot6d_from_mat(quat_to_mat(q)).astype(obs.dtype)]
        prev = i + 4
    parts.append(obs[..., prev:])
    parts += [obs[..., a : a + 3] - obs[..., b : b + 3] for a, b in rel_pos]
    return xp.concatenate(parts, axis=-1)


class ObsLayout(NamedTuple):
    """Start index of each object's and each arm's block in `obs_vector` of a task with this many of each."""

    n_objects: int
    n_arms: int

    @property
    def dim(self) -> int:
        return OBJ_STRIDE * self.n_objects + ARM_STRIDE * self.n_arms

    @property
    def object_starts(self) -> tuple[int, ...]:
        return tuple(OBJ_STRIDE * r for r in range(self.n_objects))

    @property
    def arm_starts(self) -> tuple[int, ...]:
        return tuple(OBJ_STRIDE * self.n_objects + ARM_STRIDE * a for a in range(self.n_arms))

    def quaternion_slots(self) -> tuple[int, ...]:
        """Start indices of the unit quaternions (w, x, y, z): each object's pose and each arm's end effector.
        Their sign is arbitrary (the ee quaternion flips between steps), so policies should not read the raw
        components."""
        return tuple(o + OBJ_QUAT for o in self.object_starts) + tuple(a + ARM_EE_QUAT for a in self.arm_starts)

    def relative_position_pairs(self) -> tuple[tuple[int, int], ...]:
        """(ee position start, object position start) for every (arm, object): end effector minus object."""
        return tuple((a + ARM_EE_POS, o + OBJ_POS) for a in self.arm_starts for o in self.object_starts)

    @classmethod
    def from_obs_dims(cls, dims: dict[str, int]) -> ObsLayout:
        """The layout of an env's `obs_dims`; ValueError when the sizes are not whole blocks."""
        n_obj, r_obj = divmod(int(dims["obj"]), OBJ_STRIDE)
        n_arm, r_arm = divmod(int(dims["prop"]), ARM_STRIDE)
        if r_obj or r_arm or n_arm == 0:
            raise ValueError(f"unexpected observation layout {dims}: obj must be {OBJ_STRIDE} per object, prop {ARM_STRIDE} per arm")
        return cls(n_obj, n_arm)


class ArmActions(NamedTuple):
    """An action split per arm: pos [..., n_arms, 3], rot6d [..., n_arms, 6], hand [..., n_arms, 6]."""

    pos: jax.Array
    rot6d: jax.Array
    hand: jax.Array


def split_action(action, n_arms: int) -> ArmActions:
    """Flat actions [..., n_arms * 15] -> ArmActions (numpy or jax, whichever comes in)."""
    if action.shape[-1] != ACTION_DIM_PER_ARM * n_arms:
        raise ValueError(f"actions must have {ACTION_DIM_PER_ARM * n_arms} numbers for {n_arms} arm(s), got shape {tuple(action.shape)}")
    a = action.reshape(*action.shape[:-1], n_arms, ACTION_DIM_PER_ARM)
    return ArmActions(a[..., ACTION_POS], a[..., ACTION_ROT6D], a[..., ACTION_HAND])


def join_action(pos, rot6d, hand):
    """Inverse of `split_action`: [..., n_arms, 3], [..., n_arms, 6], [..., n_arms, 6] -> [..., n_arms * 15]."""
    xp = np if all(isinstance(x, np.ndarray) for x in (pos, rot6d, hand)) else jnp
    a = xp.concatenate([pos, rot6d, hand], axis=-1)
    return a.reshape(*a.shape[:-2], a.shape[-2] * ACTION_DIM_PER_ARM)


__all__ = [
    "ACTION_DIM_PER_ARM", "ARM_STRIDE", "ArmActions", "HAND_ACTUATORS", "OBJ_STRIDE", "ObsLayout", "history_init", "history_push",
    "join_action", "obs_dims", "obs_features",
    "obs_vector", "split_action",
]
