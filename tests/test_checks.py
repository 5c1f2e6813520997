"""The checkify paths: run-time value errors under jit."""

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
    return jax.jit(lambda m, s, c, a: da.checked_log_prob(m, s, c, action=a))


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
    err, _ = jax.jit(lambda m, s, c, u: da.checked_log_prob(m, s, c, pre_tanh=u))(m, s, cfg, jnp.full((1, 2), 30.0))
    assert err.get() is None


def test_out_of_range_action_is_flagged(cfg, checked_lp):
    m, s = jnp.zeros((2, 2)), jnp.zeros((2, 2))
    err, lp = checked_lp(m, s, cfg, jnp.array([[1.0, 0.5], [3.5, 0.5]]))
    assert "action outside [low, high]" in err.get()
    with pytest.raises(checkify.JaxRuntimeError, match=r"action outside \[low, high\]"):
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
    assert f"{which} has NaN or inf entries" in err.get()


def test_checked_act_flags_nan_hidden_and_passes_clean(cfg):
    h, z = jnp.ones((3, 4)), jnp.ones((3, 2, 2))
    params = da.Actor.from_config(cfg).init(jax.random.key(0), h, z)
    run = jax.jit(lambda p, c, hh, zz, k: da.checked_act(p, c, hh, zz, k, training=True))
    err, out = run(params, cfg, h, z, jax.random.key(1))
    assert err.get() is None
    ref = da.act(params, cfg, h, z, jax.random.key(1), training=True)
    np.testing.assert_allclose(out.log_prob, ref.log_prob, rtol=1e-6)
    err, _ = run(params, cfg, h.at[1, 2].set(jnp.nan), z, jax.random.key(1))
    assert "hidden has NaN or inf entries" in err.get()
    with pytest.raises(checkify.JaxRuntimeError, match="hidden has NaN"):
        err.throw()
    err, _ = run(params, cfg, h, z.at[0, 0, 0].set(jnp.inf), jax.random.key(1))
    assert "stoch has NaN or inf entries" in err.get()
    bad_params = jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), params)
    err, _ = run(bad_params, cfg, h, z, jax.random.key(1))
    assert "params" in err.get() and "NaN" in err.get()
