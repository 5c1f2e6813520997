"""Run-time value checks under `jit`, via `jax.experimental.checkify`.

Policy for values that are only known at run time (documented in docs/maths.md, "Run-time value policy"):
  * Out-of-support actions given to `policy_log_prob(action=...)` are not rejected:
    tanh_normal treats them as lying at the nearest bound (clipped `atanh`, finite);
    bounded_normal evaluates its Normal there; categorical integer indices out of range
    give NaN.
  * NaN or inf in the latent state, the parameters or the network's outputs propagate (the
    outputs become NaN, categorical actions included); nothing is silently replaced, since
    masking a diverged world model hides a bug.
The `checked_*` functions below turn both into errors instead. Each returns
`(error, output)` like any checkified function; call `error.throw()` (outside jit) to
raise a `JaxRuntimeError` naming the failed check, or `error.get()` to inspect it.

Example:
    err, lp = jax.jit(checked_log_prob)(dist, config, action=a)
    err.throw()
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from dreamer_actor._src import act, policy


def _check_finite(x: jax.Array, name: str) -> None:
    checkify.check(jnp.all(jnp.isfinite(x)), f"{name} has NaN or inf entries")


def _widened_by_one_ulp(config: Any) -> Any:
    """`config` with `low`/`high` moved one float32 step outwards (for checking a caller's action).

    The config's bounds are the caller's rounded *inwards* to float32, so an action exactly
    at a float64 Box bound (or that bound rounded to the nearest float32) can lie one float32
    step outside `[config.low, config.high]`; it is still in the caller's space. Anything
    further out is reported.
    """
    low = jnp.nextafter(config.low, jnp.asarray(-jnp.inf, config.low.dtype))
    high = jnp.nextafter(config.high, jnp.asarray(jnp.inf, config.high.dtype))
    return dataclasses.replace(config, low=low, high=high)  # no validation: used for `in_support` only


def _log_prob_with_checks(
    dist: Any, config: Any, *, raw_sample: jax.Array | None = None, action: jax.Array | None = None
) -> jax.Array:
    for name, x in zip(config.family.Params._fields, dist, strict=False):
        _check_finite(jnp.asarray(x), f"dist.{name}")
    if raw_sample is not None:
        _check_finite(jnp.asarray(raw_sample), "raw_sample")
    if action is not None:
        action = jnp.asarray(action)
        if jnp.issubdtype(action.dtype, jnp.floating):
            _check_finite(action, "action")
            action32 = action.astype(jnp.promote_types(action.dtype, jnp.float32))
            checkify.check(
                jnp.all(config.family.in_support(action32, _widened_by_one_ulp(config))),
                f"action outside the support of {config.distribution} (bounds [low, high], or a one-hot)",
            )
    out = policy.log_prob(dist, config, raw_sample, action, "checked_log_prob")
    _check_finite(out, "log_prob")
    return out


def _act_with_checks(
    params: Any,
    config: Any,
    hidden: jax.Array,
    stoch: jax.Array,
    key: Any,
    *,
    training: bool,
    deterministic: bool = False,
    reparameterize: bool = False,
):
    out = act.run(
        params, config, hidden, stoch, key, training, deterministic, reparameterize, "checked_act", _check_finite
    )
    action = out.action if training else out
    in_support = config.family.in_support(jax.lax.stop_gradient(action), config)
    checkify.check(jnp.all(in_support), "action outside its support")
    return out


checked_log_prob = checkify.checkify(_log_prob_with_checks, errors=checkify.user_checks)
checked_log_prob.__doc__ = (
    "`policy_log_prob` that also checks its inputs are finite and an `action` lies in the family's"
    " support (`[low, high]`, a one-hot). Returns `(error, log_prob)`; see the module docstring."
)
checked_act = checkify.checkify(_act_with_checks, errors=checkify.user_checks)
checked_act.__doc__ = (
    "`act` that also checks the latent state, params, the network's raw outputs and the outputs are"
    " finite and the action inside its support. Returns `(error, output)`; see the module docstring."
)
