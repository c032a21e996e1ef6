"""The flywheel: schedules and test sets as data, run folders and stage records, the tiny preset end to end."""

from __future__ import annotations

import json
import shutil
import time

import pytest

import envs
from dexfly.catalog import TASKS, load_catalog
from dexfly.flywheel.schedule import load_preset, presets_of
from dexfly.devices import DeviceConfig
from dexfly.flywheel.stages import RunFolder, RunOptions, StageError, content_hash, run_guarded
from dexfly.flywheel.testsets import T_OEP_SIZE, load_t_oep


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_a_schedule_and_a_t_oep_set(task):
    assert {"tiny", "cpu", "paper"} <= set(presets_of(task))
    for name in presets_of(task):
        preset = load_preset(task, name)
        assert preset.iteration(1).objects, "iteration 1 holds the seed's object"
        assert preset.iteration(99) == preset.iterations[-1], "iterations past the schedule repeat its last entry"
    specs = load_t_oep(task)
    assert len(specs) == T_OEP_SIZE and len(set(specs)) == T_OEP_SIZE
    assert all(s.pose_id.startswith("t_oep_") for s in specs)


def test_scripts_turn_user_errors_into_one_line_exits():
    """experiments/flywheel.py and baselines.py run under run_guarded: a result passes through, an unknown task
    or a stage error ends the process with its message, a bug (not a user's error) keeps its traceback."""
    assert run_guarded("grasp", "t", 0, lambda: {"ok": 1}) == {"ok": 1}
    with pytest.raises(SystemExit, match="unknown task 'juggle'"):
        run_guarded("juggle", "t", 0, lambda: None)

    def corrupt():
        raise StageError("iter1/diffusion: output changed since it was recorded")

    with pytest.raises(SystemExit, match="iter1/diffusion: output changed"):
        run_guarded("grasp", "t", 0, corrupt)
    with pytest.raises(ZeroDivisionError):
        run_guarded("grasp", "t", 0, lambda: 1 / 0)


@pytest.mark.parametrize("name", ["flywheel", "baselines"])
def test_scripts_take_the_same_run_options(name, experiment_script):
    """flywheel.py and baselines.py declare how stages run once (`RunOptions`), under the same unprefixed flags, and
    pass them on to `Flywheel` / `Baselines` (one device: no mesh)."""
    import tyro

    args = tyro.cli(experiment_script(name).Args, args=["--impl", "warp", "--no-video", "--no-progress", "--stall-timeout", "5",
                                                        "--devices", "1"])
    assert args.run == RunOptions(impl="warp", video=False, progress=False, stall_timeout=5.0, parallel=DeviceConfig(devices=1))
    assert args.run.run_kwargs() == {"impl": "warp", "video": False, "progress": False, "mesh": None}
    assert tyro.cli(experiment_script(name).Args, args=[]).run == RunOptions()


def test_bad_presets_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        load_preset("grasp", "huge")
    with pytest.raises(ValueError, match="unknown task"):
        load_preset("juggle", "tiny")
    from dexfly.flywheel import schedule

    data = json.loads(schedule.schedule_path("grasp").read_text())
    data["presets"]["tiny"]["iterations"][1]["objects"].append("lift_box_carton")
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    monkeypatch.setattr(schedule, "SCHEDULES_DIR", tmp_path)
    with pytest.raises(ValueError, match="'lift_box_carton' is not a grasp object"):
        load_preset("grasp", "tiny")
    data["presets"]["tiny"]["iterations"][1]["objects"].pop()
    data["presets"]["tiny"]["evaluation"]["t_oep_scenes"] = [4, 40]
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"T_OEP scene indices \[4, 40\] must be .* 0..39"):
        load_preset("grasp", "tiny")
    data["presets"]["tiny"]["evaluation"]["t_oep_scenes"] = [4]
    data["presets"]["tiny"]["rollout_min_held_steps"] = -1
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="rollout_min_held_steps must be a non-negative integer, got -1"):
        load_preset("grasp", "tiny")
    data["presets"]["tiny"]["rollout_min_held_steps"] = 0
    data["presets"]["tiny"]["rollout_source_smoothing"] = 4
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="rollout_source_smoothing must be 0 or an odd window of steps, got 4"):
        load_preset("grasp", "tiny")
    data["presets"]["tiny"]["rollout_source_smoothing"] = 0
    data["presets"]["tiny"]["rollout_sources_per_object"] = 1.5
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="rollout_sources_per_object must be a non-negative integer, got 1.5"):
        load_preset("grasp", "tiny")
    data["presets"]["tiny"]["rollout_sources_per_object"] = 0
    data["presets"]["tiny"]["seed_source_share"] = 1.5
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="seed_source_share must be a number from 0 to 1, got 1.5"):
        load_preset("grasp", "tiny")


def test_sampled_poses_are_an_iteration_option_absent_from_records_when_off(tmp_path, monkeypatch):
    """`sampled_poses` in a schedule iteration turns on per-attempt poses for A_EP into D_i; off (the default) it is
    not part of the iteration's dict, so stage configs of runs made before it hash as they did. A value that is not
    a boolean, or an unknown iteration key, is refused naming the iteration."""
    from dexfly.flywheel import schedule

    assert "sampled_poses" not in load_preset("lift", "cpu").iteration(2).to_dict()
    assert load_preset("grasp", "cpu").iteration(2).to_dict()["sampled_poses"] is True
    data = json.loads(schedule.schedule_path("grasp").read_text())
    monkeypatch.setattr(schedule, "SCHEDULES_DIR", tmp_path)
    data["presets"]["tiny"]["iterations"][0]["sampled_poses"] = False
    data["presets"]["tiny"]["iterations"][1]["sampled_poses"] = True
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    tiny = load_preset("grasp", "tiny")
    assert not tiny.iteration(1).sampled_poses and tiny.iteration(2).sampled_poses
    assert tiny.iteration(2).to_dict()["sampled_poses"] is True
    data["presets"]["tiny"]["iterations"][1]["sampled_poses"] = "yes"
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="iteration 2: sampled_poses must be true or false, got 'yes'"):
        load_preset("grasp", "tiny")
    data["presets"]["tiny"]["iterations"][1].pop("sampled_poses")
    data["presets"]["tiny"]["iterations"][1]["num_pose"] = 3
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"iteration 2: unknown keys \['num_pose'\]"):
        load_preset("grasp", "tiny")


