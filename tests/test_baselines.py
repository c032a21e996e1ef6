"""Baselines and ablations, the flywheel's variants: no-residual, no-aep, no-both and the flywheel itself at the
tiny preset (reusing conftest's tiny flywheel run, the donor of their identical stages), resume, refusals. The
four data-source methods (human demos, replay) are in test_baselines_data.py: they need no flywheel run, so the
suite's other worker runs them."""

from __future__ import annotations

import json
import shutil

import pytest

from dexfly.flywheel.baselines import METHODS, BaselineConfig, Baselines, build_tables, check_flywheel_run, parse_methods
from dexfly.flywheel.stages import RunFolder, StageError

ITERATIONS = 2  # as conftest's tiny flywheel run
# The paper's sizes (20 human demos, 10 sources) cost compile-free but real simulation time; the tests need only a
# few of each to exercise every path.
SMALL = BaselineConfig(human_demos=4, replay_sources=2, teleop_batch_size=4)
FLYWHEEL_VARIANTS = ("no-residual", "no-aep", "no-both", "flywheel")


def _suite(out, flywheel_run, methods=FLYWHEEL_VARIANTS, log=lambda *a: None):
    return Baselines("grasp", "tiny", out, methods=methods, iterations=ITERATIONS, flywheel_run=flywheel_run, config=SMALL, log=log,
                     progress=False, video=False)


@pytest.fixture(scope="session")
def suite(tiny_run, tmp_path_factory):
    """The flywheel's variants once, the flywheel run reused."""
    fw_out, fw_report = tiny_run
    out = tmp_path_factory.mktemp("baselines") / "grasp_tiny"
    tables = _suite(out, fw_out).run()
    return out, tables, fw_out, fw_report


def _record(root, stage):
    return json.loads((root / "stages" / (stage.replace("/", "__") + ".json")).read_text())


def test_every_flywheel_variant_runs_at_the_tiny_preset(suite):
    out, tables, fw_out, fw_report = suite
    assert list(tables["table2"]) == list(FLYWHEEL_VARIANTS)
    for m, r in tables["table2"].items():
        assert 0.0 <= r["mean"] <= 1.0 and len(r["per_seed"]) == 1, m
    assert tables["table2"]["flywheel"]["mean"] == fw_report["table1"][-1]["t_oep"]["mean"]  # the reused run's last iteration
    assert tables["trajectories"]["flywheel"] == fw_report["table1"][-1]["trajectories"]
    for name in ("table2.json", "table2.md", "table3.md", "figure5.png"):
        assert (out / name).exists(), name
    assert json.loads((out / "table2.json").read_text()) == tables["table2"]
    sources = {(r["method"], r["source"]) for r in tables["table3"]}
    assert {("flywheel", "A_EP from the seed"), ("flywheel", "combined-policy rollouts"), ("no-residual", "base-policy rollouts")} <= sources
    assert ("no-aep", "A_EP from rollouts") not in sources and ("no-both", "combined-policy rollouts") not in sources
    assert _record(out / "no-aep", "iter1/augment")["summary"]["augmented"] is False
    # the ablations are flywheel variants, named as such, and copy the stages they share instead of recomputing them
    assert json.loads((out / "no-aep" / "flywheel.json").read_text())["variant"] == {"augment_rollouts": False}
    for stage in ("warmup", "iter1/diffusion", "iter1/evaluate", "iter1/residual", "iter1/collect"):
        assert _record(out / "no-aep", stage)["adopted_from"] == str(fw_out.resolve()), stage
    assert not (out / "no-residual" / "iter1" / "residual").exists()
    assert _record(out / "no-both", "iter1/collect")["adopted_from"] == str((out / "no-residual").resolve())
    assert _record(out / "no-both", "iter1/augment")["config"]["augment_rollouts"] is False


def test_a_method_without_its_evaluation_leaves_the_tables(suite, tmp_path):
    out, tables, _, _ = suite
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "no-both" / "iter2" / "eval.json").unlink()
    assert list(build_tables(copy, "grasp", "tiny", ITERATIONS)["table2"]) == ["no-residual", "no-aep", "flywheel"]


