"""Atomic writes: files come out with a plain open()'s mode (0o666 less the umask), never mkstemp's 0600."""

import functools
import os
import stat
import threading

import numpy as np
import pytest

import dexfly  # noqa: F401
from dexfly.dataset import Episode, merge_datasets, read_dataset, write_dataset
from dexfly.render import write_video
from dexfly.unroll import jit_unroll
from dexfly.utils import atomic_path, atomic_write_text, plot_curve, read_json


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def episode(T=4, seed=0):
    r = np.random.default_rng(seed)
    sub = np.zeros((T, 1, 1), np.uint8)
    sub[-1] = 1
    return Episode(actions=r.normal(size=(T, 15)), states=r.normal(size=(T, 8)), rewards=np.zeros(T),
                   obs={"obj": r.normal(size=(T, 13)), "prop": r.normal(size=(T, 34))},
                   ee_target_pose=r.normal(size=(T, 1, 7)), hand_target=r.normal(size=(T, 1, 6)),
                   object_poses=r.normal(size=(T, 1, 7)), subtask_end=sub, success=True, object_ids=["cup"],
                   env_id="studio", pose_id="p00", seed=seed)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_text_file_mode_follows_umask(tmp_path, umask, mask, expected):
    umask(mask)
    p = atomic_write_text(tmp_path / "sub" / "eval.json", "{}")
    assert p.read_text() == "{}"
    assert mode(p) == expected == 0o666 & ~mask
    reference = tmp_path / "plain.json"  # what open() gives a new file under the same umask
    reference.write_text("{}")
    assert mode(p) == mode(reference)


def test_dataset_readable_by_group_and_others(tmp_path, umask):
    p = write_dataset(tmp_path / "d.hdf5", [episode(seed=i) for i in range(3)], task="grasp",
                      env_args={"robot": "panda_inspire"})
    assert mode(p) == 0o644
    assert mode(p) & (stat.S_IRGRP | stat.S_IROTH) == stat.S_IRGRP | stat.S_IROTH
    # a merge written over one of its inputs comes out the same
    other = write_dataset(tmp_path / "e.hdf5", [episode(seed=9)], task="grasp", env_args={"robot": "panda_inspire"})
    os.chmod(p, 0o600)
    merge_datasets([p, other], p)
    assert len(read_dataset(p)) == 4 and mode(p) == 0o644
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d.hdf5", "e.hdf5"]  # no temp files left


def test_video_and_plot_readable(tmp_path, umask):
    frames = np.random.default_rng(0).integers(0, 255, size=(3, 16, 16, 3), dtype=np.uint8)
    for ext in (".gif", ".mp4"):
        assert mode(write_video(tmp_path / f"clip{ext}", frames, fps=5)) == 0o644
    assert mode(plot_curve(tmp_path / "loss.png", np.arange(10.0), title="t", ylabel="y")) == 0o644


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path, umask):
    p = atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            assert mode(tmp) == 0o644  # the temp file already has the final mode
            with open(tmp, "w") as f:
                f.write("new")
            raise RuntimeError("crash")
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_concurrent_writes_do_not_touch_umask(tmp_path, umask):
    """Many threads writing at once: every file gets the mode and the process umask is left alone."""
    umask(0o027)
    errors = []

    def work(i):
        try:
            for j in range(20):
                atomic_write_text(tmp_path / f"f{i}_{j}.txt", str(j))
        except BaseException as e:  # noqa: BLE001 - report in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {mode(p) for p in tmp_path.iterdir()} == {0o640}
    assert os.umask(0o027) == 0o027


def test_default_compilation_cache_is_per_jaxlib_and_cpu(tmp_path, monkeypatch):
    """XLA:CPU executables are machine code: the default cache folder is named by jaxlib version and CPU, and a
    folder the user names is used as given."""
    from dexfly import _jax_env

    for var in ("DEXFLY_JAX_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _jax_env.configure()
    tag = _jax_env.host_cache_tag()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "dexfly" / "jax" / tag)
    version, digits = tag.rsplit("-", 1)
    assert version == jax_version() and len(digits) == 12 and tag == _jax_env.host_cache_tag()
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    _jax_env.configure()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "mine")


