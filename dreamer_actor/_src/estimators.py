r"""Policy-gradient estimators for imagined trajectories: REINFORCE, dynamics, or a mix.

With a differentiable world model the actor's objective `J = E[R]` can be differentiated
two ways (Hafner et al.: DreamerV1 "dynamics backpropagation", DreamerV2 `actor_grad`,
DreamerV3 REINFORCE):

* `"reinforce"` (default, DreamerV3): the score-function estimator
  `grad J ~ sg(A) * grad log pi(a|s)` with `A = (R - v) / scale`. Actions are
  stop-gradiented samples; works for any environment model, including
  non-differentiable or discrete ones. This is exactly `actor_loss`.
* `"dynamics"` (DreamerV1, DreamerV2 for continuous control): the reparameterized
  (pathwise) estimator `grad J ~ grad A`: the action is sampled as
  `a = f(mean, std, eps)` with gradient (`act(..., reparameterize=True)`) and the
  gradient flows through the action, the world model's dynamics and rewards and
  `lambda_returns` into the policy. Usually far lower variance, but only as good as
  the model's gradients.
* `"mix"`: `rho * reinforce + (1 - rho) * dynamics` (DreamerV2's `actor_grad_mix`).
  Both parts are unbiased for the same gradient, so any `rho` in [0, 1] is too.

For all three the entropy bonus `entropy_coef * H` is added once and the loss is
`-mean(weights * objective)`; the baseline `v`, the `scale` and the `weights` carry no
gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dreamer_actor._src import validation
from dreamer_actor._src.losses import actor_loss
from dreamer_actor._src.normalizer import normalize_advantage

ESTIMATORS = ("reinforce", "dynamics", "mix")


def policy_loss(
    log_prob: jax.Array,
    entropy: jax.Array,
    returns: jax.Array,
    baseline: jax.Array,
    *,
    estimator: str = "reinforce",
    rho: float | jax.Array = 0.5,
    scale: float | jax.Array = 1.0,
    entropy_coef: float | jax.Array = 3e-4,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""The actor loss for a chosen gradient estimator.

    With `A = (returns - sg(baseline)) / sg(scale)` and `w = sg(weights)`:

        reinforce: loss = -mean(w * (sg(A) * log_prob + entropy_coef * entropy))   (= actor_loss)
        dynamics:  loss = -mean(w * (A + entropy_coef * entropy))
        mix:       loss = rho * reinforce + (1 - rho) * dynamics

    What each estimator needs from the caller:

    * `reinforce`: `log_prob` of a stop-gradiented sample (`act(..., training=True)` with
      the default `reparameterize=False`). `returns` may carry gradients; they are cut.
    * `dynamics`: `returns` differentiable w.r.t. the policy parameters: actions from
      `act(..., reparameterize=True)` (or `sample_action(..., reparameterize=True)`),
      imagined through a differentiable world model, then `lambda_returns`. `log_prob`
      enters only the metrics.
    * `mix`: both: `act(..., training=True, reparameterize=True)` gives them together (its
      `log_prob` is evaluated at the stop-gradiented sample, so its gradient is the score).

    Args:
      log_prob: `[T, B]` (any shape) log pi(a_t | s_t).
      entropy: same shape, entropy (estimate) of pi(. | s_t).
      returns: same shape, lambda-returns R_t (e.g. from `lambda_returns`).
      baseline: same shape, the critic's v(s_t); stop-gradiented here.
      estimator: `"reinforce"`, `"dynamics"` or `"mix"` (a static Python string).
      rho: scalar in [0, 1], the REINFORCE weight of `"mix"` (ignored otherwise).
      scale: scalar return scale, e.g. from `ReturnNormalizer.update`; stop-gradiented.
      entropy_coef: scalar entropy bonus beta (DreamerV3: 3e-4 with normalized returns).
      weights: same shape, e.g. `imagination_weights(continues, discount)`, or None
        for ones; stop-gradiented.

    Returns:
      `(loss, metrics)`: a scalar loss and `actor_loss`'s metrics (`loss`, `entropy`,
      `log_prob`, `advantage_mean`, `advantage_std`, `advantage_abs_max`), with `loss`
      the loss of the chosen estimator; metrics carry no gradient.

    Raises:
      ValueError: naming the argument, for an unknown `estimator`, a non-scalar or
        out-of-range `rho` / `scale`, or mismatched shapes.

    Example:
      >>> lp, ent = jnp.array([[-1.0]]), jnp.array([[2.0]])
      >>> ret, v = jnp.array([[5.0]]), jnp.array([[1.0]])
      >>> float(policy_loss(lp, ent, ret, v, scale=2.0, entropy_coef=0.0)[0])  # -(4 / 2) * -1
      2.0
      >>> float(policy_loss(lp, ent, ret, v, estimator="dynamics", scale=2.0, entropy_coef=0.0)[0])
      -2.0
    """
    fn = "policy_loss"
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise ValueError(f"{fn}: `estimator` must be one of {ESTIMATORS}, got {estimator!r}.")
    validation.scalar(rho, "rho", fn, 0.0, 1.0)
    validation.scalar(scale, "scale", fn, 0.0, None, open_low=True)
    validation.scalar(entropy_coef, "entropy_coef", fn, 0.0, None)
    for name, x in (("returns", returns), ("baseline", baseline)):
        if jnp.shape(x) != jnp.shape(log_prob):
            raise ValueError(
                f"{fn}: `{name}` must have the shape of `log_prob` {jnp.shape(log_prob)}, got {jnp.shape(x)}."
            )
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(f"{fn}: `{name}` must be floating point, got dtype {jnp.result_type(x)}.")

    advantage = normalize_advantage(returns, baseline, scale)
    # actor_loss validates the remaining shapes and dtypes and stop-gradients the advantage.
    reinforce, metrics = actor_loss(log_prob, entropy, advantage, entropy_coef=entropy_coef, weights=weights)
    if estimator == "reinforce":
        return reinforce, metrics

    dtype = advantage.dtype
    w = jnp.ones_like(advantage) if weights is None else jax.lax.stop_gradient(jnp.asarray(weights, dtype))
    dynamics = -jnp.mean(w * (advantage + entropy_coef * jnp.asarray(entropy, dtype)))
    if estimator == "dynamics":
        loss = dynamics
    else:
        rho = jax.lax.stop_gradient(jnp.asarray(rho, dtype))
        loss = rho * reinforce + (1.0 - rho) * dynamics
    return loss, {**metrics, "loss": jax.lax.stop_gradient(loss)}
