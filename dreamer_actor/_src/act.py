"""`act`: the actor end to end, from latent state to action (and its log-prob and entropy).

The whole data path, for every family (`family = config.family`, chosen at trace time):

    raw = Actor.from_config(config).apply(params, hidden, stoch)     # [..., num_outputs]
    dist = family.head(raw, config)                                  # e.g. (mean, log_std)
    action, raw_sample = family.sample(key, dist, config, reparameterize=...)
    log_prob = family.log_prob(dist, config, raw_sample=sg(raw_sample))   # the score
    entropy = family.entropy(dist, config, raw_sample=raw_sample)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dreamer_actor._src import validation
from dreamer_actor._src.networks import Actor


class ActorOutput(NamedTuple):
    """What `act(..., training=True)` returns; `[...]` is the batch shape of the latent.

    Attributes:
      action: `[..., A]` the action for the environment, inside `[low, high]` exactly (a
        one-hot for `categorical`). Stop-gradiented unless `reparameterize=True`.
      raw_sample: `[..., A]` what the log-prob is exact on: tanh_normal's pre-squash `u`,
        bounded_normal's unclipped Normal sample (official DreamerV3 feeds this one to the
        world model and clips only the env's copy), categorical's one-hot. It carries the
        pathwise gradient when `reparameterize=True`.
      log_prob: `[...]` log pi(raw_sample | state) evaluated at the *stop-gradiented*
        sample: its gradient is the score function, whatever `reparameterize` is.
      entropy: `[...]` entropy of pi(. | state): a one-sample estimate for tanh_normal
        (pathwise gradient), closed form / exact for bounded_normal / categorical.
    """

    action: jax.Array
    raw_sample: jax.Array
    log_prob: jax.Array
    entropy: jax.Array


def act(
    params: Any,
    config: Any,
    hidden: jax.Array,
    stoch: jax.Array,
    key: jax.Array | None,
    *,
    training: bool,
    deterministic: bool = False,
    reparameterize: bool = False,
) -> ActorOutput | jax.Array:
    """Runs the actor on a latent state, for any `config.distribution`.

    With `training=True` every `policy_loss` estimator can be fed straight from the output:
    `log_prob` is the score-function log-prob (at `sg(raw_sample)`) for REINFORCE, and with
    `reparameterize=True` the `action` / `raw_sample` (and the tanh_normal entropy) carry the
    pathwise gradient that `"dynamics"` needs; `"mix"` uses both.

    Args:
      params: the actor's variables (`Actor.from_config(config).init(...)`).
      config: `ActorConfig`.
      hidden: `[..., H]` deterministic latent.
      stoch: `[..., Z]` or `[..., S, C]` stochastic latent.
      key: PRNG key (unused, may be None, when `deterministic=True`).
      training: True -> `ActorOutput(action, raw_sample, log_prob, entropy)`; False -> the
        action `[..., A]` only. A Python bool (it changes what is returned).
      deterministic: acting only: return the family's mode action (`tanh(mean) * scale +
        bias` for the Gaussians, the one-hot argmax for categorical) instead of a sample.
      reparameterize: let gradients flow through the sampled action (the "dynamics"
        estimator, for differentiable world models; straight-through for categorical).
        Default False: the action is stop-gradiented (REINFORCE).

    Returns:
      `ActorOutput` when training, else the action `[..., A]` in `[low, high]` (a one-hot
      for categorical: the choice is `argmax(action, -1)`).

    Example:
      >>> cfg = ActorConfig.create(low=-2.0, high=2.0, action_dim=1, layers=1, units=8)
      >>> h, z = jnp.zeros((4, 3)), jnp.zeros((4, 2, 2))
      >>> params = Actor.from_config(cfg).init(jax.random.key(0), h, z)
      >>> act(params, cfg, h, z, jax.random.key(1), training=False).shape
      (4, 1)
    """
    return run(params, config, hidden, stoch, key, training, deterministic, reparameterize, "act")


def no_check(x: jax.Array, name: str) -> None:
    """`act`'s `check_finite`: none (trace-time calls only, nothing is added to the computation)."""
    del x, name


def run(
    params: Any,
    config: Any,
    hidden: jax.Array,
    stoch: jax.Array,
    key: jax.Array | None,
    training: bool,
    deterministic: bool,
    reparameterize: bool,
    fn: str,
    check_finite: Callable[[jax.Array, str], None] = no_check,
) -> ActorOutput | jax.Array:
    """`act`'s one data path, shared with `checked_act`: `fn` names the public function in errors, and
    `check_finite(x, name)` (checked_act's run-time check) sees every input and intermediate."""
    family = validation.config(config, fn)
    validation.python_bool(training, "training", fn)
    validation.python_bool(deterministic, "deterministic", fn)
    validation.python_bool(reparameterize, "reparameterize", fn)
    if training and deterministic:
        raise ValueError(f"{fn}: `deterministic=True` is for acting only (training needs samples).")
    if not deterministic:
        validation.key(key, "key", fn)
    validation.actor_params(params, config, fn)
    check_finite(jnp.asarray(hidden), "hidden")
    check_finite(jnp.asarray(stoch), "stoch")
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        check_finite(leaf, f"params{jax.tree_util.keystr(path)}")
    raw = Actor.from_config(config).apply(params, hidden, stoch)
    check_finite(raw, "the network's raw outputs")
    return outputs(family, config, raw, key, training, deterministic, reparameterize, check_finite)


def outputs(
    family: Any,
    config: Any,
    raw: jax.Array,
    key: jax.Array | None,
    training: bool,
    deterministic: bool,
    reparameterize: bool,
    check: Callable[[jax.Array, str], None],
) -> ActorOutput | jax.Array:
    """The family's part of `act` on the network's raw outputs `[..., num_outputs]` (arguments checked)."""
    dist = family.head(raw, config)
    if deterministic:
        action = family.mode(dist, config)
        check(action, "action")
        return action
    action, raw_sample = family.sample(key, dist, config, reparameterize=reparameterize)
    check(action, "action")
    if not training:
        return action
    log_prob = family.log_prob(dist, config, raw_sample=jax.lax.stop_gradient(raw_sample))
    entropy = family.entropy(dist, config, raw_sample=raw_sample)
    check(log_prob, "log_prob")
    check(entropy, "entropy")
    return ActorOutput(action, raw_sample, log_prob, entropy)
