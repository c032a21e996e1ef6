"""What PPO's exploration costs the frozen base, before any training.

    cost = exploration_cost("grasp", base, specs, ResidualConfig(init_noise_std=0.05, hold_steps=8))
    cost["base"]["mean"], cost["explore"]["mean"]

The untrained residual's mean correction is exactly zero, so whatever the combined policy loses against the base
in the first epsilon > 0 updates is the exploration noise alone: its std (`init_noise_std`), the alphas that
scale it and how long each sample is held (`hold_steps`). Both policies run the same scenes with the same keys
(the base's chunk noise is drawn identically), so the difference is paired. A PPO run cannot improve on a base
whose successes its exploration destroys: measure this before choosing the noise (docs/residual_policy.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import envs
from dexfly import evaluation
from dexfly.policies.residual.config import ResidualConfig
from dexfly.policies.residual.networks import ResidualSpec
from dexfly.policies.residual.train import HookParams, combined_hook, init_state
from dexfly.unroll import ChunkPolicy
from envs.base import EnvConfig, SceneSpec


def exploration_cost(task: str, base: ChunkPolicy, specs: list[SceneSpec], config: ResidualConfig, *, seeds: tuple[int, ...] = (0,),
                     env_config: EnvConfig | None = None, mesh=None) -> dict[str, dict[str, Any]]:
    """Success on `specs` of the base alone ("base") and of the base with the untrained residual sampled as in
    training ("explore"); each {mean, std, per_seed, per_object}."""
    spec = ResidualSpec.of_env(envs.make_cached(task, None, env_config))
    state = init_state(config, spec)
    out = {}
    for name, active in (("base", False), ("explore", True)):
        # one stochastic hook for both: switched off, it is the base bit for bit (tests/test_residual.py)
        res = evaluation.evaluate_scenes(task, base, specs, seeds=seeds, hook=combined_hook(spec, config, False),
                                         hook_params=HookParams(state.params.policy, state.normalizer, np.bool_(active)),
                                         env_config=env_config, mesh=mesh)
        out[name] = res.summary()
    return out


__all__ = ["exploration_cost"]
