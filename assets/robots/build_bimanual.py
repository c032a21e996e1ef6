#!/usr/bin/env python
"""Generator for the dexfly robot MJCF files (hand-authored from /work/shared/robot_facts.md, sections 1-4).

Writes
  assets/robots/rm75_g0r_bimanual.xml   two RealMan RM75-6F arms + two PsiBot G0-R hands (stand-in: Inspire RH56DFX
                                        kinematics with one global length scale, --hand-scale, default 1.0)
  assets/robots/panda_inspire.xml       Franka Panda arm + Inspire RH56DFX right hand (same hand code, scale 1.0)

MJCF cannot be parametrised, so the hand is written once here (in the dex-urdf `hand_base_link` frame of the
right hand: fingers along -y, palm normal -x, lateral z) and emitted per robot; the left hand is its mirror image
across the hand z = 0 plane. The committed XML files are exactly what this script produces:

    python assets/robots/build_bimanual.py                 # both files, hand scale 1.0
    python assets/robots/build_bimanual.py --robot bimanual --hand-scale 1.1

The home keyframes are solved here with a small damped-least-squares IK on the C model (deterministic).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mujoco
import numpy as np

HERE = Path(__file__).resolve().parent
PI = np.pi


# ----------------------------------------------------------------------------------------------------------------
# small maths helpers
# ----------------------------------------------------------------------------------------------------------------
def rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rpy(r, p, y):
    """URDF convention: R = Rz(y) Ry(p) Rx(r)."""
    return rz(y) @ ry(p) @ rx(r)


def mat2quat(R):
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.asarray(R, dtype=float).reshape(9))
    if q[0] < 0:
        q = -q
    return q


def f(v, nd=6):
    """Format numbers compactly (and without '-0')."""
    v = np.atleast_1d(np.asarray(v, dtype=float))
    out = []
    for x in v:
        x = round(float(x), nd)
        if x == 0:
            x = 0.0
        s = f"{x:.{nd}f}".rstrip("0").rstrip(".")
        out.append(s if s not in ("", "-0") else "0")
    return " ".join(out)


def quat_attr(R):
    q = mat2quat(R)
    if np.allclose(q, [1, 0, 0, 0], atol=1e-12):
        return ""
    return f' quat="{f(q, 8)}"'


def cyl_inertia(m, r, L):
    """Diagonal inertia of a solid cylinder (axis z) of mass m, radius r, length L: a reasonable stand-in."""
    ixx = m * (3 * r * r + L * L) / 12.0
    return np.array([ixx, ixx, 0.5 * m * r * r])


def box_inertia(m, full):
    x, y, z = full
    return np.array([m * (y * y + z * z), m * (x * x + z * z), m * (x * x + y * y)]) / 12.0


# collision bits (docs/conventions.md)
HAND_COL = 'contype="2" conaffinity="5"'  # hand: touches objects (4) and table (1), never itself or the arm
WRIST_COL = 'contype="2" conaffinity="4"'  # last arm links / flange: touch objects only
NO_COL = 'contype="0" conaffinity="0"'


# ----------------------------------------------------------------------------------------------------------------
# Inspire RH56DFX right hand (facts section 2), dex-urdf hand_base_link frame
# ----------------------------------------------------------------------------------------------------------------
# Passive-joint coupling (facts 2.5). We use the dex-urdf ratios because the joint origins/ranges below come from
# the same dex-urdf file (so offset and ranges are mutually consistent), and they sit on the consensus line
# (proximal->intermediate ~1.1 with a small negative offset, thumb 1.33 / 0.67):
#   finger intermediate = -0.04545 + 1.06399 * proximal      (dex-urdf inspire_hand_right.urdf mimic)
#   thumb intermediate  =            1.334   * thumb_pitch    (dex-urdf mimic)
#   thumb distal        =            0.667   * thumb_pitch    (dex-urdf mimic)
FINGER_COUPLING = (-0.04545, 1.06399)
THUMB_INT_COUPLING = (0.0, 1.334)
THUMB_DIST_COUPLING = (0.0, 0.667)

# name, MCP origin, roll of the proximal frame, PIP origin (in proximal), tip (in intermediate), distal mass
FINGERS = [
    ("index", (0.00028533, -0.13653, -0.032268), -3.1067, (-0.0026138, 0.032026, -0.001), (-0.0008, 0.045, -0.005), 0.0093),
    ("middle", (0.00028533, -0.1371, -0.01295), -3.1416, (-0.0024229, 0.032041, -0.001), (-0.001, 0.048, -0.005), 0.0101),
    ("ring", (0.00028533, -0.13691, 0.0062872), 3.0892, (-0.0024229, 0.032041, -0.001), (-0.0008, 0.045, -0.005), 0.0093),
    ("pinky", (0.00028533, -0.13571, 0.025488), 3.0369, (-0.0024229, 0.032041, -0.001), (-0.0008, 0.037, -0.005), 0.0074),
]
FINGER_RANGE = (0.0, 1.47)  # dex-urdf MCP range; ctrlrange of the 4 finger actuators
FINGER_INT_RANGE = (-0.04545, 1.56)
THUMB_YAW_RANGE = (0.0, 1.308)
THUMB_PITCH_RANGE = (0.0, 0.6)

# Hand actuators: stand-in torques (facts 2.8: 10 N x ~0.075 m = 0.7-0.8 N.m). Fingers use 0.8 N.m. The thumb bend
# gets 1.2 N.m because the measured thumb-bend force (12.9 N, facts 2.8) is ~1.8x the index/middle force and its
# lever to the contact is ~0.08-0.09 m; thumb rotation only positions the thumb (0.8 N.m).
HAND_KP = 3.0  # N.m/rad: saturates at ~0.27 rad error; omega = sqrt(kp / armature) ~ 40 rad/s << 2/dt
HAND_FORCE = {"pinky": 0.8, "ring": 0.8, "middle": 0.8, "index": 0.8, "thumb_bend": 1.2, "thumb_rot": 0.8}
HAND_ARMATURE = 0.002  # reflected rotor inertia stand-in; keeps the tiny finger links stable at dt = 4 ms
HAND_DAMPING = 0.18  # 0.8 N.m / 0.18 = 4.4 rad/s: rated bend speed 260 deg/s (facts 2.8)
PASSIVE_ARMATURE = 0.001
PASSIVE_DAMPING = 0.02


class Hand:
    """Emits the hand body tree. prefix: 'hand_' / 'left_hand_' / 'right_hand_'; tip_prefix: '' / 'left_' / 'right_'.
    mirror=True gives the left hand (mirror across hand-frame z = 0). scale multiplies every hand length
    (masses by scale^3, inertias by scale^5); joint ranges, torques and gains are not scaled."""

    def __init__(self, prefix, tip_prefix, mirror=False, scale=1.0):
        self.p, self.tp, self.mirror, self.s = prefix, tip_prefix, mirror, float(scale)
        self.M = np.diag([1.0, 1.0, -1.0]) if mirror else np.eye(3)

    # transforms of right-hand quantities into this hand
    def pos(self, v):
        return self.s * (self.M @ np.asarray(v, float))

    def rot(self, R):
        return self.M @ R @ self.M

    def axis(self, a):
        # a mirrored hinge must use the reflected axial vector (-M a) so that +q still closes the finger
        a = np.asarray(a, float)
        return -self.M @ a if self.mirror else a

    def mass(self, m):
        return m * self.s**3

    def inertia(self, i):
        return np.asarray(i) * self.s**5

    def inertial(self, ind, pos, m, diag):
        return f'{ind}<inertial pos="{f(self.pos(pos))}" mass="{f(self.mass(m), 6)}" diaginertia="{f(self.inertia(diag), 10)}"/>\n'

    def capsule(self, ind, name, a, b, r, col=HAND_COL, rgba="0.85 0.85 0.88 1"):
        return (f'{ind}<geom name="{self.p}{name}" type="capsule" fromto="{f(self.pos(a))} {f(self.pos(b))}" '
                f'size="{f(self.s * r)}" {col} rgba="{rgba}"/>\n')

    def box(self, ind, name, centre, full, col=HAND_COL, rgba="0.25 0.25 0.28 1"):
        half = self.s * np.asarray(full) / 2
        return (f'{ind}<geom name="{self.p}{name}" type="box" pos="{f(self.pos(centre))}" size="{f(half)}" '
                f'{col} rgba="{rgba}"/>\n')

    def body_open(self, ind, name, pos, R):
        return f'{ind}<body name="{self.p}{name}" pos="{f(self.pos(pos))}"{quat_attr(self.rot(R))} gravcomp="1">\n'

    def joint(self, ind, name, axis, rng, armature, damping):
        return (f'{ind}<joint name="{self.p}{name}" axis="{f(self.axis(axis))}" range="{f(rng)}" '
                f'armature="{armature}" damping="{damping}"/>\n')

    def joint_free(self, ind, name, axis, armature, damping):
        # passive joints: no limit rows (the equality keeps them inside [-0.05, 1.56]); fewer MJX constraint rows
        return (f'{ind}<joint name="{self.p}{name}" axis="{f(self.axis(axis))}" limited="false" '
                f'armature="{armature}" damping="{damping}"/>\n')

    def site(self, ind, name, pos, R=None, size=0.004, rgba="1 0.3 0.3 1"):
        # the ee frame keeps its semantic axes (x palm normal, z fingers, y = z x x) on the mirrored hand: not mirrored
        q = quat_attr(R) if R is not None else ""
        return f'{ind}<site name="{name}" pos="{f(self.pos(pos))}"{q} size="{f(size)}" rgba="{rgba}" group="3"/>\n'

    # --------------------------------------------------------------------------------------------------
    def body_xml(self, ind, mount_pos, mount_R, ee_site_name):
        """The hand base body (hand_base_link frame) attached with mount_pos / mount_R in the parent frame."""
        i0, i1 = ind, ind + "  "
        x = f'{i0}<!-- {"LEFT (mirrored)" if self.mirror else "RIGHT"} hand, dex-urdf hand_base_link frame: fingers -y, ' \
            f'palm normal -x, lateral z; length scale {self.s:g} -->\n'
        x += f'{i0}<body name="{self.p}base" pos="{f(mount_pos)}"{quat_attr(mount_R)} gravcomp="1">\n'
        # palm + wrist adapter (facts 2.4, dex-urdf primitives); total hand mass 0.577 kg at scale 1 (facts 2.7 vendor)
        x += self.inertial(i1, (-0.002, -0.075, 0.0), 0.46, box_inertia(0.46, (0.039, 0.128, 0.0814)))
        x += (f'{i1}<geom name="{self.p}adapter_vis" type="cylinder" pos="{f(self.pos((0, -0.0136, 0)))}"'
              f'{quat_attr(self.rot(rx(PI / 2)))} size="{f(self.s * 0.028)} {f(self.s * 0.0139)}" {NO_COL} group="2" '
              f'rgba="0.2 0.2 0.22 1"/>\n')
        x += self.box(i1, "palm0", (-0.0032, -0.0175, 0.0), (0.0391, 0.035, 0.0574))  # adapter + lower palm
        x += self.box(i1, "palm1", (-0.0032, -0.0682, 0.0), (0.0391, 0.040, 0.0814))
        x += self.box(i1, "palm2", (0.0, -0.1081, 0.0), (0.0322, 0.040, 0.0814))
        # grasp frame: see module docstring / robot file header for the definition
        Ree = np.column_stack([[-1, 0, 0], [0, 0, -1], [0, -1, 0]]).astype(float)  # x=palm normal, z=fingers
        x += self.site(i1, ee_site_name, EE_IN_HAND, Ree, size=0.008, rgba="0.2 0.9 0.2 0.6")

        # ---- four fingers
        for name, mcp, roll, pip, tip, m_int in FINGERS:
            x += self.body_open(i1, f"{name}_proximal", mcp, rx(roll))
            i2, i3 = i1 + "  ", i1 + "    "
            x += self.inertial(i2, (0.0, 0.016, -0.006), 0.0088, cyl_inertia(0.0088, 0.007, 0.032))
            x += self.joint(i2, f"{name}_proximal", (0, 0, 1), FINGER_RANGE, HAND_ARMATURE, HAND_DAMPING)
            x += self.capsule(i2, f"{name}_proximal", (0.0, 0.004, -0.006), (-0.0012, 0.028, -0.006), 0.0075)
            x += self.body_open(i2, f"{name}_intermediate", pip, np.eye(3))
            L = tip[1]
            x += self.inertial(i3, (-0.0005, 0.45 * L, -0.005), m_int, cyl_inertia(m_int, 0.0065, L))
            x += self.joint_free(i3, f"{name}_intermediate", (0, 0, 1), PASSIVE_ARMATURE, PASSIVE_DAMPING)
            x += self.capsule(i3, f"{name}_intermediate", (0.0, 0.0045, -0.005), (-0.0008, L - 0.0065, -0.005), 0.0065)
            x += self.site(i3, f"{self.tp}tip_{name}", tip)
            x += f"{i2}</body>\n{i1}</body>\n"

        # ---- thumb: yaw (rotation) -> pitch (bend) -> intermediate -> distal
        i2, i3, i4, i5 = (i1 + "  " * k for k in (1, 2, 3, 4))
        x += self.body_open(i1, "thumb_proximal_base", (-0.01696, -0.0691, -0.02045), rpy(1.5708, -1.5708, 0))
        x += self.inertial(i2, (0.0, 0.0, -0.005), 0.0049, box_inertia(0.0049, (0.021, 0.017, 0.017)))
        x += self.joint(i2, "thumb_yaw", (0, 0, -1), THUMB_YAW_RANGE, HAND_ARMATURE, HAND_DAMPING)
        x += (f'{i2}<geom name="{self.p}thumb_base_vis" type="box" pos="{f(self.pos((0, 0, -0.005)))}" '
              f'size="{f(self.s * np.array([0.0105, 0.0085, 0.0085]))}" {NO_COL} group="2" rgba="0.25 0.25 0.28 1"/>\n')
        x += self.body_open(i2, "thumb_proximal", (-0.0088099, 0.010892, -0.00925), rpy(1.5708, 0, 2.8587))
        x += self.inertial(i3, (0.024, 0.018, -0.004), 0.0315, cyl_inertia(0.0315, 0.009, 0.056))
        x += self.joint(i3, "thumb_pitch", (0, 0, 1), THUMB_PITCH_RANGE, HAND_ARMATURE, HAND_DAMPING)
        x += self.capsule(i3, "thumb_proximal", (0.007, 0.005, -0.004), (0.038, 0.030, -0.004), 0.0095)
        x += self.body_open(i3, "thumb_intermediate", (0.04407, 0.034553, -0.0008), np.eye(3))
        x += self.inertial(i4, (0.010, 0.005, -0.004), 0.0064, cyl_inertia(0.0064, 0.008, 0.023))
        x += self.joint_free(i4, "thumb_intermediate", (0, 0, 1), PASSIVE_ARMATURE, PASSIVE_DAMPING)
        x += self.capsule(i4, "thumb_intermediate", (0.003, 0.0015, -0.004), (0.017, 0.0085, -0.004), 0.008)
        x += self.body_open(i4, "thumb_distal", (0.020248, 0.010156, -0.0012), np.eye(3))
        x += self.inertial(i5, (0.009, 0.006, -0.005), 0.0025, cyl_inertia(0.0025, 0.0075, 0.025))
        x += self.joint_free(i5, "thumb_distal", (0, 0, 1), PASSIVE_ARMATURE, PASSIVE_DAMPING)
        x += self.capsule(i5, "thumb_distal", (0.003, 0.002, -0.005), (0.0145, 0.0095, -0.0055), 0.0075)
        x += self.site(i5, f"{self.tp}tip_thumb", (0.0202, 0.0140, -0.006))
        x += f"{i4}</body>\n{i3}</body>\n{i2}</body>\n{i1}</body>\n"
        x += f"{i0}</body>\n"
        return x

    def equality_xml(self, ind):
        p = self.p
        x = (f"{ind}<!-- passive joint = c0 + c1 * actuated joint (dex-urdf mimic ratios, facts 2.5): fingers "
             f"-0.04545 + 1.06399 q; thumb intermediate 1.334 q_pitch; thumb distal 0.667 q_pitch -->\n")
        for name, *_ in FINGERS:
            x += (f'{ind}<joint name="{p}{name}_coupling" joint1="{p}{name}_intermediate" joint2="{p}{name}_proximal" '
                  f'polycoef="{f(FINGER_COUPLING[0])} {f(FINGER_COUPLING[1])} 0 0 0"/>\n')
        x += (f'{ind}<joint name="{p}thumb_intermediate_coupling" joint1="{p}thumb_intermediate" joint2="{p}thumb_pitch" '
              f'polycoef="0 {f(THUMB_INT_COUPLING[1])} 0 0 0"/>\n')
        x += (f'{ind}<joint name="{p}thumb_distal_coupling" joint1="{p}thumb_distal" joint2="{p}thumb_pitch" '
              f'polycoef="0 {f(THUMB_DIST_COUPLING[1])} 0 0 0"/>\n')
        return x

    def actuator_xml(self, ind):
        p = self.p
        rows = [("pinky", "pinky_proximal", FINGER_RANGE), ("ring", "ring_proximal", FINGER_RANGE),
                ("middle", "middle_proximal", FINGER_RANGE), ("index", "index_proximal", FINGER_RANGE),
                ("thumb_bend", "thumb_pitch", THUMB_PITCH_RANGE), ("thumb_rot", "thumb_yaw", THUMB_YAW_RANGE)]
        x = ""
        for act, jnt, rng in rows:
            fr = HAND_FORCE[act]
            x += (f'{ind}<position name="{p}{act}" joint="{p}{jnt}" kp="{HAND_KP}" ctrlrange="{f(rng)}" '
                  f'forcerange="{-fr} {fr}"/>\n')
        return x

    def qpos(self, targets):
        """Full hand qpos (body-tree order) for actuator targets [pinky, ring, middle, index, thumb_bend, thumb_rot]."""
        pinky, ring, middle, index, bend, rot = targets
        q = []
        for v in (index, middle, ring, pinky):  # tree order: index, middle, ring, pinky, thumb
            q += [v, FINGER_COUPLING[0] + FINGER_COUPLING[1] * v]
        q += [rot, bend, THUMB_INT_COUPLING[1] * bend, THUMB_DIST_COUPLING[1] * bend]
        return q


# Grasp frame `ee` in the (right) hand_base_link frame. Position: 5.5 cm in front of the palm surface (palm face at
# x = -0.023) and 13.5 cm from the wrist face along the fingers, i.e. just below the knuckles where the centre of
# a ~6 cm object sits when the proximal phalanges wrap it and the thumb opposes it; laterally centred between
# index and ring (z = -0.005). Orientation: x = palm normal (out of the palm, hand -x), z = along the fingers
# (hand -y), y = z cross x (hand -z: toward the index side on the right hand).
EE_IN_HAND = (-0.055, -0.135, -0.005)


# ----------------------------------------------------------------------------------------------------------------
# IK helper for keyframes (C MuJoCo, deterministic)
# ----------------------------------------------------------------------------------------------------------------
def solve_ik(m, site, qadr, q0, pos, R, iters=400):
    d = mujoco.MjData(m)
    d.qpos[:] = m.qpos0
    d.qpos[qadr] = q0
    sid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, site)
    jac_p, jac_r = np.zeros((3, m.nv)), np.zeros((3, m.nv))
    lo, hi = m.jnt_range[qadr].T  # arm joints: qposadr == jnt id == dof id for hinge chains rooted at world
    for _ in range(iters):
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        cur = d.site_xmat[sid].reshape(3, 3)
        ep = pos - d.site_xpos[sid]
        er = 0.5 * (np.cross(cur[:, 0], R[:, 0]) + np.cross(cur[:, 1], R[:, 1]) + np.cross(cur[:, 2], R[:, 2]))
        mujoco.mj_jacSite(m, d, jac_p, jac_r, sid)
        J = np.vstack([jac_p[:, qadr], jac_r[:, qadr]])
        e = np.concatenate([ep, er])
        dq = J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(6), e)
        # mild pull toward the middle of the range in the null space keeps the posture sensible
        N = np.eye(len(qadr)) - np.linalg.pinv(J) @ J
        dq += N @ (0.05 * ((lo + hi) / 2 - d.qpos[qadr]) * (hi - lo < 10))
        d.qpos[qadr] = np.clip(d.qpos[qadr] + dq, lo + 1e-3, hi - 1e-3)
    mujoco.mj_kinematics(m, d)
    err = np.linalg.norm(pos - d.site_xpos[sid])
    assert err < 1e-3, f"IK for {site} did not converge ({err:.4f} m)"
    return d.qpos[qadr].copy()


def option_xml(cone: str) -> str:
    """MJX-friendly options: 4 ms step, implicit-in-velocity integration, few Newton iterations; the friction cone
    per robot (see PANDA_CONE, BIMANUAL_CONE)."""
    return f"""  <!-- MJX-friendly options: 4 ms step, implicit-in-velocity integration, few Newton iterations; {cone} friction cone -->
  <option timestep="0.004" integrator="implicitfast" solver="Newton" iterations="5" ls_iterations="8" cone="{cone}"/>
