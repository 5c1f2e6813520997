"""The documented numerical domain, tested at its edges (docs/maths.md, "Run-time value policy").

* Latent inputs: with LayerNorm (the default) every output is finite for latents up to
  |x| = 1e20 and NaN at 1e30 (the LayerNorm variance overflows float32); RMSNorm and no norm
  are finite at 1e30.
* tanh_normal log-probs: finite for `log_std` in [-80, 80] (exp(+-log_std) finite in float32),
  also at `raw_sample == mean` where `0 * exp(-log_std)` used to be `0 * inf`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dreamer_actor as da


def _outputs_finite(norm: str, magnitude: float) -> bool:
    config = da.ActorConfig.create(action_dim=2, norm=norm, layers=2, units=32)
    hidden, stoch = jnp.zeros((4, 16)), jnp.zeros((4, 4, 4))
    params = da.Actor.from_config(config).init(jax.random.key(0), hidden, stoch)
    signs = jnp.broadcast_to(jnp.where(jnp.arange(16) % 2 == 0, 1.0, -1.0), hidden.shape)
    out = da.act(params, config, hidden + magnitude * signs, stoch, jax.random.key(1), training=True)
    return all(bool(jnp.all(jnp.isfinite(v))) for v in out)


@pytest.mark.parametrize("norm", ["layer", "rms", "none"])
@pytest.mark.parametrize("magnitude", [1.0, 1e10, 1e20])
def test_outputs_are_finite_for_latents_up_to_1e20(norm, magnitude):
    assert _outputs_finite(norm, magnitude)


def test_the_layernorm_domain_ends_before_1e30_and_the_others_do_not():
    assert not _outputs_finite("layer", 1e30)  # the documented end of the domain
    assert _outputs_finite("rms", 1e30) and _outputs_finite("none", 1e30)


@pytest.mark.parametrize("log_std", [-80.0, -20.0, 0.0, 20.0, 80.0])
@pytest.mark.parametrize("jit", [False, True])
def test_log_prob_is_finite_across_the_log_std_domain(log_std, jit):
    config = da.ActorConfig.create(low=-2.0, high=3.0, action_dim=3)
    mean = jnp.array([0.0, 5.0, -30.0])
    log_std = jnp.full(3, log_std)
    fn = jax.jit(da.log_prob_with_tanh_correction) if jit else da.log_prob_with_tanh_correction
    at_mean = fn(mean, log_std, config, raw_sample=mean)
    # Closed form at u = mean: -sum(log_std + 0.5 log 2 pi) - sum(log scale + log(1 - tanh^2)).
    expected = -np.sum(np.asarray(log_std, np.float64) + 0.5 * np.log(2 * np.pi)) - float(
        np.sum(np.log(2.5) + np.asarray(da.tanh_normal.log1m_tanh_sq(mean), np.float64))
    )
    np.testing.assert_allclose(float(at_mean), expected, rtol=1e-6, atol=2e-5)  # float32 sum of terms up to ~240
    grads = jax.grad(lambda m, s: fn(m, s, config, raw_sample=mean), argnums=(0, 1))(mean, log_std)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
