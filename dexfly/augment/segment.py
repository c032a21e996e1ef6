"""Segmentation of a source demo into object-centric subtasks at its `subtask_end` signals.

`subtask_end[t, arm, k]` is 0 before and 1 from the step where subtask k of that arm ends (the first 0 -> 1
edge; a 1 at t = 0 counts as an edge at 0). Subtask k of an arm spans source steps
``[end[k-1] + 1, end[k]]`` (``end[-1] = -1``); the *last* subtask always runs to the end of the source demo
(its tail, e.g. the final hold, is part of it). Every inner boundary is moved by a random offset per attempt
(clipped so that each segment keeps at least one step and the order is preserved).

Arms may have different subtask counts (`counts[arm]`, from `env.subtasks`): the signal array has
max(counts) columns and arm a uses its first counts[a] columns; the rest are padding (ignored, end step -1,
segment start T - 1 and length 1, never executed).
"""

from __future__ import annotations

import json

import numpy as np


def subtask_end_steps(subtask_end: np.ndarray, counts=None, *, where: str = "source") -> np.ndarray:
    """[T, n_arms, n_sub] signals -> [n_arms, n_sub] step of each subtask's first 0 -> 1 edge.

    `counts[arm]`: subtasks of that arm (default: all columns); columns beyond it are ignored (-1).
    Raises ValueError if there are no subtasks or a subtask never ends.
    """
    s = np.asarray(subtask_end)
    if s.ndim != 3:
        raise ValueError(f"{where}: subtask_end must be [T, n_arms, n_subtasks], got shape {s.shape}")
    T, n_arms, n_sub = s.shape
    if n_sub == 0:
        raise ValueError(f"{where}: has no subtask signals (subtask_end has n_subtasks = 0); augmentation needs "
                         "per-subtask end signals (datagen/subtask_end)")
    counts = _counts(counts, n_arms, n_sub, where)
    used = np.arange(n_sub)[None, :] < counts[:, None]  # [n_arms, n_sub]
    on = s > 0
    prev = np.concatenate([np.zeros((1, n_arms, n_sub), bool), on[:-1]], axis=0)
    edge = on & ~prev
    has = edge.any(axis=0)
    if not has[used].all():
        missing = [(int(a), int(k)) for a, k in zip(*np.nonzero(~has & used))]
        raise ValueError(f"{where}: subtask signal(s) without a 0 -> 1 edge for (arm, subtask) {missing}; "
                         "cannot find where those subtasks end")
    steps = np.where(used, np.argmax(edge, axis=0), -1).astype(np.int64)
    for a in range(n_arms):
        if np.any(np.diff(steps[a, : counts[a]]) <= 0):
            raise ValueError(f"{where}: subtask ends of arm {a} are not strictly increasing: {steps[a].tolist()}")
    return steps


def _counts(counts, n_arms: int, n_sub: int, where: str = "source") -> np.ndarray:
    if counts is None:
        return np.full(n_arms, n_sub, np.int64)
    counts = np.asarray(counts, np.int64)
    if counts.shape != (n_arms,) or (counts < 1).any() or (counts > n_sub).any():
        raise ValueError(f"{where}: per-arm subtask counts {counts.tolist()} do not fit {n_arms} arm(s) x {n_sub} signal column(s)")
    return counts


def segment_bounds(ends: np.ndarray, T: int, offsets: np.ndarray | None = None, counts=None) -> tuple[np.ndarray, np.ndarray]:
    """Subtask ends [n_arms, n_sub] (+ offsets, same shape) -> (starts, lengths) [n_arms, n_sub] in source steps.

    The last subtask of each arm (counts[arm] - 1; default n_sub - 1) runs to T - 1; inner ends are shifted by
    the offsets and clipped so every segment has >= 1 step. Padding subtasks get start T - 1, length 1.
    """
    ends = np.asarray(ends, np.int64)
    n_arms, n_sub = ends.shape
    counts = _counts(counts, n_arms, n_sub)
    off = np.zeros_like(ends) if offsets is None else np.asarray(offsets, np.int64)
    starts = np.full_like(ends, T - 1)
    lens = np.ones_like(ends)
    for a in range(n_arms):  # host-side, tiny (n_arms x n_sub)
        prev_end = -1
        n = int(counts[a])
        for k in range(n):
            if k == n - 1:
                e = T - 1
            else:
                hi = T - 1 - (n - 1 - k)
                e = int(np.clip(ends[a, k] + off[a, k], prev_end + 1, hi))
            starts[a, k] = prev_end + 1
            lens[a, k] = e - prev_end
            prev_end = e
    return starts, lens


def sample_offsets(rng: np.random.Generator, n_arms: int, n_sub: int, offset_range: int, shared: bool) -> np.ndarray:
    """Integer boundary offsets uniform in [-offset_range, offset_range] per (arm, subtask); `shared` uses
    one offset per subtask for all arms (coordinated subtasks end together)."""
    if offset_range < 0:
        raise ValueError(f"offset_range must be >= 0, got {offset_range}")
    if shared:
        return np.broadcast_to(rng.integers(-offset_range, offset_range + 1, size=(1, n_sub)), (n_arms, n_sub)).copy()
    return rng.integers(-offset_range, offset_range + 1, size=(n_arms, n_sub))


def episode_roles(ep) -> list[str] | None:
    roles = ep.extra.get("roles") if ep.extra else None
    if roles is None:
        return None
    return json.loads(roles) if isinstance(roles, str) else list(roles)


def validate_source(ep, env, index: int = 0) -> np.ndarray:
    """Check that a source Episode belongs to `env`'s task and has usable subtask signals.

    Returns its subtask end steps [n_arms, n_sub]. Raises ValueError naming the problem.
    """
    where = f"source demo {index}"
    task = env.name
    roles = episode_roles(ep)
    if roles is not None and tuple(roles) != tuple(env.roles):
        raise ValueError(f"{where} is not a {task!r} demo: its object roles are {roles}, {task!r} has {list(env.roles)}")
    if len(ep.object_ids) != len(env.roles):
        raise ValueError(f"{where} is not a {task!r} demo: it has {len(ep.object_ids)} objects {list(ep.object_ids)}, "
                         f"{task!r} has roles {list(env.roles)}")
    for role, oid in zip(env.roles, ep.object_ids):
        obj = env.catalog.object(oid)
        if task not in obj.tasks or obj.role != env.role_kind(role):
            raise ValueError(f"{where} is not a {task!r} demo: object {oid!r} (tasks {list(obj.tasks)}) cannot fill role {role!r}")
    if ep.actions.shape[1] != env.action_dim or ep.n_arms != len(env.arms):
        raise ValueError(f"{where} is not a {task!r} demo: action dim {ep.actions.shape[1]} / {ep.n_arms} arm(s), "
                         f"{task!r} has {env.action_dim} / {len(env.arms)}")
    counts = [len(subs) for subs in env.subtasks]
    se = np.asarray(ep.subtask_end)
    if se.ndim == 3 and se.shape[2] > 0 and se.shape[2] != max(counts):
        a = int(np.argmax(counts))
        raise ValueError(f"{where}: has {se.shape[2]} subtask signal column(s), but {task!r} declares {max(counts)} subtasks "
                         f"for arm {a} {[n for n, _ in env.subtasks[a]]} (per-arm counts {counts})")
    return subtask_end_steps(se, counts, where=where)