"""


# Elliptic for the Panda + Inspire hand: with pyramidal cones round objects creep out of its grasp while held (the
# Grasp seed's own actions, replayed in C MuJoCo on can_mini / can_short / ball_5cm, lift each to 0.31 m and then
# drop it; elliptic holds the cans; A_EP from the seed in MJX, 8 attempts each: can_mini 0 -> 8, ball_4_5cm 0 -> 7,
# box_cube_5cm 8 -> 8; docs/conventions.md). Pour overrides it (envs/pour.py). Pyramidal for the bimanual RM75 +
# G0-R: its Handover seed fails under elliptic cones (the object is dropped at the hand-over) and Lift holds its
# objects with both palms either way.
PANDA_CONE = "elliptic"
BIMANUAL_CONE = "pyramidal"


# ----------------------------------------------------------------------------------------------------------------
# Franka Panda + Inspire RH56DFX
# ----------------------------------------------------------------------------------------------------------------
PANDA_JOINTS = [  # (origin xyz, origin rpy, range, max torque)   facts 1.1
    ((0, 0, 0.333), (0, 0, 0), (-2.8973, 2.8973), 87),
    ((0, 0, 0), (-PI / 2, 0, 0), (-1.7628, 1.7628), 87),
    ((0, -0.316, 0), (PI / 2, 0, 0), (-2.8973, 2.8973), 87),
    ((0.0825, 0, 0), (PI / 2, 0, 0), (-3.0718, -0.0698), 87),
    ((-0.0825, 0.384, 0), (-PI / 2, 0, 0), (-2.8973, 2.8973), 12),
    ((0, 0, 0), (PI / 2, 0, 0), (-0.0175, 3.7525), 12),
    ((0.088, 0, 0), (PI / 2, 0, 0), (-2.8973, 2.8973), 12),
]
PANDA_MASS = [  # facts 1.2 (link0..link7)
    (0.629769, (-0.041018, -0.00014, 0.049974)),
    (4.970684, (0.003875, 0.002081, -0.04762)),
    (0.646926, (-0.003141, -0.02872, 0.003495)),
    (3.228604, (0.027518, 0.039252, -0.066502)),
    (3.587895, (-0.05317, 0.104419, 0.027454)),
    (1.225946, (-0.011953, 0.041065, -0.038437)),
    (1.666555, (0.060149, -0.014117, -0.010517)),
    (0.735522, (0.010517, -0.004252, 0.061597)),
]
# Franka self-collision capsules (facts 1.3): (centre, axis, radius, length between sphere centres)
PANDA_CAPS = [
    [((-0.075, 0, 0.06), "x", 0.06, 0.03)],
    [((0, 0, -0.1915), "z", 0.06, 0.283)],
    [((0, 0, 0), "z", 0.06, 0.12)],
    [((0, 0, -0.145), "z", 0.06, 0.15)],
    [((0, 0, 0), "z", 0.06, 0.12)],
    [((0, 0, -0.26), "z", 0.06, 0.10), ((0, 0.08, -0.13), "z", 0.025, 0.14)],
    [((0, 0, -0.03), "z", 0.05, 0.08)],
    # link7 capsules are given in a frame yawed +pi/4: the second one is rotated accordingly
    [((0, 0, 0.01), "z", 0.04, 0.14),
     ((0.06 * np.cos(PI / 4), 0.06 * np.sin(PI / 4), 0.082), (np.cos(PI / 4), np.sin(PI / 4), 0), 0.03, 0.01)],
]
# Position servos. Arm bodies are gravity-compensated (gravcomp="1", like the real robot's torque controller), so the
# servo only fights inertia and contacts. Joint damping = max torque / max velocity (facts 1.1: 87/2.175 = 40,
# 12/2.61 = 4.6), so a saturated servo cannot drive a joint faster than its rated speed. kp is about half of
# menagerie panda.xml's gains; kv tops the damping up to ~critical (2 sqrt(kp M_ii), M_ii = diagonal of the
# joint-space inertia incl. armature at `home`: 0.91 1.51 1.03 1.05 0.07 0.10 0.05). forcerange = facts max torques.
PANDA_KP = [2000, 2000, 1500, 1500, 500, 500, 500]
PANDA_KV = [45, 70, 40, 40, 7, 9, 5]
PANDA_ARMATURE = [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
PANDA_DAMPING = [40, 40, 40, 40, 4.6, 4.6, 4.6]
# Hand mount on the Panda flange: like the Franka Hand, yaw -pi/4 about the flange z first (so the hand sits on
# the flange like the stock gripper and the menagerie home posture gives the same hand heading), then the dex-urdf
# rm75_inspire mount rpy(-pi/2, 0, pi) (facts 2.10): fingers along flange +z, palm normal along
# Rz(-pi/4) * flange +x.
PANDA_HAND_R = rz(-PI / 4) @ rpy(-PI / 2, 0, PI)


def axis_vec(a):
    return {"x": np.array([1.0, 0, 0]), "y": np.array([0, 1.0, 0]), "z": np.array([0, 0, 1.0])}[a] if isinstance(a, str) else np.asarray(a, float)


def panda_xml(home_q=None, hand_scale=1.0):
    hand = Hand("hand_", "", mirror=False, scale=hand_scale)
    x = """<mujoco model="panda_inspire">
  <!-- Franka Emika Panda + Inspire RH56DFX right hand. GENERATED by assets/robots/build_bimanual.py: edit that.
       Authored from /work/shared/robot_facts.md sections 1 (Panda) and 2 (Inspire). Link frames = URDF frames
       (franka_description), every arm joint axis is local +z. Collision: primitives only; hand geoms
       contype=2 conaffinity=5, panda_link6/panda_link7 contype=2 conaffinity=4, other arm links visual only.
       Hand mount: yaw -pi/4 about flange z (as the Franka Hand), then rpy(-pi/2,0,pi) (facts 2.10): fingers point
       along flange +z, palm normal = Rz(-pi/4) flange +x.
       Site `ee` (grasp frame): 5.5 cm in front of the palm, 13.5 cm from the wrist face along the fingers
       (centre of a ~6 cm held object); x = palm normal (out of the palm), z = along the fingers, y = z cross x.
       It is the flange frame yawed by -pi/4, offset (0.055, 0.005, 0.135) in that yawed frame. -->
  <compiler angle="radian" autolimits="true"/>
