"""The teleoperation stand-in: scripted keyframes through IK in place of a human operator.

The paper records its seeds (and its human-demo baselines) by VR teleoperation. dexfly has no operator, so a
script per task moves the hand(s) through a few keyframes (poses relative to the task objects, hand open/close
commands) with minimum-jerk timing and a short pause at each keyframe; the env's IK turns the end-effector
targets into joint targets. `experiments/record_seed.py` recorded the seeds with it (`script(env, spec)`);
the baselines (`dexfly.flywheel.baselines`) record their human-demo stand-ins with human-like variation:

    episodes, stats = record_demos("grasp", specs, 20, variation=HumanVariation(), seed=0)

`HumanVariation` jitters every keyframe (a few mm, a few degrees) and its timing, as an operator never repeats a
motion exactly; failed attempts are dropped, as an operator would redo them. See docs/baselines.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

import envs
from dexfly import geometry, layout, watchdog
from dexfly.rollout import episodes_from_trajectory, run_actions
from dexfly.utils import group_by_topology
from envs.base import SceneSpec


@dataclass(frozen=True)
class Key:
    """One keyframe of one arm: reach `pos`/`rot` (world) with `hand` targets within `duration` s."""

    duration: float
    pos: np.ndarray
    rot: np.ndarray  # 3x3
    hand: np.ndarray  # 6 joint targets (rad)
    subtask_end: int | None = None  # index of the subtask that ends when this keyframe is reached


def interpolate(start_pos, start_rot, start_hand, keys: list[Key], ctrl_dt: float, total_steps: int):
    """Minimum-jerk position, slerped orientation and linear hand motion through the keyframes.

    Returns actions [T, 15] and subtask_end [T, n_subtasks] (uint8 0 -> 1 at each subtask's end).
    """
    # Keyframes mark the ends of all but the last subtask; the last one ends with the episode.
    marked = [k.subtask_end for k in keys if k.subtask_end is not None]
    n_sub = 2 + max(marked) if marked else 1
    actions, ends = [], np.zeros((total_steps, n_sub), np.uint8)
    pos, quat, hand = np.asarray(start_pos), np.asarray(geometry.mat_to_quat(jnp.asarray(start_rot))), np.asarray(start_hand)
    t = 0
    for key in keys:
        steps = max(1, int(round(key.duration / ctrl_dt)))
        q_goal = np.asarray(geometry.mat_to_quat(jnp.asarray(key.rot)))
        s = np.asarray(geometry.min_jerk(jnp.arange(1, steps + 1) / steps))
        p = pos[None] + s[:, None] * (key.pos - pos)[None]
        q = np.asarray(geometry.quat_slerp(jnp.asarray(quat)[None], jnp.asarray(q_goal)[None], jnp.asarray(s)))
        h = hand[None] + s[:, None] * (key.hand - hand)[None]
        mats = np.asarray(geometry.quat_to_mat(jnp.asarray(q)))
        actions.append(np.concatenate([p, mats[:, :, 0], mats[:, :, 1], h], axis=1))
        t += steps
        if key.subtask_end is not None:
            ends[min(t, total_steps) - 1 :, key.subtask_end] = 1
        pos, quat, hand = key.pos, q_goal, key.hand
    actions = np.concatenate(actions)
    if len(actions) > total_steps:
        raise ValueError(f"keyframes last {len(actions)} steps, longer than the episode ({total_steps})")
    pad = np.repeat(actions[-1:], total_steps - len(actions), axis=0)
    ends[:, -1] = 0
    ends[-1, -1] = 1  # the last subtask ends with the episode
    return np.concatenate([actions, pad]).astype(np.float32), ends


def rot_z(yaw):
    return np.asarray(geometry.quat_to_mat(geometry.quat_from_yaw(jnp.asarray(yaw))))


def frame(x_axis, z_axis) -> np.ndarray:
    """Rotation matrix with the given x (palm normal) and z (finger direction) axes of the hand's `ee` frame."""
    x = np.asarray(x_axis, float) / np.linalg.norm(x_axis)
    z = np.asarray(z_axis, float) / np.linalg.norm(z_axis)
    return np.stack([x, np.cross(z, x), z], axis=1)


def rot_x(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


# Hand postures (rad, RH56 order: pinky, ring, middle, index, thumb bend, thumb rotation).
HAND_OPEN = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.1])
HAND_CLOSED = np.array([1.4, 1.4, 1.4, 1.4, 0.6, 1.1])
# Object centre relative to the `ee` frame for a power grasp: 2 cm nearer the palm than the site.
GRASP_OFFSET = np.array([-0.02, 0.0, 0.0])
HAND_FLAT = np.array([0.1, 0.1, 0.1, 0.1, 0.0, 0.0])  # fingers straight, thumb alongside: a flat palm
HAND_PRESS = np.array([0.35, 0.35, 0.35, 0.35, 0.2, 0.0])  # fingers slightly curled against a large object
PALM_FACE = 0.032  # palm face behind the ee site, along the palm normal (m); the same in the Inspire hand and the G0-R
SQUEEZE = 0.02  # how far past the object's surface the palms are commanded, to press on it
TOP_GRASP = frame([0, 0, -1], [1, 0, 0])  # palm down, fingers pointing away from the robot
# Panda top grasp: palm down, fingers pointing left. With fingers pointing away (TOP_GRASP) the Panda's wrist
# (joint 5) sits at its limit, so grasps rotated with the object's yaw fail; this keeps >= 0.6 rad of margin
# on every joint for object yaws in [-0.5, 0.5] (C-MuJoCo check).
PANDA_TOP_GRASP = frame([0, 0, -1], [0, 1, 0])
SIDE_GRASP = frame([1, 0, 0], [0, 1, 0])  # palm facing away from the robot, fingers pointing left


