"""`ReturnNormalizer` against NumPy re-implementations of DreamerV3's `Normalize(impl='perc')`.

The references are float64 NumPy loops with `np.percentile` of the official update
(`x <- (1 - rate) * x + rate * percentile(batch)` from 0): the plain EMA for the default
`debias=False` (DreamerV3's `retnorm`), and for `debias=True` the same EMA divided by
`max(rate, corr)`, `corr` the EMA of a constant 1 (equivalently `ema / (1 - (1 - rate)^n)`).
Ours keeps the debiased value and updates it with a step size, so agreement checks the
algebra too.
"""

import json
import math
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization
from jax.experimental import checkify

import dreamer_actor as da

_JITS = pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])


def _maybe_jit(f, use_jit):
    return jax.jit(f) if use_jit else f


def _batches(n, shape=(15, 64), seed=0):
    rng = np.random.default_rng(seed)
    # Drifting, heavy-tailed returns so that percentiles and the EMA both move.
    return [(rng.standard_t(3, size=shape) * (1 + 0.5 * i) + 2.0 * i).astype(np.float32) for i in range(n)]


def _numpy_official(batches, rate, low=5.0, high=95.0, min_scale=1.0, debias=False):
    """DreamerV3's Normalize(impl='perc'): EMAs from 0; with debias, divided by max(rate, EMA of 1)."""
    lo = hi = corr = 0.0
    out = []
    for x in batches:
        x = np.asarray(x, np.float64)
        lo = (1 - rate) * lo + rate * np.percentile(x, low)
        hi = (1 - rate) * hi + rate * np.percentile(x, high)
        corr = (1 - rate) * corr + rate * 1.0
        factor = 1.0 / max(rate, corr) if debias else 1.0
        lo_d, hi_d = lo * factor, hi * factor
        out.append((lo_d, hi_d, max(min_scale, hi_d - lo_d)))
    return out


def _numpy_debiased_closed_form(batches, rate, low=5.0, high=95.0):
    """The pre-`debias`-option behaviour: `ema_n / (1 - (1 - rate)^n)`, with the bias factor in closed form."""
    lo = hi = 0.0
    out = []
    for n, x in enumerate(batches, start=1):
        x = np.asarray(x, np.float64)
        lo = (1 - rate) * lo + rate * np.percentile(x, low)
        hi = (1 - rate) * hi + rate * np.percentile(x, high)
        bias = 1.0 - (1.0 - rate) ** n
        out.append((lo / bias, hi / bias))
    return out


def _check_state_leaves(state, scale):
    for leaf in (state.lo, state.hi, scale):
        assert leaf.dtype == jnp.float32 and leaf.shape == ()
    assert state.count.dtype == jnp.int32 and state.skipped.dtype == jnp.int32


