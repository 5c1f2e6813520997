"""Run-time value checks under `jit`, via `jax.experimental.checkify`.

Policy for values that are only known at run time (documented in the README):
  * Out-of-range actions given to `log_prob_with_tanh_correction(action=...)` are
    treated as lying at the nearest bound (clipped `atanh`): finite, never NaN.
  * NaN or inf in the latent state or parameters propagate (the outputs become NaN);
    nothing is silently replaced, since masking a diverged world model hides a bug.
The `checked_*` functions below turn both into errors instead. Each returns
`(error, output)` like any checkified function; call `error.throw()` (outside jit)
to raise a `JaxRuntimeError` naming the failed check, or `error.get()` to inspect it.

Example:
    err, lp = jax.jit(checked_log_prob)(mean, log_std, config, action=a)
    err.throw()
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from dreamer_actor._src import tanh_normal
from dreamer_actor._src.act import act
from dreamer_actor._src.config import ActorConfig


def _check_finite(x: jax.Array, name: str) -> None:
    checkify.check(jnp.all(jnp.isfinite(x)), f"{name} has NaN or inf entries")


def _log_prob_with_checks(
    mean: jax.Array,
    log_std: jax.Array,
    config: ActorConfig,
    *,
    pre_tanh: jax.Array | None = None,
    action: jax.Array | None = None,
) -> jax.Array:
    _check_finite(mean, "mean")
    _check_finite(log_std, "log_std")
    if pre_tanh is not None:
        _check_finite(pre_tanh, "pre_tanh")
    if action is not None:
        _check_finite(action, "action")
        inside = (action >= jnp.broadcast_to(config.low, jnp.shape(action))) & (
            action <= jnp.broadcast_to(config.high, jnp.shape(action))
        )
        checkify.check(jnp.all(inside), "action outside [low, high]")
    out = tanh_normal.log_prob_with_tanh_correction(mean, log_std, config, pre_tanh=pre_tanh, action=action)
    _check_finite(out, "log_prob")
    return out


def _act_with_checks(params: Any, config: ActorConfig, hidden: jax.Array, stoch: jax.Array, key: Any, **kwargs: Any):
    _check_finite(hidden, "hidden")
    _check_finite(stoch, "stoch")
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        _check_finite(leaf, f"params{jax.tree_util.keystr(path)}")
    out = act(params, config, hidden, stoch, key, **kwargs)
    for name, x in out._asdict().items() if hasattr(out, "_asdict") else [("action", out)]:
        _check_finite(x, name)
    return out


checked_log_prob = checkify.checkify(_log_prob_with_checks, errors=checkify.user_checks)
checked_log_prob.__doc__ = (
    "`log_prob_with_tanh_correction` that also checks its inputs are finite and an `action`"
    " lies in [low, high]. Returns `(error, log_prob)`; see the module docstring."
)
checked_act = checkify.checkify(_act_with_checks, errors=checkify.user_checks)
checked_act.__doc__ = (
    "`act` that also checks the latent state, params and outputs are finite."
    " Returns `(error, output)`; see the module docstring."
)
