r"""Return normalization by an EMA of return percentiles (DreamerV3's `retnorm`).

DreamerV3 (Hafner et al., 2023, sec. 3 "Robust predictions"; `Normalize(impl='perc')` in
its code) divides the advantage by

    scale = max(min_scale, hi - lo),      min_scale = 1,

where `lo` and `hi` are exponential moving averages (rate 0.01) of the 5th and 95th
percentiles of the lambda-returns of each batch. Large returns are thus scaled down to a
range of about 1, while small (sparse-reward) returns are left alone: the `max(1, .)`
never amplifies noise. The advantage is `(R - v) / scale`.

**Two EMA starts; official DreamerV3 uses the plain one.** Its `configs.yaml` sets
`retnorm: {impl: perc, rate: 0.01, limit: 1.0, perclo: 5.0, perchi: 95.0, debias: False}`.

* `debias=False` (the default, as official DreamerV3): `lo` and `hi` start at 0 and each
  update is the plain EMA

      x_n = (1 - rate) * x_{n-1} + rate * P(batch_n),      x_0 = 0.

  After `n` updates with the same batch, `hi - lo` is `1 - (1 - rate)^n` of the batch's
  `P95 - P5`: with rate 0.01 that is 1% after the first update, 9.6% after 10, 50% after
  69, 63% after 100, 95% after 300. Measured example: for the batch
  `linspace(0, 1000, 101)` (P5 = 50, P95 = 950, spread 900): after one update
  `lo = 0.5`, `hi = 9.5`, scale 9.0, i.e. 1.00% of the spread (debiased: 900); for
  `linspace(0, 100, 101)` (spread 90) the plain EMA's 0.9 is clamped to `min_scale`, so
  the scale is 1.0 = 1.1% of the spread. Early advantages are therefore up to
  `1 / (1 - (1 - rate)^n)` times larger than with debiasing (100x at n = 1), until about
  `3 / rate` = 300 updates.
* `debias=True`: the Adam-style bias correction. Official DreamerV3 (with `debias: True`)
  keeps `corr`, the EMA of a constant 1, and reports `lo / max(rate, corr)`,
  `hi / max(rate, corr)`; after `n >= 1` updates `corr = 1 - (1 - rate)^n >= rate`, so
  this is `ema_n / (1 - (1 - rate)^n)`. We keep the *debiased* statistic itself in the
  state and update it with the step size `rate / (1 - (1 - rate)^n)`:

      m_n = m_{n-1} + rate / (1 - (1 - rate)^n) * (P(batch_n) - m_{n-1}),

  which equals `ema_n / (1 - (1 - rate)^n)` exactly. The first update sets `lo`, `hi` to
  the first batch's percentiles (step size 1), and `m_n` is always a normalized weighted
  mean of all batches seen, recent ones weighted most.

Both agree after many updates (the correction factor tends to 1); they differ only in the
first few hundred updates at rate 0.01.

**Non-finite returns are skipped.** A batch with any NaN or inf entry leaves `lo`, `hi`
and `count` unchanged and increments the int32 counter `skipped` instead (chosen with
`jnp.where`, so it works under `jit`/`scan`): one diverged imagined trajectory can no
longer make the statistics NaN forever. `update` returns the scale of the unchanged
state for such a batch. Watch `state.skipped` as a metric, or use
`ReturnNormalizer.checked_update`, which reports "returns has NaN or inf entries" as a
`jax.experimental.checkify` error (`err.throw()` raises a `JaxRuntimeError`).

The state is a `flax.struct.dataclass` pytree of float32/int32 scalars (`lo`, `hi`,
`count`, `skipped`): carry it through `jit`, `scan`, checkpoints (`flax.serialization`,
orbax) like optimizer state. Statistics never carry gradients. (A state dict saved
before `skipped` existed lacks that key; add `skipped=0` to it before restoring.)

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
from jax.experimental import checkify


@struct.dataclass
class ReturnNormalizerState:
    """Running statistics of `ReturnNormalizer`; a pytree of scalars.

    Attributes:
      lo: `[]` float32, EMA of the low return percentile (0 before any update); the plain
        EMA for `debias=False`, the debiased one for `debias=True`.
      hi: `[]` float32, EMA of the high return percentile (0 before any update).
      count: `[]` int32, number of batches folded in so far (drives the debiasing).
      skipped: `[]` int32, number of batches skipped for NaN or inf returns.
    """

    lo: jax.Array
    hi: jax.Array
    count: jax.Array
    skipped: jax.Array


def _check_state(fn: str, state: ReturnNormalizerState) -> None:
    if not isinstance(state, ReturnNormalizerState):
        raise TypeError(f"{fn}: `state` must be a ReturnNormalizerState, got {type(state)}.")
    for name in ("lo", "hi", "count", "skipped"):
        if jnp.ndim(getattr(state, name)) != 0:
            raise ValueError(f"{fn}: `state.{name}` must be a scalar, got shape {jnp.shape(getattr(state, name))}.")


def _check_returns(fn: str, returns: jax.Array) -> None:
    dtype = jnp.result_type(returns)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{fn}: `returns` must be floating point, got dtype {dtype}.")
    if jnp.size(returns) == 0:
        raise ValueError(f"{fn}: `returns` is empty (shape {jnp.shape(returns)}).")


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
      debias: False (DreamerV3's `retnorm`): plain EMA from 0; True: divide by the EMA of
        a constant 1 (see the module docstring).

    Example:
      >>> normalizer = ReturnNormalizer()
      >>> state = normalizer.init()
      >>> state, scale = normalizer.update(state, jnp.linspace(0.0, 1000.0, 101)[:, None])
      >>> round(float(state.lo), 4), round(float(state.hi), 4), round(float(scale), 4)  # 1% of P5, P95
      (0.5, 9.5, 9.0)
      >>> debiased = ReturnNormalizer(debias=True)
      >>> _, scale = debiased.update(debiased.init(), jnp.linspace(0.0, 1000.0, 101)[:, None])
      >>> float(scale)  # first update: the batch's P95 - P5
      900.0
    """

    low_percentile: float = struct.field(pytree_node=False, default=5.0)
    high_percentile: float = struct.field(pytree_node=False, default=95.0)
    rate: float = struct.field(pytree_node=False, default=0.01)
    min_scale: float = struct.field(pytree_node=False, default=1.0)
    debias: bool = struct.field(pytree_node=False, default=False)

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
        if not isinstance(self.debias, bool):
            raise TypeError(f"ReturnNormalizer: `debias` must be a bool, got {self.debias!r}.")

    def init(self) -> ReturnNormalizerState:
        """The state before any update: `lo = hi = 0`, `count = skipped = 0`; `scale` is `min_scale`."""
        # One buffer per field: a state shared by two fields cannot be donated to a jitted update.
        return ReturnNormalizerState(
            lo=jnp.zeros((), jnp.float32),
            hi=jnp.zeros((), jnp.float32),
            count=jnp.zeros((), jnp.int32),
            skipped=jnp.zeros((), jnp.int32),
        )

    def scale(self, state: ReturnNormalizerState) -> jax.Array:
        """`max(min_scale, hi - lo)`: `[]` float32, without gradient."""
        _check_state("ReturnNormalizer.scale", state)
        return jax.lax.stop_gradient(jnp.maximum(jnp.float32(self.min_scale), state.hi - state.lo))

    def _step(self, count: jax.Array) -> jax.Array:
        """EMA step size of the `count`-th update: `rate`, or `rate / (1 - (1 - rate)^count)` if debiased."""
        if not self.debias:
            return jnp.float32(self.rate)
        if self.rate == 1.0:
            return jnp.float32(1.0)
        step = self.rate / -jnp.expm1(count.astype(jnp.float32) * math.log1p(-self.rate))
        return jnp.minimum(step.astype(jnp.float32), 1.0)

    def update(self, state: ReturnNormalizerState, returns: jax.Array) -> tuple[ReturnNormalizerState, jax.Array]:
        """Folds a batch of returns into the statistics; skips a batch with NaN or inf.

            finite:      x <- x + step_n * (P(returns) - x)  for x in (lo, hi),  count += 1,
                         step_n = rate (debias=False) or rate / (1 - (1 - rate)^n) (debias=True),
            non-finite:  lo, hi, count unchanged,  skipped += 1.

        Args:
          state: the current `ReturnNormalizerState`.
          returns: `[T, B]` (any shape, >= 1 element) lambda-returns; percentiles are
            taken over all elements (the global batch, also when sharded under `jit`).
            Stop-gradiented and cast to float32 here.

        Returns:
          `(new_state, scale)`: the updated state and `max(min_scale, hi - lo)` from it,
          a `[]` float32 without gradient. Use it as
          `normalize_advantage(returns, values, scale)`.

        Raises:
          TypeError: `state` is not a `ReturnNormalizerState`.
          ValueError: `returns` is empty or not floating point, or a `state` field is not
            a scalar.
        """
        fn = "ReturnNormalizer.update"
        _check_state(fn, state)
        _check_returns(fn, returns)
        returns = jax.lax.stop_gradient(jnp.asarray(returns).astype(jnp.float32)).reshape(-1)
        finite = jnp.all(jnp.isfinite(returns))
        lo_batch, hi_batch = jnp.percentile(
            returns, jnp.asarray([self.low_percentile, self.high_percentile], jnp.float32)
        )
        step = self._step(state.count + 1)
        new_state = ReturnNormalizerState(
            lo=jnp.where(finite, state.lo + step * (lo_batch - state.lo), state.lo),
            hi=jnp.where(finite, state.hi + step * (hi_batch - state.hi), state.hi),
            count=state.count + finite.astype(jnp.int32),
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        new_state = jax.lax.stop_gradient(new_state)
        return new_state, self.scale(new_state)

    def _update_with_checks(
        self, state: ReturnNormalizerState, returns: jax.Array
    ) -> tuple[ReturnNormalizerState, jax.Array]:
        checkify.check(jnp.all(jnp.isfinite(returns)), "returns has NaN or inf entries")
        return self.update(state, returns)

    def checked_update(
        self, state: ReturnNormalizerState, returns: jax.Array
    ) -> tuple[checkify.Error, tuple[ReturnNormalizerState, jax.Array]]:
        """`update`, checkified: also reports non-finite returns as a run-time error.

        The state and scale are those of `update` (a non-finite batch is skipped); the
        error says "returns has NaN or inf entries". Works under `jit`; call
        `err.throw()` outside it to raise a `JaxRuntimeError`, or `err.get()` to inspect.

        Args:
          state: the current `ReturnNormalizerState`.
          returns: `[T, B]` (any shape, >= 1 element) floating-point lambda-returns.

        Returns:
          `(error, (new_state, scale))`.

        Raises:
          TypeError, ValueError: at trace time, as `update`.

        Example:
          >>> normalizer = ReturnNormalizer()
          >>> update = jax.jit(normalizer.checked_update)
          >>> err, (state, scale) = update(normalizer.init(), jnp.array([[0.0, jnp.nan]]))
          >>> err.get()  # doctest: +ELLIPSIS
          'returns has NaN or inf entries...'
          >>> int(state.count), int(state.skipped)
          (0, 1)
        """
        fn = "ReturnNormalizer.checked_update"
        _check_state(fn, state)
        _check_returns(fn, returns)
        return checkify.checkify(self._update_with_checks, errors=checkify.user_checks)(state, returns)


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