def test_an_iterations_own_seed_share_overrides_the_presets(tmp_path, monkeypatch):
    """`seed_source_share` in a schedule iteration sets the share for that D_i alone (the preset's elsewhere). The
    iteration's dict leaves it out (the augment record holds the share applied). Out of range, it is refused naming
    the iteration."""
    from dexfly.flywheel import schedule

    data = json.loads(schedule.schedule_path("grasp").read_text())
    monkeypatch.setattr(schedule, "SCHEDULES_DIR", tmp_path)
    cpu = data["presets"]["cpu"]
    cpu["seed_source_share"] = 0.25
    cpu["iterations"][1]["seed_source_share"] = 1
    cpu["iterations"][2].pop("seed_source_share", None)
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    preset = load_preset("grasp", "cpu")
    assert [preset.seed_share(i) for i in (2, 3, 4)] == [1.0, 0.25, 0.25]  # past the schedule's end: its last entry's
    assert "seed_source_share" not in preset.iteration(2).to_dict()
    cpu["iterations"][1]["seed_source_share"] = 0
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    assert load_preset("grasp", "cpu").seed_share(2) == 0.0  # an iteration may turn the preset's share off
    cpu["iterations"][1]["seed_source_share"] = -0.5
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="iteration 2: seed_source_share must be a number from 0 to 1, got -0.5"):
        load_preset("grasp", "cpu")


def test_warm_started_bases_train_for_the_presets_warm_start_steps(tmp_path, monkeypatch):
    import dataclasses

    from dexfly.flywheel import schedule

    cpu = load_preset("grasp", "cpu")
    scratch = dataclasses.replace(cpu, warm_start_steps=None)
    assert scratch.diffusion_config(warm=True).total_steps == scratch.diffusion_config().total_steps == cpu.diffusion["total_steps"]
    short = dataclasses.replace(cpu, warm_start=True, warm_start_steps=1234)
    assert short.diffusion_config(warm=True).total_steps == 1234
    assert short.diffusion_config().total_steps == cpu.diffusion["total_steps"], "iteration 1 (no warm start) keeps its steps"
    data = json.loads(schedule.schedule_path("grasp").read_text())
    data["presets"]["tiny"]["warm_start_steps"] = 0
    (tmp_path / "grasp.json").write_text(json.dumps(data))
    monkeypatch.setattr(schedule, "SCHEDULES_DIR", tmp_path)
    with pytest.raises(ValueError, match="warm_start_steps must be a positive integer, got 0"):
        load_preset("grasp", "tiny")


def test_a_seed_in_the_preset_is_its_stages_seed_else_the_runs():
    """Another RL seed on the same base: the preset's residual names it, the base keeps the run's."""
    import dataclasses

    cpu = load_preset("grasp", "cpu")
    assert cpu.residual_config(run_seed=3).seed == 3 and cpu.diffusion_config(run_seed=3).seed == 3
    rl1 = dataclasses.replace(cpu, residual={**cpu.residual, "seed": 1})
    assert rl1.residual_config(run_seed=3).seed == 1 and rl1.diffusion_config(run_seed=3).seed == 3
    assert dataclasses.replace(cpu, diffusion={**cpu.diffusion, "seed": 7}).diffusion_config(warm=True, run_seed=3).seed == 7


def test_rollouts_vary_the_objects_in_the_environments_and_poses_of_the_data(tmp_path):
    """Iteration i's residual and rollouts: the objects O_(i+1) in D_i's environments and catalog poses; the scene
    draw is seeded, and covers only those poses (continuous poses when none are named)."""
    from dexfly.flywheel.loop import Flywheel
    from dexfly.scenes import sample_object_scenes

    fw = Flywheel("grasp", "cpu", tmp_path / "run")
    objects, env_ids, pose_ids = fw._rollout_scenario_set(1)
    assert objects == fw.preset.iteration(2).objects and env_ids == fw.preset.iteration(1).env_ids
    assert pose_ids == fw.preset.iteration(1).pose_ids("grasp") == ("p00", "p01", "p02", "p03", "p04")
    specs = sample_object_scenes("grasp", objects, env_ids, 8, seed=1, pose_ids=pose_ids)
    assert specs == sample_object_scenes("grasp", objects, env_ids, 8, seed=1, pose_ids=pose_ids)
    assert {s.pose_id for s in specs} == set(pose_ids) and {s.env_id for s in specs} == set(env_ids)
    assert [s.objects[0][1] for s in specs] == [o for o in objects for _ in range(8)]
    assert {s.pose_id for s in sample_object_scenes("grasp", objects[:1], env_ids, 4, seed=1)} == {"sampled"}
    with pytest.raises(Exception, match="unknown grasp pose id 'p99'"):
        sample_object_scenes("grasp", objects, env_ids, 2, seed=1, pose_ids=("p99",))


