"""Source demos prepared for generation: validation, padding, per-attempt plans and source selection."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from dexfly import geometry, layout
from dexfly.augment.config import AugmentConfig, check_smoothing_window
from dexfly.augment.constraints import dependency_arrays, env_sequential_order
from dexfly.augment.schedule import Plan
from dexfly.augment.segment import sample_offsets, segment_bounds, validate_source

_IDENTITY7 = np.array([0, 0, 0, 1, 0, 0, 0], np.float32)


@dataclass(frozen=True)
class SourceSet:
    """Validated sources, padded to a common length (the tail holds the last target)."""

    episodes: tuple
    ends: np.ndarray  # [n_src, n_arms, n_sub] subtask end steps
    lengths: np.ndarray  # [n_src]
    ee: np.ndarray  # [n_src, Ts, n_arms, 7]
    hand: np.ndarray  # [n_src, Ts, n_arms, 6]
    object_poses: np.ndarray  # [n_src, Ts, n_objects, 7]
    ref_idx: np.ndarray  # [n_arms, n_sub] int32
    has_ref: np.ndarray  # [n_arms, n_sub] bool


def smooth_targets(ee: np.ndarray, hand: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred moving average over time of one source's targets: ee [T, n_arms, 7] (pos, quat wxyz; quaternions
    sign-aligned to their predecessor, averaged and renormalised) and hand [T, n_arms, 6]. The ends are padded with
    the first and last target, so the start and the final hold stay where they were. window 0 or 1: unchanged;
    ValueError for a negative or even window."""
    if check_smoothing_window(window) <= 1:
        return ee, hand
    half = window // 2
    ee = np.array(ee, np.float64)
    q = ee[..., 3:]
    for t in range(1, len(q)):  # continuity: q and -q are one rotation; averaging needs one sign per run
        flip = np.sum(q[t] * q[t - 1], axis=-1) < 0
        q[t][flip] *= -1

    def average(x):
        padded = np.concatenate([np.repeat(x[:1], half, axis=0), x, np.repeat(x[-1:], half, axis=0)])
        c = np.cumsum(np.concatenate([np.zeros_like(padded[:1]), padded]), axis=0)
        return (c[window:] - c[:-window]) / window

    pos, quat = average(ee[..., :3]), average(q)
    quat /= np.linalg.norm(quat, axis=-1, keepdims=True)
    return np.concatenate([pos, quat], -1).astype(np.float32), average(np.asarray(hand, np.float64)).astype(np.float32)


def prepare_sources(sources, env, smoothing: int = 0) -> SourceSet:
    """Validated sources padded to a common length; `smoothing` (AugmentConfig.source_smoothing) smooths each
    source's targets first (`smooth_targets`)."""
    if not sources:
        raise ValueError("no source demos given")
    ends = np.stack([validate_source(ep, env, i) for i, ep in enumerate(sources)])
    lengths = np.array([ep.num_samples for ep in sources])
    ts = int(lengths.max())

    def pad(x):
        return np.concatenate([x, np.repeat(x[-1:], ts - len(x), axis=0)]) if len(x) < ts else x

    ref_idx = np.zeros(ends.shape[1:], np.int32)
    has_ref = np.zeros(ends.shape[1:], bool)
    for a, subs in enumerate(env.subtasks):
        for k, (_, role) in enumerate(subs):
            if role is not None:
                if role not in env.roles:
                    raise ValueError(f"{env.name}: subtask {subs[k][0]!r} of arm {a} references unknown role {role!r}")
                ref_idx[a, k], has_ref[a, k] = env.roles.index(role), True
    targets = [smooth_targets(ep.ee_target_pose, ep.hand_target, smoothing) for ep in sources]
    return SourceSet(
        episodes=tuple(sources),
        ends=ends,
        lengths=lengths,
        ee=np.stack([pad(ee) for ee, _ in targets]),
        hand=np.stack([pad(hand) for _, hand in targets]),
        object_poses=np.stack([pad(ep.object_poses) for ep in sources]),
        ref_idx=ref_idx,
        has_ref=has_ref,
    )


def _quat_angle(q0, q1):
    return 2.0 * np.arccos(np.clip(np.abs(np.sum(q0 * q1, -1)), 0.0, 1.0))