def start(env, arm=0):
    home = layout.split_action(env.home_action(), len(env.arms))
    x, y = home.rot6d[arm, :3], home.rot6d[arm, 3:]
    return home.pos[arm], np.stack([x, y, np.cross(x, y)], axis=1), home.hand[arm]


def grasp_script(env, spec, perturb: Perturb | None = None):
    """Reach over the object, descend, close the hand, lift 0.3 m and hold."""
    pose = dict(spec.poses)["object"]
    obj = np.asarray(env.scene_arrays(spec).object_pose[0, :3], float)
    rot = rot_z(pose[2]) @ PANDA_TOP_GRASP
    grasp = obj - rot @ GRASP_OFFSET
    keys = [
        Key(1.2, grasp + [0, 0, 0.10], rot, HAND_OPEN),
        Key(0.8, grasp, rot, HAND_OPEN),
        Key(0.2, grasp, rot, HAND_OPEN),  # a short settle before closing, as an operator would
        Key(0.7, grasp, rot, HAND_CLOSED),
        Key(1.3, grasp + [0, 0, 0.30], rot, HAND_CLOSED),
    ]
    keys = perturb(0, keys) if perturb else keys
    actions, ends = interpolate(*start(env), keys, env.config.ctrl_dt, env.episode_steps)
    return actions, ends[:, None, :]


# Pour. Where the Inspire hand's collision geoms lie in its `ee` frame (measured on the model, 2026-11-21; x = palm
# normal, z = along the fingers): palm face at x = -0.032; open fingers flat in the palm plane at z >= 0.03; the
# open thumb (rotation 1.1) sticks out along the palm normal up to x = +0.05, at z in [-0.07, -0.014]. A cup held
# with its centre on the ee site's z would have the thumb inside its near-right corner, so a horizontal approach
# along the palm normal shoves the cup 3-5 cm before the fingers close (the first seed did exactly that, and its
# policies failed at the grasp). The cup is therefore held 1.5 cm towards the fingers (its -z side clears the
# thumb), 1 cm in front of the palm, with the grasp 3.5 cm above the cup's centre, and the hand comes down
# vertically from 12 cm above. C-MuJoCo sweeps of constant placement errors (the whole grasp shifted by up to 1.5 cm
# in x/y or 1 cm in z) give 14 of 18 successes for this grasp, against 1 of 8 (1 cm errors only) for the first
# seed's.
POUR_PALM_CLEARANCE = 0.01  # gap between the palm face and the cup's near wall at the grasp (m)
POUR_FINGERWARD = 0.015  # cup centre this far along the fingers from the ee site (m)
POUR_GRASP_HEIGHT = 0.035  # grasp this far above the cup's centre (m)
POUR_APPROACH_HEIGHT = 0.12  # the hand descends onto the grasp from this far above it (m)


