"""Batched differential IK: damped least squares on MJX site Jacobians, with a null-space posture bias.

One call maps an absolute end-effector target pose to arm joint position targets for one arm of one env;
`jax.vmap` it over envs. It is evaluated once per control step on the current MJX data, and the arm's
position actuators track the result over the physics substeps, so large target jumps are rate-limited by
`max_joint_step` (rad per control step) rather than tracked instantly.

By default the joint step is added to the measured joints (a proportional task-space servo). With
`integrate=True` it is added to the previous joint *command* instead: this integrates the task-space
error, so a loaded arm (lifting, squeezing) does not sag below its target; the command may then lead the
measured joints by at most `max_lead` rad, which bounds the integral (and so contact forces when a target
lies inside an object).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from mujoco import mjx

from dexfly import geometry


@dataclass(frozen=True)
class IKConfig:
    damping: float = 0.05
    """Damping lambda of the least-squares solve (m or rad); larger is smoother near singularities."""
    rot_weight: float = 0.5
    """Metres per radian used to weigh orientation error against position error."""
    gain: float = 1.0
    """Fraction of the solved joint step applied per control step."""
    max_joint_step: float = 0.12
    """Largest joint change per control step (rad); bounds speed for far targets."""
    posture_gain: float = 0.05
    """Null-space pull towards the rest posture (fraction per control step)."""
    integrate: bool = False
    """Add joint steps to the previous command (integral action) instead of the measured joints."""
    max_lead: float = 0.15
    """With `integrate`: largest difference between joint command and measured joints (rad), anti-windup."""


@dataclass(frozen=True)
class ArmIndex:
    """Static indices of one arm in the model (numpy, baked into the jitted functions)."""

    site_id: int
    body_id: int
    qpos_adr: np.ndarray  # [7]
    dof_adr: np.ndarray  # [7]
    lower: np.ndarray  # [7] joint range (rad)
    upper: np.ndarray  # [7]
    rest: np.ndarray  # [7] rest posture for the null-space bias


def dls_ik(m: mjx.Model, d: mjx.Data, arm: ArmIndex, target_pos, target_mat, cfg: IKConfig, q_command):
    """Arm joint targets [7] that move site `arm.site_id` towards (target_pos [3], target_mat [3, 3]).

    `q_command` [7] is the previous joint command of this arm (its position actuators' ctrl).

    Expects `d` to hold current kinematics (site_xpos/xmat), as after any `mjx.step` or `mjx.forward`.
    """
    ee_pos = d.site_xpos[arm.site_id]
    ee_mat = d.site_xmat[arm.site_id].reshape(3, 3)
    jacp, jacr = mjx.jac(m, d, ee_pos, jnp.asarray(arm.body_id))  # [nv, 3] each
    jac = jnp.concatenate([jacp[arm.dof_adr].T, cfg.rot_weight * jacr[arm.dof_adr].T], axis=0)  # [6, 7]
    return joint_targets(jac, ee_pos, ee_mat, d.qpos[arm.qpos_adr], q_command, arm, target_pos, target_mat, cfg)


def joint_targets(jac, ee_pos, ee_mat, q, q_command, arm: ArmIndex, target_pos, target_mat, cfg: IKConfig):
    """The damped-least-squares step from a [6, 7] Jacobian (position rows, then `rot_weight` x rotation rows).

    Array-library generic (numpy in the C-MuJoCo twin, jax.numpy in MJX), so both run the same control.
    """
    xp = geometry._xp(jac, q)
    err = xp.concatenate([target_pos - ee_pos, cfg.rot_weight * geometry.orientation_error(target_mat, ee_mat)])
    jjt = jac @ jac.T + (cfg.damping**2) * xp.eye(6, dtype=jac.dtype)
    dq = jac.T @ xp.linalg.solve(jjt, err)
    # Null-space posture bias keeps the redundant 7th DoF away from limits without moving the hand.
    pinv = jac.T @ xp.linalg.inv(jjt)
    null = xp.eye(7, dtype=jac.dtype) - pinv @ jac
    dq = cfg.gain * dq + null @ (cfg.posture_gain * (xp.asarray(arm.rest) - q))
    scale = xp.minimum(1.0, cfg.max_joint_step / (xp.max(xp.abs(dq)) + 1e-9))
    if cfg.integrate:
        q_new = xp.clip(q_command + scale * dq, q - cfg.max_lead, q + cfg.max_lead)
    else:
        q_new = q + scale * dq
    return xp.clip(q_new, arm.lower, arm.upper)


__all__ = ["IKConfig", "ArmIndex", "dls_ik", "joint_targets"]
