"""The tanh-Gaussian seed functions on `(mean, log_std)`: `policy_*` for a tanh_normal config, named in errors."""

from __future__ import annotations

from typing import Any

import jax

from dreamer_actor._src import policy, validation
from dreamer_actor._src.distributions import tanh_normal

_NAME = "tanh_normal"


def _mean_log_std(mean: Any, log_std: Any, config: Any, fn: str) -> tuple[jax.Array, jax.Array]:
    """Checks the seed functions' own arguments, so errors name `mean` / `log_std` (not `dist.mean`)."""
    validation.config(config, fn, _NAME)
    mean = validation.last_dim(mean, "mean", config.action_dim, fn)
    log_std = validation.floating(log_std, "log_std", fn, mean.shape, f"{mean.shape} (that of `mean`)")
    return mean, log_std


def sample_action(
    key: jax.Array, mean: jax.Array, log_std: jax.Array, config: Any, *, reparameterize: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Samples an action from the tanh-Gaussian policy.

    `u = mean + exp(log_std) * eps`, `eps ~ N(0, I)`; `action = clip(tanh(u) * scale + bias,
    low, high)`. By default both outputs are stop-gradiented (REINFORCE, as DreamerV3): the
    gradient reaches the policy through `log_prob_with_tanh_correction` only. With
    `reparameterize=True` the gradient flows through `u` and the action ("dynamics").

    Args:
      key: a PRNG key (typed `jax.random.key` or raw `PRNGKey`).
      mean: `[..., A]` pre-squash mean.
      log_std: `[..., A]` pre-squash log standard deviation.
      config: `ActorConfig` with `distribution="tanh_normal"`.
      reparameterize: let gradients flow through the sample.

    Returns:
      `(action, raw_sample)`, both `[..., A]` float32: the action in `[low, high]` and the
      pre-squash sample `u`. Keep `raw_sample` to evaluate log-probs exactly: in float32
      `tanh(u) == 1` for u > ~9, so the action alone cannot recover it.

    Example:
      >>> cfg = ActorConfig.create(low=-2.0, high=3.0, action_dim=2)
      >>> a, u = sample_action(jax.random.key(0), jnp.zeros(2), jnp.zeros(2), cfg)
      >>> bool(jnp.all((a >= -2.0) & (a <= 3.0)))
      True
    """
    mean, log_std = _mean_log_std(mean, log_std, config, "sample_action")
    return policy.sample(key, (mean, log_std), config, reparameterize, "sample_action")


def log_prob_with_tanh_correction(
    mean: jax.Array,
    log_std: jax.Array,
    config: Any,
    *,
    raw_sample: jax.Array | None = None,
    action: jax.Array | None = None,
) -> jax.Array:
    """Log-density of an action under the tanh-Gaussian policy, with the Jacobian.

    `log N(u; mean, std) - sum_i [log scale_i + log(1 - tanh(u_i)^2)]`, summed over the
    action axis. Give exactly one of:
      * `raw_sample` (`u` from `sample_action`): exact, finite for every finite input in the
        domain (`log_std` in [-80, 80]), even where `tanh(u)` rounds to +-1;
      * `action` (env units): inverted with a clipped `atanh`, so actions exactly at
        `low`/`high` give a finite value (distrax gives NaN there). Actions outside the
        bounds are treated as at the bound (`checked_log_prob` rejects them instead).

    The gradient w.r.t. `mean` and `log_std` is the REINFORCE score; `raw_sample` /
    `action` are data.

    Args:
      mean: `[..., A]` pre-squash mean.
      log_std: `[..., A]` pre-squash log-std.
      config: `ActorConfig` (tanh_normal).
      raw_sample: `[..., A]` pre-squash sample, or None.
      action: `[..., A]` action in env units, or None.

    Returns:
      `[...]` float32 log-probs (float64 under x64 with float64 inputs).

    Example:
      >>> cfg = ActorConfig.create(low=-1.0, high=1.0, action_dim=1)
      >>> lp = log_prob_with_tanh_correction(jnp.zeros(1), jnp.zeros(1), cfg, raw_sample=jnp.zeros(1))
      >>> round(float(lp), 4)  # log N(0; 0, 1) - log(1 - tanh(0)^2) = -0.9189
      -0.9189
    """
    mean, log_std = _mean_log_std(mean, log_std, config, "log_prob_with_tanh_correction")
    return policy.log_prob((mean, log_std), config, raw_sample, action, "log_prob_with_tanh_correction")


def entropy_estimate(
    mean: jax.Array,
    log_std: jax.Array,
    config: Any,
    *,
    raw_sample: jax.Array | None = None,
    key: jax.Array | None = None,
    num_samples: int = 1,
) -> jax.Array:
    """Unbiased Monte-Carlo estimate of the squashed policy's entropy `E[-log p(a)]`.

    `H[a] = H[N(mean, std)] + E_u[ sum_i (log scale_i + log(1 - tanh(u_i)^2)) ]`: the Gaussian
    part is exact, only the Jacobian term is sampled. This has lower variance than `-log
    p(a)` of a sample, since the Gaussian's own fluctuation `0.5 * |eps|^2` (variance `A / 2`)
    is integrated out: the estimator's variance is `Var[sum_i log(1 - tanh(u_i)^2)] / K` for
    `K` samples, 0 at `std -> 0`.

    Gradients are pathwise: `u` is re-expressed as `mean + std * sg(eps)`, so the entropy
    bonus also "sees" that pushing `u` into tanh's flat tails lowers the entropy.

    Args:
      mean: `[..., A]` pre-squash mean.
      log_std: `[..., A]` pre-squash log-std.
      config: `ActorConfig` (tanh_normal).
      raw_sample: `[..., A]` samples to reuse (e.g. those `act` drew), or `[K, ..., A]`.
      key: instead of `raw_sample`: draw `num_samples` fresh samples.
      num_samples: `K` when sampling with `key`.

    Returns:
      `[...]` entropy estimates in nats.
    """
    mean, log_std = _mean_log_std(mean, log_std, config, "entropy_estimate")
    return policy.entropy((mean, log_std), config, raw_sample, key, num_samples, "entropy_estimate")


def mode_action(mean: jax.Array, config: Any) -> jax.Array:
    """Deterministic action `clip(tanh(mean) * scale + bias, low, high)`, `[..., A]`.

    The squashed Gaussian's median per dimension, the conventional deterministic
    tanh-Gaussian action (the density's mode differs slightly for wide stds).
    """
    validation.config(config, "mode_action", _NAME)
    mean = validation.last_dim(mean, "mean", config.action_dim, "mode_action")
    return policy.mode((mean, jax.numpy.zeros_like(mean)), config, "mode_action")


def as_distrax(mean: jax.Array, log_std: jax.Array, config: Any):
    """The same policy as a `distrax.Distribution` over actions `[..., A]` (event `[A]`).

    distrax is imported on the first call only. It agrees with the functions here on
    interior points; at the bounds its `log_prob` is NaN/-inf (it inverts `tanh` exactly):
    prefer `log_prob_with_tanh_correction` for stored actions.
    """
    mean, log_std = _mean_log_std(mean, log_std, config, "as_distrax")
    _, dist = policy._dist((mean, log_std), config, "as_distrax")
    return tanh_normal.as_distrax(dist, config)