def select_source(src: SourceSet, caug: AugmentConfig, init_object_pose: np.ndarray, rng: np.random.Generator) -> int:
    """random: uniform; nearest: smallest sum over objects of |dpos| (m) + 0.1 * rotation angle (rad) between
    the source's initial object poses and the new scene's."""
    n = len(src.episodes)
    if caug.source_selection == "random":
        return int(rng.integers(n))
    if caug.source_selection == "nearest":
        first = src.object_poses[:, 0]  # [n_src, n_obj, 7]
        d = np.linalg.norm(first[..., :3] - init_object_pose[None, :, :3], axis=-1) + 0.1 * _quat_angle(first[..., 3:], init_object_pose[None, :, 3:])
        return int(np.argmin(d.sum(-1)))
    raise ValueError(f"unknown source_selection {caug.source_selection!r}; use 'random' or 'nearest'")


def make_plan(src: SourceSet, env, caug: AugmentConfig, s: int, offsets: np.ndarray, key, init_action: np.ndarray) -> dict:
    """Numpy arrays of one attempt's Plan (source `s`, boundary offsets [n_arms, n_sub])."""
    counts, dep_arm, dep_sub = plan_structure(env, caug.sequential)
    starts, lens = segment_bounds(src.ends[s], int(src.lengths[s]), offsets, counts)
    n_arms, n_sub = starts.shape
    if caug.skip_source_wait:
        starts, lens = skip_source_waits(starts, lens, dep_arm, dep_sub)
    ref_pose = np.where(
        src.has_ref[..., None],
        src.object_poses[s][starts, src.ref_idx],  # [n_arms, n_sub, 7]: reference object at the segment's first step
        _IDENTITY7,
    )
    a = layout.split_action(np.asarray(init_action), n_arms)
    init_pose = np.concatenate([a.pos, np.asarray(geometry.quat_from_rot6d(jnp.asarray(a.rot6d)))], -1)
    return dict(
        src_ee=src.ee[s], src_hand=src.hand[s], seg_start=starts.astype(np.int32), seg_len=lens.astype(np.int32),
        src_ref_pose=ref_pose.astype(np.float32), ref_idx=src.ref_idx, has_ref=src.has_ref,
        dep_arm=dep_arm, dep_sub=dep_sub, init_pose=init_pose.astype(np.float32),
        init_hand=a.hand.astype(np.float32), n_sub=counts.astype(np.int32), key=np.asarray(key),
    )


@functools.lru_cache(maxsize=32)
def plan_structure(env, sequential) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(subtask counts [n_arms], dep_arm [n_arms, n_sub], dep_sub [n_arms, n_sub]) of an env and explicit
    sequential dependencies (`AugmentConfig.sequential`): the same for every attempt, so validated and built
    once (read-only arrays)."""
    counts = subtask_counts(env)
    dep_arm, dep_sub = dependency_arrays(env.subtask_constraint, env.subtasks, sequential, env_sequential_order(env))
    for a in (counts, dep_arm, dep_sub):
        a.setflags(write=False)
    return counts, dep_arm, dep_sub


def subtask_counts(env) -> np.ndarray:
    """[n_arms] subtasks per arm (env.subtasks); coordination needs the same count on every arm."""
    counts = np.array([len(subs) for subs in env.subtasks], np.int64)
    if env.subtask_constraint == "coordination" and len(set(counts.tolist())) > 1:
        raise ValueError(f"{env.name}: the coordination constraint needs the same number of subtasks on every arm, "
                         f"got {counts.tolist()}")
    return counts


def skip_source_waits(starts, lens, dep_arm, dep_sub):
    """A subtask that waits for another arm's subtask starts, in the source, no earlier than the step after that
    subtask's source end: the source steps before it are the source's own wait (the arm holding while the
    other one finishes), which the generator already reproduces by holding. Without this the wait would be
    executed twice (e.g. Handover's right `release`, recorded from step 180 but idle until the left hand has
    received the object at 289). The segment keeps >= 1 step."""
    starts, lens = starts.copy(), lens.copy()
    for a, k in zip(*np.nonzero(dep_arm >= 0)):
        b, j = dep_arm[a, k], dep_sub[a, k]
        dep_end = starts[b, j] + lens[b, j] - 1
        last = starts[a, k] + lens[a, k] - 1
        new_start = min(max(starts[a, k], dep_end + 1), last)
        lens[a, k] = last - new_start + 1
        starts[a, k] = new_start
    return starts, lens


def stack_plans(plans: list[dict]) -> Plan:
    return Plan(**{k: jnp.asarray(np.stack([p[k] for p in plans])) for k in plans[0]})


def attempt_offsets(src: SourceSet, env, caug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    n_arms, n_sub = src.ends.shape[1:]
    return sample_offsets(rng, n_arms, n_sub, caug.offset_range, shared=env.subtask_constraint == "coordination")


def attempt_key(seed: int, attempt: int):
    return jax.random.fold_in(jax.random.PRNGKey(seed), attempt)