def test_a_preset_scores_the_t_oep_scenes_it_names():
    """`t_oep_scenes`: the first N configurations, or those at the listed indices (tiny Grasp: two cube scenes)."""
    all_specs = load_t_oep("grasp")
    assert load_preset("grasp", "cpu").t_oep_specs() == all_specs
    tiny = load_preset("grasp", "tiny")
    assert tiny.t_oep_specs() == [all_specs[k] for k in tiny.evaluation["t_oep_scenes"]]
    assert load_t_oep("grasp", 3) == all_specs[:3]


def test_a_foreign_or_non_run_folder_is_refused(tmp_path):
    RunFolder.open(tmp_path / "run", task="grasp", preset="tiny", seed=0)
    with pytest.raises(StageError, match="task 'grasp', not 'lift'"):
        RunFolder.open(tmp_path / "run", task="lift", preset="tiny", seed=0)
    with pytest.raises(StageError, match="seed 0, not 1"):
        RunFolder.open(tmp_path / "run", task="grasp", preset="tiny", seed=1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StageError, match="not a flywheel run folder"):
        RunFolder.open(tmp_path / "other", task="grasp", preset="tiny", seed=0)


def test_a_run_on_another_simulation_model_is_refused(tmp_path):
    """flywheel.json records the model's fingerprint; a run simulated on another model (or recorded before the
    fingerprint existed) is neither resumed nor used as a donor or reused flywheel run."""
    run_file = RunFolder.open(tmp_path / "run", task="grasp", preset="tiny", seed=0).root / "flywheel.json"
    meta = json.loads(run_file.read_text())
    assert meta["physics"] == envs.physics_fingerprint("grasp") != envs.physics_fingerprint("lift")
    RunFolder.existing(tmp_path / "run", task="grasp", preset="tiny", seed=0)
    run_file.write_text(json.dumps({**meta, "physics": "0123456789abcdef"}))
    with pytest.raises(StageError, match=r"simulated on model 0123456789abcdef, not this dexfly's grasp model"):
        RunFolder.open(tmp_path / "run", task="grasp", preset="tiny", seed=0)
    run_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "physics"}))
    with pytest.raises(StageError, match="recorded before run folders kept its fingerprint"):
        RunFolder.existing(tmp_path / "run", task="grasp", preset="tiny", seed=0)


def test_a_run_on_another_mjx_impl_is_refused(tmp_path):
    """The MJX implementation is part of a run's identity (Warp and MJX-jax agree to ~1 mm, not bit for bit): a run is
    resumed, or lends its stages, only with its own; plain MJX-jax runs keep their files (no key written)."""
    from dexfly.flywheel.loop import Flywheel

    jax_run = RunFolder.open(tmp_path / "jax", task="grasp", preset="tiny", seed=0)
    assert "impl" not in json.loads((jax_run.root / "flywheel.json").read_text())
    warp_run = RunFolder.open(tmp_path / "warp", task="grasp", preset="tiny", seed=0, impl="warp")
    assert json.loads((warp_run.root / "flywheel.json").read_text())["impl"] == "warp"
    with pytest.raises(StageError, match="simulated with MJX impl 'warp', not 'jax'"):
        RunFolder.open(tmp_path / "warp", task="grasp", preset="tiny", seed=0)
    with pytest.raises(StageError, match="simulated with MJX impl 'jax', not 'warp'"):
        RunFolder.existing(tmp_path / "jax", task="grasp", preset="tiny", seed=0, any_variant=True, impl="warp")  # as a donor
    with pytest.raises(ValueError, match="unknown MJX impl 'cuda'"):
        Flywheel("grasp", "tiny", tmp_path / "bad", impl="cuda")
    assert not (tmp_path / "bad").exists()


def test_the_physics_fingerprint_ignores_comments_and_paths(tmp_path):
    """Comments and the robot file's location do not change the fingerprint; a physics option does."""
    from envs import scene as scene_lib

    cat = load_catalog()
    objects, env = dict(cat.default_objects("grasp")), cat.environments[0]
    src = scene_lib.robot_path("panda_inspire.xml").read_text()

    def fp(text: str, name: str) -> str:
        (tmp_path / name).write_text(text)
        return scene_lib.physics_fingerprint(tmp_path / name, objects, env)

    base = fp(src, "a.xml")
    assert base == envs.physics_fingerprint("grasp")
    assert fp(src.replace("<mujoco model", "<!-- a note -->\n<mujoco model", 1), "b.xml") == base
    assert fp(src.replace('cone="elliptic"', 'cone="pyramidal"'), "c.xml") != base


def test_stage_records(tmp_path):
    run = RunFolder.open(tmp_path / "run", task="grasp", preset="tiny", seed=0)
    (run.root / "out.txt").write_text("data")
    assert not run.done("a", {"x": 1})
    run.finish("a", {"x": 1}, ["out.txt"], 1.0, devices=2)
    assert run.done("a", {"x": 1}) and run.record("a")["devices"] == 2  # beside the time; not part of the config
    with pytest.raises(StageError, match=r"stage 'a' finished with other settings .*changed: x.*--redo-from a"):
        run.done("a", {"x": 2})
    (run.root / "out.txt").write_text("edited")
    with pytest.raises(StageError, match="out.txt changed since the stage finished"):
        run.done("a", {"x": 1})
    assert run.redo_from(["a", "b"], "a", {"a": ["out.txt"]}) == ["a"]
    assert not (run.root / "out.txt").exists() and run.record("a") is None


