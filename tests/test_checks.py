"""The checkify paths: run-time value errors under jit."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import dreamer_actor as da


@pytest.fixture(scope="module")
def cfg():
    return da.ActorConfig.create(low=[-2.0, 0.0], high=[3.0, 1.0], layers=1, units=8)


@pytest.fixture(scope="module")
def checked_lp():
    return jax.jit(lambda m, s, c, a: da.checked_log_prob((m, s), c, action=a))


def test_clean_inputs_pass_and_value_equals_unchecked(cfg, checked_lp):
    m, s = jnp.array([[0.2, -0.3]]), jnp.array([[0.0, -1.0]])
    a = jnp.array([[1.0, 0.5]])
    err, lp = checked_lp(m, s, cfg, a)
    assert err.get() is None
    err.throw()  # no-op
    np.testing.assert_allclose(lp, da.log_prob_with_tanh_correction(m, s, cfg, action=a), rtol=1e-6)
    # Exactly at the bounds is inside.
    m2, s2 = jnp.concatenate([m, m]), jnp.concatenate([s, s])
    err, lp = checked_lp(m2, s2, cfg, jnp.stack([cfg.low, cfg.high]))
    assert err.get() is None and bool(jnp.all(jnp.isfinite(lp)))
    err, _ = jax.jit(lambda m, s, c, u: da.checked_log_prob((m, s), c, raw_sample=u))(m, s, cfg, jnp.full((1, 2), 30.0))
    assert err.get() is None


def test_out_of_range_action_is_flagged(cfg, checked_lp):
    m, s = jnp.zeros((2, 2)), jnp.zeros((2, 2))
    err, lp = checked_lp(m, s, cfg, jnp.array([[1.0, 0.5], [3.5, 0.5]]))
    assert "action outside the support of tanh_normal" in err.get()
    with pytest.raises(checkify.JaxRuntimeError, match=r"action outside the support of tanh_normal"):
        err.throw()
    # The unchecked function would have returned a finite value (the clipped point).
    assert bool(jnp.all(jnp.isfinite(lp)))
    err, _ = checked_lp(m, s, cfg, jnp.array([[1.0, -1e-3], [0.0, 0.5]]))
    assert "action outside" in err.get()


@pytest.mark.parametrize("which", ["mean", "log_std", "action"])
def test_nan_inputs_are_flagged(cfg, checked_lp, which):
    args = {"mean": jnp.zeros((1, 2)), "log_std": jnp.zeros((1, 2)), "action": jnp.array([[0.0, 0.5]])}
    args[which] = args[which].at[0, 1].set(jnp.nan)
    err, _ = checked_lp(args["mean"], args["log_std"], cfg, args["action"])
    name = which if which == "action" else f"dist.{which}"
    assert f"{name} has NaN or inf entries" in err.get()


@pytest.mark.parametrize("distribution", ["tanh_normal", "bounded_normal"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_action_exactly_at_a_box_bound_is_inside(distribution, dtype):
    # Bounds that float32 cannot represent (for the float64 Box): the config rounds them
    # inwards, yet the Box's own bounds are valid actions and must not be reported.
    box = gymnasium.spaces.Box(
        low=np.array([-2.0, 0.1, -0.3], dtype), high=np.array([3.0, 0.7, 2.9], dtype), dtype=dtype
    )
    cfg = da.ActorConfig.from_space(box, distribution=distribution, layers=1, units=8)
    dist = da.policy_head(jnp.zeros((1, 6)), cfg)
    run = jax.jit(lambda d, c, a: da.checked_log_prob(d, c, action=a))
    for bound in (box.low, box.high):
        assert box.contains(bound)
        err, lp = run(dist, cfg, bound[None])
        assert err.get() is None, (bound, err.get())
        assert bool(jnp.all(jnp.isfinite(lp)))
    # Outside the Box (by 1e-3 in one dimension, either side) is reported.
    for outside in (box.low - np.array([0.0, 1e-3, 0.0]), box.high + np.array([0.0, 0.0, 1e-3])):
        assert not box.contains(outside.astype(dtype))
        err, _ = run(dist, cfg, outside[None])
        assert f"action outside the support of {distribution}" in err.get()


def test_categorical_action_must_be_a_one_hot():
    cfg = da.ActorConfig.create(distribution="categorical", action_dims=(2, 3), layers=1, units=8)
    dist = da.policy_head(jnp.zeros((2, 5)), cfg)
    run = jax.jit(lambda d, c, a: da.checked_log_prob(d, c, action=a))
    err, lp = run(dist, cfg, jnp.array([[1.0, 0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0, 0.0]]))
    assert err.get() is None and bool(jnp.all(jnp.isfinite(lp)))
    for bad in ([[1.0, 0.0, 0.0, 0.5, 0.5]], [[1.0, 1.0, 0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0, 0.0, 1.0]]):
        err, _ = run(dist, cfg, jnp.broadcast_to(jnp.asarray(bad), (2, 5)))
        assert "action outside the support of categorical" in err.get(), bad


def test_checked_act_flags_nan_hidden_and_passes_clean(cfg):
    h, z = jnp.ones((3, 4)), jnp.ones((3, 2, 2))
    params = da.Actor.from_config(cfg).init(jax.random.key(0), h, z)
    run = jax.jit(lambda p, c, hh, zz, k: da.checked_act(p, c, hh, zz, k, training=True))
    err, out = run(params, cfg, h, z, jax.random.key(1))
    assert err.get() is None
    ref = da.act(params, cfg, h, z, jax.random.key(1), training=True)
    for a, b in zip(out, ref, strict=True):  # jit vs eager: rounding only
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    err, _ = run(params, cfg, h.at[1, 2].set(jnp.nan), z, jax.random.key(1))
    assert "hidden has NaN or inf entries" in err.get()
    with pytest.raises(checkify.JaxRuntimeError, match="hidden has NaN"):
        err.throw()
    err, _ = run(params, cfg, h, z.at[0, 0, 0].set(jnp.inf), jax.random.key(1))
    assert "stoch has NaN or inf entries" in err.get()
    bad_params = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), params)
    err, _ = run(bad_params, cfg, h, z, jax.random.key(1))
    assert "params" in err.get() and "NaN" in err.get()


def _categorical_setup():
    cfg = da.ActorConfig.create(distribution="categorical", action_dim=4, layers=1, units=8)
    h, z = jnp.ones((3, 4)), jnp.ones((3, 2, 2))
    params = da.Actor.from_config(cfg).init(jax.random.key(0), h, z)
    return cfg, params, h, z


def test_categorical_nan_logits_give_nan_actions_never_a_valid_one_hot():
    cfg, params, h, z = _categorical_setup()
    # A NaN bias in the output layer: every logit is NaN.
    nan_bias = jax.tree_util.tree_map_with_path(
        lambda p, x: (
            x.at[1].set(jnp.nan) if "out" in jax.tree_util.keystr(p) and "bias" in jax.tree_util.keystr(p) else x
        ),
        params,
    )
    for run in (jax.jit, lambda f: f):
        sampled = run(lambda p, k: da.act(p, cfg, h, z, k, training=False))(nan_bias, jax.random.key(1))
        mode = run(lambda p: da.act(p, cfg, h, z, None, training=False, deterministic=True))(nan_bias)
        trained = run(lambda p, k: da.act(p, cfg, h, z, k, training=True))(nan_bias, jax.random.key(1))
        for action in (sampled, mode, trained.action):
            assert action.shape == (3, 4) and bool(jnp.all(jnp.isnan(action))), action
    # The same from the family functions, with a NaN in one logit of one row only.
    logits = jnp.zeros((2, 4)).at[1, 2].set(jnp.nan)
    action, raw = da.policy_sample(jax.random.key(2), (logits,), cfg)
    mode = da.policy_mode((logits,), cfg)
    for a in (action, raw, mode):
        np.testing.assert_array_equal(np.asarray(a[0]).sum(), 1.0)
        assert bool(jnp.all(jnp.isnan(a[1])))
    # Multi-discrete: only the head holding the NaN is NaN.
    multi = da.ActorConfig.create(distribution="categorical", action_dims=(2, 3), layers=1, units=8)
    logits = jnp.zeros((5,)).at[3].set(jnp.nan)
    for a in (da.policy_sample(jax.random.key(3), (logits,), multi)[0], da.policy_mode((logits,), multi)):
        np.testing.assert_array_equal(np.asarray(a[:2]).sum(), 1.0)
        assert bool(jnp.all(jnp.isnan(a[2:])))


def test_checked_act_reports_nan_params_and_the_networks_raw_outputs():
    cfg, params, h, z = _categorical_setup()
    run = jax.jit(lambda p, hh, k: da.checked_act(p, cfg, hh, z, k, training=False))
    run_mode = jax.jit(lambda p, hh: da.checked_act(p, cfg, hh, z, None, training=False, deterministic=True))
    err, _ = run(params, h, jax.random.key(1))
    assert err.get() is None
    # A NaN bias in the `out` layer: reported as that parameter.
    nan_bias = jax.tree_util.tree_map_with_path(
        lambda p, x: (
            x.at[0].set(jnp.nan) if "out" in jax.tree_util.keystr(p) and "bias" in jax.tree_util.keystr(p) else x
        ),
        params,
    )
    for err, action in (run(nan_bias, h, jax.random.key(1)), run_mode(nan_bias, h)):
        assert "params['params']['out']['bias'] has NaN or inf entries" in err.get()
        assert bool(jnp.all(jnp.isnan(action[:, 0])))
    # Finite params and latents whose outputs overflow to inf: reported as the raw outputs.
    huge = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.full_like(x, 3e38) if "out" in jax.tree_util.keystr(p) else x,
        params,
    )
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(huge))
    assert not bool(jnp.all(jnp.isfinite(da.Actor.from_config(cfg).apply(huge, h, z))))
    for err, _ in (run(huge, h, jax.random.key(1)), run_mode(huge, h)):
        assert "the network's raw outputs has NaN or inf entries" in err.get()
