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
        log_prob = da.log_prob_with_tanh_correction(mean, log_std, config, raw_sample=u_for_score)
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
    # reparameterize=True) returned before 1.0; it now returns the score log-prob at the
    # stop-gradiented sample, see the act tests below) is biased: its gradient is not the
    # score. The same check must reject it by a wide margin (measured: |z| ~ 56 and ~ 102).
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
        ({"rho": 1.5}, "`rho` must be in \\[0\\.0, 1\\.0\\]"),
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


# ------------------------------------------------------ every estimator fed straight from `act`
#
# A tiny actor on a differentiable toy world model: reward r(a) = -|a - target|^2 of the action
# `act(..., training=True, reparameterize=True)` returns. References are computed independently of
# `act`: the distribution is rebuilt from `Actor.apply` + `policy_head`, the sample is a constant
# (the concrete `raw_sample` of the same key), the score comes from `policy_log_prob` at it and the
# pathwise action is re-derived from the family's formula with the sample's noise held fixed.

FAMILY_OPTIONS = {
    "tanh_normal": {"low": [-2.0, 0.0], "high": [3.0, 1.0]},
    "bounded_normal": {"low": [-2.0, 0.0], "high": [3.0, 1.0], "distribution": "bounded_normal"},
    "categorical": {"distribution": "categorical", "action_dim": 3},
}
TARGETS = {"tanh_normal": [1.0, 0.3], "bounded_normal": [1.0, 0.3], "categorical": [0.2, 0.7, 0.1]}
LOSS_SCALE, BETA = 2.0, 0.1


def _toy_setup(family, batch=16, layers=1):
    # output_scale=1: a fresh policy away from its trivial init, so every gradient is non-zero.
    config = da.ActorConfig.create(**FAMILY_OPTIONS[family], layers=layers, units=8, output_scale=1.0)
    k1, k2 = jax.random.split(jax.random.key(1))
    hidden, stoch = jax.random.normal(k1, (batch, 5)), jax.random.normal(k2, (batch, 4))
    params = da.Actor.from_config(config).init(jax.random.key(0), hidden, stoch)
    target = jnp.asarray(TARGETS[family])
    baseline = jnp.full((batch,), -1.0)

    def reward(action):
        return -jnp.sum(jnp.square(action - jnp.broadcast_to(target, action.shape)), axis=-1)

    def dist_of(p):
        return da.policy_head(da.Actor.from_config(config).apply(p, hidden, stoch), config)

    return config, hidden, stoch, params, reward, baseline, dist_of


def _pathwise_action(family, config, dist, dist0, raw_sample):
    """The action as a differentiable function of `dist`, with the noise of the constant `raw_sample` fixed."""
    low, high = jnp.broadcast_to(config.low, raw_sample.shape), jnp.broadcast_to(config.high, raw_sample.shape)
    scale, bias = jnp.broadcast_to(config.scale, raw_sample.shape), jnp.broadcast_to(config.bias, raw_sample.shape)
    if family == "tanh_normal":
        eps = (raw_sample - dist0.mean) * jnp.exp(-dist0.log_std)
        return jnp.clip(jnp.tanh(dist.mean + jnp.exp(dist.log_std) * eps) * scale + bias, low, high)
    if family == "bounded_normal":
        eps = (raw_sample - dist0.mean) / dist0.std
        return jnp.clip(jnp.clip(dist.mean + dist.std * eps, -1.0, 1.0) * scale + bias, low, high)
    probs = da.categorical.probs(dist, config)  # straight-through: forward value the one-hot
    return raw_sample + probs - jax.lax.stop_gradient(probs)


@pytest.mark.parametrize("family", list(FAMILY_OPTIONS))
def test_every_estimator_fed_straight_from_act_matches_independent_references(family):
    config, hidden, stoch, params, reward, baseline, dist_of = _toy_setup(family)
    key = jax.random.key(2)

    def loss_from_act(p, estimator, rho=0.5):
        out = da.act(p, config, hidden, stoch, key, training=True, reparameterize=True)
        return da.policy_loss(
            out.log_prob,
            out.entropy,
            reward(out.action),
            baseline,
            estimator=estimator,
            rho=rho,
            scale=LOSS_SCALE,
            entropy_coef=BETA,
        )[0]

    # The independent pieces: a constant sample (same key, no gradient) and its advantage.
    out0 = da.act(params, config, hidden, stoch, key, training=True)
    raw0, dist0 = out0.raw_sample, dist_of(params)
    advantage = (reward(out0.action) - baseline) / LOSS_SCALE

    def reinforce_reference(p):  # the score-function estimator at stop_gradient(raw_sample)
        dist = dist_of(p)
        log_prob = da.policy_log_prob(dist, config, raw_sample=raw0)
        return -jnp.mean(advantage * log_prob + BETA * da.policy_entropy(dist, config, raw_sample=raw0))

    def dynamics_reference(p):  # the pathwise estimator through the re-derived action
        dist = dist_of(p)
        action = _pathwise_action(family, config, dist, dist0, raw0)
        entropy = da.policy_entropy(dist, config, raw_sample=raw0)
        return -jnp.mean((reward(action) - baseline) / LOSS_SCALE + BETA * entropy)

    grad = lambda f, *a: jax.grad(f)(params, *a)
    close = functools.partial(chex_close, rtol=1e-4, atol=1e-6)
    g_reinforce, g_dynamics = grad(loss_from_act, "reinforce"), grad(loss_from_act, "dynamics")
    close(g_reinforce, grad(reinforce_reference))
    close(g_dynamics, grad(dynamics_reference))
    for rho in (0.0, 0.3, 1.0):
        g_mix = grad(loss_from_act, "mix", rho)
        close(g_mix, jax.tree.map(lambda r, d, rho=rho: rho * r + (1 - rho) * d, g_reinforce, g_dynamics))
    # Not vacuous: the two estimators' per-sample gradients differ, and every gradient is non-zero.
    assert _tree_max_abs(jax.tree.map(jnp.subtract, g_reinforce, g_dynamics)) > 1e-3
    assert min(_tree_max_abs(g) for g in (g_reinforce, g_dynamics)) > 1e-3


