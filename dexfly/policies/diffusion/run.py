"""A diffusion training run folder: train (resumably), evaluate closed loop, write what a user looks at.

    result = train_run("grasp", episodes, "runs/dp_grasp", config, datasets=("outputs/grasp_d1.hdf5",))

The folder holds `policy.json` (task, dimensions, datasets, config: what `load_run` reads), orbax
checkpoints in `checkpoints/` (rerunning resumes from the latest), `loss.png` and `eval.json` (closed-loop
success on the training episodes' own scenes). `experiments/train_diffusion.py` and the flywheel both run
their training through here.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from dexfly import dataset, watchdog
from dexfly.policies.diffusion.checkpoint import RUN_FILE, latest_step
from dexfly.policies.diffusion.config import ARCH_FIELDS, DiffusionConfig
from dexfly.policies.diffusion.data import config_window_data
from dexfly.policies.diffusion.policy import DiffusionPolicy
from dexfly.policies.diffusion.state import TrainState, init_train_state
from dexfly.policies.diffusion.train import fit
from dexfly.utils import atomic_write_text, plot_curve


@dataclass
class RunResult:
    state: TrainState
    config: DiffusionConfig
    history: list[dict] = field(default_factory=list)  # [{"step", "success_rate", "std", "per_seed"}]
    losses: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))  # steps run by this call
    seconds: float = 0.0  # training time of this call


def task_config(task: str, episodes, config: DiffusionConfig, *, quat_features: bool = True, relative_features: bool = False,
                phase_feature: bool = False, geometry_feature: bool = False) -> DiffusionConfig:
    """The config with the task's observation feature slots filled in (quaternions as rot6d, optionally
    end-effector-minus-object positions, the episode's phase over the task's episode length and every object's
    half-extents), read from the env of the first episode. ValueError when config.obs_geometry names more objects
    than the task's scenes hold."""
    import envs

    env = envs.make_cached(task, envs.episode_objects(episodes[0]))
    if quat_features:
        config = config.replace(obs_quat_at=env.obs_layout.quaternion_slots())
    if relative_features:
        config = config.replace(obs_rel_pos=env.obs_layout.relative_position_pairs())
    if phase_feature:
        config = config.replace(phase_steps=env.episode_steps)
    if geometry_feature:
        config = config.replace(obs_geometry=len(env.roles))
    if config.obs_geometry > len(env.roles):
        raise ValueError(f"obs_geometry={config.obs_geometry}: {task}'s scenes hold {len(env.roles)} object(s) ({', '.join(env.roles)})")
    return config


def eval_scenes_of(task: str, episodes, limit: int) -> list:
    """The training episodes' own scenes (object, environment, exact pose), first `limit` distinct ones."""
    import envs

    env = envs.make_cached(task, envs.episode_objects(episodes[0]))
    specs = []
    for e in episodes:
        s = env.scene_from_episode(e)
        if s not in specs:
            specs.append(s)
        if len(specs) >= limit:
            break
    return specs


def warm_start_state(init_from: str | os.PathLike, config: DiffusionConfig, train_episodes, task: str | None = None) -> TrainState:
    """A step-0 state whose network (and EMA) weights are those of another run's latest checkpoint, with a fresh
    optimiser and the normaliser of the new data (new objects and poses may lie outside the old ranges).
    ValueError when the other run's task (if `task` is given), architecture or dimensions differ."""
    from dexfly.policies.diffusion.checkpoint import read_meta, resolve_run, restore

    ckpt_dir, run_meta = resolve_run(init_from)
    if task is not None and run_meta["task"] != task:
        raise ValueError(f"cannot warm-start from {init_from}: it is a {run_meta['task']!r} policy, not {task!r}")
    old = DiffusionConfig.from_dict(read_meta(ckpt_dir)["config"])
    # the network's shapes and inputs must agree; when to re-plan (action_horizon) and the noise schedule may change
    arch = tuple(f for f in ARCH_FIELDS if f not in ("action_horizon", "num_train_timesteps"))
    diff = [k for k in arch if getattr(old, k) != getattr(config, k)]
    if diff:
        raise ValueError(f"cannot warm-start from {init_from}: its {diff} differ from this run's")
    previous = restore(ckpt_dir, old)
    _, normalizer = config_window_data(train_episodes, config)
    fresh = init_train_state(config, normalizer)
    shapes = lambda tree: [x.shape for x in jax.tree.leaves(tree)]  # noqa: E731
    if jax.tree.structure(fresh.params) != jax.tree.structure(previous.params) or shapes(fresh.params) != shapes(previous.params):
        raise ValueError(f"cannot warm-start from {init_from}: its network shapes differ (another task or observation layout?)")
    return fresh.replace(params=previous.params, ema_params=previous.ema_params)


