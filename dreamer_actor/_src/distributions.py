r"""Every action distribution behind one API, chosen by `ActorConfig.distribution`.

`Actor` returns raw arrays, `outputs = (a, b)`; the functions here turn them into
actions, log-probs, entropies and modes. Each kind's maths is a handful of small pure
functions with the shapes in their docstrings, and four dispatching functions give one
API over all kinds:

    policy_sample(key, outputs, config, *, reparameterize=False) -> (action, raw_sample)
    policy_log_prob(outputs, config, *, raw_sample=None, action=None) -> [...]
    policy_entropy(outputs, config, *, raw_sample=None, key=None, num_samples=1) -> [...]
    policy_mode(outputs, config) -> action

Keep `raw_sample` (what `log_prob` is exact on) next to the `action` (what the env
gets). `A` is `config.action_dim` and `[...]` any batch shape, e.g. `[T, B]`.

`"tanh_normal"` (default): `outputs = (mean, log_std)` of the pre-squash Gaussian,
  `a = tanh(u) * scale + bias`. Delegated to `tanh_normal.py` (exact log-prob with the
  Jacobian; the entropy is a Monte-Carlo estimate). `raw_sample` is `u`.

`"bounded_normal"` (official DreamerV3): `outputs = (raw_mean, raw_std)` with

    mean = tanh(raw_mean),   std = (max_std - min_std) * sigmoid(raw_std + 2) + min_std,

  a diagonal Normal in normalized `[-1, 1]` units. `raw_sample` is `x ~ N(mean, std)`,
  unclipped; the env action is `clip(x, -1, 1) * scale + bias` (DreamerV3 clips).
  `log_prob = log N(x; mean, std) - sum_i log scale_i` (the affine map to env units).
  The clip puts point masses at the bounds that this density ignores, so it is an
  approximate density of the action actually taken, exactly as in DreamerV3; it is the
  exact density of `x * scale + bias`. The entropy is that Normal's closed form,
  `sum_i [0.5 log(2 pi e) + log std_i + log scale_i]` (the clip is ignored here too).

`"categorical"` (discrete actions): `outputs = (logits, None)` with logits `[..., A]`.
  `probs = (1 - unimix) * softmax(logits) + unimix / A`, so every choice keeps at least
  `unimix / A` (DreamerV3's 1%; its public code drops the mix for discrete policies, we
  apply it). Log-probs are `log(probs)` computed as a `logaddexp`, finite and with finite
  gradients even for logits like `[1000, -1000]`. Actions are one-hot `[..., A]` float32;
  `raw_sample` is the same one-hot without gradient. With `reparameterize=True` the
  action is straight-through, `onehot + (probs - sg(probs))`: forward value exactly
  one-hot, gradient that of `probs`. The entropy is exact: `-sum p log p`. The mode is
  the one-hot argmax. Multi-discrete: with `config.action_dims = (A_1, ..., A_H)` the
  logits hold `H` independent heads side by side (`A = sum A_h`), each with its own
  softmax and `unimix / A_h` floor; actions are the heads' one-hots concatenated and the
  log-probs and entropies are sums over heads.

By default sampled actions carry no gradient (REINFORCE, as DreamerV3): gradients reach
the policy through `policy_log_prob` and `policy_entropy`. All maths runs in float32
(float64 under x64), whatever the trunk computed in.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dreamer_actor._src import tanh_normal
from dreamer_actor._src.config import DISTRIBUTIONS, ActorConfig
from dreamer_actor._src.noise import standard_normal

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_HALF_LOG_2PIE = 0.5 * math.log(2.0 * math.pi * math.e)

Outputs = tuple[jax.Array, jax.Array | None]


# ----------------------------------------------------------------------------- checks


def _check_config(config: Any, fn: str, kind: str | None = None) -> None:
    if not isinstance(config, ActorConfig):
        raise TypeError(f"{fn}: `config` must be an ActorConfig, got {type(config).__name__}.")
    if config.distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"{fn}: unknown distribution {config.distribution!r} in `config`; expected one of {DISTRIBUTIONS}."
        )
    if kind is not None and config.distribution != kind:
        raise ValueError(f"{fn}: needs a {kind} config, got distribution={config.distribution!r}.")


def _check_float(x: Any, name: str, shape: tuple[int, ...] | None, fn: str, what: str) -> jax.Array:
    """Checks dtype (floating) and shape at trace time; returns `x` promoted to >= float32."""
    if x is None:
        raise ValueError(f"{fn}: `{name}` is required, got None.")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{fn}: `{name}` must be floating point, got dtype {x.dtype}.")
    if shape is not None and x.shape != shape:
        raise ValueError(f"{fn}: `{name}` must have shape {what}, got {x.shape}.")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_last(x: Any, name: str, config: ActorConfig, fn: str) -> jax.Array:
    """`x` must be a floating `[..., A]` array."""
    x = jnp.asarray(x) if x is not None else x
    if x is not None and (x.ndim < 1 or x.shape[-1] != config.action_dim):
        raise ValueError(f"{fn}: `{name}` must have shape [..., {config.action_dim}] (action_dim), got {jnp.shape(x)}.")
    return _check_float(x, name, None, fn, "")


def _one_of(fn: str, **given: Any) -> tuple[str, Any]:
    present = [(k, v) for k, v in given.items() if v is not None]
    if len(present) != 1:
        names = " or ".join(f"`{k}`" for k in given)
        raise ValueError(f"{fn}: give exactly one of {names}.")
    return present[0]


# --------------------------------------------------------------------- bounded normal


def bounded_normal_params(raw_mean: jax.Array, raw_std: jax.Array, config: ActorConfig) -> tuple[jax.Array, jax.Array]:
    """DreamerV3's `tanh` mean and `sigmoid` std from the actor's raw outputs.

    Args:
      raw_mean: `[..., A]` raw output (mean half).
      raw_std: `[..., A]` raw output (std half).
      config: `ActorConfig` with `distribution="bounded_normal"`.

    Returns:
      `(mean, std)`, each `[..., A]` float32: `mean = tanh(raw_mean)` in `(-1, 1)` and
      `std = (max_std - min_std) * sigmoid(raw_std + 2) + min_std` in `(min_std, max_std)`.
    """
    fn = "bounded_normal_params"
    _check_config(config, fn, "bounded_normal")
    raw_mean = _check_last(raw_mean, "raw_mean", config, fn)
    raw_std = _check_float(raw_std, "raw_std", raw_mean.shape, fn, f"{raw_mean.shape} (that of `raw_mean`)")
    std = (config.max_std - config.min_std) * jax.nn.sigmoid(raw_std + 2.0) + config.min_std
    return jnp.tanh(raw_mean), std


def _check_mean_std(mean: Any, std: Any, config: ActorConfig, fn: str) -> tuple[jax.Array, jax.Array]:
    _check_config(config, fn, "bounded_normal")
    mean = _check_last(mean, "mean", config, fn)
    std = _check_float(std, "std", mean.shape, fn, f"{mean.shape} (that of `mean`)")
    return mean, std.astype(mean.dtype)


def _to_env(x: jax.Array, config: ActorConfig) -> jax.Array:
    """`clip(x, -1, 1) * scale + bias`, `[..., A]`."""
    scale = jnp.broadcast_to(config.scale.astype(x.dtype), x.shape)
    bias = jnp.broadcast_to(config.bias.astype(x.dtype), x.shape)
    return jnp.clip(x, -1.0, 1.0) * scale + bias


def _sum_log_scale(config: ActorConfig, dtype: Any) -> jax.Array:
    """`sum_i log scale_i`, a scalar."""
    return jnp.sum(jnp.log(config.scale.astype(dtype)))


def bounded_normal_sample(
    key: jax.Array, mean: jax.Array, std: jax.Array, config: ActorConfig, *, reparameterize: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Samples `x ~ N(mean, std)` and maps it to env units.

    Args:
      key: PRNG key.
      mean: `[..., A]` mean in `[-1, 1]` units (from `bounded_normal_params`).
      std: `[..., A]` standard deviation, > 0.
      config: `ActorConfig` (bounded_normal).
      reparameterize: let gradients flow through the sample (zero where clipped).

    Returns:
      `(action, raw_sample)`, both `[..., A]` float32: `clip(x, -1, 1) * scale + bias`
      and the unclipped `x` (give it to `bounded_normal_log_prob`).
    """
    mean, std = _check_mean_std(mean, std, config, "bounded_normal_sample")
    x = mean + std * standard_normal(key, mean.shape, mean.dtype)
    if not reparameterize:
        x = jax.lax.stop_gradient(x)
    return _to_env(x, config), x