def pour_script(env, spec, perturb: Perturb | None = None):
    """Side-grasp the cup from above, lift it, carry it over the bowl, tip it there and hold."""
    arrays = env.scene_arrays(spec)
    src, tgt = np.asarray(arrays.object_pose[0, :3], float), np.asarray(arrays.object_pose[1, :3], float)
    src_half, tgt_half = arrays.object_half_extents[0], arrays.object_half_extents[1]
    rot = SIDE_GRASP
    cup_in_ee = np.array([-PALM_FACE + POUR_PALM_CLEARANCE + src_half[0], 0.0, POUR_FINGERWARD])
    grasp = src + [0, 0, POUR_GRASP_HEIGHT] - rot @ cup_in_ee
    ee_in_cup = grasp - src  # the cup is carried rigidly: keep this offset, rotated with the cup
    tilt = rot_x(-2.0)  # tip the mouth towards +y (the bowl side)
    mouth_up = src_half[2] * tilt @ np.array([0, 0, 1.0])
    pour_centre = np.array([tgt[0], tgt[1], tgt[2] + tgt_half[2] + 0.05]) - mouth_up
    pour_centre[2] = max(pour_centre[2], tgt[2] + tgt_half[2] + src_half[2] + 0.02)
    # Carry the upright cup to just above its pouring place and tip it there: a policy that runs ahead of the demo's
    # timing then tips the cup over the bowl, not on the way to it (the first seed tipped while still 10 cm short).
    carry_centre = pour_centre + [0, 0, 0.04]
    keys = [
        Key(1.2, grasp + [0, 0, POUR_APPROACH_HEIGHT], rot, HAND_OPEN),
        Key(0.8, grasp, rot, HAND_OPEN),
        Key(0.2, grasp, rot, HAND_OPEN),
        Key(0.7, grasp, rot, HAND_CLOSED, subtask_end=0),
        Key(1.0, grasp + [0, 0, 0.15], rot, HAND_CLOSED),
        Key(1.0, carry_centre + ee_in_cup, rot, HAND_CLOSED),
        Key(1.2, pour_centre + tilt @ ee_in_cup, tilt @ rot, HAND_CLOSED),
        Key(1.0, pour_centre + tilt @ ee_in_cup, tilt @ rot, HAND_CLOSED),
    ]
    keys = perturb(0, keys) if perturb else keys
    actions, ends = interpolate(*start(env), keys, env.config.ctrl_dt, env.episode_steps)
    return actions, ends[:, None, :]


# Lift. Where the G0-R hand's collision geoms lie in its `ee` frame (measured on the model; x = palm normal,
# z = along the fingers): palm face at x = -0.032; with the four fingers curled to 0.5 rad their middle phalanges
# reach x = 0.0 at z in [0.02, 0.06]; the thumb (rotation 0, bend 0.6) stays behind them (x <= -0.017).
# The hands keep the home posture (palms facing each other, fingers down) and press the curled fingertips on
# the object's +-y sides: a row of four compliant contacts 8 cm long on each side, slightly above the centre of
# mass, so the object hangs level between them and cannot pivot about the line joining the hands.
LIFT_FINGERS = np.array([0.5, 0.5, 0.5, 0.5, 0.6, 0.0])  # curled fingers, thumb bent and tucked
LIFT_TIP_X = 0.0  # fingertips' reach along the palm normal from the ee site with LIFT_FINGERS (m)
LIFT_TIP_Z = 0.04  # fingertips' middle along the fingers from the ee site (m)
LIFT_TIP_ABOVE_COM = 0.01  # fingertip row height above the object's centre (m)
LIFT_SQUEEZE = 0.01  # fingertips commanded this far past the object's sides (the fingers yield; press force)
LIFT_RISE = 0.22


