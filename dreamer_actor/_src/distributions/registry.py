"""The registry of action distribution families: `config.distribution` -> family module.

Every family is a module with the same names and signatures (the protocol), for `A`
actions (`config.action_dim`) and any batch shape `[...]`:

    NAME: str, DISCRETE: bool, ENTROPY_IS_ESTIMATE: bool
    Params                                  NamedTuple of `[..., A]` arrays (the head's output)
    num_outputs(config) -> int              width of the actor's raw output layer
    head(raw, config) -> Params             raw `[..., num_outputs]` float32 -> parameters
    sample(key, dist, config, *, reparameterize) -> (action, raw_sample)      each `[..., A]`
    log_prob(dist, config, *, raw_sample=None, action=None) -> `[...]`        exactly one given
    entropy(dist, config, *, raw_sample=None, key=None, num_samples=1) -> `[...]`
    mode(dist, config) -> action `[..., A]`
    check_action(x, name, batch, config, fn) -> array     trace-time check of an action argument
    in_support(action, config) -> bool `[...]`            the run-time check `checkify` uses
    validate_config(config) -> None         the family's own static fields (ValueError)

`raw_sample` is what log-probs are exact on (the pre-squash `u`, the unclipped Normal
sample, the one-hot); `action` is what the environment gets. The family functions are
unchecked: the public functions (`dreamer_actor.policy_*`, `act`, the seed's tanh-Gaussian
functions) check their arguments once and call them. Dispatch happens at trace time, on
the static `config.distribution`.

A new family is one module implementing the protocol plus one line in `_BUILTIN` (or a
call to `register` for a family that lives outside the package).
"""

from __future__ import annotations

import importlib
from types import ModuleType

_BUILTIN = {
    "tanh_normal": "dreamer_actor._src.distributions.tanh_normal",
    "bounded_normal": "dreamer_actor._src.distributions.bounded_normal",
    "categorical": "dreamer_actor._src.distributions.categorical",
}
_PROTOCOL = (
    "NAME",
    "DISCRETE",
    "ENTROPY_IS_ESTIMATE",
    "Params",
    "num_outputs",
    "head",
    "sample",
    "log_prob",
    "entropy",
    "mode",
    "check_action",
    "in_support",
    "validate_config",
)
_registered: dict[str, ModuleType] = {}


def names() -> tuple[str, ...]:
    """The names `ActorConfig(distribution=...)` accepts, built-in ones first."""
    return (*_BUILTIN, *(n for n in _registered if n not in _BUILTIN))


def get(name: str) -> ModuleType:
    """The family module registered under `name` (imported on first use)."""
    if name in _registered:
        return _registered[name]
    if name in _BUILTIN:
        return register(importlib.import_module(_BUILTIN[name]))
    raise ValueError(f"distributions.get: unknown distribution {name!r}; expected one of {names()}.")


def register(family: ModuleType) -> ModuleType:
    """Adds a family (a module or object implementing the protocol) under `family.NAME`.

    Raises:
      TypeError: naming every missing protocol attribute.
      ValueError: if another family already holds the name.
    """
    missing = [attr for attr in _PROTOCOL if not hasattr(family, attr)]
    if missing:
        raise TypeError(f"distributions.register: {family!r} lacks the protocol attribute(s) {missing}.")
    name = family.NAME
    if name in _registered and _registered[name] is not family:
        raise ValueError(f"distributions.register: a different family is already registered as {name!r}.")
    _registered[name] = family
    return family


def unregister(name: str) -> None:
    """Removes a family added with `register` (built-in families cannot be removed)."""
    if name in _BUILTIN:
        raise ValueError(f"distributions.unregister: {name!r} is built in.")
    _registered.pop(name, None)
