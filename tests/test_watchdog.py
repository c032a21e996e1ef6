"""The XLA:CPU defaults dexfly sets before jax is imported, and the watchdog that stops stalled stages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dexfly import watchdog

# Records XLA_FLAGS at the moment `jax` is first imported, then imports the given module.
_PROBE = textwrap.dedent(
    """
    import importlib.abc, os, sys
    seen = {}
    class Probe(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "jax" and "flags" not in seen:
                seen["flags"] = os.environ.get("XLA_FLAGS", "")
            return None
    sys.meta_path.insert(0, Probe())
    importlib = __import__("importlib")
    importlib.import_module(sys.argv[1])
    import jax.numpy as jnp
    assert float(jnp.arange(4.0).sum()) == 6.0  # XLA accepted the flags (an unknown flag aborts)
    print("FLAGS_AT_JAX_IMPORT=" + seen["flags"])
    """
)


def _flags_at_jax_import(module: str, xla_flags: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run([sys.executable, "-c", _PROBE, module], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("FLAGS_AT_JAX_IMPORT=")][-1]
    return line.split("=", 1)[1]


@pytest.mark.parametrize("module", ["envs", "dexfly.evaluation"])
def test_xla_cpu_defaults_in_force_before_jax_import(module):
    flags = _flags_at_jax_import(module).split()
    assert "--xla_cpu_use_fusion_emitters=false" in flags
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" in flags


def test_user_xla_flags_are_kept():
    flags = _flags_at_jax_import("envs", "--xla_cpu_enable_concurrency_optimized_scheduler=true").split()
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=true" in flags
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" not in flags
    assert "--xla_cpu_use_fusion_emitters=false" in flags


def test_watchdog_stops_a_stalled_python_stage():
    t0 = time.monotonic()
    with pytest.raises(watchdog.StageStalled, match=r"stage 'toy stage'.*CPU idle.*batch 3"):
        with watchdog.stage("toy stage", timeout_s=1.0):
            watchdog.beat("batch 3")
            time.sleep(30)
    assert time.monotonic() - t0 < 5


def test_watchdog_lets_a_busy_stage_run_until_the_hard_timeout():
    """A long compile or a slow batch keeps the CPU busy: not a stall at `timeout_s`, only at `hard_timeout_s`."""
    t0 = time.monotonic()
    with pytest.raises(watchdog.StageStalled, match="hard timeout"):
        with watchdog.stage("compiling", timeout_s=0.5, hard_timeout_s=3.0):
            while time.monotonic() - t0 < 30:
                sum(i * i for i in range(1000))  # busy, no beat
    assert 3.0 <= time.monotonic() - t0 < 8


def test_watchdog_quiet_while_progress_is_made():
    with watchdog.stage("busy stage", timeout_s=1.0):
        for i in range(8):
            time.sleep(0.3)
            watchdog.beat(f"batch {i}")


def test_watchdog_disabled_with_zero_timeout():
    with watchdog.stage("off", timeout_s=0):
        time.sleep(0.2)


_NATIVE_STALL = textwrap.dedent(
    """
    import signal, time
    from dexfly import watchdog

    with watchdog.stage("rollout grasp", timeout_s=2.0, grace_s=2.0):
        watchdog.beat("chunk 7 of 38")
        # A wedged XLA call keeps the main thread in native code, where Python cannot raise. Blocking the
        # watchdog's signal in this thread has the same effect on a plain sleep.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        time.sleep(600)
    print("UNREACHABLE")
    """
)


def test_watchdog_ends_a_process_stuck_in_native_code():
    """A main thread that cannot take the exception: the process exits with code 75 and the error names the
    stage and the last progress, within the timeout plus the grace period."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _NATIVE_STALL], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert out.returncode == watchdog.STALL_EXIT_CODE, (out.returncode, out.stderr[-2000:])
    assert "stage 'rollout grasp' made no progress" in out.stderr and "chunk 7 of 38" in out.stderr
    assert "UNREACHABLE" not in out.stdout
    assert elapsed < 30


_SUSPENDED = textwrap.dedent(
    """
    import time
    from dexfly import watchdog

    with watchdog.stage("suspended stage", timeout_s=1.0, grace_s=1.0):
        print("READY", flush=True)
        for i in range(100):  # beats every 0.1 s for ~10 s; the test stops the process for 8 s in between
            time.sleep(0.1)
            watchdog.beat(f"batch {i}")
    print("FINISHED")
    """
)


def test_watchdog_ignores_time_the_process_spent_suspended():
    """Ctrl-Z then fg (SIGSTOP, SIGCONT) for longer than the timeout: the stage goes on. The old watchdog ended it
    whenever its first poll after the resume came before the main thread's next beat (8 s without a beat, no CPU used).
    The suspension must outlast the watchdog's 5 s oversleep bar, or it is not told from a stall."""
    proc = subprocess.Popen([sys.executable, "-c", _SUSPENDED], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(1.0)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(8.0)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "FINISHED" in out, (proc.returncode, err[-2000:])
    assert "made no progress" not in err


# Prints the compiler options network_jit hands to jax.jit on this (CPU) backend, after running the program once.
_NETWORK_JIT_PROBE = textwrap.dedent(
    """
    import dexfly, jax, jax.numpy as jnp
    from dexfly._jax_env import network_jit
    seen, real_jit = [], jax.jit
    def recording_jit(fun, **kw):
        seen.append(kw.get("compiler_options"))
        return real_jit(fun, **kw)
    jax.jit = recording_jit
    f = network_jit(lambda x: jnp.tanh(x) @ x)
    assert float(f(jnp.eye(3)).sum()) > 0 and float(f(jnp.eye(3)).sum()) > 0
    print("OPTIONS=" + repr(seen))
    """
)


def _network_jit_options(env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", _NETWORK_JIT_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return [x for x in out.stdout.splitlines() if x.startswith("OPTIONS=")][-1].split("=", 1)[1]


def test_network_jit_turns_fusion_emitters_on_only_where_dexfly_turned_them_off():
    fresh = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_FLAGS", "DEXFLY_XLA"))}
    on = "[{'xla_cpu_use_fusion_emitters': True}]"  # one jit, built at the first call, for two calls
    assert _network_jit_options(fresh) == on
    # the user's own setting wins, also when it repeats dexfly's default
    assert _network_jit_options({**fresh, "XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"}) == "[None]"
    # a child of a dexfly process (this one) inherits XLA_FLAGS with the record that dexfly set the flag
    assert _network_jit_options(dict(os.environ)) == on
    # ... unless the flags were changed on the way
    changed = {**os.environ, "XLA_FLAGS": os.environ["XLA_FLAGS"] + " --xla_cpu_use_fusion_emitters=false"}
    assert _network_jit_options(changed) == "[None]"
