"""State-based Diffusion Policy (Chi et al., RSS 2023) in JAX / Flax linen / optax.

Main API:
    DiffusionConfig                      hyper-parameters (frozen dataclass; .paper(), .tiny())
    fit(episodes, config, ...)           train -> FitResult(state, losses, data)
    DiffusionPolicy.from_state(state, config); policy(obs_history, key) -> action chunk (raw units)
    save_checkpoint / restore_latest / load_policy    orbax checkpoints
"""

from dexfly.policies.diffusion.checkpoint import (latest_step, load_policy, load_run, read_meta, resolve_run, restore,
                                                  restore_latest, save_checkpoint)
from dexfly.policies.diffusion.config import DiffusionConfig
from dexfly.policies.diffusion.data import (WindowData, batch_indices, iterate_batches, make_window_data,
                                            window_indices)
from dexfly.policies.diffusion.normalizer import MinMax, Normalizer
from dexfly.policies.diffusion.policy import (DiffusionPolicy, history_init, history_push, obs_vector,
                                              sample_actions)
from dexfly.policies.diffusion.schedule import NoiseSchedule, add_noise, ddim_sample, ddim_step, make_schedule
from dexfly.policies.diffusion.state import TrainState, init_train_state, make_optimizer
from dexfly.policies.diffusion.train import FitResult, fit, num_parameters, train_step, train_steps
from dexfly.policies.diffusion.unet import ConditionalUnet1D, make_model

__all__ = [
    "ConditionalUnet1D", "DiffusionConfig", "DiffusionPolicy", "FitResult", "MinMax", "NoiseSchedule",
    "Normalizer", "TrainState", "WindowData", "add_noise", "batch_indices", "ddim_sample", "ddim_step", "fit",
    "history_init", "history_push", "init_train_state", "iterate_batches", "latest_step", "load_policy", "load_run",
    "make_model", "make_optimizer", "make_schedule", "make_window_data", "num_parameters", "obs_vector",
    "read_meta", "resolve_run", "restore", "restore_latest", "sample_actions", "save_checkpoint", "train_step", "train_steps",
    "window_indices",
]
