r"""Lambda-returns and imagination weights over imagined trajectories, as in DreamerV3.

Time-major convention, for an imagined trajectory `s_0, a_0, s_1, ..., s_{T-1}, a_{T-1}, s_T`:

    rewards[t]    r_t   reward of the transition s_t -> s_{t+1},          t = 0 .. T-1
    continues[t]  c_t   1 if s_{t+1} continues the episode (0 if the transition ends it),
                        or the world model's predicted continue probability
    values[t]     v_t   critic value v(s_t) of the state the action a_t is taken in
    bootstrap     v_T   critic value v(s_T) of the state after the last transition
    start_continues[b]  c_start, the continue flag of the start state s_0 itself

All of `rewards`, `values` and `continues` are `[T, B]` (time first), `bootstrap` and
`start_continues` are `[B]`.

**From a world model's outputs.** DreamerV3 (`imag_loss` in its `agent.py`) stores each
prediction with the state it was predicted *at*: for the `T + 1` imagined states
`s_0 .. s_T` it has `con[0..T]`, `rew[0..T]` and `value[0..T]` (`[T + 1, B]` here, time
first; official is batch first), where `rew[t]`, `con[t]` are the reward and continue
predicted at `s_t`, i.e. of the transition *into* `s_t`. The arguments here are

    lambda_returns(rewards=rew[1:], values=value[:-1], continues=con[1:],
                   bootstrap=value[-1], discount=disc)
    imagination_weights(con[1:], disc, start_continues=con[0])

`con[0]` is the continue predicted at the start state (0 for a start state that is already
terminal); `rew[0]` is unused. Official DreamerV3 (`contdisc: True`, the default) folds
the discount `1 - 1/horizon` (horizon 333) into the continue head's *training targets*,
so its `con` already contains the discount and it uses `disc = 1` in both formulas; with
`contdisc: False` it uses `disc = 1 - 1/horizon` and undiscounted continues. Pass
whichever pair your world model matches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dreamer_actor._src import validation


def _check_scalar(fn: str, name: str, x: float | jax.Array, low: float, high: float) -> None:
    """Rank check for traced scalars; type and range check for Python numbers (known at trace time)."""
    validation.scalar(x, name, fn, low, high)


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


def imagination_weights(
    continues: jax.Array,
    discount: float | jax.Array,
    *,
    start_continues: jax.Array | None = None,
) -> jax.Array:
    r"""Loss weights of imagined states: the discounted probability of still being alive.

        w_t = discount^t * c_start * prod_{k<t} c_k    (t = 0 .. T-1),

    so `w_0 = c_start` and `w_t = w_{t-1} * discount * c_{t-1}`. This is DreamerV3's
    `cumprod(disc * con, axis=time) / disc` with `con = [c_start, c_0, ..., c_{T-1}]`
    (official `con[0..T]`, see the module docstring), of which the first `T` entries weight
    the states `s_0 .. s_{T-1}` where actions are taken. With the convention of this module,
    `c_k` belongs to the transition s_k -> s_{k+1}, so `w_t` weights the state s_t by the
    chance that it is alive and no earlier transition ended the episode: a terminal start
    state (`c_start = 0`) and states after a predicted termination get weight 0 (or a
    small one for soft continue probabilities). The last flag `c_{T-1}` concerns `s_T`,
    which carries no action, and is not used.

    The result is stop-gradiented: the actor and critic losses must not move the world
    model's continue predictions.

    Args:
      continues: `[T, B]` c_t in [0, 1], the same array given to `lambda_returns`.
      discount: scalar in [0, 1] (use 1.0 to weight by survival only, e.g. when the
        continue head's targets already include the discount, DreamerV3's `contdisc`).
      start_continues: `[B]` c_start in [0, 1], the continue flag (or probability)
        predicted at the start states s_0 (official `con[0]`). None (the default) means
        1: every start state is known to be alive (e.g. replayed non-terminal states).

    Returns:
      `[T, B]` weights, `w[0] == start_continues` (1 by default), float32 (float64 under
      x64), without gradient.

    Raises:
      ValueError: at trace time, naming the argument, for a non-`[T, B]` `continues`, a
        `start_continues` that is not `[B]`, non-float dtypes, or a non-scalar or
        out-of-range (Python) `discount`.

    Example:
      >>> imagination_weights(jnp.array([[1.0], [0.0], [1.0]]), 0.5)[:, 0].tolist()
      [1.0, 0.5, 0.0]
      >>> imagination_weights(jnp.ones((3, 2)), 0.5, start_continues=jnp.array([1.0, 0.0])).tolist()
      [[1.0, 0.0], [0.5, 0.0], [0.25, 0.0]]
    """
    fn = "imagination_weights"
    _check_floating(fn, continues=continues)
    if jnp.ndim(continues) != 2:
        raise ValueError(f"{fn}: `continues` must be [T, B] (time first), got shape {jnp.shape(continues)}.")
    _check_scalar(fn, "discount", discount, 0.0, 1.0)
    if start_continues is None:
        dtype = _float_dtype(continues)
        start = jnp.ones(jnp.shape(continues)[1:], dtype)
    else:
        _check_floating(fn, start_continues=start_continues)
        if jnp.shape(start_continues) != jnp.shape(continues)[1:]:
            raise ValueError(
                f"{fn}: `start_continues` must be [B] = {jnp.shape(continues)[1:]}, "
                f"got shape {jnp.shape(start_continues)}."
            )
        dtype = _float_dtype(continues, start_continues)
        start = jnp.asarray(start_continues, dtype)
    continues = jax.lax.stop_gradient(jnp.asarray(continues, dtype))
    start = jax.lax.stop_gradient(start)
    discount = jax.lax.stop_gradient(jnp.asarray(discount, dtype))
    alive = jnp.cumprod(discount * continues[:-1], axis=0)  # [T - 1, B]: prod_{k<t} g c_k, t >= 1
    weights = jnp.concatenate([jnp.ones_like(continues[:1]), alive], axis=0) * start[None]
    return jax.lax.stop_gradient(weights)