def test_run_stage_runs_skips_and_copies_from_a_donor(tmp_path):
    calls, said = [], []

    def body(root):
        def run():
            calls.append(root)
            (root / "out.txt").write_text("data")
            return ["out.txt"], {"n": 1}
        return run

    donor = RunFolder.open(tmp_path / "donor", task="grasp", preset="tiny", seed=0)
    rec = donor.run_stage("a", {"x": 1}, body(donor.root), log=said.append)
    assert calls == [donor.root] and rec["summary"] == {"n": 1} and said == ["[bold]a[/bold] ..."]
    assert donor.run_stage("a", {"x": 1}, body(donor.root), log=said.append) == rec and calls == [donor.root]  # finished: skipped
    assert said[-1].startswith("[dim]a: done")
    other = RunFolder.open(tmp_path / "other", task="grasp", preset="tiny", seed=0, variant={"residual": False})
    copied = other.run_stage("a", {"x": 1}, body(other.root), donors=(donor,), label="other/a", log=said.append)
    assert calls == [donor.root] and copied["adopted_from"] == str(donor.root) and (other.root / "out.txt").read_text() == "data"
    assert "other/a: identical to" in said[-1]
    with pytest.raises(StageError, match="finished with other settings"):
        donor.run_stage("a", {"x": 2}, body(donor.root))


def test_a_resumed_stage_records_the_time_of_every_attempt(tmp_path, monkeypatch):
    from dexfly.flywheel import stages

    monkeypatch.setattr(stages, "CLOCK_EVERY_S", 0.05)
    run = RunFolder.open(tmp_path / "run", task="grasp", preset="tiny", seed=0)
    clock = run.root / "stages" / ".a.seconds"
    saved = []

    def killed():  # the process dies inside the stage: only what the clock saved while it ran survives
        time.sleep(0.3)
        saved.append(json.loads(clock.read_text())["seconds"])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.run_stage("a", {"x": 1}, killed, log=lambda _: None)
    assert saved[0] >= 0.1 and json.loads(clock.read_text())["seconds"] >= 0.3  # saved while running, then on the way out
    assert run.record("a") is None

    def resumed():
        time.sleep(0.1)
        (run.root / "out.txt").write_text("data")
        return ["out.txt"], {}

    rec = run.run_stage("a", {"x": 1}, resumed, log=lambda _: None)
    assert rec["seconds_in_earlier_attempts"] >= 0.3 and rec["seconds"] >= rec["seconds_in_earlier_attempts"] + 0.1
    assert not clock.exists() and run.done("a", {"x": 1})
    assert "seconds_in_earlier_attempts" not in run.run_stage("b", {"x": 1}, resumed, log=lambda _: None)  # one attempt
    clock.write_text("{}")  # left by a killed redo: removed with the stage
    run.redo_from(["a", "b"], "a", {"a": ["out.txt"]})
    assert not clock.exists()


# ---------------------------------------------------------------------------------------------- end to end

def test_dataset_diversity_counts_configs_as_the_paper():
    from types import SimpleNamespace

    from dexfly.flywheel.loop import dataset_diversity

    ep = lambda o, e, p: SimpleNamespace(object_ids=(o,), env_id=e, pose_id=p, extra={})  # noqa: E731
    data = [ep("cube", "studio", "p00"), ep("cube", "oak", "p01"), ep("can", "studio", "p01")]
    assert dataset_diversity(data) == {"objects": 2, "environments": 2, "poses": 2, "configs": 8, "configs_present": 3, "trajectories": 3}


def test_held_steps_and_the_quality_filter_on_sources():
    """`held_steps` counts the final successful steps in a row; the preset's filter keeps the rollouts that held
    at least that long and refuses rollouts recorded without the count."""
    from types import SimpleNamespace

    import numpy as np

    from dexfly.flywheel.loop import held_sources
    from dexfly.rollout import held_steps

    assert held_steps(np.array([0, 1, 1, 0, 1, 1, 1], bool)) == 3
    assert held_steps(np.array([1, 1, 0], bool)) == 0
    assert held_steps(np.ones(5, bool)) == 5
    ep = lambda o, h: SimpleNamespace(object_ids=(o,), extra={"held_steps": h})  # noqa: E731
    kept, summary = held_sources([ep("cube", 120), ep("cube", 20), ep("can", 95), ep("ball", 0)], 95, where="r.hdf5")
    assert [e.object_ids[0] for e in kept] == ["cube", "can"]
    assert summary["kept"] == 2 and summary["rollouts"] == 4
    assert summary["per_object"]["cube"] == {"rollouts": 2, "kept": 1} and summary["per_object"]["ball"] == {"rollouts": 1, "kept": 0}
    old = SimpleNamespace(object_ids=("cube",), extra={})
    with pytest.raises(StageError, match=r"r.hdf5: episodes \[1\] carry no held_steps.*redo from this iteration's collect"):
        held_sources([ep("cube", 120), old], 95, where="r.hdf5")


def test_best_sources_keep_the_longest_held_then_the_smoothest_per_object():
    """`rollout_sources_per_object`'s choice: per object the k rollouts that held longest, ties to the smallest mean
    per-step action change, best first; rollouts recorded without held_steps are refused."""
    from types import SimpleNamespace

    import numpy as np

    from dexfly.flywheel.loop import best_sources

    def ep(o, h, jerk):
        return SimpleNamespace(object_ids=(o,), extra={"held_steps": h}, actions=np.cumsum(np.full((5, 2), jerk), axis=0), name=f"{o}{h}/{jerk}")

    rollouts = [ep("cube", 100, 0.1), ep("cube", 120, 0.5), ep("cube", 120, 0.2), ep("can", 30, 0.1), ep("ball", 90, 0.3)]
    kept, summary = best_sources(rollouts, 2, where="r.hdf5")
    assert [e.name for e in kept] == ["ball90/0.3", "can30/0.1", "cube120/0.2", "cube120/0.5"]
    assert summary["kept"] == 4 and summary["rollouts"] == 5 and summary["per_object"]["cube"] == {"rollouts": 3, "kept_held_steps": [120, 120]}
    assert [e.name for e in best_sources(rollouts, 1, where="r.hdf5")[0]] == ["ball90/0.3", "can30/0.1", "cube120/0.2"]
    with pytest.raises(StageError, match=r"r.hdf5: episodes \[1\] carry no held_steps"):
        best_sources([rollouts[0], SimpleNamespace(object_ids=("cube",), extra={})], 1, where="r.hdf5")


