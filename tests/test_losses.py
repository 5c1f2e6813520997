"""`actor_loss` against its closed form, value and gradient.

    loss = -mean(w * (sg(adv) * log_prob + beta * entropy))

so d loss / d log_prob = -sg(adv) * w / N, d loss / d entropy = -beta * w / N, and the
gradients w.r.t. the advantage and the weights are exactly zero.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dreamer_actor as da


def _inputs(shape=(5, 4), seed=0):
    k = jax.random.split(jax.random.key(seed), 4)
    log_prob = jax.random.normal(k[0], shape) - 1.0
    entropy = jax.random.normal(k[1], shape) + 0.5
    advantage = jax.random.normal(k[2], shape) * 2.0
    weights = jax.random.uniform(k[3], shape)
    return log_prob, entropy, advantage, weights


def test_loss_value_and_metrics_match_numpy():
    lp, ent, adv, w = _inputs()
    beta = 0.3
    loss, metrics = da.actor_loss(lp, ent, adv, entropy_coef=beta, weights=w)
    lp64, ent64, adv64, w64 = (np.asarray(x, np.float64) for x in (lp, ent, adv, w))
    ref = -np.mean(w64 * (adv64 * lp64 + beta * ent64))
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], ref, rtol=1e-6)
    np.testing.assert_allclose(metrics["entropy"], ent64.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["log_prob"], lp64.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["advantage_mean"], adv64.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["advantage_std"], adv64.std(), rtol=1e-5)
    np.testing.assert_allclose(metrics["advantage_abs_max"], np.abs(adv64).max(), rtol=1e-6)
    # weights=None means ones.
    loss1, _ = da.actor_loss(lp, ent, adv, entropy_coef=beta)
    np.testing.assert_allclose(loss1, -np.mean(adv64 * lp64 + beta * ent64), rtol=1e-6)


def test_gradients_are_the_closed_form_and_zero_for_advantage_and_weights():
    lp, ent, adv, w = _inputs()
    n = lp.size
    beta = 0.3
    g_lp, g_ent, g_adv, g_w = jax.grad(
        lambda *a: da.actor_loss(a[0], a[1], a[2], entropy_coef=beta, weights=a[3])[0], argnums=(0, 1, 2, 3)
    )(lp, ent, adv, w)
    np.testing.assert_allclose(g_lp, -np.asarray(adv) * np.asarray(w) / n, rtol=1e-6)
    np.testing.assert_allclose(g_ent, -beta * np.asarray(w) / n, rtol=1e-6)
    np.testing.assert_array_equal(g_adv, 0.0)
    np.testing.assert_array_equal(g_w, 0.0)
    # The metrics carry no gradient either.
    g_metrics = jax.grad(lambda a: sum(da.actor_loss(lp, ent, a)[1].values()))(adv)
    np.testing.assert_array_equal(g_metrics, 0.0)


def test_entropy_coef_can_be_traced_without_retracing():
    lp, ent, adv, _ = _inputs()
    traces = []

    @jax.jit
    def f(beta):
        traces.append(1)
        return da.actor_loss(lp, ent, adv, entropy_coef=beta)[0]

    for beta in (0.0, 0.1, 1.0):
        ref = -np.mean(np.asarray(adv, np.float64) * np.asarray(lp) + beta * np.asarray(ent))
        np.testing.assert_allclose(f(jnp.float32(beta)), ref, rtol=1e-5)
    assert len(traces) == 1
    # Larger beta rewards entropy: d loss / d beta = -mean(entropy).
    np.testing.assert_allclose(jax.grad(f)(jnp.float32(0.5)), -np.mean(np.asarray(ent)), rtol=1e-5)


def test_bfloat16_inputs_give_float32_loss():
    lp, ent, adv, w = (x.astype(jnp.bfloat16) for x in _inputs())
    loss, metrics = da.actor_loss(lp, ent, adv, weights=w)
    assert loss.dtype == jnp.float32 and metrics["entropy"].dtype == jnp.float32
    ref = -np.mean(
        np.asarray(w, np.float64) * (np.asarray(adv, np.float64) * np.asarray(lp, np.float64) + 3e-4 * np.asarray(ent))
    )
    np.testing.assert_allclose(loss, ref, rtol=1e-5)


class LossVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_actor_loss(self):
        lp, ent, adv, w = _inputs((3, 7), seed=1)
        loss, metrics = self.variant(lambda a, b, c, d: da.actor_loss(a, b, c, entropy_coef=0.05, weights=d))(
            lp, ent, adv, w
        )
        ref = -np.mean(np.asarray(w, np.float64) * (np.asarray(adv) * np.asarray(lp) + 0.05 * np.asarray(ent)))
        np.testing.assert_allclose(loss, ref, rtol=1e-6)
        assert set(metrics) == {"loss", "entropy", "log_prob", "advantage_mean", "advantage_std", "advantage_abs_max"}


def test_vmap_over_a_leading_axis_matches_per_slice_calls():
    lp, ent, adv, w = _inputs((3, 5, 4), seed=2)
    losses, _ = jax.vmap(lambda *a: da.actor_loss(a[0], a[1], a[2], weights=a[3]))(lp, ent, adv, w)
    for i in range(3):
        np.testing.assert_allclose(losses[i], da.actor_loss(lp[i], ent[i], adv[i], weights=w[i])[0], rtol=1e-6)


def test_mismatched_shapes_and_bad_dtypes_raise():
    lp, ent, adv, w = _inputs()
    with pytest.raises(ValueError, match=r"actor_loss: all inputs must have the same shape"):
        da.actor_loss(lp, ent, adv[:, :1])
    with pytest.raises(ValueError, match=r"actor_loss: all inputs must have the same shape.*weights"):
        da.actor_loss(lp, ent, adv, weights=w[0])
    # The classic (B,) vs (B, 1) mistake is rejected, not broadcast to (B, B).
    with pytest.raises(ValueError, match=r"same shape"):
        da.actor_loss(lp[:, 0], ent[:, 0], adv[:, :1])
    with pytest.raises(ValueError, match=r"`advantage` must be floating point"):
        da.actor_loss(lp, ent, jnp.ones(lp.shape, jnp.int32))
    with pytest.raises(ValueError, match=r"`log_prob` must be floating point"):
        da.actor_loss(jnp.ones(lp.shape, jnp.int32), ent, adv)
    with pytest.raises(ValueError, match=r"`entropy_coef` must be a scalar"):
        da.actor_loss(lp, ent, adv, entropy_coef=jnp.ones(2))
