"""Process-wide JAX/XLA settings that must be in place before `jax` is imported.

XLA flags (the first two CPU-only, set only on jaxlib 0.10, where they were verified: see `xla_defaults`), appended
without overwriting a value the user already set for the same flag:
- `--xla_cpu_use_fusion_emitters=false`: with XLA's fusion emitters, `mjx.kinematics` cost grows
  exponentially with the depth of the kinematic chain (an arm plus a hand is hundreds of times slower;
  see ../shared/JAX-ON-CPU.md).
- `--xla_cpu_enable_concurrency_optimized_scheduler=false`: with XLA:CPU's concurrency-optimized HLO
  scheduler, long jitted and vmapped MJX rollouts intermittently hang for good (every thread parked, 0%
  CPU); with it off they did not in the stress runs of BENCHMARKS.md ("XLA:CPU hangs",
  experiments/stress_xla.py).
- `--xla_force_host_platform_device_count=N` (every jaxlib; `cpu_device_count`): the CPU split into N devices,
  so that the stages, which split their batches over all local devices (`dexfly.devices`), step N slices of every
  env batch in parallel. One XLA:CPU device runs a batched MJX step on about one core whatever the batch; on the
  2-core machine two devices stepped the Grasp env 2.0x and a residual PPO update 1.8x as fast (BENCHMARKS.md,
  session 33). N is `DEXFLY_CPU_DEVICES` when set, else the largest power of two up to the usable cores and 4
  (every preset's batch sizes are multiples of 4). It creates host devices only: on a GPU the local devices,
  so the meshes, stay the GPUs.

`network_jit` turns the fusion emitters back on for single programs that hold no MJX (network training):
diffusion training is about a fifth faster with them on this CPU (BENCHMARKS.md).

The persistent compilation cache lives under the user's cache dir (``$XDG_CACHE_HOME/dexfly/jax`` or
``~/.cache/dexfly/jax``), in a subfolder per jaxlib version and host CPU (`host_cache_tag`), unless
``DEXFLY_JAX_CACHE_DIR`` or ``JAX_COMPILATION_CACHE_DIR`` is set (used as given); ``DEXFLY_JAX_CACHE_DIR=off``
disables it. Why per CPU: an XLA:CPU executable is machine code for the CPU that compiled it, and a home folder
shared by machines of different CPUs (a cluster's, a CI runner's) served one to another machine, where loading it
aborted the process (CI, stop 19: `Fatal Python error: Aborted` in `deserialize_executable`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

# flag name -> dexfly's value (see the module docstring for why each is set)
XLA_DEFAULTS = {
    "xla_cpu_use_fusion_emitters": "false",
    "xla_cpu_enable_concurrency_optimized_scheduler": "false",
}
# XLA_DEFAULTS that configure() added (network_jit leaves a flag the user set alone). A child process inherits the
# names with the XLA_FLAGS value they belong to, and keeps them only if XLA_FLAGS is still that value.
_ADDED_VAR, _FLAGS_VAR = "DEXFLY_XLA_DEFAULTS_ADDED", "DEXFLY_XLA_FLAGS"
_ADDED: set[str] = set()


def _jaxlib_version() -> str | None:
    """The installed jaxlib's version string, read without importing jax; None when it is not installed."""
    try:
        from importlib.metadata import version

        return version("jaxlib")
    except Exception:  # noqa: BLE001
        return None


