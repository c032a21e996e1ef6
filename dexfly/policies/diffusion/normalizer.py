"""Per-dimension min-max normalisation to [-1, 1], stored with the model as a pytree of arrays."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

_EPS = 1e-6


@flax.struct.dataclass
class MinMax:
    """y = x * scale + offset maps [lo, hi] to [-1, 1] per dimension.

    A dimension with hi - lo < 1e-6 (constant in the data) gets scale 1 and maps lo to 0, so it neither
    divides by zero nor blows up small deviations at test time; unnormalising returns its constant, since
    with scale 1 a model's output noise (0.03 to 0.06 in the Lift base's constant action dimensions) would
    otherwise pass through as it is. All fields are float32 [D].
    """

    lo: jax.Array
    hi: jax.Array
    scale: jax.Array
    offset: jax.Array

    @classmethod
    def fit(cls, x: np.ndarray | jax.Array) -> MinMax:
        """Fit on data x [..., D] (all leading axes are samples)."""
        x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
        lo, hi = x.min(0), x.max(0)
        rng = hi - lo
        const = rng < _EPS
        scale = np.where(const, 1.0, 2.0 / np.where(const, 1.0, rng))
        offset = np.where(const, -lo, -1.0 - lo * scale)
        f = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        return cls(f(lo), f(hi), f(scale), f(offset))

    def normalize(self, x: jax.Array) -> jax.Array:
        """[..., D] raw -> [..., D] in [-1, 1] on the fitted range."""
        return x * self.scale + self.offset

    def unnormalize(self, y: jax.Array) -> jax.Array:
        """[..., D] normalised -> [..., D] raw; dimensions constant in the fitted data -> that constant."""
        return jnp.where(self.hi - self.lo < _EPS, self.lo, (y - self.offset) / self.scale)

    @property
    def dim(self) -> int:
        return int(self.lo.shape[-1])


@flax.struct.dataclass
class Normalizer:
    """Observation and action normalisers."""

    obs: MinMax
    action: MinMax

    @classmethod
    def fit(cls, obs: np.ndarray | jax.Array, actions: np.ndarray | jax.Array) -> Normalizer:
        """obs [..., obs_dim], actions [..., action_dim]."""
        return cls(MinMax.fit(obs), MinMax.fit(actions))