ITERATIONS = 2  # as conftest's session fixture `tiny_run` (the tiny preset, warm-up plus two iterations, run once)


def _strip(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("stage_seconds", "total_seconds")}


def test_generation_rates_count_successes_not_demos_kept(tmp_path):
    """A_EP's generation success is successes / attempts. A per-object augment record from before successes were
    counted holds demos kept / attempts (an understatement): the report shows it as not recorded, not as that rate."""
    from dexfly.flywheel.report import build_report, table1_markdown

    (tmp_path / "stages").mkdir()

    def record(stage, summary):
        rec = {"stage": stage, "seconds": 1.0, "summary": {"objects": 1, "environments": 1, "poses": 1, "configs": 1, "trajectories": 1, **summary}}
        (tmp_path / "stages" / (stage.replace("/", "__") + ".json")).write_text(json.dumps(rec))

    record("warmup", {"generated": 20, "attempts": 40, "success_rate": 0.9})  # before the count: its own A_EP rate
    record("iter1/collect", {"successes": 3, "attempts": 12, "success_rate": 0.25})
    per_object = {"a": {"generated": 7, "successes": 28, "attempts": 28}}
    record("iter1/augment", {"per_object": per_object, "generated": 7, "successes": 28, "attempts": 28, "success_rate": 1.0})
    rates = {(g["iteration"], g["source"]): g["success_rate"] for g in build_report(tmp_path, "grasp", "cpu", 2)["generation"]}
    assert rates == {(1, "A_EP from the seed"): 0.9, (1, "combined-policy rollouts"): 0.25, (2, "A_EP from rollouts"): 1.0}
    record("iter1/augment", {"per_object": {"a": {"generated": 7, "attempts": 28}}, "generated": 7, "attempts": 28, "success_rate": 0.25})
    report = build_report(tmp_path, "grasp", "cpu", 2)
    assert report["generation"][-1]["success_rate"] is None
    assert "| 2 | A_EP from rollouts | — (not recorded) |" in table1_markdown(report)
    record("iter1/augment", {"per_object": {}, "generated": 0, "successes": 0, "attempts": 0, "success_rate": None})
    assert "| 2 | A_EP from rollouts | — |" in table1_markdown(build_report(tmp_path, "grasp", "cpu", 2)), "no attempts is not 'not recorded'"
    assert "sampled_poses" not in table1_markdown(build_report(tmp_path, "grasp", "cpu", 2)), "records without sampled poses: no note"


def test_demos_replayed_from_the_seed_by_a_later_augment_are_their_own_generation_source(tmp_path):
    """With a preset's `seed_source_share`, an augment record counts A_EP from the seed (`from_seed`) apart from A_EP
    from the rollouts: the report lists both for that iteration, and Table 3 adds the seed's to the warm-up's."""
    from dexfly.flywheel.baselines import _generation_rows
    from dexfly.flywheel.report import build_report

    (tmp_path / "stages").mkdir()

    def record(stage, summary):
        rec = {"stage": stage, "seconds": 1.0, "summary": {"objects": 1, "environments": 1, "poses": 1, "configs": 1, "trajectories": 1, **summary}}
        (tmp_path / "stages" / (stage.replace("/", "__") + ".json")).write_text(json.dumps(rec))

    record("warmup", {"generated": 20, "successes": 36, "attempts": 40, "success_rate": 0.9})
    record("iter1/collect", {"successes": 3, "attempts": 12, "success_rate": 0.25})
    from_seed = {"generated": 4, "successes": 6, "attempts": 8, "success_rate": 0.75}
    record("iter1/augment", {"per_object": {"a": {"generated": 3, "successes": 5, "attempts": 10, "from_seed": from_seed}},
                             "generated": 7, "successes": 5, "attempts": 10, "success_rate": 0.5, "from_seed": from_seed})
    rates = {(g["iteration"], g["source"]): g["success_rate"] for g in build_report(tmp_path, "grasp", "cpu", 2)["generation"]}
    assert rates == {(1, "A_EP from the seed"): 0.9, (1, "combined-policy rollouts"): 0.25, (2, "A_EP from rollouts"): 0.5,
                     (2, "A_EP from the seed"): 0.75}
    rows = {r["source"]: r for r in _generation_rows("flywheel", tmp_path, 2)}
    assert (rows["A_EP from the seed"]["successes"], rows["A_EP from the seed"]["attempts"]) == (36 + 6, 40 + 8)
    assert rows["A_EP from the seed"]["per_iteration"] == {1: 0.9, 2: 0.75}
    assert (rows["A_EP from rollouts"]["successes"], rows["A_EP from rollouts"]["attempts"]) == (5, 10)


def test_tiny_preset_end_to_end(tiny_run, capsys):
    out, report = tiny_run
    rows = report["table1"]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[0]["objects"] == 1 and rows[0]["trajectories"] >= 1
    assert rows[0]["poses"] == rows[0]["trajectories"], "the tiny preset's sampled_poses: every warm-up demo at its own pose"
    assert rows[0]["sampled_poses"] and rows[1]["sampled_poses"]
    assert "Iterations 1, 2: A_EP drew every attempt's pose" in (out / "report.md").read_text()
    assert rows[1]["trajectories"] >= rows[0]["trajectories"]  # D_2 keeps D_1 (the tiny preset keeps previous data)
    for r in rows:
        assert 0.0 <= r["t_oep"]["mean"] <= 1.0 and len(r["t_oep"]["per_seed"]) == 1
    assert rows[1]["t_o_base"] is not None and rows[1]["t_o_combined"] is not None
    for name in ("report.json", "report.md", "success.png", "d1.hdf5", "d2.hdf5", "iter1/residual/eval.json", "iter1/collect.json"):
        assert (out / name).exists(), name
    saved = json.loads((out / "report.json").read_text())
    assert _strip(saved) == _strip(report)
    # rerunning skips every stage and prints the same table
    from dexfly.flywheel.loop import Flywheel

    again = Flywheel("grasp", "tiny", out, iterations=ITERATIONS, progress=False, video=False).run()
    assert _strip(again) == _strip(report)
    printed = capsys.readouterr().out
    assert "t_oep_success=" in printed and "sampled_poses" in printed, "the printed table says what its P counts"


