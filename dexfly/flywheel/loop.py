"""The data flywheel (the paper's Section 4): warm-up, then self-improving iterations, resumable stage by stage.

    report = run_flywheel("grasp", "tiny", "runs/flywheel_grasp", iterations=2)

Stages, in order (`stage_names`), each writing its outputs atomically and then a record (`stages.RunFolder`):
  warmup            D_1 = A_EP(seed; C_1)                                         -> d1.hdf5
  iter<i>/diffusion the base policy pi_base^i trained on D_i                        -> iter<i>/diffusion/
  iter<i>/evaluate  pi_base^i on T_OEP (and, at i = 1, on T_O^1: the seed's object) -> iter<i>/eval.json, t_oep.mp4
  for i < n:
  iter<i>/residual  the residual on pi_base^i, trained on O_{i+1} in E_i; its evaluation is T_O^{i+1}
                    (base -> combined, each object in one fixed scene)            -> iter<i>/residual/
  iter<i>/collect   the combined policy rolled out on O_{i+1} in random scenes of E_i, successes kept (D_O^i)
                    (and a video of it on the first T_OEP scenes, beside the base's) -> iter<i>/rollouts.hdf5,
                                                                                     t_oep_combined.mp4
  iter<i>/augment   D_{i+1} = A_EP(D_O^i; C_aug^{i+1}) (each object's rollouts across E_{i+1} x P_{i+1}),
                    plus D_i when the preset keeps previous data                  -> d<i+1>.hdf5
Table 1's row i (`report.build_report`) is D_i's diversity, T_O^i and pi_base^i's success on T_OEP, as in the
paper ("policies trained on our generated datasets D_i"; T_O^i holds the objects introduced in generating D_i).

Ablations (the paper's Figure 5; `dexfly.flywheel.baselines`): `residual=False` rolls out the base alone (no
residual stage), `augment_rollouts=False` makes D_{i+1} the successful rollouts themselves (plus D_i when kept),
without A_EP. Both are recorded in the run's identity (`flywheel.json`'s `variant`) and in the configs of the
stages they change; the defaults add nothing, so plain runs keep their records. `donors` are other finished runs
whose identical stages (same config hash: warm-up, iteration 1's base, ...) are copied instead of recomputed.
`stop_after` ends a run after one stage (e.g. `iter1/residual`, to compare a residual setting on one base) and
writes the report of what is done; the same run without it goes on from there.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
from jax.sharding import Mesh

import envs
from dexfly import dataset, devices, evaluation
from dexfly.augment.generate import ATTEMPTS_PER_DEMO
from dexfly.catalog import main_role
from dexfly.flywheel.schedule import Preset, load_preset
from dexfly.flywheel.stages import RunFolder, StageError, content_hash
from dexfly.flywheel.testsets import t_o_scenes, testset_path
from dexfly.paths import DEMOS_DIR
from dexfly.progress import ProgressCallback
from dexfly.utils import atomic_write_text, group_by_topology


def stage_names(iterations: int, residual: bool = True) -> list[str]:
    names = ["warmup"]
    for i in range(1, iterations + 1):
        names += [f"iter{i}/diffusion", f"iter{i}/evaluate"]
        if i < iterations:
            names += ([f"iter{i}/residual"] if residual else []) + [f"iter{i}/collect", f"iter{i}/augment"]
    return names


def rollouts_file(i: int) -> str:
    """Where iteration i's collect stage keeps its successful rollouts (relative to the run folder)."""
    return f"iter{i}/rollouts.hdf5"


def stage_outputs(iterations: int) -> dict[str, list[str]]:
    out = {"warmup": ["d1.hdf5"]}
    for i in range(1, iterations + 1):
        out[f"iter{i}/diffusion"] = [f"iter{i}/diffusion"]
        out[f"iter{i}/evaluate"] = [f"iter{i}/eval.json", f"iter{i}/t_oep.mp4"]
        out[f"iter{i}/residual"] = [f"iter{i}/residual"]
        out[f"iter{i}/collect"] = [rollouts_file(i), f"iter{i}/collect.json", f"iter{i}/t_oep_combined.mp4"]
        out[f"iter{i}/augment"] = [f"d{i + 1}.hdf5"]
    return out