def lift_script(env, spec, perturb: Perturb | None = None):
    """Both hands (home posture: palms facing each other, fingers down) lowered beside the object's +-y sides,
    fingers curled, pressed on the sides just above the centre of mass, lifted together at once, held."""
    arrays = env.scene_arrays(spec)
    centre = np.asarray(arrays.object_pose[0, :3], float)
    half = np.asarray(arrays.object_half_extents[0], float)
    yaw_rot = rot_z(dict(spec.poses)["object"][2])
    keys_per_arm = []
    for side in (+1.0, -1.0):  # left hand on the +y side, right hand on the -y side
        rot = yaw_rot @ frame([0, -side, 0], [0, 0, -1])  # palm faces the object, fingers down
        local = np.array([0.0, side * (half[1] + LIFT_TIP_X - LIFT_SQUEEZE), LIFT_TIP_ABOVE_COM + LIFT_TIP_Z])
        contact = centre + yaw_rot @ local
        outside = contact + yaw_rot @ np.array([0.0, side * 0.05, 0.0])
        keys_per_arm.append(
            [
                Key(1.0, outside + [0, 0, 0.06], rot, LIFT_FINGERS),
                Key(0.6, outside, rot, LIFT_FINGERS),
                Key(0.7, contact, rot, LIFT_FINGERS),
                # No pause at the contact: a base trained from a seed with a 15-step pause here stalled at the
                # contact; one constant action in a barely changing state for longer than its 8-step action horizon
                # leaves it nothing in the observation that says when to rise.
                Key(1.6, contact + [0, 0, LIFT_RISE], rot, LIFT_FINGERS),
            ]
        )
    if perturb:
        keys_per_arm = [perturb(arm, keys) for arm, keys in enumerate(keys_per_arm)]
    return bimanual(env, keys_per_arm)




def handover_script(env, spec, perturb: Perturb | None = None):
    """Right hand: cap grasp of the object's upper end (palm down, fingers diagonal across the top), lift, carry it
    to the hand-over point and hold it there. Left hand: wait, then a side grasp of the object's lower part (palm
    towards the object's +x face, fingers along its -y axis). Right hand: open and withdraw upwards; the left hand
    holds the object alone.

    Like an operator who looks before reaching, the left grasp is placed on the object where it actually is at the
    hand-over: a first pass runs the right arm's part in MJX and reads the object's pose there (the cap grasp
    holds the bar tilted by ~30 deg by then, which an assumed upright pose would miss by centimetres).
    """
    actions, ends = _handover_keys(env, spec, None, perturb)
    actions[:, : layout.ACTION_DIM_PER_ARM] = env.home_action()[: layout.ACTION_DIM_PER_ARM]  # first pass: the left arm stays out of the way
    _, traj = run_actions(env, env.make_scenes([spec]), actions[None], jax.random.PRNGKey(0))
    look_step = int(np.argmax(ends[:, 1, 1]))  # the right arm's `present` ends: the left grasp is fixed here
    presented_pose = np.asarray(traj.object_pose)[0, look_step, 0]  # [7] pos + quat (wxyz)
    return _handover_keys(env, spec, presented_pose, perturb)


