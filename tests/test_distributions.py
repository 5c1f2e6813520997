"""The three action distributions behind one API, against independent references.

References: numpy float64 closed forms, `distrax`, `scipy.integrate.quad`, chi-square
bounds on sample frequencies (fixed seeds), and finite differences of `probs` for the
straight-through gradient.
"""

import dataclasses
import math
import types
import typing

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import dreamer_actor as da

KINDS = ("tanh_normal", "bounded_normal", "categorical")
LOW, HIGH = np.array([-2.0, 0.0, -1.0]), np.array([3.0, 0.5, 1.0])


def _config(kind, **kw):
    kw = {"layers": 1, "units": 16, **kw}
    if kind == "categorical":
        return da.ActorConfig.create(distribution=kind, action_dim=kw.pop("action_dim", 4), **kw)
    return da.ActorConfig.create(low=LOW, high=HIGH, distribution=kind, **kw)


def _np_bounded_params(raw_mean, raw_std, min_std, max_std):
    raw_mean, raw_std = np.asarray(raw_mean, np.float64), np.asarray(raw_std, np.float64)
    return np.tanh(raw_mean), (max_std - min_std) / (1.0 + np.exp(-(raw_std + 2.0))) + min_std


def _np_mixed_probs(logits, unimix):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (1.0 - unimix) * e / e.sum(-1, keepdims=True) + unimix / logits.shape[-1]


# ----------------------------------------------------------------------- bounded normal


def test_bounded_normal_params_are_dreamerv3_tanh_mean_and_sigmoid_std():
    cfg = _config("bounded_normal", min_std=0.2, max_std=1.5)
    raw = jax.random.normal(jax.random.key(0), (2, 5, 3)) * 4.0
    raw_std = jax.random.normal(jax.random.key(1), (2, 5, 3)) * 4.0
    mean, std = da.policy_head(jnp.concatenate([raw, raw_std], -1), cfg)
    ref_mean, ref_std = _np_bounded_params(raw, raw_std, 0.2, 1.5)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std, ref_std, rtol=1e-6)
    assert float(std.min()) > 0.2 and float(std.max()) < 1.5
    # raw_std = 0 gives (max - min) * sigmoid(2) + min (DreamerV3's initial std).
    _, std0 = da.policy_head(jnp.zeros(6), cfg)
    np.testing.assert_allclose(std0, 1.3 / (1 + math.exp(-2.0)) + 0.2, rtol=1e-6)