""" + option_xml(PANDA_CONE) + """  <default>
    <default class="pi_visual">
      <geom contype="0" conaffinity="0" group="2" rgba="0.95 0.95 0.95 1"/>
    </default>
  </default>
  <worldbody>
"""
    ind = "    "
    x += f'{ind}<body name="panda_link0" pos="0 0 0" gravcomp="1">\n'
    x += _panda_link_geoms(ind + "  ", 0)
    close = [f"{ind}</body>\n"]
    for i, (orig, r, rng, tau) in enumerate(PANDA_JOINTS):
        ind = ind + "  "
        x += f'{ind}<body name="panda_link{i + 1}" pos="{f(orig)}"{quat_attr(rpy(*r))} gravcomp="1">\n'
        x += (f'{ind}  <joint name="panda_joint{i + 1}" axis="0 0 1" range="{f(rng)}" armature="{PANDA_ARMATURE[i]}" '
              f'damping="{PANDA_DAMPING[i]}" actuatorfrcrange="{-tau} {tau}"/>\n')
        x += _panda_link_geoms(ind + "  ", i + 1)
        close.append(f"{ind}</body>\n")
    ind2 = ind + "  "
    x += f'{ind2}<!-- flange = URDF panda_link8: 0.107 m along joint 7 axis, link7 orientation -->\n'
    x += f'{ind2}<site name="flange" pos="0 0 0.107" size="0.006" rgba="0.2 0.2 1 0.6" group="3"/>\n'
    x += hand.body_xml(ind2, (0, 0, 0.107), PANDA_HAND_R, "ee")
    x += "".join(reversed(close))
    x += "  </worldbody>\n\n  <equality>\n" + hand.equality_xml("    ") + "  </equality>\n\n  <actuator>\n"
    x += "    <!-- arm: position servos, forcerange = facts 1.1 max torque -->\n"
    for i, (_, _, rng, tau) in enumerate(PANDA_JOINTS):
        x += (f'    <position name="panda_joint{i + 1}" joint="panda_joint{i + 1}" kp="{PANDA_KP[i]}" kv="{PANDA_KV[i]}" '
              f'ctrlrange="{f(rng)}" forcerange="{-tau} {tau}"/>\n')
    x += ("    <!-- hand (RH56 register order). Targets are joint angles in rad, 0 = open. Stand-in torques: 0.8 N.m per\n"
          "         finger (facts 2.8: 10 N x 0.075 m), 1.2 N.m thumb bend (measured thumb force 12.9 N is ~1.8x a finger's) -->\n")
    x += hand.actuator_xml("    ") + "  </actuator>\n"
    if home_q is not None:
        hq = hand.qpos([0] * 6)
        x += ("\n  <keyframe>\n    <!-- home: ee at (0.5, 0, 0.25), fingers pointing down, palm normal +x, hand open -->\n"
              f'    <key name="home" qpos="{f(list(home_q) + hq, 5)}" ctrl="{f(list(home_q) + [0] * 6, 5)}"/>\n'
              "  </keyframe>\n")
    x += "</mujoco>\n"
    return x


def _panda_link_geoms(ind, i):
    m, com = PANDA_MASS[i]
    caps = PANDA_CAPS[i]
    c0, ax0, r0, l0 = caps[0]
    inertia = cyl_inertia(m, r0, l0 + 2 * r0)
    if ax0 == "x":
        inertia = inertia[[2, 1, 0]]
    x = f'{ind}<inertial pos="{f(com)}" mass="{m}" diaginertia="{f(inertia, 6)}"/>\n'
    col = WRIST_COL if i in (6, 7) else NO_COL
    for k, (c, ax, r, L) in enumerate(caps):
        a = axis_vec(ax)
        c = np.asarray(c, float)
        if i in (6, 7):
            x += (f'{ind}<geom name="panda_link{i}_c{k}" type="capsule" fromto="{f(c - a * L / 2)} {f(c + a * L / 2)}" '
                  f'size="{r}" {col} group="3" rgba="0.95 0.95 0.95 1"/>\n')
        else:
            x += (f'{ind}<geom name="panda_link{i}_v{k}" class="pi_visual" type="capsule" '
                  f'fromto="{f(c - a * L / 2)} {f(c + a * L / 2)}" size="{r}"/>\n')
    return x


# ----------------------------------------------------------------------------------------------------------------
# RealMan RM75-6F x 2 + PsiBot G0-R (Inspire-style stand-in)
# ----------------------------------------------------------------------------------------------------------------
RM_D1, RM_D3, RM_D5, RM_D7 = 0.2405, 0.256, 0.210, 0.1725  # facts 3.1 (RM75-6F)
RM_RANGE = [3.107, 2.269, 3.107, 2.356, 3.107, 2.234, 6.283]  # facts 3.2, symmetric
RM_TORQUE = [60, 60, 30, 30, 10, 10, 10]  # facts 3.2 (rm_75.urdf effort, stand-ins)
# Same servo recipe as the Panda: damping = torque / rated speed (60/3.14, 30/3.93, 10/3.93), kv tops up to ~critical
# for M_ii at `home` (0.24 0.43 0.25 0.31 0.08 0.10 0.05), gravity-compensated links.
RM_KP = [1000, 1000, 600, 600, 200, 200, 200]
RM_KV = [12, 22, 17, 20, 6, 7, 4]
RM_ARMATURE = [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
RM_DAMPING = [19, 19, 7.6, 7.6, 2.5, 2.5, 2.5]
# Masses (facts 3.3). The CAD COM table has the upper links extending along -y of their frames (Link2 COM y=-0.107
# for a link that in the 3.2 frames extends along +z), so every COM is mapped (x, y, z) -> (x, z, -y) into our
# base-aligned body frames (= Rx(-pi/2) of the table frame); this only shifts inertia by millimetres-centimetres.
RM_MASS = [(1.862, (0.0005, 0.0001, 0.0600))] + [
    (m, (c[0], c[2], -c[1])) for m, c in [
        (1.574, (0.000241, -0.013273, -0.00995)),
        (1.217, (-0.000357, -0.106789, 0.005329)),
        (1.11, (0.000003, -0.01398, -0.011324)),
        (0.685, (-0.000005, -0.084658, 0.004747)),
        (0.619, (0.000078, -0.012937, -0.008781)),
        (0.602, (-0.000014, -0.078524, 0.002819)),
    ]] + [(0.248, (0.0, 0.0, -0.0272))]
# Mount: bases on two pedestals of a torso frame, at x=0.05, y=+-0.25 (shoulder spacing 0.5 m), z=0.20 above the
# table top, each pitched forward by 30 deg about its y axis (base z = (sin30, 0, cos30)): shoulders (J2) at
# (0.17, +-0.25, 0.408). Wrist centres for fingers-down grasps over x 0.35-0.6, y +-0.15 are then 0.22-0.46 m from
# the shoulder (reach d3+d5 = 0.466), and forward-tilted grasps at x=0.6 need only ~0.3 m; hands meet at y=0.
RM_BASE_POS = {"left": (0.05, 0.25, 0.20), "right": (0.05, -0.25, 0.20)}
RM_BASE_PITCH = np.deg2rad(30.0)
# Home: ee sites at (0.45, +-0.20, 0.30), fingers down, palms facing each other. 0.30 m keeps the open hands'
# fingertips (~0.09 m below the ee site) above every Handover object standing anywhere in its pose range (the
# 0.18 m bar included); from 0.20 m the right hand started inside objects placed near (0.45, -0.20).
RM_HOME_EE = (0.45, 0.20, 0.30)
# G0-R hand on the RM75-6F flange: dex-urdf rm75_inspire mount (facts 2.10), zero offset, rpy(-pi/2, 0, pi):
# fingers along flange +z, palm normal along flange +x. ee frame = flange frame + (0.055, 0.005/-0.005, 0.135)*scale.
RM_HAND_R = rpy(-PI / 2, 0, PI)


def bimanual_xml(home=None, hand_scale=1.0):
    x = f"""<mujoco model="rm75_g0r_bimanual">
  <!-- Two RealMan RM75-6F arms + two PsiBot G0-R hands. GENERATED by assets/robots/build_bimanual.py
       (hand scale {hand_scale:g}): edit the generator, not this file. Authored from /work/shared/robot_facts.md
       sections 2-4.
       Arm kinematics: official MDH (facts 3.1) as unrotated bodies stacked on z: J1 z at 0.2405, J2 y (same point),
       J3 z, J4 y at +0.256, J5 z, J6 y at +0.21, J7 z; link7 frame = flange 0.1725 past J6 along J7 (site
       *_flange, base-aligned at q=0). Torques 60/60/30/30/10/10/10 N.m (stand-ins from rm_75.urdf).
       Mount: world origin on the table top midway between the bases, +x into the workspace. Bases at
       (0.05, +-0.25, 0.20) on a torso/pedestal frame, each pitched 30 deg forward (base z = (0.5, 0, 0.866)), so the
       shoulders (J2) are at (0.17, +-0.25, 0.408); left arm at +y.
       G0-R hand: not public; stand-in = Inspire RH56DFX kinematics (facts 4 / 2) with ONE global length scale
       s = {hand_scale:g} on all hand lengths (masses s^3, inertias s^5), mounted per facts 2.10 (rpy(-pi/2,0,pi) on the
       flange): fingers along flange +z, palm normal along flange +x. Left hand = mirror of the right across the
       hand's lateral plane.
       Command mapping (hardware/DexGraspVLA): normalised u in [0,1], 1 = open, per actuator
       q_target = (1 - u) * q_max with q_max = 1.47 (4 fingers), 0.6 (thumb bend), 1.308 (thumb rotation);
       the actuators here take q_target in rad (0 = open).
       Site *_ee (grasp frame): 5.5 cm in front of the palm, 13.5 cm from the wrist face along the fingers (x s);
       x = palm normal, z = along the fingers, y = z cross x. -->
  <compiler angle="radian" autolimits="true"/>
