"""The actor network: latent state in, raw distribution parameters out.

The module returns arrays, never distribution objects (as flax's PPO example does):
everything probabilistic lives in pure functions that callers can jit, vmap and test
on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from dreamer_actor._src.config import KERNELS, ActorConfig
from dreamer_actor._src.dense import Dense
from dreamer_actor._src.fused_norm import FusedLayerNormAct, FusedRMSNormAct


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


def cpu_kernels(kernels: str, fn: str = "kernels") -> bool:
    """Whether `kernels` (`ActorConfig.kernels`) means the CPU-tuned custom VJPs, decided at trace time:
    `"cpu"`, or `"auto"` while `jax.default_backend()` is the CPU."""
    if kernels not in KERNELS:
        raise ValueError(f"{fn}: `kernels` must be one of {KERNELS}, got {kernels!r}.")
    return kernels == "cpu" or (kernels == "auto" and jax.default_backend() == "cpu")


def _flax_norm_act(x: jax.Array, norm: str, activation: str, dtype: Any, param_dtype: Any, name: str) -> jax.Array:
    """The plain flax composition the fused modules replace (same params): norm, then the activation."""
    if norm == "layer":
        y = nn.LayerNorm(epsilon=1e-3, dtype=dtype, param_dtype=param_dtype, name=name)(x)
    else:
        y = RMSNorm(eps=1e-4, dtype=dtype or jnp.float32, name=name)(x)
    return getattr(jax.nn, activation)(y)


def _latent_parts(hidden: jax.Array, stoch: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(hidden [..., H], stoch [..., Z])`: `flatten_latent`'s checks and flattening, not yet concatenated."""
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
    return hidden, stoch.astype(hidden.dtype)


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
    return jnp.concatenate(_latent_parts(hidden, stoch), axis=-1)


class Actor(nn.Module):
    """MLP actor: `(hidden, stoch) -> raw outputs [..., num_outputs]` float32.

    The trunk is `layers` x (Dense without bias, norm, activation); the norm and the
    activation are one fused op with a hand-written backward (`_src/fused_norm.py`) whose
    params are exactly `nn.LayerNorm`'s (`"scale"`, `"bias"`) or `RMSNorm`'s (`"scale"`), and
    each Dense is `_src/dense.py`'s (`nn.Dense`'s params and outputs, a weight gradient XLA CPU
    runs faster), so params of the plain flax composition load unchanged. Both are `custom_vjp`s:
    reverse mode (and reverse over reverse, `jax.hessian`) works, `jax.jvp` raises `TypeError`.
    They are what `kernels="cpu"` (and `"auto"` on a CPU backend) computes with; `kernels="flax"`
    (and `"auto"` on GPU and TPU) uses that plain composition itself.
    The first Dense gets `hidden` and the flattened `stoch` as two inputs: on many rows (a
    training batch) it sums two products instead of concatenating them first, which agrees with
    the concatenated form to float rounding.
    The output layer is a Dense of `num_outputs` units (the family's `num_outputs(config)`,
    e.g. `2A` for the Gaussians, `A` logits for categorical) initialized with variance scale
    `output_scale`.
    The module returns arrays only: the family's `head` (`dreamer_actor.policy_head`) turns
    them into distribution parameters, and `act` does both. Every attribute is a hashable
    Python value (no arrays on the module); build it with `Actor.from_config(config)`.

    Attributes:
      num_outputs: width of the raw output layer.
      hidden_sizes: widths of the hidden layers.
      norm: `"layer"`, `"rms"` or `"none"`.
      activation: name of a `jax.nn` activation.
      output_scale: variance scale of the output layer's initializer.
      dtype: compute dtype of the trunk; params are `param_dtype` (float32).
      kernels: `"auto"`, `"cpu"` (the custom VJPs) or `"flax"` (flax's layers; forward mode works),
        as `ActorConfig.kernels`.
    """

    num_outputs: int
    hidden_sizes: Sequence[int] = (256, 256, 256)
    norm: str = "layer"
    activation: str = "silu"
    output_scale: float = 0.01
    dtype: str = "float32"
    param_dtype: str = "float32"
    kernels: str = "auto"

    @classmethod
    def from_config(cls, config: ActorConfig) -> Actor:
        return cls(
            num_outputs=config.family.num_outputs(config),
            hidden_sizes=(config.units,) * config.layers,
            norm=config.norm,
            activation=config.activation,
            output_scale=config.output_scale,
            dtype=config.dtype,
            kernels=config.kernels,
        )

    @nn.compact
    def __call__(self, hidden: jax.Array, stoch: jax.Array) -> jax.Array:
        """Args: `hidden [..., H]`, `stoch [..., Z]` or `[..., S, C]`. Returns `[..., num_outputs]`."""
        dtype = jnp.dtype(self.dtype)
        cpu = cpu_kernels(self.kernels, "Actor")
        dense = Dense if cpu else nn.Dense
        parts = tuple(part.astype(dtype) for part in _latent_parts(hidden, stoch))
        # The CPU Dense gets the two parts: it concatenates them, or, on many rows, sums two
        # products so the concatenated input is never written (`_src/dense.py`).
        x = parts if cpu else jnp.concatenate(parts, axis=-1)
        for i, width in enumerate(self.hidden_sizes):
            # The norm supplies the shift, so the Dense needs no bias (as DreamerV3).
            x = dense(
                width,
                use_bias=self.norm == "none",
                dtype=dtype,
                param_dtype=self.param_dtype,
                name=f"dense_{i}",
            )(x)
            if self.norm == "none":
                x = getattr(jax.nn, self.activation)(x)
            elif not cpu:
                x = _flax_norm_act(x, self.norm, self.activation, dtype, self.param_dtype, f"norm_{i}")
            # norm_i then the activation, fused: XLA CPU compiles autodiff of the unfused pair
            # into several passes with the scale broadcast to [..., F] (`_src/fused_norm.py`).
            elif self.norm == "layer":
                x = FusedLayerNormAct(
                    self.activation, eps=1e-3, dtype=dtype, param_dtype=self.param_dtype, name=f"norm_{i}"
                )(x)
            else:
                x = FusedRMSNormAct(self.activation, eps=1e-4, dtype=dtype, name=f"norm_{i}")(x)
        out = dense(
            self.num_outputs,
            dtype=dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.variance_scaling(self.output_scale, "fan_avg", "truncated_normal"),
            name="out",
        )(x)
        # Distribution maths in float32 (float64 under x64), whatever the trunk computed in.
        return out.astype(jnp.promote_types(jnp.float32, self.param_dtype))


