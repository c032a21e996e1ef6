"""dexfly: a JAX/MJX data flywheel for dexterous manipulation (a DexFlyWheel reimplementation)."""

from dexfly import _jax_env  # noqa: F401  (must run before jax is imported anywhere)
from dexfly.paths import ASSETS_DIR, REPO_ROOT

__all__ = ["ASSETS_DIR", "REPO_ROOT"]
__version__ = "0.1.0"
