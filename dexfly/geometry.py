"""Rotation and rigid-pose math in plain `jax.numpy`, broadcasting over leading batch axes.

Conventions: quaternions are ``(w, x, y, z)`` (MuJoCo order); rotation matrices act on column vectors;
``rot6d`` is the first two columns of a rotation matrix, ``(R[:, 0], R[:, 1])`` concatenated (Zhou et al. 2019),
a continuous representation suited to regression. A pose is ``(pos [..., 3], quat [..., 4])`` or a 7-vector
``[pos, quat]``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _xp(*arrays):
    """numpy for numpy inputs (fast on the host, e.g. the C-MuJoCo twin), jax.numpy otherwise."""
    return np if all(isinstance(a, (np.ndarray, np.generic, float, int)) for a in arrays) else jnp


def quat_normalize(q):
    """[..., 4] -> unit quaternions with non-negative w (a canonical sign)."""
    xp = _xp(q)
    q = q / xp.linalg.norm(q, axis=-1, keepdims=True).clip(1e-12)
    return xp.where(q[..., :1] < 0, -q, q)


def quat_mul(a, b):
    """Hamilton product a*b of [..., 4] quaternions."""
    xp = _xp(a, b)
    aw, ax, ay, az = xp.moveaxis(a, -1, 0)
    bw, bx, by, bz = xp.moveaxis(b, -1, 0)
    return xp.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conj(q):
    xp = _xp(q)
    return q * xp.array([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def quat_to_mat(q):
    """[..., 4] -> [..., 3, 3]."""
    xp = _xp(q)
    q = q / xp.linalg.norm(q, axis=-1, keepdims=True).clip(1e-12)
    w, x, y, z = xp.moveaxis(q, -1, 0)
    return xp.stack(
        [
            xp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            xp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            xp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def mat_to_quat(m):
    """[..., 3, 3] -> [..., 4] (w >= 0). Branch-free (Shepperd's method via the largest diagonal term)."""
    xp = _xp(m)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = xp.stack(
        [
            xp.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            xp.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            xp.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]], -1),
            xp.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        axis=-2,
    )  # [..., 4 candidates, 4]
    traces = xp.stack([m00 + m11 + m22, m00, m11, m22], -1)
    best = xp.argmax(traces, axis=-1)
    q = xp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    return quat_normalize(q)


def rot6d_from_mat(m):
    """[..., 3, 3] -> [..., 6]: the first two columns."""
    xp = _xp(m)
    return xp.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def mat_from_rot6d(r):
    """[..., 6] -> [..., 3, 3] by Gram-Schmidt (any 6-vector maps to a valid rotation)."""
    xp = _xp(r)
    a, b = r[..., :3], r[..., 3:]
    x = a / xp.linalg.norm(a, axis=-1, keepdims=True).clip(1e-9)
    b = b - xp.sum(x * b, axis=-1, keepdims=True) * x
    y = b / xp.linalg.norm(b, axis=-1, keepdims=True).clip(1e-9)
    z = xp.cross(x, y)
    return xp.stack([x, y, z], axis=-1)


def quat_from_rot6d(r):
    """[..., 6] -> [..., 4] (w >= 0): `mat_to_quat(mat_from_rot6d(r))`, e.g. an action's target orientation."""
    return mat_to_quat(mat_from_rot6d(r))


def quat_from_yaw(yaw):
    """[...] yaw about world z -> [..., 4]."""
    xp = _xp(yaw)
    half = 0.5 * xp.asarray(yaw)
    zeros = xp.zeros_like(half)
    return xp.stack([xp.cos(half), zeros, zeros, xp.sin(half)], axis=-1)


def axis_angle_from_mat(m):
    """[..., 3, 3] -> rotation vector [..., 3] (axis * angle), robust near 0 and pi via the quaternion."""
    xp = _xp(m)
    q = mat_to_quat(m)
    v = q[..., 1:]
    s = xp.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * xp.arctan2(s, q[..., :1])
    scale = xp.where(s > 1e-9, angle / xp.where(s > 1e-9, s, 1.0), 2.0)
    return v * scale


def mat_from_axis_angle(v):
    """[..., 3] rotation vector -> [..., 3, 3] (Rodrigues)."""
    xp = _xp(v)
    angle = xp.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    scale = xp.where(angle > 1e-9, xp.sin(half) / xp.where(angle > 1e-9, angle, 1.0), 0.5)
    return quat_to_mat(xp.concatenate([xp.cos(half), v * scale], axis=-1))


def orientation_error(target_mat, current_mat):
    """World-frame rotation vector that rotates `current` onto `target`: log(R_t R_c^T). [..., 3]."""
    xp = _xp(target_mat, current_mat)
    return axis_angle_from_mat(target_mat @ xp.swapaxes(current_mat, -1, -2))


def pose_to_mat4(pos, mat):
    """pos [..., 3], mat [..., 3, 3] -> homogeneous [..., 4, 4]."""
    xp = _xp(pos, mat)
    top = xp.concatenate([mat, pos[..., :, None]], axis=-1)
    bottom = xp.broadcast_to(xp.array([0.0, 0.0, 0.0, 1.0], dtype=top.dtype), top.shape[:-2] + (1, 4))
    return xp.concatenate([top, bottom], axis=-2)


def pose7_to_mat4(pose7):
    """[..., 7] (pos, quat wxyz) -> [..., 4, 4]."""
    return pose_to_mat4(pose7[..., :3], quat_to_mat(pose7[..., 3:]))


def mat4_to_pose7(t):
    """[..., 4, 4] -> [..., 7] (pos, quat wxyz with w >= 0)."""
    xp = _xp(t)
    return xp.concatenate([t[..., :3, 3], mat_to_quat(t[..., :3, :3])], axis=-1)


def mat4_inv(t):
    """Inverse of rigid transforms [..., 4, 4]."""
    xp = _xp(t)
    r_t = xp.swapaxes(t[..., :3, :3], -1, -2)
    p = -(r_t @ t[..., :3, 3:4])[..., 0]
    return pose_to_mat4(p, r_t)


def quat_slerp(q0, q1, t):
    """Spherical interpolation between [..., 4] quaternions at fraction t (broadcast [...])."""
    xp = _xp(q0, q1, t)
    t = xp.asarray(t)[..., None]
    dot = xp.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = xp.where(dot < 0, -q1, q1)  # shortest path
    dot = xp.abs(dot).clip(-1.0, 1.0)
    theta = xp.arccos(dot)
    sin_theta = xp.sin(theta)
    small = sin_theta < 1e-6
    safe = xp.where(small, 1.0, sin_theta)
    w0 = xp.where(small, 1.0 - t, xp.sin((1.0 - t) * theta) / safe)
    w1 = xp.where(small, t, xp.sin(t * theta) / safe)
    return quat_normalize(w0 * q0 + w1 * q1)


def min_jerk(s):
    """Minimum-jerk time scaling of a phase s in [0, 1]: 10 s^3 - 15 s^4 + 6 s^5."""
    xp = _xp(s)
    s = xp.clip(s, 0.0, 1.0)
    return s * s * s * (10.0 + s * (-15.0 + 6.0 * s))
