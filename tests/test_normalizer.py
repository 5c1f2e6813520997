"""`ReturnNormalizer` against a NumPy re-implementation of DreamerV3's debiased EMA.

The reference is DreamerV3's own formulation (biased EMAs started at 0, divided by the
EMA of a constant 1), written as a float64 NumPy loop with `np.percentile`; ours keeps
the debiased value and updates it with a step size, so agreement checks the algebra too.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import dreamer_actor as da


def _batches(n, shape=(15, 64), seed=0):
    rng = np.random.default_rng(seed)
    # Drifting, heavy-tailed returns so that percentiles and the EMA both move.
    return [(rng.standard_t(3, size=shape) * (1 + 0.5 * i) + 2.0 * i).astype(np.float32) for i in range(n)]


def _numpy_dreamerv3(batches, rate, low=5.0, high=95.0, min_scale=1.0):
    """DreamerV3's Normalize(impl='perc', debias=True): EMA from 0, divided by EMA of 1."""
    lo = hi = corr = 0.0
    out = []
    for x in batches:
        x = np.asarray(x, np.float64)
        lo = (1 - rate) * lo + rate * np.percentile(x, low)
        hi = (1 - rate) * hi + rate * np.percentile(x, high)
        corr = (1 - rate) * corr + rate * 1.0
        lo_d, hi_d = lo / corr, hi / corr
        out.append((lo_d, hi_d, max(min_scale, hi_d - lo_d)))
    return out


