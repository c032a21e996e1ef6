"""Augmentation settings: the scenario set C_aug and the generator knobs (a frozen dataclass for tyro)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import tyro

from envs.base import EnvConfig


@dataclass(frozen=True)
class AugmentConfig:
    """C_aug (objects x environments x poses) plus how demos are generated.

    Empty `objects` / `env_ids` mean "the source demo's own"; empty `pose_ids` with `num_sampled_poses == 0`
    means the task's default catalog pose.
    """

    objects: tyro.conf.Suppress[tuple[tuple[str, tuple[str, ...]], ...]] = ()
    """Per task role, the catalog object ids to use: ((role, (id, ...)), ...). Scripts take it as role=id1,id2
    strings (`parse_object_sets`), which a nested-tuple flag cannot spell readably."""
    env_ids: tuple[str, ...] = ()
    """environments.json ids."""
    pose_ids: tuple[str, ...] = ()
    """poses.json ids of the task (spatial configurations)."""
    num_sampled_poses: int = 0
    """Extra poses sampled uniformly from the task's ranges (pose_id 'sampled'), seeded by the run's seed."""
    mode: Literal["grid", "sample"] = "grid"
    """grid: the full product objects x envs x poses, cycled in order; sample: each attempt draws one uniformly."""
    grid_start: int = 0
    """grid mode: the configuration (an index into the cycled list) that attempt 0 takes; attempt t takes
    (grid_start + t) mod the number of configurations. Runs that augment several sources' sets separately (the
    flywheel: one call per object) start each where the previous stopped, so that a few demos per call still spread
    over all environments and poses instead of each call repeating the list's first entries."""
    offset_range: int = 5
    """Random subtask-boundary offset per attempt, uniform in [-offset_range, offset_range] steps."""
    bridge_steps: int = 10
    """Interpolation steps from the current target to each subtask's first transformed pose."""
    action_noise: float = 0.0
    """Std (m) of Gaussian noise added to the commanded ee positions (seeded); the noisy command is recorded."""
    dart_noise: float = 0.0
    """DART-style perturbation (Laskey et al., 2017): stationary std (m) of a slowly varying offset of the executed
    end-effector positions (an Ornstein-Uhlenbeck process with correlation time `dart_steps`, seeded per attempt),
    while the recorded action stays the unperturbed target. The demos then hold states off the plan labelled with
    the plan, which is what a policy needs to steer back when its own closed-loop errors take it there; attempts
    the perturbation makes fail are dropped like any other. 0: off."""
    dart_steps: float = 20.0
    """Correlation time (control steps) of the `dart_noise` offset."""
    source_smoothing: int = 0
    """Centred moving-average window (steps, odd) over each source's end-effector and hand targets before they are
    replayed; 0 or 1: replayed as recorded. Policy rollouts as sources are jerkier than a seed (measured: 2.4 times
    the per-step action change, most of it in the hand and at chunk boundaries) and A_EP passes that on; A_EP
    re-simulates and keeps only successes, so a smoothing that breaks a grasp costs attempts, not data quality.
    Off by default: a 7-step window on the Grasp flywheel's iteration-2 rollouts lowered the next base's training
    loss (0.0072 -> 0.0051) but not its T_OEP success (0.205 -> 0.195; BENCHMARKS.md, session 22), nor on Lift's
    iteration 2 (loss 0.0197 -> 0.0124, T_OEP 1.0% -> 1.5%; session 29). The flywheel sets it for rollouts alone
    (`Preset.rollout_source_smoothing`); on sampled poses the Grasp run with 7 reached 53.5% at iteration 3 against
    46.5% (session 44), inside one base's training-seed spread."""
    min_held_steps: int = 0
    """An attempt counts as a success only if the task's success held for at least this many final steps
    (`Episode.extra["held_steps"]`); 0: success at the last step is enough. A demo that lifts the object just before
    the episode ends is a poor teacher for a policy that must finish within the same episode length."""
    source_selection: Literal["random", "nearest"] = "random"
    """Which source demo each attempt replays: random, or nearest by initial object poses."""
    sequential: tuple[tuple[int, int, int, int], ...] = ()
    """Sequential-constraint dependencies (arm, subtask, after_arm, after_subtask); empty = the env's
    `sequential_order` if it has one, else derived from its subtask names (see dexfly.augment.constraints)."""
    skip_source_wait: bool = True
    """A subtask that waits for another arm's subtask replays its source only from the step after that
    subtask's source end (the source's own wait is not replayed on top of the generated wait)."""
    keep_failed: bool = False
    """Also return failed attempts (success=False) instead of dropping them."""
    env: EnvConfig = field(default_factory=EnvConfig)


def check_smoothing_window(window, name: str = "source_smoothing") -> int:
    """`window` if it is a smoothing window (`AugmentConfig.source_smoothing`): 0 or 1 (off) or an odd number of
    steps; ValueError naming `name` otherwise (negative, even, or not an integer)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 0 or (window > 1 and window % 2 == 0):
        raise ValueError(f"{name} must be 0 or an odd window of steps, got {window!r}")
    return window


def parse_object_sets(entries: tuple[str, ...] | list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`role=id1,id2` strings (a flag's values) -> AugmentConfig.objects; ValueError on another shape."""
    out = []
    for entry in entries:
        role, sep, ids = entry.partition("=")
        if not sep or not role or not ids:
            raise ValueError(f"object sets look like role=id1,id2; got {entry!r}")
        out.append((role, tuple(i for i in ids.split(",") if i)))
    return tuple(out)


def with_counts(config: AugmentConfig, task: str, source_objects: tuple[tuple[str, str], ...], *, num_poses: int = 0,
                num_env_ids: int = 0, num_objects: int = 0) -> AugmentConfig:
    """Fill C_aug's empty id lists from counts: the first `num_poses` catalog poses of the task, the first
    `num_env_ids` catalog environments, and per role the first `num_objects` catalog objects of the source
    object's topology (role and task as the source's). Ids already set in `config` win over counts."""
    import dataclasses

    from dexfly.catalog import load_catalog

    cat = load_catalog()
    changes: dict = {}
    if not config.pose_ids and num_poses:
        changes["pose_ids"] = cat.poses_for(task).ids[:num_poses]
    if not config.env_ids and num_env_ids:
        changes["env_ids"] = tuple(e.id for e in cat.environments[:num_env_ids])
    if not config.objects and num_objects:
        objects = []
        for role, oid in source_objects:
            obj = cat.object(oid)
            same = [o.id for o in cat.filter_objects(task=task, role=obj.role) if o.topology == obj.topology]
            objects.append((role, tuple(same[:num_objects])))
        changes["objects"] = tuple(objects)
    return dataclasses.replace(config, **changes)
