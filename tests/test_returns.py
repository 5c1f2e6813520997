"""`lambda_returns` and `imagination_weights` against plain NumPy loops and closed forms.

References are computed in float64 NumPy from the same (float32) inputs; the JAX results
are float32, so they agree to float32 rounding (rtol 1e-5 over T <= 16 steps).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dreamer_actor as da


def _trajectory(seed, T=12, B=5, p_end=0.2):
    """Random float32 rewards/values/bootstrap and 0/1 continues with some terminations."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, B)).astype(np.float32)
    values = rng.normal(size=(T, B)).astype(np.float32) * 3.0
    continues = (rng.uniform(size=(T, B)) > p_end).astype(np.float32)
    bootstrap = rng.normal(size=(B,)).astype(np.float32) * 3.0
    return rewards, values, continues, bootstrap


def _numpy_lambda_returns(rewards, values, continues, bootstrap, discount, lambda_):
    """The textbook backward loop, in float64."""
    r, v, c, boot = (np.asarray(x, np.float64) for x in (rewards, values, continues, bootstrap))
    T = r.shape[0]
    out = np.zeros_like(r)
    next_return, next_value = boot, boot
    for t in reversed(range(T)):
        out[t] = r[t] + discount * c[t] * ((1 - lambda_) * next_value + lambda_ * next_return)
        next_return, next_value = out[t], v[t]
    return out


