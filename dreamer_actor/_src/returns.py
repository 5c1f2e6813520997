r"""Lambda-returns and imagination weights over imagined trajectories, as in DreamerV3.

Time-major convention, for an imagined trajectory `s_0, a_0, s_1, ..., s_{T-1}, a_{T-1}, s_T`:

    rewards[t]    r_t   reward of the transition s_t -> s_{t+1},          t = 0 .. T-1
    continues[t]  c_t   1 if s_{t+1} continues the episode (0 if the transition ends it),
                        or the world model's predicted continue probability
    values[t]     v_t   critic value v(s_t) of the state the action a_t is taken in
    bootstrap     v_T   critic value v(s_T) of the state after the last transition

All of `rewards`, `values` and `continues` are `[T, B]` (time first) and `bootstrap` is `[B]`.
A caller whose world model predicts the reward and continue flag *at* state `s_{t+1}`
(DreamerV3 stores them with the state they were predicted from) passes `reward[1:]`,
`cont[1:]`, `value[:-1]` and `value[-1]`.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp


def _check_scalar(fn: str, name: str, x: float | jax.Array, low: float, high: float) -> None:
    """Rank check for traced scalars; range check for Python numbers (known at trace time)."""
    if jnp.ndim(x) != 0:
        raise ValueError(f"{fn}: `{name}` must be a scalar, got shape {jnp.shape(x)}.")
    if isinstance(x, numbers.Real) and not (low <= float(x) <= high):
        raise ValueError(f"{fn}: `{name}` must be in [{low}, {high}], got {x!r}.")


def _check_floating(fn: str, **arrays: jax.Array) -> None:
    for name, x in arrays.items():
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(f"{fn}: `{name}` must be floating point, got dtype {jnp.result_type(x)}.")


def _float_dtype(*xs: jax.Array) -> jnp.dtype:
    """The common dtype, at least float32 (bfloat16 inputs give float32 returns)."""
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def lambda_returns(
    rewards: jax.Array,
    values: jax.Array,
    continues: jax.Array,
    bootstrap: jax.Array,
    *,
    discount: float | jax.Array,
    lambda_: float | jax.Array = 0.95,
) -> jax.Array:
    r"""TD(lambda) returns of an imagined trajectory, computed backwards with `lax.scan`.

        R_t = r_t + discount * c_t * ((1 - lambda) * v_{t+1} + lambda * R_{t+1}),
        v_T = R_T = bootstrap.

    `lambda_ = 1` gives the discounted Monte-Carlo return bootstrapped with `v(s_T)`,
    `R_t = sum_{k=t}^{T-1} (prod_{j=t}^{k-1} g c_j) r_k + (prod_{j=t}^{T-1} g c_j) v_T`;
    `lambda_ = 0` the one-step TD target `R_t = r_t + g c_t v_{t+1}` (`g = discount`). A
    termination (`c_t = 0`) cuts everything after the transition `t`. This is DreamerV3's
    `lambda_return` (Hafner et al., 2023, eq. 7) with its discount `1 - 1/horizon`.

    Gradients flow into all inputs (`rewards`, `values`, `bootstrap`, `continues`): the
    "dynamics" estimator needs them through the rewards. Stop-gradient the critic values
    yourself where you use the returns as a critic target.

    Args:
      rewards: `[T, B]` r_t, reward of the transition s_t -> s_{t+1}.
      values: `[T, B]` v_t = v(s_t).
      continues: `[T, B]` c_t in [0, 1], continue flag (or probability) of that transition.
      bootstrap: `[B]` v(s_T), the value after the last transition.
      discount: scalar in [0, 1] (a Python float, or a traced scalar to sweep it).
      lambda_: scalar in [0, 1], the TD(lambda) mixing weight (DreamerV3: 0.95).

    Returns:
      `[T, B]` returns R_0 .. R_{T-1}, float32 (float64 for float64 inputs under x64).

    Raises:
      ValueError: at trace time, naming the argument, for mismatched shapes, non-float
        dtypes, non-scalar or out-of-range (Python) `discount` / `lambda_`.

    Example:
      >>> r, v, c = jnp.ones((2, 1)), jnp.zeros((2, 1)), jnp.ones((2, 1))
      >>> lambda_returns(r, v, c, jnp.full((1,), 10.0), discount=0.5, lambda_=1.0)[:, 0].tolist()
      [4.0, 6.0]
    """
    fn = "lambda_returns"
    _check_floating(fn, rewards=rewards, values=values, continues=continues, bootstrap=bootstrap)
    if jnp.ndim(rewards) != 2:
        raise ValueError(f"{fn}: `rewards` must be [T, B] (time first), got shape {jnp.shape(rewards)}.")
    for name, x in (("values", values), ("continues", continues)):
        if jnp.shape(x) != jnp.shape(rewards):
            raise ValueError(
                f"{fn}: `{name}` must have the shape of `rewards` {jnp.shape(rewards)}, got {jnp.shape(x)}."
            )
    if jnp.shape(bootstrap) != jnp.shape(rewards)[1:]:
        raise ValueError(f"{fn}: `bootstrap` must be [B] = {jnp.shape(rewards)[1:]}, got shape {jnp.shape(bootstrap)}.")
    _check_scalar(fn, "discount", discount, 0.0, 1.0)
    _check_scalar(fn, "lambda_", lambda_, 0.0, 1.0)

    dtype = _float_dtype(rewards, values, continues, bootstrap)
    rewards, values, continues, bootstrap = (jnp.asarray(x, dtype) for x in (rewards, values, continues, bootstrap))
    discount = jnp.asarray(discount, dtype)
    lambda_ = jnp.asarray(lambda_, dtype)

    next_values = jnp.concatenate([values[1:], bootstrap[None]], axis=0)  # v_{t+1}
    gamma = discount * continues
    # R_t = offset_t + slope_t * R_{t+1}: everything but the recursion is computed in parallel.
    offset = rewards + gamma * (1.0 - lambda_) * next_values
    slope = gamma * lambda_

    def step(next_return, inputs):
        offset_t, slope_t = inputs
        ret = offset_t + slope_t * next_return
        return ret, ret

    _, returns = jax.lax.scan(step, bootstrap, (offset, slope), reverse=True)
    return returns


def imagination_weights(continues: jax.Array, discount: float | jax.Array) -> jax.Array:
    r"""Loss weights of imagined states: the discounted probability of still being alive.

        w_0 = 1,    w_t = prod_{k<t} discount * c_k    (t = 1 .. T-1),

    i.e. DreamerV3's `cumprod(discount * cont)` shifted so the first (real, replayed)
    state has weight 1. With the convention of this module, `c_k` belongs to the
    transition s_k -> s_{k+1}, so `w_t` weights the state s_t (where a_t is taken) by the
    chance that no earlier transition ended the episode: states after a predicted
    termination get weight 0 (or a small one for soft continue probabilities). The last
    flag `c_{T-1}` concerns `s_T`, which carries no action, and is not used.

    The result is stop-gradiented: the actor and critic losses must not move the world
    model's continue predictions.

    Args:
      continues: `[T, B]` c_t in [0, 1], the same array given to `lambda_returns`.
      discount: scalar in [0, 1] (use 1.0 to weight by survival only).

    Returns:
      `[T, B]` weights, `w[0] == 1`, float32 (float64 under x64), without gradient.

    Example:
      >>> imagination_weights(jnp.array([[1.0], [0.0], [1.0]]), 0.5)[:, 0].tolist()
      [1.0, 0.5, 0.0]
    """
    fn = "imagination_weights"
    _check_floating(fn, continues=continues)
    if jnp.ndim(continues) != 2:
        raise ValueError(f"{fn}: `continues` must be [T, B] (time first), got shape {jnp.shape(continues)}.")
    _check_scalar(fn, "discount", discount, 0.0, 1.0)
    dtype = _float_dtype(continues)
    continues = jax.lax.stop_gradient(jnp.asarray(continues, dtype))
    discount = jax.lax.stop_gradient(jnp.asarray(discount, dtype))
    alive = jnp.cumprod(discount * continues[:-1], axis=0)
    return jax.lax.stop_gradient(jnp.concatenate([jnp.ones_like(continues[:1]), alive], axis=0))
