"""Orbax checkpoints of Diffusion Policy training.

Layout under a directory `D` (made absolute) (orbax CheckpointManager, atomic tmp-dir + rename per step):
    D/<step>/state/   StandardSave of TrainState {step, params, ema_params, opt_state, normalizer}
    D/<step>/meta/    JsonSave {"format", "config": DiffusionConfig.to_dict(), "obs_dim", "action_dim", "step"}
"obs_dim" is the normaliser's (observation-feature) dimension: raw obs_dim + config.obs_extra_dims.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from dexfly.policies.diffusion.config import ARCH_FIELDS, DiffusionConfig
from dexfly.policies.diffusion.normalizer import MinMax, Normalizer
from dexfly.policies.diffusion.policy import DiffusionPolicy
from dexfly.policies.diffusion.state import TrainState, init_train_state
from dexfly.utils import read_json

FORMAT = "dexfly.diffusion/1"


def _abs(directory: str | os.PathLike) -> str:
    # orbax wants absolute paths; users pass relative ones
    return os.path.abspath(os.fspath(directory))


def _manager(directory: str | os.PathLike, max_to_keep: int | None = 3, create: bool = True) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        _abs(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create),
    )


def save_checkpoint(
    directory: str | os.PathLike, state: TrainState, config: DiffusionConfig, max_to_keep: int | None = 3
) -> int:
    """Save `state` (step = state.step) with the config as JSON; blocks until written. Returns the step."""
    step = int(state.step)
    meta = {"format": FORMAT, "config": config.to_dict(), "obs_dim": state.obs_dim,
            "action_dim": state.action_dim, "step": step}
    with _manager(directory, max_to_keep) as mngr:
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                  force=True)
        mngr.wait_until_finished()
    return step


def latest_step(directory: str | os.PathLike) -> int | None:
    """Latest saved step in `directory`, or None (also when the directory does not exist)."""
    if not os.path.isdir(_abs(directory)):
        return None
    with _manager(directory, create=False) as mngr:
        return mngr.latest_step()


def read_meta(directory: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (latest by default)."""
    with _manager(directory, create=False) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {directory}")
        return dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def check_compatible(meta: dict[str, Any], config: DiffusionConfig, obs_dim: int | None = None,
                     action_dim: int | None = None, where: str = "checkpoint") -> None:
    """ValueError naming every architecture mismatch; a warning for differing training hyper-parameters."""
    saved = DiffusionConfig.from_dict(meta["config"])
    bad = [f"{f}: {where} has {getattr(saved, f)!r}, requested {getattr(config, f)!r}"
           for f in ARCH_FIELDS if getattr(saved, f) != getattr(config, f)]
    for name, want in (("obs_dim", obs_dim), ("action_dim", action_dim)):
        if want is not None and int(meta[name]) != int(want):
            bad.append(f"{name}: {where} has {meta[name]}, requested {want}")
    if bad:
        raise ValueError("diffusion checkpoint does not match the requested config:\n  " + "\n  ".join(bad))
    other = [f for f, v in config.to_dict().items() if f not in ARCH_FIELDS and meta["config"].get(f) != v]
    if other:
        warnings.warn(f"{where}: training hyper-parameters differ from the saved run ({', '.join(other)}); "
                      "resuming will not reproduce an uninterrupted run", stacklevel=3)


def abstract_train_state(config: DiffusionConfig, obs_dim: int, action_dim: int) -> TrainState:
    """Shape/dtype structure of a TrainState (jax.ShapeDtypeStruct leaves), for restoring."""
    def norm(d):
        s = jax.ShapeDtypeStruct((d,), jnp.float32)
        return MinMax(s, s, s, s)

    return jax.eval_shape(lambda n: init_train_state(config, n), Normalizer(norm(obs_dim), norm(action_dim)))


def restore(directory: str | os.PathLike, config: DiffusionConfig, step: int | None = None, *,
            obs_dim: int | None = None, action_dim: int | None = None) -> TrainState:
    """Restore the TrainState saved at `step` (latest by default); ValueError on config mismatch."""
    with _manager(directory, create=False) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {directory}")
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        check_compatible(meta, config, obs_dim, action_dim, where=f"checkpoint {directory} step {step}")
        target = abstract_train_state(config, int(meta["obs_dim"]), int(meta["action_dim"]))
        out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return out["state"]


def restore_latest(directory: str | os.PathLike, config: DiffusionConfig, *, obs_dim: int | None = None,
                   action_dim: int | None = None) -> TrainState | None:
    """Latest TrainState in `directory`, or None if there is none. ValueError if the checkpoint's
    architecture (horizons, widths, kernel, groups, embed dim, timesteps, obs_dim/action_dim if given) differs."""
    if latest_step(directory) is None:
        return None
    return restore(directory, config, obs_dim=obs_dim, action_dim=action_dim)


def load_policy(directory: str | os.PathLike, step: int | None = None,
                use_ema: bool = True) -> tuple[DiffusionPolicy, DiffusionConfig]:
    """A DiffusionPolicy from a checkpoint, with the config stored in it (for evaluation scripts)."""
    meta = read_meta(directory, step)
    config = DiffusionConfig.from_dict(meta["config"])
    state = restore(directory, config, meta["step"])
    return DiffusionPolicy.from_state(state, config, use_ema), config


RUN_FILE = "policy.json"


def resolve_run(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """A diffusion training folder (holding `policy.json` and `checkpoints/`) or its `checkpoints/` folder ->
    (checkpoints folder, the run's policy.json contents). FileNotFoundError naming the path otherwise."""
    from pathlib import Path

    path = Path(path).resolve()
    for run in (path, path.parent):
        meta_file = run / RUN_FILE
        if meta_file.is_file():
            meta = read_json(meta_file)
            if not isinstance(meta, dict) or "task" not in meta:
                raise ValueError(f"{meta_file}: not a dexfly diffusion run description (no 'task')")
            return str(run / "checkpoints"), meta
    raise FileNotFoundError(f"{path}: no {RUN_FILE} found (expected a train_diffusion.py output folder or its checkpoints/)")


def load_run(path: str | os.PathLike, task: str | None = None, use_ema: bool = True) -> tuple[DiffusionPolicy, DiffusionConfig, dict[str, Any]]:
    """(policy, config, run metadata) of a diffusion training folder; ValueError if it was trained for another task."""
    ckpt_dir, meta = resolve_run(path)
    if task is not None and meta["task"] != task:
        raise ValueError(f"checkpoint {path} was trained for task {meta['task']!r}, not {task!r}")
    policy, config = load_policy(ckpt_dir, use_ema=use_ema)
    return policy, config, meta
