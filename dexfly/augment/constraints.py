"""Dual-arm subtask constraints (DexMimicGen): which (arm, subtask) may start when.

- "none": every arm runs its own subtask schedule independently.
- "coordination" (e.g. Lift): subtask k of all arms starts at the same step (an arm that is ready first
  holds its last target until the others are ready) and every arm uses the same object transform (that of the
  first arm whose subtask has a reference object). Boundary offsets are shared across arms.
- "sequential" (e.g. Handover): an (arm, subtask) listed in the dependencies starts only once another
  (arm, subtask) has ended; until then it holds its last target.

Dependencies are `SequentialDep(arm, subtask, after_arm, after_subtask)` tuples on the augmentation config.
When none are given for a sequential task, `default_sequential_deps` derives them from the env's subtask
names: the subtask that receives the object (name containing one of RECEIVE_WORDS, e.g. "receive") waits
until the other arm's hand-over subtask (name containing one of HANDOVER_WORDS, e.g. "handover") ends.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

CONSTRAINTS = ("none", "coordination", "sequential")
RECEIVE_WORDS = ("receive", "take", "regrasp", "catch")
HANDOVER_WORDS = ("handover", "hand_over", "give", "transfer", "pass")


class SequentialDep(NamedTuple):
    """(arm, subtask) starts only after (after_arm, after_subtask) has ended."""

    arm: int
    subtask: int
    after_arm: int
    after_subtask: int


def default_sequential_deps(subtasks) -> tuple[SequentialDep, ...]:
    """Handover default from the env's subtask names (see module doc); ValueError if none can be found."""
    deps = []
    for a, subs in enumerate(subtasks):
        for k, (name, _) in enumerate(subs):
            if any(w in name.lower() for w in RECEIVE_WORDS):
                for b, other in enumerate(subtasks):
                    if b == a:
                        continue
                    for j, (oname, _) in enumerate(other):
                        if any(w in oname.lower() for w in HANDOVER_WORDS):
                            deps.append(SequentialDep(a, k, b, j))
    if not deps:
        names = [[n for n, _ in subs] for subs in subtasks]
        raise ValueError(
            f"sequential constraint: cannot derive which subtask waits for which from subtask names {names}; "
            f"name them with {RECEIVE_WORDS} / {HANDOVER_WORDS} or pass AugmentConfig.sequential explicitly"
        )
    return tuple(deps)


def dependency_arrays(constraint: str, subtasks, deps) -> tuple[np.ndarray, np.ndarray]:
    """-> (dep_arm, dep_sub) int32 [n_arms, n_sub]; -1 where an (arm, subtask) waits for nothing."""
    if constraint not in CONSTRAINTS:
        raise ValueError(f"unknown subtask constraint {constraint!r}; use one of {CONSTRAINTS}")
    n_arms, n_sub = len(subtasks), max(len(s) for s in subtasks)
    dep_arm = -np.ones((n_arms, n_sub), np.int32)
    dep_sub = -np.ones((n_arms, n_sub), np.int32)
    if constraint != "sequential":
        return dep_arm, dep_sub
    deps = tuple(SequentialDep(*d) for d in deps) if deps else default_sequential_deps(subtasks)
    for d in deps:
        for arm, sub in ((d.arm, d.subtask), (d.after_arm, d.after_subtask)):
            if not (0 <= arm < n_arms and 0 <= sub < len(subtasks[arm])):
                raise ValueError(f"sequential dependency {tuple(d)} names (arm {arm}, subtask {sub}), which this task does not have")
        if d.arm == d.after_arm:
            raise ValueError(f"sequential dependency {tuple(d)} must name two different arms")
        dep_arm[d.arm, d.subtask] = d.after_arm
        dep_sub[d.arm, d.subtask] = d.after_subtask
    return dep_arm, dep_sub
