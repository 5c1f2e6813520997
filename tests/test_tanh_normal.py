"""The tanh-squashed Gaussian's pure functions, against independent references.

References: `distrax` (`as_distrax` and a Transformed distribution built here from
scratch), a numpy float64 change-of-variables formula, `scipy.integrate.quad` for the
normalization and the entropy, finite differences (`jax.test_util.check_grads` and
central differences) and sample statistics with stated tolerances and fixed seeds.
"""

import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate

import dreamer_actor as da
from dreamer_actor import tanh_normal as tn
from dreamer_actor._src.noise import standard_normal

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import distrax


# --------------------------------------------------------------------------- helpers


def _np_log_prob(action, mean, log_std, low, high):
    """float64 change of variables, written independently of the library.

    u = atanh((a - bias) / scale); log p(a) = log N(u; mean, std) - log scale - log(1 - tanh(u)^2),
    summed over the last axis.
    """
    a, mean, log_std = (np.asarray(x, np.float64) for x in (action, mean, log_std))
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    scale, bias = (high - low) / 2.0, (high + low) / 2.0
    y = (a - bias) / scale
    u = np.arctanh(y)
    std = np.exp(log_std)
    log_normal = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    # d a / d u = scale * (1 - y^2), computed from y directly (no tanh round trip).
    return np.sum(log_normal - np.log(scale) - np.log1p(-(y**2)), axis=-1)


def _np_log_prob_u(u, mean, std, scale):
    """float64 log-density of a = tanh(u) * scale + bias at the point reached from `u` (1-D)."""
    log_normal = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    # log(1 - tanh(u)^2) = log(4) - 2|u| - 2 log1p(exp(-2|u|)), exact in float64.
    log_jac = np.log(4.0) - 2.0 * np.abs(u) - 2.0 * np.log1p(np.exp(-2.0 * np.abs(u)))
    return log_normal - np.log(scale) - log_jac


def _distrax_from_scratch(mean, log_std, low, high):
    """Built here without `as_distrax`: Normal -> tanh -> affine to [low, high]."""
    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    scale, shift = (high - low) / 2.0, (high + low) / 2.0
    base = distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))
    bijector = distrax.Block(distrax.Chain([distrax.ScalarAffine(shift=shift, scale=scale), distrax.Tanh()]), ndims=1)
    return distrax.Transformed(base, bijector)


LOW3, HIGH3 = np.array([-2.0, 0.0, -1.0]), np.array([3.0, 0.5, 1.0])


@pytest.fixture(scope="module")
def cfg3():
    return da.ActorConfig.create(low=LOW3, high=HIGH3)


# --------------------------------------------------------------- log-prob vs references


