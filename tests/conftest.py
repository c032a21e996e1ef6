import dexfly  # noqa: F401  (XLA flags + persistent compilation cache before jax is imported)

import pytest  # noqa: E402

TINY_ITERATIONS = 2  # the tiny flywheel run's iterations (test_flywheel's ITERATIONS)


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
def tiny_run(tmp_path_factory):
    """The flywheel's tiny preset, warm-up plus two iterations, run once per session: test_flywheel checks it,
    test_baselines reuses it as the finished flywheel run (and the donor of the ablations' identical stages)."""
    from dexfly.flywheel.loop import Flywheel

    out = tmp_path_factory.mktemp("flywheel") / "grasp_tiny"
    report = Flywheel("grasp", "tiny", out, iterations=TINY_ITERATIONS, progress=False, video=False).run()
    return out, report
