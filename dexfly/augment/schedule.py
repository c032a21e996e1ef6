"""The per-step action generator: bridges, transformed subtask segments, constraints (pure JAX).

One attempt is described by a `Plan` (arrays; vmap over attempts). `gen_step` is called once per control
step with the CURRENT simulated object poses and returns the action and the subtask-end signals of the
generated demo. Per arm, the generator runs its subtasks in order; each subtask is

  1. started (when its constraint allows it): the object transform ``T_obj_now @ inv(T_obj_src)`` is
     computed from the live object pose of the subtask's reference object at this step and the source
     object pose at the source segment's first step (identity when the subtask has no reference object);
  2. a bridge of `bridge_steps` steps from the current target to the first transformed pose (linear
     position, slerp rotation, linear hand targets);
  3. the transformed source segment (ee poses transformed, hand targets replayed), one source step per step.

An arm that is waiting to start, or that has finished its last subtask (arm a has `plan.n_sub[a]` subtasks;
the rest of the [n_arms, max n_sub] arrays is padding), holds its last target. A subtask's
end signal turns on at the step that executes its last source step. Optional Gaussian noise (metres) is added
to the commanded positions. Optional DART-style perturbation (`dart_noise`): the executed end-effector positions
are offset by a slowly varying random drift (an Ornstein-Uhlenbeck process kept in the carry) while the recorded
action stays the unperturbed target, so the demos show states off the plan labelled with the way back to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dexfly import geometry, layout
from dexfly.augment.transform import apply_transform, relative_transform


@dataclass(frozen=True)
class GenStatic:
    """Compile-time settings of the generator."""

    bridge_steps: int = 10
    action_noise: float = 0.0
    constraint: str = "none"
    dart_noise: float = 0.0  # stationary std (m) of the executed-position drift; 0: off
    dart_steps: float = 20.0  # its correlation time (control steps)


@struct.dataclass
class Plan:
    """One attempt (leading batch axis when batched)."""

    src_ee: jax.Array  # [Ts, n_arms, 7] source ee target poses
    src_hand: jax.Array  # [Ts, n_arms, 6] source hand targets
    seg_start: jax.Array  # [n_arms, n_sub] int32 first source step of each segment
    seg_len: jax.Array  # [n_arms, n_sub] int32 source steps of each segment
    src_ref_pose: jax.Array  # [n_arms, n_sub, 7] source pose of the reference object at the segment's first step
    ref_idx: jax.Array  # [n_arms, n_sub] int32 index of the reference object (env.roles order)
    has_ref: jax.Array  # [n_arms, n_sub] bool
    dep_arm: jax.Array  # [n_arms, n_sub] int32 (-1: no dependency)
    dep_sub: jax.Array  # [n_arms, n_sub] int32
    init_pose: jax.Array  # [n_arms, 7] target before the first step (the home ee pose)
    init_hand: jax.Array  # [n_arms, 6]
    n_sub: jax.Array  # [n_arms] int32 subtasks of each arm (columns beyond are padding, never run)
    key: jax.Array  # PRNG key for the action noise


@struct.dataclass
class Carry:
    k: jax.Array  # [n_arms] current subtask
    local: jax.Array  # [n_arms] steps since the current subtask started (bridge included)
    started: jax.Array  # [n_arms] bool
    finished: jax.Array  # [n_arms] bool
    tx: jax.Array  # [n_arms, 4, 4] object transform of the current subtask
    from_pose: jax.Array  # [n_arms, 7] bridge start
    from_hand: jax.Array  # [n_arms, 6]
    last_pose: jax.Array  # [n_arms, 7]
    last_hand: jax.Array  # [n_arms, 6]
    done: jax.Array  # [n_arms, n_sub] bool: subtask ended
    drift: jax.Array  # [n_arms, 3] DART offset of the executed ee positions (m); zeros when dart_noise is 0


def init_carry(plan: Plan) -> Carry:
    n_arms, n_sub = plan.seg_start.shape
    return Carry(
        k=jnp.zeros(n_arms, jnp.int32),
        local=jnp.zeros(n_arms, jnp.int32),
        started=jnp.zeros(n_arms, bool),
        finished=jnp.zeros(n_arms, bool),
        tx=jnp.broadcast_to(jnp.eye(4, dtype=jnp.float32), (n_arms, 4, 4)),
        from_pose=plan.init_pose,
        from_hand=plan.init_hand,
        last_pose=plan.init_pose,
        last_hand=plan.init_hand,
        done=jnp.zeros((n_arms, n_sub), bool),
        drift=jnp.zeros((n_arms, 3), jnp.float32),
    )


def pose_hand_to_action(pose, hand):
    """[n_arms, 7], [n_arms, 6] -> flat action [n_arms * 15] (`dexfly.layout.join_action`)."""
    rot6d = geometry.rot6d_from_mat(geometry.quat_to_mat(pose[:, 3:]))
    return layout.join_action(pose[:, :3], rot6d, hand)


def can_start(static: GenStatic, plan: Plan, c: Carry) -> jax.Array:
    """[n_arms] bool: arms whose next subtask starts at this step."""
    arms = jnp.arange(c.k.shape[0])
    want = ~c.started & ~c.finished
    if static.constraint == "coordination":
        same = c.k[None, :] == c.k[:, None]  # [a, b]
        ok = c.finished[None, :] | (want[None, :] & same)
        return want & jnp.all(ok, axis=1)
    if static.constraint == "sequential":
        da, ds = plan.dep_arm[arms, c.k], plan.dep_sub[arms, c.k]
        ok = (da < 0) | c.done[jnp.clip(da, 0), jnp.clip(ds, 0)]
        return want & ok
    return want


def gen_step(static: GenStatic, plan: Plan, c: Carry, obj_now: jax.Array, t: jax.Array):
    """One control step: (carry, live object poses [n_objects, 7], step index) -> (carry, action, signals).

    action: the demo's action [n_arms * 15] (what is recorded; with `dart_noise`, execute
    `executed_action(action, carry)` instead). signals: [n_arms, n_sub] bool, subtask-end flags after this step.
    """
    n_arms, n_sub = plan.seg_start.shape
    ts = plan.src_ee.shape[0]
    arms = jnp.arange(n_arms)
    nb = static.bridge_steps

    start_now = can_start(static, plan, c)
    k = c.k
    has = plan.has_ref[arms, k]
    t_new = relative_transform(obj_now[plan.ref_idx[arms, k]], plan.src_ref_pose[arms, k])
    t_new = jnp.where(has[:, None, None], t_new, jnp.eye(4, dtype=t_new.dtype))
    if static.constraint == "coordination":
        lead = jnp.argmax(has)  # first arm whose subtask has a reference object (arm 0 if none)
        t_new = jnp.broadcast_to(t_new[lead], t_new.shape)
    tx = jnp.where(start_now[:, None, None], t_new, c.tx)
    local = jnp.where(start_now, 0, c.local)
    started = c.started | start_now
    from_pose = jnp.where(start_now[:, None], c.last_pose, c.from_pose)
    from_hand = jnp.where(start_now[:, None], c.last_hand, c.from_hand)

    start = plan.seg_start[arms, k]
    length = plan.seg_len[arms, k]
    j = jnp.clip(local - nb, 0, length - 1)
    idx = jnp.clip(start + j, 0, ts - 1)
    seg_pose = apply_transform(tx, plan.src_ee[idx, arms])
    seg_hand = plan.src_hand[idx, arms]
    if nb > 0:
        first_pose = apply_transform(tx, plan.src_ee[start, arms])
        first_hand = plan.src_hand[start, arms]
        alpha = jnp.minimum((local + 1).astype(jnp.float32) / nb, 1.0)
        br_pos = from_pose[:, :3] + alpha[:, None] * (first_pose[:, :3] - from_pose[:, :3])
        br_quat = geometry.quat_slerp(from_pose[:, 3:], first_pose[:, 3:], alpha)
        br_hand = from_hand + alpha[:, None] * (first_hand - from_hand)
        in_bridge = (local < nb)[:, None]
        pose = jnp.where(in_bridge, jnp.concatenate([br_pos, br_quat], -1), seg_pose)
        hand = jnp.where(in_bridge, br_hand, seg_hand)
    else:
        pose, hand = seg_pose, seg_hand
    pose = jnp.where(started[:, None], pose, c.last_pose)
    hand = jnp.where(started[:, None], hand, c.last_hand)

    local = local + started.astype(jnp.int32)
    seg_done = started & (local >= nb + length)
    done = c.done | (seg_done[:, None] & (jnp.arange(n_sub)[None, :] == k[:, None]))
    last = k + 1 >= plan.n_sub
    finished = c.finished | (seg_done & last)
    k = jnp.where(seg_done & ~last, k + 1, k)
    started = started & ~seg_done
    drift = c.drift
    if static.dart_noise > 0:
        rho = float(np.exp(-1.0 / static.dart_steps))
        kick = jax.random.normal(jax.random.fold_in(jax.random.fold_in(plan.key, t), 1), (n_arms, 3))
        drift = rho * drift + float(np.sqrt(1.0 - rho**2)) * static.dart_noise * kick
    c = Carry(k=k, local=local, started=started, finished=finished, tx=tx, from_pose=from_pose,
              from_hand=from_hand, last_pose=pose, last_hand=hand, done=done, drift=drift)

    cmd = pose
    if static.action_noise > 0:
        noise = static.action_noise * jax.random.normal(jax.random.fold_in(plan.key, t), (n_arms, 3))
        cmd = pose.at[:, :3].add(noise)
    return c, pose_hand_to_action(cmd, hand), done


def executed_action(action: jax.Array, c: Carry) -> jax.Array:
    """The action to execute for a generated `action` [n_arms * 15]: its end-effector positions offset by the
    carry's DART drift (identical when `dart_noise` is 0)."""
    a = layout.split_action(action, c.drift.shape[0])
    return layout.join_action(a.pos + c.drift, a.rot6d, a.hand)


def generate_open_loop(static: GenStatic, plan: Plan, object_poses: jax.Array):
    """Scan the generator over T steps with given object poses [T, n_objects, 7] (no physics; for tests and
    inspection). Returns (actions [T, A], signals [T, n_arms, n_sub])."""
    def body(c, x):
        obj, t = x
        c, a, s = gen_step(static, plan, c, obj, t)
        return c, (a, s)

    T = object_poses.shape[0]
    _, (actions, signals) = jax.lax.scan(body, init_carry(plan), (object_poses, jnp.arange(T)))
    return actions, signals