def test_log_prob_matches_distrax_and_float64_formula_on_interior_points(cfg3):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    mean = jax.random.normal(k1, (4, 5, 3)) * 1.5
    log_std = jax.random.uniform(k2, (4, 5, 3), minval=-1.5, maxval=0.7)
    # Interior actions: |normalized| <= 0.95 so atanh is well conditioned in float32.
    y = jax.random.uniform(k3, (4, 5, 3), minval=-0.95, maxval=0.95)
    action = tn.squash(jnp.arctanh(y), cfg3)

    ours = da.log_prob_with_tanh_correction(mean, log_std, cfg3, action=action)
    via_as_distrax = tn.as_distrax(mean, log_std, cfg3).log_prob(action)
    from_scratch = _distrax_from_scratch(mean, log_std, LOW3, HIGH3).log_prob(action)
    reference = _np_log_prob(action, mean, log_std, LOW3, HIGH3)

    assert ours.shape == (4, 5) and ours.dtype == jnp.float32
    # float32 atanh at |y| <= 0.95 loses ~1e-6 relative; log-probs are O(1..10).
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(via_as_distrax, reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(from_scratch, reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours, from_scratch, rtol=1e-5, atol=1e-5)


def test_raw_sample_and_action_paths_agree_and_match_distrax_sample_and_log_prob(cfg3):
    mean = jnp.array([[0.3, -0.5, 1.0], [0.0, 2.0, -1.0]])
    log_std = jnp.array([[-0.2, 0.1, -1.0], [0.4, -0.5, 0.0]])
    action, u = da.sample_action(jax.random.key(1), mean, log_std, cfg3)
    lp_u = da.log_prob_with_tanh_correction(mean, log_std, cfg3, raw_sample=u)
    lp_a = da.log_prob_with_tanh_correction(mean, log_std, cfg3, action=action)
    np.testing.assert_allclose(lp_u, lp_a, rtol=1e-4, atol=1e-4)
    # distrax's fused sample_and_log_prob uses the forward log-det (no atanh).
    with jax.numpy_rank_promotion("allow"):  # distrax broadcasts implicitly inside sample_and_log_prob
        sample, lp_ref = _distrax_from_scratch(mean, log_std, LOW3, HIGH3).sample_and_log_prob(seed=jax.random.key(2))
    u_ref = np.arctanh((np.asarray(sample, np.float64) - (HIGH3 + LOW3) / 2) / ((HIGH3 - LOW3) / 2))
    ours = da.log_prob_with_tanh_correction(mean, log_std, cfg3, raw_sample=jnp.asarray(u_ref, jnp.float32))
    np.testing.assert_allclose(ours, lp_ref, rtol=1e-4, atol=1e-4)


def test_raw_sample_path_stays_exact_where_tanh_saturates():
    """At |u| = 12 `tanh(u)` is 1.0 in float32; the raw_sample path still matches float64."""
    cfg = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=1)
    u = np.array([[12.0], [-15.0], [30.0]])
    mean, log_std = np.array([[11.0], [-14.0], [29.0]]), np.array([[0.0], [0.5], [-0.3]])
    ours = da.log_prob_with_tanh_correction(
        jnp.asarray(mean, jnp.float32), jnp.asarray(log_std, jnp.float32), cfg, raw_sample=jnp.asarray(u, jnp.float32)
    )
    ref = _np_log_prob_u(u[:, 0], mean[:, 0], np.exp(log_std[:, 0]), 1.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    # The naive `log(1 - tanh^2 + 1e-6)` would give at most 13.8 for the Jacobian term; we get ~2|u|.
    assert float(-tn.log1m_tanh_sq(jnp.float32(30.0))) > 55.0


def test_log1m_tanh_sq_matches_float64_and_its_derivative_is_minus_2_tanh():
    u = np.linspace(-40.0, 40.0, 801)
    ours = tn.log1m_tanh_sq(jnp.asarray(u, jnp.float32))
    ref = np.log(4.0) - 2.0 * np.abs(u) - 2.0 * np.log1p(np.exp(-2.0 * np.abs(u)))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    grad = jax.vmap(jax.grad(tn.log1m_tanh_sq))(jnp.asarray(u, jnp.float32))
    np.testing.assert_allclose(grad, -2.0 * np.tanh(u), atol=1e-5)


def test_log1m_tanh_sq_keeps_relative_precision_near_zero():
    """Near u = 0 the value is about -u^2: the softplus form alone cancels to ~1e-7 absolute error
    (relative error up to 1e5 at u = 1e-6); we switch to `log1p(-tanh(u)^2)` there."""
    u = np.concatenate([np.logspace(-6, 0.5, 400), -np.logspace(-6, 0.5, 400)])
    u32 = np.asarray(u, np.float32)
    ref = np.log1p(-(np.tanh(u32.astype(np.float64)) ** 2))  # float64, well conditioned for |u| <~ 3
    ours = np.asarray(jax.jit(tn.log1m_tanh_sq)(jnp.asarray(u32)), np.float64)
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=0)
    # and the derivative (the custom JVP) to float32 precision, including at the switch point
    grad = jax.vmap(jax.grad(tn.log1m_tanh_sq))(jnp.asarray(u32))
    np.testing.assert_allclose(grad, -2.0 * np.tanh(u32.astype(np.float64)), rtol=1e-6, atol=1e-7)


def test_log1m_tanh_sq_second_derivative_is_minus_2_sech_squared():
    u = jnp.asarray([-30.0, -3.0, -0.61, -0.6, -0.1, 0.0, 0.2, 0.6, 2.0, 25.0], jnp.float32)
    second = jax.vmap(jax.grad(jax.grad(tn.log1m_tanh_sq)))(u)
    np.testing.assert_allclose(second, -2.0 / np.cosh(np.asarray(u, np.float64)) ** 2, rtol=1e-5, atol=1e-7)


def test_squash_unsquash_round_trip_and_bounds(cfg3):
    u = jnp.asarray(np.linspace(-3.0, 3.0, 21)[:, None].repeat(3, axis=1), jnp.float32)
    a = tn.squash(u, cfg3)
    np.testing.assert_allclose(
        a, np.tanh(np.asarray(u, np.float64)) * (HIGH3 - LOW3) / 2 + (HIGH3 + LOW3) / 2, atol=1e-6
    )
    np.testing.assert_allclose(tn.unsquash(a, cfg3), u, atol=2e-4)
    # Actions at and beyond the bounds invert to a finite u with the bound's sign.
    edge = jnp.asarray(np.stack([LOW3, HIGH3, LOW3 - 1.0, HIGH3 + 1.0]), jnp.float32)
    u_edge = tn.unsquash(edge, cfg3)
    assert bool(jnp.all(jnp.isfinite(u_edge)))
    np.testing.assert_array_equal(np.sign(u_edge), [[-1] * 3, [1] * 3, [-1] * 3, [1] * 3])
    assert float(jnp.abs(u_edge).min()) > 7.0
    np.testing.assert_allclose(tn.mode_action(jnp.zeros((2, 3)), cfg3), np.broadcast_to((HIGH3 + LOW3) / 2, (2, 3)))