def train_run(task: str, episodes, out: str | os.PathLike, config: DiffusionConfig, *, datasets: tuple[str, ...] = (),
              eval_scenes: int = 20, eval_seeds: tuple[int, ...] = (0, 1, 2), eval_every: int = 0, checkpoint_every: int = 1000,
              init_from: str | os.PathLike | None = None, progress: bool = True, log: Callable[[str], Any] = print,
              mesh: Mesh | None = None) -> RunResult:
    """Train `config` on `episodes` in the run folder `out` (resuming from its latest checkpoint), evaluate
    closed loop on up to `eval_scenes` of the training scenes with `eval_seeds` (every `eval_every` steps and at
    the end; no seeds: no evaluation). `init_from` (a run folder) warm-starts a fresh run from its weights.
    A folder trained for another task or config is refused (ValueError naming the difference). With a device `mesh`
    (`dexfly.devices`), training batches and evaluation scenes are split over its devices."""
    from dexfly import evaluation

    train = dataset.policy_training_episodes(episodes, geometry=config.obs_geometry > 0)
    out = Path(out).resolve()
    ckpt_dir = out / "checkpoints"
    obs_dim = int(train[0]["obs"].shape[-1])
    action_dim = int(train[0]["actions"].shape[-1])
    meta = {"task": task, "obs_dim": obs_dim, "action_dim": action_dim, "datasets": [str(p) for p in datasets],
            "num_episodes": len(episodes), "config": config.to_dict()}
    run_file = out / RUN_FILE
    if run_file.exists():
        saved = json.loads(run_file.read_text())
        if saved.get("task") != task:
            raise ValueError(f"{out} is a diffusion run for task {saved.get('task')!r}, not {task!r} (use another folder)")
        resumable = {"total_steps", "warmup_steps"}  # training may be extended; anything else is another run
        # a field added to DiffusionConfig since the run was saved reads as its default
        saved_config = DiffusionConfig.from_dict(saved.get("config", {})).to_dict()
        changed = sorted(k for k in meta["config"] if k not in resumable and saved_config.get(k) != meta["config"][k])
        if changed:
            raise ValueError(f"{out} was trained with other settings ({', '.join(changed)}); use another folder to train anew")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_file, json.dumps(meta, indent=2))
    specs = eval_scenes_of(task, episodes, eval_scenes) if eval_seeds else []

    history: list[dict] = []

    def on_eval(step, state):
        res = evaluation.evaluate_scenes(task, DiffusionPolicy.from_state(state, config), specs, seeds=tuple(eval_seeds), mesh=mesh)
        history.append({"step": step, "success_rate": res.success_rate_mean, "std": res.success_rate_std, "per_seed": list(res.per_seed)})
        log(f"step {step}: closed-loop success_rate={res.success_rate_mean:.3f} ± {res.success_rate_std:.3f}")

    state = None
    if init_from is not None and latest_step(ckpt_dir) is None:
        state = warm_start_state(init_from, config, train, task=task)
        log(f"warm start from {init_from}")
    t0 = time.perf_counter()
    with watchdog.stage(f"diffusion training {task}"):
        result = fit(train, config, callback=on_eval if specs else None, callback_every=eval_every, checkpoint_dir=str(ckpt_dir),
                     checkpoint_every=checkpoint_every, progress=progress, state=state, mesh=mesh)
    seconds = time.perf_counter() - t0
    if specs and (not history or history[-1]["step"] != int(result.state.step)):
        on_eval(int(result.state.step), result.state)
    losses = np.asarray(result.losses)
    if losses.size:
        plot_curve(out / "loss.png", losses, title=f"diffusion loss ({task})", ylabel="noise MSE", log=True)
    if history:
        atomic_write_text(out / "eval.json", json.dumps(history, indent=2))
    return RunResult(result.state, config, history, losses, seconds)


__all__ = ["RunResult", "eval_scenes_of", "task_config", "train_run", "warm_start_state"]
