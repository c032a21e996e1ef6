"""Batched MJX manipulation tasks (one module per task)."""

import dexfly  # noqa: F401  (sets XLA flags and the compilation cache before jax is imported)
