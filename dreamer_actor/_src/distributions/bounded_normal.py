r"""`"bounded_normal"` (official DreamerV3): a Normal with a tanh mean and a sigmoid std.

Head: `raw = [raw_mean, raw_std]` (`2A` outputs) and

    mean = tanh(raw_mean),   std = (max_std - min_std) * sigmoid(raw_std + 2) + min_std,

a diagonal Normal in normalized `[-1, 1]` units (DreamerV3: `min_std` 0.1, `max_std` 1).
`raw_sample` is `x ~ N(mean, std)`, unclipped: it is what official DreamerV3 feeds to the
world model during imagination and what the log-prob is evaluated at. The env action is
`clip(x, -1, 1) * scale + bias` (DreamerV3 clips for the environment only).

`log_prob = log N(x; mean, std) - sum_i log scale_i`: the exact density of `x * scale +
bias`; of the clipped action it is approximate (the clip's point masses at the bounds are
ignored, as in DreamerV3). The entropy is the unclipped Normal's closed form in env units,
`sum_i [0.5 log(2 pi e) + log std_i + log scale_i]`; DreamerV3 uses the same closed form
(in normalized units, i.e. without the constant `sum log scale`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dreamer_actor._src.distributions import _common
from dreamer_actor._src.noise import standard_normal

NAME = "bounded_normal"
DISCRETE = False
ENTROPY_IS_ESTIMATE = False

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_HALF_LOG_2PIE = 0.5 * math.log(2.0 * math.pi * math.e)


class Params(NamedTuple):
    """Mean in `(-1, 1)` and std in `(min_std, max_std)`, normalized units, each `[..., A]` float32."""

    mean: jax.Array
    std: jax.Array


def _sum_log_scale(config: Any, dtype: Any) -> jax.Array:
    return jnp.sum(jnp.log(config.scale.astype(dtype)))


def num_outputs(config: Any) -> int:
    return 2 * config.action_dim


def head(raw: jax.Array, config: Any) -> Params:
    """`[..., 2A]` raw outputs -> `Params(tanh(raw_mean), (max - min) * sigmoid(raw_std + 2) + min)`."""
    raw_mean, raw_std = jnp.split(raw, 2, axis=-1)
    std = (config.max_std - config.min_std) * jax.nn.sigmoid(raw_std + 2.0) + config.min_std
    return Params(jnp.tanh(raw_mean), std)


def sample(key: jax.Array, dist: Params, config: Any, *, reparameterize: bool = False) -> tuple[jax.Array, jax.Array]:
    """`x = mean + std * eps`: returns `(clip(x, -1, 1) * scale + bias, x)`, each `[..., A]`.

    With `reparameterize` the gradient flows through `x` (and through the action where it is
    not clipped); otherwise both are stop-gradiented.
    """
    x = dist.mean + dist.std * standard_normal(key, dist.mean.shape, dist.mean.dtype)
    if not reparameterize:
        x = jax.lax.stop_gradient(x)
    return _common.to_bounds(jnp.clip(x, -1.0, 1.0), config), x


def log_prob(
    dist: Params, config: Any, *, raw_sample: jax.Array | None = None, action: jax.Array | None = None
) -> jax.Array:
    """`log N(x; mean, std) - sum_i log scale_i` at `raw_sample` (`x`) or at `x = (action - bias) / scale`."""
    mean, std = dist
    x = raw_sample if raw_sample is not None else _common.from_bounds(action, config)
    z = (x.astype(mean.dtype) - mean) / std
    return jnp.sum(-0.5 * jnp.square(z) - jnp.log(std) - _HALF_LOG_2PI, axis=-1) - _sum_log_scale(config, mean.dtype)


def entropy(
    dist: Params,
    config: Any,
    *,
    raw_sample: jax.Array | None = None,
    key: jax.Array | None = None,
    num_samples: int = 1,
) -> jax.Array:
    """Closed form, `sum_i [0.5 log(2 pi e) + log std_i + log scale_i]`, `[...]`; `raw_sample`/`key` unused."""
    del raw_sample, key, num_samples
    return jnp.sum(_HALF_LOG_2PIE + jnp.log(dist.std), axis=-1) + _sum_log_scale(config, dist.std.dtype)


def mode(dist: Params, config: Any) -> jax.Array:
    """`mean * scale + bias` (the Normal's mode; `mean` is inside (-1, 1))."""
    return _common.to_bounds(dist.mean, config)


def check_action(x: Any, name: str, batch: tuple[int, ...], config: Any, fn: str) -> jax.Array:
    return _common.check_continuous_action(x, name, batch, config, fn)


def in_support(action: jax.Array, config: Any) -> jax.Array:
    return _common.in_bounds(action, config)


def validate_config(config: Any) -> None:
    """`0 < min_std < max_std`, both finite."""
    values = (config.min_std, config.max_std)
    if (
        any(isinstance(v, bool) or not isinstance(v, int | float) for v in values)
        or not all(math.isfinite(v) for v in values)
        or not (0 < config.min_std < config.max_std)
    ):
        raise ValueError(
            f"ActorConfig: `min_std` and `max_std` must be finite numbers with 0 < min_std < max_std, got "
            f"min_std={config.min_std!r}, max_std={config.max_std!r}."
        )
