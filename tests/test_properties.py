"""Property tests: for any bounds, means, log-stds and keys, actions are in bounds and
log-probs, entropies and gradients are finite.

Deterministic in CI (`derandomize=True`); the function under test is jitted once, outside
the property, and the config travels as an argument (its bounds are leaves, so new bound
values do not retrace: asserted at the end).
"""

import jax
import jax.numpy as jnp
import numpy as np
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
        lp_u = da.log_prob_with_tanh_correction(m, s, config, pre_tanh=u)
        lp_a = da.log_prob_with_tanh_correction(m, s, config, action=action)
        ent = da.entropy_estimate(m, s, config, pre_tanh=u)
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
    config = da.ActorConfig.create(low=low, high=high)
    mean = jnp.asarray(mean, jnp.float32).reshape(3, A)
    log_std = jnp.asarray(log_std, jnp.float32).reshape(3, A)
    (action, lp_u, lp_a, ent), (g_mean, g_log_std) = _everything(config, mean, log_std, jax.random.key(seed))
    lo, hi = jnp.broadcast_to(config.low, action.shape), jnp.broadcast_to(config.high, action.shape)
    assert bool(jnp.all((action >= lo) & (action <= hi))), (action, config.low, config.high)
    for name, x in (("lp_u", lp_u), ("lp_a", lp_a), ("entropy", ent), ("g_mean", g_mean), ("g_log_std", g_log_std)):
        assert bool(jnp.all(jnp.isfinite(x))), (name, x)


def test_new_bounds_do_not_retrace_the_function_under_test():
    z = jnp.zeros((3, A))
    for low, high in (([-1.0, 0.0], [1.0, 1e-3]), ([5e3, -7.0], [1e4, 3.0])):
        _everything(da.ActorConfig.create(low=low, high=high), z, z, jax.random.key(0))
    # One trace in this process, whether or not the property ran before (file order) in it.
    assert len(TRACES) == 1
