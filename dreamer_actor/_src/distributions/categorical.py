r"""`"categorical"` (discrete actions), with DreamerV3's uniform mix and multi-discrete heads.

Head: the raw outputs are the logits, `[..., A]`. Probabilities are

    probs = (1 - unimix) * softmax(logits) + unimix / A,

so every choice keeps at least `unimix / A` (DreamerV3's 1%; its public code drops the mix
for discrete policies, we apply it). Log-probs are `log(probs)` computed as a `logaddexp`,
finite and with finite gradients even for logits like `[1000, -1000]`. Actions are one-hot
`[..., A]` float32 and `raw_sample` is the same one-hot without gradient; with
`reparameterize=True` the action is straight-through, `onehot + (probs - sg(probs))`
(forward value exactly one-hot, gradient that of `probs`). The entropy is exact, `-sum p
log p`; the mode is the one-hot argmax. NaN logits give NaN actions (sampled and mode),
never a valid-looking one-hot.

Multi-discrete: with `config.action_dims = (A_1, ..., A_H)` the logits hold `H` independent
heads side by side (`A = sum A_h`), each with its own softmax and `unimix / A_h` floor;
actions are the heads' one-hots concatenated; log-probs and entropies are sums over heads.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dreamer_actor._src import validation

NAME = "categorical"
DISCRETE = True
ENTROPY_IS_ESTIMATE = False


class Params(NamedTuple):
    """Raw logits, `[..., A]` float32 (heads side by side for multi-discrete)."""

    logits: jax.Array


# ------------------------------------------------------------------- head layout


def heads(config: Any) -> tuple[int, ...]:
    """Sizes of the categorical heads: `action_dims`, or `(action_dim,)`."""
    return config.action_dims if config.action_dims is not None else (config.action_dim,)


def _layout(config: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Static index maps between flat `[..., A]` and padded per-head `[..., H, M]`.

    Returns `(gather [H, M], valid [H, M] bool, flat [A], sizes [H, 1])`: padded =
    `x[..., gather]` (valid where `valid`), flat = `padded.reshape(..., H * M)[..., flat]`.
    """
    dims = heads(config)
    width = max(dims)
    offsets = np.cumsum((0, *dims[:-1]))
    cols = np.arange(width)
    valid = cols[None, :] < np.asarray(dims)[:, None]
    gather = np.where(valid, offsets[:, None] + cols[None, :], 0)
    flat = np.concatenate([h * width + np.arange(d) for h, d in enumerate(dims)])
    return gather, valid, flat, np.asarray(dims, np.float64)[:, None]


def _to_heads(x: jax.Array, config: Any, pad: float) -> jax.Array:
    """`[..., A]` -> `[..., H, M]`, padding entries set to `pad`."""
    gather, valid, _, _ = _layout(config)
    return jnp.where(jnp.broadcast_to(valid, (*x.shape[:-1], *valid.shape)), x[..., gather], pad)


def _from_heads(x: jax.Array, config: Any) -> jax.Array:
    """`[..., H, M]` -> `[..., A]` (padding dropped)."""
    _, _, flat, _ = _layout(config)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])[..., flat]


def _floor(config: Any, like: jax.Array) -> jax.Array:
    """`unimix / A_h` broadcast to padded `[..., H, M]`."""
    _, _, _, sizes = _layout(config)
    return jnp.broadcast_to(jnp.asarray(config.unimix / sizes, like.dtype), like.shape)


def _nan_heads(logits: jax.Array, config: Any) -> jax.Array:
    """`[..., H]` bool: the head has a NaN logit."""
    return jnp.any(jnp.isnan(_to_heads(logits, config, 0.0)), axis=-1)


def _onehot(index: jax.Array, nan: jax.Array, config: Any, dtype: Any) -> jax.Array:
    """`[..., H]` indices -> `[..., A]` concatenated one-hots, NaN over a head flagged in `nan`."""
    onehot = jax.nn.one_hot(index, max(heads(config)), dtype=dtype)
    return _from_heads(jnp.where(nan[..., None], jnp.nan, onehot), config)


# ----------------------------------------------------------------------- maths


def probs(dist: Params, config: Any) -> jax.Array:
    """`(1 - unimix) * softmax(logits) + unimix / A_h` per head, `[..., A]`; each entry `>= unimix / A_h`."""
    padded = _to_heads(dist.logits, config, -jnp.inf)
    return _from_heads((1.0 - config.unimix) * jax.nn.softmax(padded, axis=-1) + _floor(config, padded), config)


def log_probs(dist: Params, config: Any) -> jax.Array:
    """`log(probs)`, stably, `[..., A]`: finite with finite gradients for any finite logits."""
    logits = dist.logits
    # Padding must not be -inf here: the backward pass of log_softmax multiplies by it.
    padded = _to_heads(logits, config, float(jnp.finfo(logits.dtype).min))
    log_softmax = jax.nn.log_softmax(padded, axis=-1)
    if config.unimix > 0.0:
        log_softmax = jnp.logaddexp(math.log1p(-config.unimix) + log_softmax, jnp.log(_floor(config, padded)))
    return _from_heads(log_softmax, config)