def _handover_keys(env, spec, presented_pose, perturb: Perturb | None = None):
    """The handover keyframes; the left grasp relative to `presented_pose` [7] (None: assumed upright, first pass).
    `perturb` (deterministic per arm and keyframe, so both passes see the same motion) varies the right arm's
    keyframes before the left arm's wait is timed on them, then the left arm's own."""
    arrays = env.scene_arrays(spec)
    obj = np.asarray(arrays.object_pose[0, :3], float)
    half = np.asarray(arrays.object_half_extents[0], float)
    object_yaw = dict(spec.poses)["object"][2]
    right_rot = rot_z(object_yaw + HANDOVER_GRASP_YAW) @ TOP_GRASP
    present_rot = rot_z(HANDOVER_PRESENT_YAW) @ TOP_GRASP
    grip_top = np.array([0.0, 0.0, half[2] - HANDOVER_TOP_GRIP])  # grasp point below the object's top face
    r_grasp = obj + grip_top - right_rot @ HANDOVER_OFFSET
    presented = np.array([*HANDOVER_POINT, obj[2] + HANDOVER_RISE])  # object centre at the hand-over
    r_present = presented + grip_top - present_rot @ HANDOVER_OFFSET  # assumes the object keeps its pose in the hand
    if presented_pose is None:  # the object's yaw at the hand-over: the hand's yaw minus the grasp's relative yaw
        obj_pos, obj_rot = presented, rot_z(HANDOVER_PRESENT_YAW - HANDOVER_GRASP_YAW)
    else:
        obj_pos, obj_rot = presented_pose[:3], np.asarray(geometry.quat_to_mat(jnp.asarray(presented_pose[3:])))
    # The left hand stays upright (palm horizontal-facing) and turns with the object's yaw only; its grasp point is
    # the object's lower part where it actually hangs.
    left_rot = rot_z(np.arctan2(obj_rot[1, 0], obj_rot[0, 0])) @ frame([1, 0, 0], [0, -1, 0])
    l_grasp = obj_pos + obj_rot @ np.array([0.0, 0.0, -HANDOVER_LOW_GRIP * half[2]]) - left_rot @ HANDOVER_OFFSET
    l_pos, l_rot, l_hand = start(env, 0)
    right = [
        Key(1.0, r_grasp + [0, 0, HANDOVER_APPROACH_HEIGHT], right_rot, HAND_OPEN),  # turn the hand high above
        Key(0.8, r_grasp, right_rot, HAND_OPEN),
        Key(0.2, r_grasp, right_rot, HAND_OPEN),
        Key(0.6, r_grasp, right_rot, HAND_CLOSED),
        Key(0.6, r_grasp + [0, 0, HANDOVER_LIFT], right_rot, HAND_CLOSED, subtask_end=0),  # grasp (and lift)
        Key(1.0, r_present, present_rot, HAND_CLOSED),  # present: carry to the hand-over point, ...
        Key(HANDOVER_SETTLE, r_present, present_rot, HAND_CLOSED, subtask_end=1),  # ... let the object settle (5.4 s)
        Key(2.2, r_present, present_rot, HAND_CLOSED),  # release: hold until the left hand has closed, ...
        Key(0.5, r_present, present_rot, HAND_OPEN),  # ... open ...
        Key(0.8, r_present + [0, 0, 0.10], present_rot, HAND_OPEN),  # ... and withdraw (ends with the episode)
    ]
    right = perturb(1, right) if perturb else right
    present_end = sum(k.duration for k in right[: [k.subtask_end for k in right].index(1) + 1])  # s
    left = [
        Key(1.0, l_grasp - HANDOVER_APPROACH * left_rot[:, 0], left_rot, HAND_OPEN),
        Key(0.6, l_grasp, left_rot, HAND_OPEN),
        Key(0.6, l_grasp, left_rot, HAND_CLOSED, subtask_end=1),  # receive (ends at 7.6 s, hand closed)
        Key(0.2, l_grasp, left_rot, HAND_CLOSED),  # hold (ends with the episode)
    ]
    left = [Key(present_end, l_pos, l_rot, l_hand, subtask_end=0)] + (perturb(0, left) if perturb else left)  # wait until presented
    return bimanual(env, [left, right])


# From batched MJX sweeps (run_actions on many script variants and poses at once, 2026-11-21). The right RM75's
# palm-down grasp is kinematically comfortable only with the fingers turned 0.3-1.0 rad clockwise (towards -y) from
# straight ahead: with the fingers straight ahead (yaw 0) joint 2 sits at its limit over most of the pose range and
# the hand misses by 1-4 cm. Grasping at -0.7 rad from the object's faces keeps every augmented grasp (object yaw
# +-0.5) inside that window; the bar's square top is then held across a corner. The scripted demo succeeds at 15 of
# the first 16 catalog poses with these values (grasp yaw -0.85: 8/16; approach 0.12 m above the grasp: the turning
# fingers knock the bar over at 4/16).
HANDOVER_GRASP_YAW = -0.7  # right grasp yaw relative to the object (rad)
HANDOVER_PRESENT_YAW = -0.6  # right hand yaw at the hand-over (world, rad): the bar is presented at yaw +0.1
HANDOVER_APPROACH_HEIGHT = 0.20  # the right hand turns palm-down this far above its grasp point (m)
HANDOVER_TOP_GRIP = 0.045  # top grasp point this far below the object's top face (m)
HANDOVER_LOW_GRIP = 0.3  # left grasp point, as a fraction of the half-height below the centre
HANDOVER_POINT = (0.45, -0.02)  # where the object is handed over (x, y)
HANDOVER_RISE = 0.22  # object centre this far above its resting height at the hand-over (m)
HANDOVER_OFFSET = np.array([-0.015, 0.0, 0.0])  # object centre relative to the ee frame in both grasps
# The cap grasp holds the bar like a pinch at its top corner: once presented, the bar swings in the hand until its
# centre of mass hangs below the pinch (about 16 deg when it arrives, 30-34 deg 1.2-2 s later). The right hand
# holds still for HANDOVER_SETTLE s before `present` ends, so the left hand's reference pose (read at the start of
# `receive`, in the seed and in every augmented demo) is one the bar keeps while the left hand reaches it.
HANDOVER_SETTLE = 1.2  # s
# `grasp` ends with the object lifted straight up (in the object's frame), so in augmented demos the world-frame
# `present` segment starts in the air: the bridge from the new grasp place to the seed's carry path then moves a
# lifted object instead of dragging it along the table (which knocked it out of the hand at poses 6-8 cm from the
# seed's).
HANDOVER_LIFT = 0.12  # m
HANDOVER_APPROACH = 0.12  # the left hand approaches from this far behind its grasp, along its palm normal (m)


