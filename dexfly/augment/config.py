"""Augmentation settings: the scenario set C_aug and the generator knobs (a frozen dataclass for tyro)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from envs.base import EnvConfig


@dataclass(frozen=True)
class AugmentConfig:
    """C_aug (objects x environments x poses) plus how demos are generated.

    Empty `objects` / `env_ids` mean "the source demo's own"; empty `pose_ids` with `num_sampled_poses == 0`
    means the task's default catalog pose.
    """

    objects: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Per task role, the catalog object ids to use: ((role, (id, ...)), ...)."""
    env_ids: tuple[str, ...] = ()
    """environments.json ids."""
    pose_ids: tuple[str, ...] = ()
    """poses.json ids of the task (spatial configurations)."""
    num_sampled_poses: int = 0
    """Extra poses sampled uniformly from the task's ranges (pose_id 'sampled'), seeded by the run's seed."""
    mode: Literal["grid", "sample"] = "grid"
    """grid: the full product objects x envs x poses, cycled in order; sample: each attempt draws one uniformly."""
    offset_range: int = 5
    """Random subtask-boundary offset per attempt, uniform in [-offset_range, offset_range] steps."""
    bridge_steps: int = 10
    """Interpolation steps from the current target to each subtask's first transformed pose."""
    action_noise: float = 0.0
    """Std (m) of Gaussian noise added to the commanded ee positions (seeded)."""
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
