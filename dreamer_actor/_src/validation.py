"""Trace-time checks of public arguments, shared by every public function.

Each public function checks its arguments once, here, and then calls unchecked internals:
errors are `TypeError`/`ValueError` naming the function (`fn`), the argument and what was
expected, raised while tracing (never an XLA error). Run-time values are not checked here;
see `dreamer_actor._src.checks` for the `checkify` paths.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp


def config(value: Any, fn: str, family: str | None = None) -> Any:
    """`value` must be an `ActorConfig` (of `family`, when given); returns its family module."""
    from dreamer_actor._src.config import ActorConfig

    if not isinstance(value, ActorConfig):
        raise TypeError(f"{fn}: `config` must be an ActorConfig, got {type(value).__name__}.")
    if family is not None and value.distribution != family:
        raise ValueError(f"{fn}: needs a {family!r} config, got distribution={value.distribution!r}.")
    return value.family


def floating(x: Any, name: str, fn: str, shape: tuple[int, ...] | None = None, what: str = "") -> jax.Array:
    """A floating-point array (of `shape`, if given), promoted to at least float32."""
    if x is None:
        raise ValueError(f"{fn}: `{name}` is required, got None.")
    try:
        x = jnp.asarray(x)
    except TypeError as error:
        raise TypeError(f"{fn}: `{name}` must be an array, got {type(x).__name__}.") from error
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{fn}: `{name}` must be floating point, got dtype {x.dtype}.")
    if shape is not None and x.shape != tuple(shape):
        raise ValueError(f"{fn}: `{name}` must have shape {what or tuple(shape)}, got {x.shape}.")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def last_dim(x: Any, name: str, size: int, fn: str, what: str = "action_dim") -> jax.Array:
    """A floating `[..., size]` array, promoted to at least float32."""
    shape = jnp.shape(x) if x is not None else None
    if shape is not None and (len(shape) < 1 or shape[-1] != size):
        raise ValueError(f"{fn}: `{name}` must have shape [..., {size}] ({what}), got {shape}.")
    return floating(x, name, fn)


def one_of(fn: str, **given: Any) -> tuple[str, Any]:
    """Exactly one of the keyword arguments is not None: returns its `(name, value)`."""
    present = [(k, v) for k, v in given.items() if v is not None]
    if len(present) != 1:
        names = " or ".join(f"`{k}`" for k in given)
        raise ValueError(f"{fn}: give exactly one of {names}.")
    return present[0]


def python_bool(value: Any, name: str, fn: str) -> bool:
    """A Python bool (it changes what is traced); a traced or array value is rejected."""
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: `{name}` must be a Python bool (it changes the traced program), got {value!r}.")
    return value


def scalar(
    x: Any, name: str, fn: str, low: float | None = None, high: float | None = None, *, open_low: bool = False
) -> Any:
    """A real scalar: a Python number (range-checked now) or a 0-d floating array (traced: shape only)."""
    if x is None or isinstance(x, bool | str | bytes):
        raise TypeError(f"{fn}: `{name}` must be a real number or a scalar array, got {x!r}.")
    if isinstance(x, numbers.Real):
        value = float(x)
        bad = (
            value != value
            or (low is not None and (value <= low if open_low else value < low))
            or (high is not None and value > high)
        )
        if bad:
            if high is None:
                expected = f"{'>' if open_low else '>='} {low}"
            else:
                expected = f"in {'(' if open_low else '['}{low}, {high}]"
            raise ValueError(f"{fn}: `{name}` must be {expected}, got {x!r}.")
        return x
    try:
        ndim = jnp.ndim(x)
        dtype = jnp.result_type(x)
    except TypeError as error:
        raise TypeError(f"{fn}: `{name}` must be a real number or a scalar array, got {type(x).__name__}.") from error
    if ndim != 0:
        raise ValueError(f"{fn}: `{name}` must be a scalar, got shape {jnp.shape(x)}.")
    if not jnp.issubdtype(dtype, jnp.floating) and not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{fn}: `{name}` must be a real scalar, got dtype {dtype}.")
    return x


def same_shape(fn: str, reference: str, arrays: dict[str, Any]) -> None:
    """Every array in `arrays` has the shape of `arrays[reference]`."""
    shape = jnp.shape(arrays[reference])
    for name, x in arrays.items():
        if x is not None and jnp.shape(x) != shape:
            raise ValueError(f"{fn}: `{name}` must have the shape of `{reference}` {shape}, got {jnp.shape(x)}.")


def key(value: Any, name: str, fn: str) -> Any:
    """A PRNG key: typed (`jax.random.key`) or raw (`uint32[2]`)."""
    if value is None:
        raise ValueError(f"{fn}: `{name}` (a PRNG key) is required, got None.")
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        raise TypeError(f"{fn}: `{name}` must be a PRNG key (jax.random.key(seed)), got {type(value).__name__}.")
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return value
    if dtype == jnp.uint32 and jnp.shape(value)[-1:] == (2,):
        return value
    raise TypeError(f"{fn}: `{name}` must be a PRNG key (jax.random.key(seed)), got dtype {dtype}.")


def actor_params(params: Any, config: Any, fn: str) -> None:
    """`params` are an `Actor`'s variables for `config`'s architecture (layer names, output width).

    Shape mismatches inside a layer are reported by flax (naming the parameter); this catches
    what flax would run silently: params with more layers, or with another norm, than `config`.
    """
    tree = params.get("params") if hasattr(params, "get") else None
    if not hasattr(tree, "keys"):
        raise TypeError(f"{fn}: `params` must be the actor's variables {{'params': ...}} (from `Actor.init`).")
    expected = {"out"} | {f"dense_{i}" for i in range(config.layers)}
    if config.norm != "none":
        expected |= {f"norm_{i}" for i in range(config.layers)}
    if set(tree.keys()) != expected:
        raise ValueError(
            f"{fn}: `params` do not fit the config (layers={config.layers}, norm={config.norm!r}): they hold the "
            f"layers {sorted(tree.keys())}, the config builds {sorted(expected)}."
        )
    kernel = tree["out"].get("kernel") if hasattr(tree["out"], "get") else None
    outputs = config.family.num_outputs(config)
    if kernel is not None and jnp.shape(kernel)[-1:] != (outputs,):
        raise ValueError(
            f"{fn}: `params` have an output layer of width {jnp.shape(kernel)[-1]}, but the config "
            f"({config.distribution}, action_dim={config.action_dim}) needs {outputs}."
        )
