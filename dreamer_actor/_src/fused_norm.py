"""Normalization fused with the activation that follows it, with a hand-written backward.

Why: autodiff of flax's `nn.LayerNorm` followed by `jax.nn.silu` compiles, on XLA CPU,
into several passes over the activations, with broadcasts of the scale materialized at
the full `[..., F]` shape. The functions here are `act(norm(x))` with a `jax.custom_vjp`
whose backward is one pass over what the forward saved: the input `x` (in its own dtype,
which for bfloat16 is half the memory of the normalized float32 `xhat`) and the per-row
statistics `[..., 1]`; `xhat` and the pre-activation are recomputed, which costs one
fused multiply-add each and no extra memory traffic.

Maths, per row of `F` features, in the statistics dtype `c = promote(x.dtype, float32)`:

  LayerNorm:  mu = mean(x),  var = max(0, mean(x^2) - mu^2),  r = rsqrt(var + eps),
              xhat = (x - mu) r,  z = scale xhat + bias,  y = act(z)
  RMSNorm:    r = rsqrt(mean(x^2) + eps),  xhat = x r,  z = scale xhat,  y = act(z)

The LayerNorm variance is flax's (`use_fast_variance=True`, clamped at zero, NaN where `mu^2`
overflows whatever the compiler contracts into a fused multiply-add), so outputs
equal `nn.LayerNorm(epsilon=eps)` followed by `act` up to float32 rounding, and so does
the documented domain (finite for latents up to 1e20, NaN once `mu^2` overflows float32;
`tests/test_domain.py`). The RMSNorm is the project's `networks.RMSNorm`. The backward,
with `gz = dy * act'(z)` (the activation's own `jax.vjp`: elementwise, XLA fuses it) and
`gh = gz * scale`:

  dbias  = sum over batch of gz,   dscale = sum over batch of gz * xhat
  LayerNorm:  dx = r * (gh - mean(gh) - xhat * mean(gh * xhat))
  RMSNorm:    dx = r * (gh - xhat * mean(gh * xhat))

Two choices are about how XLA CPU compiles this, not the maths (values change by float rounding).
XLA CPU compiles each row reduction into a YNNPACK fusion, which takes no implicit broadcast (a
broadcast operand is written out at `[..., F]` first) and may also write out a broadcast of its
result at that full size:
  * The backward's row means are products with `scale / F` (`mean(gh) = gz . (scale / F)`,
    `_row_dot`), so the scale is never broadcast to `[..., F]` for a reduction.
  * The forward's row statistics pass through an `optimization_barrier` (`_row_stats_barrier`),
    so `r`'s broadcast to `[..., F]` is not written out by the reductions' fusion.
Without both, the LayerNorm core made the actor's training step and the agent's update measurably
slower, and the RMSNorm core the actor's training step (the `norm-backward`, `norm-barrier` and
`norm-rms` probes; the numbers are in `benchmarks/README.md`, "Round three", **The forward's row
statistics behind a barrier**). Gradients agree to 1e-6 relative.

Caveats:
  * A `custom_vjp` has no forward mode of its own: `jax.jvp` and `jax.jacfwd` of these
    functions raise a `TypeError`. Anything over reverse mode works, since the backward is
    plain differentiable `jnp`: reverse-over-reverse (`jax.grad` of `jax.grad`) and
    forward-over-reverse (`jax.hessian`).
  * Where the variance clamp is active (a constant row, `var` rounding below zero) the
    backward is that of the unclamped variance. There `xhat` is zero up to rounding, so the
    two differ by rounding only.
  * Outputs are in the input's dtype and the activation is evaluated in float32 before
    that one rounding; flax's LayerNorm followed by `act` on a bfloat16 `dtype` rounds twice
    (the norm's output, then the activation's).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from dreamer_actor._src.config import ACTIVATIONS

_ACT = {name: getattr(jax.nn, name) for name in ACTIVATIONS}


def _check(fn: str, x: jax.Array, params: dict[str, jax.Array], eps: float, activation: str) -> None:
    """Trace-time checks at the public boundary; the custom_vjp core trusts its arguments."""
    if x.ndim < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{fn}: `x` must be a floating-point array [..., F], got {x.dtype} of shape {x.shape}.")
    for name, p in params.items():
        if p.shape != x.shape[-1:] or not jnp.issubdtype(p.dtype, jnp.floating):
            raise ValueError(
                f"{fn}: `{name}` must be a floating-point array of shape {x.shape[-1:]} (the features of `x` "
                f"{x.shape}), got {p.dtype} of shape {p.shape}."
            )
    if activation not in _ACT:
        raise ValueError(f"{fn}: `activation` must be one of {ACTIVATIONS}, got {activation!r}.")
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
        raise ValueError(f"{fn}: `eps` must be a positive Python number (static), got {eps!r}.")


def _row(p: jax.Array, ndim: int, dtype: jnp.dtype) -> jax.Array:
    """`[F] -> [1, ..., 1, F]` of rank `ndim`: a reshape (free), not a broadcast to `[..., F]`.

    Same rank as `x`, so the elementwise op broadcasts the size-1 dims without rank promotion.
    """
    return p.astype(dtype).reshape((1,) * (ndim - 1) + p.shape)


def _row_dot(a: jax.Array, w: jax.Array) -> jax.Array:
    """`[..., F] x [F] -> [..., 1]`: each row's dot product with `w`, at full float32 precision.

    The backward's row means of `gz * scale` are asked for this way, `gz . (scale / F)`, not as
    `mean(gz * scale)`: XLA CPU compiles a row reduction into a YNNPACK fusion that takes no
    implicit broadcast, so the latter materializes `scale` at `[..., F]` first. `HIGHEST` keeps
    accelerators from computing it in a narrower type (TF32 or bfloat16 passes).
    """
    return jax.lax.dot_general(a, w, (((a.ndim - 1,), (0,)), ((), ())), precision=jax.lax.Precision.HIGHEST)[..., None]


def _row_stats_barrier(*stats: jax.Array) -> tuple[jax.Array, ...]:
    """The forward's row statistics `[..., 1]` behind an `optimization_barrier` (values unchanged).

    Without it XLA CPU fuses what follows the reductions (the variance, `rsqrt`, and the broadcast
    of `r` to `[..., F]` that both passes multiply by) into the reductions' YNNPACK fusion, whose
    output is then `r` written out at `[..., F]`, once per norm. Behind the barrier the broadcast
    fuses into the elementwise passes that read it, and is never written.
    """
    return tuple(jax.lax.optimization_barrier(stats))


def _batch_axes(x: jax.Array) -> tuple[int, ...]:
    return tuple(range(x.ndim - 1))


def _act_grad(activation: str, z: jax.Array, g: jax.Array) -> jax.Array:
    """`g * act'(z)` through the activation's own VJP (the same derivative autodiff of `act` gives)."""
    _, vjp = jax.vjp(_ACT[activation], z)
    return vjp(g)[0]


