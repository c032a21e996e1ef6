import dexfly  # noqa: F401  (XLA flags + persistent compilation cache before jax is imported)

import pytest  # noqa: E402

TINY_ITERATIONS = 2  # the tiny flywheel run's iterations (test_flywheel's ITERATIONS)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The flywheel's tiny preset, warm-up plus two iterations, run once per session: test_flywheel checks it,
    test_baselines reuses it as the finished flywheel run (and the donor of the ablations' identical stages)."""
    from dexfly.flywheel.loop import Flywheel

    out = tmp_path_factory.mktemp("flywheel") / "grasp_tiny"
    report = Flywheel("grasp", "tiny", out, iterations=TINY_ITERATIONS, progress=False, video=False).run()
    return out, report
