"""Train a residual policy on a frozen diffusion base, resumably, and evaluate base against combined.

    result = fit(task="grasp", base="runs/dp_grasp", objects=("box_tea", "can_soda", ...), env_ids=("studio",),
                 config=ResidualConfig(), out="runs/res_grasp")

Objects of several geometry topologies train together: one compiled env per topology, one jitted update over
all of them. Every episode draws a fresh scene (object, environment, continuous pose) from its group's pool.
The run folder holds `residual.json` (what was asked), orbax checkpoints, `train_log.jsonl` (one line per
update), `curve.png`, `eval.json` and a video; rerunning the same call resumes from the last checkpoint. With a
device mesh (`dexfly.devices`), training episodes and evaluation scenes are split over its devices.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

import envs
from dexfly import devices, evaluation, watchdog
from dexfly.catalog import TASK_ROLES, load_catalog
from dexfly.policies.diffusion.checkpoint import load_run
from dexfly.policies.residual import checkpoint as ckpt
from dexfly.policies.residual.config import ResidualConfig
from dexfly.policies.residual.networks import ResidualSpec
from dexfly.policies.residual.train import HookParams, TrainState, combined_hook, init_state, make_update, steps_per_update, update_key
from dexfly.progress import ProgressCallback, progress_bar
from dexfly.scenes import catalog_poses, scene_grid
from dexfly.utils import atomic_write_text
from envs.base import EnvConfig, SceneSet, SceneSpec


@dataclass(frozen=True)
class EvalSet:
    """Evaluation scenes: each object in one fixed environment and a fixed set of poses, several seeds."""

    env_id: str = "studio"
    pose_ids: tuple[str, ...] = ("p00", "p01", "p02", "p03", "p04")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    every: int = 0
    """Combined success on these scenes (first seed only) every N updates, for the learning curve (0: end only)."""


@dataclass
class FitResult:
    state: TrainState
    base_success: dict[str, Any]
    combined_success: dict[str, Any]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _groups(task: str, objects: tuple[str, ...], env_config: EnvConfig) -> list[tuple[Any, tuple[str, ...]]]:
    """[(env, object ids)] one per geometry topology of the task's main role (other roles keep their defaults)."""
    cat = load_catalog()
    roles = tuple(TASK_ROLES[task])
    defaults = {r: o.id for r, o in cat.default_objects(task).items()}
    by_topology: dict[tuple, list[str]] = {}
    for oid in objects:
        chosen = tuple((r, oid if r == roles[0] else defaults[r]) for r in roles)
        by_topology.setdefault(cat.scene_topology(chosen), []).append(oid)
    out = []
    for ids in by_topology.values():
        chosen = tuple((r, ids[0] if r == roles[0] else defaults[r]) for r in roles)
        out.append((envs.make_cached(task, chosen, env_config), tuple(ids)))
    return out


def _pool(env, ids: tuple[str, ...], env_ids: tuple[str, ...], pose_ids: tuple[str, ...] | None, size: int, key) -> tuple[Any, list[SceneSpec]]:
    main = env.roles[0]
    specs = env.sample_scenes(key, size, SceneSet(objects={main: ids}, env_ids=env_ids, pose_ids=pose_ids, sample_poses=pose_ids is None))
    return env.make_scenes(specs), specs


def _evaluate(task, base, specs, seeds, hook=None, hook_params=None, env_config=None, record_video=False, mesh=None, on_progress=None):
    res = evaluation.evaluate_scenes(task, base, specs, seeds=seeds, hook=hook, hook_params=hook_params, env_config=env_config,
                                     record_qpos_first=record_video, mesh=mesh, on_progress=on_progress)
    return res, res.summary()


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["update"] <= upto]


