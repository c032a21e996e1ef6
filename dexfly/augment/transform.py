"""Object-centric pose transform of MimicGen: carry end-effector poses into a new scene.

For a subtask acting on a reference object, a source end-effector pose is kept fixed *relative to that
object*: ``T_new = T_obj_new @ inv(T_obj_src) @ T_eef_src`` (4x4 rigid transforms, world frame). Poses are
7-vectors ``[pos (3), quat wxyz (4)]``. Pure `jax.numpy`, broadcasting over leading axes.
"""

from __future__ import annotations

import jax.numpy as jnp

from dexfly import geometry


def relative_transform(obj_new, obj_src):
    """[..., 7] object poses -> [..., 4, 4] ``T_obj_new @ inv(T_obj_src)`` (maps source-scene poses to the new scene)."""
    return geometry.pose7_to_mat4(obj_new) @ geometry.mat4_inv(geometry.pose7_to_mat4(obj_src))


def apply_transform(t, pose7):
    """[..., 4, 4] transform applied to [..., 7] poses -> [..., 7] (quat with w >= 0)."""
    return geometry.mat4_to_pose7(t @ geometry.pose7_to_mat4(pose7))


def transform_eef_poses(obj_new, obj_src, eef_src):
    """Source ee poses [..., 7] re-expressed for the new object pose: T_obj_new inv(T_obj_src) T_eef_src."""
    t = relative_transform(obj_new, obj_src)
    return apply_transform(t[..., None, :, :] if eef_src.ndim > obj_new.ndim else t, eef_src)


def identity_pose(dtype=jnp.float32):
    return jnp.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=dtype)
