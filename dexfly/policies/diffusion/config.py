"""Hyper-parameters of the state-based Diffusion Policy (Chi et al., RSS 2023).

One frozen dataclass, hashable, so it can be a static argument of `jax.jit` and a tyro CLI.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

# Fields that fix the network's parameter shapes / the meaning of its inputs and outputs.
# A checkpoint can only be restored into a config that agrees on all of them.
ARCH_FIELDS = (
    "obs_horizon",
    "pred_horizon",
    "action_horizon",
    "down_dims",
    "kernel_size",
    "n_groups",
    "diffusion_step_embed_dim",
    "num_train_timesteps",
    "obs_quat_at",
    "obs_rel_pos",
    "phase_steps",
    "obs_geometry",
)


@dataclass(frozen=True)
class DiffusionConfig:
    """Diffusion Policy configuration.

    Defaults are a CPU-sized U-Net (4.7M parameters at obs_dim 40, action_dim 15) and a 6000-step schedule
    that trains on a 20-demo state-based dataset on a 2-core CPU in under 30 minutes (Grasp: 97% closed-loop
    success on its training scenes, see BENCHMARKS.md); `DiffusionConfig.paper()` gives the paper's widths.
    """

    # windows
    obs_horizon: int = 2
    """number of observations (current + past) the policy conditions on"""
    pred_horizon: int = 16
    """length of the predicted action chunk (must be divisible by 2**(len(down_dims)-1))"""
    action_horizon: int = 8
    """how many of the predicted actions are executed before re-planning"""
    obs_quat_at: tuple[int, ...] = ()
    """start indices of unit quaternions (w, x, y, z) in the raw observation vector. The network sees each
    as the rot6d of its rotation (continuous and invariant to the quaternion's sign, which flips in the
    observations), i.e. 2 more input numbers per quaternion. Set from the env by train_diffusion.py."""
    obs_rel_pos: tuple[tuple[int, int], ...] = ()
    """pairs (a, b) of start indices of position 3-vectors in the raw observation; the network also sees
    obs[a:a+3] - obs[b:b+3] (e.g. end effector minus object), 3 more input numbers per pair. Set from the env by
    train_diffusion.py --relative-features."""
    phase_steps: int = 0
    """0: the policy sees observations only. N > 0: each observation of the history also carries the episode's phase,
    min(step / N, 1) with `step` the env steps since the episode's reset (N: the task's episode length, set by
    train_diffusion.py --phase-feature). For tasks whose next move is timed rather than seen: Lift's demos come to
    rest at the squeeze and then rise, and at rest nothing in the observation says whether the rise has begun
    (BENCHMARKS.md, session 16)."""
    obs_geometry: int = 0
    """0: no object geometry. N > 0: each observation of the history also carries the bounding-box half-extents (m) of
    the scene's first N objects in role order (3N numbers, the same at every step; known in simulation, and from the
    object model on a robot). The observation holds the objects' poses but not their sizes, so a base trained on
    demos that grasp each object its own way cannot tell which way fits (issue 13's geometry option; set from the env
    by train_diffusion.py --geometry-feature)."""
    # network
    down_dims: tuple[int, ...] = (64, 128, 256)
    """U-Net channel widths per level (paper: 256, 512, 1024)"""
    kernel_size: int = 5
    n_groups: int = 8
    """GroupNorm groups"""
    diffusion_step_embed_dim: int = 128
    # diffusion
    num_train_timesteps: int = 100
    num_inference_steps: int = 10
    """DDIM steps at inference (eta = 0)"""
    clip_sample: bool = True
    """clip the predicted clean sample to [-1, 1] at each denoising step"""
    # optimisation
    lr: float = 1e-3
    """paper: 1e-4 over thousands of epochs. The short CPU budget needs more: on 20 Grasp demos, 800 steps at
    batch 256 reach a noise MSE of 0.028 at 1e-3 against 0.098 at 3e-4 (which leaves the policy unconditioned)"""
    weight_decay: float = 1e-6
    adam_b1: float = 0.95
    adam_b2: float = 0.999
    warmup_steps: int = 100
    total_steps: int = 6_000
    """optimizer steps (the cosine decay reaches 0 here); 6000 x 256 is ~25 min on a 2-core CPU (~250
    epochs of 20 demos x 300 steps). On 20 Grasp demos, closed-loop success on the training scenes was 0%
    after 2000 steps, 75% after 3500 and 97% after 6000: precision keeps improving long after the loss
    looks flat. Raise it (and lower lr) on a GPU."""
    batch_size: int = 256
    # EMA (power schedule of diffusers' EMAModel as used by Chi et al.)
    ema_power: float = 0.75
    ema_inv_gamma: float = 1.0
    ema_min_decay: float = 0.0
    ema_max_decay: float = 0.9999
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "down_dims", tuple(int(d) for d in self.down_dims))
        object.__setattr__(self, "obs_quat_at", tuple(sorted(int(i) for i in self.obs_quat_at)))
        if any(b - a < 4 for a, b in zip(self.obs_quat_at, self.obs_quat_at[1:])) or any(i < 0 for i in self.obs_quat_at):
            raise ValueError(f"obs_quat_at={self.obs_quat_at} must be non-negative, non-overlapping quaternion starts")
        object.__setattr__(self, "obs_rel_pos", tuple((int(a), int(b)) for a, b in self.obs_rel_pos))
        if any(a < 0 or b < 0 or a == b for a, b in self.obs_rel_pos):
            raise ValueError(f"obs_rel_pos={self.obs_rel_pos} must be pairs of distinct non-negative indices")
        if self.obs_geometry < 0:
            raise ValueError(f"obs_geometry must be >= 0 (a number of objects), got {self.obs_geometry}")
        if self.phase_steps < 0:
            raise ValueError(f"phase_steps must be >= 0, got {self.phase_steps}")
        n_down = len(self.down_dims) - 1
        if self.pred_horizon % (2**n_down):
            raise ValueError(
                f"pred_horizon={self.pred_horizon} must be divisible by 2**(len(down_dims)-1)={2**n_down}"
            )
        if not 1 <= self.action_horizon <= self.pred_horizon:
            raise ValueError(f"action_horizon={self.action_horizon} must be in [1, pred_horizon={self.pred_horizon}]")
        if self.num_train_timesteps % self.num_inference_steps:
            raise ValueError(
                f"num_inference_steps={self.num_inference_steps} must divide num_train_timesteps={self.num_train_timesteps}"
            )
        for d in self.down_dims:
            if d % self.n_groups:
                raise ValueError(f"every down_dim must be divisible by n_groups={self.n_groups}; got {self.down_dims}")

    @classmethod
    def paper(cls, **overrides: Any) -> DiffusionConfig:
        """The paper's CNN-based state-policy widths (256, 512, 1024), step-embed 256, lr 1e-4 (~65M params)."""
        kw: dict[str, Any] = dict(down_dims=(256, 512, 1024), diffusion_step_embed_dim=256, lr=1e-4,
                                  warmup_steps=500, total_steps=100_000)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def tiny(cls, **overrides: Any) -> DiffusionConfig:
        """A very small network for unit tests."""
        kw: dict[str, Any] = dict(down_dims=(16, 32), diffusion_step_embed_dim=16, n_groups=4, batch_size=32,
                                  warmup_steps=10, total_steps=400, lr=3e-3)
        kw.update(overrides)
        return cls(**kw)

    def replace(self, **changes: Any) -> DiffusionConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["down_dims"] = list(self.down_dims)
        d["obs_quat_at"] = list(self.obs_quat_at)
        d["obs_rel_pos"] = [list(p) for p in self.obs_rel_pos]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffusionConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "down_dims" in kw:
            kw["down_dims"] = tuple(kw["down_dims"])
        if "obs_quat_at" in kw:
            kw["obs_quat_at"] = tuple(kw["obs_quat_at"])
        if "obs_rel_pos" in kw:
            kw["obs_rel_pos"] = tuple(tuple(p) for p in kw["obs_rel_pos"])
        return cls(**kw)

    @property
    def obs_extra_dims(self) -> int:
        """How many more numbers the network's observation features have than the raw observation."""
        return 2 * len(self.obs_quat_at) + 3 * len(self.obs_rel_pos) + (1 if self.phase_steps else 0) + 3 * self.obs_geometry