def test_interrupted_run_resumes_to_the_same_report(tiny_run, tmp_path):
    """A run stopped before `iter1/collect` finished (its record and outputs, and all later ones, absent) resumes
    from the records on disk to the same report."""
    from dexfly.flywheel.loop import Flywheel

    out, report = tiny_run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    fw = Flywheel("grasp", "tiny", resumed, iterations=ITERATIONS, progress=False, video=False)
    assert fw.redo_from("iter1/collect")[0] == "iter1/collect"
    assert not (resumed / "d2.hdf5").exists()
    assert _strip(Flywheel("grasp", "tiny", resumed, iterations=ITERATIONS, progress=False, video=False).run()) == _strip(report)


def test_a_run_stops_after_the_stage_asked_and_reports_what_is_done(tiny_run, tmp_path):
    """`stop_after` ends the run after that stage, with the report of what is on disk; the later stages stay
    unrun. A stage the run does not have is refused with the run's stage names."""
    from dexfly.flywheel.loop import Flywheel

    out, report = tiny_run
    copy = tmp_path / "stopped"
    shutil.copytree(out, copy)
    Flywheel("grasp", "tiny", copy, iterations=ITERATIONS, progress=False, video=False).redo_from("iter1/residual")
    stopped = Flywheel("grasp", "tiny", copy, iterations=ITERATIONS, progress=False, video=False, stop_after="iter1/evaluate").run()
    assert not (copy / "stages" / "iter1__residual.json").exists() and not (copy / "iter1" / "residual").exists()
    assert stopped["table1"][0] == report["table1"][0]
    assert stopped["table1"][1]["t_oep"] is None and stopped["table1"][1]["t_o_combined"] is None
    assert report["table1"][1]["t_oep"] is not None
    with pytest.raises(StageError, match=r"unknown stage 'iter2/residual' to stop after; this run's stages: \['warmup'"):
        Flywheel("grasp", "tiny", copy, iterations=ITERATIONS, progress=False, video=False, stop_after="iter2/residual")


def test_rollout_smoothing_and_source_choice_reach_a_rollouts_a_ep_and_its_record(tiny_run, tmp_path, monkeypatch):
    """A preset's `rollout_source_smoothing` is the augment stage's `AugmentConfig.source_smoothing` (the warm-up's
    is untouched) and `rollout_sources_per_object` the number of each object's rollouts A_EP gets, the longest-held
    first; both are part of the stage's record: a finished augment stage without them is refused until redone. A
    rollouts file that is not the collect stage's output is refused, not read."""
    import dataclasses

    import dexfly.augment
    from dexfly import dataset
    from dexfly.flywheel.loop import Flywheel
    from dexfly.paths import DEMOS_DIR

    out, _ = tiny_run
    copy = tmp_path / "smoothed"
    shutil.copytree(out, copy)
    # three successful "rollouts" of the cube that held 5, 9 and 7 steps (the seed's motion), in place of the tiny
    # collect stage's (it kept none: a rollouts file it had written is hash-checked and an edit to it refused)
    collect_record = copy / "stages" / "iter1__collect.json"
    assert "iter1/rollouts.hdf5" not in json.loads(collect_record.read_text())["outputs"]
    seed_data = dataset.read_dataset(DEMOS_DIR / "grasp_seed.hdf5", task="grasp")
    seed = seed_data.episodes[0]
    rollouts = copy / "iter1" / "rollouts.hdf5"
    dataset.write_dataset(rollouts, [dataclasses.replace(seed, extra={**seed.extra, "held_steps": h}) for h in (5, 9, 7)],
                          task="grasp", env_args=dict(seed_data.env_args))
    preset = dataclasses.replace(load_preset("grasp", "tiny"), rollout_source_smoothing=3, rollout_sources_per_object=1)
    calls, real = [], dexfly.augment.augment

    def spy(sources, task, caug, **kw):
        calls.append((caug.source_smoothing, [ep.extra["held_steps"] for ep in sources]))
        return real(sources, task, caug, **kw)

    monkeypatch.setattr(dexfly.augment, "augment", spy)
    fw = Flywheel("grasp", preset, copy, iterations=ITERATIONS, progress=False, video=False, stop_after="iter1/augment")
    with pytest.raises(StageError, match=r"stage 'iter1/augment' finished with other settings .*rollout_source_smoothing, rollout_sources_per_object"):
        fw.run()
    fw.redo_from("iter1/augment")
    with pytest.raises(StageError, match=r"iter1/augment: .*rollouts\.hdf5 is not an output of stage 'iter1/collect'"):
        fw.run()  # the file is not the collect stage's: not read
    assert calls == [] and not fw.run_dir.path("d2.hdf5").exists()
    rec = json.loads(collect_record.read_text())  # now the collect stage's output, as if it had written it
    collect_record.write_text(json.dumps({**rec, "outputs": {**rec["outputs"], "iter1/rollouts.hdf5": content_hash(rollouts)}}))
    fw.run()
    assert calls == [(3, [9])], calls
    record = fw.run_dir.record("iter1/augment")
    assert record["config"]["rollout_source_smoothing"] == 3 and record["config"]["rollout_sources_per_object"] == 1
    assert record["summary"]["source_choice"]["per_object"]["box_cube_5cm"] == {"rollouts": 3, "kept_held_steps": [9]}
    assert "rollout_source_smoothing" not in fw.run_dir.record("warmup")["config"]


