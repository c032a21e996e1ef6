"""Orbax checkpoints of residual PPO: everything needed to resume, and to rebuild the combined policy.

Layout under a run folder `R`:
    R/checkpoints/<update>/state/   StandardSave of TrainState (params, optimiser state, normaliser, counters)
    R/checkpoints/<update>/meta/    JsonSave {"format", "task", "config", "spec", "base": {"path", "sha256"},
                                              "objects", "env_ids", "updates", "env_steps"}
    R/residual.json                 the run's description (same keys but the counters), written at the start
    R/eval.json                     base and combined success on the evaluation scenes, written at the end (fit.py)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from dexfly.policies.residual.config import ResidualConfig
from dexfly.policies.residual.networks import ResidualSpec
from dexfly.policies.residual.train import TrainState, init_state
from dexfly.utils import read_json

FORMAT = "dexfly.residual/1"
RUN_FILE = "residual.json"
EVAL_FILE = "eval.json"


def tree_sha256(path: str | os.PathLike) -> str:
    """Content hash of a file or folder (relative paths and bytes of every file, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def base_identity(base_run: str | os.PathLike) -> dict[str, str]:
    """{"path", "sha256"} of a diffusion run's latest checkpoint (what a residual was trained on top of)."""
    from dexfly.policies.diffusion.checkpoint import latest_step, resolve_run

    ckpt_dir, _ = resolve_run(base_run)
    step = latest_step(ckpt_dir)
    if step is None:
        raise FileNotFoundError(f"{base_run}: no diffusion checkpoint")
    return {"path": str(Path(ckpt_dir).parent), "sha256": tree_sha256(Path(ckpt_dir) / str(step))}


def _manager(directory: str | os.PathLike, create: bool = True, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create))


def save(directory: str | os.PathLike, state: TrainState, meta: dict[str, Any]) -> int:
    """Save at step = state.updates (blocks until written)."""
    step = int(state.updates)
    meta = {**meta, "format": FORMAT, "updates": step, "env_steps": int(state.env_steps)}
    with _manager(directory) as mngr:
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        mngr.wait_until_finished()
    return step


def latest(directory: str | os.PathLike) -> int | None:
    if not os.path.isdir(os.path.abspath(os.fspath(directory))):
        return None
    with _manager(directory, create=False) as mngr:
        return mngr.latest_step()


def restore(directory: str | os.PathLike, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
    """(TrainState, meta) of the checkpoint at `step` (latest by default); ValueError for a foreign checkpoint."""
    with _manager(directory, create=False) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no residual checkpoint in {directory}")
        meta = dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory} step {step}: not a dexfly residual checkpoint (format {meta.get('format')!r})")
        config, spec = ResidualConfig.from_dict(meta["config"]), ResidualSpec.from_dict(meta["spec"])
        target = jax.eval_shape(lambda: init_state(config, spec))
        state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    return state, meta


def check_compatible(meta: dict[str, Any], config: ResidualConfig, spec: ResidualSpec, base: dict[str, str], task: str, where: str) -> None:
    """ValueError naming what differs between a saved run and the requested one: task, any setting but
    `total_steps` (which may grow to train longer), the observation/action layout, the base checkpoint."""
    bad = []
    if meta.get("task") != task:
        bad.append(f"task: {where} has {meta.get('task')!r}, requested {task!r}")
    saved = ResidualConfig.from_dict(meta["config"])
    # every setting but the training length must match: a resumed run continues exactly as an uninterrupted one
    fields = [f for f in saved.to_dict() if f != "total_steps"]
    bad += [f"{f}: {where} has {getattr(saved, f)!r}, requested {getattr(config, f)!r}" for f in fields if getattr(saved, f) != getattr(config, f)]
    if ResidualSpec.from_dict(meta["spec"]) != spec:
        bad.append(f"observation/action layout: {where} has {meta['spec']}, requested {spec.to_dict()}")
    if meta["base"]["sha256"] != base["sha256"]:
        bad.append(f"base policy: {where} was trained on {meta['base']['path']} (sha256 {meta['base']['sha256'][:12]}), "
                   f"requested {base['path']} (sha256 {base['sha256'][:12]})")
    if bad:
        raise ValueError("residual run does not match the requested one:\n  " + "\n  ".join(bad))


def read_run(run: str | os.PathLike) -> dict[str, Any]:
    """The residual.json of a run folder; FileNotFoundError / ValueError naming the folder otherwise."""
    f = Path(run) / RUN_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{run}: no {RUN_FILE} (not a train_residual.py output folder)")
    meta = read_json(f)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{f}: not a dexfly residual run (format {found!r})")
    return meta


def load_combined(run: str | os.PathLike, task: str | None = None):
    """The combined policy of a residual run, for evaluation: (base policy, hook, hook params, saved meta).

    Evaluate it as `evaluation.evaluate_scenes(task, base, specs, hook=hook, hook_params=params)`. ValueError when
    the run is of another task or its base checkpoint changed since the residual was trained on it.
    """
    import numpy as np

    from dexfly.policies.diffusion.checkpoint import load_run
    from dexfly.policies.residual.train import HookParams, combined_hook

    meta = read_run(run)
    if task is not None and meta["task"] != task:
        raise ValueError(f"residual run {run} was trained for task {meta['task']!r}, not {task!r}")
    state, saved = restore(Path(run) / "checkpoints")
    now = base_identity(saved["base"]["path"])
    if now["sha256"] != saved["base"]["sha256"]:
        raise ValueError(f"the base checkpoint {saved['base']['path']} changed since residual run {run} was trained on it")
    base, _, _ = load_run(saved["base"]["path"], task=saved["task"])
    config, spec = ResidualConfig.from_dict(saved["config"]), ResidualSpec.from_dict(saved["spec"])
    return base, combined_hook(spec, config, True), HookParams(state.params.policy, state.normalizer, np.bool_(True)), saved


__all__ = ["EVAL_FILE", "FORMAT", "load_combined", "RUN_FILE", "base_identity", "check_compatible", "latest", "read_run", "restore", "save", "tree_sha256"]
