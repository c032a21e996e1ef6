"""Residual policy on a frozen base (the paper's Section 4.3): a Gaussian MLP trained with PPO (brax's parts)
whose per-step correction is added to the base action, a + alpha * delta.

    ResidualConfig, ResidualSpec, make_networks, features, combine     the policy (no simulator needed)
    dexfly.policies.residual.train / .fit / .checkpoint                training in MJX, resumable runs
"""

from dexfly.policies.residual.config import ResidualConfig
from dexfly.policies.residual.networks import RESIDUAL_DIM_PER_ARM, ResidualSpec, combine, features, make_networks, squash

__all__ = ["RESIDUAL_DIM_PER_ARM", "ResidualConfig", "ResidualSpec", "combine", "features", "make_networks", "squash"]