@pytest.mark.parametrize("rate", [0.01, 0.3, 1.0])
def test_ema_matches_a_numpy_loop_over_several_updates(rate):
    batches = _batches(12)
    normalizer = da.ReturnNormalizer(rate=rate)
    state = normalizer.init()
    update = jax.jit(normalizer.update)
    for i, (x, (lo, hi, scale)) in enumerate(zip(batches, _numpy_dreamerv3(batches, rate), strict=True)):
        state, got_scale = update(state, x)
        assert int(state.count) == i + 1
        np.testing.assert_allclose(state.lo, lo, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(state.hi, hi, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_scale, scale, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got_scale, normalizer.scale(state))
        for leaf in (state.lo, state.hi, got_scale):
            assert leaf.dtype == jnp.float32 and leaf.shape == ()
        assert state.count.dtype == jnp.int32


def test_first_update_sets_the_batch_percentiles_and_init_scale_is_min_scale():
    normalizer = da.ReturnNormalizer(low_percentile=10.0, high_percentile=80.0, min_scale=0.5)
    state = normalizer.init()
    np.testing.assert_array_equal(normalizer.scale(state), 0.5)
    x = _batches(1)[0]
    state, scale = normalizer.update(state, x)
    np.testing.assert_allclose(state.lo, np.percentile(x.astype(np.float64), 10.0), rtol=1e-5)
    np.testing.assert_allclose(state.hi, np.percentile(x.astype(np.float64), 80.0), rtol=1e-5)
    np.testing.assert_allclose(scale, max(0.5, float(state.hi - state.lo)), rtol=1e-6)


def test_scale_is_at_least_one_and_small_returns_are_not_amplified():
    normalizer = da.ReturnNormalizer()
    state = normalizer.init()
    rng = np.random.default_rng(1)
    for _ in range(5):
        state, scale = normalizer.update(state, rng.normal(size=(8, 8)).astype(np.float32) * 1e-3)
        assert float(scale) == 1.0
    state, scale = normalizer.update(state, jnp.zeros((4, 4)))
    assert float(scale) == 1.0
    # Constant returns: hi - lo = 0 -> scale 1, never a division by zero.
    adv = da.normalize_advantage(jnp.full((4, 4), 3.0), jnp.ones((4, 4)), scale)
    np.testing.assert_array_equal(adv, 2.0)


def test_long_run_converges_to_the_plain_ema_and_stays_finite():
    # After many updates the debiasing factor -> 1: the same numbers as the NumPy reference.
    batches = _batches(300, shape=(4, 8), seed=3)
    normalizer = da.ReturnNormalizer()

    def body(state, x):
        state, scale = normalizer.update(state, x)
        return state, scale

    state, scales = jax.jit(lambda s, xs: jax.lax.scan(body, s, xs))(normalizer.init(), jnp.asarray(batches))
    ref = _numpy_dreamerv3(batches, 0.01)
    np.testing.assert_allclose(scales, [r[2] for r in ref], rtol=2e-5, atol=2e-5)
    assert int(state.count) == 300
    assert np.all(np.isfinite(scales)) and np.all(np.asarray(scales) >= 1.0)


def test_no_retrace_on_new_values_and_stats_carry_no_gradient():
    traces = []
    normalizer = da.ReturnNormalizer()

    @jax.jit
    def step(state, returns):
        traces.append(1)
        return normalizer.update(state, returns)

    state = normalizer.init()
    for x in _batches(4):
        state, _ = step(state, x)
    assert len(traces) == 1
    # The normalizer itself is a leafless pytree: it can be a jit argument.
    assert jax.tree_util.tree_leaves(normalizer) == []
    f = jax.jit(lambda n, s, x: n.update(s, x))
    f(normalizer, state, _batches(1)[0])
    f(normalizer, state, _batches(1, seed=9)[0])
    assert f._cache_size() == 1
    # Gradients: nothing flows into the returns through the statistics or the scale.
    x = jnp.asarray(_batches(1)[0])
    g = jax.grad(lambda r: normalizer.update(state, r)[1] + jnp.sum(normalizer.update(state, r)[0].hi))(x)
    np.testing.assert_array_equal(g, 0.0)


def test_normalize_advantage_gradients():
    returns, values = jnp.arange(6.0).reshape(2, 3), jnp.ones((2, 3))
    adv = da.normalize_advantage(returns, values, 4.0)
    np.testing.assert_allclose(adv, (np.arange(6.0).reshape(2, 3) - 1.0) / 4.0)
    g_r, g_v, g_s = jax.grad(lambda r, v, s: jnp.sum(da.normalize_advantage(r, v, s)), argnums=(0, 1, 2))(
        returns, values, jnp.float32(4.0)
    )
    np.testing.assert_allclose(g_r, 0.25)
    np.testing.assert_array_equal(g_v, 0.0)
    assert float(g_s) == 0.0
    with pytest.raises(ValueError, match="`values` must have the shape of `returns`"):
        da.normalize_advantage(returns, jnp.ones(3), 1.0)
    with pytest.raises(ValueError, match="`scale` must be a scalar"):
        da.normalize_advantage(returns, values, jnp.ones(2))


def test_state_round_trips_through_flax_serialization():
    normalizer = da.ReturnNormalizer()
    state = normalizer.init()
    for x in _batches(3):
        state, _ = normalizer.update(state, x)
    restored = serialization.from_bytes(normalizer.init(), serialization.to_bytes(state))
    assert isinstance(restored, da.ReturnNormalizerState)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
        assert jnp.asarray(a).dtype == jnp.asarray(b).dtype
    as_dict = serialization.to_state_dict(state)
    assert set(as_dict) == {"lo", "hi", "count"}
    # Continuing from the restored state gives the same next update.
    x = _batches(1, seed=5)[0]
    np.testing.assert_array_equal(normalizer.update(state, x)[1], normalizer.update(restored, x)[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"low_percentile": 95.0, "high_percentile": 5.0}, "`low_percentile` < `high_percentile`"),
        ({"high_percentile": 101.0}, "`high_percentile` <= 100"),
        ({"rate": 0.0}, "`rate` must be in \\(0, 1\\]"),
        ({"rate": 1.5}, "`rate` must be in"),
        ({"min_scale": 0.0}, "`min_scale` must be finite and > 0"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        da.ReturnNormalizer(**kwargs)


def test_bad_update_inputs_raise():
    normalizer = da.ReturnNormalizer()
    with pytest.raises(ValueError, match="`returns` must be floating point"):
        normalizer.update(normalizer.init(), jnp.ones((2, 2), jnp.int32))
    with pytest.raises(ValueError, match="`returns` is empty"):
        normalizer.update(normalizer.init(), jnp.ones((0, 2)))
    with pytest.raises(TypeError, match="`state` must be a ReturnNormalizerState"):
        normalizer.update((0.0, 0.0, 0), jnp.ones((2, 2)))


_SHARDED = textwrap.dedent(
    """
    import json
    import numpy as np
    import jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import dreamer_actor as da

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    # Each device's shard has a different distribution: local percentiles would be wrong.
    returns = (rng.normal(size=(15, 64)) * np.repeat(np.arange(1, 9), 8)[None] + np.repeat(np.arange(8), 8)[None] * 5)
    returns = returns.astype(np.float32)
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    sharded = jax.device_put(returns, NamedSharding(mesh, P(None, "batch")))
    assert len(sharded.sharding.device_set) == 8
    assert sharded.addressable_shards[0].data.shape == (15, 8)
    normalizer = da.ReturnNormalizer()
    update = jax.jit(normalizer.update)
    state0 = normalizer.init()
    s_state, s_scale = update(state0, sharded)
    u_state, u_scale = update(state0, jnp.asarray(returns))
    x64 = returns.astype(np.float64)
    first = returns[:, :8].astype(np.float64)
    print(json.dumps({
        "sharded": [float(s_state.lo), float(s_state.hi), float(s_scale)],
        "unsharded": [float(u_state.lo), float(u_state.hi), float(u_scale)],
        "numpy": [np.percentile(x64, 5), np.percentile(x64, 95)],
        "first_shard_numpy": [np.percentile(first, 5), np.percentile(first, 95)],
    }))
    """
)


def test_percentiles_are_global_when_the_batch_is_sharded_over_8_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["sharded"], out["unsharded"], rtol=1e-6)
    np.testing.assert_allclose(out["sharded"][:2], out["numpy"], rtol=1e-5)
    # The check has power: the first device's shard alone has very different percentiles.
    assert abs(out["first_shard_numpy"][1] - out["numpy"][1]) > 5.0