def test_bounded_normal_log_prob_matches_distrax_and_numpy():
    cfg = _config("bounded_normal")
    mean = jnp.array([[0.3, -0.5, 0.9], [0.0, 0.1, -0.2]])
    std = jnp.array([[0.2, 0.5, 1.0], [0.15, 0.9, 0.3]])
    x = jnp.array([[0.1, -0.7, 0.95], [0.4, -0.3, 0.0]])  # interior: clip is a no-op
    scale, bias = (HIGH - LOW) / 2, (HIGH + LOW) / 2
    lp_raw = da.policy_log_prob((mean, std), cfg, raw_sample=x)
    action = np.asarray(x, np.float64) * scale + bias
    lp_act = da.policy_log_prob((mean, std), cfg, action=jnp.asarray(action, jnp.float32))
    # numpy closed form, float64
    m, s, xx = (np.asarray(v, np.float64) for v in (mean, std, x))
    ref = np.sum(-0.5 * ((xx - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi) - np.log(scale), -1)
    np.testing.assert_allclose(lp_raw, ref, rtol=1e-5)
    np.testing.assert_allclose(lp_act, ref, rtol=1e-5)
    # distrax: Normal in [-1, 1] units, and the affine-transformed one in env units
    normal = distrax.Normal(mean, std)
    np.testing.assert_allclose(lp_raw, normal.log_prob(x).sum(-1) - np.log(scale).sum(), rtol=1e-5)
    env = distrax.Transformed(
        distrax.MultivariateNormalDiag(mean, std),
        distrax.Block(
            distrax.ScalarAffine(shift=jnp.asarray(bias, jnp.float32), scale=jnp.asarray(scale, jnp.float32)), 1
        ),
    )
    np.testing.assert_allclose(lp_act, env.log_prob(jnp.asarray(action, jnp.float32)), rtol=1e-5)


def test_bounded_normal_entropy_closed_form_and_quadrature():
    cfg = _config("bounded_normal")
    mean = jnp.array([0.3, -0.8, 0.0])
    std = jnp.array([0.12, 0.6, 0.95])
    ent = float(da.policy_entropy((mean, std), cfg))
    scale, bias = (HIGH - LOW) / 2, (HIGH + LOW) / 2
    closed = float(np.sum(0.5 * np.log(2 * np.pi * np.e) + np.log(np.asarray(std, np.float64)) + np.log(scale)))
    assert ent == pytest.approx(closed, rel=1e-6)
    # -int p log p of the env-unit density y = x * scale + bias, one dim at a time.
    total = 0.0
    for m, s, c, b in zip(np.asarray(mean, np.float64), np.asarray(std, np.float64), scale, bias, strict=True):
        mu, sd = m * c + b, s * c

        def integrand(y, mu=mu, sd=sd):
            logp = -0.5 * ((y - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)
            return -np.exp(logp) * logp

        val, _ = integrate.quad(integrand, mu - 12 * sd, mu + 12 * sd, limit=200)
        total += val
    assert ent == pytest.approx(total, abs=1e-5)


def test_bounded_normal_sample_clips_to_bounds_and_has_the_right_moments():
    cfg = _config("bounded_normal")
    n = 20_000
    mean = jnp.broadcast_to(jnp.array([0.3, -0.9, 0.0]), (n, 3))
    std = jnp.broadcast_to(jnp.array([0.2, 0.5, 0.05]), (n, 3))
    action, x = da.policy_sample(jax.random.key(0), (mean, std), cfg)
    x64 = np.asarray(x, np.float64)
    # 5-sigma bounds on the sample mean and std of N(mean, std) (fixed seed).
    se_mean = np.array([0.2, 0.5, 0.05]) / math.sqrt(n)
    assert np.all(np.abs(x64.mean(0) - [0.3, -0.9, 0.0]) < 5 * se_mean)
    assert np.all(np.abs(x64.std(0) / [0.2, 0.5, 0.05] - 1) < 5 / math.sqrt(2 * n))
    assert float(np.abs(x64).max()) > 1.0  # some samples really fall outside [-1, 1] ...
    scale, bias = (HIGH - LOW) / 2, (HIGH + LOW) / 2
    np.testing.assert_allclose(action, np.clip(x64, -1, 1) * scale + bias, rtol=1e-6, atol=1e-6)
    a = np.asarray(action)
    assert np.all((a >= LOW.astype(np.float32)) & (a <= HIGH.astype(np.float32)))  # ... clipped


def test_bounded_normal_mode_and_log_prob_of_a_clipped_action():
    cfg = _config("bounded_normal")
    raw_mean, raw_std = jnp.array([0.5, -30.0, 0.0]), jnp.zeros(3)
    mean, std = da.policy_head(jnp.concatenate([raw_mean, raw_std]), cfg)
    mode = da.policy_mode((mean, std), cfg)
    np.testing.assert_array_equal(da.policy_mode((mean, std), cfg), mode)
    scale, bias = (HIGH - LOW) / 2, (HIGH + LOW) / 2
    np.testing.assert_allclose(mode, np.tanh([0.5, -30.0, 0.0]) * scale + bias, rtol=1e-6, atol=1e-7)
    # An action at the bound: the Normal density there (finite; DreamerV3's approximation).
    at_bound = jnp.asarray(HIGH, jnp.float32)
    lp = da.policy_log_prob((mean, std), cfg, action=at_bound)
    ref = da.policy_log_prob((mean, std), cfg, raw_sample=jnp.ones(3))
    np.testing.assert_allclose(lp, ref, rtol=1e-6)


# -------------------------------------------------------------------------- categorical


def test_categorical_probs_log_probs_entropy_match_numpy():
    cfg = _config("categorical", action_dim=5, unimix=0.05)
    logits = jax.random.normal(jax.random.key(0), (3, 4, 5)) * 3.0
    ref = _np_mixed_probs(logits, 0.05)
    np.testing.assert_allclose(da.categorical.probs((logits,), cfg), ref, rtol=1e-5)
    np.testing.assert_allclose(da.categorical.log_probs((logits,), cfg), np.log(ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(da.policy_entropy((logits,), cfg), -np.sum(ref * np.log(ref), -1), rtol=1e-5)
    onehot = jax.nn.one_hot(jnp.array([[0, 1, 2, 4]] * 3), 5)
    ref_lp = np.log(np.take_along_axis(ref, np.array([[0, 1, 2, 4]] * 3)[..., None], -1))[..., 0]
    np.testing.assert_allclose(da.policy_log_prob((logits,), cfg, action=onehot), ref_lp, rtol=1e-5)
    # Integer indices give the same numbers.
    np.testing.assert_allclose(
        da.policy_log_prob((logits,), cfg, action=jnp.array([[0, 1, 2, 4]] * 3)), ref_lp, rtol=1e-5
    )
    # unimix = 0: a plain softmax.
    cfg0 = _config("categorical", action_dim=5, unimix=0.0)
    np.testing.assert_allclose(
        da.categorical.log_probs((logits,), cfg0), np.log(_np_mixed_probs(logits, 0.0)), rtol=1e-5
    )


@pytest.mark.parametrize("logits", [[1000.0, -1000.0], [1000.0, -1000.0, -1000.0, 0.0], [-1e30, 1e30, 0.0]])
def test_categorical_unimix_floor_holds_at_extreme_logits(logits):
    cfg = _config("categorical", action_dim=len(logits), unimix=0.01)
    logits = jnp.asarray(logits, jnp.float32)
    floor = np.float32(0.01 / len(logits))
    probs = da.categorical.probs((logits,), cfg)
    assert bool(jnp.all(probs >= floor)), (probs, floor)  # exact, no tolerance
    assert float(jnp.sum(probs)) == pytest.approx(1.0, abs=1e-6)
    log_probs = da.categorical.log_probs((logits,), cfg)
    assert bool(jnp.all(jnp.isfinite(log_probs)))
    np.testing.assert_allclose(jnp.exp(log_probs), probs, rtol=1e-5)
    assert float(jnp.min(log_probs)) == pytest.approx(math.log(0.01 / len(logits)), rel=1e-5)
    # Gradients of log-prob (of the least likely choice) and entropy are finite.
    worst = jnp.argmin(logits)

    def objective(z):
        return da.policy_log_prob((z,), cfg, action=jax.nn.one_hot(worst, len(logits))) + da.policy_entropy((z,), cfg)

    grad = jax.grad(objective)(logits)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_categorical_straight_through_forward_is_onehot_and_gradient_is_that_of_probs():
    cfg = _config("categorical", action_dim=6)
    logits = jax.random.normal(jax.random.key(0), (4, 6)) * 2.0
    weights = jax.random.normal(jax.random.key(1), (4, 6))
    key = jax.random.key(2)
    action, raw = da.policy_sample(key, (logits,), cfg, reparameterize=True)
    np.testing.assert_array_equal(action, raw)  # forward value is exactly one-hot
    assert set(np.unique(np.asarray(action)).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.asarray(action).sum(-1), 1.0)
    grad_st = jax.grad(lambda z: jnp.sum(weights * da.policy_sample(key, (z,), cfg, reparameterize=True)[0]))(logits)
    grad_probs = jax.grad(lambda z: jnp.sum(weights * da.categorical.probs((z,), cfg)))(logits)
    np.testing.assert_allclose(grad_st, grad_probs, rtol=1e-6, atol=1e-7)
    # ... and that of the numpy probabilities, by central finite differences (float64).
    w, z0, eps = np.asarray(weights, np.float64), np.asarray(logits, np.float64), 1e-6
    fd = np.zeros_like(z0)
    for idx in np.ndindex(*z0.shape):
        dz = np.zeros_like(z0)
        dz[idx] = eps
        f = lambda z: np.sum(w * _np_mixed_probs(z, 0.01))
        fd[idx] = (f(z0 + dz) - f(z0 - dz)) / (2 * eps)
    np.testing.assert_allclose(grad_st, fd, rtol=1e-4, atol=1e-6)
    # Without reparameterize the action carries no gradient (REINFORCE).
    grad_sg = jax.grad(lambda z: jnp.sum(weights * da.policy_sample(key, (z,), cfg)[0]))(logits)
    np.testing.assert_array_equal(grad_sg, 0.0)


def test_categorical_sample_frequencies_match_probs():
    cfg = _config("categorical", action_dim=5, unimix=0.1)
    logits = jnp.array([2.0, 0.0, -1.0, 1.0, -8.0])
    n = 20_000
    action, _ = da.policy_sample(jax.random.key(7), (jnp.broadcast_to(logits, (n, 5)),), cfg)
    counts = np.asarray(action, np.float64).sum(0)
    expected = n * _np_mixed_probs(logits, 0.1)
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    # Pearson's statistic is ~ chi2(4) under the null; p = 0.001 critical value (fixed seed).
    assert chi2 < stats.chi2.ppf(0.999, df=4), (counts, expected, chi2)
    # The floor matters: choice 4 (softmax ~ 3e-5) is drawn ~ unimix / 5 = 2% of the time.
    assert counts[4] > 0.015 * n


def test_categorical_mode_is_onehot_argmax():
    cfg = _config("categorical", action_dim=4)
    logits = jax.random.normal(jax.random.key(0), (3, 5, 4))
    mode = da.policy_mode((logits,), cfg)
    np.testing.assert_array_equal(mode, np.eye(4)[np.argmax(np.asarray(logits), -1)])


def test_categorical_out_of_range_indices_give_nan():
    cfg = _config("categorical", action_dim=3)
    lp = da.policy_log_prob((jnp.zeros((3, 3)),), cfg, action=jnp.array([0, 3, -1]))
    assert math.isfinite(float(lp[0])) and bool(jnp.all(jnp.isnan(lp[1:])))


def test_multi_discrete_heads_are_independent_categoricals():
    dims = (2, 4, 3)
    cfg = da.ActorConfig.create(distribution="categorical", action_dims=dims, unimix=0.03, layers=1, units=8)
    assert cfg.action_dim == 9
    logits = jax.random.normal(jax.random.key(0), (5, 9)) * 2.0
    segments = np.split(np.asarray(logits, np.float64), np.cumsum(dims)[:-1], axis=-1)
    refs = [_np_mixed_probs(seg, 0.03) for seg in segments]
    np.testing.assert_allclose(da.categorical.probs((logits,), cfg), np.concatenate(refs, -1), rtol=1e-5)
    ref_ent = sum(-np.sum(p * np.log(p), -1) for p in refs)
    np.testing.assert_allclose(da.policy_entropy((logits,), cfg), ref_ent, rtol=1e-5)
    index = np.array([[1, 3, 0], [0, 0, 2], [1, 2, 1], [0, 1, 0], [1, 0, 2]])
    ref_lp = sum(np.log(p[np.arange(5), index[:, h]]) for h, p in enumerate(refs))
    onehot = np.concatenate([np.eye(d)[index[:, h]] for h, d in enumerate(dims)], -1)
    np.testing.assert_allclose(
        da.policy_log_prob((logits,), cfg, action=jnp.asarray(onehot, jnp.float32)), ref_lp, rtol=1e-5
    )
    np.testing.assert_allclose(da.policy_log_prob((logits,), cfg, action=jnp.asarray(index)), ref_lp, rtol=1e-5)
    mode = np.asarray(da.policy_mode((logits,), cfg))
    ref_mode = np.concatenate([np.eye(d)[np.argmax(seg, -1)] for seg, d in zip(segments, dims, strict=True)], -1)
    np.testing.assert_array_equal(mode, ref_mode)
    # Samples: one choice per head, per-head frequencies match (chi-square, p = 0.001, fixed seed).
    n = 20_000
    action, _ = da.policy_sample(jax.random.key(3), (jnp.broadcast_to(logits[0], (n, 9)),), cfg)
    per_head = np.split(np.asarray(action, np.float64), np.cumsum(dims)[:-1], axis=-1)
    for h, (a, d) in enumerate(zip(per_head, dims, strict=True)):
        np.testing.assert_array_equal(a.sum(-1), 1.0)
        expected = n * refs[h][0]
        chi2 = float(np.sum((a.sum(0) - expected) ** 2 / expected))
        assert chi2 < stats.chi2.ppf(0.999, df=d - 1), (h, chi2)
    # Straight-through per head: gradient of probs.
    w = jax.random.normal(jax.random.key(4), (5, 9))
    g_st = jax.grad(lambda z: jnp.sum(w * da.policy_sample(jax.random.key(5), (z,), cfg, reparameterize=True)[0]))(
        logits
    )
    g_p = jax.grad(lambda z: jnp.sum(w * da.categorical.probs((z,), cfg)))(logits)
    np.testing.assert_allclose(g_st, g_p, rtol=1e-6, atol=1e-7)
    # Extreme logits: every head keeps its floor; log-prob, entropy and their grads are finite.
    extreme = jnp.array([1000.0, -1000.0, -1000.0, 1000.0, 0.0, -1000.0, 1e4, -1e4, 0.0])
    probs = da.categorical.probs((extreme,), cfg)
    floors = np.concatenate([np.full(d, 0.03 / d, np.float32) for d in dims])
    assert bool(jnp.all(probs >= floors))
    g = jax.grad(lambda z: da.policy_log_prob((z,), cfg, action=jnp.array([1, 1, 1])) + da.policy_entropy((z,), cfg))(
        extreme
    )
    assert bool(jnp.all(jnp.isfinite(g)))  # (exactly 0 here: every softmax is saturated)


# ------------------------------------------------------------------------ all kinds


def _latents(t=3, b=4):
    hidden = jax.random.normal(jax.random.key(10), (t, b, 6))
    stoch = jax.nn.one_hot(jax.random.randint(jax.random.key(11), (t, b, 2), 0, 3), 3)
    return hidden, stoch


def _params(cfg, hidden, stoch):
    return da.Actor.from_config(cfg).init(jax.random.key(0), hidden, stoch)


@pytest.mark.parametrize("kind", KINDS)
def test_act_shapes_in_both_modes(kind):
    cfg = _config(kind)
    hidden, stoch = _latents()
    params = _params(cfg, hidden, stoch)
    a_dim = cfg.action_dim
    out = da.act(params, cfg, hidden, stoch, jax.random.key(1), training=True)
    assert out.action.shape == out.raw_sample.shape == (3, 4, a_dim)
    assert out.log_prob.shape == (3, 4) and out.entropy.shape == (3, 4)
    assert all(x.dtype == jnp.float32 for x in out)
    sampled = da.act(params, cfg, hidden, stoch, jax.random.key(1), training=False)
    np.testing.assert_array_equal(sampled, out.action)  # same key, same sample
    mode = da.act(params, cfg, hidden, stoch, None, training=False, deterministic=True)
    assert mode.shape == (3, 4, a_dim)
    raw = np.asarray(da.Actor.from_config(cfg).apply(params, hidden, stoch), np.float64)
    if kind == "categorical":
        probs = _np_mixed_probs(raw, cfg.unimix)
        np.testing.assert_array_equal(mode, np.eye(a_dim)[np.argmax(raw, -1)])
        np.testing.assert_array_equal(np.asarray(out.action).sum(-1), 1.0)
        np.testing.assert_array_equal(out.raw_sample, out.action)
        ref_lp = np.log(np.sum(np.asarray(out.action) * probs, -1))
        np.testing.assert_allclose(out.log_prob, ref_lp, rtol=1e-5)
        np.testing.assert_allclose(out.entropy, -np.sum(probs * np.log(probs), -1), rtol=1e-5)
    else:
        low, high = (np.broadcast_to(v.astype(np.float32), (3, 4, 3)) for v in (LOW, HIGH))
        for a in (out.action, mode):
            assert bool(jnp.all((a >= low) & (a <= high)))
        raw_mean = raw[..., :3]
        if kind == "bounded_normal":
            m, _ = _np_bounded_params(raw_mean, raw[..., 3:], cfg.min_std, cfg.max_std)
            np.testing.assert_allclose(mode, m * (HIGH - LOW) / 2 + (HIGH + LOW) / 2, rtol=1e-5, atol=1e-6)
        else:
            mean = cfg.mean_limit * np.tanh(raw_mean / cfg.mean_limit)
            np.testing.assert_allclose(mode, np.tanh(mean) * (HIGH - LOW) / 2 + (HIGH + LOW) / 2, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_action_gradient_is_stopped_unless_reparameterized(kind):
    cfg = _config(kind)
    hidden, stoch = _latents()
    params = _params(cfg, hidden, stoch)
    w = jax.random.normal(jax.random.key(3), (3, 4, cfg.action_dim))

    def action_sum(p, reparameterize):
        out = da.act(p, cfg, hidden, stoch, jax.random.key(1), training=True, reparameterize=reparameterize)
        return jnp.sum(w * out.action)

    grad = jax.jit(jax.grad(action_sum), static_argnums=1)
    g_sg, g_rp = grad(params, False), grad(params, True)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_sg))
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_rp)) > 0.0
    # The log-prob does carry gradient (REINFORCE).
    g_lp = jax.jit(
        jax.grad(lambda p: jnp.sum(da.act(p, cfg, hidden, stoch, jax.random.key(1), training=True).log_prob))
    )(params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_lp)) > 0.0


