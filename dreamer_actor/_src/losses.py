"""The actor loss: REINFORCE with an entropy bonus, as in DreamerV3."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dreamer_actor._src import validation


def actor_loss(
    log_prob: jax.Array,
    entropy: jax.Array,
    advantage: jax.Array,
    *,
    entropy_coef: float | jax.Array = 3e-4,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Policy-gradient loss with an entropy bonus.

        loss = -mean( w * (sg(advantage) * log_prob + entropy_coef * entropy) )

    The advantage is stop-gradiented (it comes from the critic and the return
    normalizer; the actor must not move it), and so are the weights (the cumulative
    `continue` product of imagined steps). The gradient therefore reaches the policy
    only through `log_prob` (the score function) and `entropy`. `entropy_coef` (beta)
    trades greed for exploration: DreamerV3 uses 3e-4 with normalized advantages.

    Args:
      log_prob: `[T, B]` (any shape) log pi(a|s) of the sampled actions.
      entropy: same shape, entropy (estimate) of pi(.|s).
      advantage: same shape, `(R - v) / scale`.
      entropy_coef: scalar beta (a Python float or a traced scalar, so it can be
        swept or scheduled without recompiling).
      weights: same shape, or None for ones.

    Returns:
      `(loss, metrics)`: a scalar loss and a dict of scalars (`loss`, `entropy`,
      `log_prob`, `advantage_mean`, `advantage_std`, `advantage_abs_max`); metrics are
      unweighted means over all elements and carry no gradient.

    Example:
      >>> lp, ent, adv = jnp.array([[-1.0]]), jnp.array([[2.0]]), jnp.array([[3.0]])
      >>> loss, _ = actor_loss(lp, ent, adv, entropy_coef=0.5)
      >>> float(loss)  # -(3 * -1 + 0.5 * 2)
      2.0
    """
    fn = "actor_loss"
    given = {"log_prob": log_prob, "entropy": entropy, "advantage": advantage, "weights": weights}
    arrays = {name: validation.floating(x, name, fn) for name, x in given.items() if x is not None}
    shapes = {name: x.shape for name, x in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{fn}: all inputs must have the same shape (e.g. [T, B]), got {shapes}.")
    if arrays["log_prob"].size == 0:
        raise ValueError(f"{fn}: the batch is empty (shape {arrays['log_prob'].shape}): the mean is undefined.")
    validation.scalar(entropy_coef, "entropy_coef", fn, 0.0, None)
    log_prob, entropy, advantage = arrays["log_prob"], arrays["entropy"], arrays["advantage"]
    log_prob = log_prob.astype(jnp.promote_types(log_prob.dtype, jnp.float32))
    entropy = entropy.astype(log_prob.dtype)
    advantage = jax.lax.stop_gradient(advantage).astype(log_prob.dtype)
    weights = jnp.ones_like(log_prob) if weights is None else jax.lax.stop_gradient(weights).astype(log_prob.dtype)
    objective = weights * (advantage * log_prob + entropy_coef * entropy)
    loss = -jnp.mean(objective)
    metrics = jax.lax.stop_gradient(
        {
            "loss": loss,
            "entropy": jnp.mean(entropy),
            "log_prob": jnp.mean(log_prob),
            "advantage_mean": jnp.mean(advantage),
            "advantage_std": jnp.std(advantage),
            "advantage_abs_max": jnp.max(jnp.abs(advantage)),
        }
    )
    return loss, metrics
