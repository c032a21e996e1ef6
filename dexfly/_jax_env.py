"""Process-wide JAX/XLA settings that must be in place before `jax` is imported.

Why: on the CPU, XLA's fusion emitters make `mjx.kinematics` cost grow exponentially with the depth
of the kinematic chain (an arm plus a hand is hundreds of times slower with them on; see
../shared/JAX-ON-CPU.md). The flag is harmless on GPUs. We append it without overwriting flags the
user already set.

The persistent compilation cache lives under the user's cache dir (``$XDG_CACHE_HOME/dexfly/jax`` or
``~/.cache/dexfly/jax``) unless ``DEXFLY_JAX_CACHE_DIR`` or ``JAX_COMPILATION_CACHE_DIR`` is set;
``DEXFLY_JAX_CACHE_DIR=off`` disables it.
"""

from __future__ import annotations

import os
from pathlib import Path

_CPU_FLAG = "--xla_cpu_use_fusion_emitters=false"


def configure() -> None:
    """Set XLA flags and JAX compilation-cache env vars (idempotent; call before importing jax)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + _CPU_FLAG).strip()
    cache = os.environ.get("DEXFLY_JAX_CACHE_DIR") or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if cache is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache = str(Path(base) / "dexfly" / "jax")
    if cache != "off":
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # Rendering without a display: EGL is the fast headless path; users may override.
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


configure()
