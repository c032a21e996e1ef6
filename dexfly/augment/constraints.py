"""Dual-arm subtask constraints (DexMimicGen): which (arm, subtask) may start when.

- "none": every arm runs its own subtask schedule independently.
- "coordination" (e.g. Lift): subtask k of all arms starts at the same step (an arm that is ready first
  holds its last target until the others are ready) and every arm uses the same object transform (that of the
  first arm whose subtask has a reference object). Boundary offsets are shared across arms.
- "sequential" (e.g. Handover): an (arm, subtask) listed in the dependencies starts only once another
  (arm, subtask) has ended; until then it holds its last target.

Dependencies are `SequentialDep(arm, subtask, after_arm, after_subtask)` tuples. Where they come from, first
match wins (`resolve_sequential_deps`):
  1. `AugmentConfig.sequential` (explicit);
  2. the env class's `sequential_order = (((arm, subtask), (after_arm, after_subtask)), ...)` (Handover:
     left `receive` after right `present`, right `release` after left `receive`);
  3. `default_sequential_deps`, from the env's subtask names: the subtask that receives the object (name
     containing one of RECEIVE_WORDS, e.g. "receive") waits until the other arm's hand-over subtask (name
     containing one of HANDOVER_WORDS, e.g. "handover") ends; ValueError if the names say nothing.

Arms may have different subtask counts (`env.subtasks[arm]`); arrays are padded to the largest count and the
padding never waits for anything.
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


def deps_from_order(order) -> tuple[SequentialDep, ...]:
    """An env's `sequential_order` (((arm, subtask), (after_arm, after_subtask)), ...) -> SequentialDeps."""
    deps = []
    for entry in order:
        try:
            (arm, sub), (after_arm, after_sub) = entry
        except (TypeError, ValueError):
            raise ValueError(f"sequential_order entries look like ((arm, subtask), (after_arm, after_subtask)); got {entry!r}") from None
        deps.append(SequentialDep(int(arm), int(sub), int(after_arm), int(after_sub)))
    return tuple(deps)


def resolve_sequential_deps(subtasks, explicit=(), env_order=None) -> tuple[SequentialDep, ...]:
    """Explicit deps (AugmentConfig.sequential) if any, else the env's `sequential_order`, else the name default."""
    if explicit:
        return tuple(SequentialDep(*d) for d in explicit)
    if env_order:
        return deps_from_order(env_order)
    return default_sequential_deps(subtasks)


def env_sequential_order(env):
    """The env's (class) `sequential_order`, or None."""
    return getattr(type(env), "sequential_order", None) or getattr(env, "sequential_order", None)


def dependency_arrays(constraint: str, subtasks, deps, env_order=None) -> tuple[np.ndarray, np.ndarray]:
    """-> (dep_arm, dep_sub) int32 [n_arms, n_sub]; -1 where an (arm, subtask) waits for nothing.

    `deps`: explicit SequentialDep-like tuples (may be empty); `env_order`: the env's `sequential_order`."""
    if constraint not in CONSTRAINTS:
        raise ValueError(f"unknown subtask constraint {constraint!r}; use one of {CONSTRAINTS}")
    n_arms, n_sub = len(subtasks), max(len(s) for s in subtasks)
    dep_arm = -np.ones((n_arms, n_sub), np.int32)
    dep_sub = -np.ones((n_arms, n_sub), np.int32)
    if constraint != "sequential":
        return dep_arm, dep_sub
    deps = resolve_sequential_deps(subtasks, deps, env_order)
    for d in deps:
        for arm, sub in ((d.arm, d.subtask), (d.after_arm, d.after_subtask)):
            if not (0 <= arm < n_arms and 0 <= sub < len(subtasks[arm])):
                raise ValueError(f"sequential dependency {tuple(d)} names (arm {arm}, subtask {sub}), which this task does not have")
        if d.arm == d.after_arm:
            raise ValueError(f"sequential dependency {tuple(d)} must name two different arms")
        if dep_arm[d.arm, d.subtask] >= 0 and (dep_arm[d.arm, d.subtask], dep_sub[d.arm, d.subtask]) != (d.after_arm, d.after_subtask):
            raise ValueError(f"sequential dependency {tuple(d)}: (arm {d.arm}, subtask {d.subtask}) already waits for "
                             f"(arm {dep_arm[d.arm, d.subtask]}, subtask {dep_sub[d.arm, d.subtask]}); one dependency per subtask")
        dep_arm[d.arm, d.subtask] = d.after_arm
        dep_sub[d.arm, d.subtask] = d.after_subtask
    _check_acyclic(subtasks, dep_arm, dep_sub)
    return dep_arm, dep_sub


def _check_acyclic(subtasks, dep_arm, dep_sub) -> None:
    """ValueError if the dependencies (plus each arm's own subtask order) can never all be satisfied (a cycle:
    the generator would hold both arms forever)."""
    nodes = [(a, k) for a, subs in enumerate(subtasks) for k in range(len(subs))]
    # edge u -> v: v cannot start before u has ended
    preds = {(a, k): ([(a, k - 1)] if k > 0 else []) + ([(int(dep_arm[a, k]), int(dep_sub[a, k]))] if dep_arm[a, k] >= 0 else [])
             for a, k in nodes}
    state: dict = {}

    def visit(n, path):
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ValueError(f"sequential dependencies form a cycle through (arm, subtask) {path + [n]}; no order can satisfy them")
        state[n] = 1
        for p in preds[n]:
            visit(p, path + [n])
        state[n] = 2

    for n in nodes:
        visit(n, [])
