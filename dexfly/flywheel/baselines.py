"""Baselines and ablations against the flywheel (the paper's Tables 2 and 3 and Figure 5), on the same T_OEP set.

    suite = Baselines("grasp", "cpu", "runs/baselines_grasp", methods=("replay-1", "flywheel"), flywheel_run="runs/flywheel_grasp")
    tables = suite.run()            # every unfinished method, then table2.json / .md, table3.md, figure5.png

Methods (ids as `--methods` takes them):
  human-default   20 teleoperation stand-in demos (`dexfly.teleop`, human-like variation) in the seed's scene
  human-enhanced  20 such demos spread over the environments (and poses) of the flywheel's last iteration
  replay-1        A_EP from the single seed over the objects, environments and poses of the last iteration
  replay-10       the same from up to 10 stand-in demos in 10 scenes of the last iteration (objects, environments, poses)
  no-residual     the flywheel, rollouts by the base policy alone (`Flywheel(residual=False)`)
  no-aep          the flywheel, D_{i+1} = the successful rollouts themselves (`Flywheel(augment_rollouts=False)`)
  no-both         both switched off
  flywheel        the flywheel itself (a finished run given as `flywheel_run`, or run here)
The four data sources end like the flywheel's last iteration: the base policy trained with the preset's
DiffusionConfig (same network, same step budget) on their data, scored on T_OEP with the preset's seeds
(`loop.train_base`, `loop.evaluate_t_oep`). The replays generate as many trajectories as the flywheel's last
dataset is scheduled to hold (`last_dataset_size`). The ablations are flywheel runs (their own Table 1 too);
their stages identical to another finished run's (same config hash) are copied from it, not recomputed.

Layout of `out`: `flywheel.json` (the suite: task, preset, seed, iterations), one resumable run folder per method
(`<method>/`, a `stages.RunFolder`; ablations and `flywheel` are flywheel runs), `flywheel_run.json` (where
the flywheel's results are), and the tables. The tables are built from the eval.json files and stage records on
disk (`build_tables`), never from memory: editing a result and rebuilding changes them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from jax.sharding import Mesh

import envs
from dexfly import dataset, devices
from dexfly.augment.generate import ATTEMPTS_PER_DEMO
from dexfly.catalog import load_catalog, main_role
from dexfly.flywheel.loop import Flywheel, augment_object, dataset_diversity, evaluate_t_oep, train_base
from dexfly.flywheel.report import generation_successes
from dexfly.flywheel.schedule import Preset, load_preset
from dexfly.flywheel.stages import RunFolder, StageError, content_hash
from dexfly.flywheel.testsets import testset_path
from dexfly.paths import DEMOS_DIR
from dexfly.teleop import HumanVariation
from dexfly.utils import atomic_write_text

METHODS = ("human-default", "human-enhanced", "replay-1", "replay-10", "no-residual", "no-aep", "no-both", "flywheel")
LABELS = {"human-default": "Human Demo (Default)", "human-enhanced": "Human Demo (Enhanced)", "replay-1": "Replay-only, 1 seed",
          "replay-10": "Replay-only, 10 seeds", "no-residual": "Flywheel w/o residual", "no-aep": "Flywheel w/o A_EP",
          "no-both": "Flywheel w/o both", "flywheel": "DexFlyWheel"}
ABLATIONS = {"no-residual": {"residual": False}, "no-aep": {"augment_rollouts": False}, "no-both": {"residual": False, "augment_rollouts": False}}
DATA_SOURCES = ("human-default", "human-enhanced", "replay-1", "replay-10")
# Run order: the flywheel first, so the ablations can copy its identical stages (no-both also no-residual's).
RUN_ORDER = ("flywheel", "no-residual", "no-aep", "no-both", "replay-1", "replay-10", "human-default", "human-enhanced")
POINTER_FILE = "flywheel_run.json"


@dataclass(frozen=True)
class BaselineConfig:
    """Sizes of the data-source baselines (the paper's: 20 human demos, 10 DexMimicGen sources)."""

    human_demos: int = 20
    """Stand-in demos of human-default and human-enhanced."""
    replay_sources: int = 10
    """Stand-in source demos of replay-10."""
    variation: HumanVariation = field(default_factory=HumanVariation)
    """The stand-in operator's keyframe and timing variation."""
    attempts_per_demo: int = ATTEMPTS_PER_DEMO
    """Attempt budget per wanted demo, for the stand-in and for A_EP replay (as the flywheel's A_EP)."""
    teleop_batch_size: int = 8
    """Stand-in attempts run at once (one compiled shape)."""


def parse_methods(methods) -> tuple[str, ...]:
    """Method ids (or "all") -> ids in METHODS order; ValueError naming unknown ids."""
    methods = tuple(methods)
    if "all" in methods:
        return METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method id(s) {unknown}; known: {list(METHODS)} (or all)")
    if not methods:
        raise ValueError(f"no methods given; known: {list(METHODS)} (or all)")
    return tuple(m for m in METHODS if m in methods)


def last_dataset_size(preset: Preset, iterations: int) -> int:
    """Trajectories the flywheel's last dataset D_n is scheduled to hold: the sum of the iterations' sizes when D_{i+1}
    keeps D_i, else the last iteration's own."""
    if preset.keep_previous_data:
        return sum(preset.iteration(i).trajectories for i in range(1, iterations + 1))
    return preset.iteration(iterations).trajectories


def last_iteration(run: RunFolder) -> int:
    """The highest iteration whose evaluation finished in a flywheel run folder (0: none)."""
    done = [int(f.name[4:].split("__")[0]) for f in (run.root / "stages").glob("iter*__evaluate.json")]
    return max(done, default=0)


def check_flywheel_run(path, *, task: str, preset: str, seed: int, iterations: int, impl: str = "jax") -> RunFolder:
    """A finished plain flywheel run of this task, preset, seed and MJX implementation whose last iteration is
    `iterations`, with an intact last evaluation; StageError naming the folder and the problem otherwise."""
    run = RunFolder.existing(path, task=task, preset=preset, seed=seed, impl=impl)
    last = last_iteration(run)
    if last == 0:
        raise StageError(f"flywheel run {run.root} has not finished an iteration (no iter<i>/evaluate record); finish it first")
    if last != iterations or any(run.record(s) for s in (f"iter{last}/residual", f"iter{last}/collect")):
        raise StageError(f"flywheel run {run.root} is not a finished {iterations}-iteration run (its last evaluated iteration is "
                         f"{last}); pass --iterations {last}, or finish it with experiments/flywheel.py --iterations {iterations}")
    stage = f"iter{iterations}/evaluate"
    run.done(stage, run.record(stage)["config"])  # its outputs still match their hashes (else StageError naming them)
    return run


# ---------------------------------------------------------------------------------------------- tables (from disk)


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _record(root: Path, stage: str) -> dict | None:
    return _load(root / "stages" / (stage.replace("/", "__") + ".json"))


def method_root(out: Path, method: str) -> Path | None:
    """Where a method's run folder is: `out/<method>`, or for `flywheel` the run `flywheel_run.json` names."""
    if method == "flywheel":
        pointer = _load(out / POINTER_FILE)
        return Path(pointer["run"]) if pointer else None
    return out / method


def method_eval_path(out: Path, method: str, iterations: int) -> Path | None:
    root = method_root(out, method)
    if root is None:
        return None
    return root / (f"iter{iterations}/eval.json" if method == "flywheel" or method in ABLATIONS else "eval.json")


def _generation_rows(method: str, root: Path, iterations: int) -> list[dict]:
    """Table 3's rows of one method: per data source, successes / attempts summed over its stages on disk."""
    rows: dict[str, dict] = {}

    def add(source: str, it: int | None, ok: int | None, attempts) -> None:
        if attempts:
            r = rows.setdefault(source, {"method": method, "source": source, "successes": 0, "attempts": 0, "per_iteration": {}})
            if it is not None:
                r["per_iteration"][it] = None if ok is None else ok / attempts
            if ok is None:  # a record from before success counts were kept: left out of the sum rather than guessed
                r.setdefault("not_recorded", []).append(it)
                return
            r["successes"] += int(ok)
            r["attempts"] += int(attempts)

    if method in DATA_SOURCES:
        for stage in ("sources", "demos", "augment"):
            rec = _record(root, stage)
            if rec:
                s = rec["summary"]
                add(s["source"], None, generation_successes(s), s["attempts"])
    else:
        for i in range(1, iterations + 1):
            made = _record(root, "warmup" if i == 1 else f"iter{i - 1}/augment")
            if made and made["summary"].get("augmented", True):
                add("A_EP from the seed" if i == 1 else "A_EP from rollouts", i, generation_successes(made["summary"]), made["summary"].get("attempts"))
                if seeded := made["summary"].get("from_seed"):  # a preset's seed_source_share: part of D_i replayed from the seed
                    add("A_EP from the seed", i, seeded["successes"], seeded["attempts"])
            collected = _record(root, f"iter{i}/collect")
            if collected:
                s = collected["summary"]
                add(f"{'base' if s.get('policy') == 'base' else 'combined'}-policy rollouts", i, s["successes"], s["attempts"])
    for r in rows.values():
        r["success_rate"] = r["successes"] / r["attempts"] if r["attempts"] else None
    return list(rows.values())


def _trajectories(method: str, root: Path, iterations: int) -> int | None:
    """Trajectories in the dataset the method's scored base policy was trained on (its stage record)."""
    if method in DATA_SOURCES:
        rec = _record(root, "augment") or _record(root, "demos")
    else:
        rec = _record(root, "warmup" if iterations == 1 else f"iter{iterations - 1}/augment")
    return rec["summary"].get("trajectories") if rec else None


def build_tables(out, task: str, preset: str, iterations: int) -> dict:
    """Table 2 (T_OEP success per method), Table 3 (generation success per data source) and the trajectories each
    scored policy was trained on, from the eval.json files and stage records under `out` (methods without a
    finished evaluation are left out)."""
    out = Path(out)
    table2, table3, trajectories = {}, [], {}
    for m in METHODS:
        path = method_eval_path(out, m, iterations)
        if path is None or not path.exists():
            continue
        t_oep = json.loads(path.read_text())["t_oep"]
        table2[m] = {"mean": t_oep["mean"], "std": t_oep["std"], "per_seed": list(t_oep["per_seed"])}
        root = method_root(out, m)
        trajectories[m] = _trajectories(m, root, iterations)
        table3 += _generation_rows(m, root, iterations)
    return {"task": task, "preset": preset, "iterations": iterations, "table2": table2, "table3": table3, "trajectories": trajectories}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def table2_markdown(tables: dict) -> str:
    lines = [f"# Table 2: success on T_OEP, {tables['task']}, preset `{tables['preset']}`", "",
             "| method | id | trajectories | SR in T_OEP (%) | per seed (%) |", "|---|---|---|---|---|"]
    for m, r in tables["table2"].items():
        lines.append(f"| {LABELS[m]} | `{m}` | {tables['trajectories'].get(m) or '—'} | {_pct(r['mean'])} ± {_pct(r['std'])} | "
                     f"{', '.join(_pct(v) for v in r['per_seed'])} |")
    return "\n".join(lines) + "\n"


def table3_markdown(tables: dict) -> str:
    lines = [f"# Table 3: generation success rate per data source, {tables['task']}, preset `{tables['preset']}`", "",
             "| method | data source | successes / attempts | success rate (%) | per iteration (%) |", "|---|---|---|---|---|"]
    for r in tables["table3"]:
        per_it = ", ".join(f"i={i}: {_pct(v)}" for i, v in sorted(r["per_iteration"].items(), key=lambda kv: int(kv[0]))) or "—"
        lines.append(f"| {LABELS[r['method']]} | {r['source']} | {r['successes']} / {r['attempts']} | {_pct(r['success_rate'])} | {per_it} |")
    return "\n".join(lines) + "\n"


def plot_figure5(tables: dict, path: Path) -> None:
    """Bars of T_OEP success (mean ± std over seeds) per method, like the paper's Figure 5: data sources, ablations,
    the flywheel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dexfly.utils import atomic_path

    methods = list(tables["table2"])
    colour = lambda m: "tab:gray" if m in DATA_SOURCES else "tab:orange" if m in ABLATIONS else "tab:blue"  # noqa: E731
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(methods) + 1.5), 3.8), dpi=120)
    means = [100 * tables["table2"][m]["mean"] for m in methods]
    stds = [100 * tables["table2"][m]["std"] for m in methods]
    ax.bar(range(len(methods)), means, yerr=stds, capsize=3, color=[colour(m) for m in methods])
    for k, (v, e) in enumerate(zip(means, stds)):
        ax.text(k, v + e + 1.5, f"{v:.1f}", ha="center", fontsize=7)  # above the error bar, not under it
    ax.set_xticks(range(len(methods)), [LABELS[m] for m in methods], rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="success rate on T_OEP (%)", ylim=(0, 105), title=f"baselines and ablations: {tables['task']} ({tables['preset']})")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def write_tables(out, task: str, preset: str, iterations: int, *, console=None) -> dict:
    """Build the tables from disk, write table2.json, table2.md, table3.md, figure5.png under `out`, print them."""
    from rich.console import Console
    from rich.table import Table

    out = Path(out)
    tables = build_tables(out, task, preset, iterations)
    atomic_write_text(out / "table2.json", json.dumps(tables["table2"], indent=2))
    atomic_write_text(out / "table2.md", table2_markdown(tables))
    atomic_write_text(out / "table3.md", table3_markdown(tables))
    if tables["table2"]:
        plot_figure5(tables, out / "figure5.png")
    console = console or Console()
    t2 = Table(title=f"Table 2: SR in T_OEP, {task} ({preset})")
    for col in ("method", "trajectories", "SR in T_OEP (%)"):
        t2.add_column(col)
    for m, r in tables["table2"].items():
        t2.add_row(LABELS[m], str(tables["trajectories"].get(m) or "—"), f"{_pct(r['mean'])} ± {_pct(r['std'])}")
    t3 = Table(title=f"Table 3: generation success rate, {task} ({preset})")
    for col in ("method", "data source", "successes / attempts", "SR (%)"):
        t3.add_column(col)
    for r in tables["table3"]:
        t3.add_row(LABELS[r["method"]], r["source"], f"{r['successes']} / {r['attempts']}", _pct(r["success_rate"]))
    console.print(t2)
    console.print(t3)
    console.print(f"tables in {out}")
    return tables


# ---------------------------------------------------------------------------------------------- the suite


class Baselines:
    """The methods of one task and preset in the run folder `out`; `run()` runs every unfinished one, then writes
    the tables."""

    def __init__(self, task: str, preset: str | Preset, out, *, methods=("all",), iterations: int = 3, seed: int = 0,
                 flywheel_run=None, config: BaselineConfig = BaselineConfig(), log: Callable[[str], Any] = print, progress: bool = True,
                 video: bool = True, mesh: Mesh | None = None, impl: str = "jax"):
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        envs.check_impl(impl)  # before the suite folder records it
        self.methods = parse_methods(methods)
        self.task = task
        self.preset = preset if isinstance(preset, Preset) else load_preset(task, preset)
        self.n, self.seed, self.config = iterations, seed, config
        self.log, self.progress, self.video, self.mesh = log, progress, video, mesh
        self.env_config = envs.EnvConfig(impl=impl)  # every method simulates with it; its impl is in every run's identity
        # checked before the suite folder is made, so a wrong --flywheel-run leaves nothing behind
        self.flywheel_run = (check_flywheel_run(flywheel_run, task=task, preset=self.preset.name, seed=seed, iterations=iterations, impl=impl)
                             if flywheel_run is not None else None)
        self.out = RunFolder.open(out, task=task, preset=self.preset.name, seed=seed, variant={"suite": "baselines", "iterations": iterations},
                                  impl=impl)
        self.main_role = main_role(task)
        self.seed_file = DEMOS_DIR / f"{task}_seed.hdf5"

    def run(self) -> dict:
        for m in RUN_ORDER:
            if m in self.methods:
                self.log(f"[bold cyan]== {m}: {LABELS[m]}")
                if m == "flywheel":
                    self.run_flywheel()
                elif m in ABLATIONS:
                    self.run_ablation(m)
                else:
                    self.run_data_source(m)
        return write_tables(self.out.root, self.task, self.preset.name, self.n)

    # ------------------------------------------------------------------ flywheel and ablations
    def _flywheel(self, folder: Path, donors=(), **ablation) -> Flywheel:
        return Flywheel(self.task, self.preset, folder, iterations=self.n, seed=self.seed, log=self.log, progress=self.progress,
                        video=self.video, mesh=self.mesh, donors=tuple(donors), impl=self.env_config.impl, **ablation)

    def _donors(self, exclude: str) -> list[Path]:
        """Finished runs whose identical stages a flywheel variant may copy: the flywheel, then the ablations."""
        found = [self.flywheel_run.root] if self.flywheel_run else []
        found += [self.out.root / m for m in ("flywheel", *ABLATIONS) if m != exclude and (self.out.root / m / "flywheel.json").exists()]
        return found

    def run_flywheel(self) -> Path:
        if self.flywheel_run is not None:
            root = self.flywheel_run.root
            self.log(f"flywheel: reusing the finished run {root}")
        else:
            root = self.out.root / "flywheel"
            self._flywheel(root, self._donors("flywheel")).run()
        atomic_write_text(self.out.root / POINTER_FILE, json.dumps({"run": str(root), "iterations": self.n}, indent=2))
        return root

    def run_ablation(self, method: str) -> Path:
        root = self.out.root / method
        self._flywheel(root, self._donors(method), **ABLATIONS[method]).run()
        return root

    # ------------------------------------------------------------------ data sources
    def _stage(self, run: RunFolder, name: str, config: dict, body: Callable[[], tuple[list[str], dict]]) -> dict:
        """Run `body` unless the stage finished with this config (RunFolder.run_stage, as the flywheel's stages)."""
        label = f"{run.root.name}/{name}"
        return run.run_stage(name, config, body, label=label, watch=f"baselines {self.task} {label}", log=self.log,
                             devices=devices.size(self.mesh))

    def _write(self, path: Path, episodes, method: str) -> None:
        env_args = dict(dataset.read_dataset(self.seed_file, task=self.task).env_args)
        dataset.write_dataset(path, episodes, task=self.task, env_args=env_args, seed=self.seed, extra_attrs={"baseline": method})

    def _seed_episodes(self) -> list:
        return list(dataset.read_dataset(self.seed_file, task=self.task).episodes)

    def run_data_source(self, method: str) -> Path:
        """Data (stand-in demos or A_EP replay) -> the base policy -> T_OEP, each a resumable stage."""
        run = RunFolder.open(self.out.root / method, task=self.task, preset=self.preset.name, seed=self.seed, variant={"baseline": method},
                             impl=self.env_config.impl)
        if method.startswith("human-"):
            data_stage = self._human_demos(run, method)
        else:
            data_stage = self._replay(run, method)
        diffusion = {"stage": "diffusion", "diffusion": self.preset.diffusion, "seed": self.seed,
                     "data": run.output_hash(data_stage, "data.hdf5")}
        self._stage(run, "diffusion", diffusion, lambda: (["diffusion"], train_base(
            self.task, self.preset, run.path("data.hdf5"), run.path("diffusion"), seed=self.seed, progress=self.progress, log=self.log,
            mesh=self.mesh)))
        evaluate = {"stage": "evaluate", "evaluation": self.preset.evaluation, "t_oep": content_hash(testset_path(self.task)),
                    "base": run.output_hash("diffusion", "diffusion")}

        def body():
            from dexfly.policies.diffusion import load_run

            base, _, _ = load_run(run.path("diffusion"), task=self.task)
            result = evaluate_t_oep(self.task, self.preset, base, video=run.path("t_oep.mp4") if self.video else None, mesh=self.mesh,
                                    progress=self.progress, title=f"{method} evaluation", env_config=self.env_config)
            atomic_write_text(run.path("eval.json"), json.dumps(result, indent=2))
            self.log(f"{method}: T_OEP success {result['t_oep']['mean']:.3f} ± {result['t_oep']['std']:.3f}")
            return ["eval.json"] + (["t_oep.mp4"] if self.video else []), {"t_oep": result["t_oep"]["mean"]}

        self._stage(run, "evaluate", evaluate, body)
        return run.root

    def _human_scenes(self, method: str, n: int) -> list:
        """human-default: the seed's scene. human-enhanced: the last iteration's environments x poses with the seed's
        object, environments varying fastest (poses in a seeded order), so the first `n` cover the environments evenly."""
        from dexfly.scenes import scene_grid

        seed_ep = self._seed_episodes()[0]
        if method == "human-default":
            return [envs.make_cached(self.task, envs.episode_objects(seed_ep)).scene_from_episode(seed_ep)]
        last = self.preset.iteration(self.n)
        poses = list(last.pose_ids(self.task))
        poses = [poses[k] for k in np.random.default_rng([self.seed, 2718]).permutation(len(poses))]
        obj = dict(envs.episode_objects(seed_ep))[self.main_role]
        return [scene_grid(self.task, objects=(obj,), env_ids=(e,), pose_ids=(p,))[0] for p in poses for e in last.env_ids][:n]

    def _human_demos(self, run: RunFolder, method: str) -> str:
        from dexfly.teleop import record_demos

        n = self.config.human_demos
        specs = self._human_scenes(method, n)
        config = {"stage": "demos", "method": method, "scenes": [dataclasses.asdict(s) for s in specs], "demos": n,
                  "variation": dataclasses.asdict(self.config.variation), "attempts_per_demo": self.config.attempts_per_demo, "seed": self.seed}

        def body():
            episodes, stats = record_demos(self.task, specs, n, variation=self.config.variation, seed=self.seed,
                                           batch_size=self.config.teleop_batch_size, max_attempts=self.config.attempts_per_demo * n,
                                           env_config=self.env_config)
            self.log(f"{method}: {stats.successes}/{stats.attempts} stand-in attempts succeeded")
            if not episodes:
                raise StageError(f"{method}: the teleoperation stand-in succeeded in none of {stats.attempts} attempts")
            self._write(run.path("data.hdf5"), episodes, method)
            return ["data.hdf5"], {"source": "teleoperation stand-in", "generated": len(episodes), **stats.to_dict(), **dataset_diversity(episodes)}

        self._stage(run, "demos", config, body)
        return "demos"

    def _replay_source_scenes(self, n: int) -> list:
        """`n` scenes of the last iteration for replay-10's sources: objects and environments cycled, poses drawn from
        the task's continuous ranges (seeded)."""
        from dexfly.scenes import object_scene

        last = self.preset.iteration(self.n)
        rng = np.random.default_rng([self.seed, 1414])
        pose_set = load_catalog().poses_for(self.task)
        return [object_scene(self.task, last.objects[k % len(last.objects)], last.env_ids[k % len(last.env_ids)], pose_set.sample(rng),
                             f"source_{k:02d}") for k in range(n)]

    def _replay(self, run: RunFolder, method: str) -> str:
        from dexfly.teleop import record_demos

        last = self.preset.iteration(self.n)
        if method == "replay-1":
            sources_hash = content_hash(self.seed_file)
            load_sources = self._seed_episodes
        else:
            n_src = self.config.replay_sources
            specs = self._replay_source_scenes(n_src)
            config = {"stage": "sources", "scenes": [dataclasses.asdict(s) for s in specs], "demos": n_src,
                      "variation": dataclasses.asdict(self.config.variation), "attempts_per_demo": self.config.attempts_per_demo, "seed": self.seed}

            def sources_body():
                episodes, stats = record_demos(self.task, specs, n_src, variation=self.config.variation, seed=self.seed,
                                               batch_size=self.config.teleop_batch_size, max_attempts=self.config.attempts_per_demo * n_src,
                                               env_config=self.env_config)
                if not episodes:
                    raise StageError(f"{method}: the teleoperation stand-in succeeded in none of {stats.attempts} attempts")
                self._write(run.path("sources.hdf5"), episodes, method)
                return ["sources.hdf5"], {"source": "teleoperation stand-in", "generated": len(episodes), **stats.to_dict(),
                                          **dataset_diversity(episodes)}

            self._stage(run, "sources", config, sources_body)
            sources_hash = run.output_hash("sources", "sources.hdf5")
            load_sources = lambda: list(dataset.read_dataset(run.path("sources.hdf5"), task=self.task).episodes)  # noqa: E731
        wanted = last_dataset_size(self.preset, self.n)
        config = {"stage": "augment", "c_aug": last.to_dict(), "trajectories": wanted, "augment": self.preset.augment,
                  "attempts_per_demo": self.config.attempts_per_demo, "seed": self.seed, "sources": sources_hash}

        def body():
            # One A_EP call per object, each over that object x E_n x P_n (grid), as the flywheel augments its rollouts
            sources, generated, attempts, successes = load_sources(), [], 0, 0
            share = math.ceil(wanted / len(last.objects))
            for k, obj in enumerate(last.objects):
                got, stats = augment_object(self.task, self.preset, sources, obj, last, share, max_attempts=self.config.attempts_per_demo * share,
                                            seed=self.seed * 1000 + k, env_config=self.env_config, progress=self.progress, mesh=self.mesh)
                generated += got
                attempts += stats.attempts
                successes += stats.successes
            self.log(f"{method}: A_EP generated {len(generated)} of {wanted} wanted in {attempts} attempts")
            if not generated:
                raise StageError(f"{method}: A_EP generated no successful demo in {attempts} attempts")
            self._write(run.path("data.hdf5"), generated, method)
            # replay-10's sources: those the stand-in made (at most replay_sources)
            source = "A_EP from the seed" if method == "replay-1" else f"A_EP from {len(sources)} stand-in demos"
            return ["data.hdf5"], {"source": source, "generated": len(generated), "successes": successes, "attempts": attempts,
                                   "success_rate": successes / attempts, "wanted": wanted, **dataset_diversity(generated)}

        self._stage(run, "augment", config, body)
        return "augment"


def run_baselines(task: str, preset: str, out, **kw) -> dict:
    return Baselines(task, preset, out, **kw).run()


__all__ = ["ABLATIONS", "BaselineConfig", "Baselines", "LABELS", "METHODS", "build_tables", "check_flywheel_run", "last_dataset_size",
           "parse_methods", "run_baselines", "write_tables"]