def dataset_diversity(episodes) -> dict[str, int]:
    """O, E, P (distinct objects, environments and poses in the dataset), configurations and trajectories.

    `configs` is O x E x P, as the paper's Table 1 defines it ("the total number of possible scenario configurations
    these combinations can form"); `configs_present` counts the (object, environment, pose) triples the dataset
    actually holds, at most its number of trajectories."""
    pose = lambda ep: (ep.pose_id, ep.extra.get("poses"))  # noqa: E731  (named or sampled poses)
    o, e, p = (len({ep.object_ids for ep in episodes}), len({ep.env_id for ep in episodes}), len({pose(ep) for ep in episodes}))
    return {"objects": o, "environments": e, "poses": p, "configs": o * e * p,
            "configs_present": len({(ep.object_ids, ep.env_id, pose(ep)) for ep in episodes}), "trajectories": len(episodes)}


def train_base(task: str, preset: Preset, data: Path, out: Path, *, seed: int, init_from: Path | None = None, progress: bool = True,
               log: Callable[[str], Any] = print, mesh: Mesh | None = None) -> dict:
    """The base policy as every iteration, and every baseline, trains it: the preset's DiffusionConfig on the
    dataset `data`, in the run folder `out` (resumed from its last checkpoint); with `init_from` (a base run folder),
    warm-started from its weights for the preset's `warm_start_steps`. Returns the stage summary."""
    from dexfly.policies.diffusion.run import task_config, train_run

    episodes = dataset.load_episodes([data], task=task)
    cfg = task_config(task, episodes, preset.diffusion_config(warm=init_from is not None, run_seed=seed))
    res = train_run(task, episodes, out, cfg, datasets=(str(data),), eval_seeds=(), checkpoint_every=max(cfg.total_steps // 4, 1),
                    init_from=init_from, progress=progress, log=log, mesh=mesh)
    loss = float(res.losses[-50:].mean()) if res.losses.size else None
    return {"steps": int(res.state.step), "final_loss": loss, "train_seconds": round(res.seconds, 1)}


EVAL_PAD_TO = 4
"""Evaluation batches are padded to a multiple of this (evaluation.evaluate), so iteration 1 (T_OEP with T_O^1
in the same batches) and later iterations (T_OEP alone) share their compiled rollouts."""


def evaluate_t_oep(task: str, preset: Preset, base, *, video: Path | None = None, mesh: Mesh | None = None,
                   t_o: list | None = None, progress: bool = False, title: str = "T_OEP evaluation",
                   env_config: envs.EnvConfig | None = None) -> dict:
    """A base policy on T_OEP, as every iteration and every baseline is scored: the preset's T_OEP scenes
    (`Preset.t_oep_specs`), each seed of `seeds`; a video of the first episodes when `video` is a path. With `t_o`
    (scenes), T_O is scored in the same batches (`evaluation.evaluate_sets`: a topology both share compiles once).
    With `progress`, a progress bar named `title` counts the rollouts (topology groups x seeds). `env_config`: the
    simulation settings (None: the defaults, MJX-jax).
    Returns eval.json's {"t_oep": {"mean", "std", "per_seed", "per_object"}, "t_oep_scenes"[, "t_o_base"]}."""
    ev = preset.evaluation
    specs = preset.t_oep_specs()
    with ProgressCallback(title, enabled=progress) as on_progress:
        sets = evaluation.evaluate_sets(task, base, {"t_oep": specs, **({"t_o": t_o} if t_o else {})}, seeds=tuple(ev["seeds"]),
                                        record_qpos_first=video is not None, mesh=mesh, pad_to=EVAL_PAD_TO, on_progress=on_progress,
                                        env_config=env_config)
    if video is not None:
        evaluation.write_video(video, task, sets["t_oep"], episodes=int(ev["video_episodes"]), env_config=env_config)
    return {"t_oep": sets["t_oep"].summary(), "t_oep_scenes": len(specs), **({"t_o_base": sets["t_o"].summary()} if t_o else {})}


def combined_t_oep_video(task: str, preset: Preset, base, hook, hook_params, path: Path, *, mesh: Mesh | None = None,
                         env_config: envs.EnvConfig | None = None) -> Path:
    """A video of the combined policy (the base with its residual `hook`) on the T_OEP scenes that the base's
    `t_oep.mp4` shows (the first topology group's first `video_episodes` scenes, the first seed), so the two can be
    watched side by side. One seed of a few scenes: a picture, not a score (the base is scored on T_OEP)."""
    ev = preset.evaluation
    first = list(next(iter(group_by_topology(task, preset.t_oep_specs()).values())))[: int(ev["video_episodes"])]
    res = evaluation.evaluate_scenes(task, base, first, seeds=tuple(ev["seeds"])[:1], record_qpos_first=True, hook=hook,
                                     hook_params=hook_params, mesh=mesh, pad_to=EVAL_PAD_TO, env_config=env_config)
    return evaluation.write_video(path, task, res, episodes=len(first), env_config=env_config)


def augment_object(task: str, preset: Preset, sources: list, obj: str, spec, wanted: int, *, max_attempts: int, seed: int,
                   env_config: envs.EnvConfig, grid_start: int = 0, progress: bool = True, mesh: Mesh | None = None,
                   min_held: int = 0, smoothing: int = 0):
    """A_EP of `sources` onto the task's main object `obj` across the environments and poses of `spec` (an
    `IterationSpec`) from grid entry `grid_start`, in at most `max_attempts` attempts, with the preset's A_EP settings:
    (up to `wanted` demos, AugmentStats). The flywheel's augment stage and the replay baselines call it once per
    object, so that every object gets its share even when the attempt budget is smaller than the grid."""
    from dexfly.augment import augment

    caug = dataclasses.replace(preset.augment_config(), env=env_config, objects=((main_role(task), (obj,)),), env_ids=spec.env_ids,
                               **spec.augment_poses(task, max_attempts, grid_start=grid_start),
                               **({"min_held_steps": min_held} if min_held else {}),
                               **({"source_smoothing": smoothing} if smoothing else {}))
    return augment(sources, task, caug, num_wanted=wanted, batch_size=preset.augment_batch_size, max_attempts=max_attempts, seed=seed,
                   progress=progress, mesh=mesh)


def _check_held_steps(sources: list, where) -> None:
    missing = [k for k, ep in enumerate(sources) if "held_steps" not in ep.extra]
    if missing:
        raise StageError(f"{where}: episodes {missing[:5]} carry no held_steps (recorded before the quality filter "
                         f"existed); redo from this iteration's collect stage (--redo-from) to record them")


def held_sources(sources: list, min_held: int, *, where) -> tuple[list, dict]:
    """The preset's quality filter on A_EP sources: the rollouts whose success held for at least `min_held`
    final steps (`Episode.extra["held_steps"]`), and a summary of how many each object had and kept.
    StageError naming `where` when an episode was recorded without held_steps."""
    _check_held_steps(sources, where)
    ok = [int(ep.extra["held_steps"]) >= min_held for ep in sources]
    counts: dict[str, list[int]] = {}
    for ep, o in zip(sources, ok):
        c = counts.setdefault(ep.object_ids[0], [0, 0])
        c[0], c[1] = c[0] + 1, c[1] + o
    summary = {"min_held_steps": min_held, "rollouts": len(sources), "kept": sum(ok),
               "per_object": {k: {"rollouts": a, "kept": b} for k, (a, b) in sorted(counts.items())}}
    return [ep for ep, o in zip(sources, ok) if o], summary


def best_sources(sources: list, per_object: int, *, where) -> tuple[list, dict]:
    """The preset's choice of A_EP sources among the successful rollouts: per object the `per_object` whose success
    held longest (`Episode.extra["held_steps"]`), ties going to the smoothest (smallest mean |a_{t+1} - a_t|), best
    first, objects in sorted order; and a summary of what each object had and which it kept. StageError naming `where`
    when an episode was recorded without held_steps."""
    _check_held_steps(sources, where)
    by_object: dict[str, list] = {}
    for ep in sources:
        by_object.setdefault(ep.object_ids[0], []).append(ep)
    kept, per = [], {}
    for obj, eps in sorted(by_object.items()):
        ranked = sorted(eps, key=lambda ep: (-int(ep.extra["held_steps"]), float(np.abs(np.diff(ep.actions, axis=0)).mean())))
        kept += ranked[:per_object]
        per[obj] = {"rollouts": len(eps), "kept_held_steps": [int(ep.extra["held_steps"]) for ep in ranked[:per_object]]}
    return kept, {"per_object_wanted": per_object, "rollouts": len(sources), "kept": len(kept), "per_object": per}


class Flywheel:
    """One run: the preset, the run folder and the stages. `run()` executes every unfinished stage."""

    def __init__(self, task: str, preset: str | Preset, out, *, iterations: int = 3, seed: int = 0, log: Callable[[str], Any] = print,
                 progress: bool = True, video: bool = True, mesh: Mesh | None = None, residual: bool = True, augment_rollouts: bool = True,
                 donors: tuple = (), stop_after: str | None = None, impl: str = "jax"):
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        envs.check_impl(impl)  # before the run folder records it
        self.use_residual = residual
        self.augment_rollouts = augment_rollouts
        self.task = task
        self.preset = preset if isinstance(preset, Preset) else load_preset(task, preset)
        self.n = iterations
        self.seed = seed
        if stop_after is not None and stop_after not in (names := self.names()):
            raise StageError(f"unknown stage {stop_after!r} to stop after; this run's stages: {names}")
        self.stop_after = stop_after
        self.log = log
        self.progress = progress
        self.video = video
        self.mesh = mesh  # devices every stage splits its batches over (dexfly.devices); not part of the stage configs
        # MJX implementation of every simulating stage: part of the run's identity (RunFolder), so not of the stage configs
        self.env_config = envs.EnvConfig(impl=impl)
        self.run_dir = RunFolder.open(out, task=task, preset=self.preset.name, seed=seed, variant=self.variant(), impl=impl)
        # finished runs of the same task, preset and seed (any variant) whose identical stages are copied, not rerun
        self.donors = [RunFolder.existing(d, task=task, preset=self.preset.name, seed=seed, any_variant=True, impl=impl) for d in donors]
        self.main_role = main_role(task)
        self.seed_file = DEMOS_DIR / f"{task}_seed.hdf5"
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ plumbing
    def variant(self) -> dict:
        """The ablations switched on (empty for the plain flywheel): part of the run's identity."""
        return {**({"residual": False} if not self.use_residual else {}), **({"augment_rollouts": False} if not self.augment_rollouts else {})}

    def names(self) -> list[str]:
        return stage_names(self.n, self.use_residual)

    def redo_from(self, stage: str) -> list[str]:
        return self.run_dir.redo_from(self.names(), stage, stage_outputs(max(self.n, 1)))

    def _d(self, i: int) -> Path:
        return self.run_dir.path(f"d{i}.hdf5")

    def _stage(self, name: str, config: dict, body: Callable[[], tuple[list[str], dict]]) -> dict:
        """Run `body` unless the stage finished with this config (RunFolder.run_stage); body returns (outputs, summary)."""
        rec = self.run_dir.run_stage(name, config, body, watch=f"flywheel {self.task} {name}", donors=self.donors, log=self.log,
                                     devices=devices.size(self.mesh))
        self.timings[name] = rec["seconds"]
        return rec

    def _augment_config(self, **fields):
        """The preset's A_EP settings with these fields replaced, simulated with the run's MJX implementation."""
        return dataclasses.replace(self.preset.augment_config(), env=self.env_config, **fields)

    def _augment_object(self, sources: list, obj: str, spec, wanted: int, *, grid_start: int, seed: int, min_held: int = 0,
                        smoothing: int = 0):
        """`augment_object` with this run's preset, simulation settings and devices, `ATTEMPTS_PER_DEMO` per demo."""
        return augment_object(self.task, self.preset, sources, obj, spec, wanted, max_attempts=ATTEMPTS_PER_DEMO * wanted,
                              grid_start=grid_start, seed=seed, env_config=self.env_config, progress=self.progress, mesh=self.mesh,
                              min_held=min_held, smoothing=smoothing)

    def _seed_episodes(self) -> list:
        return list(dataset.read_dataset(self.seed_file, task=self.task).episodes)

    def _write(self, path: Path, episodes, extra: dict) -> None:
        env_args = dict(dataset.read_dataset(self.seed_file, task=self.task).env_args)
        dataset.write_dataset(path, episodes, task=self.task, env_args=env_args, seed=self.seed, extra_attrs=extra)

    # ------------------------------------------------------------------ stages
    def warmup(self) -> dict:
        c1 = self.preset.iteration(1)
        config = {"stage": "warmup", "c1": c1.to_dict(), "augment": self.preset.augment, "seed": self.seed,
                  "seed_demo": content_hash(self.seed_file)}

        def body():
            from dexfly.augment import augment

            sources = self._seed_episodes()
            max_attempts = ATTEMPTS_PER_DEMO * c1.trajectories
            caug = self._augment_config(objects=((self.main_role, c1.objects),), env_ids=c1.env_ids,
                                       **c1.augment_poses(self.task, max_attempts))
            episodes, stats = augment(sources, self.task, caug, num_wanted=c1.trajectories, batch_size=self.preset.augment_batch_size,
                                      max_attempts=max_attempts, seed=self.seed, progress=self.progress, mesh=self.mesh)
            if not episodes:
                raise StageError(f"warm-up: A_EP generated no successful demo from the seed in {stats.attempts} attempts")
            self._write(self._d(1), episodes, {"flywheel_stage": "warmup"})
            return ["d1.hdf5"], {"generated": stats.generated, "successes": stats.successes, "attempts": stats.attempts,
                                 "success_rate": stats.success_rate,
                                 **dataset_diversity(episodes)}

        return self._stage("warmup", config, body)

    def diffusion(self, i: int) -> dict:
        warm = self.preset.warm_start and i > 1
        config = {"stage": "diffusion", "iteration": i, "diffusion": self.preset.diffusion, "seed": self.seed,
                  "data": self.run_dir.output_hash("warmup" if i == 1 else f"iter{i - 1}/augment", f"d{i}.hdf5"),
                  "warm_start_from": self.run_dir.output_hash(f"iter{i - 1}/diffusion", f"iter{i - 1}/diffusion") if warm else None}
        if warm and self.preset.warm_start_steps is not None:
            config["warm_start_steps"] = self.preset.warm_start_steps  # only then, so runs recorded before the option keep their hashes

        def body():
            summary = train_base(self.task, self.preset, self._d(i), self.run_dir.path(f"iter{i}/diffusion"), seed=self.seed,
                                 init_from=self.run_dir.path(f"iter{i - 1}/diffusion") if warm else None, progress=self.progress, log=self.log,
                                 mesh=self.mesh)
            return [f"iter{i}/diffusion"], summary

        return self._stage(f"iter{i}/diffusion", config, body)

    def evaluate(self, i: int) -> dict:
        ev = self.preset.evaluation
        config = {"stage": "evaluate", "iteration": i, "evaluation": ev, "t_oep": content_hash(testset_path(self.task)),
                  "base": self.run_dir.output_hash(f"iter{i}/diffusion", f"iter{i}/diffusion"),
                  "t_o_objects": list(self.preset.iteration(1).objects) if i == 1 else None}

        def body():
            from dexfly.policies.diffusion import load_run

            base, _, _ = load_run(self.run_dir.path(f"iter{i}/diffusion"), task=self.task)
            t_o = t_o_scenes(self.task, self.preset.iteration(1).objects, tuple(ev["t_o_pose_ids"])) if i == 1 else None
            result = evaluate_t_oep(self.task, self.preset, base, video=self.run_dir.path(f"iter{i}/t_oep.mp4") if self.video else None,
                                    mesh=self.mesh, t_o=t_o, progress=self.progress, title=f"iter{i} evaluation", env_config=self.env_config)
            outputs = [f"iter{i}/eval.json"] + ([f"iter{i}/t_oep.mp4"] if self.video else [])
            atomic_write_text(self.run_dir.path(f"iter{i}/eval.json"), json.dumps(result, indent=2))
            return outputs, {"t_oep": result["t_oep"]["mean"]}

        return self._stage(f"iter{i}/evaluate", config, body)

    def _rollout_scenario_set(self, i: int) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(objects, environments, poses) that iteration i's residual trains on and its rollouts are collected in: the
        next objects O_{i+1}, in the environments E_i and catalog poses P_i of D_i. Rollouts vary the objects only, as
        the paper's ("rollout in simulation with objects randomization"); A_EP then spreads the successes over E_{i+1}
        and P_{i+1}. Poses outside D_i would measure the base's pose generalisation instead: at iteration 1 (5 poses in
        D_1) its rollouts at continuous random poses succeeded 1.25% of the time against 32% at a pose of D_1."""
        cur = self.preset.iteration(i)
        return self.preset.iteration(i + 1).objects, cur.env_ids, cur.pose_ids(self.task)

    def residual(self, i: int) -> dict:
        objects, env_ids, pose_ids = self._rollout_scenario_set(i)
        ev = self.preset.evaluation
        config = {"stage": "residual", "iteration": i, "residual": self.preset.residual, "objects": list(objects), "env_ids": list(env_ids),
                  "pose_ids": list(pose_ids), "evaluation": ev, "seed": self.seed,
                  "base": self.run_dir.output_hash(f"iter{i}/diffusion", f"iter{i}/diffusion")}

        def body():
            from dexfly.catalog import load_catalog
            from dexfly.policies.residual.fit import EvalSet, fit

            eval_set = EvalSet(env_id=load_catalog().environments[0].id, pose_ids=tuple(ev["t_o_pose_ids"]), seeds=tuple(ev["seeds"]))
            base_result, base_from = self._donors_base_t_o(i, config)
            res = fit(self.task, self.run_dir.path(f"iter{i}/diffusion"), tuple(objects), tuple(env_ids),
                      self.preset.residual_config(run_seed=self.seed), self.run_dir.path(f"iter{i}/residual"), pose_ids=pose_ids, eval_set=eval_set,
                      progress=self.progress, video=self.video, log=self.log, mesh=self.mesh, base_result=base_result, env_config=self.env_config)
            return [f"iter{i}/residual"], {"t_o_base": res.base_success["mean"], "t_o_combined": res.combined_success["mean"],
                                           "env_steps": int(res.state.env_steps), **({"t_o_base_from": base_from} if base_from else {})}

        return self._stage(f"iter{i}/residual", config, body)

    def _donors_base_t_o(self, i: int, config: dict) -> tuple[dict | None, str | None]:
        """(T_O^{i+1} of the base, the donor it is from) when a donor's finished, intact `iter<i>/residual` evaluated the
        same base checkpoint on the same objects, scenes and seeds over as many devices: a residual stage that differs
        from the donor's in its residual settings alone (a comparison made with --donors) reuses the base's episodes
        instead of rerunning them (~7 minutes on the 2-core CPU with the Grasp `cpu` preset). (None, None) otherwise."""
        from dexfly.policies.residual.checkpoint import EVAL_FILE

        same = json.loads(json.dumps({k: config[k] for k in ("objects", "evaluation", "base")}, default=str))  # as records hold it
        for donor in self.donors:
            rec = donor.intact_record(f"iter{i}/residual")
            if rec is None or rec.get("devices") != devices.size(self.mesh) or any(rec["config"].get(k) != v for k, v in same.items()):
                continue
            saved = json.loads(donor.path(f"iter{i}/residual/{EVAL_FILE}").read_text())
            return saved["base_success"], str(donor.root)
        return None, None

    def collect(self, i: int) -> dict:
        objects, env_ids, pose_ids = self._rollout_scenario_set(i)
        per_object = self.preset.rollouts_per_object
        config = {"stage": "collect", "iteration": i, "objects": list(objects), "env_ids": list(env_ids), "pose_ids": list(pose_ids),
                  "per_object": per_object,
                  "batch_size": self.preset.collect_batch_size, "seed": self.seed,
                  "residual": self.run_dir.output_hash(f"iter{i}/residual", f"iter{i}/residual") if self.use_residual else None}
        if not self.use_residual:  # the ablation rolls out the base alone (the key is absent for the plain flywheel)
            config["base"] = self.run_dir.output_hash(f"iter{i}/diffusion", f"iter{i}/diffusion")

        def body():
            from dexfly.collect import collect
            from dexfly.policies.diffusion import load_run
            from dexfly.policies.residual.checkpoint import load_combined
            from dexfly.scenes import sample_object_scenes

            if self.use_residual:
                base, hook, params, _ = load_combined(self.run_dir.path(f"iter{i}/residual"), task=self.task)
            else:
                (base, _, _), hook, params = load_run(self.run_dir.path(f"iter{i}/diffusion"), task=self.task), None, None
            specs = sample_object_scenes(self.task, tuple(objects), tuple(env_ids), per_object, seed=self.seed * 1000 + i, pose_ids=pose_ids)
            with ProgressCallback(f"iter{i} rollouts", enabled=self.progress) as on_batch:
                episodes, stats = collect(self.task, base, specs, hook=hook, hook_params=params, seed=self.seed * 1000 + i,
                                          batch_size=self.preset.collect_batch_size, on_batch=on_batch, mesh=self.mesh, env_config=self.env_config)
            self.log(f"iter{i}: {stats.successes}/{stats.attempts} rollouts succeeded ({stats.success_rate:.2f}), {stats.kept} kept")
            outputs = [f"iter{i}/collect.json"]
            if episodes:
                rel = rollouts_file(i)
                self._write(self.run_dir.path(rel), episodes, {"flywheel_stage": f"iter{i}/collect"})
                outputs.insert(0, rel)
            atomic_write_text(self.run_dir.path(f"iter{i}/collect.json"), json.dumps(stats.to_dict(), indent=2))
            if self.video and self.use_residual:  # without a residual the combined policy is the base: t_oep.mp4 shows it
                combined_t_oep_video(self.task, self.preset, base, hook, params, self.run_dir.path(f"iter{i}/t_oep_combined.mp4"), mesh=self.mesh,
                                     env_config=self.env_config)
                outputs.append(f"iter{i}/t_oep_combined.mp4")
            return outputs, {**stats.to_dict(), "policy": "combined" if self.use_residual else "base"}

        return self._stage(f"iter{i}/collect", config, body)

    def augment(self, i: int) -> dict:
        nxt = self.preset.iteration(i + 1)
        collected = self.run_dir.record(f"iter{i}/collect")
        config = {"stage": "augment", "iteration": i, "c_aug": nxt.to_dict(), "augment": self.preset.augment, "seed": self.seed,
                  "keep_previous_data": self.preset.keep_previous_data, "rollouts": collected["outputs"] if collected else None,
                  "previous": self.run_dir.output_hash("warmup" if i == 1 else f"iter{i - 1}/augment", f"d{i}.hdf5")}
        if not self.augment_rollouts:  # the ablation keeps the rollouts as they are (absent for the plain flywheel)
            config["augment_rollouts"] = False
        else:
            config["grid_start"] = "per_object"  # see body; absent from records made before, whose D_{i+1} repeated C_aug's first entries
        min_held = self.preset.rollout_min_held_steps
        if min_held:  # absent when off, so that records made before the filter existed still match
            config["rollout_min_held_steps"] = min_held
        smoothing = self.preset.rollout_source_smoothing if self.augment_rollouts else 0
        if smoothing:  # absent when off, as above
            config["rollout_source_smoothing"] = smoothing
        per_object = self.preset.rollout_sources_per_object if self.augment_rollouts else 0
        if per_object:  # absent when off, as above
            config["rollout_sources_per_object"] = per_object
        seed_share = self.preset.seed_share(i + 1) if self.augment_rollouts else 0.0
        if seed_share:  # absent when off, as above
            config["seed_source_share"] = seed_share
            config["seed_demo"] = content_hash(self.seed_file)

        def body():
            rel = rollouts_file(i)
            rollouts = self.run_dir.path(rel)
            written = rel in collected["outputs"]  # and hash-checked when the collect stage was
            if rollouts.exists() and not written:  # a file put there by hand (or left by another run) is nothing this run made
                raise StageError(f"iter{i}/augment: {rollouts} is not an output of stage 'iter{i}/collect' (it kept no rollouts); "
                                 f"remove the file, or rerun with --redo-from iter{i}/collect")
            sources = list(dataset.read_dataset(rollouts, task=self.task).episodes) if written else []
            summary = {"per_object": {}, "augmented": self.augment_rollouts}
            if min_held:
                sources, summary["held_filter"] = held_sources(sources, min_held, where=rollouts)
                self.log(f"iter{i}: {len(sources)} of {summary['held_filter']['rollouts']} rollouts held for >= {min_held} "
                         f"final steps: kept as A_EP sources")
            if per_object:
                sources, summary["source_choice"] = best_sources(sources, per_object, where=rollouts)
                self.log(f"iter{i}: A_EP sources: the {per_object} longest-held of each object's successful rollouts, "
                         f"{len(sources)} of {summary['source_choice']['rollouts']}")
            by_object: dict[str, list] = {}
            for ep in sources:
                by_object.setdefault(ep.object_ids[0], []).append(ep)
            generated = []
            if not self.augment_rollouts:
                generated = sources  # D_O^i itself: no A_EP, so no generation attempts either
            else:
                # per object of D_{i+1}: (demos from the seed, demos from its rollouts); without a seed share only the
                # objects with successful rollouts, each wholly from them
                objects = sorted(set(nxt.objects) | set(by_object)) if seed_share else sorted(by_object)
                share = math.ceil(nxt.trajectories / len(objects)) if objects else 0
                seed_eps = self._seed_episodes() if seed_share else []
                for k, obj in enumerate(objects):
                    eps = by_object.get(obj, [])
                    from_seed = (round(share * seed_share) if eps else share) if seed_share else 0
                    # each object's share of demos is smaller than E x P; started at entry 0 every object would take
                    # the same first environments and poses (measured: D_3 of runs/fw_fast held 10 of C_aug^3's
                    # 12 environments and 10 of its 15 poses), so object k starts where object k-1's share ended
                    entry = {}
                    if from_seed:  # the seed replayed as recorded, as in the warm-up
                        got, stats = self._augment_object(seed_eps, obj, nxt, from_seed, grid_start=k * share,
                                                          seed=self.seed * 1000 + 10 * i + k + 500)
                        generated += got
                        entry["from_seed"] = {"generated": stats.generated, "successes": stats.successes, "attempts": stats.attempts}
                    if share - from_seed:
                        got, stats = self._augment_object(eps, obj, nxt, share - from_seed, grid_start=k * share + from_seed,
                                                          seed=self.seed * 1000 + 10 * i + k, min_held=min_held, smoothing=smoothing)
                        generated += got
                        entry.update(sources=len(eps), generated=stats.generated, successes=stats.successes, attempts=stats.attempts)
                    summary["per_object"][obj] = entry
            if not sources:
                self.log(f"[yellow]iter{i}: no successful rollouts: D_{i + 1} holds "
                         + ("only demos from the seed" if seed_share else "no new data"))
            # A_EP's success rate is successes / attempts: a batch runs whole, so it may succeed more often than the
            # demos kept (`generated`, at most the number wanted) and generated / attempts would understate it.
            # The top-level successes and attempts are A_EP's from the rollouts, `from_seed` those from the seed (with a
            # seed share); `generated` counts every demo D_{i+1} gains
            attempts = sum(v.get("attempts", 0) for v in summary["per_object"].values())
            successes = sum(v.get("successes", 0) for v in summary["per_object"].values())
            summary.update(generated=len(generated), successes=successes, attempts=attempts,
                           success_rate=successes / attempts if attempts else None)
            if seed_share:
                seeded = [v["from_seed"] for v in summary["per_object"].values() if "from_seed" in v]
                summary["from_seed"] = {key: sum(v[key] for v in seeded) for key in ("generated", "successes", "attempts")}
                summary["from_seed"]["success_rate"] = (summary["from_seed"]["successes"] / summary["from_seed"]["attempts"]
                                                        if summary["from_seed"]["attempts"] else None)
            previous = list(dataset.read_dataset(self._d(i), task=self.task).episodes) if self.preset.keep_previous_data else []
            data = previous + generated
            if not data:
                raise StageError(f"iter{i}/augment: D_{i + 1} would be empty (no successful rollouts and keep_previous_data is off)")
            self._write(self._d(i + 1), data, {"flywheel_stage": f"iter{i}/augment"})
            return [f"d{i + 1}.hdf5"], {**summary, **dataset_diversity(data)}

        return self._stage(f"iter{i}/augment", config, body)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        from dexfly.flywheel.report import write_report

        for name in self.names():
            if name == "warmup":
                self.warmup()
            else:  # iter<i>/<stage>: the method of that name, for iteration i
                iteration, stage = name.split("/")
                getattr(self, stage)(int(iteration.removeprefix("iter")))
            if name == self.stop_after:
                self.log(f"stopped after {name} (stop_after); the same run without it goes on from there")
                break
        return write_report(self)


def run_flywheel(task: str, preset: str, out, *, iterations: int = 3, seed: int = 0, redo_from: str | None = None, **kw) -> dict:
    fw = Flywheel(task, preset, out, iterations=iterations, seed=seed, **kw)
    if redo_from:
        fw.redo_from(redo_from)
    return fw.run()


__all__ = ["Flywheel", "augment_object", "best_sources", "combined_t_oep_video", "dataset_diversity", "evaluate_t_oep",
           "held_sources", "run_flywheel", "stage_names", "stage_outputs", "train_base"]