@pytest.mark.parametrize("family", list(FAMILY_OPTIONS))
def test_act_log_prob_gradient_is_the_score_also_with_reparameterize(family):
    config, hidden, stoch, params, _, _, dist_of = _toy_setup(family)
    key = jax.random.key(3)
    weights = jax.random.normal(jax.random.key(4), (hidden.shape[0],))  # a generic linear functional

    def from_act(p):
        out = da.act(p, config, hidden, stoch, key, training=True, reparameterize=True)
        return jnp.sum(weights * out.log_prob), out

    (value, out), g_act = jax.value_and_grad(from_act, has_aux=True)(params)
    raw = jax.lax.stop_gradient(out.raw_sample)
    score = lambda p: jnp.sum(weights * da.policy_log_prob(dist_of(p), config, raw_sample=raw))
    np.testing.assert_allclose(value, score(params), rtol=1e-6)
    chex_close(g_act, jax.grad(score)(params), rtol=1e-5, atol=1e-7)
    # The log-prob of the *differentiable* sample has another gradient (the Gaussian part's dependence on
    # the mean cancels; for categorical the straight-through action carries the probabilities' gradient):
    # the test above tells the score from it.
    if family == "categorical":
        given = lambda p, o: {"action": o.action}
    else:
        given = lambda p, o: {"raw_sample": o.raw_sample}

    def of_differentiable_sample(p):
        o = da.act(p, config, hidden, stoch, key, training=True, reparameterize=True)
        return jnp.sum(weights * da.policy_log_prob(dist_of(p), config, **given(p, o)))

    g_other = jax.grad(of_differentiable_sample)(params)
    assert _tree_max_abs(jax.tree.map(jnp.subtract, g_other, g_act)) > 1e-2 * _tree_max_abs(g_act)


@pytest.mark.parametrize("family", ["tanh_normal", "bounded_normal"])
def test_reinforce_and_dynamics_from_act_agree_in_expectation(family):
    """Both are unbiased for the same gradient (pathwise: the action is continuous, a.e. differentiable in the
    parameters), so the per-sample difference of their gradients has mean 0: within 4 SE per component over
    N = 20,000 keys (fixed seed; measured max |z| over the 40 components: 2.1 tanh_normal, 2.6 bounded_normal).
    The check rejects the old wiring (REINFORCE on the log-prob of the differentiable sample) by far
    (measured max |z|: 233 and 152)."""
    config, hidden, stoch, params, reward, baseline, _ = _toy_setup(family, batch=1, layers=0)

    def per_sample(p, key, stop):
        out = da.act(p, config, hidden, stoch, key, training=True, reparameterize=True)
        if stop:
            log_prob = out.log_prob
        else:
            dist = da.policy_head(da.Actor.from_config(config).apply(p, hidden, stoch), config)
            log_prob = da.policy_log_prob(dist, config, raw_sample=out.raw_sample)
        ret = reward(out.action)
        reinforce = da.policy_loss(log_prob, out.entropy, ret, baseline, scale=LOSS_SCALE, entropy_coef=0.0)[0]
        dynamics = da.policy_loss(
            log_prob, out.entropy, ret, baseline, estimator="dynamics", scale=LOSS_SCALE, entropy_coef=0.0
        )[0]
        return reinforce - dynamics

    keys = jax.random.split(jax.random.key(5), N_SAMPLES)

    def z_scores(stop):
        g = jax.jit(jax.vmap(jax.grad(per_sample), in_axes=(None, 0, None)), static_argnums=2)(params, keys, stop)
        d = np.concatenate([np.asarray(x, np.float64).reshape(N_SAMPLES, -1) for x in jax.tree.leaves(g)], axis=1)
        se = d.std(axis=0, ddof=1) / np.sqrt(N_SAMPLES)
        assert np.all(se > 0)
        return d.mean(axis=0) / se

    z = z_scores(stop=True)
    assert np.all(np.abs(z) < K_SE), z
    z_old = z_scores(stop=False)
    assert np.max(np.abs(z_old)) > 5 * K_SE, z_old


def chex_close(a, b, rtol, atol):
    import chex

    chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)


def _tree_max_abs(tree):
    return max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(tree))
