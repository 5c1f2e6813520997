r"""Return normalization by an EMA of return percentiles, as in DreamerV3.

DreamerV3 (Hafner et al., 2023, sec. 3 "Robust predictions"; `Normalize` in its code)
divides the advantage by

    scale = max(1, P95(R) - P5(R)),

where P5 and P95 are exponential moving averages (rate 0.01) of the 5th and 95th
percentiles of the lambda-returns of each batch. Large returns are thus scaled down to a
range of about 1, while small (sparse-reward) returns are left alone: the `max(1, .)`
never amplifies noise. The advantage is `(R - v) / scale`.

**EMA start: debiased, as DreamerV3.** A plain EMA started at 0 is biased towards 0 for
its first ~1/rate updates. DreamerV3 divides by the EMA of a constant 1, `1 - (1 - rate)^n`
after `n` updates (the Adam-style bias correction). We keep the *debiased* statistic
itself in the state and update it with the step size `rate / (1 - (1 - rate)^n)`:

    m_n = m_{n-1} + rate / (1 - (1 - rate)^n) * (p_n - m_{n-1}),

which equals DreamerV3's `ema_n / (1 - (1 - rate)^n)` exactly. The first update therefore
sets `lo`, `hi` to the first batch's percentiles (step size 1), and `m_n` is always a
normalized weighted mean of all batches seen, recent ones weighted most: unlike "set to
the first batch, then a plain EMA", the early returns of an untrained model do not linger
with weight `(1 - rate)^n`.

The state is a `flax.struct.dataclass` pytree of float32/int32 scalars (`lo`, `hi`,
`count`): carry it through `jit`, `scan`, checkpoints (`flax.serialization`, orbax) like
optimizer state. Statistics never carry gradients.

Sharded batches: `update` takes percentiles of the *global* batch. Under `jit`, with the
returns sharded across devices (e.g. `NamedSharding(mesh, P(None, "batch"))`),
`jnp.percentile` is computed over the whole logical array; XLA inserts the communication.
Under `shard_map`/`pmap`, where each device only sees its shard, all-gather the returns
first.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ReturnNormalizerState:
    """Running statistics of `ReturnNormalizer`; a pytree of scalars.

    Attributes:
      lo: `[]` float32, debiased EMA of the low return percentile (0 before any update).
      hi: `[]` float32, debiased EMA of the high return percentile (0 before any update).
      count: `[]` int32, number of updates so far (drives the debiasing).
    """

    lo: jax.Array
    hi: jax.Array
    count: jax.Array


@struct.dataclass
class ReturnNormalizer:
    """DreamerV3's percentile return normalizer: pure `init` / `update` / `scale`.

    All options are static (part of the treedef): an instance can be closed over, passed
    to `jax.jit` as an ordinary argument (it has no array leaves), or hashed.

    Attributes:
      low_percentile: lower percentile in [0, 100) (DreamerV3: 5).
      high_percentile: upper percentile in (low_percentile, 100] (DreamerV3: 95).
      rate: EMA rate in (0, 1] (DreamerV3: 0.01); 1 uses the current batch only.
      min_scale: the scale is `max(min_scale, hi - lo)` (DreamerV3: 1), > 0.

    Example:
      >>> normalizer = ReturnNormalizer()
      >>> state = normalizer.init()
      >>> state, scale = normalizer.update(state, jnp.linspace(0.0, 100.0, 101)[:, None])
      >>> float(state.lo), float(state.hi), float(scale)  # first update: the batch's P5, P95
      (5.0, 95.0, 90.0)
    """

    low_percentile: float = struct.field(pytree_node=False, default=5.0)
    high_percentile: float = struct.field(pytree_node=False, default=95.0)
    rate: float = struct.field(pytree_node=False, default=0.01)
    min_scale: float = struct.field(pytree_node=False, default=1.0)

    def __post_init__(self):
        lo, hi = self.low_percentile, self.high_percentile
        if not (0.0 <= lo < hi <= 100.0):
            raise ValueError(
                "ReturnNormalizer: need 0 <= `low_percentile` < `high_percentile` <= 100, "
                f"got low_percentile={lo!r}, high_percentile={hi!r}."
            )
        if not (0.0 < self.rate <= 1.0):
            raise ValueError(f"ReturnNormalizer: `rate` must be in (0, 1], got {self.rate!r}.")
        if not (math.isfinite(self.min_scale) and self.min_scale > 0.0):
            raise ValueError(f"ReturnNormalizer: `min_scale` must be finite and > 0, got {self.min_scale!r}.")

    def init(self) -> ReturnNormalizerState:
        """The state before any update: `lo = hi = 0`, `count = 0`, so `scale` is `min_scale`."""
        return ReturnNormalizerState(
            lo=jnp.zeros((), jnp.float32), hi=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.int32)
        )

    def scale(self, state: ReturnNormalizerState) -> jax.Array:
        """`max(min_scale, hi - lo)`: `[]` float32, without gradient."""
        return jax.lax.stop_gradient(jnp.maximum(jnp.float32(self.min_scale), state.hi - state.lo))

    def update(self, state: ReturnNormalizerState, returns: jax.Array) -> tuple[ReturnNormalizerState, jax.Array]:
        """Folds a batch of returns into the statistics.

        Args:
          state: the current `ReturnNormalizerState`.
          returns: `[T, B]` (any shape, >= 1 element) lambda-returns; percentiles are
            taken over all elements (the global batch, also when sharded under `jit`).
            Stop-gradiented and cast to float32 here.

        Returns:
          `(new_state, scale)`: the updated state and `max(min_scale, hi - lo)` from it,
          a `[]` float32 without gradient. Use it as
          `normalize_advantage(returns, values, scale)`.
        """
        if not isinstance(state, ReturnNormalizerState):
            raise TypeError(f"ReturnNormalizer.update: `state` must be a ReturnNormalizerState, got {type(state)}.")
        if not jnp.issubdtype(jnp.result_type(returns), jnp.floating):
            raise ValueError(
                f"ReturnNormalizer.update: `returns` must be floating point, got dtype {jnp.result_type(returns)}."
            )
        if jnp.size(returns) == 0:
            raise ValueError(f"ReturnNormalizer.update: `returns` is empty (shape {jnp.shape(returns)}).")
        returns = jax.lax.stop_gradient(jnp.asarray(returns).astype(jnp.float32)).reshape(-1)
        lo_batch, hi_batch = jnp.percentile(
            returns, jnp.asarray([self.low_percentile, self.high_percentile], jnp.float32)
        )
        count = state.count + 1
        # Debiased EMA: step = rate / (1 - (1 - rate)^count); exactly 1 on the first update.
        if self.rate == 1.0:
            step = jnp.float32(1.0)
        else:
            step = self.rate / -jnp.expm1(count.astype(jnp.float32) * math.log1p(-self.rate))
        step = jnp.minimum(step.astype(jnp.float32), 1.0)
        lo = state.lo + step * (lo_batch - state.lo)
        hi = state.hi + step * (hi_batch - state.hi)
        new_state = jax.lax.stop_gradient(ReturnNormalizerState(lo=lo, hi=hi, count=count))
        return new_state, self.scale(new_state)


def normalize_advantage(returns: jax.Array, values: jax.Array, scale: jax.Array | float) -> jax.Array:
    """`(returns - sg(values)) / sg(scale)`, elementwise.

    The baseline and the scale carry no gradient; the returns keep theirs (the
    "dynamics" estimator differentiates through them; `actor_loss` stop-gradients the
    advantage itself for REINFORCE).

    Args:
      returns: `[T, B]` (any shape) lambda-returns.
      values: same shape, the critic's baseline v(s_t).
      scale: scalar, e.g. from `ReturnNormalizer.update`.

    Returns:
      Same shape as `returns`, at least float32.
    """
    fn = "normalize_advantage"
    if jnp.shape(values) != jnp.shape(returns):
        raise ValueError(
            f"{fn}: `values` must have the shape of `returns` {jnp.shape(returns)}, got {jnp.shape(values)}."
        )
    if jnp.ndim(scale) != 0:
        raise ValueError(f"{fn}: `scale` must be a scalar, got shape {jnp.shape(scale)}.")
    dtype = jnp.promote_types(jnp.result_type(returns, values), jnp.float32)
    returns = jnp.asarray(returns, dtype)
    values = jax.lax.stop_gradient(jnp.asarray(values, dtype))
    scale = jax.lax.stop_gradient(jnp.asarray(scale, dtype))
    return (returns - values) / scale
