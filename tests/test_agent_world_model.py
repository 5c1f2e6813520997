"""The agent's world model: RSSM shapes and resets, balanced KL with free bits, unimix, two-hot."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer_actor.agent import world_model as wm

CONFIG = wm.WorldModelConfig(obs_dim=3, action_dim=2, deter=16, stoch=4, classes=5, units=16, layers=1)


@pytest.fixture(scope="module")
def params():
    return wm.init_world_model(jax.random.key(0), CONFIG)


def _batch(key, batch, length):
    k1, k2 = jax.random.split(key)
    return {
        "obs": jax.random.normal(k1, (batch, length, CONFIG.obs_dim)),
        "action": jax.random.uniform(k2, (batch, length, CONFIG.action_dim), minval=-1.0, maxval=1.0),
        "reward": jnp.linspace(-3.0, 3.0, batch * length).reshape(batch, length),
        "is_first": jnp.zeros((batch, length), bool).at[:, 0].set(True),
        "terminated": jnp.zeros((batch, length), bool).at[:, -1].set(True),
    }


MODEL = wm.WorldModel(CONFIG)
observe = jax.jit(lambda p, obs, action, first, key: wm.observe(MODEL, p, obs, action, first, key))


def test_rssm_shapes(params):
    model = MODEL
    batch = _batch(jax.random.key(1), 3, 7)
    latents, post, prior = observe(params, batch["obs"], batch["action"], batch["is_first"], jax.random.key(2))
    s, c = CONFIG.stoch, CONFIG.classes
    assert latents.h.shape == (3, 7, CONFIG.deter)
    assert latents.z.shape == post.shape == prior.shape == (3, 7, s, c)
    np.testing.assert_allclose(np.sum(np.asarray(post), -1), 1.0, rtol=1e-5)
    z = np.asarray(latents.z)
    assert set(np.unique(z).tolist()) <= {0.0, 1.0} and np.all(z.sum(-1) == 1.0)  # one-hot samples
    dec, rew, cont = model.apply(params, latents.h, latents.z, method=wm.WorldModel.heads)
    assert dec.shape == (3, 7, CONFIG.obs_dim) and rew.shape == (3, 7, wm.NUM_BINS) and cont.shape == (3, 7)
    flat = jax.tree.map(lambda x: x.reshape(21, *x.shape[2:]), latents)
    nxt = wm.imagine_step(model, params, flat, jnp.zeros((21, CONFIG.action_dim)), jax.random.key(3))
    assert nxt.h.shape == (21, CONFIG.deter) and nxt.z.shape == (21, s, c)
    loss, (_, metrics) = jax.jit(lambda p, b: wm.world_model_loss(model, p, b, jax.random.key(4)))(params, batch)
    assert loss.shape == () and np.isfinite(float(loss))
    assert set(metrics) == {"wm_loss", "dec_loss", "rew_loss", "cont_loss", "kl"}


@pytest.mark.parametrize("jit", [False, True])
def test_terminal_weight_scales_only_terminal_steps(params, jit):
    # The continue loss vs a NumPy log-loss on the model's own logits: terminal steps (the last of
    # each sequence here) count `terminal_weight` times, every other step once.
    batch = _batch(jax.random.key(5), 3, 7)
    latents, _, _ = observe(params, batch["obs"], batch["action"], batch["is_first"], jax.random.key(6))
    _, _, logit = MODEL.apply(params, latents.h, latents.z, method=wm.WorldModel.heads)
    p_cont = 1.0 / (1.0 + np.exp(-np.asarray(logit, np.float64)))
    term = np.asarray(batch["terminated"])
    log_loss = np.where(term, -np.log1p(-p_cont), -np.log(p_cont))
    for weight in (1.0, 10.0):
        model = wm.WorldModel(dataclasses.replace(CONFIG, terminal_weight=weight))
        loss_fn = lambda p, b: wm.world_model_loss(model, p, b, jax.random.key(6))  # noqa: B023
        _, (_, metrics) = (jax.jit(loss_fn) if jit else loss_fn)(params, batch)
        expected = np.mean(np.where(term, weight, 1.0) * log_loss)
        np.testing.assert_allclose(float(metrics["cont_loss"]), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="terminal_weight"):
        dataclasses.replace(CONFIG, terminal_weight=0.0)


def test_straight_through_gradient():
    probs = jax.nn.softmax(jnp.array([[0.3, -1.0, 2.0]]), -1)
    grad = jax.grad(lambda p: jnp.sum(wm.sample_onehot(jax.random.key(0), p) * jnp.array([[1.0, 2.0, 3.0]])))(probs)
    np.testing.assert_allclose(np.asarray(grad), [[1.0, 2.0, 3.0]])


def test_is_first_resets_mid_sequence(params):
    """Two sequences with different histories and a reset at t = 3: identical h_t and posteriors from t = 3 on
    (given the same observations there), different before; without the reset they differ at t = 3."""
    a, b = _batch(jax.random.key(5), 1, 6), _batch(jax.random.key(6), 1, 6)
    for name in ("obs", "action"):
        b[name] = b[name].at[:, 3:].set(a[name][:, 3:])  # same observations and actions from t = 3 on
    b["action"] = b["action"].at[:, 3].set(-a["action"][:, 3])  # a different a_{2}, which the reset must zero
    first = jnp.zeros((1, 6), bool).at[:, 0].set(True).at[:, 3].set(True)

    def run(batch, is_first):
        latents, post, _ = observe(params, batch["obs"], batch["action"], is_first, jax.random.key(7))
        return np.asarray(latents.h[0]), np.asarray(post[0])

    (ha, pa), (hb, pb) = run(a, first), run(b, first)
    assert np.abs(ha[:3] - hb[:3]).max() > 1e-3
    np.testing.assert_allclose(ha[3], hb[3], atol=1e-6)
    np.testing.assert_allclose(pa[3], pb[3], atol=1e-6)
    # h_3 after a reset is the state of a fresh episode: GRU(0, 0, a = 0).
    fresh = {k: v[:, 3:] for k, v in a.items()}
    h_fresh, p_fresh = run(fresh, jnp.zeros((1, 3), bool).at[:, 0].set(True))
    np.testing.assert_allclose(ha[3], h_fresh[0], atol=1e-6)
    np.testing.assert_allclose(pa[3], p_fresh[0], atol=1e-6)
    (ha2, _), (hb2, _) = run(a, first.at[:, 3].set(False)), run(b, first.at[:, 3].set(False))
    assert np.abs(ha2[3] - hb2[3]).max() > 1e-3


def _np_kl(p, q):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return np.sum(p * (np.log(p) - np.log(q)), axis=(-2, -1))


@pytest.mark.parametrize("free_nats", [0.0, 1.0, 3.0])
def test_kl_free_bits_vs_numpy(free_nats):
    k1, k2 = jax.random.split(jax.random.key(8))
    prior_logits = jax.random.normal(k2, (6, 4, 5))
    spread = jnp.linspace(0.0, 3.0, 6).reshape(6, 1, 1) * jnp.ones((1, 4, 5))  # KL from ~0 up to several nats
    post = wm.unimix_probs(prior_logits + spread * jax.random.normal(k1, (6, 4, 5)), 0.01)
    prior = wm.unimix_probs(prior_logits, 0.01)
    dyn, rep, kl = wm.kl_losses(post, prior, free_nats)
    expected = _np_kl(post, prior)
    np.testing.assert_allclose(np.asarray(kl), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dyn), np.maximum(expected, free_nats), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rep), np.maximum(expected, free_nats), rtol=1e-4, atol=1e-6)
    if free_nats == 1.0:
        assert (expected < 1.0).any() and (expected > 1.0).any()  # both sides of the free bits are exercised


def test_kl_balancing_gradients():
    """dyn trains only the prior, rep only the posterior; below the free bits neither gets a gradient."""
    k1, k2 = jax.random.split(jax.random.key(9))
    post_logits, prior_logits = 3.0 * jax.random.normal(k1, (2, 4, 5)), jax.random.normal(k2, (2, 4, 5))

    def term(index, free):
        def f(pl, ql):
            return jnp.sum(wm.kl_losses(wm.unimix_probs(pl, 0.01), wm.unimix_probs(ql, 0.01), free)[index])

        return jax.grad(f, argnums=(0, 1))(post_logits, prior_logits)

    d_post, d_prior = term(0, 0.0)
    assert np.all(np.asarray(d_post) == 0.0) and np.abs(np.asarray(d_prior)).max() > 0
    r_post, r_prior = term(1, 0.0)
    assert np.all(np.asarray(r_prior) == 0.0) and np.abs(np.asarray(r_post)).max() > 0
    for index in (0, 1):
        assert all(np.all(np.asarray(g) == 0.0) for g in term(index, 1e3))


def test_unimix_floor(params):
    logits = jnp.array([[[1e4, -1e4, 0.0, 0.0, -3e4]]])
    probs = np.asarray(wm.unimix_probs(logits, 0.01))
    assert probs.min() >= 0.01 / 5 * (1 - 1e-5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    # The model's own prior and posterior, on extreme inputs.
    model = wm.WorldModel(CONFIG)
    h = 1e3 * jax.random.normal(jax.random.key(10), (8, CONFIG.deter))
    for probs in (
        model.apply(params, h, method=wm.WorldModel.prior),
        model.apply(params, h, 1e3 * jnp.ones((8, CONFIG.units)), method=wm.WorldModel.posterior),
    ):
        assert float(jnp.min(probs)) >= 0.01 / CONFIG.classes * (1 - 1e-5)


def test_twohot_bins():
    bins = np.asarray(wm.twohot_bins())
    assert bins.shape == (255,) and bins[127] == 0.0 and np.all(np.diff(bins) > 0)
    np.testing.assert_array_equal(bins, -bins[::-1])
    np.testing.assert_allclose(bins, np.sign(np.linspace(-20, 20, 255)) * np.expm1(np.abs(np.linspace(-20, 20, 255))),
                               rtol=1e-5)  # fmt: skip


VALUES = [0.0, 1e-4, -0.3, 0.5, 1.0, -7.25, 16.0, 123.456, -2500.0, 1e5, -3e7, 4.8e8]


def test_twohot_round_trip_and_expectation():
    bins = wm.twohot_bins()
    x = jnp.array([*VALUES, float(bins[3]), float(bins[200])])
    enc = wm.twohot_encode(x, bins)
    e = np.asarray(enc)
    np.testing.assert_allclose(e.sum(-1), 1.0, rtol=1e-6)
    assert np.all((e > 0).sum(-1) <= 2) and np.all(e >= 0)
    expectation = np.sum(e.astype(np.float64) * np.asarray(bins, np.float64), -1)
    np.testing.assert_allclose(expectation, np.asarray(x), rtol=1e-5, atol=1e-6)
    decoded = wm.twohot_mean(jnp.log(enc), bins)  # decode: the expectation of softmax(log(encoding))
    np.testing.assert_allclose(np.asarray(decoded), np.asarray(x), rtol=1e-4, atol=1e-5)
    # Out of range: clipped to the end bins.
    np.testing.assert_allclose(np.asarray(wm.twohot_encode(jnp.array([1e12, -1e12]), bins))[:, [-1, 0]], np.eye(2))
    # Uniform logits (zero-initialized head) decode to exactly 0.
    assert float(wm.twohot_mean(jnp.zeros((255,)), bins)) == 0.0


@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0, 50.0])
def test_twohot_mean_against_float64(scale):
    """Random logits: within 1e-6 of `sum(p * |bins|)` (float32 rounding of the softmax) of a float64
    softmax expectation; the all-zero rows are exactly 0 however the sum is ordered."""
    bins = wm.twohot_bins()
    logits = jax.random.normal(jax.random.key(3), (500, 255)) * scale
    logits = logits.at[:5].set(0.0)
    lg = np.asarray(logits, np.float64)
    p = np.exp(lg - lg.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    b = np.asarray(bins, np.float64)
    got = np.asarray(wm.twohot_mean(logits, bins), np.float64)
    np.testing.assert_array_less(np.abs(got - p @ b), 1e-6 * (p @ np.abs(b)) + 1e-30)
    assert np.all(got[:5] == 0.0)
    summed_backwards = jax.jit(lambda x: wm.twohot_mean(x[..., ::-1][..., ::-1], bins))(logits)
    assert np.all(np.asarray(summed_backwards)[:5] == 0.0)


@pytest.mark.parametrize("target", [0.0, 5.0, -1e8, 4.85e8, 1e12, -3e38, float("inf")])
def test_twohot_loss_gradient_finite(target):
    bins = wm.twohot_bins()
    logits = jax.random.normal(jax.random.key(11), (2, 255)) * 5.0
    targets = jnp.full((2,), target)
    loss, grad = jax.value_and_grad(lambda lg: jnp.sum(wm.twohot_loss(lg, targets, bins)))(logits)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda t: jnp.sum(wm.twohot_loss(logits, t, bins)))(targets))))
