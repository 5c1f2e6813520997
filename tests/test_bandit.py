"""Learning sanity: REINFORCE with `actor_loss` solves continuous bandits.

Reward `r(a) = -|a - a*|^2` with the optimum `a*` inside asymmetric bounds. Each step draws
a batch of actions, uses `r - mean(r)` as the advantage (a batch baseline for variance
reduction) and takes an adam step on `actor_loss`. Training runs in one jitted
`lax.scan`. Fixed seeds; tolerances stated per assertion.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dreamer_actor as da

pytestmark = pytest.mark.slow

BATCH, STEPS = 256, 500


def _reward(action, target):
    return -jnp.sum(jnp.square(action - jnp.broadcast_to(target, action.shape)), axis=-1)


def _train_free_params(config, target, entropy_coef, seed=0):
    """Learnable pre-squash mean and log-std (no network)."""
    a_dim = config.action_dim
    params = {"mean": jnp.zeros(a_dim), "log_std": jnp.zeros(a_dim)}
    opt = optax.adam(0.05)

    def loss_fn(p, key):
        m = jnp.broadcast_to(p["mean"], (BATCH, a_dim))
        s = jnp.broadcast_to(p["log_std"], (BATCH, a_dim))
        action, u = da.sample_action(key, m, s, config)
        lp = da.log_prob_with_tanh_correction(m, s, config, raw_sample=u)
        ent = da.entropy_estimate(m, s, config, raw_sample=u)
        r = _reward(action, target)
        return da.actor_loss(lp, ent, r - jnp.mean(r), entropy_coef=entropy_coef)[0]

    def step(carry, key):
        p, state = carry
        grads = jax.grad(loss_fn)(p, key)
        updates, state = opt.update(grads, state)
        return (optax.apply_updates(p, updates), state), None

    @jax.jit
    def train(p, key):
        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(key, STEPS))
        return p

    return params, train(params, jax.random.key(seed))


def _entropy(config, p):
    return float(da.entropy_estimate(p["mean"], p["log_std"], config, key=jax.random.key(99), num_samples=4096))


def test_one_dim_bandit_converges_to_the_interior_optimum():
    config = da.ActorConfig.create(low=-2.0, high=3.0, action_dim=1)
    target = jnp.array([1.2])
    _, p = _train_free_params(config, target, entropy_coef=0.0)
    mode = da.tanh_normal.mode_action(p["mean"], config)
    # Within 0.05 of a* = 1.2 on a range of width 5 (1%).
    np.testing.assert_allclose(mode, target, atol=0.05)
    # Sampled actions concentrate there too: mean squared distance < 0.01 (std < 0.1).
    actions, _ = da.sample_action(
        jax.random.key(1), jnp.broadcast_to(p["mean"], (4096, 1)), jnp.broadcast_to(p["log_std"], (4096, 1)), config
    )
    assert float(jnp.mean(jnp.square(actions - 1.2))) < 0.01


def test_entropy_coefficient_controls_the_entropy():
    config = da.ActorConfig.create(low=-2.0, high=3.0, action_dim=1)
    target = jnp.array([1.2])
    init, p_greedy = _train_free_params(config, target, entropy_coef=0.0)
    _, p_explore = _train_free_params(config, target, entropy_coef=5.0)
    h0, h_greedy, h_explore = _entropy(config, init), _entropy(config, p_greedy), _entropy(config, p_explore)
    # Uniform on [-2, 3] has entropy log 5 = 1.61, the maximum; the initial policy (u ~ N(0, 1)) has 1.58.
    assert h_greedy < h0 - 2.0, (h0, h_greedy)  # falls by more than 2 nats without a bonus
    assert h_explore > h0 - 0.2 and h_explore > 1.0, (h0, h_explore)  # stays high with beta = 5
    assert h_explore <= np.log(5.0) + 0.05  # and never exceeds the uniform's


def test_three_dim_bandit_with_the_actor_network_and_act():
    low, high = np.array([-2.0, 0.0, -1.0]), np.array([3.0, 1.0, 5.0])
    target = jnp.array([1.2, 0.7, -0.5])
    config = da.ActorConfig.create(low=low, high=high, layers=1, units=16)
    model = da.Actor.from_config(config)
    h, z = jnp.ones((BATCH, 4)), jnp.ones((BATCH, 2))  # a constant latent state
    params = model.init(jax.random.key(0), h, z)
    opt = optax.adam(0.01)

    def loss_fn(p, key):
        out = da.act(p, config, h, z, key, training=True)
        r = _reward(out.action, target)
        return da.actor_loss(out.log_prob, out.entropy, r - jnp.mean(r), entropy_coef=0.0)[0]

    def step(carry, key):
        p, state = carry
        updates, state = opt.update(jax.grad(loss_fn)(p, key), state)
        return (optax.apply_updates(p, updates), state), None

    @jax.jit
    def train(p, key):
        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(key, STEPS))
        return p

    p = train(params, jax.random.key(1))
    mode = da.act(p, config, h[:1], z[:1], None, training=False, deterministic=True)[0]
    # Within 0.1 of the optimum in every dimension (ranges 5, 1, 6).
    np.testing.assert_allclose(mode, target, atol=0.1)
