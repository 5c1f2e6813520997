"""The per-family public namespaces: `policy_*` restricted to one family, with its name in errors."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import jax

from dreamer_actor._src import policy


def family_functions(name: str) -> SimpleNamespace:
    """`head`, `sample`, `log_prob`, `entropy`, `mode` for the family `name` (checked, as `policy_*`)."""

    def head(raw: jax.Array, config: Any) -> Any:
        return policy.policy_head(raw, config, _fn=f"{name}.head", _family=name)

    def sample(key: jax.Array, dist: Any, config: Any, *, reparameterize: bool = False) -> tuple[jax.Array, jax.Array]:
        return policy.policy_sample(
            key, dist, config, reparameterize=reparameterize, _fn=f"{name}.sample", _family=name
        )

    def log_prob(dist: Any, config: Any, *, raw_sample: jax.Array | None = None, action: jax.Array | None = None):
        return policy.policy_log_prob(
            dist, config, raw_sample=raw_sample, action=action, _fn=f"{name}.log_prob", _family=name
        )

    def entropy(
        dist: Any,
        config: Any,
        *,
        raw_sample: jax.Array | None = None,
        key: jax.Array | None = None,
        num_samples: int = 1,
    ) -> jax.Array:
        return policy.policy_entropy(
            dist, config, raw_sample=raw_sample, key=key, num_samples=num_samples, _fn=f"{name}.entropy", _family=name
        )

    def mode(dist: Any, config: Any) -> jax.Array:
        return policy.policy_mode(dist, config, _fn=f"{name}.mode", _family=name)

    functions = {"head": head, "sample": sample, "log_prob": log_prob, "entropy": entropy, "mode": mode}
    for verb, function in functions.items():
        general = getattr(policy, f"policy_{verb}")
        function.__name__ = function.__qualname__ = verb
        function.__module__ = f"dreamer_actor.{name}"
        function.__doc__ = f"`dreamer_actor.policy_{verb}` for a {name!r} config.\n\n" + (general.__doc__ or "")
    return SimpleNamespace(**functions)
