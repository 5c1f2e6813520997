"""`standard_normal`: the policies' N(0, 1) noise, checked against the normal distribution.

Statistical checks use fixed keys and 200,000 samples; bounds are 5 standard errors
(a false alarm has probability < 1e-6 per check, and a fixed key makes it deterministic).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dreamer_actor._src.noise import standard_normal

N = 200_000


def _samples(shape=(N // 8, 8), key=0) -> np.ndarray:
    return np.asarray(standard_normal(jax.random.key(key), shape), np.float64).reshape(-1)


def test_moments_and_distribution_are_standard_normal():
    x = _samples()
    se = 1.0 / np.sqrt(N)
    assert abs(x.mean()) < 5 * se
    assert abs(x.var() - 1.0) < 5 * np.sqrt(2.0) * se
    assert abs(stats.skew(x)) < 5 * np.sqrt(6.0) * se
    assert abs(stats.kurtosis(x)) < 5 * np.sqrt(24.0) * se
    # Kolmogorov-Smirnov against N(0, 1): a wrong scale (e.g. 1.02) or shift (0.01) fails.
    assert stats.kstest(x, "norm").pvalue > 1e-4
    assert stats.kstest(1.02 * x, "norm").pvalue < 1e-4


def test_both_halves_are_standard_normal_and_independent():
    # The two halves come from two different draws: each must be N(0, 1) on its own, and
    # element i of one half must be uncorrelated with element i of the other.
    x = _samples()
    first, second = x[: N // 2], x[N // 2 :]
    for half in (first, second):
        assert stats.kstest(half, "norm").pvalue > 1e-4
    assert abs(np.corrcoef(first, second)[0, 1]) < 5 / np.sqrt(N // 2)
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 5 / np.sqrt(N)  # neighbours too


def test_deterministic_per_key_and_different_across_keys():
    a, b, c = _samples(key=3), _samples(key=3), _samples(key=4)
    np.testing.assert_array_equal(a, b)
    assert abs(np.corrcoef(a, c)[0, 1]) < 5 / np.sqrt(N)


@pytest.mark.parametrize("shape", [(), (1,), (2,), (3,), (5, 1), (0, 3), (4, 3, 2)])
def test_any_shape(shape):
    x = standard_normal(jax.random.key(0), shape)
    assert x.shape == shape and x.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtypes(dtype):
    x = standard_normal(jax.random.key(0), (1000,), dtype)
    assert x.dtype == dtype
    assert abs(float(jnp.mean(x.astype(jnp.float32)))) < 5 / np.sqrt(1000)


def test_raw_and_typed_keys_and_a_bad_dtype():
    raw = standard_normal(jax.random.PRNGKey(0), (10,))
    typed = standard_normal(jax.random.wrap_key_data(jax.random.PRNGKey(0)), (10,))
    np.testing.assert_array_equal(raw, typed)
    with pytest.raises(ValueError, match="`dtype` must be floating point"):
        standard_normal(jax.random.key(0), (3,), jnp.int32)


class StandardNormalVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_vmap_agree_with_the_plain_call(self):
        fn = self.variant(standard_normal, static_argnums=(1,))
        keys = jax.random.split(jax.random.key(1), 6)
        plain = np.stack([np.asarray(standard_normal(k, (3,))) for k in keys])
        np.testing.assert_array_equal(np.asarray(fn(keys[0], (3,))), plain[0])
        vmapped = jax.vmap(lambda k: standard_normal(k, (3,)))(keys)
        np.testing.assert_allclose(vmapped, plain, rtol=0, atol=0)


def test_small_arrays_are_one_plain_draw_and_large_ones_two_halves():
    key = jax.random.key(5)
    np.testing.assert_array_equal(standard_normal(key, (7, 6)), jax.random.normal(key, (7, 6)))
    first_key, second_key = jax.random.split(key)
    big = np.asarray(standard_normal(key, (1000, 6))).reshape(-1)
    np.testing.assert_array_equal(big[:3000], jax.random.normal(first_key, (3000,)))
    np.testing.assert_array_equal(big[3000:], jax.random.normal(second_key, (3000,)))