def test_a_seed_share_splits_each_new_objects_demos_between_the_seed_and_its_rollouts(tiny_run, tmp_path, monkeypatch):
    """`seed_source_share`: each object of O_{i+1} gets that share of its demos by A_EP from the seed (replayed as
    recorded, not smoothed) and the rest from its own successful rollouts; an object without any gets all of them
    from the seed. The record counts the two sources apart, and the report lists A_EP from the seed for iteration 2."""
    import dataclasses

    import dexfly.augment
    from dexfly import dataset
    from dexfly.flywheel.loop import Flywheel
    from dexfly.flywheel.report import build_report
    from dexfly.paths import DEMOS_DIR

    out, _ = tiny_run
    copy = tmp_path / "seed_share"
    shutil.copytree(out, copy)
    # two successful "rollouts" of the cube (the seed's motion), none of O_2's other object, made the collect stage's output
    seed_data = dataset.read_dataset(DEMOS_DIR / "grasp_seed.hdf5", task="grasp")
    seed = seed_data.episodes[0]
    rollouts = copy / "iter1" / "rollouts.hdf5"
    dataset.write_dataset(rollouts, [dataclasses.replace(seed, extra={**seed.extra, "held_steps": h, "rollout": True}) for h in (5, 9)],
                          task="grasp", env_args=dict(seed_data.env_args))
    collect_record = copy / "stages" / "iter1__collect.json"
    rec = json.loads(collect_record.read_text())
    collect_record.write_text(json.dumps({**rec, "outputs": {**rec["outputs"], "iter1/rollouts.hdf5": content_hash(rollouts)}}))
    tiny = load_preset("grasp", "tiny")
    preset = dataclasses.replace(tiny, seed_source_share=0.5, rollout_source_smoothing=3)
    calls, real = [], dexfly.augment.augment

    def spy(sources, task, caug, **kw):
        calls.append((caug.objects[0][1][0], "rollout" if sources[0].extra.get("rollout") else "seed", len(sources), caug.source_smoothing,
                      kw["num_wanted"]))
        return real(sources, task, caug, **kw)

    monkeypatch.setattr(dexfly.augment, "augment", spy)
    fw = Flywheel("grasp", preset, copy, iterations=ITERATIONS, progress=False, video=False, stop_after="iter1/augment")
    fw.redo_from("iter1/augment")
    fw.run()
    # tiny's iteration 2 wants 6 demos over its 2 objects: 3 each; the cube's split 2 from the seed, 1 from its rollouts
    share = tiny.iteration(2).trajectories // 2
    assert calls == [("box_cube_5_5cm", "seed", 1, 0, share), ("box_cube_5cm", "seed", 1, 0, round(share * 0.5)),
                     ("box_cube_5cm", "rollout", 2, 3, share - round(share * 0.5))], calls
    record = fw.run_dir.record("iter1/augment")
    assert record["config"]["seed_source_share"] == 0.5 and "seed_demo" in record["config"]
    summary = record["summary"]
    assert set(summary["per_object"]["box_cube_5_5cm"]) == {"from_seed"}
    assert summary["per_object"]["box_cube_5cm"]["sources"] == 2
    seeded = [v["from_seed"] for v in summary["per_object"].values()]
    assert summary["from_seed"]["attempts"] == sum(v["attempts"] for v in seeded) > 0
    assert summary["attempts"] == summary["per_object"]["box_cube_5cm"]["attempts"]  # the top-level counts: A_EP from rollouts
    d2 = dataset.read_dataset(copy / "d2.hdf5", task="grasp").episodes
    # `generated`: every demo D_2 gained, from either source
    assert summary["generated"] == summary["per_object"]["box_cube_5cm"]["generated"] + summary["from_seed"]["generated"] > 0
    assert len(d2) == len(dataset.read_dataset(copy / "d1.hdf5", task="grasp").episodes) + summary["generated"]
    sources = [(g["iteration"], g["source"]) for g in build_report(copy, "grasp", "tiny", ITERATIONS)["generation"]]
    assert (2, "A_EP from the seed") in sources and (2, "A_EP from rollouts") in sources, sources


def test_a_residual_setting_compared_with_donors_reuses_the_donors_base_evaluation(tiny_run, tmp_path):
    """Another residual setting on a donor's base (--donors, stop after iter1/residual): the stages before it are copied,
    the residual trains anew, and the base's T_O^2 is the donor's (same base checkpoint, scenes, seeds and devices),
    not rerun (the base's episodes do not depend on the residual: tests/test_residual.py). A donor whose residual
    output changed on disk, or that evaluated on another number of devices, is not used."""
    import dataclasses

    from dexfly.flywheel.loop import Flywheel

    out, _ = tiny_run
    tiny = load_preset("grasp", "tiny")
    other = dataclasses.replace(tiny, residual={**tiny.residual, "seed": 1})
    arm = lambda name, donor: Flywheel("grasp", other, tmp_path / name, iterations=ITERATIONS, progress=False, video=False,  # noqa: E731
                                       donors=(donor,), stop_after="iter1/residual")
    run = arm("rl1", out)
    run.run()
    rec = run.run_dir.record("iter1/residual")
    assert "adopted_from" not in rec and rec["summary"]["t_o_base_from"] == str(out)
    assert run.run_dir.record("iter1/diffusion")["adopted_from"] == str(out)
    donor_eval = json.loads((out / "iter1/residual/eval.json").read_text())
    assert json.loads((tmp_path / "rl1/iter1/residual/eval.json").read_text())["base_success"] == donor_eval["base_success"]
    assert rec["config"]["residual"]["seed"] == 1 != json.loads((out / "stages/iter1__residual.json").read_text())["config"]["residual"].get("seed", 0)

    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    (edited / "iter1/residual/eval.json").write_text(json.dumps({**donor_eval, "base_success": {"mean": 1.0}}))
    assert arm("x", edited)._donors_base_t_o(1, rec["config"]) == (None, None)
    other_devices = tmp_path / "other_devices"
    shutil.copytree(out, other_devices)
    record = other_devices / "stages/iter1__residual.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "devices": 3}))
    assert arm("y", other_devices)._donors_base_t_o(1, rec["config"]) == (None, None)
    assert arm("z", out)._donors_base_t_o(1, rec["config"]) == (donor_eval["base_success"], str(out))


