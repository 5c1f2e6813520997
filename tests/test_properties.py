"""Property tests: for any bounds, means, log-stds and keys, actions are in bounds and
log-probs, entropies and gradients are finite.

Deterministic in CI (`derandomize=True`); the function under test is jitted once, outside
the property, and the config travels as an argument (its bounds are leaves, so new bound
values do not retrace: asserted at the end).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dreamer_actor as da

A = 2
TRACES = []


@jax.jit
def _everything(config, mean, log_std, key):
    TRACES.append(1)

    def objective(m, s):
        action, u = da.sample_action(key, m, s, config)
        lp_u = da.log_prob_with_tanh_correction(m, s, config, raw_sample=u)
        lp_a = da.log_prob_with_tanh_correction(m, s, config, action=action)
        ent = da.entropy_estimate(m, s, config, raw_sample=u)
        return jnp.sum(lp_u + lp_a + ent), (action, lp_u, lp_a, ent)

    (_, aux), grads = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(mean, log_std)
    return aux, grads


widths = st.one_of(
    st.sampled_from([1e-3, 1.0, 1e4]),
    st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False),
)
lows = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
means = st.floats(min_value=-20.0, max_value=20.0, allow_nan=False, width=32)
log_stds = st.floats(min_value=-20.0, max_value=5.0, allow_nan=False, width=32)


@settings(deadline=None, max_examples=50, derandomize=True)
@given(
    low=st.lists(lows, min_size=A, max_size=A),
    width=st.lists(widths, min_size=A, max_size=A),
    mean=st.lists(means, min_size=3 * A, max_size=3 * A),
    log_std=st.lists(log_stds, min_size=3 * A, max_size=3 * A),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_actions_in_bounds_and_everything_finite(low, width, mean, log_std, seed):
    low = np.asarray(low, np.float64)
    high = low + np.asarray(width, np.float64)
    # The float32 values inside [low, high] nearest each end, computed here independently of the library.
    low32, high32 = low.astype(np.float32), high.astype(np.float32)
    low32 = np.where(low32 < low, np.nextafter(low32, np.float32(np.inf)), low32)
    high32 = np.where(high32 > high, np.nextafter(high32, np.float32(-np.inf)), high32)
    tiny = np.finfo(np.float32).tiny
    low32 = np.where((low32 > 0) & (low32 < tiny), tiny, low32).astype(np.float32)
    high32 = np.where((high32 < 0) & (high32 > -tiny), -tiny, high32).astype(np.float32)
    if not np.all(low32 < high32):
        # A range holding fewer than two float32 values cannot keep float32 actions inside it with a
        # non-degenerate policy: 1.0 rejects it, naming the reason (width 1e-3 at |low| >~ 8e3).
        with pytest.raises(ValueError, match=r"`low` and `high` are too close to be distinct in float32"):
            da.ActorConfig.create(low=low, high=high)
        return
    config = da.ActorConfig.create(low=low, high=high)
    np.testing.assert_array_equal(config.low, low32)
    np.testing.assert_array_equal(config.high, high32)
    mean = jnp.asarray(mean, jnp.float32).reshape(3, A)
    log_std = jnp.asarray(log_std, jnp.float32).reshape(3, A)
    (action, lp_u, lp_a, ent), (g_mean, g_log_std) = _everything(config, mean, log_std, jax.random.key(seed))
    lo, hi = jnp.broadcast_to(config.low, action.shape), jnp.broadcast_to(config.high, action.shape)
    assert bool(jnp.all((action >= lo) & (action <= hi))), (action, config.low, config.high)
    # ... and inside the bounds as given, in float64: the float32 leaves are rounded inwards (a subnormal
    # positive `low` / negative `high` to +-tiny, since XLA flushes subnormals to 0).
    action64 = np.asarray(action, np.float64)
    assert np.all((action64 >= low) & (action64 <= high)), (action, low, high)
    for name, x in (("lp_u", lp_u), ("lp_a", lp_a), ("entropy", ent), ("g_mean", g_mean), ("g_log_std", g_log_std)):
        assert bool(jnp.all(jnp.isfinite(x))), (name, x)


def test_new_bounds_do_not_retrace_the_function_under_test():
    z = jnp.zeros((3, A))
    for low, high in (([-1.0, 0.0], [1.0, 1e-3]), ([5e3, -7.0], [1e4, 3.0])):
        _everything(da.ActorConfig.create(low=low, high=high), z, z, jax.random.key(0))
    # One trace in this process, whether or not the property ran before (file order) in it.
    assert len(TRACES) == 1


def test_subnormal_bounds_are_kept_inside_although_xla_flushes_subnormals():
    """`low = 1e-40` (a float32 subnormal) would be flushed to 0 by XLA, outside the Box: it is rounded to tiny."""
    import gymnasium

    tiny = np.finfo(np.float32).tiny
    for low, high in ((1e-40, 1.0), (-1.0, -1e-40)):
        box = gymnasium.spaces.Box(low=np.float32(low), high=np.float32(high), shape=(1,))
        config = da.ActorConfig.from_space(box)
        assert float(config.low[0]) == (tiny if low > 0 else -1.0) and float(config.high[0]) == (
            -tiny if high < 0 else 1.0
        )
        for mean in (-30.0, 0.0, 30.0):
            m = jnp.full((64, 1), mean)
            action, _ = da.sample_action(jax.random.key(0), m, jnp.zeros_like(m), config)
            mode = da.tanh_normal.mode_action(m, config)
            assert all(box.contains(np.asarray(a)) for a in (*action, *mode)), (low, high, mean)
