"""Settings of the residual policy and its PPO training (a frozen dataclass; scripts nest it as flags)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ResidualConfig:
    """The residual policy (a Gaussian MLP correcting the frozen base action every step) and PPO.

    The combined action is, per arm: position + alpha_pos * d_pos (m); rotation exp(alpha_rot * d_rot) applied to
    the base rotation (world frame, rad, re-orthonormalised); hand targets + alpha_hand * d_hand * (joint range),
    clipped to the range. d_* in [-1, 1] are the residual's tanh-squashed outputs.
    """

    # ---- the residual and how it combines with the base
    alpha_pos: float = 0.05
    """Largest position correction (m). The reachable workspace is ~0.5-1 m across; 5 cm covers the grasp
    offsets that other object sizes need (a cube of 5 cm against boxes and cans of 6-12 cm)."""
    alpha_rot: float = 0.3
    """Largest rotation correction (rad, ~17 deg, about 0.1 of a half turn)."""
    alpha_hand: float = 0.1
    """Largest hand-target correction as a fraction of each hand joint's range."""
    obs_base_action: bool = False
    """Also feed the base action of the step to the residual (as ResiP does). Measured paired on a Grasp base: +8.8
    points with it against +10.0 without (BENCHMARKS.md, session 38), so no preset sets it."""
    obs_geometry: bool = False
    """Also feed each object's bounding-box half-extents (m) to the residual."""
    hidden: tuple[int, ...] = (256, 256)
    """Policy MLP widths."""
    value_hidden: tuple[int, ...] = (256, 256, 256)
    init_noise_std: float = 0.5
    """Initial std of the residual's pre-tanh Gaussian."""
    hold_steps: int = 1
    """Control steps each residual decision is held: every `hold_steps` steps the residual observes, samples a
    correction and applies it unchanged until the next decision, and PPO's time step is the decision (its reward the
    hold's summed reward). 1: a new correction every step, as in the paper."""
    # ---- progressive exploration (the paper's Eq. 1, from Policy Decorator)
    explore_steps: int = 200_000
    """T of epsilon = min(env_steps / T, 1): env steps over which the residual takes over from the base."""
    # ---- the frozen base during RL
    base_ddim_steps: int = 0
    """DDIM steps of the base policy during RL rollouts (0: the checkpoint's). Fewer is faster but changes the base the
    residual learns to correct: a Grasp base scored 0.033 at 4 steps against 0.283 at its own 10 on the same 60
    episodes, and a residual trained against the 4-step base lowered the 10-step one's T_O from 0.20 to 0.10
    (BENCHMARKS.md). Keep 0 unless the fewer steps are measured to hold the base's success."""
    # ---- PPO
    num_envs: int = 32
    """Parallel episodes per topology group in each update (when `envs_per_object` is 0)."""
    envs_per_object: int = 0
    """Parallel episodes per object in each update: a topology group of k objects runs k x this many, so every object
    gets the same share of the episodes. 0: `num_envs` per group, whatever it holds (6 boxes then get the episodes of
    one can group of 2, and each box a third of a can's)."""
    total_steps: int = 1_000_000
    """Env steps of training (all groups together)."""
    update_epochs: int = 4
    num_minibatches: int = 4
    """Minibatches per epoch, split along the env axis (each keeps whole episodes)."""
    lr: float = 3e-4
    """Adam's learning rate; with `desired_kl`, the first one, adapted from there."""
    desired_kl: float = 0.0
    """0: a fixed `lr`. Otherwise the learning rate adapts after every minibatch to keep the policy's KL from the
    rollout's near this (divided by 1.5 above twice it, multiplied by 1.5 below half of it, within
    [`lr_bounds`]), as legged-robot PPO does (rsl_rl). Why: Adam's step moves the residual's mean by about the same
    amount whatever the noise, so with a small `init_noise_std` (0.05) a fixed `lr` that suits one task moves
    another's policy several stds per update (Lift's 24 action dims at 1e-4: KL 0.1-2.3 per update, where PPO
    usually runs near 0.01-0.02; BENCHMARKS.md, session 27)."""
    lr_bounds: tuple[float, float] = (1e-6, 1e-2)
    """Range of the adapted learning rate (with `desired_kl`)."""
    max_grad_norm: float = 1.0
    discount: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    entropy_cost: float = 1e-3
    vf_coef: float = 0.5
    reward_scaling: float = 0.1
    scene_pool: int = 256
    """Scenes sampled per topology group (objects x environments x continuous poses); every episode draws one."""
    seed: int = 0
    explore_draw: Literal["episode"] = "episode"
    """Whether the residual runs is drawn once per episode per env (see docs/residual_policy.md for why)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "value_hidden", tuple(int(h) for h in self.value_hidden))
        object.__setattr__(self, "lr_bounds", tuple(float(b) for b in self.lr_bounds))
        if self.desired_kl < 0:
            raise ValueError(f"desired_kl must be >= 0 (0: a fixed lr), got {self.desired_kl}")
        if self.desired_kl and (len(self.lr_bounds) != 2 or not 0 < self.lr_bounds[0] <= self.lr <= self.lr_bounds[1]):
            raise ValueError(f"lr_bounds must be (low, high) with 0 < low <= lr={self.lr} <= high, got {self.lr_bounds}")
        for name in ("alpha_pos", "alpha_rot", "alpha_hand"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("num_envs", "update_epochs", "num_minibatches", "scene_pool", "explore_steps", "hold_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.envs_per_object and self.num_envs % self.num_minibatches:
            raise ValueError(f"num_envs={self.num_envs} must be divisible by num_minibatches={self.num_minibatches}")
        if self.envs_per_object < 0:
            raise ValueError(f"envs_per_object must be >= 0, got {self.envs_per_object}")
        if self.base_ddim_steps < 0:
            raise ValueError(f"base_ddim_steps must be >= 0, got {self.base_ddim_steps}")

    def group_envs(self, objects_per_group: tuple[int, ...]) -> tuple[int, ...]:
        """Parallel episodes of each topology group in an update, from how many objects each group holds."""
        if not self.envs_per_object:
            return tuple(self.num_envs for _ in objects_per_group)
        sizes = tuple(self.envs_per_object * k for k in objects_per_group)
        if sum(sizes) % self.num_minibatches:
            raise ValueError(f"envs_per_object={self.envs_per_object} gives {sum(sizes)} episodes per update ({' + '.join(map(str, sizes))} "
                             f"over the topology groups), not divisible by num_minibatches={self.num_minibatches}")
        return sizes

    def replace(self, **changes: Any) -> ResidualConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"], d["value_hidden"] = list(self.hidden), list(self.value_hidden)
        d["lr_bounds"] = list(self.lr_bounds)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResidualConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown residual config fields {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