# ----------------------------------------------------------------------------- LayerNorm


def _ln_stats(x: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    """`(mu, r)`, each `[..., 1]` in the statistics dtype: mean and reciprocal std (flax's variance)."""
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = functools.partial(jnp.mean, axis=-1, keepdims=True)
    mu, ms = _row_stats_barrier(mean(x32), mean(jnp.square(x32)))
    mu2 = jnp.square(mu)
    # NaN where `mu^2` overflows, as flax's variance: a compiled `ms - mu^2` may be contracted into
    # a fused multiply-add, whose unrounded `mu^2` would give `inf - 1e60 = inf`, so r = 0, finite.
    var = jnp.where(jnp.isinf(mu2), jnp.nan, jnp.maximum(0.0, ms - mu2))
    return mu, jax.lax.rsqrt(var + eps)


def _ln_pre(x, mu, r, scale, bias):
    """`(xhat, z)`: the normalized input and the pre-activation, `[..., F]` in the statistics dtype."""
    c = mu.dtype
    xhat = (x.astype(c) - mu) * r
    return xhat, xhat * _row(scale, x.ndim, c) + _row(bias, x.ndim, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _layer_norm_act(x, scale, bias, eps, activation):
    return _layer_norm_act_fwd(x, scale, bias, eps, activation)[0]


def _layer_norm_act_fwd(x, scale, bias, eps, activation):
    mu, r = _ln_stats(x, eps)
    _, z = _ln_pre(x, mu, r, scale, bias)
    return _ACT[activation](z).astype(x.dtype), (x, mu, r, scale, bias)


def _layer_norm_act_bwd(eps, activation, res, g):
    del eps  # inside r already
    x, mu, r, scale, bias = res
    xhat, z = _ln_pre(x, mu, r, scale, bias)
    gz = _act_grad(activation, z, g.astype(z.dtype))
    w = scale.astype(z.dtype) / x.shape[-1]
    dx = r * (gz * _row(scale, x.ndim, z.dtype) - _row_dot(gz, w) - xhat * _row_dot(gz * xhat, w))
    batch = _batch_axes(x)
    return (
        dx.astype(x.dtype),
        jnp.sum(gz * xhat, axis=batch).astype(scale.dtype),
        jnp.sum(gz, axis=batch).astype(bias.dtype),
    )


_layer_norm_act.defvjp(_layer_norm_act_fwd, _layer_norm_act_bwd)


def layer_norm_act(x: jax.Array, scale: jax.Array, bias: jax.Array, *, eps: float, activation: str) -> jax.Array:
    """`act(LayerNorm(x))` over the last axis, with a one-pass custom backward.

    Equals `getattr(jax.nn, activation)(nn.LayerNorm(epsilon=eps).apply({"params": {"scale":
    scale, "bias": bias}}, x))` up to float32 rounding (see the module docstring for the maths
    and caveats: no forward mode except over reverse mode).

    Args:
      x: `[..., F]` floating point (float32, bfloat16, float16, float64); statistics are
        computed in `promote(x.dtype, float32)`.
      scale: `[F]` learned scale (any float dtype; its gradient comes back in its dtype).
      bias: `[F]` learned shift.
      eps: static positive Python number added to the variance.
      activation: static name of a `jax.nn` activation, one of `config.ACTIVATIONS`.

    Returns:
      `[..., F]` in `x.dtype`.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 2.0, 3.0]])
      >>> y = layer_norm_act(x, jnp.ones(3), jnp.zeros(3), eps=1e-3, activation="relu")
      >>> [round(float(v), 3) for v in y[0]]
      [0.0, 0.0, 1.224]
    """
    x, scale, bias = jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias)
    _check("layer_norm_act", x, {"scale": scale, "bias": bias}, eps, activation)
    return _layer_norm_act(x, scale, bias, float(eps), activation)


# ----------------------------------------------------------------------------- RMSNorm


def _rms_r(x: jax.Array, eps: float) -> jax.Array:
    """`[..., 1]` reciprocal root mean square in the statistics dtype."""
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    (ms,) = _row_stats_barrier(jnp.mean(jnp.square(x32), axis=-1, keepdims=True))
    return jax.lax.rsqrt(ms + eps)


def _rms_pre(x, r, scale):
    xhat = x.astype(r.dtype) * r
    return xhat, xhat * _row(scale, x.ndim, r.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _rms_norm_act(x, scale, eps, activation):
    return _rms_norm_act_fwd(x, scale, eps, activation)[0]


def _rms_norm_act_fwd(x, scale, eps, activation):
    r = _rms_r(x, eps)
    _, z = _rms_pre(x, r, scale)
    return _ACT[activation](z).astype(x.dtype), (x, r, scale)


def _rms_norm_act_bwd(eps, activation, res, g):
    del eps  # inside r already
    x, r, scale = res
    xhat, z = _rms_pre(x, r, scale)
    gz = _act_grad(activation, z, g.astype(z.dtype))
    w = scale.astype(z.dtype) / x.shape[-1]
    dx = r * (gz * _row(scale, x.ndim, z.dtype) - xhat * _row_dot(gz * xhat, w))
    return dx.astype(x.dtype), jnp.sum(gz * xhat, axis=_batch_axes(x)).astype(scale.dtype)


_rms_norm_act.defvjp(_rms_norm_act_fwd, _rms_norm_act_bwd)


def rms_norm_act(x: jax.Array, scale: jax.Array, *, eps: float, activation: str) -> jax.Array:
    """`act(RMSNorm(x))` over the last axis (the project's `networks.RMSNorm`), one-pass backward.

    Args:
      x: `[..., F]` floating point; statistics in `promote(x.dtype, float32)`.
      scale: `[F]` learned scale.
      eps: static positive Python number added to the mean square.
      activation: static name of a `jax.nn` activation, one of `config.ACTIVATIONS`.

    Returns:
      `[..., F]` in `x.dtype`.

    Examples:
      >>> import jax.numpy as jnp
      >>> y = rms_norm_act(jnp.array([3.0, -4.0]), jnp.ones(2), eps=1e-4, activation="relu")
      >>> [round(float(v), 3) for v in y]
      [0.849, 0.0]
    """
    x, scale = jnp.asarray(x), jnp.asarray(scale)
    _check("rms_norm_act", x, {"scale": scale}, eps, activation)
    return _rms_norm_act(x, scale, float(eps), activation)


# ----------------------------------------------------------------------------- modules


class FusedLayerNormAct(nn.Module):
    """`nn.LayerNorm` then an activation, fused; the params are exactly `nn.LayerNorm`'s.

    `"scale"` (ones) and `"bias"` (zeros), both `[F]` in `param_dtype`, so params and
    checkpoints of a `nn.LayerNorm` of the same name load unchanged.

    Attributes:
      activation: name of a `jax.nn` activation (one of `config.ACTIVATIONS`).
      eps: added to the variance (the Actor's 1e-3; flax's default is 1e-6).
      dtype: output dtype; `None` keeps the input's. Statistics are float32 (or wider).
      param_dtype: dtype of `scale` and `bias`.
    """

    activation: str = "silu"
    eps: float = 1e-3
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[..., F] -> [..., F]`."""
        features = (jnp.shape(x)[-1],)
        scale = self.param("scale", nn.initializers.ones, features, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, features, self.param_dtype)
        y = layer_norm_act(x, scale, bias, eps=self.eps, activation=self.activation)
        return y if self.dtype is None else y.astype(self.dtype)


class FusedRMSNormAct(nn.Module):
    """The project's `networks.RMSNorm` then an activation, fused; the same single param.

    `"scale"` (ones), `[F]` float32 (as `RMSNorm`, whatever the compute dtype).

    Attributes:
      activation: name of a `jax.nn` activation (one of `config.ACTIVATIONS`).
      eps: added to the mean square (`RMSNorm`'s 1e-4).
      dtype: output dtype; `None` keeps the input's. Statistics are float32 (or wider).
      param_dtype: dtype of `scale` (float32, as `RMSNorm`).
    """

    activation: str = "silu"
    eps: float = 1e-4
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """`[..., F] -> [..., F]`."""
        scale = self.param("scale", nn.initializers.ones, (jnp.shape(x)[-1],), self.param_dtype)
        y = rms_norm_act(x, scale, eps=self.eps, activation=self.activation)
        return y if self.dtype is None else y.astype(self.dtype)
