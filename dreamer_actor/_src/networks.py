"""The actor network: latent state in, raw distribution parameters out.

The module returns arrays, never distribution objects (as flax's PPO example does):
everything probabilistic lives in pure functions that callers can jit, vmap and test
on their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from dreamer_actor._src.config import ActorConfig


class RMSNorm(nn.Module):
    """RMS normalization with a learned scale, computed in float32 (DreamerV3's norm).

    Attributes:
      eps: added to the mean square before the reciprocal square root.
      dtype: output dtype.
    """

    eps: float = 1e-4
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (x32 * jnp.broadcast_to(scale, x32.shape)).astype(self.dtype)


def flatten_latent(hidden: jax.Array, stoch: jax.Array) -> jax.Array:
    """Concatenates the deterministic and stochastic latent parts.

    Args:
      hidden: `[..., H]` deterministic state.
      stoch: `[..., Z]` stochastic state, or `[..., S, C]` categorical latents (one-hot
        or probabilities), which are flattened to `[..., S * C]`. A `stoch` whose rank is
        one more than `hidden`'s is read as categorical.

    Returns:
      `[..., H + Z]` (or `[..., H + S * C]`), in `hidden`'s dtype promoted with `stoch`'s.

    Raises:
      ValueError: naming the argument when ranks or batch dims disagree.
    """
    hidden, stoch = jnp.asarray(hidden), jnp.asarray(stoch)
    if hidden.ndim < 1:
        raise ValueError(f"Actor: `hidden` must have shape [..., H], got a scalar of shape {hidden.shape}.")
    batch = hidden.shape[:-1]
    if stoch.ndim == hidden.ndim + 1:
        stoch = stoch.reshape(*stoch.shape[:-2], stoch.shape[-2] * stoch.shape[-1])
    elif stoch.ndim != hidden.ndim:
        raise ValueError(
            f"Actor: `stoch` must have shape [..., Z] or [..., S, C] with the same leading dims as "
            f"`hidden` {hidden.shape}, got {stoch.shape}."
        )
    if stoch.shape[:-1] != batch:
        raise ValueError(f"Actor: leading (batch) dims of `hidden` {hidden.shape} and `stoch` {stoch.shape} differ.")
    for name, x in (("hidden", hidden), ("stoch", stoch)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"Actor: `{name}` must be a floating-point array, got dtype {x.dtype}.")
    return jnp.concatenate([hidden, stoch.astype(hidden.dtype)], axis=-1)


class Actor(nn.Module):
    """MLP actor trunk and head: `(hidden, stoch) -> raw distribution parameters`.

    Every attribute is a hashable Python value (no arrays on the module); build it from
    a config with `Actor.from_config(config)`.

    For continuous distributions it returns `(mean, log_std)`, each `[..., A]` float32:
      * `tanh_normal`: the pre-squash Gaussian's mean (soft-limited to
        `[-mean_limit, mean_limit]`) and log-std (squashed into
        `[log_std_min, log_std_max]`, equal to `log(init_std)` when the raw output is 0).
      * `bounded_normal`: the raw outputs; `bounded_normal_params` maps them to the
        DreamerV3 `tanh` mean and `sigmoid` std.
    For `categorical` it returns `(logits, None)` with logits `[..., A]`.

    Attributes:
      action_dim: number of action dimensions (or choices).
      distribution: see `ActorConfig.distribution`.
      hidden_sizes: widths of the hidden layers.
      norm: `"layer"`, `"rms"` or `"none"`.
      activation: name of a `jax.nn` activation.
      log_std_min, log_std_max, init_std, mean_limit: see `ActorConfig`.
      output_scale: variance scale of the output layer's initializer.
      dtype: compute dtype of the trunk; params are float32 (`param_dtype`).
    """

    action_dim: int
    distribution: str = "tanh_normal"
    hidden_sizes: Sequence[int] = (256, 256, 256)
    norm: str = "layer"
    activation: str = "silu"
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    init_std: float = 1.0
    mean_limit: float | None = 5.0
    output_scale: float = 0.01
    dtype: str = "float32"
    param_dtype: str = "float32"

    @classmethod
    def from_config(cls, config: ActorConfig) -> Actor:
        return cls(
            action_dim=config.action_dim,
            distribution=config.distribution,
            hidden_sizes=(config.units,) * config.layers,
            norm=config.norm,
            activation=config.activation,
            log_std_min=config.log_std_min,
            log_std_max=config.log_std_max,
            init_std=config.init_std,
            mean_limit=config.mean_limit,
            output_scale=config.output_scale,
            dtype=config.dtype,
        )

    @nn.compact
    def __call__(self, hidden: jax.Array, stoch: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Args: `hidden [..., H]`, `stoch [..., Z]` or `[..., S, C]`. Returns `[..., A]` pairs."""
        dtype = jnp.dtype(self.dtype)
        x = flatten_latent(hidden, stoch).astype(dtype)
        act = getattr(jax.nn, self.activation)
        for i, width in enumerate(self.hidden_sizes):
            # The norm supplies the shift, so the Dense needs no bias (as DreamerV3).
            x = nn.Dense(
                width,
                use_bias=self.norm == "none",
                dtype=dtype,
                param_dtype=self.param_dtype,
                name=f"dense_{i}",
            )(x)
            if self.norm == "layer":
                x = nn.LayerNorm(epsilon=1e-3, dtype=dtype, param_dtype=self.param_dtype, name=f"norm_{i}")(x)
            elif self.norm == "rms":
                x = RMSNorm(dtype=dtype, name=f"norm_{i}")(x)
            x = act(x)
        discrete = self.distribution == "categorical"
        out = nn.Dense(
            self.action_dim if discrete else 2 * self.action_dim,
            dtype=dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.variance_scaling(self.output_scale, "fan_avg", "truncated_normal"),
            name="out",
        )(x)
        # Distribution maths in float32 (float64 under x64), whatever the trunk computed in.
        out = out.astype(jnp.promote_types(jnp.float32, self.param_dtype))
        if discrete:
            return out, None
        raw_mean, raw_std = jnp.split(out, 2, axis=-1)
        if self.distribution == "bounded_normal":
            return raw_mean, raw_std
        return self._squash_mean(raw_mean), self._squash_log_std(raw_std)

    def _squash_mean(self, raw: jax.Array) -> jax.Array:
        if self.mean_limit is None:
            return raw
        return self.mean_limit * jnp.tanh(raw / self.mean_limit)

    def _squash_log_std(self, raw: jax.Array) -> jax.Array:
        lo, hi = self.log_std_min, self.log_std_max
        # Offset so that raw = 0 gives log(init_std): a sane std at initialization.
        frac = (math.log(self.init_std) - lo) / (hi - lo)
        offset = math.log(frac / (1.0 - frac))
        return lo + (hi - lo) * jax.nn.sigmoid(raw + offset)
