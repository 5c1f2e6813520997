r"""One checked API over every distribution family, dispatched on `config.distribution`.

    policy_head(raw, config) -> dist                       the family's `Params` from raw outputs
    policy_sample(key, dist, config, *, reparameterize=False) -> (action, raw_sample)
    policy_log_prob(dist, config, *, raw_sample=None, action=None) -> [...]
    policy_entropy(dist, config, *, raw_sample=None, key=None, num_samples=1) -> [...]
    policy_mode(dist, config) -> action

`dist` is what `policy_head` returns (a family `Params` NamedTuple) or any tuple of the
same arrays, e.g. `(mean, log_std)` for `tanh_normal`. Keep `raw_sample` (what log-probs
are exact on) next to the `action` (what the environment gets). `A` is
`config.action_dim` and `[...]` any batch shape, e.g. `[T, B]`.

Each function checks its arguments once (trace time, errors naming the argument) and calls
the family's unchecked function. These five are the one public path per verb, for every
family: an agent's code names the family once, in its config. All maths runs in float32
(float64 under x64), whatever the trunk computed in.
"""

from __future__ import annotations

from typing import Any

import jax

from dreamer_actor._src import validation


def _dist(dist: Any, config: Any, fn: str) -> tuple[Any, Any]:
    """Checks `config` and `dist` (the family's parameters); returns `(family, Params)` promoted to float32."""
    family = validation.config(config, fn)
    fields = family.Params._fields
    if not isinstance(dist, tuple) or len(dist) != len(fields):
        raise ValueError(
            f"{fn}: `dist` must be the {config.distribution} parameters {family.Params.__name__}"
            f"({', '.join(fields)}) (from `policy_head`), got {type(dist).__name__}"
            f"{'' if not isinstance(dist, tuple) else f' of length {len(dist)}'}."
        )
    first = validation.last_dim(dist[0], f"dist.{fields[0]}", config.action_dim, fn)
    rest = [
        validation.floating(x, f"dist.{name}", fn, first.shape, f"{first.shape} (that of `dist.{fields[0]}`)")
        for name, x in zip(fields[1:], dist[1:], strict=True)
    ]
    dtype = first.dtype
    return family, family.Params(first, *(x.astype(dtype) for x in rest))


def policy_head(raw: jax.Array, config: Any) -> Any:
    """The distribution's parameters from the actor's raw outputs, `[..., num_outputs] -> Params`.

    `Actor` returns `raw`; see each family's module for its head (tanh_normal: a soft-limited
    mean and a sigmoid-bounded log-std; bounded_normal: DreamerV3's tanh mean and sigmoid
    std; categorical: the logits as they are).
    """
    fn = "policy_head"
    family = validation.config(config, fn)
    raw = validation.last_dim(raw, "raw", family.num_outputs(config), fn, "the family's num_outputs")
    return family.head(raw, config)


