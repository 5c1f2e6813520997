"""The actor's training step as one pure function, ready for `jit` and sharded batches.

`make_actor_train_step(config, optimizer, entropy_coef=...)` returns

    step(params, opt_state, hidden, stoch, advantage, key, weights=None)
        -> (params, opt_state, metrics)

which samples actions for every imagined state (`act(..., training=True)`), computes the
REINFORCE loss with its entropy bonus (`actor_loss`), differentiates it and applies one
optax update. It is not jitted: jit it yourself (with `donate_argnums=(0, 1)` to update
params and optimizer state in place).

**Many devices.** Nothing in the step depends on the number of devices. Shard the data
along the batch axis and replicate the params; `jit` compiles one SPMD program and XLA
inserts the all-reduce of the gradients (the loss is a mean over the *global* batch):

    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))   # Auto axes
    data = NamedSharding(mesh, P(None, "batch"))      # [T, B, ...] split along B
    replicated = NamedSharding(mesh, P())
    params, opt_state = jax.device_put((params, opt_state), replicated)
    hidden, stoch, advantage = jax.device_put((hidden, stoch, advantage), data)
    step = jax.jit(make_actor_train_step(config, optax.adam(3e-5)), donate_argnums=(0, 1))
    params, opt_state, metrics = step(params, opt_state, hidden, stoch, advantage, key)

`B` must be divisible by the number of devices. The same code runs on one CPU, 8 GPUs
or a TPU slice and gives the same numbers up to float reduction order: every example
`(t, b)` draws its noise from its own key, `example_keys(key, (T, B))[t, b]`, which
depends on `(key, t, b)` only, never on the sharding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dreamer_actor._src import act, validation
from dreamer_actor._src.act import ActorOutput
from dreamer_actor._src.config import ActorConfig
from dreamer_actor._src.losses import actor_loss
from dreamer_actor._src.networks import Actor

TrainStep = Callable[..., tuple[Any, Any, dict[str, jax.Array]]]


def example_keys(key: jax.Array, batch_shape: tuple[int, ...]) -> jax.Array:
    """One PRNG key per example: `jax.random.split(key, batch_shape)`.

    The key of example `(t, b)` is a function of `(key, t, b)` only, so samples do not
    change with the sharding of the batch or the number of devices.

    Args:
      key: a PRNG key (typed `jax.random.key` or raw `PRNGKey`).
      batch_shape: e.g. `(T, B)`.

    Returns:
      Keys of shape `batch_shape` (typed keys; raw keys get a trailing `[2]`).
    """
    return jax.random.split(key, tuple(batch_shape))


def act_per_example(
    params: Any, config: ActorConfig, hidden: jax.Array, stoch: jax.Array, keys: jax.Array
) -> ActorOutput:
    """`act(..., training=True)` with one key per example: example `i` gets `act`'s output on it alone.

    The network runs once on the whole batch (its products see every row); the family's part
    (head, sample, log-prob, entropy) is vmapped over the batch dims, so example `i` draws its
    noise from `keys[i]` alone. Equal to `act` on each single example up to float rounding.

    Args:
      params: the actor's variables.
      config: `ActorConfig`.
      hidden: `[*batch, H]`.
      stoch: `[*batch, Z]` or `[*batch, S, C]`.
      keys: `batch_shape` keys, e.g. from `example_keys`.

    Returns:
      `ActorOutput` with `action [*batch, A]`, `log_prob [*batch]`, `entropy [*batch]`.
    """
    fn = "act_per_example"
    family = validation.config(config, fn)
    keys = validation.key(keys, "keys", fn)
    batch = jnp.shape(hidden)[:-1]
    key_batch = jnp.shape(keys) if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) else jnp.shape(keys)[:-1]
    if key_batch != batch:
        raise ValueError(f"{fn}: `keys` must have the batch shape {batch} of `hidden`, got {key_batch}.")
    validation.actor_params(params, config, fn)
    raw = Actor.from_config(config).apply(params, hidden, stoch)

    def one(r, k):
        return act.outputs(family, config, r, k, True, False, False, act.no_check)

    per_example = one
    for _ in batch:  # one vmap per batch dim: no reshape, so a sharded batch axis stays sharded
        per_example = jax.vmap(per_example)
    return per_example(raw, keys)


def make_actor_loss_fn(config: ActorConfig, *, entropy_coef: float | jax.Array = 3e-4) -> Callable:
    """The actor loss as a function of the params, for `jax.grad`.

    Args:
      config: `ActorConfig` (closed over: its `scale`/`bias` become constants).
      entropy_coef: entropy bonus beta (DreamerV3: 3e-4 with normalized advantages).

    Returns:
      `loss_fn(params, hidden, stoch, advantage, key, weights=None) -> (loss, metrics)`
      with `hidden [T, B, H]`, `stoch [T, B, Z]` or `[T, B, S, C]`, `advantage [T, B]`,
      `weights [T, B]` or None, and a PRNG `key` split into one key per example
      (`example_keys`). `loss` is a scalar, `metrics` those of `actor_loss`.
    """
    if not isinstance(config, ActorConfig):
        raise TypeError(f"make_actor_loss_fn: `config` must be an ActorConfig, got {type(config).__name__}.")

    def loss_fn(params, hidden, stoch, advantage, key, weights=None):
        batch = jnp.shape(advantage)
        if jnp.shape(hidden)[:-1] != batch:
            raise ValueError(
                f"actor train step: `hidden` must be [*batch, H] with the batch shape {batch} of `advantage`, "
                f"got {jnp.shape(hidden)}."
            )
        out = act_per_example(params, config, hidden, stoch, example_keys(key, batch))
        return actor_loss(out.log_prob, out.entropy, advantage, entropy_coef=entropy_coef, weights=weights)

    return loss_fn


def make_actor_train_step(
    config: ActorConfig, optimizer: optax.GradientTransformation, *, entropy_coef: float | jax.Array = 3e-4
) -> TrainStep:
    """Builds the pure actor training step: sample, loss, grad, optax update.

    Args:
      config: `ActorConfig`.
      optimizer: an optax `GradientTransformation`, e.g.
        `optax.chain(optax.clip_by_global_norm(100.0), optax.adam(3e-5))`.
      entropy_coef: entropy bonus beta.

    Returns:
      `step(params, opt_state, hidden, stoch, advantage, key, weights=None)
      -> (params, opt_state, metrics)`, pure and not jitted. `metrics` holds the
      `actor_loss` metrics plus `grad_norm` (global L2 norm of the gradient), all scalars.
      See the module docstring for running it sharded over many devices.

    Example:
      >>> import optax
      >>> cfg = ActorConfig.create(low=-1.0, high=1.0, action_dim=2, layers=1, units=8)
      >>> h, z = jnp.zeros((3, 4, 5)), jnp.zeros((3, 4, 2, 2))  # [T, B, H], [T, B, S, C]
      >>> params = Actor.from_config(cfg).init(jax.random.key(0), h, z)
      >>> opt = optax.adam(1e-3)
      >>> step = jax.jit(make_actor_train_step(cfg, opt, entropy_coef=3e-4))
      >>> params, opt_state, metrics = step(params, opt.init(params), h, z, jnp.ones((3, 4)), jax.random.key(1))
      >>> sorted(metrics)[:3]
      ['advantage_abs_max', 'advantage_mean', 'advantage_std']
    """
    loss_fn = make_actor_loss_fn(config, entropy_coef=entropy_coef)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(params, opt_state, hidden, stoch, advantage, key, weights=None):
        (_, metrics), grads = grad_fn(params, hidden, stoch, advantage, key, weights)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {**metrics, "grad_norm": optax.tree.norm(grads)}

    return step