# -------------------------------------------------------------------- protocol


def num_outputs(config: Any) -> int:
    return config.action_dim


def head(raw: jax.Array, config: Any) -> Params:
    """The raw outputs are the logits."""
    del config
    return Params(raw)


def sample(key: jax.Array, dist: Params, config: Any, *, reparameterize: bool = False) -> tuple[jax.Array, jax.Array]:
    """One choice per head: `(action, raw_sample)`, one-hots `[..., A]` (straight-through with `reparameterize`)."""
    logp = jax.lax.stop_gradient(_to_heads(log_probs(dist, config), config, -jnp.inf))
    index = jax.random.categorical(key, logp, axis=-1)
    onehot = _onehot(index, _nan_heads(dist.logits, config), config, dist.logits.dtype)
    onehot = jax.lax.stop_gradient(onehot)
    if not reparameterize:
        return onehot, onehot
    p = probs(dist, config)
    return onehot + (p - jax.lax.stop_gradient(p)), onehot


def log_prob(
    dist: Params, config: Any, *, raw_sample: jax.Array | None = None, action: jax.Array | None = None
) -> jax.Array:
    """Summed over heads, `[...]`. A float one-hot (`sum(onehot * log_probs)`, so a straight-through
    action passes its gradient on) or integer indices (`[...]` one head, `[..., H]` several; out of
    range gives NaN, never a silent 0)."""
    given = raw_sample if raw_sample is not None else action
    logp = log_probs(dist, config)
    if jnp.issubdtype(given.dtype, jnp.integer):
        index = given if config.action_dims is not None else given[..., None]
        sizes = jnp.broadcast_to(jnp.asarray(heads(config), index.dtype), index.shape)
        in_range = jnp.all((index >= 0) & (index < sizes), axis=-1)
        nan = jnp.zeros(index.shape, bool)
        return jnp.where(in_range, jnp.sum(_onehot(index, nan, config, logp.dtype) * logp, axis=-1), jnp.nan)
    return jnp.sum(given.astype(logp.dtype) * logp, axis=-1)


def entropy(
    dist: Params,
    config: Any,
    *,
    raw_sample: jax.Array | None = None,
    key: jax.Array | None = None,
    num_samples: int = 1,
) -> jax.Array:
    """Exact `-sum p log p` of the mixed probabilities, summed over heads, `[...]`."""
    del raw_sample, key, num_samples
    logp = log_probs(dist, config)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def mode(dist: Params, config: Any) -> jax.Array:
    """One-hot argmax per head (ties: the first), `[..., A]`; NaN over a head with a NaN logit."""
    index = jnp.argmax(_to_heads(dist.logits, config, -jnp.inf), axis=-1)
    return _onehot(index, _nan_heads(dist.logits, config), config, dist.logits.dtype)


def check_action(x: Any, name: str, batch: tuple[int, ...], config: Any, fn: str) -> jax.Array:
    """A float one-hot `[*batch, A]`, or integer indices `[*batch]` (one head) / `[*batch, H]`."""
    if x is not None and jnp.issubdtype(jnp.result_type(x), jnp.integer):
        x = jnp.asarray(x)
        index_shape = batch if config.action_dims is None else (*batch, len(heads(config)))
        if x.shape != index_shape:
            raise ValueError(
                f"{fn}: integer `{name}` must be choice indices of shape {index_shape}, got {x.shape}"
                f" (one-hot actions of shape {(*batch, config.action_dim)} must be floating point)."
            )
        return x
    shape = (*batch, config.action_dim)
    return validation.floating(x, name, fn, shape, f"{shape} (a one-hot [*batch, action_dim])")


def in_support(action: jax.Array, config: Any) -> jax.Array:
    """Every head's segment is a one-hot: entries in {0, 1} summing to 1. `[..., A] -> [...]`."""
    padded = _to_heads(action, config, 0.0)
    binary = jnp.all((padded == 0.0) | (padded == 1.0), axis=(-2, -1))
    return binary & jnp.all(jnp.sum(padded, axis=-1) == 1.0, axis=-1)


def validate_config(config: Any) -> None:
    """`unimix` in [0, 1); `action_dims` None or positive ints summing to `action_dim`."""
    if isinstance(config.unimix, bool) or not isinstance(config.unimix, int | float) or not (0 <= config.unimix < 1):
        raise ValueError(f"ActorConfig: `unimix` must be a number in [0, 1), got {config.unimix!r}.")
    dims = config.action_dims
    if dims is not None and not (
        isinstance(dims, tuple)
        and dims
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims)
        and sum(dims) == config.action_dim
    ):
        raise ValueError(
            f"ActorConfig: `action_dims` must be None or a tuple of positive ints summing to action_dim "
            f"({config.action_dim}), got {dims!r}."
        )
