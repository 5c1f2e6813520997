"""`categorical`: discrete (and multi-discrete) actions with DreamerV3's uniform mix.

Its parameters `Params(logits)` (what `policy_head` returns for a categorical config;
`policy_sample`, `policy_log_prob`, ... take them) and the mixed distribution's `probs` and
`log_probs`; see `dreamer_actor._src.distributions.categorical` for the maths.
"""

from typing import Any as _Any

import jax as _jax

from dreamer_actor._src import validation as _validation
from dreamer_actor._src.distributions import categorical as _family
from dreamer_actor._src.distributions.categorical import Params as Params


def _logits(dist: _Any, config: _Any, fn: str) -> Params:
    _validation.config(config, fn, "categorical")
    if not isinstance(dist, tuple) or len(dist) != 1:
        raise ValueError(f"{fn}: `dist` must be Params(logits) (from `policy_head`), got {type(dist).__name__}.")
    return Params(_validation.last_dim(dist[0], "dist.logits", config.action_dim, fn))


def probs(dist: Params, config: _Any) -> _jax.Array:
    """`(1 - unimix) * softmax(logits) + unimix / A_h` per head, `[..., A]`; every entry `>= unimix / A_h`."""
    return _family.probs(_logits(dist, config, "categorical.probs"), config)


def log_probs(dist: Params, config: _Any) -> _jax.Array:
    """`log(probs(dist, config))`, stably: finite with finite gradients for any finite logits, `[..., A]`."""
    return _family.log_probs(_logits(dist, config, "categorical.log_probs"), config)


__all__ = ("Params", "log_probs", "probs")