def _random_float32_boxes(n, a_dim, seed):
    """`n` asymmetric float32 Boxes: centers from 1e-2 to 1e4 in magnitude, widths from ~1 float32 ulp to 1e3."""
    from gymnasium import spaces

    rng = np.random.default_rng(seed)
    boxes = []
    while len(boxes) < n:
        center = rng.choice([-1.0, 1.0], a_dim) * 10.0 ** rng.uniform(-2.0, 4.0, a_dim)
        width = 10.0 ** rng.uniform(-3.0, 3.0, a_dim)
        low = (center - width * rng.uniform(0.0, 1.0, a_dim)).astype(np.float32)
        high = np.maximum((low + width).astype(np.float32), np.nextafter(low, np.float32(np.inf)))
        boxes.append(spaces.Box(low=low, high=high, dtype=np.float32))
    return boxes


def test_sampled_and_mode_actions_lie_inside_random_float32_boxes_exactly():
    """`box.contains` holds for every sampled and mode action, for 200 random asymmetric float32 Boxes
    (fixed seed) and pre-squash values up to |u| = 30 and beyond (tanh(u) is +-1 in float32 for |u| > ~9,
    where `scale * 1 + bias` can round past a bound)."""
    a_dim = 3
    boxes = _random_float32_boxes(200, a_dim, seed=0)
    means = np.array([-30.0, -12.0, -9.0, -3.0, -0.5, 0.0, 0.5, 3.0, 9.0, 12.0, 30.0], np.float32)
    log_stds = np.array([-20.0, -3.0, 0.0, 2.0], np.float32)
    grid = np.array([(m, s) for m in means for s in log_stds], np.float32)
    mean = jnp.asarray(np.repeat(grid[:, :1], a_dim, axis=1))  # [44, A]
    log_std = jnp.asarray(np.repeat(grid[:, 1:], a_dim, axis=1))

    @jax.jit
    def actions(cfg, key):
        k1, k2 = jax.random.split(key)
        sampled, u = da.sample_action(k1, mean, log_std, cfg)
        reparameterized, _ = da.sample_action(k2, mean, log_std, cfg, reparameterize=True)
        via_policy, _ = da.policy_sample(k2, (mean, log_std), cfg)
        modes = (tn.mode_action(mean, cfg), da.policy_mode((mean, log_std), cfg))
        return jnp.stack([sampled, reparameterized, via_policy, *modes]), u

    max_abs_u, saturated_rows = 0.0, 0
    for i, box in enumerate(boxes):
        cfg = da.ActorConfig.from_space(box)
        out, u = actions(cfg, jax.random.key(i))
        out = np.asarray(out)
        assert out.dtype == np.float32
        for row in out.reshape(-1, a_dim):
            assert box.contains(row), (i, box.low, box.high, row)
        max_abs_u = max(max_abs_u, float(jnp.max(jnp.abs(u))))
        saturated_rows += int(np.sum(np.all(np.abs(np.tanh(np.asarray(u, np.float32))) == 1.0, axis=-1)))
    # The grid does reach tanh's saturation: |u| up to 30 (and beyond, with std e^2), many rows at exactly +-1.
    assert max_abs_u >= 30.0 and saturated_rows > 1000, (max_abs_u, saturated_rows)
    # The check has teeth: the unclipped float32 map `tanh(u) * scale + bias` leaves some of these boxes.
    outside = 0
    for box in boxes:
        cfg = da.ActorConfig.from_space(box)
        y = np.tanh(np.asarray(mean, np.float32))
        raw = y * np.asarray(cfg.scale, np.float32) + np.asarray(cfg.bias, np.float32)
        outside += sum(not box.contains(row.astype(np.float32)) for row in raw)
    assert outside > 0


# ------------------------------------------------------------------- normalization (1-D)


def _density_fn(mean, std, low, high, corrected=True):
    """p(a) from `log_prob_with_tanh_correction(action=a)` (float32), as a scalar function for `quad`."""
    cfg = da.ActorConfig.create(low=low, high=high, action_dim=1)
    m = jnp.full((1,), mean, jnp.float32)
    ls = jnp.full((1,), math.log(std), jnp.float32)

    @jax.jit
    def log_density(a):
        a = jnp.reshape(a, (1,)).astype(jnp.float32)
        if corrected:
            return da.log_prob_with_tanh_correction(m, ls, cfg, action=a)
        # No Jacobian: the Gaussian density of u = atanh(...) read as a density of a.
        u = tn.unsquash(a, cfg)
        return jnp.sum(-0.5 * jnp.square((u - m) / jnp.exp(ls)) - ls - 0.5 * math.log(2 * math.pi))

    return lambda a: float(jnp.exp(log_density(a)))


def _quad32(f, lo, hi, points):
    """`quad` of an integrand evaluated in float32: ask for no more accuracy than float32 noise allows."""
    val, _ = integrate.quad(f, lo, hi, points=points, limit=400, epsabs=1e-6, epsrel=1e-6)
    return val