class MLP(nn.Module):
    """`[..., F]` -> `[..., out or units]`: `layers` x (Dense without bias, norm, SiLU), then an optional Dense.

    The Actor's blocks, for the rest of an agent (the world model's encoder, decoder and heads, a
    critic): each Dense is `_src/dense.py`'s and each norm + SiLU one fused op (`_src/fused_norm.py`),
    so the params are exactly `nn.Dense`'s and `nn.LayerNorm`'s / `RMSNorm`'s followed by
    `jax.nn.silu` (the plain flax composition's params load unchanged), with backwards XLA CPU runs
    faster. Reverse mode works; `jax.jvp` raises `TypeError` (as the Actor's). `kernels` picks them or
    flax's own layers, as `ActorConfig.kernels`.

    Attributes:
      units: width of the hidden layers.
      layers: number of hidden layers (0: the output layer alone).
      out: width of the output Dense (with bias), or None for none.
      zero_out: initialize the output kernel to zeros (a head whose first prediction is its bias).
      norm: `"layer"` (eps 1e-3) or `"rms"` (eps 1e-4, official DreamerV3's).
      kernels: `"auto"`, `"cpu"` or `"flax"`, as `ActorConfig.kernels`.

    Example:
      >>> mlp = MLP(units=8, layers=2, out=3)
      >>> params = mlp.init(jax.random.key(0), jnp.ones((4, 5)))
      >>> mlp.apply(params, jnp.ones((4, 5))).shape
      (4, 3)
    """

    units: int
    layers: int
    out: int | None = None
    zero_out: bool = False
    norm: str = "layer"
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cpu = cpu_kernels(self.kernels, "MLP")
        dense = Dense if cpu else nn.Dense
        for i in range(self.layers):
            x = dense(self.units, use_bias=False, name=f"dense_{i}")(x)
            if not cpu:
                x = _flax_norm_act(x, self.norm, "silu", None, jnp.float32, f"norm_{i}")
            elif self.norm == "rms":
                x = FusedRMSNormAct("silu", eps=1e-4, name=f"norm_{i}")(x)
            else:
                x = FusedLayerNormAct("silu", eps=1e-3, name=f"norm_{i}")(x)
        if self.out is not None:
            init = nn.initializers.zeros if self.zero_out else nn.initializers.lecun_normal()
            x = dense(self.out, kernel_init=init, name="out")(x)
        return x