def policy_sample(
    key: jax.Array,
    dist: Any,
    config: Any,
    *,
    reparameterize: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Samples an action.

    Args:
      key: PRNG key.
      dist: the family's parameters (`policy_head`'s output).
      config: `ActorConfig`.
      reparameterize: let gradients flow through the sample (pathwise for the Gaussians,
        straight-through for categorical); default: stop-gradiented (REINFORCE).

    Returns:
      `(action, raw_sample)`, both `[..., A]` float32. `action` is in `[low, high]` exactly
      (a one-hot for categorical) and goes to the env; `raw_sample` (`u`, the unclipped
      Normal sample, the one-hot) is what `policy_log_prob` and `policy_entropy` are exact on.

    Example:
      >>> cfg = ActorConfig.create(distribution="categorical", action_dim=3)
      >>> a, _ = policy_sample(jax.random.key(0), (jnp.zeros(3),), cfg)
      >>> float(a.sum())
      1.0
    """
    return sample(key, dist, config, reparameterize, "policy_sample")


def sample(key: Any, dist: Any, config: Any, reparameterize: bool, fn: str) -> tuple[jax.Array, jax.Array]:
    """`policy_sample` with the public function's name `fn` in its errors (also `sample_action`'s)."""
    family, dist = _dist(dist, config, fn)
    validation.key(key, "key", fn)
    validation.python_bool(reparameterize, "reparameterize", fn)
    return family.sample(key, dist, config, reparameterize=reparameterize)


def policy_log_prob(
    dist: Any,
    config: Any,
    *,
    raw_sample: jax.Array | None = None,
    action: jax.Array | None = None,
) -> jax.Array:
    """Log-probability, `[...]` float32. Give exactly one of:

    * `raw_sample` from `policy_sample`: exact for every family;
    * `action` in env units: tanh_normal inverts with a clipped `atanh`; bounded_normal
      evaluates the Normal there (approximate at the clipped bounds); categorical takes a
      one-hot `[..., A]` or integer indices.

    The gradient w.r.t. `dist` is the score function (REINFORCE); `raw_sample` / `action`
    are data (differentiated only if the caller passes a differentiable one).
    """
    return log_prob(dist, config, raw_sample, action, "policy_log_prob")


def log_prob(dist: Any, config: Any, raw_sample: Any, action: Any, fn: str) -> jax.Array:
    """`policy_log_prob` with the public function's name `fn` in its errors (also checked's and the seed's)."""
    family, dist = _dist(dist, config, fn)
    name, given = validation.one_of(fn, raw_sample=raw_sample, action=action)
    given = family.check_action(given, name, dist[0].shape[:-1], config, fn)
    return family.log_prob(dist, config, **{name: given})


def policy_entropy(
    dist: Any,
    config: Any,
    *,
    raw_sample: jax.Array | None = None,
    key: jax.Array | None = None,
    num_samples: int = 1,
) -> jax.Array:
    """Entropy in nats, `[...]`.

    * tanh_normal: an unbiased Monte-Carlo estimate; give exactly one of `raw_sample`
      (`[..., A]`, or `[K, ..., A]` for K samples) or `key` (with `num_samples` draws).
    * bounded_normal: the unclipped Normal's closed form in env units.
    * categorical: exact.
    The last two ignore `raw_sample`, `key` and `num_samples`.
    """
    return entropy(dist, config, raw_sample, key, num_samples, "policy_entropy")


def entropy(dist: Any, config: Any, raw_sample: Any, key: Any, num_samples: int, fn: str) -> jax.Array:
    """`policy_entropy` with the public function's name `fn` in its errors (also `entropy_estimate`'s)."""
    family, dist = _dist(dist, config, fn)
    if family.ENTROPY_IS_ESTIMATE:
        name, _ = validation.one_of(fn, raw_sample=raw_sample, key=key)
        if name == "key":
            validation.key(key, "key", fn)
            if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
                raise ValueError(f"{fn}: `num_samples` must be a positive int, got {num_samples!r}.")
        else:
            batch = dist[0].shape
            shape = jax.numpy.shape(raw_sample)
            if shape != batch and shape[1:] != batch:
                raise ValueError(
                    f"{fn}: `raw_sample` must be [..., A] or [K, ..., A] with [..., A] = {batch}, got {shape}."
                )
            raw_sample = validation.floating(raw_sample, "raw_sample", fn)
    return family.entropy(dist, config, raw_sample=raw_sample, key=key, num_samples=num_samples)


def policy_mode(dist: Any, config: Any) -> jax.Array:
    """Deterministic action for evaluation, `[..., A]` float32 in `[low, high]`.

    tanh_normal: `tanh(mean) * scale + bias`; bounded_normal: `mean * scale + bias`;
    categorical: the one-hot argmax (per head).
    """
    return mode(dist, config, "policy_mode")


def mode(dist: Any, config: Any, fn: str) -> jax.Array:
    """`policy_mode` with the public function's name `fn` in its errors (also `mode_action`'s)."""
    family, dist = _dist(dist, config, fn)
    return family.mode(dist, config)