def _bulk_points(mean, std, low, high):
    """Where the mass of `a` sits, as hints for `quad` (the density can be a narrow spike)."""
    u = mean + std * np.array([-6.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0])
    a = np.tanh(u) * (high - low) / 2 + (high + low) / 2
    return sorted({float(x) for x in a if low < x < high})


# Cases whose mass float32 actions can resolve: quadrature directly over a in [low, high].
RESOLVED_CASES = [(0.0, 1.0, -1.0, 1.0), (0.5, 0.3, -2.0, 3.0), (2.0, 0.5, 0.0, 10.0), (-0.5, 0.8, -2.0, 3.0)]
# All cases, saturated ones included (mean 5 / std 0.05 is a spike within 3e-4 of `high`; with std 5
# 8% of the mass lies where float32 `tanh(u)` is exactly +-1, closer to the bounds than float32 resolves).
ALL_CASES = [
    *RESOLVED_CASES,
    (-1.0, 2.0, -2.0, 3.0),
    (5.0, 0.05, -1.0, 1.0),
    (0.0, 5.0, -1.0, 1.0),
    (-3.0, 1.0, -2.0, 3.0),
    (1.0, 5.0, -2.0, 3.0),
]


@pytest.mark.parametrize("mean,std,low,high", RESOLVED_CASES)
def test_density_of_action_integrates_to_one_over_the_bounds(mean, std, low, high):
    density = _density_fn(mean, std, low, high)
    total = _quad32(density, low, high, _bulk_points(mean, std, low, high))
    # float32 evaluation of the density (atanh of a float32 action); measured errors are ~2e-7.
    assert abs(total - 1.0) < 1e-5, total


@pytest.mark.parametrize("mean,std,low,high", ALL_CASES)
def test_density_integrates_to_one_including_saturated_policies(mean, std, low, high):
    """int p(a) da with the substitution a = a(s) = tanh(s) * scale + bias, da = scale (1 - tanh(s)^2) ds.

    p(a(s)) comes from the library's `raw_sample=s` path (exact where float32 `tanh` saturates);
    the Jacobian of the substitution is numpy float64. The float64 tests run the `action=` path
    on these same cases.
    """
    cfg = da.ActorConfig.create(low=low, high=high, action_dim=1)
    m, ls = jnp.full((1,), mean, jnp.float32), jnp.full((1,), math.log(std), jnp.float32)
    log_p = jax.jit(lambda s: da.log_prob_with_tanh_correction(m, ls, cfg, raw_sample=jnp.reshape(s, (1,))))
    scale = (high - low) / 2

    def integrand(s):
        log_da_ds = math.log(scale) + math.log(4.0) - 2 * abs(s) - 2 * math.log1p(math.exp(-2 * abs(s)))
        return math.exp(float(log_p(jnp.float32(s))) + log_da_ds)

    total = _quad32(integrand, mean - 12 * std, mean + 12 * std, [mean])
    assert abs(total - 1.0) < 1e-5, total


@pytest.mark.parametrize("mean,std,low,high", RESOLVED_CASES[:3])
def test_uncorrected_density_does_not_integrate_to_one(mean, std, low, high):
    """Without the Jacobian the 'density' is off: the normalization test above can fail."""
    density = _density_fn(mean, std, low, high, corrected=False)
    total = _quad32(density, low, high, _bulk_points(mean, std, low, high))
    assert abs(total - 1.0) > 0.1, total


# ----------------------------------------------------------------------------- entropy


