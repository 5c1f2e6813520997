r"""The agent's optimizers, as optax transformations: Adam with global-norm clipping, and LaProp with
adaptive gradient clipping (official DreamerV3's optimizer).

`laprop(lr)` applies, per parameter tensor `p` with gradient `g` (step `t = 1, 2, ...`):

    g  <- g / max(1, |g| / (clip * max(pmin, |p|)))         adaptive clipping, whole-tensor L2 norms
    nu <- beta2 nu + (1 - beta2) g^2;   u = g / (sqrt(nu / (1 - beta2^t)) + eps)
    mu <- beta1 mu + (1 - beta1) u;     m = mu / (1 - beta1^t)
    p  <- p - lr_t m,   lr_t = lr * min(1, t / warmup)   (a linear ramp from 0, then constant)

The RMS normalization comes before the momentum (LaProp, Ziyin et al. 2020), unlike Adam. The
defaults are official DreamerV3's (`configs.yaml` `opt`: lr 4e-5, agc 0.3, eps 1e-20, beta1 0.9,
beta2 0.999, warmup 1000). optax's own `adaptive_grad_clip` clips unit-wise (per output row), which
is not what DreamerV3 does, so `clip_by_agc` clips whole tensors.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adam", "laprop")


def clip_by_agc(clip: float = 0.3, pmin: float = 1e-3) -> optax.GradientTransformation:
    """Scales each tensor's update to at most `clip * max(pmin, |param|)` in L2 norm (no state)."""

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if params is None:
            raise ValueError("clip_by_agc: the update needs `params` (optimizer.update(grads, state, params)).")

        def one(update: jax.Array, param: jax.Array) -> jax.Array:
            upper = clip * jnp.maximum(pmin, jnp.linalg.norm(param.ravel()))
            return update / jnp.maximum(1.0, jnp.linalg.norm(update.ravel()) / upper)

        return jax.tree.map(one, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def laprop(
    lr: float = 4e-5,
    *,
    clip: float = 0.3,
    pmin: float = 1e-3,
    eps: float = 1e-20,
    beta1: float = 0.9,
    beta2: float = 0.999,
    warmup: int = 1000,
) -> optax.GradientTransformation:
    """LaProp with adaptive gradient clipping (see the module docstring)."""
    schedule = optax.constant_schedule(lr)
    if warmup:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), schedule], [warmup])
    return optax.chain(
        clip_by_agc(clip, pmin),
        optax.scale_by_rms(decay=beta2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        optax.ema(beta1, debias=True),
        optax.scale_by_learning_rate(schedule),
    )


def adam(lr: float, clip: float = 100.0) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam (eps 1e-5)."""
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr, eps=1e-5))


def make(name: str, lr: float, clip: float) -> optax.GradientTransformation:
    """`"adam"`: `adam(lr, clip)` (global-norm `clip`); `"laprop"`: `laprop(lr, clip=clip)` (AGC `clip`)."""
    if name == "adam":
        return adam(lr, clip)
    if name == "laprop":
        return laprop(lr, clip=clip)
    raise ValueError(f"optimizers.make: `name` must be one of {OPTIMIZERS}, got {name!r}.")
