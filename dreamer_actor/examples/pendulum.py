r"""A differentiable JAX model of gymnasium's `Pendulum-v1`: the "world model" of the demo.

The demo trains the actor purely in imagination. Instead of a learned RSSM it imagines
with the true pendulum physics, written in JAX so that it can be `jit`-ed, `vmap`-ed,
`lax.scan`-ned over an imagination horizon and differentiated (the "dynamics" estimator
backpropagates through it). The equations are gymnasium's `PendulumEnv.step` (v1):

    u          = clip(a, -max_torque, max_torque)
    cost       = angle_normalize(th)^2 + 0.1 * thdot^2 + 0.001 * u^2      (pre-update state)
    thdot'     = clip(thdot + (3 g / (2 l) * sin(th) + 3 / (m l^2) * u) * dt, -max_speed, max_speed)
    th'        = th + thdot' * dt                                          (semi-implicit Euler)
    reward     = -cost

with `g = 10`, `m = l = 1`, `dt = 0.05`, `max_torque = 2`, `max_speed = 8`; the angle is
measured from upright, and is *not* wrapped in the state (gymnasium keeps it unwrapped too:
only the cost wraps it). Observations are `[cos th, sin th, thdot]`, as gymnasium's
`_get_obs`, and a reset draws `th ~ U(-pi, pi)`, `thdot ~ U(-1, 1)`.

The state is a `[..., 2]` array `(th, thdot)`; every function broadcasts over leading batch
dimensions. Gradients are those of the formulas above: `clip` passes no gradient where it
is active (a torque beyond the bounds, or a speed at the limit), as the real system would
respond.

`tests/test_pendulum_model.py` checks `step`, `observe` and `reset_states` against the
installed gymnasium environment (float64 NumPy) on many random states and actions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

GRAVITY = 10.0
MASS = 1.0
LENGTH = 1.0
DT = 0.05
MAX_TORQUE = 2.0
MAX_SPEED = 8.0
EPISODE_STEPS = 200  # gymnasium's TimeLimit for Pendulum-v1
OBS_DIM = 3
ACTION_DIM = 1


def angle_normalize(theta: jax.Array) -> jax.Array:
    """Wraps an angle into `[-pi, pi)`: `((theta + pi) % (2 pi)) - pi`, as gymnasium."""
    return ((theta + jnp.pi) % (2 * jnp.pi)) - jnp.pi


def _split(state: jax.Array, fn: str) -> tuple[jax.Array, jax.Array]:
    state = jnp.asarray(state)
    if state.ndim < 1 or state.shape[-1] != 2:
        raise ValueError(f"{fn}: `state` must have shape [..., 2] (theta, theta_dot), got {state.shape}.")
    if not jnp.issubdtype(state.dtype, jnp.floating):
        raise ValueError(f"{fn}: `state` must be floating point, got dtype {state.dtype}.")
    return state[..., 0], state[..., 1]


def step(state: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One `Pendulum-v1` step: `(state, action) -> (next_state, reward)`.

    Args:
      state: `[..., 2]` `(theta, theta_dot)`; theta from upright, unwrapped.
      action: `[..., 1]` torque; clipped to `[-2, 2]` as gymnasium does.

    Returns:
      `(next_state [..., 2], reward [...])`. The reward is that of the transition, computed
      from the pre-update state and the clipped torque (gymnasium's order).

    Raises:
      ValueError: naming the argument for a wrong trailing size or mismatched batch dims.

    Example:
      >>> s, r = step(jnp.array([0.0, 0.0]), jnp.array([0.0]))  # upright and still: stays
      >>> s.tolist(), float(r)
      ([0.0, 0.0], -0.0)
    """
    theta, theta_dot = _split(state, "step")
    action = jnp.asarray(action)
    if action.shape != (*state.shape[:-1], ACTION_DIM):
        raise ValueError(f"step: `action` must have shape {(*state.shape[:-1], ACTION_DIM)}, got {action.shape}.")
    torque = jnp.clip(action[..., 0], -MAX_TORQUE, MAX_TORQUE).astype(theta.dtype)
    cost = angle_normalize(theta) ** 2 + 0.1 * theta_dot**2 + 0.001 * torque**2
    accel = 3.0 * GRAVITY / (2.0 * LENGTH) * jnp.sin(theta) + 3.0 / (MASS * LENGTH**2) * torque
    new_theta_dot = jnp.clip(theta_dot + accel * DT, -MAX_SPEED, MAX_SPEED)
    new_theta = theta + new_theta_dot * DT
    return jnp.stack([new_theta, new_theta_dot], axis=-1), -cost


def observe(state: jax.Array) -> jax.Array:
    """`[..., 2]` state -> `[..., 3]` observation `[cos th, sin th, thdot]` (gymnasium's)."""
    theta, theta_dot = _split(state, "observe")
    return jnp.stack([jnp.cos(theta), jnp.sin(theta), theta_dot], axis=-1)


def reset_states(key: jax.Array, batch: int) -> jax.Array:
    """`[batch, 2]` start states drawn as `reset` does: `th ~ U(-pi, pi)`, `thdot ~ U(-1, 1)`."""
    high = jnp.asarray([math.pi, 1.0], jnp.float32)
    return jax.random.uniform(key, (batch, 2), jnp.float32, -high[None], high[None])