def _quad_entropy(mean, std, low, high):
    """-int p(a) log p(a) da in float64, integrated over u (p(u) du = p(a) da)."""
    scale = (high - low) / 2

    def integrand(u):
        log_normal = -0.5 * ((u - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
        return -math.exp(log_normal) * _np_log_prob_u(u, mean, std, scale)

    val, _ = integrate.quad(integrand, mean - 12 * std, mean + 12 * std, limit=400, epsabs=1e-10)
    return val


def _quad_entropy_in_a(mean, std, low, high):
    """-int p(a) log p(a) da over a in [low, high], with p from the library (float32)."""
    density = _density_fn(mean, std, low, high)

    def integrand(a):
        p = density(a)
        return -p * math.log(p) if p > 0 else 0.0

    val = _quad32(integrand, low, high, _bulk_points(mean, std, low, high))
    return val


ENTROPY_CASES = [
    (0.0, 1.0, -1.0, 1.0),
    (0.5, 0.3, -2.0, 3.0),
    (-1.0, 2.0, -2.0, 3.0),
    (5.0, 0.05, -1.0, 1.0),  # saturated, narrow
    (0.0, 5.0, -1.0, 1.0),  # saturated, wide: mass piles at both bounds
    (3.0, 1.0, 0.0, 10.0),
]


@pytest.mark.parametrize("mean,std,low,high", ENTROPY_CASES)
def test_entropy_estimate_agrees_with_quadrature_within_4_standard_errors(mean, std, low, high):
    cfg = da.ActorConfig.create(low=low, high=high, action_dim=1)
    k = 4096
    m = jnp.full((k, 1), mean, jnp.float32)
    ls = jnp.full((k, 1), math.log(std), jnp.float32)
    _, u = da.sample_action(jax.random.key(3), m, ls, cfg)
    per_sample = np.asarray(da.entropy_estimate(m, ls, cfg, raw_sample=u), np.float64)  # [K] one-sample estimates
    estimate, se = per_sample.mean(), per_sample.std(ddof=1) / math.sqrt(k)
    truth = _quad_entropy(mean, std, low, high)
    # A floor of 1e-5 on the SE: at std -> 0 the estimator's variance vanishes and float32 rounding remains.
    assert abs(estimate - truth) < 4 * max(se, 1e-5), (estimate, truth, se)
    # The key/num_samples path averages the same kind of samples.
    pooled = float(da.entropy_estimate(m[:1], ls[:1], cfg, key=jax.random.key(4), num_samples=k)[0])
    assert abs(pooled - truth) < 4 * max(se, 1e-5), (pooled, truth, se)


@pytest.mark.parametrize("mean,std,low,high", [(0.0, 1.0, -1.0, 1.0), (0.5, 0.3, -2.0, 3.0)])
def test_entropy_quadrature_in_action_space_agrees_with_u_space(mean, std, low, high):
    """Cross-checks the u-space reference against -int p log p over `a` with the library's density."""
    assert abs(_quad_entropy_in_a(mean, std, low, high) - _quad_entropy(mean, std, low, high)) < 2e-3


def test_entropy_is_sum_over_independent_dims_and_gaussian_part_is_exact(cfg3):
    mean = jnp.array([0.3, -1.0, 2.0])
    log_std = jnp.array([-0.5, 0.2, -1.0])
    k = 2048
    est = da.entropy_estimate(mean, log_std, cfg3, key=jax.random.key(5), num_samples=k)
    truth = sum(
        _quad_entropy(float(m), math.exp(float(s)), lo, hi)
        for m, s, lo, hi in zip(mean, log_std, LOW3, HIGH3, strict=True)
    )
    assert abs(float(est) - truth) < 0.05, (float(est), truth)
    np.testing.assert_allclose(
        tn.gaussian_entropy(log_std), np.sum(0.5 * np.log(2 * np.pi * np.e) + np.asarray(log_std)), rtol=1e-6
    )


# ------------------------------------------------------------- extremes: finite values


@pytest.mark.parametrize("in_dtype", [jnp.float32, jnp.bfloat16])
def test_finite_log_prob_entropy_and_grads_at_extremes(in_dtype):
    cfg = da.ActorConfig.create(low=[-2.0, 0.0], high=[3.0, 1e-3])
    means = [-20.0, 0.0, 20.0]
    log_stds = [-20.0, -5.0, 2.0, 5.0]
    grid = np.array([(m, s) for m in means for s in log_stds], np.float32)
    mean = jnp.asarray(np.repeat(grid[:, :1], 2, axis=1), in_dtype)
    log_std = jnp.asarray(np.repeat(grid[:, 1:], 2, axis=1), in_dtype)
    n = grid.shape[0]
    actions = {
        "low": jnp.broadcast_to(cfg.low, (n, 2)),
        "high": jnp.broadcast_to(cfg.high, (n, 2)),
        "beyond": jnp.broadcast_to(cfg.high + 1.0, (n, 2)),
    }

    def total(mean, log_std, action, u):
        lp_a = da.log_prob_with_tanh_correction(mean, log_std, cfg, action=action)
        lp_u = da.log_prob_with_tanh_correction(mean, log_std, cfg, raw_sample=u)
        ent = da.entropy_estimate(mean, log_std, cfg, raw_sample=u)
        return jnp.sum(lp_a + lp_u + ent), (lp_a, lp_u, ent)

    _, u = da.sample_action(jax.random.key(0), mean, log_std, cfg)
    assert u.dtype == jnp.float32
    for name, action in actions.items():
        action = action.astype(in_dtype)
        (_, (lp_a, lp_u, ent)), grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))(
            mean, log_std, action, u
        )
        for out in (lp_a, lp_u, ent):
            assert out.dtype == jnp.float32, name
            assert bool(jnp.all(jnp.isfinite(out))), (name, out)
        for g in grads:
            assert g.dtype == in_dtype
            assert bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))), (name, g)


def test_action_exactly_at_bound_has_finite_log_prob_where_distrax_gives_nan():
    cfg = da.ActorConfig.create(low=-2.0, high=3.0, action_dim=1)
    mean, log_std = jnp.array([[5.0]]), jnp.array([[0.0]])
    a = jnp.array([[3.0]])
    ours = da.log_prob_with_tanh_correction(mean, log_std, cfg, action=a)
    assert bool(jnp.isfinite(ours).all())
    assert not bool(jnp.isfinite(tn.as_distrax(mean, log_std, cfg).log_prob(a)).all())
    # It equals the density at the clipped point, u = atanh(1 - epsneg).
    u = np.arctanh(np.float64(1.0 - np.finfo(np.float32).epsneg))
    np.testing.assert_allclose(ours, _np_log_prob_u(np.array([u]), 5.0, 1.0, 2.5), rtol=1e-4)


