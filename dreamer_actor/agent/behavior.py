r"""Behaviour learning in imagination: the pieces the agent and the exact-model example share.

The agent (`agent.train`) imagines in its learned world model and the exact-model example
(`examples.imagination`) in an exact JAX copy of Pendulum; both roll the actor out with `rollout`,
score the rollout with `actor_loss` (lambda-returns, their weights, the return normalizer and
`da.policy_loss`), keep a slow critic with `slow_update` and step with `optimizers`. What differs is
theirs: the model, the critic (two-hot in the agent, symlog regression in the example) and what the
returns bootstrap from.

Time indices: a rollout from `s_0` visits `s_0 .. s_T`; the action at `s_t` yields the reward and
continue of `s_{t+1}`, so `rewards` and `conts` are `[T, N]` (steps 1 .. T) and `values` `[T + 1, N]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import dreamer_actor as da


def rollout(
    step: Callable[[Any, jax.Array], tuple[Any, Any]], start: Any, key: jax.Array, horizon: int
) -> tuple[Any, Any]:
    """`lax.scan` of `step(state, key) -> (next_state, out)` for `horizon` steps from `start`.

    Returns:
      `(states, outs)`: the visited states `s_0 .. s_T` stacked on a new leading axis `[T + 1, ...]`,
      and the step outputs `[T, ...]` (`out` of step t is the one taken at `s_t`).
    """

    def body(state, step_key):
        next_state, out = step(state, step_key)
        return next_state, (state, out)

    last, (states, outs) = jax.lax.scan(body, start, jax.random.split(key, horizon))
    states = jax.tree.map(lambda xs, x: jnp.concatenate([xs, x[None]], 0), states, last)
    return states, outs


def actor_loss(
    log_prob: jax.Array,
    entropy: jax.Array,
    rewards: jax.Array,
    values: jax.Array,
    conts: jax.Array,
    *,
    discount: float,
    lambda_: float,
    normalizer: da.ReturnNormalizer,
    normalizer_state: da.ReturnNormalizerState,
    estimator: str,
    rho: float,
    entropy_coef: float,
    start_continues: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """The actor's loss on one rollout, and what the critic step and the metrics reuse.

    `R = da.lambda_returns(rewards, values[:-1], conts, values[-1])`, weighted by
    `da.imagination_weights(conts, discount, start_continues=)`, its advantages `R - values[:-1]` scaled
    by the normalizer's `max(1, P95 - P5)`, into `da.policy_loss`.

    Args:
      log_prob, entropy: `[T, N]` of the actions taken at `s_0 .. s_{T-1}`.
      rewards, conts: `[T, N]` at `s_1 .. s_T`; values: `[T + 1, N]` at `s_0 .. s_T`.
      start_continues: `[N]` weight of each start (None: 1).

    Returns:
      `(loss, aux)` with `aux` keys `returns [T, N]` (stop-gradiented), `weights [T, N]`, `normalizer`
      (the updated state), `scale` and `metrics` (`policy_loss`'s).
    """
    returns = da.lambda_returns(rewards, values[:-1], conts, values[-1], discount=discount, lambda_=lambda_)
    weights = da.imagination_weights(conts, discount, start_continues=start_continues)
    normalizer_state, scale = normalizer.update(normalizer_state, returns)
    loss, metrics = da.policy_loss(
        log_prob,
        entropy,
        returns,
        values[:-1],
        estimator=estimator,
        rho=rho,
        scale=scale,
        entropy_coef=entropy_coef,
        weights=weights,
    )
    aux = {
        "returns": jax.lax.stop_gradient(returns),
        "weights": weights,
        "normalizer": normalizer_state,
        "scale": scale,
        "metrics": metrics,
    }
    return loss, aux


def critic_loss(
    per_step: Callable[[jax.Array], jax.Array],
    returns: jax.Array,
    weights: jax.Array,
    *,
    slow_values: jax.Array | None = None,
    slow_reg: float = 0.0,
) -> jax.Array:
    """The critic's objective: `mean(weights * (per_step(sg(R)) + slow_reg * per_step(sg(v_slow))))`.

    DreamerV3's critic regresses the lambda-returns and, with weight `slow_reg`, the slow critic's values
    at the same states (a regularizer; official `slowreg: 1.0`); both targets are stop-gradiented.

    Args:
      per_step: the critic's loss at each state against a target array of the same shape (it closes over
        the critic's prediction at those states), e.g. two-hot cross-entropy of its logits.
      returns: `[T, N]` targets; weights: `[T, N]` (`da.imagination_weights`, or the replay's).
      slow_values: `[T, N]` the slow critic's values at the same states (None: no pull).
    """
    sg = jax.lax.stop_gradient
    loss = per_step(sg(returns))
    if slow_values is not None:
        loss = loss + slow_reg * per_step(sg(slow_values))
    return jnp.mean(weights * loss)


def slow_update(slow: Any, online: Any, rate: float) -> Any:
    """The slow critic's EMA step: `(1 - rate) * slow + rate * online`, leaf by leaf."""
    return jax.tree.map(lambda s, c: (1.0 - rate) * s + rate * c, slow, online)
