"""Helpers shared by the family modules: bounds, broadcasting, the continuous checks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dreamer_actor._src import validation


def broadcast_last(x: jax.Array, like: jax.Array) -> jax.Array:
    """`[A]` -> `like.shape` in `like`'s dtype (explicit: works under rank_promotion='raise')."""
    return jnp.broadcast_to(x.astype(like.dtype), like.shape)


def to_bounds(y: jax.Array, config: Any) -> jax.Array:
    """`clip(y * scale + bias, low, high)` for normalized `y` in `[-1, 1]`, `[..., A]`.

    The final clip makes `low <= action <= high` exact in the action's dtype: `y * scale +
    bias` can round one ulp past a bound of an asymmetric range.
    """
    action = y * broadcast_last(config.scale, y) + broadcast_last(config.bias, y)
    return jnp.clip(action, broadcast_last(config.low, y), broadcast_last(config.high, y))


def from_bounds(action: jax.Array, config: Any) -> jax.Array:
    """`(action - bias) / scale`, the inverse of `to_bounds` inside the bounds, `[..., A]`."""
    return (action - broadcast_last(config.bias, action)) / broadcast_last(config.scale, action)


def check_continuous_action(x: Any, name: str, batch: tuple[int, ...], config: Any, fn: str) -> jax.Array:
    """A floating `[*batch, A]` array, at least float32."""
    shape = (*batch, config.action_dim)
    return validation.floating(x, name, fn, shape, f"{shape} ([*batch, action_dim])")


def in_bounds(action: jax.Array, config: Any) -> jax.Array:
    """`low <= action <= high` in every dimension, `[..., A] -> [...]` bool."""
    return jnp.all(
        (action >= broadcast_last(config.low, action)) & (action <= broadcast_last(config.high, action)), axis=-1
    )
