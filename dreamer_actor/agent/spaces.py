"""Gymnasium spaces -> the actor's `ActorConfig`, and the actions each side gets.

* `Box (A,)` with finite bounds -> `tanh_normal` (default) or `bounded_normal`.
* `Discrete(n)` -> `categorical` with `n` choices; the env gets `argmax(one-hot) + start`.

Which action goes where (`model_action`): the world model reads actions in normalized units,
`[-1, 1]` per dimension for a Box: for `tanh_normal` the env action mapped back by
`(action - bias) / scale`; for `bounded_normal` the *unclipped* sample `raw_sample` (official
DreamerV3; its clipped, rescaled version is what the env gets); for `categorical` the one-hot.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

import dreamer_actor as da

BOX_DISTRIBUTIONS = ("tanh_normal", "bounded_normal")


def actor_config_for(action_space: Any, *, distribution: str | None = None, **options: Any) -> da.ActorConfig:
    """`ActorConfig.from_space` with the agent's rules (see the module docstring).

    Raises:
      TypeError: for a space that is neither a `Box` nor a `Discrete`, naming it.
      ValueError: for an unbounded or non-1-D `Box`, or a distribution that does not fit the space.
    """
    from gymnasium import spaces

    if isinstance(action_space, spaces.Box):
        distribution = distribution or "tanh_normal"
        if distribution not in BOX_DISTRIBUTIONS:
            raise ValueError(
                f"dreamer_actor.agent: a Box action space {action_space!r} needs a distribution in "
                f"{BOX_DISTRIBUTIONS}, got {distribution!r}."
            )
    elif isinstance(action_space, spaces.Discrete):
        distribution = distribution or "categorical"
        if distribution != "categorical":
            raise ValueError(
                f"dreamer_actor.agent: a Discrete action space {action_space!r} needs distribution='categorical', "
                f"got {distribution!r}."
            )
    else:
        raise TypeError(
            f"dreamer_actor.agent: unsupported action space {action_space!r} ({type(action_space).__name__}); "
            "expected a gymnasium Box (bounded, 1-D) or Discrete."
        )
    return da.ActorConfig.from_space(action_space, distribution=distribution, **options)


def obs_dim_for(observation_space: Any) -> int:
    """`O` of a flat `Box` observation space; a clear error otherwise."""
    from gymnasium import spaces

    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise TypeError(
            f"dreamer_actor.agent: needs a 1-D Box observation space, got {observation_space!r} "
            f"({type(observation_space).__name__})."
        )
    return int(observation_space.shape[0])


def model_action_dim(config: da.ActorConfig) -> int:
    """`A`, the width of the action the world model reads."""
    return int(config.action_dim)


def _unit(config: da.ActorConfig, action: jax.Array) -> jax.Array:
    shape = (1,) * (action.ndim - 1) + (-1,)
    return (action - config.bias.reshape(shape)) / config.scale.reshape(shape)


def model_action(config: da.ActorConfig, action: jax.Array, raw_sample: jax.Array | None = None) -> jax.Array:
    """The world model's action `[..., A]` from `act`'s outputs (see the module docstring)."""
    if config.distribution == "bounded_normal":
        if raw_sample is None:  # a mode action: already inside the bounds
            return _unit(config, action)
        return raw_sample
    if config.distribution == "tanh_normal":
        return _unit(config, action)
    return action


def box_action(config: da.ActorConfig, action: np.ndarray, dtype: Any) -> np.ndarray:
    """The Box's `[A]` action in its `dtype`: an integer Box gets it rounded to the nearest integer in the bounds."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        rounded = np.clip(np.rint(action), np.asarray(config.low), np.asarray(config.high))
        return rounded.astype(dtype)
    return np.asarray(action, dtype)


def env_action(config: da.ActorConfig, action: np.ndarray, action_space: Any) -> Any:
    """The env's action for one `[A]` actor action: the Box vector (see `box_action`), or `argmax + start`."""
    if config.distribution == "categorical":
        return int(np.argmax(action)) + int(action_space.start)
    return box_action(config, action, action_space.dtype)


def random_actions(config: da.ActorConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A uniform random `(actor action [A], model action [A])` (the warm-up policy)."""
    if config.distribution == "categorical":
        onehot = np.eye(config.action_dim, dtype=np.float32)[rng.integers(config.action_dim)]
        return onehot, onehot
    unit = rng.uniform(-1.0, 1.0, size=config.action_dim).astype(np.float32)
    action = np.clip(
        unit * np.asarray(config.scale) + np.asarray(config.bias), np.asarray(config.low), np.asarray(config.high)
    )
    return action.astype(np.float32), unit