def bounded_normal_log_prob(
    mean: jax.Array,
    std: jax.Array,
    config: ActorConfig,
    *,
    raw_sample: jax.Array | None = None,
    action: jax.Array | None = None,
) -> jax.Array:
    """`log N(x; mean, std) - sum_i log scale_i`, summed over the action axis.

    Give exactly one of `raw_sample` (the unclipped `x` from `bounded_normal_sample`)
    or `action` (env units; `x = (action - bias) / scale`). This is the exact density
    of `x * scale + bias`; of the clipped action the env receives it is approximate
    (the clip's point masses at the bounds are ignored, as in DreamerV3).

    Args:
      mean: `[..., A]` mean in `[-1, 1]` units.
      std: `[..., A]` standard deviation.
      config: `ActorConfig` (bounded_normal).
      raw_sample: `[..., A]` or None.
      action: `[..., A]` or None.

    Returns:
      `[...]` float32 log-probs.
    """
    fn = "bounded_normal_log_prob"
    mean, std = _check_mean_std(mean, std, config, fn)
    name, given = _one_of(fn, raw_sample=raw_sample, action=action)
    given = _check_float(given, name, mean.shape, fn, f"{mean.shape} (that of `mean`)").astype(mean.dtype)
    if name == "action":
        scale = jnp.broadcast_to(config.scale.astype(mean.dtype), mean.shape)
        bias = jnp.broadcast_to(config.bias.astype(mean.dtype), mean.shape)
        given = (given - bias) / scale
    z = (given - mean) / std
    log_prob = jnp.sum(-0.5 * jnp.square(z) - jnp.log(std) - _HALF_LOG_2PI, axis=-1)
    return log_prob - _sum_log_scale(config, mean.dtype)