@pytest.mark.parametrize("lambda_", [0.0, 0.3, 0.95, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_lambda_returns_match_a_numpy_loop(lambda_, seed):
    r, v, c, boot = _trajectory(seed)
    discount = 0.97
    got = da.lambda_returns(r, v, c, boot, discount=discount, lambda_=lambda_)
    ref = _numpy_lambda_returns(r, v, c, boot, discount, lambda_)
    assert got.shape == r.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert (c == 0).any(), "the test data must contain terminations"


def test_lambda_one_is_the_bootstrapped_monte_carlo_return():
    r, v, c, boot = _trajectory(2, p_end=0.15)
    g = 0.9
    got = da.lambda_returns(r, v, c, boot, discount=g, lambda_=1.0)
    T = r.shape[0]
    r64, c64, b64 = (np.asarray(x, np.float64) for x in (r, c, boot))
    # R_t = sum_{k=t}^{T-1} (prod_{j=t}^{k-1} g c_j) r_k + (prod_{j=t}^{T-1} g c_j) v_T: values unused.
    ref = np.zeros_like(r64)
    for t in range(T):
        alive = np.ones_like(b64)
        for k in range(t, T):
            ref[t] += alive * r64[k]
            alive = alive * g * c64[k]
        ref[t] += alive * b64
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # The critic's values do not enter at lambda = 1.
    other = da.lambda_returns(r, v + 100.0, c, boot, discount=g, lambda_=1.0)
    np.testing.assert_array_equal(got, other)


def test_lambda_zero_is_the_one_step_td_target():
    r, v, c, boot = _trajectory(3)
    g = 0.8
    got = da.lambda_returns(r, v, c, boot, discount=g, lambda_=0.0)
    next_v = np.concatenate([v[1:], boot[None]], axis=0).astype(np.float64)
    ref = r.astype(np.float64) + g * c.astype(np.float64) * next_v
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_termination_cuts_the_future_and_traced_hyperparameters_work():
    r, v, c, boot = _trajectory(4)
    c[5] = 0.0  # every trajectory ends at the transition 5 -> 6
    g, lam = 0.99, 0.9
    base = da.lambda_returns(r, v, c, boot, discount=g, lambda_=lam)
    r2, v2, boot2 = r.copy(), v.copy(), boot + 50.0
    r2[6:] += 10.0
    v2[6:] -= 10.0
    moved = da.lambda_returns(r2, v2, c, boot2, discount=g, lambda_=lam)
    np.testing.assert_array_equal(base[:6], moved[:6])
    assert not np.allclose(base[6:], moved[6:])
    # discount and lambda as traced scalars: one compilation, same numbers.
    f = jax.jit(lambda g, lam: da.lambda_returns(r, v, c, boot, discount=g, lambda_=lam))
    np.testing.assert_allclose(f(jnp.float32(g), jnp.float32(lam)), base, rtol=1e-6)
    np.testing.assert_allclose(
        f(jnp.float32(0.5), jnp.float32(0.0)), _numpy_lambda_returns(r, v, c, boot, 0.5, 0.0), rtol=1e-5, atol=1e-5
    )
    assert f._cache_size() == 1


def test_lambda_returns_gradients_match_finite_differences():
    # dR_0/dr_t = prod_{j<t} g c_j lambda^{t}... checked generically with float64 central differences.
    r, v, c, boot = _trajectory(5, T=6, B=2)
    g, lam = 0.9, 0.7

    def total(r, v, boot):
        return jnp.sum(da.lambda_returns(r, v, c, boot, discount=g, lambda_=lam) * jnp.arange(1.0, 7.0)[:, None])

    grads = jax.grad(total, argnums=(0, 1, 2))(r, v, boot)
    weights = np.arange(1.0, 7.0)[:, None]

    def ref_total(r, v, boot):
        return np.sum(_numpy_lambda_returns(r, v, c, boot, g, lam) * weights)

    args = [np.asarray(x, np.float64) for x in (r, v, boot)]
    for i, grad in enumerate(grads):
        fd = np.zeros_like(args[i])
        for idx in np.ndindex(args[i].shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[i][idx] += 1e-6
            minus[i][idx] -= 1e-6
            fd[idx] = (ref_total(*plus) - ref_total(*minus)) / 2e-6
        np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-5)


def test_lambda_returns_jit_and_bfloat16_inputs():
    r, v, c, boot = _trajectory(6)
    ref = _numpy_lambda_returns(r, v, c, boot, 0.97, 0.95)
    got = jax.jit(lambda *a: da.lambda_returns(*a, discount=0.97))(r, v, c, boot)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    bf = da.lambda_returns(*(jnp.asarray(x, jnp.bfloat16) for x in (r, v, c, boot)), discount=0.97)
    assert bf.dtype == jnp.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rewards": np.zeros((3,), np.float32)}, "`rewards` must be \\[T, B\\]"),
        ({"values": np.zeros((3, 3), np.float32)}, "`values` must have the shape of `rewards`"),
        ({"continues": np.zeros((4, 2), np.float32)}, "`continues` must have the shape"),
        ({"bootstrap": np.zeros((3, 2), np.float32)}, "`bootstrap` must be \\[B\\]"),
        ({"continues": np.ones((3, 2), np.int32)}, "`continues` must be floating point"),
        ({"discount": 1.5}, "`discount` must be in \\[0.0, 1.0\\]"),
        ({"discount": jnp.ones(2)}, "`discount` must be a scalar"),
        ({"lambda_": -0.1}, "`lambda_` must be in"),
    ],
)
def test_lambda_returns_shape_and_value_errors_name_the_argument(kwargs, match):
    args = {
        "rewards": np.zeros((3, 2), np.float32),
        "values": np.zeros((3, 2), np.float32),
        "continues": np.ones((3, 2), np.float32),
        "bootstrap": np.zeros((2,), np.float32),
        "discount": 0.9,
        "lambda_": 0.95,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        da.lambda_returns(
            args["rewards"],
            args["values"],
            args["continues"],
            args["bootstrap"],
            discount=args["discount"],
            lambda_=args["lambda_"],
        )


def _numpy_weights(continues, discount):
    c = np.asarray(continues, np.float64)
    w = np.ones_like(c)
    for t in range(1, c.shape[0]):
        w[t] = w[t - 1] * discount * c[t - 1]
    return w


@pytest.mark.parametrize("discount", [1.0, 0.99, 0.5])
def test_imagination_weights_match_a_numpy_loop(discount):
    rng = np.random.default_rng(7)
    hard = (rng.uniform(size=(10, 6)) > 0.2).astype(np.float32)
    soft = rng.uniform(0.5, 1.0, size=(10, 6)).astype(np.float32)
    for c in (hard, soft):
        got = da.imagination_weights(c, discount)
        assert got.shape == c.shape and got.dtype == jnp.float32
        np.testing.assert_allclose(got, _numpy_weights(c, discount), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(got[0], 1.0)
    # After a termination the weight is 0 for every later state; the last flag is unused.
    c = np.ones((5, 1), np.float32)
    c[2] = 0.0
    c[4] = 0.0
    np.testing.assert_array_equal(da.imagination_weights(c, 1.0)[:, 0], [1.0, 1.0, 1.0, 0.0, 0.0])


def test_imagination_weights_carry_no_gradient():
    c = jnp.full((6, 3), 0.9)
    g_c, g_disc = jax.grad(lambda c, d: jnp.sum(da.imagination_weights(c, d)), argnums=(0, 1))(c, jnp.float32(0.99))
    np.testing.assert_array_equal(g_c, 0.0)
    assert float(g_disc) == 0.0
    # Under jit with a traced discount, too.
    w = jax.jit(da.imagination_weights)(c, jnp.float32(0.5))
    np.testing.assert_allclose(w, _numpy_weights(c, 0.5), rtol=1e-6)


def test_imagination_weights_errors():
    with pytest.raises(ValueError, match="imagination_weights: `continues` must be \\[T, B\\]"):
        da.imagination_weights(jnp.ones(3), 0.9)
    with pytest.raises(ValueError, match="`discount` must be in"):
        da.imagination_weights(jnp.ones((3, 2)), 2.0)
    with pytest.raises(ValueError, match="`continues` must be floating point"):
        da.imagination_weights(jnp.ones((3, 2), jnp.int32), 0.9)


def _numpy_official_weights(continues, discount, start_continues):
    """Official DreamerV3 `cumprod(disc * con, axis=time) / disc` over con = [c_start, c_0 .., c_{T-1}], as a loop."""
    con = np.concatenate([np.asarray(start_continues, np.float64)[None], np.asarray(continues, np.float64)], axis=0)
    T = con.shape[0] - 1
    out = np.zeros_like(con)
    running = np.ones_like(con[0])
    for t in range(T + 1):
        running = running * discount * con[t]
        out[t] = running / discount
    return out[:T]  # weights of the states s_0 .. s_{T-1} where actions are taken (official weight[:, :-1])


_JITS = pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])