@_JITS
@pytest.mark.parametrize("rate", [0.01, 0.3, 1.0])
@pytest.mark.parametrize("debias", [False, True])
def test_ema_matches_a_numpy_loop_of_the_official_update(rate, debias, use_jit):
    batches = _batches(12)
    normalizer = da.ReturnNormalizer(rate=rate, debias=debias)
    state = normalizer.init()
    update = _maybe_jit(normalizer.update, use_jit)
    ref = _numpy_official(batches, rate, debias=debias)
    for i, (x, (lo, hi, scale)) in enumerate(zip(batches, ref, strict=True)):
        state, got_scale = update(state, x)
        assert int(state.count) == i + 1 and int(state.skipped) == 0
        np.testing.assert_allclose(state.lo, lo, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(state.hi, hi, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_scale, scale, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got_scale, normalizer.scale(state))
        _check_state_leaves(state, got_scale)


def test_default_is_the_plain_ema_of_official_dreamerv3():
    normalizer = da.ReturnNormalizer()
    assert normalizer.debias is False
    assert (normalizer.low_percentile, normalizer.high_percentile, normalizer.rate, normalizer.min_scale) == (
        5.0,
        95.0,
        0.01,
        1.0,
    )
    # The first plain update moves lo/hi only 1% of the way from 0 to the batch's percentiles.
    x = _batches(1)[0]
    state, _ = normalizer.update(normalizer.init(), x)
    np.testing.assert_allclose(state.lo, 0.01 * np.percentile(x.astype(np.float64), 5.0), rtol=1e-5)
    np.testing.assert_allclose(state.hi, 0.01 * np.percentile(x.astype(np.float64), 95.0), rtol=1e-5)


@_JITS
@pytest.mark.parametrize("rate", [0.01, 0.3])
def test_debias_true_reproduces_the_previous_debiased_statistic(rate, use_jit):
    batches = _batches(12, seed=4)
    normalizer = da.ReturnNormalizer(rate=rate, debias=True)
    update = _maybe_jit(normalizer.update, use_jit)
    state = normalizer.init()
    for x, (lo, hi) in zip(batches, _numpy_debiased_closed_form(batches, rate), strict=True):
        state, scale = update(state, x)
        np.testing.assert_allclose(state.lo, lo, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(state.hi, hi, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(scale, max(1.0, hi - lo), rtol=1e-5, atol=1e-5)


@_JITS
def test_early_gap_between_plain_and_debiased_matches_the_closed_form(use_jit):
    # Same batch every time, P5 = 50, P95 = 950: plain scale = (1 - 0.99^n) * 900, debiased 900.
    x = jnp.linspace(0.0, 1000.0, 101)[:, None]
    plain, debiased = da.ReturnNormalizer(), da.ReturnNormalizer(debias=True)
    up_plain, up_debiased = _maybe_jit(plain.update, use_jit), _maybe_jit(debiased.update, use_jit)
    s_plain, s_debiased = plain.init(), debiased.init()
    got = {}
    for n in range(1, 301):
        s_plain, scale_plain = up_plain(s_plain, x)
        s_debiased, scale_debiased = up_debiased(s_debiased, x)
        np.testing.assert_allclose(scale_debiased, 900.0, rtol=1e-5)
        np.testing.assert_allclose(scale_plain, max(1.0, (1 - 0.99**n) * 900.0), rtol=1e-4)
        got[n] = float(scale_plain) / float(scale_debiased)
    # The figures of the module docstring: 1% after one update, 9.6% / 63% / 95% after 10 / 100 / 300.
    np.testing.assert_allclose(got[1], 0.01, rtol=1e-4)
    np.testing.assert_allclose([got[10], got[100], got[300]], [0.0956, 0.6340, 0.9510], atol=1e-4)
    # A spread of 90 after one update: 0.9 is clamped to min_scale = 1 (1.1% of the spread).
    _, scale = plain.update(plain.init(), jnp.linspace(0.0, 100.0, 101)[:, None])
    assert float(scale) == 1.0


def test_first_debiased_update_sets_the_batch_percentiles_and_init_scale_is_min_scale():
    normalizer = da.ReturnNormalizer(low_percentile=10.0, high_percentile=80.0, min_scale=0.5, debias=True)
    state = normalizer.init()
    np.testing.assert_array_equal(normalizer.scale(state), 0.5)
    assert int(state.count) == 0 and int(state.skipped) == 0
    x = _batches(1)[0]
    state, scale = normalizer.update(state, x)
    np.testing.assert_allclose(state.lo, np.percentile(x.astype(np.float64), 10.0), rtol=1e-5)
    np.testing.assert_allclose(state.hi, np.percentile(x.astype(np.float64), 80.0), rtol=1e-5)
    np.testing.assert_allclose(scale, max(0.5, float(state.hi - state.lo)), rtol=1e-6)


@pytest.mark.parametrize("debias", [False, True])
def test_scale_is_at_least_one_and_small_returns_are_not_amplified(debias):
    normalizer = da.ReturnNormalizer(debias=debias)
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


@pytest.mark.parametrize("debias", [False, True])
def test_long_scan_matches_the_numpy_loop_and_stays_finite(debias):
    batches = _batches(300, shape=(4, 8), seed=3)
    normalizer = da.ReturnNormalizer(debias=debias)

    def body(state, x):
        state, scale = normalizer.update(state, x)
        return state, scale

    state, scales = jax.jit(lambda s, xs: jax.lax.scan(body, s, xs))(normalizer.init(), jnp.asarray(batches))
    ref = _numpy_official(batches, 0.01, debias=debias)
    np.testing.assert_allclose(scales, [r[2] for r in ref], rtol=2e-5, atol=2e-5)
    assert int(state.count) == 300 and int(state.skipped) == 0
    assert np.all(np.isfinite(scales)) and np.all(np.asarray(scales) >= 1.0)
    # After 300 updates the debiasing factor is 1 / (1 - 0.99^300) = 1.05: the two nearly agree.
    assert 1.0 / (1.0 - 0.99**300) == pytest.approx(1.0516, abs=1e-4)


@_JITS
@pytest.mark.parametrize("debias", [False, True])
def test_non_finite_batches_are_skipped_and_counted(debias, use_jit):
    normalizer = da.ReturnNormalizer(rate=0.3, debias=debias)
    update = _maybe_jit(normalizer.update, use_jit)
    good = _batches(4, seed=6)
    state, _ = update(normalizer.init(), good[0])
    before = state
    bad = []
    for value in (np.nan, np.inf, -np.inf):
        x = good[1].copy()
        x[3, 7] = value
        bad.append(x)
    for i, x in enumerate(bad):
        state, scale = update(state, x)
        np.testing.assert_array_equal(state.lo, before.lo)
        np.testing.assert_array_equal(state.hi, before.hi)
        assert int(state.count) == 1 and int(state.skipped) == i + 1
        np.testing.assert_array_equal(scale, normalizer.scale(before))
        _check_state_leaves(state, scale)
    # Later finite batches update normally, as if the bad ones never came.
    for x in good[1:]:
        state, scale = update(state, x)
    ref = _numpy_official(good, 0.3, debias=debias)[-1]
    np.testing.assert_allclose([state.lo, state.hi, scale], ref, rtol=1e-5, atol=1e-5)
    assert int(state.count) == 4 and int(state.skipped) == 3
    assert np.isfinite(float(state.lo)) and np.isfinite(float(state.hi))


def test_skip_policy_inside_a_scan():
    normalizer = da.ReturnNormalizer(rate=0.5)
    xs = np.stack(_batches(5, shape=(3, 4), seed=8))
    xs[1, 0, 0] = np.nan
    xs[3, 2, 1] = np.inf
    state, scales = jax.jit(lambda s, xs: jax.lax.scan(normalizer.update, s, xs))(normalizer.init(), jnp.asarray(xs))
    ref = _numpy_official([xs[0], xs[2], xs[4]], 0.5)
    assert int(state.count) == 3 and int(state.skipped) == 2
    np.testing.assert_allclose([state.lo, state.hi], ref[-1][:2], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(scales[1], scales[0])
    np.testing.assert_array_equal(scales[3], scales[2])


@_JITS
def test_checked_update_reports_non_finite_returns(use_jit):
    normalizer = da.ReturnNormalizer()
    checked = _maybe_jit(normalizer.checked_update, use_jit)
    x = _batches(1)[0]
    err, (state, scale) = checked(normalizer.init(), x)
    assert err.get() is None
    err.throw()  # no error: does not raise
    ref_state, ref_scale = normalizer.update(normalizer.init(), x)
    np.testing.assert_allclose([state.lo, state.hi, scale], [ref_state.lo, ref_state.hi, ref_scale], rtol=1e-6)
    assert int(state.count) == 1
    for value in (np.nan, np.inf):
        bad = x.copy()
        bad[0, 0] = value
        err, (bad_state, _) = checked(state, bad)
        with pytest.raises(checkify.JaxRuntimeError, match="returns has NaN or inf entries"):
            err.throw()
        # The state is update's: the batch was skipped.
        np.testing.assert_array_equal(bad_state.lo, state.lo)
        assert int(bad_state.count) == 1 and int(bad_state.skipped) == 1


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
    assert jax.tree_util.tree_leaves(da.ReturnNormalizer(debias=True)) == []
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


@pytest.mark.parametrize("debias", [False, True])
def test_state_round_trips_through_flax_serialization(debias):
    normalizer = da.ReturnNormalizer(debias=debias)
    state = normalizer.init()
    for x in _batches(3):
        state, _ = normalizer.update(state, x)
    state, _ = normalizer.update(state, jnp.full((2, 2), jnp.nan))
    assert int(state.skipped) == 1
    restored = serialization.from_bytes(normalizer.init(), serialization.to_bytes(state))
    assert isinstance(restored, da.ReturnNormalizerState)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
        assert jnp.asarray(a).dtype == jnp.asarray(b).dtype
    as_dict = serialization.to_state_dict(state)
    assert set(as_dict) == {"lo", "hi", "count", "skipped"}
    assert int(as_dict["skipped"]) == 1 and int(as_dict["count"]) == 3
    from_dict = serialization.from_state_dict(normalizer.init(), as_dict)
    assert isinstance(from_dict, da.ReturnNormalizerState)
    assert int(from_dict.skipped) == 1 and int(from_dict.count) == 3
    np.testing.assert_array_equal(from_dict.hi, state.hi)
    # A state dict from before the `skipped` field must be given one explicitly.
    old = {k: v for k, v in as_dict.items() if k != "skipped"}
    with pytest.raises(ValueError, match="Missing field skipped"):
        serialization.from_state_dict(normalizer.init(), old)
    assert int(serialization.from_state_dict(normalizer.init(), {**old, "skipped": 0}).skipped) == 0
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
        ({"min_scale": math.inf}, "`min_scale` must be finite"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        da.ReturnNormalizer(**kwargs)
    with pytest.raises(TypeError, match="ReturnNormalizer: `debias` must be a bool"):
        da.ReturnNormalizer(debias=1)


@pytest.mark.parametrize("method", ["update", "checked_update"])
def test_bad_update_inputs_raise(method):
    normalizer = da.ReturnNormalizer()
    fn = getattr(normalizer, method)
    name = f"ReturnNormalizer.{method}"
    with pytest.raises(ValueError, match=f"{name}: `returns` must be floating point, got dtype int32"):
        fn(normalizer.init(), jnp.ones((2, 2), jnp.int32))
    with pytest.raises(ValueError, match=f"{name}: `returns` must be floating point, got dtype bool"):
        fn(normalizer.init(), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match=f"{name}: `returns` is empty"):
        fn(normalizer.init(), jnp.ones((0, 2)))
    with pytest.raises(ValueError, match=f"{name}: `returns` is empty"):
        jax.jit(fn)(normalizer.init(), jnp.ones((3, 0)))
    with pytest.raises(TypeError, match=f"{name}: `state` must be a ReturnNormalizerState"):
        fn((0.0, 0.0, 0, 0), jnp.ones((2, 2)))
    with pytest.raises(TypeError, match=f"{name}: `state` must be a ReturnNormalizerState"):
        fn({"lo": 0.0, "hi": 0.0, "count": 0, "skipped": 0}, jnp.ones((2, 2)))
    batched = normalizer.init().replace(hi=jnp.zeros(3))
    with pytest.raises(ValueError, match=f"{name}: `state.hi` must be a scalar"):
        fn(batched, jnp.ones((2, 2)))
    with pytest.raises(TypeError, match=r"ReturnNormalizer\.scale: `state` must be a ReturnNormalizerState"):
        normalizer.scale((0.0, 0.0))


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
    normalizer = da.ReturnNormalizer(rate=1.0)  # the state is this batch's percentiles
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


def test_percentiles_are_global_when_the_batch_is_sharded_over_8_devices(host_devices_env):
    env = host_devices_env(8)
    proc = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["sharded"], out["unsharded"], rtol=1e-6)
    np.testing.assert_allclose(out["sharded"][:2], out["numpy"], rtol=1e-5)
    # The check has power: the first device's shard alone has very different percentiles.
    assert abs(out["first_shard_numpy"][1] - out["numpy"][1]) > 5.0


def test_the_initial_state_can_be_donated_to_a_jitted_update():
    """Every field is its own buffer (a shared zero would be 'donated twice')."""
    normalizer = da.ReturnNormalizer()
    state = normalizer.init()
    buffers = [leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(state)]
    assert len(set(buffers)) == len(buffers)
    update = jax.jit(normalizer.update, donate_argnums=0)
    new_state, scale = update(state, jnp.linspace(0.0, 10.0, 11))
    assert int(new_state.count) == 1 and float(scale) >= 1.0