""" + option_xml(BIMANUAL_CONE) + """  <default>
    <default class="rm_visual">
      <geom contype="0" conaffinity="0" group="2" rgba="0.9 0.9 0.92 1"/>
    </default>
  </default>
  <worldbody>
    <!-- torso / pedestal frame (visual only, static) -->
    <geom name="torso_vis" class="rm_visual" type="box" pos="-0.06 0 0.12" size="0.06 0.32 0.12" rgba="0.3 0.3 0.33 1"/>
"""
    for side in ("left", "right"):
        x += _rm_arm_xml(side, hand_scale)
    x += "  </worldbody>\n\n  <equality>\n"
    hands = {s: Hand(f"{s}_hand_", f"{s}_", mirror=(s == "left"), scale=hand_scale) for s in ("left", "right")}
    for s in ("left", "right"):
        x += hands[s].equality_xml("    ")
    x += "  </equality>\n\n  <actuator>\n"
    for s in ("left", "right"):
        x += f"    <!-- {s} arm: position servos, forcerange = torque stand-ins -->\n"
        for i in range(7):
            r = RM_RANGE[i]
            x += (f'    <position name="{s}_joint{i + 1}" joint="{s}_joint{i + 1}" kp="{RM_KP[i]}" kv="{RM_KV[i]}" '
                  f'ctrlrange="{-r} {r}" forcerange="{-RM_TORQUE[i]} {RM_TORQUE[i]}"/>\n')
    for s in ("left", "right"):
        x += (f"    <!-- {s} hand: pinky, ring, middle, index, thumb bend, thumb rotation; rad, 0 = open "
              f"(u in [0,1]: q = (1-u) q_max) -->\n")
        x += hands[s].actuator_xml("    ")
    x += "  </actuator>\n"
    if home is not None:
        qpos, ctrl = [], []
        for s in ("left", "right"):
            qpos += list(home[s]) + hands[s].qpos([0] * 6)
        for s in ("left", "right"):
            ctrl += list(home[s])
        ctrl += [0] * 12
        x += ("\n  <keyframe>\n    <!-- home: ee at (0.45, +-0.20, 0.30), fingers pointing down, palms facing each other "
              "(left palm -y, right palm +y), hands open -->\n"
              f'    <key name="home" qpos="{f(qpos, 5)}" ctrl="{f(ctrl, 5)}"/>\n  </keyframe>\n')
    x += "</mujoco>\n"
    return x


def _rm_arm_xml(side, hand_scale):
    hand = Hand(f"{side}_hand_", f"{side}_", mirror=(side == "left"), scale=hand_scale)
    p = side
    ind = "    "
    x = f'{ind}<body name="{p}_base" pos="{f(RM_BASE_POS[side])}"{quat_attr(ry(RM_BASE_PITCH))} gravcomp="1">\n'
    m, c = RM_MASS[0]
    x += f'{ind}  <inertial pos="{f(c)}" mass="{m}" diaginertia="{f(cyl_inertia(m, 0.055, 0.1385), 6)}"/>\n'
    x += f'{ind}  <geom name="{p}_base_vis" class="rm_visual" type="cylinder" pos="0 0 0.06925" size="0.055 0.06925"/>\n'
    # body origin offsets along z (parent frame) and joint axes, link radius for visuals/inertia
    chain = [  # (pos z, axis, visual capsules (from z, to z, radius), inertia radius, length)
        (RM_D1, "0 0 1", [("0 0 -0.102", "0 0 0", 0.041), ("0 -0.068 0", "0 0.041 0", 0.041)], 0.041, 0.14),
        (0.0, "0 1 0", [("0 0 0", "0 0 0.1525", 0.0405)], 0.0405, 0.2),
        (RM_D3, "0 0 1", [("0 0 -0.1035", "0 0 0", 0.035), ("0 -0.067 0", "0 0.035 0", 0.035)], 0.035, 0.14),
        (0.0, "0 1 0", [("0 0 0", "0 0 0.1285", 0.034)], 0.034, 0.16),
        (RM_D5, "0 0 1", [("0 0 -0.081", "0 0 0", 0.029), ("0 -0.054 0", "0 0.029 0", 0.029)], 0.029, 0.11),
        (0.0, "0 1 0", None, 0.0286, 0.12),
        (RM_D7, "0 0 1", None, 0.037, 0.06),
    ]
    close = [f"{ind}</body>\n"]
    for i, (z, ax, vis, rI, L) in enumerate(chain):
        ind = ind + "  "
        m, c = RM_MASS[i + 1]
        r = RM_RANGE[i]
        x += f'{ind}<body name="{p}_link{i + 1}" pos="0 0 {f(z)}" gravcomp="1">\n'
        x += f'{ind}  <inertial pos="{f(c)}" mass="{m}" diaginertia="{f(cyl_inertia(m, rI, L), 6)}"/>\n'
        x += (f'{ind}  <joint name="{p}_joint{i + 1}" axis="{ax}" range="{-r} {r}" armature="{RM_ARMATURE[i]}" '
              f'damping="{RM_DAMPING[i]}" actuatorfrcrange="{-RM_TORQUE[i]} {RM_TORQUE[i]}"/>\n')
        if vis:
            for k, (a, b, rr) in enumerate(vis):
                x += f'{ind}  <geom name="{p}_link{i + 1}_v{k}" class="rm_visual" type="capsule" fromto="{a} {b}" size="{rr}"/>\n'
        if i == 5:  # wrist link6: collides with objects
            x += (f'{ind}  <geom name="{p}_link6_c0" type="capsule" fromto="0 0 0 0 0 0.1" size="0.0286" {WRIST_COL} '
                  f'rgba="0.9 0.9 0.92 1"/>\n')
            x += (f'{ind}  <geom name="{p}_link6_v0" class="rm_visual" type="capsule" fromto="0 -0.0285 0 0 0.04 0" '
                  f'size="0.0286"/>\n')
        if i == 6:  # 6-axis F/T sensor + flange (ESTIMATE r 0.037-0.04 from Link6-z 0.115 to 0.1725)
            x += (f'{ind}  <geom name="{p}_flange_vis" class="rm_visual" type="cylinder" pos="0 0 -0.02875" '
                  f'size="0.038 0.02875" rgba="0.3 0.3 0.33 1"/>\n')
            x += (f'{ind}  <geom name="{p}_flange_c0" type="box" pos="0 0 -0.02875" size="0.033 0.033 0.02875" '
                  f'{WRIST_COL} group="3"/>\n')
            x += f'{ind}  <site name="{p}_flange" pos="0 0 0" size="0.006" rgba="0.2 0.2 1 0.6" group="3"/>\n'
            x += hand.body_xml(ind + "  ", (0, 0, 0), RM_HAND_R, f"{p}_ee")
        close.append(f"{ind}</body>\n")
    x += "".join(reversed(close))
    return x


# ----------------------------------------------------------------------------------------------------------------
def _arm_qadr(m, names):
    return np.array([m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)] for n in names])


def build_panda(hand_scale=1.0):
    m = mujoco.MjModel.from_xml_string(panda_xml(None, hand_scale))
    qadr = _arm_qadr(m, [f"panda_joint{i}" for i in range(1, 8)])
    R = np.column_stack([[1, 0, 0], [0, -1, 0], [0, 0, -1]]).astype(float)  # x palm +x, z fingers down
    q = solve_ik(m, "ee", qadr, np.array([0, 0.2, 0, -2.0, 0, 2.2, 0.0]), np.array([0.5, 0, 0.25]), R)
    return panda_xml(np.round(q, 5), hand_scale)


def build_bimanual(hand_scale=1.0):
    m = mujoco.MjModel.from_xml_string(bimanual_xml(None, hand_scale))
    home = {}
    for s, sy in (("left", 1.0), ("right", -1.0)):
        qadr = _arm_qadr(m, [f"{s}_joint{i}" for i in range(1, 8)])
        # palm normal (ee x) toward the midline (-sy), fingers (ee z) down, y = z x x
        xe = np.array([0, -sy, 0.0])
        ze = np.array([0, 0, -1.0])
        R = np.column_stack([xe, np.cross(ze, xe), ze])
        seed = np.array([0.0, 0.6, 0.0, 1.4, 0.0, 0.9, 0.0]) * np.array([1, 1, 1, 1, 1, 1, 1])
        seed[0] = sy * -0.3
        home[s] = np.round(solve_ik(m, f"{s}_ee", qadr, seed, np.array([RM_HOME_EE[0], sy * RM_HOME_EE[1], RM_HOME_EE[2]]), R), 5)
    return bimanual_xml(home, hand_scale)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", choices=["all", "panda", "bimanual"], default="all")
    ap.add_argument("--hand-scale", type=float, default=1.0, help="global G0-R hand length scale (bimanual only)")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    a = ap.parse_args()
    if a.robot in ("all", "panda"):
        (a.out_dir / "panda_inspire.xml").write_text(build_panda(1.0))
        print("wrote", a.out_dir / "panda_inspire.xml")
    if a.robot in ("all", "bimanual"):
        (a.out_dir / "rm75_g0r_bimanual.xml").write_text(build_bimanual(a.hand_scale))
        print("wrote", a.out_dir / "rm75_g0r_bimanual.xml")


if __name__ == "__main__":
    main()
