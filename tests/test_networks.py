"""The `Actor` module: shapes, latent flattening, log-std range, initial std, bfloat16 trunk."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dreamer_actor as da


def _cfg(**kw):
    kw = {"layers": 2, "units": 32, **kw}
    return da.ActorConfig.create(low=[-2.0, 0.0, -1.0], high=[3.0, 1.0, 1.0], **kw)


@pytest.mark.parametrize("batch", [(), (7,), (4, 5), (2, 3, 2)])
def test_output_shapes_for_any_leading_dims(batch):
    cfg = _cfg()
    model = da.Actor.from_config(cfg)
    h, z = jnp.ones((*batch, 8)), jnp.ones((*batch, 6))
    params = model.init(jax.random.key(0), h, z)
    raw = model.apply(params, h, z)
    assert raw.shape == (*batch, 6) and raw.dtype == jnp.float32  # the raw layer: [raw_mean, raw_std]
    assert model.num_outputs == cfg.family.num_outputs(cfg) == 6
    mean, log_std = da.policy_head(raw, cfg)
    assert mean.shape == (*batch, 3) and log_std.shape == (*batch, 3)
    assert mean.dtype == jnp.float32 and log_std.dtype == jnp.float32


def test_categorical_stoch_is_flattened():
    cfg = _cfg()
    model = da.Actor.from_config(cfg)
    h = jax.random.normal(jax.random.key(1), (4, 5, 8))
    z = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (4, 5, 3), 0, 4), 4)  # [T, B, S=3, C=4]
    params = model.init(jax.random.key(0), h, z)
    out_cat = model.apply(params, h, z)
    out_flat = model.apply(params, h, z.reshape(4, 5, 12))
    assert out_cat.shape == (4, 5, 6)
    np.testing.assert_array_equal(out_cat, out_flat)
    # The first layer sees H + S * C = 8 + 12 inputs.
    assert params["params"]["dense_0"]["kernel"].shape == (20, 32)
    flat = da.networks.flatten_latent(h, z)
    np.testing.assert_array_equal(flat, np.concatenate([np.asarray(h), np.asarray(z).reshape(4, 5, 12)], -1))


def test_log_std_and_mean_stay_in_range_for_huge_raw_outputs():
    cfg = _cfg(log_std_min=-4.0, log_std_max=1.5, mean_limit=3.0)
    model = da.Actor.from_config(cfg)
    h = jax.random.normal(jax.random.key(3), (64, 8)) * 1e3
    z = jax.random.normal(jax.random.key(4), (64, 6)) * 1e3
    params = model.init(jax.random.key(0), h, z)
    # Blow the output layer up so raw outputs reach +-1e5.
    params = jax.tree_util.tree_map_with_path(lambda p, x: x * 1e5 if "out" in jax.tree_util.keystr(p) else x, params)
    mean, log_std = da.policy_head(model.apply(params, h, z), cfg)
    assert float(jnp.abs(mean).max()) > 2.9 and float(jnp.abs(mean).max()) <= 3.0
    assert float(log_std.min()) >= -4.0 and float(log_std.max()) <= 1.5
    # Both ends are reached (saturating sigmoid), and values are finite.
    assert float(log_std.min()) < -3.9 and float(log_std.max()) > 1.4
    assert bool(jnp.all(jnp.isfinite(mean)) & jnp.all(jnp.isfinite(log_std)))
    # The squash is smooth: gradients are finite.
    grads = jax.grad(lambda p: jnp.sum(da.policy_head(model.apply(p, h[:2], z[:2]), cfg).log_std))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_log_std_squash_matches_its_formula():
    """log_std = lo + (hi - lo) * sigmoid(raw + offset), offset so that raw = 0 gives log(init_std)."""
    cfg = da.ActorConfig.create(action_dim=1, log_std_min=-5.0, log_std_max=2.0, init_std=0.5, mean_limit=5.0)
    raw = np.linspace(-30.0, 30.0, 61)
    # The head splits the raw layer [..., 2A] into [raw_mean, raw_std] (A = 1 here).
    both = jnp.asarray(np.stack([raw, raw], -1), jnp.float32)
    frac = (math.log(0.5) + 5.0) / 7.0
    offset = math.log(frac / (1 - frac))
    ref = -5.0 + 7.0 / (1.0 + np.exp(-(raw + offset)))
    mean, log_std = da.policy_head(both, cfg)
    np.testing.assert_allclose(log_std[:, 0], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(da.policy_head(jnp.zeros(2), cfg).log_std, [math.log(0.5)], atol=1e-6)
    np.testing.assert_allclose(mean[:, 0], 5.0 * np.tanh(raw / 5.0), rtol=1e-5, atol=1e-6)
    unlimited = cfg.replace(mean_limit=None)
    np.testing.assert_array_equal(da.policy_head(both, unlimited).mean[:, 0], np.asarray(both[:, 0]))


@pytest.mark.parametrize("init_std", [1.0, 0.3])
def test_std_at_init_is_init_std(init_std):
    cfg = _cfg(init_std=init_std)
    model = da.Actor.from_config(cfg)
    h = jax.random.normal(jax.random.key(5), (256, 8))
    z = jax.random.normal(jax.random.key(6), (256, 6))
    mean, log_std = da.policy_head(model.apply(model.init(jax.random.key(7), h, z), h, z), cfg)
    # output_scale 0.01 keeps raw outputs ~0.1: the batch-mean log_std is within 0.05 nats of log(init_std).
    np.testing.assert_allclose(np.mean(np.asarray(log_std)), math.log(init_std), atol=0.05)
    assert float(jnp.abs(log_std - math.log(init_std)).max()) < 0.5
    assert float(jnp.abs(mean).max()) < 0.5


def test_bfloat16_trunk_outputs_float32_close_to_float32_trunk():
    cfg32, cfg16 = _cfg(), _cfg(dtype="bfloat16")
    h = jax.random.normal(jax.random.key(8), (32, 8))
    z = jax.random.normal(jax.random.key(9), (32, 6))
    params = da.Actor.from_config(cfg32).init(jax.random.key(10), h, z)
    # Make the outputs O(1) so the comparison means something.
    params = jax.tree_util.tree_map_with_path(lambda p, x: x * 30.0 if "out" in jax.tree_util.keystr(p) else x, params)
    out32 = da.Actor.from_config(cfg32).apply(params, h, z)
    out16 = da.Actor.from_config(cfg16).apply(params, h, z)
    # Compare the raw outputs and the head's parameters (mean, log_std) of both trunks.
    for a, b in zip((out32, *da.policy_head(out32, cfg32)), (out16, *da.policy_head(out16, cfg16)), strict=True):
        assert b.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(b)))
        # bfloat16 has an 8-bit mantissa (relative step 2^-8 = 0.004) per op, over 3 layers.
        np.testing.assert_allclose(b, a, atol=0.1, rtol=0.05)
        assert float(jnp.std(a)) > 0.1
    # Params stay float32.
    p16 = da.Actor.from_config(cfg16).init(jax.random.key(10), h, z)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(p16))


def test_categorical_and_bounded_normal_heads():
    cat = da.ActorConfig.create(distribution="categorical", action_dim=5, layers=1, units=16)
    model = da.Actor.from_config(cat)
    h, z = jnp.ones((3, 4)), jnp.ones((3, 2))
    raw = model.apply(model.init(jax.random.key(0), h, z), h, z)
    assert raw.shape == (3, 5) and model.num_outputs == 5
    dist = da.policy_head(raw, cat)
    assert isinstance(dist, da.categorical.Params) and dist._fields == ("logits",)
    np.testing.assert_array_equal(dist.logits, raw)  # the logits are the raw outputs
    bn = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=2, distribution="bounded_normal", layers=1, units=16)
    model = da.Actor.from_config(bn)
    raw = model.apply(model.init(jax.random.key(0), h, z), h, z)
    assert raw.shape == (3, 4) and model.num_outputs == 4
    dist = da.policy_head(raw, bn)
    assert isinstance(dist, da.bounded_normal.Params) and dist.mean.shape == dist.std.shape == (3, 2)


def test_hidden_and_stoch_mismatches_raise():
    model = da.Actor.from_config(_cfg())
    h = jnp.ones((4, 8))
    with pytest.raises(ValueError, match=r"leading \(batch\) dims of `hidden` \(4, 8\) and `stoch` \(5, 6\) differ"):
        model.init(jax.random.key(0), h, jnp.ones((5, 6)))
    with pytest.raises(ValueError, match=r"leading \(batch\) dims"):
        model.init(jax.random.key(0), h, jnp.ones((5, 3, 2)))
    with pytest.raises(ValueError, match=r"`stoch` must have shape \[\.\.\., Z\] or \[\.\.\., S, C\]"):
        model.init(jax.random.key(0), h, jnp.ones((2, 4, 3, 2)))
    with pytest.raises(ValueError, match=r"`hidden` must have shape \[\.\.\., H\]"):
        model.init(jax.random.key(0), jnp.ones(()), jnp.ones((6,)))
    with pytest.raises(ValueError, match=r"`hidden` must be a floating-point array"):
        model.init(jax.random.key(0), jnp.ones((4, 8), jnp.int32), jnp.ones((4, 6)))
    with pytest.raises(ValueError, match=r"`stoch` must be a floating-point array"):
        model.init(jax.random.key(0), h, jnp.ones((4, 6), jnp.int32))


def test_rmsnorm_and_no_norm_trunks_run():
    for norm in ("rms", "none"):
        cfg = _cfg(norm=norm, activation="relu")
        model = da.Actor.from_config(cfg)
        h, z = jnp.ones((2, 8)), jnp.ones((2, 6))
        params = model.init(jax.random.key(0), h, z)
        names = set(params["params"])
        assert ("norm_0" in names) == (norm == "rms")
        assert ("bias" in params["params"]["dense_0"]) == (norm == "none")
        mean, log_std = da.policy_head(model.apply(params, h, z), cfg)
        assert mean.shape == (2, 3) and bool(jnp.all(jnp.isfinite(log_std)))