def host_cache_tag() -> str:
    """`<jaxlib version>-<12 hex digits>`: the digits hash the CPU's model and feature flags (Linux
    /proc/cpuinfo; elsewhere `platform`), so machines that could load each other's executables share a folder."""
    jaxlib = _jaxlib_version() or "unknown"  # not installed yet: the tag only has to be stable
    cpu = f"{platform.machine()} {platform.processor()}"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = "\n".join(sorted({ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")}))
    except OSError:
        pass
    return f"{jaxlib}-{hashlib.sha256(cpu.encode()).hexdigest()[:12]}"


CPU_DEVICES_VAR = "DEXFLY_CPU_DEVICES"
MAX_DEFAULT_CPU_DEVICES = 4  # every preset's batch sizes (augment, collect, PPO envs per object group) are multiples of 4


def cpu_device_count() -> int:
    """How many devices XLA splits the CPU into: ``DEXFLY_CPU_DEVICES`` when set (a positive integer; anything else
    is a ValueError naming it), else the largest power of two <= min(usable cores, MAX_DEFAULT_CPU_DEVICES)."""
    value = os.environ.get(CPU_DEVICES_VAR, "").strip()
    if value:
        n = int(value) if value.isdigit() else 0
        if n < 1:
            raise ValueError(f"{CPU_DEVICES_VAR}={value!r}: expected a positive integer, the number of devices to split "
                             f"the CPU into (1: one device, as JAX's default)")
        return n
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (a container's share, not the host's)
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return 1 << (max(min(cores, MAX_DEFAULT_CPU_DEVICES), 1).bit_length() - 1)


def xla_defaults() -> dict[str, str]:
    """The flags dexfly adds to XLA_FLAGS: XLA_DEFAULTS where this jaxlib is known to accept them, and the CPU's
    device count (`cpu_device_count`, when above 1; a flag every jaxlib knows). XLA aborts the process at its first
    use when XLA_FLAGS names a flag it does not know (`Unknown flag in XLA_FLAGS`), and jaxlib 0.11.2 (the CUDA build
    on the lent GPU, BENCHMARKS.md session 25) no longer knows `xla_cpu_use_fusion_emitters`; XLA_DEFAULTS were
    verified on jaxlib 0.10 (the pin in pyproject.toml). ``DEXFLY_XLA_DEFAULTS=off`` leaves XLA_FLAGS alone."""
    if os.environ.get("DEXFLY_XLA_DEFAULTS", "").lower() in ("off", "0", "false", "no"):
        return {}
    flags = {}
    try:
        major_minor = tuple(int(p) for p in (_jaxlib_version() or "").split(".")[:2])
    except ValueError:  # an unusual version string: not one the flags were verified on
        major_minor = ()
    if len(major_minor) == 2 and major_minor < (0, 11):
        flags.update(XLA_DEFAULTS)
    n = cpu_device_count()
    if n > 1:
        flags["xla_force_host_platform_device_count"] = str(n)
    return flags


def configure() -> None:
    """Set XLA flags and JAX compilation-cache env vars (idempotent; call before importing jax)."""
    flags = os.environ.get("XLA_FLAGS", "")
    added = set()
    if flags and flags == os.environ.get(_FLAGS_VAR):  # set by configure() in this process or a parent
        added = set(filter(None, os.environ.get(_ADDED_VAR, "").split(",")))
    for name, value in xla_defaults().items():
        if f"--{name}=" not in flags and not flags.rstrip().endswith(f"--{name}"):
            flags = f"{flags} --{name}={value}".strip()
            added.add(name)
    _ADDED.clear()
    _ADDED.update(added)
    os.environ["XLA_FLAGS"] = os.environ[_FLAGS_VAR] = flags
    os.environ[_ADDED_VAR] = ",".join(sorted(added))
    cache = os.environ.get("DEXFLY_JAX_CACHE_DIR") or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if cache is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache = str(Path(base) / "dexfly" / "jax" / host_cache_tag())
    if cache != "off":
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # Rendering without a display: EGL is the fast headless path; users may override. Only where libEGL exists:
    # with MUJOCO_GL=egl and no libEGL, `import mujoco` itself fails (PyOpenGL's EGL platform is None; seen on the
    # lent GPU machine, BENCHMARKS.md session 25), so dexfly could not run there even without rendering.
    if "MUJOCO_GL" not in os.environ and egl_available():
        os.environ["MUJOCO_GL"] = "egl"
    if "MUJOCO_GL" in os.environ:
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def egl_available() -> bool:
    """Whether the system's libEGL can be found (what MuJoCo's EGL rendering loads)."""
    import ctypes.util

    return ctypes.util.find_library("EGL") is not None


def network_jit(fun: Callable, **jit_kwargs: Any) -> Callable:
    """`jax.jit(fun, **jit_kwargs)` for a program with no MJX in it. On the CPU backend, when the fusion emitters
    are off only by dexfly's default, the program is compiled with them on (a per-program XLA option; the
    process-wide flag stays off for MJX). On other backends, or when the user set the flag, it is plain jax.jit.
    The backend is read at the first call (not at import, before any multi-host setup)."""
    import jax

    compiled: dict[str, Callable] = {}

    @functools.wraps(fun)
    def call(*args: Any, **kwargs: Any) -> Any:
        backend = jax.default_backend()
        if backend not in compiled:
            on = backend == "cpu" and "xla_cpu_use_fusion_emitters" in _ADDED
            compiled[backend] = jax.jit(fun, compiler_options={"xla_cpu_use_fusion_emitters": True} if on else None, **jit_kwargs)
        return compiled[backend](*args, **kwargs)

    return call


configure()