def bounded_normal_entropy(std: jax.Array, config: ActorConfig) -> jax.Array:
    """Closed-form entropy in env units, `sum_i [0.5 log(2 pi e) + log std_i + log scale_i]`.

    Args:
      std: `[..., A]` standard deviation.
      config: `ActorConfig` (bounded_normal).

    Returns:
      `[...]` entropies in nats (of the unclipped Normal, as in DreamerV3).
    """
    fn = "bounded_normal_entropy"
    _check_config(config, fn, "bounded_normal")
    std = _check_last(std, "std", config, fn)
    return jnp.sum(_HALF_LOG_2PIE + jnp.log(std), axis=-1) + _sum_log_scale(config, std.dtype)


def bounded_normal_mode(mean: jax.Array, config: ActorConfig) -> jax.Array:
    """Deterministic action `mean * scale + bias` (the Normal's mode), `[..., A] -> [..., A]`."""
    fn = "bounded_normal_mode"
    _check_config(config, fn, "bounded_normal")
    return _to_env(_check_last(mean, "mean", config, fn), config)


# ------------------------------------------------------------------------ categorical


def _heads(config: ActorConfig) -> tuple[int, ...]:
    return config.action_dims if config.action_dims is not None else (config.action_dim,)


def _layout(config: ActorConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Static index maps between flat `[..., A]` and padded per-head `[..., H, M]`.

    Returns `(gather [H, M], valid [H, M] bool, flat [A], sizes [H, 1])`: padded =
    `x[..., gather]` (valid where `valid`), flat = `padded.reshape(..., H * M)[..., flat]`.
    """
    dims = _heads(config)
    width = max(dims)
    offsets = np.cumsum((0, *dims[:-1]))
    cols = np.arange(width)
    valid = cols[None, :] < np.asarray(dims)[:, None]
    gather = np.where(valid, offsets[:, None] + cols[None, :], 0)
    flat = np.concatenate([h * width + np.arange(d) for h, d in enumerate(dims)])
    return gather, valid, flat, np.asarray(dims, np.float64)[:, None]


def _to_heads(x: jax.Array, config: ActorConfig, pad: float) -> jax.Array:
    """`[..., A]` -> `[..., H, M]`, padding entries set to `pad`."""
    gather, valid, _, _ = _layout(config)
    return jnp.where(jnp.broadcast_to(valid, (*x.shape[:-1], *valid.shape)), x[..., gather], pad)


def _from_heads(x: jax.Array, config: ActorConfig) -> jax.Array:
    """`[..., H, M]` -> `[..., A]` (padding dropped)."""
    _, _, flat, _ = _layout(config)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])[..., flat]


def _check_logits(logits: Any, config: ActorConfig, fn: str) -> jax.Array:
    _check_config(config, fn, "categorical")
    return _check_last(logits, "logits", config, fn)


def _floor(config: ActorConfig, like: jax.Array) -> jax.Array:
    """`unimix / A_h` broadcast to padded `[..., H, M]`."""
    _, _, _, sizes = _layout(config)
    return jnp.broadcast_to(jnp.asarray(config.unimix / sizes, like.dtype), like.shape)


def categorical_probs(logits: jax.Array, config: ActorConfig) -> jax.Array:
    """`(1 - unimix) * softmax(logits) + unimix / A_h` per head, `[..., A] -> [..., A]`.

    Every entry is `>= unimix / A_h` (exactly, in floating point: a non-negative number
    is added to the floor), and each head sums to 1.
    """
    logits = _check_logits(logits, config, "categorical_probs")
    padded = _to_heads(logits, config, -jnp.inf)
    probs = (1.0 - config.unimix) * jax.nn.softmax(padded, axis=-1) + _floor(config, padded)
    return _from_heads(probs, config)


def categorical_log_probs(logits: jax.Array, config: ActorConfig) -> jax.Array:
    """`log(categorical_probs(logits))`, stably: `[..., A] -> [..., A]`.

    `logaddexp(log(1 - unimix) + log_softmax(logits), log(unimix / A_h))`: finite, with
    finite gradients, for any finite logits (`[1000, -1000]` included).
    """
    logits = _check_logits(logits, config, "categorical_log_probs")
    # Padding must not be -inf here: the backward pass of log_softmax multiplies by it.
    padded = _to_heads(logits, config, float(jnp.finfo(logits.dtype).min))
    log_softmax = jax.nn.log_softmax(padded, axis=-1)
    if config.unimix > 0.0:
        log_softmax = jnp.logaddexp(math.log1p(-config.unimix) + log_softmax, jnp.log(_floor(config, padded)))
    return _from_heads(log_softmax, config)


def _onehot_from_heads(index: jax.Array, config: ActorConfig, dtype: Any) -> jax.Array:
    """`[..., H]` int indices -> `[..., A]` concatenated one-hots."""
    return _from_heads(jax.nn.one_hot(index, max(_heads(config)), dtype=dtype), config)


def categorical_sample(
    key: jax.Array, logits: jax.Array, config: ActorConfig, *, reparameterize: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Samples one choice per head from the unimix-mixed probabilities.

    Args:
      key: PRNG key.
      logits: `[..., A]` raw logits.
      config: `ActorConfig` (categorical).
      reparameterize: straight-through action `onehot + (probs - sg(probs))`: forward
        value exactly one-hot, gradient that of `probs`. Default: no gradient.

    Returns:
      `(action, raw_sample)`, both `[..., A]` float32 one-hots (concatenated over heads);
      `raw_sample` never carries gradient. The chosen index is `argmax(action, -1)`
      (per head segment for multi-discrete).
    """
    fn = "categorical_sample"
    logits = _check_logits(logits, config, fn)
    padded = _to_heads(categorical_log_probs(logits, config), config, -jnp.inf)
    index = jax.random.categorical(key, jax.lax.stop_gradient(padded), axis=-1)
    onehot = _onehot_from_heads(index, config, logits.dtype)
    if not reparameterize:
        return onehot, onehot
    probs = categorical_probs(logits, config)
    return onehot + (probs - jax.lax.stop_gradient(probs)), onehot


def categorical_log_prob(logits: jax.Array, config: ActorConfig, action: jax.Array) -> jax.Array:
    """Log-probability of a (multi-)discrete action, summed over heads.

    Args:
      logits: `[..., A]` raw logits.
      config: `ActorConfig` (categorical).
      action: a float one-hot `[..., A]` (heads concatenated; `sum(action * log_probs)`,
        so a straight-through action passes its gradient on), or integer indices:
        `[...]` for a single head, `[..., H]` for `H` heads. Out-of-range indices give
        NaN (never a silent 0).

    Returns:
      `[...]` float32 log-probs.
    """
    fn = "categorical_log_prob"
    logits = _check_logits(logits, config, fn)
    log_probs = categorical_log_probs(logits, config)
    action = jnp.asarray(action)
    batch = logits.shape[:-1]
    dims = _heads(config)
    if jnp.issubdtype(action.dtype, jnp.integer):
        index_shape = batch if config.action_dims is None else (*batch, len(dims))
        if action.shape != index_shape:
            raise ValueError(
                f"{fn}: integer `action` must be choice indices of shape {index_shape}, got {action.shape}"
                f" (one-hot actions of shape {logits.shape} must be floating point)."
            )
        index = action if config.action_dims is not None else action[..., None]
        sizes = jnp.broadcast_to(jnp.asarray(dims, index.dtype), index.shape)
        in_range = jnp.all((index >= 0) & (index < sizes), axis=-1)
        log_prob = jnp.sum(_onehot_from_heads(index, config, log_probs.dtype) * log_probs, axis=-1)
        return jnp.where(in_range, log_prob, jnp.nan)
    onehot = _check_float(action, "action", logits.shape, fn, f"{logits.shape} (a one-hot, that of `logits`)")
    return jnp.sum(onehot.astype(log_probs.dtype) * log_probs, axis=-1)


def categorical_entropy(logits: jax.Array, config: ActorConfig) -> jax.Array:
    """Exact entropy `-sum p log p` of the mixed probabilities, summed over heads: `[..., A] -> [...]`."""
    logits = _check_logits(logits, config, "categorical_entropy")
    log_probs = categorical_log_probs(logits, config)
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def categorical_mode(logits: jax.Array, config: ActorConfig) -> jax.Array:
    """One-hot argmax per head (ties: the first), `[..., A] -> [..., A]` float32."""
    logits = _check_logits(logits, config, "categorical_mode")
    index = jnp.argmax(_to_heads(logits, config, -jnp.inf), axis=-1)
    return _onehot_from_heads(index, config, logits.dtype)


# ------------------------------------------------------------------------ one API


def _unpack(outputs: Any, config: Any, fn: str) -> tuple[jax.Array, jax.Array | None]:
    _check_config(config, fn)
    if not isinstance(outputs, tuple | list) or len(outputs) != 2:
        raise ValueError(f"{fn}: `outputs` must be the pair `Actor` returns, got {type(outputs).__name__}.")
    first, second = outputs
    if config.distribution == "categorical":
        if second is not None:
            raise ValueError(f"{fn}: categorical `outputs` must be `(logits, None)`, got a second array.")
        return _check_last(first, "outputs[0] (logits)", config, fn), None
    if second is None:
        raise ValueError(f"{fn}: {config.distribution} `outputs` must be a pair of arrays, got None as the second.")
    first = _check_last(first, "outputs[0]", config, fn)
    return first, _check_float(second, "outputs[1]", first.shape, fn, f"{first.shape} (that of `outputs[0]`)")


def policy_sample(
    key: jax.Array, outputs: Outputs, config: ActorConfig, *, reparameterize: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Samples an action of any distribution kind.

    Args:
      key: PRNG key.
      outputs: what `Actor` returns for `config`.
      config: `ActorConfig`.
      reparameterize: let gradients flow through the action (pathwise for the
        Gaussians, straight-through for categorical); default: stop-gradiented.

    Returns:
      `(action, raw_sample)`, both `[..., A]` float32. `action` goes to the env (one-hot
      for categorical); `raw_sample` (`u`, the unclipped `x`, or the one-hot) is what
      `policy_log_prob` and `policy_entropy` are exact on.

    Example:
      >>> cfg = ActorConfig.create(distribution="categorical", action_dim=3)
      >>> a, _ = policy_sample(jax.random.key(0), (jnp.zeros(3), None), cfg)
      >>> float(a.sum())
      1.0
    """
    first, second = _unpack(outputs, config, "policy_sample")
    if config.distribution == "tanh_normal":
        return tanh_normal.sample_action(key, first, second, config, reparameterize=reparameterize)
    if config.distribution == "bounded_normal":
        mean, std = bounded_normal_params(first, second, config)
        return bounded_normal_sample(key, mean, std, config, reparameterize=reparameterize)
    return categorical_sample(key, first, config, reparameterize=reparameterize)


def policy_log_prob(
    outputs: Outputs,
    config: ActorConfig,
    *,
    raw_sample: jax.Array | None = None,
    action: jax.Array | None = None,
) -> jax.Array:
    """Log-probability of an action, `[...]` float32. Give exactly one of:

    * `raw_sample` from `policy_sample` (exact for all kinds);
    * `action` in env units (tanh_normal: clipped `atanh`; bounded_normal: the Normal
      density there, approximate at the clipped bounds; categorical: a one-hot `[..., A]`
      or integer indices, see `categorical_log_prob`).

    The gradient w.r.t. the outputs is the score function (REINFORCE).
    """
    fn = "policy_log_prob"
    first, second = _unpack(outputs, config, fn)
    name, given = _one_of(fn, raw_sample=raw_sample, action=action)
    if config.distribution != "categorical" or name == "raw_sample":
        _check_float(given, name, first.shape, fn, f"{first.shape} (that of `outputs[0]`)")
    if config.distribution == "tanh_normal":
        return tanh_normal.log_prob_with_tanh_correction(first, second, config, pre_tanh=raw_sample, action=action)
    if config.distribution == "bounded_normal":
        mean, std = bounded_normal_params(first, second, config)
        return bounded_normal_log_prob(mean, std, config, raw_sample=raw_sample, action=action)
    return categorical_log_prob(first, config, raw_sample if raw_sample is not None else action)


def policy_entropy(
    outputs: Outputs,
    config: ActorConfig,
    *,
    raw_sample: jax.Array | None = None,
    key: jax.Array | None = None,
    num_samples: int = 1,
) -> jax.Array:
    """Entropy of the policy, `[...]` nats.

    * tanh_normal: Monte-Carlo estimate (`tanh_normal.entropy_estimate`): give exactly
      one of `raw_sample` (reuse `u`) or `key` (draw `num_samples` fresh samples).
    * bounded_normal: closed form of the unclipped Normal in env units (exact for it).
    * categorical: exact. `raw_sample`, `key`, `num_samples` are ignored by these two.
    """
    fn = "policy_entropy"
    first, second = _unpack(outputs, config, fn)
    if raw_sample is not None:
        _check_float(raw_sample, "raw_sample", None, fn, "")
    if config.distribution == "tanh_normal":
        return tanh_normal.entropy_estimate(
            first, second, config, pre_tanh=raw_sample, key=key, num_samples=num_samples
        )
    if config.distribution == "bounded_normal":
        _, std = bounded_normal_params(first, second, config)
        return bounded_normal_entropy(std, config)
    return categorical_entropy(first, config)


def policy_mode(outputs: Outputs, config: ActorConfig) -> jax.Array:
    """Deterministic action for evaluation, `[..., A]` float32.

    tanh_normal: `tanh(mean) * scale + bias`; bounded_normal: `tanh(raw_mean) * scale +
    bias`; categorical: the one-hot argmax (per head).
    """
    first, second = _unpack(outputs, config, "policy_mode")
    if config.distribution == "tanh_normal":
        return tanh_normal.mode_action(first, config)
    if config.distribution == "bounded_normal":
        mean, _ = bounded_normal_params(first, second, config)
        return bounded_normal_mode(mean, config)
    return categorical_mode(first, config)