# ---------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("path", ["raw_sample", "action"])
def test_check_grads_of_log_prob_wrt_mean_and_log_std(path, cfg3):
    mean = jnp.array([[0.3, -0.5, 1.0], [0.0, 1.5, -1.0]])
    log_std = jnp.array([[-0.2, 0.1, -0.5], [0.4, -0.5, 0.0]])
    action, u = da.sample_action(jax.random.key(7), mean + 0.1, log_std, cfg3)
    given = {"raw_sample": u, "action": action}[path]

    def f(m, s):
        return da.log_prob_with_tanh_correction(m, s, cfg3, **{path: given})

    check_grads(f, (mean, log_std), order=2, modes=("fwd", "rev"), atol=2e-2, rtol=2e-2)


def test_log_prob_gradient_matches_closed_form_score(cfg3):
    """d/dmean log p = (u - mean) / std^2; d/dlog_std log p = z^2 - 1 (the Jacobian term has no params)."""
    mean = jnp.array([0.3, -0.5, 1.0])
    log_std = jnp.array([-0.2, 0.1, -0.5])
    u = jnp.array([0.9, -2.0, 4.0])
    gm, gs = jax.grad(lambda m, s: da.log_prob_with_tanh_correction(m, s, cfg3, raw_sample=u), argnums=(0, 1))(
        mean, log_std
    )
    m, s, u64 = (np.asarray(x, np.float64) for x in (mean, log_std, u))
    z = (u64 - m) / np.exp(s)
    np.testing.assert_allclose(gm, z / np.exp(s), rtol=1e-5)
    np.testing.assert_allclose(gs, z**2 - 1.0, rtol=1e-5)


def test_check_grads_of_entropy_estimate(cfg3):
    mean = jnp.array([0.3, -0.5, 1.0])
    log_std = jnp.array([-0.2, 0.1, -0.5])
    f = lambda m, s: da.entropy_estimate(m, s, cfg3, key=jax.random.key(8), num_samples=16)
    check_grads(f, (mean, log_std), order=1, modes=("fwd", "rev"), atol=2e-2, rtol=2e-2)


def test_sample_carries_no_gradient_by_default(cfg3):
    mean = jnp.array([[0.3, -0.5, 1.0]])
    log_std = jnp.array([[-0.2, 0.1, -0.5]])

    def loss(m, s):
        a, u = da.sample_action(jax.random.key(9), m, s, cfg3)
        return jnp.sum(a**2) + jnp.sum(jnp.sin(u))

    gm, gs = jax.grad(loss, argnums=(0, 1))(mean, log_std)
    np.testing.assert_array_equal(gm, 0.0)
    np.testing.assert_array_equal(gs, 0.0)


def test_reparameterized_sample_gradient_matches_finite_differences(cfg3):
    mean = jnp.array([[0.3, -0.5, 1.0]])
    log_std = jnp.array([[-0.2, 0.1, -0.5]])
    key = jax.random.key(9)

    def loss(m, s):
        a, _ = da.sample_action(key, m, s, cfg3, reparameterize=True)
        return jnp.sum(jnp.asarray([1.0, -2.0, 3.0])[None] * a)

    gm, gs = jax.grad(loss, argnums=(0, 1))(mean, log_std)
    assert float(jnp.abs(gm).min()) > 0 and float(jnp.abs(gs).min()) > 0
    # Central differences in float64 numpy with the same eps (a = tanh(m + exp(s) eps) * scale + bias).
    eps = (np.asarray(da.sample_action(key, mean, log_std, cfg3)[1], np.float64) - np.asarray(mean)) / np.exp(
        np.asarray(log_std, np.float64)
    )
    w, scale, bias = np.array([1.0, -2.0, 3.0]), (HIGH3 - LOW3) / 2, (HIGH3 + LOW3) / 2
    f = lambda m, s: np.sum(w * (np.tanh(m + np.exp(s) * eps) * scale + bias))
    m0, s0, h = np.asarray(mean, np.float64), np.asarray(log_std, np.float64), 1e-6
    for i in range(3):
        e = np.zeros_like(m0)
        e[0, i] = h
        np.testing.assert_allclose(gm[0, i], (f(m0 + e, s0) - f(m0 - e, s0)) / (2 * h), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gs[0, i], (f(m0, s0 + e) - f(m0, s0 - e)) / (2 * h), rtol=1e-4, atol=1e-5)