@_JITS
@pytest.mark.parametrize("discount", [1.0, 0.99, 0.5])
def test_imagination_weights_with_start_continues_match_the_official_formula(discount, use_jit):
    rng = np.random.default_rng(11)
    T, B = 9, 6
    hard = (rng.uniform(size=(T, B)) > 0.2).astype(np.float32)
    soft = rng.uniform(0.5, 1.0, size=(T, B)).astype(np.float32)
    start_hard = np.array([1, 0, 1, 1, 0, 1], np.float32)  # two terminal start states
    start_soft = rng.uniform(0.0, 1.0, size=(B,)).astype(np.float32)
    f = jax.jit(da.imagination_weights) if use_jit else da.imagination_weights
    for c in (hard, soft):
        for start in (start_hard, start_soft):
            got = f(c, discount, start_continues=start)
            assert got.shape == (T, B) and got.dtype == jnp.float32
            np.testing.assert_allclose(got, _numpy_official_weights(c, discount, start), rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(got[0], start, rtol=1e-6)
        # A terminal start state has weight 0 at every step; an alive one is unchanged from the default.
        got = f(c, discount, start_continues=start_hard)
        np.testing.assert_array_equal(got[:, start_hard == 0], 0.0)
        np.testing.assert_array_equal(got[:, start_hard == 1], f(c, discount)[:, start_hard == 1])
    # Closed form w_t = g^t * c_start for continues that are all 1.
    got = f(np.ones((4, 2), np.float32), discount, start_continues=np.array([1.0, 0.25], np.float32))
    ref = discount ** np.arange(4.0)[:, None] * np.array([1.0, 0.25])[None]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


@_JITS
def test_imagination_weights_default_start_is_alive_and_positional_form_works(use_jit):
    rng = np.random.default_rng(12)
    c = (rng.uniform(size=(7, 4)) > 0.3).astype(np.float32)
    f = jax.jit(da.imagination_weights) if use_jit else da.imagination_weights
    default = f(c, 0.9)
    np.testing.assert_array_equal(default, f(c, 0.9, start_continues=None))
    np.testing.assert_allclose(default, f(c, 0.9, start_continues=np.ones(4, np.float32)), rtol=0, atol=0)
    np.testing.assert_allclose(default, _numpy_official_weights(c, 0.9, np.ones(4)), rtol=1e-6)
    np.testing.assert_allclose(default, _numpy_weights(c, 0.9), rtol=1e-6)
    # bfloat16 start flags promote to float32; no gradient flows into them.
    assert f(c, 0.9, start_continues=jnp.ones(4, jnp.bfloat16)).dtype == jnp.float32
    g = jax.grad(lambda s: jnp.sum(da.imagination_weights(c, 0.9, start_continues=s)))(jnp.full((4,), 0.5))
    np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize(
    ("start", "exc", "match"),
    [
        (np.ones((2, 1), np.float32), ValueError, "imagination_weights: `start_continues` must be \\[B\\] = \\(2,\\)"),
        (np.ones((3,), np.float32), ValueError, "`start_continues` must be \\[B\\]"),
        (np.float32(1.0), ValueError, "`start_continues` must be \\[B\\]"),
        (np.ones((3, 2), np.float32), ValueError, "`start_continues` must be \\[B\\]"),
        (np.ones((2,), np.int32), ValueError, "imagination_weights: `start_continues` must be floating point"),
        (np.ones((2,), bool), ValueError, "`start_continues` must be floating point"),
    ],
)
def test_imagination_weights_start_continues_errors(start, exc, match):
    with pytest.raises(exc, match=match):
        da.imagination_weights(jnp.ones((3, 2)), 0.9, start_continues=start)
    with pytest.raises(exc, match=match):
        jax.jit(lambda s: da.imagination_weights(jnp.ones((3, 2)), 0.9, start_continues=s))(start)


def _numpy_official_lambda_return(rew, con, value, disc, lam):
    """DreamerV3's lambda return in its own layout ([T + 1, B], predictions at s_0 .. s_T), as a loop."""
    rew, con, value = (np.asarray(x, np.float64) for x in (rew, con, value))
    T = rew.shape[0] - 1
    ret = np.zeros((T + 1, *rew.shape[1:]))
    ret[T] = value[T]
    for t in reversed(range(T)):
        live = disc * con[t + 1]
        ret[t] = rew[t + 1] + live * ((1 - lam) * value[t + 1] + lam * ret[t + 1])
    return ret[:T]


@_JITS
@pytest.mark.parametrize("disc", [1.0, 0.997])
def test_the_documented_mapping_from_world_model_outputs(disc, use_jit):
    # Official layout: con, rew, value predicted at the imagined states s_0 .. s_T.
    rng = np.random.default_rng(13)
    T, B = 10, 4
    rew = rng.normal(size=(T + 1, B)).astype(np.float32)
    value = rng.normal(size=(T + 1, B)).astype(np.float32) * 2.0
    con = rng.uniform(0.6, 1.0, size=(T + 1, B)).astype(np.float32)
    con[0, 1] = 0.0  # a terminal start state
    con[4, 2] = 0.0  # the imagined state s_4 is terminal

    def ours(rew, con, value):
        ret = da.lambda_returns(rew[1:], value[:-1], con[1:], value[-1], discount=disc, lambda_=0.95)
        weight = da.imagination_weights(con[1:], disc, start_continues=con[0])
        return ret, weight

    ret, weight = (jax.jit(ours) if use_jit else ours)(rew, con, value)
    np.testing.assert_allclose(ret, _numpy_official_lambda_return(rew, con, value, disc, 0.95), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weight, _numpy_official_weights(con[1:], disc, con[0]), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(weight[:, 1], 0.0)
    # con[4] = 0 is predicted at s_4: s_4 is terminal (c_3 = 0 ends the transition s_3 -> s_4), weight 0 from it on.
    np.testing.assert_array_equal(weight[4:, 2], 0.0)
    assert float(weight[3, 2]) > 0.0
