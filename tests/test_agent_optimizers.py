"""LaProp with adaptive gradient clipping against a NumPy transcription of official DreamerV3's update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dreamer_actor.agent import optimizers


def numpy_laprop(params, grads_seq, *, lr, clip, pmin, eps, beta1, beta2, warmup):
    """The update as official DreamerV3's `_make_opt` chains it (clip_by_agc, scale_by_rms, scale_by_momentum,
    a linear warm-up from 0), one tensor at a time in float64."""
    params = {k: np.array(v, np.float64) for k, v in params.items()}
    nu = {k: np.zeros_like(v) for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in params.items()}
    out = []
    for t, grads in enumerate(grads_seq, start=1):
        rate = lr * min(1.0, (t - 1) / warmup) if warmup else lr  # optax schedules read the count before the step
        for k in params:
            g = np.array(grads[k], np.float64)
            upper = clip * max(pmin, np.linalg.norm(params[k].ravel()))
            g = g / max(1.0, np.linalg.norm(g.ravel()) / upper)
            nu[k] = beta2 * nu[k] + (1 - beta2) * g * g
            u = g / (np.sqrt(nu[k] / (1 - beta2**t)) + eps)
            mu[k] = beta1 * mu[k] + (1 - beta1) * u
            params[k] = params[k] - rate * mu[k] / (1 - beta1**t)
        out.append({k: v.copy() for k, v in params.items()})
    return out


@pytest.mark.parametrize("warmup", [0, 3])
def test_laprop_matches_a_numpy_transcription(warmup):
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(5, 4)), "b": rng.normal(size=(4,)) * 1e-4, "s": np.zeros(3)}
    # Gradients of several scales: some clipped by AGC (large vs |param|), some not, one tensor at pmin.
    grads_seq = [
        {k: rng.normal(size=v.shape) * scale for k, v in params.items()} for scale in (3.0, 0.01, 0.5, 1.0, 2.0)
    ]
    settings = dict(lr=1e-2, clip=0.3, pmin=1e-3, eps=1e-20, beta1=0.9, beta2=0.999, warmup=warmup)
    want = numpy_laprop(params, grads_seq, **settings)

    settings.pop("lr")
    opt = optimizers.laprop(1e-2, **settings)
    p = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    state = opt.init(p)
    update = jax.jit(opt.update)
    for t, grads in enumerate(grads_seq):
        g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads)
        updates, state = update(g, state, p)
        p = optax.apply_updates(p, updates)
        for k in params:
            # float32 params of order 1: a few ulps (1.2e-7) of absolute error build up over the steps.
            np.testing.assert_allclose(np.asarray(p[k]), want[t][k], rtol=2e-5, atol=5e-7, err_msg=f"{k} step {t}")
    # AGC really clipped something: the same steps without it end elsewhere.
    unclipped = numpy_laprop(params, grads_seq, **{**settings, "lr": 1e-2, "clip": 1e9})
    assert not np.allclose(want[-1]["b"], unclipped[-1]["b"])


def test_clip_by_agc_against_its_formula():
    params = {"a": jnp.array([3.0, 4.0]), "z": jnp.zeros(2)}
    grads = {"a": jnp.array([30.0, 40.0]), "z": jnp.array([1.0, 0.0])}
    updates, _ = optimizers.clip_by_agc(0.3, 1e-3).update(grads, optimizers.clip_by_agc().init(params), params)
    np.testing.assert_allclose(updates["a"], np.array([30.0, 40.0]) * (0.3 * 5.0 / 50.0), rtol=1e-6)
    np.testing.assert_allclose(updates["z"], np.array([0.3e-3, 0.0]), rtol=1e-6)  # |p| = 0: pmin bounds it
    small = {"a": jnp.array([0.03, 0.04]), "z": jnp.array([1e-5, 0.0])}
    updates, _ = optimizers.clip_by_agc().update(small, (), params)
    np.testing.assert_array_equal(updates["a"], small["a"])  # under the bound: unchanged
    with pytest.raises(ValueError, match="clip_by_agc: the update needs `params`"):
        optimizers.clip_by_agc().update(grads, ())


def test_make_names_the_choices():
    with pytest.raises(ValueError, match=r"one of \('adam', 'laprop'\)"):
        optimizers.make("sgd", 1e-3, 1.0)