def test_samples_have_gaussian_raw_sample_moments(cfg3):
    mean = jnp.broadcast_to(jnp.array([0.3, -2.0, 1.0]), (20000, 3))
    log_std = jnp.broadcast_to(jnp.array([-1.0, 0.5, 0.0]), (20000, 3))
    a, u = da.sample_action(jax.random.key(10), mean, log_std, cfg3)
    std = np.exp([-1.0, 0.5, 0.0])
    # 5 standard errors of the sample mean and of the sample std (SE ~ std / sqrt(2N)).
    np.testing.assert_array_less(np.abs(np.asarray(u).mean(0) - [0.3, -2.0, 1.0]), 5 * std / math.sqrt(20000))
    np.testing.assert_array_less(np.abs(np.asarray(u).std(0) - std), 5 * std / math.sqrt(40000))
    np.testing.assert_allclose(
        a, np.tanh(np.asarray(u, np.float64)) * (HIGH3 - LOW3) / 2 + (HIGH3 + LOW3) / 2, atol=1e-6
    )


# ------------------------------------------------------------------ jit / vmap / scan


class VariantsTest(chex.TestCase):
    """Same values with and without jit."""

    def setUp(self):
        super().setUp()
        self.cfg = da.ActorConfig.create(low=LOW3, high=HIGH3)
        self.mean = jnp.array([[0.3, -0.5, 1.0], [0.0, 1.5, -1.0]])
        self.log_std = jnp.array([[-0.2, 0.1, -0.5], [0.4, -0.5, 0.0]])

    @chex.variants(with_jit=True, without_jit=True)
    def test_sample_action(self):
        key = jax.random.key(11)
        a, u = self.variant(da.sample_action, static_argnames=("reparameterize",))(
            key, self.mean, self.log_std, self.cfg
        )
        eps = standard_normal(key, self.mean.shape)
        np.testing.assert_allclose(u, self.mean + jnp.exp(self.log_std) * eps, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(a, tn.squash(u, self.cfg), rtol=1e-6, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_log_prob_with_tanh_correction(self):
        a, u = da.sample_action(jax.random.key(12), self.mean, self.log_std, self.cfg)
        lp = self.variant(lambda m, s, c, x: da.log_prob_with_tanh_correction(m, s, c, action=x))(
            self.mean, self.log_std, self.cfg, a
        )
        lp_u = self.variant(lambda m, s, c, x: da.log_prob_with_tanh_correction(m, s, c, raw_sample=x))(
            self.mean, self.log_std, self.cfg, u
        )
        np.testing.assert_allclose(lp, _np_log_prob(a, self.mean, self.log_std, LOW3, HIGH3), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(lp_u, lp, rtol=1e-4, atol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_entropy_estimate(self):
        _, u = da.sample_action(jax.random.key(13), self.mean, self.log_std, self.cfg)
        ent = self.variant(lambda m, s, c, x: da.entropy_estimate(m, s, c, raw_sample=x))(
            self.mean, self.log_std, self.cfg, u
        )
        # One-sample estimate: Gaussian entropy + log|da/du| at u (numpy float64).
        y = np.tanh(np.asarray(u, np.float64))
        ref = np.sum(
            0.5 * np.log(2 * np.pi * np.e)
            + np.asarray(self.log_std, np.float64)
            + np.log((HIGH3 - LOW3) / 2)
            + np.log1p(-(y**2)),
            axis=-1,
        )
        np.testing.assert_allclose(ent, ref, rtol=1e-4, atol=1e-4)


def test_per_sample_function_vmapped_over_time_and_batch_equals_batched_call(cfg3):
    t, b = 4, 5
    k1, k2, k3 = jax.random.split(jax.random.key(14), 3)
    mean = jax.random.normal(k1, (t, b, 3))
    log_std = jax.random.uniform(k2, (t, b, 3), minval=-1.0, maxval=0.5)
    _, u = da.sample_action(k3, mean, log_std, cfg3)
    action = tn.squash(u, cfg3)

    def one(m, s, x, a):  # [A] -> scalars
        return (
            da.log_prob_with_tanh_correction(m, s, cfg3, raw_sample=x),
            da.log_prob_with_tanh_correction(m, s, cfg3, action=a),
            da.entropy_estimate(m, s, cfg3, raw_sample=x),
            tn.mode_action(m, cfg3),
        )

    vmapped = jax.vmap(jax.vmap(one))(mean, log_std, u, action)
    batched = one(mean, log_std, u, action)
    for v, bt in zip(vmapped, batched, strict=True):
        assert v.shape == bt.shape
        np.testing.assert_allclose(v, bt, rtol=1e-6, atol=1e-6)
    # Sampling: vmapping over split keys draws per-element normals with those keys.
    keys = jax.random.split(jax.random.key(15), t * b).reshape(t, b)
    _, u_v = jax.vmap(jax.vmap(lambda k, m, s: da.sample_action(k, m, s, cfg3)))(keys, mean, log_std)
    eps = jax.vmap(jax.vmap(lambda k: standard_normal(k, (3,))))(keys)
    np.testing.assert_allclose(u_v, mean + jnp.exp(log_std) * eps, rtol=1e-6, atol=1e-6)


def test_composes_under_grad_vmap_and_scan(cfg3):
    t, b = 6, 4
    mean0 = jnp.zeros((b, 3))

    def objective(params, key):
        def step(carry, k):
            m = carry + params["drift"][None]
            s = jnp.broadcast_to(params["log_std"], m.shape)
            _, u = da.sample_action(k, m, s, cfg3)
            lp = da.log_prob_with_tanh_correction(m, s, cfg3, raw_sample=u)
            ent = da.entropy_estimate(m, s, cfg3, raw_sample=u)
            return m, (lp, ent)

        _, (lp, ent) = jax.lax.scan(step, mean0, jax.random.split(key, t))
        assert lp.shape == (t, b)
        loss, _ = da.actor_loss(lp, ent, jnp.ones((t, b)), entropy_coef=0.1)
        return loss

    params = {"drift": jnp.array([0.1, -0.2, 0.3]), "log_std": jnp.array([-0.5, 0.0, 0.2])}
    keys = jax.random.split(jax.random.key(16), 3)
    losses, grads = jax.jit(jax.vmap(jax.value_and_grad(objective), in_axes=(None, 0)))(params, keys)
    assert losses.shape == (3,)
    for g in jax.tree.leaves(grads):
        assert g.shape[0] == 3 and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
    # The vmapped gradients equal the per-key ones.
    g1 = jax.grad(objective)(params, keys[1])
    chex.assert_trees_all_close(jax.tree.map(lambda g: g[1], grads), g1, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors(cfg3):
    m, s = jnp.zeros((2, 3)), jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"log_prob_with_tanh_correction: `mean` must have shape \[\.\.\., 3\]"):
        da.log_prob_with_tanh_correction(jnp.zeros((2, 4)), s, cfg3, raw_sample=m)
    with pytest.raises(ValueError, match=r"sample_action: `log_std` must have shape \(2, 3\) \(that of `mean`\)"):
        da.sample_action(jax.random.key(0), m, jnp.zeros((2, 2)), cfg3)
    with pytest.raises(
        ValueError, match=r"entropy_estimate: `log_std` must have shape \(2, 3\) \(that of `mean`\), got \(3, 3\)"
    ):
        da.entropy_estimate(m, jnp.zeros((3, 3)), cfg3, key=jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"`raw_sample` must have shape \(2, 3\) \(\[\*batch, action_dim\]\), got \(3,\)"
    ):
        da.log_prob_with_tanh_correction(m, s, cfg3, raw_sample=jnp.zeros((3,)))
    with pytest.raises(
        ValueError, match=r"`action` must have shape \(2, 3\) \(\[\*batch, action_dim\]\), got \(1, 2, 3\)"
    ):
        da.log_prob_with_tanh_correction(m, s, cfg3, action=jnp.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"exactly one of `raw_sample` or `action`"):
        da.log_prob_with_tanh_correction(m, s, cfg3)
    with pytest.raises(ValueError, match=r"exactly one of `raw_sample` or `action`"):
        da.log_prob_with_tanh_correction(m, s, cfg3, raw_sample=m, action=m)
    with pytest.raises(ValueError, match=r"exactly one of `raw_sample` or `key`"):
        da.entropy_estimate(m, s, cfg3)
    with pytest.raises(ValueError, match=r"`num_samples` must be a positive int"):
        da.entropy_estimate(m, s, cfg3, key=jax.random.key(0), num_samples=0)
    with pytest.raises(ValueError, match=r"`raw_sample` must be \[\.\.\., A\] or \[K, \.\.\., A\]"):
        da.entropy_estimate(m, s, cfg3, raw_sample=jnp.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match=r"`mean` must be floating point"):
        da.sample_action(jax.random.key(0), jnp.zeros((2, 3), jnp.int32), s, cfg3)
    with pytest.raises(ValueError, match=r"`log_std` must be floating point"):
        da.log_prob_with_tanh_correction(m, jnp.zeros((2, 3), jnp.int32), cfg3, raw_sample=m)
    with pytest.raises(ValueError, match=r"`action` must be floating point"):
        da.log_prob_with_tanh_correction(m, s, cfg3, action=jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"mode_action: `mean` must have shape \[\.\.\., 3\]"):
        tn.mode_action(jnp.zeros((2, 4)), cfg3)
    with pytest.raises(ValueError, match=r"as_distrax: `log_std` must have shape \(2, 3\) \(that of `mean`\)"):
        tn.as_distrax(m, jnp.zeros((2, 2)), cfg3)
    with pytest.raises(TypeError, match=r"`config` must be an ActorConfig"):
        da.sample_action(jax.random.key(0), m, s, {"scale": 1.0})
    with pytest.raises(ValueError, match=r"needs a 'tanh_normal' config, got distribution='bounded_normal'"):
        da.log_prob_with_tanh_correction(
            m, s, da.ActorConfig.create(low=LOW3, high=HIGH3, distribution="bounded_normal"), raw_sample=m
        )