# Extreme values of what each family's functions see: tanh_normal's (mean, log_std) directly;
# the raw network outputs (through the head) for bounded_normal and categorical.
EXTREME = {
    "tanh_normal": (
        lambda x, cfg: da.tanh_normal.Params(*x),
        (jnp.array([[60.0, -60.0, 0.0], [5.0, -5.0, 30.0]]), jnp.array([[-5.0, 2.0, -5.0], [2.0, -5.0, 0.0]])),
    ),
    "bounded_normal": (
        lambda x, cfg: da.policy_head(jnp.concatenate(x, -1), cfg),
        (jnp.array([[1e4, -1e4, 0.0], [30.0, -30.0, 1e4]]), jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 30]])),
    ),
    "categorical": (
        lambda x, cfg: da.policy_head(x[0], cfg),
        (jnp.array([[1000.0, -1000.0, 0.0, -1000.0], [-1e4, 1e4, 1e4, 0.0]]),),
    ),
}


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_entropy_and_grads_finite_at_extreme_outputs(kind):
    cfg = _config(kind)
    to_dist, outputs = EXTREME[kind]
    key_s, key_e = jax.random.split(jax.random.key(0))

    def objective(outs):
        dist = to_dist(outs, cfg)
        _, raw = da.policy_sample(key_s, dist, cfg)
        lp = da.policy_log_prob(dist, cfg, raw_sample=raw)
        ent = da.policy_entropy(dist, cfg, key=key_e, num_samples=4)
        return jnp.sum(lp + ent), (lp, ent)

    grads, (lp, ent) = jax.grad(objective, has_aux=True)(outputs)
    assert bool(jnp.all(jnp.isfinite(lp))) and bool(jnp.all(jnp.isfinite(ent)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    dist = to_dist(outputs, cfg)
    mode = da.policy_mode(dist, cfg)
    assert bool(jnp.all(jnp.isfinite(mode)))
    lp_mode = da.policy_log_prob(dist, cfg, action=mode)
    assert bool(jnp.all(jnp.isfinite(lp_mode)))


@pytest.mark.parametrize("kind", KINDS)
def test_jit_and_no_jit_agree(kind):
    cfg = _config(kind)
    hidden, stoch = _latents()
    params = _params(cfg, hidden, stoch)
    key = jax.random.key(5)
    run = lambda p, c, h, z, k: da.act(p, c, h, z, k, training=True)
    eager, jitted = run(params, cfg, hidden, stoch, key), jax.jit(run)(params, cfg, hidden, stoch, key)
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    mode = lambda p, c, h, z: da.act(p, c, h, z, None, training=False, deterministic=True)
    np.testing.assert_allclose(mode(params, cfg, hidden, stoch), jax.jit(mode)(params, cfg, hidden, stoch), rtol=1e-6)


def test_tanh_normal_dispatch_is_the_tanh_normal_module():
    cfg = _config("tanh_normal")
    mean = jax.random.normal(jax.random.key(0), (4, 3))
    log_std = jax.random.normal(jax.random.key(1), (4, 3)) - 1.0
    key = jax.random.key(2)
    action, u = da.policy_sample(key, (mean, log_std), cfg)
    ref_action, ref_u = da.sample_action(key, mean, log_std, cfg)
    np.testing.assert_array_equal(action, ref_action)
    np.testing.assert_array_equal(u, ref_u)
    np.testing.assert_array_equal(
        da.policy_log_prob((mean, log_std), cfg, raw_sample=u),
        da.log_prob_with_tanh_correction(mean, log_std, cfg, raw_sample=u),
    )
    np.testing.assert_array_equal(
        da.policy_entropy((mean, log_std), cfg, raw_sample=u), da.entropy_estimate(mean, log_std, cfg, raw_sample=u)
    )
    np.testing.assert_array_equal(da.policy_mode((mean, log_std), cfg), da.tanh_normal.mode_action(mean, cfg))


# ------------------------------------------------------------------------- bad input


def _dist(kind, a, batch=(2,)):
    if kind == "categorical":
        return (jnp.zeros((*batch, a)),)
    return (jnp.zeros((*batch, a)), jnp.full((*batch, a), 0.5))


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_action_shape_raises(kind):
    cfg = _config(kind)
    a = cfg.action_dim
    dist = _dist(kind, a)
    with pytest.raises(ValueError, match="`action` must have shape"):
        da.policy_log_prob(dist, cfg, action=jnp.zeros((2, a + 1)))
    with pytest.raises(ValueError, match="`raw_sample` must have shape"):
        da.policy_log_prob(dist, cfg, raw_sample=jnp.zeros((3, a)))
    with pytest.raises(ValueError, match="exactly one of"):
        da.policy_log_prob(dist, cfg)
    with pytest.raises(ValueError, match=r"policy_sample: `dist\.\w+` must have shape \[\.\.\., " + str(a)):
        da.policy_sample(jax.random.key(0), (jnp.zeros((2, a + 1)), *dist[1:]), cfg)
    with pytest.raises(
        ValueError, match=r"policy_head: `raw` must have shape \[\.\.\., " + str(cfg.family.num_outputs(cfg))
    ):
        da.policy_head(jnp.zeros((2, a + 1)), cfg)


@pytest.mark.parametrize("kind", KINDS)
def test_int_dtypes_raise(kind):
    cfg = _config(kind)
    a = cfg.action_dim
    dist = _dist(kind, a)
    if kind == "categorical":
        # integer actions are indices [...]; an integer one-hot is rejected with a hint.
        with pytest.raises(ValueError, match="integer `action` must be choice indices of shape"):
            da.policy_log_prob(dist, cfg, action=jnp.zeros((2, a), jnp.int32))
    else:
        with pytest.raises(ValueError, match="`action` must be floating point"):
            da.policy_log_prob(dist, cfg, action=jnp.zeros((2, a), jnp.int32))
        with pytest.raises(ValueError, match="`raw_sample` must be floating point"):
            da.policy_log_prob(dist, cfg, raw_sample=jnp.zeros((2, a), jnp.int32))
    with pytest.raises(ValueError, match="must be floating point"):
        da.policy_mode((jnp.zeros((2, a), jnp.int32), *dist[1:]), cfg)


def test_unknown_distribution_and_bad_dist_raise():
    with pytest.raises(ValueError, match="`distribution` must be one of"):
        _config("bounded_normal").replace(distribution="beta")
    cfg = dataclasses.replace(_config("bounded_normal"), distribution="beta")  # bypasses validation
    with pytest.raises(ValueError, match="unknown distribution 'beta'"):
        da.policy_sample(jax.random.key(0), (jnp.zeros(3), jnp.zeros(3)), cfg)
    with pytest.raises(ValueError, match="unknown distribution 'beta'"):
        da.policy_mode((jnp.zeros(3), jnp.zeros(3)), cfg)
    with pytest.raises(ValueError, match="`distribution` must be one of"):
        da.ActorConfig.create(low=-1.0, high=1.0, action_dim=2, distribution="beta")
    cat = _config("categorical")
    with pytest.raises(ValueError, match=r"`dist` must be the categorical parameters Params\(logits\).*length 2"):
        da.policy_mode((jnp.zeros(4), jnp.zeros(4)), cat)
    with pytest.raises(ValueError, match=r"`dist.std` is required, got None"):
        da.policy_mode((jnp.zeros(3), None), _config("bounded_normal"))
    with pytest.raises(ValueError, match=r"`dist` must be the categorical parameters"):
        da.policy_mode(jnp.zeros(4), cat)
    with pytest.raises(TypeError, match="`config` must be an ActorConfig"):
        da.policy_mode((jnp.zeros(4),), {"distribution": "categorical"})
    with pytest.raises(ValueError, match=r"categorical\.probs: needs a 'categorical' config"):
        da.categorical.probs((jnp.zeros(3),), _config("bounded_normal"))
    with pytest.raises(ValueError, match="`action_dims` must be None or"):
        da.ActorConfig.create(distribution="categorical", action_dims=(2, 3), action_dim=4)


# ------------------------------------------------------- the protocol, for every family


def _clipped_normal_family() -> types.ModuleType:
    """A fourth family in one module: an unsquashed Normal in normalized units, clipped for the env.

    Written against the protocol only (no library internals): `raw = [mean, raw_log_std]`,
    `log_std = 2 * tanh(raw_log_std / 2) - 1`, `x ~ N(mean, exp(log_std))`, action
    `clip(x, -1, 1) * scale + bias`; the log-prob is the Normal's at `x` (in env units).
    """
    family = types.ModuleType("clipped_normal")
    family.NAME, family.DISCRETE, family.ENTROPY_IS_ESTIMATE = "clipped_normal", False, False

    class Params(typing.NamedTuple):
        mean: jax.Array
        log_std: jax.Array

    def bounds(config, like):
        return tuple(jnp.broadcast_to(getattr(config, n).astype(like.dtype), like.shape) for n in ("scale", "bias"))

    def to_env(x, config):
        scale, bias = bounds(config, x)
        low, high = (jnp.broadcast_to(getattr(config, n).astype(x.dtype), x.shape) for n in ("low", "high"))
        return jnp.clip(jnp.clip(x, -1.0, 1.0) * scale + bias, low, high)

    def head(raw, config):
        mean, raw_log_std = jnp.split(raw, 2, axis=-1)
        return Params(mean, 2.0 * jnp.tanh(raw_log_std / 2.0) - 1.0)

    def sample(key, dist, config, *, reparameterize=False):
        x = dist.mean + jnp.exp(dist.log_std) * jax.random.normal(key, dist.mean.shape, dist.mean.dtype)
        x = x if reparameterize else jax.lax.stop_gradient(x)
        return to_env(x, config), x

    def log_prob(dist, config, *, raw_sample=None, action=None):
        scale, bias = bounds(config, dist.mean)
        x = raw_sample if raw_sample is not None else (action - bias) / scale
        z = (x - dist.mean) * jnp.exp(-dist.log_std)
        return jnp.sum(-0.5 * z**2 - dist.log_std - 0.5 * math.log(2 * math.pi) - jnp.log(scale), -1)

    def entropy(dist, config, *, raw_sample=None, key=None, num_samples=1):
        scale, _ = bounds(config, dist.mean)
        return jnp.sum(0.5 * math.log(2 * math.pi * math.e) + dist.log_std + jnp.log(scale), -1)

    def check_action(x, name, batch, config, fn):
        shape = (*batch, config.action_dim)
        if x is None or jnp.shape(x) != shape or not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(f"{fn}: `{name}` must be a floating array of shape {shape}.")
        return jnp.asarray(x, jnp.float32)

    def in_support(action, config):
        low, high = (jnp.broadcast_to(getattr(config, n).astype(action.dtype), action.shape) for n in ("low", "high"))
        return jnp.all((action >= low) & (action <= high), axis=-1)

    def validate_config(config):
        if config.action_dims is not None:
            raise ValueError("ActorConfig: `action_dims` must be None for clipped_normal.")

    family.Params, family.head, family.sample, family.log_prob, family.entropy = Params, head, sample, log_prob, entropy
    family.num_outputs = lambda config: 2 * config.action_dim
    family.mode = lambda dist, config: to_env(dist.mean, config)
    family.check_action, family.in_support, family.validate_config = check_action, in_support, validate_config
    return family


@pytest.fixture
def clipped_normal():
    family = da.distributions.register(_clipped_normal_family())
    yield family
    da.distributions.unregister("clipped_normal")
    assert "clipped_normal" not in da.distributions.names()


@pytest.fixture(params=[*da.distributions.names(), "clipped_normal"])
def family_name(request):
    if request.param == "clipped_normal":
        request.getfixturevalue("clipped_normal")
    return request.param


def _family_config(name, **kw):
    kw = {"layers": 1, "units": 16, **kw}
    if da.distributions.get(name).DISCRETE:
        return da.ActorConfig.create(distribution=name, action_dim=4, **kw)
    return da.ActorConfig.create(low=LOW, high=HIGH, distribution=name, **kw)


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
@pytest.mark.parametrize("jit", [False, True])
def test_protocol_shapes_dtypes_support_and_gradients(family_name, batch, jit):
    cfg = _family_config(family_name)
    family = cfg.family
    assert family is da.distributions.get(family_name) and family.NAME == family_name
    assert family_name in da.distributions.names()
    a, n_out = cfg.action_dim, family.num_outputs(cfg)
    assert da.Actor.from_config(cfg).num_outputs == n_out
    raw = jax.random.normal(jax.random.key(0), (*batch, n_out)) * 2.0
    k_sample, k_entropy = jax.random.split(jax.random.key(1))

    def everything(raw, cfg):
        dist = da.policy_head(raw, cfg)
        action, raw_sample = da.policy_sample(k_sample, dist, cfg)
        lp = da.policy_log_prob(dist, cfg, raw_sample=raw_sample)
        ent = (
            da.policy_entropy(dist, cfg, key=k_entropy, num_samples=2)
            if family.ENTROPY_IS_ESTIMATE
            else da.policy_entropy(dist, cfg)
        )
        mode = da.policy_mode(dist, cfg)
        return dist, action, raw_sample, lp, ent, mode

    run = jax.jit(everything) if jit else everything
    dist, action, raw_sample, lp, ent, mode = run(raw, cfg)
    assert isinstance(dist, family.Params) and len(dist._fields) >= 1
    for field in dist:
        assert field.shape == (*batch, a) and field.dtype == jnp.float32
    for x in (action, raw_sample, mode):
        assert x.shape == (*batch, a) and x.dtype == jnp.float32
    for x in (lp, ent):
        assert x.shape == batch and x.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(lp))) and bool(jnp.all(jnp.isfinite(ent)))
    assert bool(jnp.all(family.in_support(action, cfg))) and bool(jnp.all(family.in_support(mode, cfg)))
    # jit and eager agree.
    other = (everything if jit else jax.jit(everything))(raw, cfg)
    for x, y in zip(jax.tree.leaves((dist, action, raw_sample, lp, ent, mode)), jax.tree.leaves(other), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    # No gradient through the action unless reparameterized; the log-prob carries the score.
    w = jax.random.normal(jax.random.key(2), (*batch, a))

    def action_sum(raw, reparameterize):
        return jnp.sum(w * da.policy_sample(k_sample, da.policy_head(raw, cfg), cfg, reparameterize=reparameterize)[0])

    grad = jax.grad(action_sum)
    np.testing.assert_array_equal(grad(raw, False), 0.0)
    assert float(jnp.abs(grad(raw, True)).max()) > 0.0
    g_lp = jax.grad(lambda r: jnp.sum(da.policy_log_prob(da.policy_head(r, cfg), cfg, raw_sample=raw_sample)))(raw)
    assert bool(jnp.all(jnp.isfinite(g_lp))) and float(jnp.abs(g_lp).max()) > 0.0


def test_a_fourth_family_is_one_module_and_one_register_call(clipped_normal):
    assert da.distributions.names()[:3] == KINDS and da.distributions.names()[-1] == "clipped_normal"
    assert da.distributions.register(clipped_normal) is clipped_normal  # idempotent
    cfg = da.ActorConfig.create(low=LOW, high=HIGH, distribution="clipped_normal", layers=1, units=16)
    assert cfg.family is clipped_normal and not cfg.is_discrete
    assert da.ActorConfig.from_dict(cfg.to_dict()).distribution == "clipped_normal"
    with pytest.raises(ValueError, match="`action_dims` must be None"):
        da.ActorConfig.create(low=LOW, high=HIGH, distribution="clipped_normal", action_dims=(1, 2))
    hidden, stoch = _latents()
    params = _params(cfg, hidden, stoch)
    assert params["params"]["out"]["kernel"].shape[-1] == 6
    out = da.act(params, cfg, hidden, stoch, jax.random.key(1), training=True)
    dist = clipped_normal.head(da.Actor.from_config(cfg).apply(params, hidden, stoch), cfg)
    # Against numpy: the Normal's log-prob at the unclipped raw sample, the action its clip.
    m, log_s = (np.asarray(x, np.float64) for x in dist)
    x = np.asarray(out.raw_sample, np.float64)
    scale, bias = (HIGH - LOW) / 2, (HIGH + LOW) / 2
    ref_lp = np.sum(-0.5 * ((x - m) / np.exp(log_s)) ** 2 - log_s - 0.5 * np.log(2 * np.pi) - np.log(scale), -1)
    np.testing.assert_allclose(out.log_prob, ref_lp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.action, np.clip(x, -1, 1) * scale + bias, rtol=1e-6, atol=1e-6)
    ref_ent = np.sum(0.5 * np.log(2 * np.pi * np.e) + log_s + np.log(scale), -1)
    np.testing.assert_allclose(out.entropy, ref_ent, rtol=1e-5)
    mode = da.act(params, cfg, hidden, stoch, None, training=False, deterministic=True)
    np.testing.assert_allclose(mode, np.clip(m, -1, 1) * scale + bias, rtol=1e-6, atol=1e-6)
    # checked_act: clean passes and equals act; a NaN latent is reported.
    run = jax.jit(lambda p, h, k: da.checked_act(p, cfg, h, stoch, k, training=True))
    err, checked = run(params, hidden, jax.random.key(1))
    assert err.get() is None
    for a, b in zip(checked, out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    err, _ = run(params, hidden.at[0, 0, 0].set(jnp.nan), jax.random.key(1))
    assert "hidden has NaN or inf entries" in err.get()
    err, _ = da.checked_log_prob(dist, cfg, action=jnp.broadcast_to(jnp.asarray(HIGH + 1.0, jnp.float32), (3, 4, 3)))
    assert "action outside the support of clipped_normal" in err.get()


def test_register_checks_the_protocol():
    partial = types.SimpleNamespace(NAME="partial", DISCRETE=False, head=lambda raw, config: raw)
    with pytest.raises(TypeError, match=r"distributions.register: .* lacks the protocol attribute\(s\) \[.*'sample'"):
        da.distributions.register(partial)
    try:
        da.distributions.register(partial)
    except TypeError as error:
        for attr in ("ENTROPY_IS_ESTIMATE", "Params", "num_outputs", "log_prob", "in_support", "validate_config"):
            assert repr(attr) in str(error), attr
        assert "'head'" not in str(error) and "'NAME'" not in str(error)
    assert "partial" not in da.distributions.names()
    impostor = types.SimpleNamespace(**{**vars(_clipped_normal_family()), "NAME": "categorical"})
    with pytest.raises(ValueError, match="a different family is already registered as 'categorical'"):
        da.distributions.register(impostor)
    with pytest.raises(ValueError, match="'tanh_normal' is built in"):
        da.distributions.unregister("tanh_normal")
    with pytest.raises(ValueError, match=r"distributions\.get: unknown distribution 'nope'"):
        da.distributions.get("nope")
