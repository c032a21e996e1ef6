import dexfly  # noqa: F401  (XLA flags + persistent compilation cache before jax is imported)

import pytest  # noqa: E402

TINY_ITERATIONS = 2  # the tiny flywheel run's iterations (test_flywheel's ITERATIONS)

# The suite runs on two workers (pytest-xdist; the options are in pyproject.toml's addopts): compiling is
# single-threaded, so two processes halve the wall time on two cores. Each test module is one work unit (its
# module fixtures hold compiled envs), except that the modules sharing the session's tiny flywheel run are one.
SHARED_GROUPS = {"test_flywheel": "tiny_flywheel", "test_baselines": "tiny_flywheel"}
# Cold-cache seconds per work unit on the 2-core CPU (`--durations`, 2026-12-02): units go out longest first,
# so the long one does not start last. Only the order depends on these numbers; unknown modules go last.
UNIT_SECONDS = {"tiny_flywheel": 1300, "test_envs": 950, "test_baselines_data": 800, "test_evaluation": 450, "test_multi_device": 430, "test_residual": 420,
                "test_diffusion": 200, "test_augment": 110, "test_robots": 95, "test_export": 80}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks
def pytest_collection_modifyitems(config, items):
    def unit(item):
        module = item.module.__name__.rpartition(".")[2] if item.module else item.nodeid.split("::")[0]
        return SHARED_GROUPS.get(module, module)

    for item in items:
        item.add_marker(pytest.mark.xdist_group(unit(item)))
    items.sort(key=lambda item: -UNIT_SECONDS.get(unit(item), 0))  # stable: module order kept within a unit


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop the compiled programs it left (dexfly.utils.release_compiled): the suite is one
    long process, and without this it reached the kernel's memory-mapping limit and XLA crashed it (a segfault in
    test_residual after about 50 minutes, with 10 GB resident). Programs a later module shares load from the
    persistent compilation cache."""
    yield
    from dexfly.utils import release_compiled

    release_compiled()


@pytest.fixture(scope="session")
def experiment_script():
    """Load `experiments/<name>.py` as a module (to call its `main(Args(...))` in process)."""
    import importlib.util
    import sys

    from dexfly.paths import REPO_ROOT

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_script", REPO_ROOT / "experiments" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # the script's dataclasses resolve their annotations through sys.modules
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The flywheel's tiny preset, warm-up plus two iterations, run once per session: test_flywheel checks it,
    test_baselines reuses it as the finished flywheel run (and the donor of the ablations' identical stages)."""
    from dexfly.flywheel.loop import Flywheel

    out = tmp_path_factory.mktemp("flywheel") / "grasp_tiny"
    report = Flywheel("grasp", "tiny", out, iterations=TINY_ITERATIONS, progress=False, video=False).run()
    return out, report