def test_xla_flags_and_gl_backend_only_where_they_work(monkeypatch):
    """XLA aborts on a flag its jaxlib does not know (jaxlib 0.11.2 dropped xla_cpu_use_fusion_emitters), and
    `import mujoco` fails with MUJOCO_GL=egl where libEGL is missing: dexfly sets each only where it works."""
    from dexfly import _jax_env

    for var in ("XLA_FLAGS", "DEXFLY_XLA_DEFAULTS", "MUJOCO_GL", "PYOPENGL_PLATFORM", _jax_env._ADDED_VAR, _jax_env._FLAGS_VAR):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(_jax_env.CPU_DEVICES_VAR, "1")  # one CPU device: no device-count flag (its own test below)
    monkeypatch.setattr(_jax_env, "_jaxlib_version", lambda: "0.10.2")
    assert _jax_env.xla_defaults() == _jax_env.XLA_DEFAULTS
    monkeypatch.setenv("DEXFLY_XLA_DEFAULTS", "off")
    assert _jax_env.xla_defaults() == {}
    monkeypatch.delenv("DEXFLY_XLA_DEFAULTS")
    monkeypatch.setattr(_jax_env, "_jaxlib_version", lambda: "0.11.2")
    monkeypatch.setattr(_jax_env, "egl_available", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    _jax_env.configure()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    assert "MUJOCO_GL" not in os.environ and "PYOPENGL_PLATFORM" not in os.environ
    monkeypatch.setattr(_jax_env, "_jaxlib_version", lambda: "0.10.2")
    monkeypatch.setattr(_jax_env, "egl_available", lambda: True)
    _jax_env.configure()
    assert "--xla_cpu_use_fusion_emitters=false" in os.environ["XLA_FLAGS"]
    assert os.environ["MUJOCO_GL"] == os.environ["PYOPENGL_PLATFORM"] == "egl"


def test_cpu_split_into_devices_by_default(monkeypatch):
    """The CPU is split into devices so that the stages step slices of every env batch in parallel (one XLA:CPU
    device steps a batch on about one core): a power of two up to the usable cores and 4, on every jaxlib;
    DEXFLY_CPU_DEVICES overrides it, a value the user gave XLA_FLAGS wins, and DEXFLY_XLA_DEFAULTS=off adds none."""
    from dexfly import _jax_env

    for var in ("XLA_FLAGS", "DEXFLY_XLA_DEFAULTS", _jax_env.CPU_DEVICES_VAR, _jax_env._ADDED_VAR, _jax_env._FLAGS_VAR):
        monkeypatch.delenv(var, raising=False)
    flag = "xla_force_host_platform_device_count"
    for cores, devices in ((1, 1), (2, 2), (3, 2), (4, 4), (6, 4), (64, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, c=cores: set(range(c)))
        assert _jax_env.cpu_device_count() == devices, cores
        for jaxlib in ("0.10.2", "0.11.2"):
            monkeypatch.setattr(_jax_env, "_jaxlib_version", lambda v=jaxlib: v)
            assert _jax_env.xla_defaults().get(flag) == (str(devices) if devices > 1 else None), (cores, jaxlib)
    monkeypatch.setenv(_jax_env.CPU_DEVICES_VAR, "8")
    assert _jax_env.cpu_device_count() == 8 and _jax_env.xla_defaults()[flag] == "8"
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv(_jax_env.CPU_DEVICES_VAR, bad)
        with pytest.raises(ValueError, match="DEXFLY_CPU_DEVICES"):
            _jax_env.cpu_device_count()
    monkeypatch.setenv(_jax_env.CPU_DEVICES_VAR, "2")
    monkeypatch.setattr(_jax_env, "egl_available", lambda: False)
    _jax_env.configure()
    assert f"--{flag}=2" in os.environ["XLA_FLAGS"] and flag in os.environ[_jax_env._ADDED_VAR]
    monkeypatch.setenv("XLA_FLAGS", f"--{flag}=3")
    _jax_env.configure()
    assert os.environ["XLA_FLAGS"] == f"--{flag}=3"
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setenv("DEXFLY_XLA_DEFAULTS", "off")
    _jax_env.configure()
    assert os.environ["XLA_FLAGS"] == ""


def jax_version():
    import jaxlib

    return jaxlib.__version__


def test_release_compiled_gives_back_memory_mappings():
    """Each loaded XLA program holds memory mappings; release_compiled returns them (long runs and the suite call
    it, or the process reaches vm.max_map_count and XLA crashes it)."""
    import jax
    import jax.numpy as jnp

    from dexfly.utils import memory_mappings, release_compiled

    if memory_mappings() is None:
        pytest.skip("/proc/self/maps is Linux only")
    release_compiled()
    before = memory_mappings()[0]
    fns = [jax.jit(lambda x, i=i: jnp.sin(x * i) @ jnp.cos(x.T + i) + jnp.tanh(x).sum() * i) for i in range(20)]
    for f in fns:
        f(jnp.ones((8, 8))).block_until_ready()
    grown = memory_mappings()[0] - before
    release_compiled()
    assert grown > 60, grown  # about 13 per program here
    assert memory_mappings()[0] - before < grown / 2


def test_read_json_names_the_file_and_takes_the_callers_error(tmp_path):
    good, bad, binary = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "binary.json"
    good.write_text('{"format": "x", "n": [1, 2]}')
    bad.write_text('{"format": ')
    binary.write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe")
    assert read_json(good) == {"format": "x", "n": [1, 2]}
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        read_json(bad)

    class StageLikeError(ValueError):
        pass

    with pytest.raises(StageLikeError, match=r"binary\.json: not valid JSON \(not UTF-8"):
        read_json(binary, StageLikeError)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


def test_progress_bar_writes_lines_when_not_a_terminal():
    """Redirected to a file, a stage still says how far it is (rich's bar would write nothing until the end)."""
    import io

    from rich.console import Console

    from dexfly.progress import progress_bar

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    with progress_bar("residual PPO", 4, completed=1, console=console, log_every_s=3600) as bar:
        bar.update(2, info="return 1.0")  # within log_every_s of the start line: no line
        bar.update(4, info="return 2.5")  # finished: always a line
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "residual PPO 1/4 (25%)" in lines[0]
    assert "residual PPO 4/4 (100%)" in lines[1] and lines[1].endswith("return 2.5")

    buf = io.StringIO()
    with progress_bar("diffusion", 10, console=Console(file=buf, force_terminal=False), enabled=False) as bar:
        bar.update(10)
    assert buf.getvalue() == ""


def test_progress_callback_starts_at_its_first_call_and_closes_at_the_total():
    """`ProgressCallback`: a bar for loops that learn their total inside (evaluation, collection)."""
    import io

    from rich.console import Console

    from dexfly.progress import ProgressCallback

    buf = io.StringIO()
    with ProgressCallback("evaluation", console=Console(file=buf, force_terminal=False, width=200)) as on_progress:
        for done in range(4):
            on_progress(done, 3)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and "evaluation 0/3 (0%)" in lines[0] and "evaluation 3/3 (100%)" in lines[1], lines


def _hook_a(scale, step, carry, params):
    return carry, step.base_action * scale, None


def test_jit_unroll_caches_equal_partials_once():
    """`functools.partial` has no equality: a hook or recorder bound per call must still hit `jit_unroll`'s cache
    (session 29: a per-call recorder compiled the stand-in's replay at every batch until memory ran out). Partials
    of unhashable values (arrays) are kept apart by identity. Nothing is traced here: `jax.jit` is lazy."""
    env = "not-an-env"  # any hashable: jit_unroll only builds the jitted function
    first = jit_unroll(env, 10, functools.partial(_hook_a, 2.0), functools.partial(_hook_a, 0))
    assert jit_unroll(env, 10, functools.partial(_hook_a, 2.0), functools.partial(_hook_a, 0)) is first
    assert jit_unroll(env, 10, functools.partial(_hook_a, 3.0), functools.partial(_hook_a, 0)) is not first
    assert jit_unroll(env, 10, functools.partial(_hook_a, scale=2.0), functools.partial(_hook_a, 0)) is not first
    arr = functools.partial(_hook_a, np.ones(3))
    assert jit_unroll(env, 10, arr) is jit_unroll(env, 10, arr)
    assert jit_unroll(env, 10, functools.partial(_hook_a, np.ones(3))) is not jit_unroll(env, 10, arr)
