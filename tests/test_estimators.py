"""`policy_loss`: closed forms, and unbiasedness of every estimator on an analytic bandit.

The bandit: one state, a 1-D tanh-Gaussian policy over bounds [-2, 3] with parameters
`theta = (mean, log_std)` of the pre-squash Gaussian, and reward `r(a) = -(a - a*)^2`.
The true objective `J(theta) = E[r(a)]` is computed by 200-node Gauss-Hermite quadrature
in NumPy float64 (the integrand is smooth: quadrature error << 1e-10), its gradient by
central finite differences of that (h = 1e-5). Each estimator's gradient is averaged over
N = 20,000 samples (fixed seed); its standard error SE is estimated from the per-sample
gradients. We require |mean - true| < 4 SE per component (a false alarm has probability
~6e-5 per component for a correct estimator), and check the test's power by showing that
a known-biased variant fails it by far.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dreamer_actor as da

LOW, HIGH, TARGET = -2.0, 3.0, 1.6
N_SAMPLES = 20_000
K_SE = 4.0
THETA = (0.4, float(np.log(0.6)))  # (mean, log_std) of the pre-squash Gaussian

_NODES, _WEIGHTS = np.polynomial.hermite.hermgauss(200)


def _true_objective(mean, log_std):
    """E_{u ~ N(mean, std^2)}[-(tanh(u) * scale + bias - a*)^2] by Gauss-Hermite, float64."""
    u = mean + np.sqrt(2.0) * np.exp(log_std) * _NODES
    a = np.tanh(u) * (HIGH - LOW) / 2 + (HIGH + LOW) / 2
    return float(np.sum(_WEIGHTS * -((a - TARGET) ** 2)) / np.sqrt(np.pi))


def _true_gradient(mean, log_std, h=1e-5):
    return np.array(
        [
            (_true_objective(mean + h, log_std) - _true_objective(mean - h, log_std)) / (2 * h),
            (_true_objective(mean, log_std + h) - _true_objective(mean, log_std - h)) / (2 * h),
        ]
    )


@functools.cache
def _per_sample_gradients(estimator, rho=0.5, score_of_reparameterized_sample=False):
    """`[N, 2]` float64 per-sample gradients of -policy_loss w.r.t. (mean, log_std)."""
    config = da.ActorConfig.create(low=LOW, high=HIGH, action_dim=1)
    baseline = jnp.full((1, 1), _true_objective(*THETA), jnp.float32)  # action-independent

    def objective(theta, key):
        mean, log_std = theta[:1], theta[1:]
        action, u = da.sample_action(key, mean, log_std, config, reparameterize=True)
        u_for_score = u if score_of_reparameterized_sample else jax.lax.stop_gradient(u)
        log_prob = da.log_prob_with_tanh_correction(mean, log_std, config, pre_tanh=u_for_score)
        reward = -jnp.sum(jnp.square(action - TARGET))  # differentiable through the action
        loss, _ = da.policy_loss(
            log_prob.reshape(1, 1),
            jnp.zeros((1, 1)),
            reward.reshape(1, 1),
            baseline,
            estimator=estimator,
            rho=rho,
            entropy_coef=0.0,
        )
        return -loss

    keys = jax.random.split(jax.random.key(0), N_SAMPLES)
    theta = jnp.asarray(THETA, jnp.float32)
    grads = jax.jit(jax.vmap(jax.grad(objective), in_axes=(None, 0)))(theta, keys)
    return np.asarray(grads, np.float64)


def _z_scores(grads):
    true = _true_gradient(*THETA)
    se = grads.std(axis=0, ddof=1) / np.sqrt(grads.shape[0])
    return (grads.mean(axis=0) - true) / se


@pytest.mark.parametrize(("estimator", "rho"), [("reinforce", 0.5), ("dynamics", 0.5), ("mix", 0.5), ("mix", 0.2)])
def test_every_estimator_is_unbiased_on_the_bandit(estimator, rho):
    grads = _per_sample_gradients(estimator, rho)
    assert np.all(np.isfinite(grads))
    z = _z_scores(grads)
    assert np.all(np.abs(z) < K_SE), f"{estimator}: mean {grads.mean(0)}, true {_true_gradient(*THETA)}, z {z}"


def test_the_bandit_check_has_power():
    # Feeding REINFORCE the log-prob *of the reparameterized sample* (what act(...,
    # reparameterize=True) returns) is biased: its gradient is not the score. The same
    # check must reject it by a wide margin (measured: |z| ~ 56 and ~ 102).
    z = _z_scores(_per_sample_gradients("reinforce", score_of_reparameterized_sample=True))
    assert np.max(np.abs(z)) > 10 * K_SE, z


def test_dynamics_has_lower_variance_than_reinforce_on_the_bandit():
    # Measured per-sample variances (mean, log_std): reinforce ~ (31.8, 44.9),
    # dynamics ~ (13.6, 6.5), mix(0.5) ~ (15.6, 16.9). Sampling error of a variance at
    # N = 20,000 is a few percent, far below the margins asserted here.
    var_reinforce = _per_sample_gradients("reinforce").var(axis=0)
    var_dynamics = _per_sample_gradients("dynamics").var(axis=0)
    ratio = var_dynamics / var_reinforce
    assert np.all(ratio < 0.6), ratio
    assert var_dynamics.sum() / var_reinforce.sum() < 0.4


def _inputs(shape=(6, 4), seed=0):
    k = jax.random.split(jax.random.key(seed), 5)
    log_prob = jax.random.normal(k[0], shape) - 1.0
    entropy = jax.random.normal(k[1], shape) + 0.5
    returns = jax.random.normal(k[2], shape) * 3.0
    baseline = jax.random.normal(k[3], shape)
    weights = jax.random.uniform(k[4], shape)
    return log_prob, entropy, returns, baseline, weights


def test_reinforce_is_actor_loss_with_the_normalized_advantage():
    lp, ent, ret, base, w = _inputs()
    scale, beta = 2.5, 0.1
    loss, metrics = da.policy_loss(lp, ent, ret, base, scale=scale, entropy_coef=beta, weights=w)
    ref_loss, ref_metrics = da.actor_loss(lp, ent, (ret - base) / scale, entropy_coef=beta, weights=w)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    assert set(metrics) == set(ref_metrics)
    for name in metrics:
        np.testing.assert_allclose(metrics[name], ref_metrics[name], rtol=1e-6, atol=1e-7)
    # Closed form in float64, and the gradient reaches only log_prob and entropy.
    lp64, ent64, ret64, base64, w64 = (np.asarray(x, np.float64) for x in (lp, ent, ret, base, w))
    adv = (ret64 - base64) / scale
    np.testing.assert_allclose(loss, -np.mean(w64 * (adv * lp64 + beta * ent64)), rtol=1e-5)
    grads = jax.grad(
        lambda *a: da.policy_loss(*a[:4], scale=a[4], entropy_coef=beta, weights=a[5])[0], argnums=tuple(range(6))
    )(lp, ent, ret, base, jnp.float32(scale), w)
    n = lp.size
    np.testing.assert_allclose(grads[0], -w64 * adv / n, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grads[1], -beta * w64 / n, rtol=1e-5, atol=1e-9)
    for g in grads[2:]:
        np.testing.assert_array_equal(g, 0.0)


def test_dynamics_closed_form_and_gradients():
    lp, ent, ret, base, w = _inputs(seed=1)
    scale, beta = 2.0, 0.3
    f = lambda *a: da.policy_loss(*a[:4], estimator="dynamics", scale=a[4], entropy_coef=beta, weights=a[5])
    loss, metrics = f(lp, ent, ret, base, jnp.float32(scale), w)
    ent64, ret64, base64, w64 = (np.asarray(x, np.float64) for x in (ent, ret, base, w))
    n = lp.size
    np.testing.assert_allclose(loss, -np.mean(w64 * ((ret64 - base64) / scale + beta * ent64)), rtol=1e-5)
    np.testing.assert_array_equal(metrics["loss"], loss)
    np.testing.assert_allclose(metrics["advantage_mean"], np.mean((ret64 - base64) / scale), rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda *a: f(*a)[0], argnums=tuple(range(6)))(lp, ent, ret, base, jnp.float32(scale), w)
    np.testing.assert_array_equal(grads[0], 0.0)  # the log-prob does not enter
    np.testing.assert_allclose(grads[1], -beta * w64 / n, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(grads[2], -w64 / (n * scale), rtol=1e-5, atol=1e-9)  # through the returns
    for g in grads[3:]:  # baseline, scale, weights
        np.testing.assert_array_equal(g, 0.0)
    # The metrics carry no gradient.
    g_metrics = jax.grad(lambda r: sum(f(lp, ent, r, base, jnp.float32(scale), w)[1].values()))(ret)
    np.testing.assert_array_equal(g_metrics, 0.0)


@pytest.mark.parametrize("rho", [0.0, 0.3, 1.0])
def test_mix_is_the_convex_combination_in_value_and_gradient(rho):
    lp, ent, ret, base, w = _inputs(seed=2)

    def loss(estimator, lp, ent, ret):
        return da.policy_loss(lp, ent, ret, base, estimator=estimator, rho=rho, scale=1.5, weights=w)[0]

    args = (lp, ent, ret)
    grad = lambda est: jax.grad(functools.partial(loss, est), argnums=(0, 1, 2))(*args)
    np.testing.assert_allclose(
        loss("mix", *args), rho * loss("reinforce", *args) + (1 - rho) * loss("dynamics", *args), rtol=1e-6
    )
    for g_mix, g_r, g_d in zip(grad("mix"), grad("reinforce"), grad("dynamics"), strict=True):
        np.testing.assert_allclose(g_mix, rho * g_r + (1 - rho) * g_d, rtol=1e-5, atol=1e-9)


def test_traced_rho_scale_and_entropy_coef_do_not_retrace():
    lp, ent, ret, base, w = _inputs(seed=3)
    f = jax.jit(
        lambda rho, scale, beta: da.policy_loss(
            lp, ent, ret, base, estimator="mix", rho=rho, scale=scale, entropy_coef=beta, weights=w
        )[0]
    )
    for rho, scale, beta in [(0.5, 1.0, 3e-4), (0.1, 4.0, 0.0), (0.9, 2.0, 1e-2)]:
        eager = da.policy_loss(lp, ent, ret, base, estimator="mix", rho=rho, scale=scale, entropy_coef=beta, weights=w)
        np.testing.assert_allclose(f(jnp.float32(rho), jnp.float32(scale), jnp.float32(beta)), eager[0], rtol=1e-6)
    assert f._cache_size() == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"estimator": "pathwise"}, "`estimator` must be one of \\('reinforce', 'dynamics', 'mix'\\)"),
        ({"estimator": None}, "`estimator` must be one of"),
        ({"rho": 1.5}, "`rho` must be in \\[0, 1\\]"),
        ({"rho": jnp.ones(2)}, "`rho` must be a scalar"),
        ({"scale": 0.0}, "`scale` must be > 0"),
        ({"scale": jnp.ones((1, 1))}, "`scale` must be a scalar"),
        ({"returns": jnp.zeros((3, 2))}, "`returns` must have the shape of `log_prob`"),
        ({"baseline": jnp.zeros(2)}, "`baseline` must have the shape of `log_prob`"),
        ({"returns": jnp.zeros((2, 2), jnp.int32)}, "`returns` must be floating point"),
        ({"entropy": jnp.zeros(2)}, "same shape"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
    args = {
        "log_prob": jnp.zeros((2, 2)),
        "entropy": jnp.zeros((2, 2)),
        "returns": jnp.zeros((2, 2)),
        "baseline": jnp.zeros((2, 2)),
    }
    options = {"estimator": "mix"}
    for name, value in kwargs.items():
        (args if name in args else options)[name] = value
    with pytest.raises(ValueError, match=match):
        da.policy_loss(args["log_prob"], args["entropy"], args["returns"], args["baseline"], **options)
