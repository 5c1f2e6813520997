"""`act`: the actor end to end, from latent state to action (and its log-prob)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from dreamer_actor._src import distributions
from dreamer_actor._src.config import ActorConfig
from dreamer_actor._src.networks import Actor


class ActorOutput(NamedTuple):
    """What `act(..., training=True)` returns; every field has the batch shape `[...]`.

    Attributes:
      action: `[..., A]` sampled action in env bounds (a one-hot for `categorical`),
        stop-gradiented unless `reparameterize=True`.
      log_prob: `[...]` log pi(action | state): tanh_normal with the tanh and scale
        Jacobian; see `policy_log_prob` for the other kinds.
      entropy: `[...]` entropy of pi(. | state): a one-sample estimate for tanh_normal
        (see `entropy_estimate`), closed form / exact for bounded_normal / categorical.
    """

    action: jax.Array
    log_prob: jax.Array
    entropy: jax.Array


def act(
    params: Any,
    config: ActorConfig,
    hidden: jax.Array,
    stoch: jax.Array,
    key: jax.Array | None,
    *,
    training: bool,
    deterministic: bool = False,
    reparameterize: bool = False,
) -> ActorOutput | jax.Array:
    """Runs the actor on a latent state, for any `config.distribution`.

    Dispatches through `policy_sample`, `policy_log_prob`, `policy_entropy` and
    `policy_mode` (see `dreamer_actor._src.distributions`).

    Args:
      params: the actor's variables (`Actor.from_config(config).init(...)`).
      config: `ActorConfig`.
      hidden: `[..., H]` deterministic latent.
      stoch: `[..., Z]` or `[..., S, C]` stochastic latent.
      key: PRNG key (unused, may be None, when `deterministic=True`).
      training: True -> `ActorOutput(action, log_prob, entropy)`; False -> the action
        `[..., A]` only. A Python bool (it changes what is returned).
      deterministic: acting only: return the mode action (`tanh(mean) * scale + bias`
        for the Gaussians, the one-hot argmax for categorical) instead of a sample.
      reparameterize: let gradients flow through the sampled action (the "dynamics"
        estimator, for differentiable world models; straight-through for categorical);
        default False: the action is stop-gradiented and the gradient flows through
        `log_prob` (REINFORCE).

    Returns:
      `ActorOutput` when training, else the action `[..., A]` in `[low, high]` (a
      one-hot `[..., A]` for categorical: the choice is `argmax(action, -1)`).

    Example:
      >>> cfg = ActorConfig.create(low=-2.0, high=2.0, action_dim=1, layers=1, units=8)
      >>> h, z = jnp.zeros((4, 3)), jnp.zeros((4, 2, 2))
      >>> params = Actor.from_config(cfg).init(jax.random.key(0), h, z)
      >>> act(params, cfg, h, z, jax.random.key(1), training=False).shape
      (4, 1)
    """
    if not isinstance(training, bool):
        raise TypeError(f"act: `training` must be a Python bool, got {training!r}.")
    if not isinstance(deterministic, bool):
        raise TypeError(f"act: `deterministic` must be a Python bool, got {deterministic!r}.")
    if training and deterministic:
        raise ValueError("act: `deterministic=True` is for acting only (training needs samples).")
    if key is None and not deterministic:
        raise ValueError("act: `key` is required unless deterministic=True.")
    outputs = Actor.from_config(config).apply(params, hidden, stoch)
    if deterministic:
        return distributions.policy_mode(outputs, config)
    action, raw_sample = distributions.policy_sample(key, outputs, config, reparameterize=reparameterize)
    if not training:
        return action
    log_prob = distributions.policy_log_prob(outputs, config, raw_sample=raw_sample)
    entropy = distributions.policy_entropy(outputs, config, raw_sample=raw_sample)
    return ActorOutput(action, log_prob, entropy)
