"""Standard normal noise for the Gaussian policies' samples.

`standard_normal(key, shape)` is `N(0, 1)` noise. From 4096 elements on it is made of two
independent `jax.random.normal` draws (the first and second half of the flattened array, from
the two halves of `jax.random.split(key)`), concatenated; smaller arrays are one plain
`jax.random.normal(key, shape)`. Statistically it is exactly `jax.random.normal`; for large
arrays the values differ from `jax.random.normal(key, shape)` for the same key.

Why not `jax.random.normal` directly: XLA on CPU fuses the noise computation (the bits'
conversion to uniforms and the `erf_inv` polynomial) into the single elementwise kernel of the
gradient, whose root concatenates the mean and log-std gradients, and that kernel runs several
times slower than the same maths on a materialized noise array (the head's value and gradient
at DreamerV3's batch, 15,360 x 6 actions; the numbers are in `benchmarks/README.md`, "Engineering
log", **What we changed to get there**). XLA's simplifier removes every value-preserving
barrier we tried (`optimization_barrier`, slice-and-concatenate, pad-and-slice), so the
concatenation of two genuinely different draws is what keeps the noise a separate buffer.
It costs nothing elsewhere: the same number of random bits, one extra `split`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

# Below this many elements the fusion costs little and the extra `split` and second draw
# cost more (acting on one state: the benchmark's `act` at batch 1, `benchmarks/README.md`,
# "Engineering log"), so small arrays are one plain draw.
_SPLIT_FROM_SIZE = 4096


def standard_normal(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """`N(0, 1)` samples of `shape`, independent across elements.

    Args:
      key: a PRNG key (typed `jax.random.key` or raw `PRNGKey`).
      shape: output shape (any, including `()` and shapes with a zero).
      dtype: floating output dtype.

    Returns:
      `shape` array of `dtype`. With fewer than 4096 elements it is
      `jax.random.normal(key, shape, dtype)`; from 4096 on, the flattened first `size // 2`
      elements are `jax.random.normal(k1, ...)` and the rest `jax.random.normal(k2, ...)`,
      with `k1, k2 = jax.random.split(key)`.

    Example:
      >>> eps = standard_normal(jax.random.key(0), (4096, 6))
      >>> eps.shape, eps.dtype, bool(abs(float(eps.mean())) < 0.05), bool(abs(float(eps.std()) - 1.0) < 0.05)
      ((4096, 6), dtype('float32'), True, True)
    """
    shape = tuple(int(d) for d in shape)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"standard_normal: `dtype` must be floating point, got {jnp.dtype(dtype)}.")
    size = math.prod(shape)
    if size < _SPLIT_FROM_SIZE:
        return jax.random.normal(key, shape, dtype)
    first_key, second_key = jax.random.split(key)
    first = jax.random.normal(first_key, (size // 2,), dtype)
    second = jax.random.normal(second_key, (size - size // 2,), dtype)
    return jnp.concatenate([first, second]).reshape(shape)