def bimanual(env, keys_per_arm):
    """Interpolate each arm's keyframes; actions [T, 30] and subtask_end [T, 2, n_subtasks]."""
    actions, ends = [], []
    for arm, keys in enumerate(keys_per_arm):
        a, e = interpolate(*start(env, arm), keys, env.config.ctrl_dt, env.episode_steps)
        actions.append(a)
        ends.append(e)
    n_sub = max(e.shape[1] for e in ends)
    ends = [np.pad(e, ((0, 0), (0, n_sub - e.shape[1]))) for e in ends]
    return np.concatenate(actions, axis=1), np.stack(ends, axis=1)


SCRIPTS = {"grasp": grasp_script, "pour": pour_script, "lift": lift_script, "handover": handover_script}


def script(env, spec, perturb: Perturb | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Task-specific keyframes -> (actions [T, A], subtask_end [T, n_arms, n_subtasks]). `perturb(arm, keys)`
    varies each arm's keyframes before they are interpolated (None: the script exactly, as the seeds were recorded)."""
    if env.name not in SCRIPTS:
        raise ValueError(f"no seed script for task {env.name!r}; available: {sorted(SCRIPTS)}")
    return SCRIPTS[env.name](env, spec, perturb)


# ---------------------------------------------------------------------------------------------- human-like demos


@dataclass(frozen=True)
class HumanVariation:
    """How much an operator's repetitions of the script differ: each keyframe independently."""

    pos_std: float = 0.003
    """Std (m) of the Gaussian offset of every keyframe position, per axis."""
    rot_std_deg: float = 3.0
    """Std (degrees) of every keyframe orientation's random rotation, per axis (a rotation vector, world frame)."""
    timing_jitter: float = 0.15
    """Every keyframe's duration is scaled by a factor uniform in [1 - j, 1 + j]; a demo never runs longer than
    the script (longer totals are scaled back), so it always fits the episode."""


Perturb = Callable[[int, list[Key]], list[Key]]


@dataclass(frozen=True)
class KeyJitter:
    """A `Perturb`: the keyframes of one demo varied by `variation`. The noise of keyframe k of arm a depends only
    on (seed, a, k), so a script that builds its keyframes twice (Handover's two passes) varies them identically."""

    variation: HumanVariation
    seed: tuple[int, ...]

    def __call__(self, arm: int, keys: list[Key]) -> list[Key]:
        out = []
        for k, key in enumerate(keys):
            rng = np.random.default_rng([*self.seed, arm, k])
            rotvec = np.deg2rad(self.variation.rot_std_deg) * rng.standard_normal(3)
            noise_rot = np.asarray(geometry.mat_from_axis_angle(rotvec))
            scale = 1.0 + self.variation.timing_jitter * rng.uniform(-1.0, 1.0)
            out.append(dataclasses.replace(key, duration=key.duration * scale, pos=np.asarray(key.pos) + self.variation.pos_std * rng.standard_normal(3),
                                           rot=noise_rot @ np.asarray(key.rot)))
        total, jittered = sum(k.duration for k in keys), sum(k.duration for k in out)
        if jittered > total:  # the script's own length fits the episode; a slower operator is slowed no further
            out = [dataclasses.replace(k, duration=k.duration * total / jittered) for k in out]
        return out


@dataclass
class TeleopStats:
    """Attempts of the stand-in operator: `success_rate` is this data source's generation success rate."""

    attempts: int = 0
    successes: int = 0
    per_scene: dict[str, list[int]] = field(default_factory=dict)  # scene label -> [attempts, successes]

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0

    def to_dict(self) -> dict:
        return {"attempts": self.attempts, "successes": self.successes, "success_rate": self.success_rate, "per_scene": self.per_scene}


def _scene_label(spec: SceneSpec) -> str:
    return f"{spec.objects[0][1]}/{spec.env_id}/{spec.pose_id}"


def record_demos(task: str, specs: list[SceneSpec], num_wanted: int, *, variation: HumanVariation | None = HumanVariation(), seed: int = 0,
                 batch_size: int = 16, max_attempts: int | None = None, source: str = "teleop",
                 env_config: envs.EnvConfig | None = None) -> tuple[list, TeleopStats]:
    """`num_wanted` successful stand-in demos spread evenly over `specs` (at most ceil(num_wanted / len(specs)) per
    scene); returns (Episodes, TeleopStats).

    Rounds of attempts go to the scenes still short of their share, each attempt with its own keyframe variation
    (attempt j: KeyJitter(variation, (seed, j))); failed attempts are dropped and retried in the next round, until
    `max_attempts` (default 4 x num_wanted). Attempts run `batch_size` at a time per object topology (one
    compiled shape; a short batch is padded with copies of its first attempt, whose results are dropped).
    `env_config`: the simulation settings (None: the defaults, MJX-jax).
    """
    if num_wanted < 1 or batch_size < 1 or not specs:
        raise ValueError(f"record_demos needs scenes, num_wanted >= 1 and batch_size >= 1 (got {len(specs)}, {num_wanted}, {batch_size})")
    max_attempts = 4 * num_wanted if max_attempts is None else max_attempts
    share = -(-num_wanted // len(specs))
    got = [0] * len(specs)
    stats, episodes, attempt, round_ = TeleopStats(), [], 0, 0
    while len(episodes) < num_wanted and attempt < max_attempts:
        todo = [s for s in range(len(specs)) for _ in range(share - got[s])]  # one attempt per demo each scene still lacks
        todo = todo[: min(num_wanted - len(episodes), max_attempts - attempt)]
        index_of = {}
        for k, s in enumerate(todo):
            index_of.setdefault(specs[s], []).append((attempt + k, s))
        for objects, group in group_by_topology(task, [specs[s] for s in todo]).items():
            env = envs.make_cached(task, tuple(objects), env_config)
            jobs = [index_of[spec].pop(0) for spec in group]
            for start_ in range(0, len(jobs), batch_size):
                chunk = jobs[start_ : start_ + batch_size]
                scripted = [script(env, specs[s], KeyJitter(variation, (seed, j)) if variation else None) for j, s in chunk]
                actions = np.stack([a for a, _ in scripted])
                ends = np.stack([e for _, e in scripted])
                pad = batch_size - len(chunk)
                scenes = env.make_scenes([specs[s] for _, s in chunk] + [specs[chunk[0][1]]] * pad)
                _, traj = run_actions(env, scenes, np.concatenate([actions, np.repeat(actions[:1], pad, 0)]),
                                      jax.random.fold_in(jax.random.PRNGKey(seed), round_ * 1000 + start_))
                traj = jax.tree.map(lambda x, n=len(chunk): np.asarray(x)[:n], traj)
                success = traj.success[:, -1] & ~traj.nan.any(axis=1)
                eps = episodes_from_trajectory(env, traj, actions, [specs[s] for _, s in chunk], subtask_end=ends, source=source, seed=seed,
                                               keep=success)
                kept = [(j, s) for (j, s), ok in zip(chunk, success) if ok]
                episodes += [dataclasses.replace(ep, seed=int(seed) * 1_000_003 + j, extra={**ep.extra, "attempt": str(j)}) for ep, (j, _) in zip(eps, kept)]
                for (_, s), ok in zip(chunk, success):
                    got[s] += int(ok)
                    c = stats.per_scene.setdefault(_scene_label(specs[s]), [0, 0])
                    c[0] += 1
                    c[1] += int(ok)
                stats.attempts += len(chunk)
                stats.successes += int(success.sum())
                watchdog.beat(f"teleop stand-in {task}: {len(episodes)}/{num_wanted} demos, {stats.attempts} attempts")
        attempt += len(todo)
        round_ += 1
    return episodes[:num_wanted], stats


__all__ = ["HumanVariation", "Key", "KeyJitter", "TeleopStats", "interpolate", "record_demos", "script"]