def test_the_flywheel_row_run_by_the_suite_itself(suite, tmp_path):
    """Without --flywheel-run the suite runs the flywheel in `<out>/flywheel`, copying what it shares with the
    ablations already there (warm-up, iteration 1's base, and no-aep's residual and rollouts), and scores the row as
    the finished run it would otherwise reuse: the same stages, seed and settings give the same table row."""
    out, tables, _, _ = suite
    copy = tmp_path / "own"
    shutil.copytree(out, copy)
    (copy / "flywheel_run.json").unlink()
    own = _suite(copy, None, methods=("flywheel",)).run()
    assert own["table2"]["flywheel"] == tables["table2"]["flywheel"]
    assert json.loads((copy / "flywheel_run.json").read_text())["run"] == str(copy / "flywheel")
    for stage in ("warmup", "iter1/residual", "iter1/collect"):
        assert "adopted_from" in _record(copy / "flywheel", stage), stage
    assert "adopted_from" not in _record(copy / "flywheel", "iter1/augment")  # A_EP: no ablation has it


def test_a_rerun_skips_every_finished_method(suite):
    out, tables, fw_out, _ = suite
    said = []
    again = _suite(out, fw_out, log=said.append).run()
    assert again["table2"] == tables["table2"]
    started = [s for s in said if s.startswith("[bold]")]
    assert not started, started  # every stage of every method was found finished


def test_refusals_name_the_problem(suite, tmp_path):
    out, _, fw_out, _ = suite
    with pytest.raises(StageError, match="is a run of the plain flywheel, not"):
        _suite(fw_out, None)  # a flywheel run is no baselines folder
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(StageError, match="not a flywheel run folder"):
        _suite(tmp_path / "mine", None)
    RunFolder.open(tmp_path / "lift_run", task="lift", preset="tiny", seed=0)
    with pytest.raises(StageError, match="task 'lift', not 'grasp'"):
        _suite(tmp_path / "b", tmp_path / "lift_run")
    RunFolder.open(tmp_path / "unfinished", task="grasp", preset="tiny", seed=0)
    with pytest.raises(StageError, match="has not finished an iteration"):
        check_flywheel_run(tmp_path / "unfinished", task="grasp", preset="tiny", seed=0, iterations=ITERATIONS)
    with pytest.raises(StageError, match="not a finished 3-iteration run .*--iterations 2"):
        check_flywheel_run(fw_out, task="grasp", preset="tiny", seed=0, iterations=3)
    with pytest.raises(StageError, match=r'is a run of \{"augment_rollouts": false\}, not the plain flywheel'):
        check_flywheel_run(out / "no-aep", task="grasp", preset="tiny", seed=0, iterations=ITERATIONS)  # an ablation is not the flywheel
    from dexfly.flywheel.loop import Flywheel

    with pytest.raises(StageError, match=r'is a run of \{"augment_rollouts": false\}, not \{"residual": false\}'):
        Flywheel("grasp", "tiny", out / "no-aep", iterations=ITERATIONS, residual=False, progress=False, video=False)


def test_identical_stages_are_copied_from_a_donor_run(tmp_path):
    donor = RunFolder.open(tmp_path / "donor", task="grasp", preset="tiny", seed=0)
    (donor.root / "d1.hdf5").write_bytes(b"data")
    (donor.root / "model").mkdir()
    (donor.root / "model" / "w.bin").write_bytes(b"weights")
    donor.finish("warmup", {"x": 1}, ["d1.hdf5", "model"], 12.0, {"generated": 4})
    run = RunFolder.open(tmp_path / "ablation", task="grasp", preset="tiny", seed=0, variant={"residual": False})
    assert run.adopt("warmup", {"x": 2}, donor) is None  # another config: computed, not copied
    rec = run.adopt("warmup", {"x": 1}, donor)
    assert rec["adopted_from"] == str(donor.root) and rec["summary"] == {"generated": 4}
    assert (run.root / "model" / "w.bin").read_bytes() == b"weights" and run.done("warmup", {"x": 1})
    (donor.root / "d1.hdf5").write_bytes(b"edited")
    assert RunFolder.open(tmp_path / "other", task="grasp", preset="tiny", seed=0).adopt("warmup", {"x": 1}, donor) is None  # corrupt donor
    with pytest.raises(StageError, match=r'is a run of \{"residual": false\}, not the plain flywheel'):
        RunFolder.open(tmp_path / "ablation", task="grasp", preset="tiny", seed=0)
    assert parse_methods(("all",)) == METHODS and parse_methods(("flywheel", "replay-1")) == ("replay-1", "flywheel")
    with pytest.raises(ValueError, match=r"unknown method id\(s\) \['replay-2'\]"):
        _suite(tmp_path / "a", None, methods=("replay-1", "replay-2"))
