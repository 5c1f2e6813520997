"""A dense layer whose weight gradient is asked of XLA as a plain row-major matrix product.

Why: autodiff of `x @ W` gives the weight gradient `dW = x^T g` as a `dot_general` that
contracts the batch dims of both operands. XLA CPU runs that product, transposed on both
sides, on its slow Eigen fallback, well behind numpy on the same operands. Asking for
`(g^T x)^T` instead, with an `optimization_barrier` on `g^T x` so that XLA cannot fold the
final (kernel-sized, cheap) transpose back into the product, gives it a product with the
contraction on the right operand's rows, which it runs on its fast GEMM (YNNPACK): the
product alone and the actor's whole training step both take less time than with `nn.Dense`.
The barrier only orders this computation; values are unchanged.

Maths, with `x` flattened to rows `[N, K]` and `g` to `[N, F]`:

  y = x @ W                        (`nn.Dense`'s own `dot_general`: outputs are bitwise equal)
  dx = g @ W^T,  dW = (g^T x)^T,  db = sum over rows of g

Caveats:
  * A `custom_vjp` has no forward mode of its own: `jax.jvp` and `jax.jacfwd` raise a
    `TypeError`. Reverse mode over it works (`jax.grad` of `jax.grad`, `jax.hessian`), since
    the backward is plain differentiable `jnp`.
  * `dW` sums the same products as autodiff's in another order: it agrees to float rounding.

Several inputs: `Dense` also takes a tuple of arrays `(x_1, ..., x_n)`, `[..., K_i]` each, and
computes the same layer as on their concatenation `[..., sum K_i]` (one kernel, the same
params). On many rows of a narrow layer it computes `sum_i x_i @ W_i` on the kernel's row
blocks instead, so the concatenated input is never written. Timed as the actor's training step
with the first layer forced to each form (inputs 512 + 1024), the sum is faster on 4,096 rows
and more of a 256-unit layer, about even on 1,024 rows and slower on a 1024-unit layer; on the
agent's `[8192, 128 + 128]` -> 128 heads it made the update slower, so the agent concatenates.
At acting sizes (1 to 16 rows) two products cost more than one product and a copy. How much the
sum gains depends on the machine. Hence the rule in `_sum_of_products`. The two forms agree to
float rounding, not bit for bit. In a compute dtype narrower than float32 the layer always
concatenates (each product would be rounded to it before the sum).

The timings behind both choices are in `benchmarks/README.md`: "Round two, afternoon", **The
weight gradient** (the `dense` probe), and "Round two, evening", **The input concatenation,
measured again** (the `split`, `agent-split` and `act` probes).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


def _forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
    # Exactly `nn.Dense`'s product, so outputs match it bit for bit.
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


@jax.custom_vjp
def _dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _forward(x, kernel)


def _dense_fwd(x, kernel):
    return _forward(x, kernel), (x, kernel)


def _dense_bwd(res, g):
    x, kernel = res
    dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())))
    rows, grads = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    dkernel = jax.lax.optimization_barrier(grads.T @ rows).T
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x @ kernel` over the last axis of `x`, with the weight gradient as `(g^T x)^T`.

    Args:
      x: `[..., K]` floating point.
      kernel: `[K, F]` in `x`'s dtype (cast it first, as `nn.Dense` does).

    Returns:
      `[..., F]`, equal bit for bit to `nn.Dense`'s product of the same operands.

    Raises:
      ValueError: naming the argument when ranks, sizes or dtypes disagree.
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    if x.ndim < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"dense: `x` must be a floating-point array [..., K], got {x.dtype} of shape {x.shape}.")
    if kernel.ndim != 2 or kernel.shape[0] != x.shape[-1] or kernel.dtype != x.dtype:
        raise ValueError(
            f"dense: `kernel` must be [K, F] with K = {x.shape[-1]} (the last dim of `x`) in `x`'s dtype "
            f"{x.dtype}, got {kernel.dtype} of shape {kernel.shape}."
        )
    return _dense(x, kernel)


# Where a sum of products pays (see the module docstring): the rows of the layer's input and
# its output width, measured on one machine (`benchmarks/README.md`); below or above them, concatenate.
SUM_OF_PRODUCTS_MIN_ROWS = 4096
SUM_OF_PRODUCTS_MAX_FEATURES = 256


def _sum_of_products(rows: int, features: int) -> bool:
    """Whether a several-input `Dense` computes `sum_i x_i @ W_i` (else it concatenates first)."""
    return rows >= SUM_OF_PRODUCTS_MIN_ROWS and features <= SUM_OF_PRODUCTS_MAX_FEATURES


def _parts(x: Any) -> tuple[jax.Array, ...]:
    """The layer's inputs as a tuple of arrays with equal leading dims (the one input, or several)."""
    parts = tuple(jnp.asarray(p) for p in x) if isinstance(x, (tuple, list)) else (jnp.asarray(x),)
    if not parts or any(p.ndim < 1 for p in parts):
        raise ValueError(
            f"Dense: `x` must be an array [..., K] or a tuple of them, got shapes {[p.shape for p in parts]}."
        )
    if len({p.shape[:-1] for p in parts}) > 1:
        raise ValueError(
            f"Dense: the inputs in `x` must share their leading dims, got shapes {[p.shape for p in parts]}."
        )
    return parts


class Dense(nn.Module):
    """`nn.Dense` with the weight gradient computed by `dense`; the same params and outputs.

    `"kernel"` `[K, features]` (initialized by `kernel_init`, `lecun_normal` as flax's default)
    and, with `use_bias`, `"bias"` `[features]` (zeros), both in `param_dtype`: params and
    checkpoints of an `nn.Dense` of the same name load unchanged, and outputs are equal.

    Attributes:
      features: output width.
      (Called on `x` `[..., K]`, or on a tuple of `[..., K_i]` with equal leading dims: the
      layer on their concatenation, `K = sum K_i`.)
      use_bias: whether to add a learned bias.
      dtype: compute dtype; `None` promotes the input's and the params' dtypes (as flax).
      param_dtype: dtype of the params.
      kernel_init: initializer of the kernel.
    """

    features: int
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array | tuple[jax.Array, ...]) -> jax.Array:
        """`[..., K] -> [..., features]`; a tuple of `[..., K_i]` is the layer on their concatenation."""
        parts = _parts(x)
        sizes = [p.shape[-1] for p in parts]
        kernel = self.param("kernel", self.kernel_init, (sum(sizes), self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype) if self.use_bias else None
        *parts, kernel, bias = nn.dtypes.promote_dtype(*parts, kernel, bias, dtype=self.dtype)
        rows = math.prod(parts[0].shape[:-1])
        # In bfloat16 / float16 each product would be rounded before the sum: concatenate there.
        narrow = jnp.finfo(kernel.dtype).bits < 32
        if len(parts) == 1 or narrow or not _sum_of_products(rows, self.features):
            y = dense(jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0], kernel)
        else:
            starts = (0, *itertools.accumulate(sizes[:-1]))
            y = sum(dense(p, kernel[s : s + k]) for p, s, k in zip(parts, starts, sizes, strict=True))
        return y if bias is None else y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