def fit(task: str, base: str | os.PathLike, objects: tuple[str, ...], env_ids: tuple[str, ...], config: ResidualConfig,
        out: str | os.PathLike, *, pose_ids: tuple[str, ...] | None = None, eval_set: EvalSet = EvalSet(), env_config: EnvConfig = EnvConfig(),
        checkpoint_every: int = 5, progress: bool = True, video: bool = True, log=print, mesh: Mesh | None = None,
        base_result: dict | None = None) -> FitResult:
    """Train until `config.total_steps` env steps, checkpointing every `checkpoint_every` updates; evaluate
    base and combined (deterministic residual) on the evaluation scenes with every seed at the end. Training
    scenes draw the objects, the environments `env_ids` and the catalog poses `pose_ids` (None: poses sampled from
    the task's continuous ranges). `base_result`: the base's evaluation on these scenes and seeds when it is already
    known (eval.json's `base_success` of another residual run on the same base checkpoint, evaluated on as many
    devices); it is not rerun, since the base's episodes do not depend on the residual."""
    if task not in TASK_ROLES:
        raise ValueError(f"unknown task {task!r}; available: {list(TASK_ROLES)}")
    if not objects:
        raise ValueError("no objects to train on")
    if pose_ids is not None:
        pose_ids = tuple(pose_ids)
        catalog_poses(task, pose_ids)  # before the base loads: an empty tuple or an unknown pose id fails here, naming it
    out = Path(out).resolve()
    base_policy, base_config, base_meta = load_run(base, task=task)  # ValueError for a base of another task
    groups = _groups(task, tuple(objects), env_config)
    for env, _ in groups:
        evaluation.check_policy_fits(env, base_policy, base_meta["task"])  # another observation layout: ValueError
    spec = ResidualSpec.of_env(groups[0][0])
    base_id = ckpt.base_identity(base)
    run_meta = {"format": ckpt.FORMAT, "task": task, "config": config.to_dict(), "spec": spec.to_dict(), "base": base_id,
                "objects": list(objects), "env_ids": list(env_ids), "pose_ids": list(pose_ids) if pose_ids else None,
                "env_config": {"impl": env_config.impl, "ctrl_dt": env_config.ctrl_dt}}
    run_file = out / ckpt.RUN_FILE
    if run_file.exists():
        saved = ckpt.read_run(out)
        ckpt.check_compatible(saved, config, spec, base_id, task, where=str(out))
        if saved["objects"] != list(objects) or saved["env_ids"] != list(env_ids) or saved.get("pose_ids") != run_meta["pose_ids"]:
            raise ValueError(f"{out} was trained on objects {saved['objects']} in {saved['env_ids']} at poses {saved.get('pose_ids') or 'sampled'}; "
                             f"requested {list(objects)} in {list(env_ids)} at poses {run_meta['pose_ids'] or 'sampled'} (use another --out)")
        if saved["config"] != run_meta["config"]:  # total_steps grew (or shrank): the run file names the current request
            atomic_write_text(run_file, json.dumps({**saved, "config": run_meta["config"]}, indent=2))
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_file, json.dumps(run_meta, indent=2))

    rl_base = base_policy
    if config.base_ddim_steps:
        rl_base = base_policy.replace(config=base_config.replace(num_inference_steps=config.base_ddim_steps))
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
    pools, pool_specs = zip(*[_pool(env, ids, env_ids, pose_ids, config.scene_pool, jax.random.fold_in(key, g)) for g, (env, ids) in enumerate(groups)])
    env_tuple = tuple(env for env, _ in groups)
    group_envs = config.group_envs(tuple(len(ids) for _, ids in groups))
    update = make_update(config, spec, env_tuple, devices.replicate(rl_base, mesh), mesh, group_envs)
    pools = devices.replicate(pools, mesh)
    per_update = steps_per_update(config, env_tuple, group_envs)
    episode_group = np.repeat(np.arange(len(groups)), group_envs)  # [B] each training episode's topology group
    num_updates = -(-config.total_steps // per_update)

    ckpt_dir = out / "checkpoints"
    state = init_state(config, spec)
    if ckpt.latest(ckpt_dir) is not None:
        state, saved = ckpt.restore(ckpt_dir)
        ckpt.check_compatible(saved, config, spec, base_id, task, where=str(ckpt_dir))
        log(f"resuming {out} at update {int(state.updates)} ({int(state.env_steps):,} env steps)")
    state = devices.replicate(state, mesh)  # a restored state sits on one device
    log_path = out / "train_log.jsonl"
    history = _read_log(log_path, int(state.updates))
    atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))

    eval_specs = scene_grid(task, objects=tuple(objects), env_ids=(eval_set.env_id,), pose_ids=eval_set.pose_ids)
    hook = combined_hook(spec, config, True)
    # The base is evaluated through the same hook with the residual switched off (bit-identical to the base
    # alone, tests/test_residual.py), so base and combined evaluation share one compiled rollout.
    combined_params = lambda s, on=True: HookParams(s.params.policy, s.normalizer, np.bool_(on))  # noqa: E731

    t0 = time.perf_counter()
    with watchdog.stage(f"residual PPO {task}"):
        with progress_bar("residual PPO", num_updates, int(state.updates), enabled=progress) as bar:
            while int(state.updates) < num_updates:
                u = int(state.updates)
                state, metrics = update(state, pools, update_key(config, u))
                metrics = jax.device_get(devices.gather(metrics))
                if metrics["nan_envs"]:
                    bad = np.flatnonzero(metrics["nan_env_flags"])
                    scenes = [pool_specs[episode_group[b]][int(metrics["scene_index"][b])] for b in bad[:5]]
                    log(f"update {u}: simulation NaN in {len(bad)} env(s), left out of the update: "
                        + "; ".join(f"{dict(s.objects)} env={s.env_id} pose={s.poses}" for s in scenes))
                row = {"update": u + 1, "env_steps": int(state.env_steps), "seconds": round(time.perf_counter() - t0, 1),
                       **{k: (None if np.isnan(v) else float(v)) for k, v in metrics.items() if k not in ("nan_env_flags", "scene_index")}}
                if eval_set.every and (u + 1) % eval_set.every == 0:
                    _, r = _evaluate(task, base_policy, eval_specs, eval_set.seeds[:1], hook, combined_params(state), env_config, mesh=mesh)
                    row["eval_combined_success"] = r["mean"]
                history.append(row)
                with open(log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                if (u + 1) % checkpoint_every == 0 or u + 1 == num_updates:
                    ckpt.save(ckpt_dir, state, run_meta)
                watchdog.beat(f"update {u + 1}/{num_updates}")
                rate = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
                bar.update(u + 1, info=f"return {row['return']:.1f}  success {row['success']:.2f} "
                           f"(residual {rate(row['success_residual'])}, base {rate(row['success_base'])})  eps {row['epsilon']:.2f}  "
                           f"kl {row['approx_kl']:.3f}  lr {row['lr']:.1e}")
        seconds = time.perf_counter() - t0
        # after the training bar has closed: one live display at a time on a terminal
        if base_result is not None:
            if len(base_result.get("per_seed", ())) != len(eval_set.seeds) or set(base_result.get("per_object", {})) != set(objects):
                raise ValueError(f"base_result is not an evaluation of objects {list(objects)} with {len(eval_set.seeds)} seeds: {base_result}")
            base_res = base_result
        else:
            with ProgressCallback("evaluation, base alone", enabled=progress) as on_progress:
                _, base_res = _evaluate(task, base_policy, eval_specs, eval_set.seeds, hook, combined_params(state, False), env_config, mesh=mesh,
                                        on_progress=on_progress)
            watchdog.beat("base evaluation")
        with ProgressCallback("evaluation, combined", enabled=progress) as on_progress:
            combined, comb_res = _evaluate(task, base_policy, eval_specs, eval_set.seeds, hook, combined_params(state), env_config, record_video=video,
                                           mesh=mesh, on_progress=on_progress)
    result = {"task": task, "objects": list(objects), "train_pose_ids": run_meta["pose_ids"],
              "eval_env_id": eval_set.env_id, "eval_pose_ids": list(eval_set.pose_ids),
              "seeds": list(eval_set.seeds), "base_success": base_res, "combined_success": comb_res, "updates": int(state.updates),
              "env_steps": int(state.env_steps), "train_seconds_this_call": round(seconds, 1)}
    atomic_write_text(out / ckpt.EVAL_FILE, json.dumps(result, indent=2))
    _plot(out / "curve.png", history, base_res["mean"], comb_res["mean"], task)
    if video:
        evaluation.write_video(out / f"combined_{task}.mp4", task, combined, env_config=env_config)
    return FitResult(state, base_res, comb_res, history, seconds)


def _plot(path: Path, history: list[dict], base: float, combined: float, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dexfly.utils import atomic_path

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=120)
    steps = [r["env_steps"] for r in history]
    if history:
        for key, label in (("success_residual", "training episodes with the residual"), ("success_base", "training episodes, base alone")):
            pts = [(s, r[key]) for s, r in zip(steps, history) if r[key] is not None]
            if pts:
                ax.plot(*zip(*pts), lw=0.8, alpha=0.6, label=label)
        ev = [(r["env_steps"], r["eval_combined_success"]) for r in history if "eval_combined_success" in r]
        if ev:
            ax.plot(*zip(*ev), "o-", label="combined, evaluation scenes")
    ax.axhline(base, color="k", ls="--", lw=1, label=f"base, evaluation scenes ({base:.2f})")
    ax.axhline(combined, color="C3", ls=":", lw=1, label=f"combined at the end ({combined:.2f})")
    ax.set(title=f"residual PPO ({task})", xlabel="env steps", ylabel="success rate", ylim=(-0.02, 1.02))
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)


__all__ = ["EvalSet", "FitResult", "fit"]