def test_a_run_killed_inside_a_stage_resumes_from_its_checkpoint(tiny_run, tmp_path):
    """A run killed during `iter2/diffusion` (a warm-started training) after one of its checkpoints: the stage's folder
    holds the checkpoints written so far, no record exists for it or any later stage. Rerun, the stage resumes from
    its last checkpoint (not from the warm start) and the run ends with the uninterrupted run's report."""
    from dexfly.flywheel.loop import Flywheel

    out, report = tiny_run
    killed = tmp_path / "killed"
    shutil.copytree(out, killed)
    for stage in ("iter2__diffusion", "iter2__evaluate"):
        (killed / "stages" / f"{stage}.json").unlink()
    for name in ("iter2/eval.json", "report.json", "report.md"):
        (killed / name).unlink(missing_ok=True)
    ckpts = sorted((killed / "iter2/diffusion/checkpoints").iterdir(), key=lambda p: int(p.name))
    assert len(ckpts) >= 2, f"the tiny preset's iter2 training should checkpoint more than once: {ckpts}"
    shutil.rmtree(ckpts[-1])  # the final checkpoint was never written
    kept = {f: f.stat().st_mtime_ns for c in ckpts[:-1] for f in c.rglob("*") if f.is_file()}
    again = Flywheel("grasp", "tiny", killed, iterations=ITERATIONS, progress=False, video=False).run()
    assert _strip(again) == _strip(report)
    assert ckpts[-1].exists(), "the resumed training did not write its final checkpoint"
    # resumed from the last checkpoint: the ones before it were read, not written again (a restart would rewrite them)
    assert {f: f.stat().st_mtime_ns for f in kept} == kept


def test_a_corrupt_stage_output_is_refused(tiny_run, tmp_path):
    from dexfly.flywheel.loop import Flywheel

    out, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "d1.hdf5", "r+b") as f:
        f.seek(200)
        f.write(b"\x00corrupt\x00")
    with pytest.raises(StageError, match=r"stage 'warmup': its output .*d1.hdf5 changed since the stage finished"):
        Flywheel("grasp", "tiny", copy, iterations=ITERATIONS, progress=False, video=False).run()


def test_rollouts_become_augmentation_sources(tiny_run):
    """Seed actions replayed through `collect` (the hook alone acts) come back as episodes with the detector's
    subtask ends, and A_EP accepts them as sources: the path from D_O^i to D_(i+1)."""
    import dataclasses

    import numpy as np

    import envs
    from dexfly import dataset
    from dexfly.augment import AugmentConfig, augment
    from dexfly.collect import collect
    from dexfly.paths import DEMOS_DIR
    from dexfly.rollout import _replay_hook

    seed = dataset.read_dataset(DEMOS_DIR / "grasp_seed.hdf5", task="grasp").episodes[0]
    env = envs.make_cached("grasp", envs.episode_objects(seed))
    specs = [env.scene_from_episode(seed)] * 8
    actions = np.repeat(np.asarray(seed.actions, np.float32)[None], 8, axis=0)
    episodes, stats = collect("grasp", None, specs, hook=_replay_hook, hook_params=actions, batch_size=8)
    assert stats.attempts == 8 and stats.successes == 8 and stats.kept == 8, stats
    ep = episodes[0]
    assert ep.source == "rollout" and ep.success
    np.testing.assert_allclose(ep.actions, seed.actions, atol=1e-6)
    assert ep.subtask_end.shape == seed.subtask_end.shape and ep.subtask_end[-1].all() and not ep.subtask_end[:-1].any()
    held = ep.extra["held_steps"]  # the seed lifts the cube well before the end and holds it
    assert 0 < held < len(ep.rewards) and (ep.rewards[-held:] > 2.0).all() and ep.rewards[-held - 1] < 2.0, held
    caug = AugmentConfig(objects=(("object", ("box_cube_5cm",)),), env_ids=("studio",), pose_ids=("p01", "p02"))
    generated, aug = augment(episodes[:2], "grasp", caug, num_wanted=2, batch_size=8, progress=False)
    assert aug.generated >= 1, aug.breakdown()
    # the quality bar: an attempt whose success held for fewer final steps than asked is not a success
    bar = min(g.extra["held_steps"] for g in generated)
    same, _ = augment(episodes[:2], "grasp", dataclasses.replace(caug, min_held_steps=bar), num_wanted=2, batch_size=8, progress=False)
    assert [g.seed for g in same] == [g.seed for g in generated]
    none, strict = augment(episodes[:2], "grasp", dataclasses.replace(caug, min_held_steps=len(ep.rewards) + 1), num_wanted=2,
                           batch_size=8, progress=False)
    assert not none and strict.successes == 0 and strict.attempts > 0, strict.breakdown()
