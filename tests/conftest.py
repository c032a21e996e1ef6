import dexfly  # noqa: F401  (XLA flags + persistent compilation cache before jax is imported)
