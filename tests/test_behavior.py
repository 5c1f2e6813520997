"""`agent.behavior`'s shared pieces against closed forms: the critic's objective and the slow critic's EMA."""

import jax
import jax.numpy as jnp
import numpy as np

from dreamer_actor.agent import behavior


def test_critic_loss_is_the_weighted_regression_to_stopped_targets_plus_the_slow_pull():
    rng = np.random.default_rng(0)
    pred, returns, slow, weights = (rng.normal(size=(5, 7)) for _ in range(4))
    weights = np.abs(weights)
    slow_reg = 0.7

    def loss(pred, returns, slow):
        per_step = lambda target: jnp.square(pred - target)
        return behavior.critic_loss(per_step, returns, weights, slow_values=slow, slow_reg=slow_reg)

    args = tuple(jnp.asarray(x, jnp.float32) for x in (pred, returns, slow))
    value, (g_pred, g_returns, g_slow) = jax.value_and_grad(loss, argnums=(0, 1, 2))(*args)
    want = np.mean(weights * ((pred - returns) ** 2 + slow_reg * (pred - slow) ** 2))
    np.testing.assert_allclose(float(value), want, rtol=1e-5)
    # d/dpred of the mean: 2 w ((p - R) + slow_reg (p - v)) / n; the targets get no gradient.
    want_grad = 2 * weights * ((pred - returns) + slow_reg * (pred - slow)) / pred.size
    np.testing.assert_allclose(np.asarray(g_pred), want_grad, rtol=1e-4, atol=1e-7)
    assert not np.any(np.asarray(g_returns)) and not np.any(np.asarray(g_slow))
    # Without slow values there is no pull, whatever slow_reg says.
    no_slow = behavior.critic_loss(lambda t: jnp.square(args[0] - t), args[1], weights, slow_reg=slow_reg)
    np.testing.assert_allclose(float(no_slow), np.mean(weights * (pred - returns) ** 2), rtol=1e-5)


def test_slow_update_is_the_ema_leaf_by_leaf():
    slow = {"a": jnp.arange(3.0), "b": (jnp.ones((2, 2)),)}
    online = {"a": jnp.full(3, 10.0), "b": (jnp.zeros((2, 2)),)}
    new = behavior.slow_update(slow, online, 0.02)
    np.testing.assert_allclose(np.asarray(new["a"]), 0.98 * np.arange(3.0) + 0.2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new["b"][0]), np.full((2, 2), 0.98), rtol=1e-6)
