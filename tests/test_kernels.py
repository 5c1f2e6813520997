"""`ActorConfig.kernels` / `MLP.kernels`: the CPU-tuned custom VJPs and flax's own layers compute the same
network (same params, outputs and gradients to float rounding); `"auto"` picks by the backend at trace
time; forward mode works with `"flax"` and is refused with a `TypeError` by the custom VJPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dreamer_actor as da


def _actor(norm, kernels, dtype="float32"):
    cfg = da.ActorConfig.create(
        low=[-2.0, 0.0], high=[3.0, 1.0], layers=2, units=24, norm=norm, kernels=kernels, dtype=dtype
    )
    return cfg, da.Actor.from_config(cfg)


def _latent(rows=300):
    # 300 x 12 rows: small enough for a quick test; `hidden` and `stoch` as two parts of the first layer.
    k = jax.random.split(jax.random.key(0), 2)
    hidden = jax.random.normal(k[0], (rows, 12))
    stoch = jax.nn.one_hot(jax.random.randint(k[1], (rows, 3), 0, 4), 4)
    return hidden, stoch


def _has_custom_vjp(fn, *args) -> bool:
    return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("norm", ["layer", "rms", "none"])
def test_actor_kernels_give_the_same_params_outputs_and_gradients(norm):
    hidden, stoch = _latent()
    (_, cpu), (_, flax) = _actor(norm, "cpu"), _actor(norm, "flax")
    params = cpu.init(jax.random.key(1), hidden, stoch)
    params_flax = flax.init(jax.random.key(1), hidden, stoch)
    assert jax.tree.structure(params) == jax.tree.structure(params_flax)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_flax), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)  # the same initializers, in the same order
    np.testing.assert_allclose(
        cpu.apply(params, hidden, stoch), flax.apply(params, hidden, stoch), rtol=1e-5, atol=1e-6
    )

    def loss(model, p):
        raw = model.apply(p, hidden, stoch)
        return jnp.sum(jnp.sin(raw) * jnp.arange(raw.shape[-1])[None, :])

    g_cpu, g_flax = jax.grad(lambda p: loss(cpu, p))(params), jax.grad(lambda p: loss(flax, p))(params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_cpu), jax.tree.leaves(g_flax), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * float(jnp.max(jnp.abs(b))), err_msg=str(path))
    assert _has_custom_vjp(lambda p: cpu.apply(p, hidden, stoch), params)
    assert not _has_custom_vjp(lambda p: flax.apply(p, hidden, stoch), params)


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_mlp_kernels_give_the_same_params_outputs_and_gradients(norm):
    x = jax.random.normal(jax.random.key(2), (64, 10))
    cpu = da.networks.MLP(16, 2, out=5, norm=norm, kernels="cpu")
    flax = da.networks.MLP(16, 2, out=5, norm=norm, kernels="flax")
    params = cpu.init(jax.random.key(3), x)
    assert jax.tree.structure(params) == jax.tree.structure(flax.init(jax.random.key(3), x))
    np.testing.assert_allclose(cpu.apply(params, x), flax.apply(params, x), rtol=1e-5, atol=1e-6)
    g_cpu = jax.grad(lambda p: jnp.sum(cpu.apply(p, x) ** 2))(params)
    g_flax = jax.grad(lambda p: jnp.sum(flax.apply(p, x) ** 2))(params)
    for a, b in zip(jax.tree.leaves(g_cpu), jax.tree.leaves(g_flax), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * float(jnp.max(jnp.abs(b))))


def test_forward_mode_works_with_flax_kernels_and_is_refused_by_the_custom_vjps():
    hidden, stoch = _latent(40)
    (cfg, flax), (cfg_cpu, cpu) = _actor("layer", "flax"), _actor("layer", "cpu")
    params = flax.init(jax.random.key(1), hidden, stoch)
    direction = jax.tree.map(lambda p: jax.random.normal(jax.random.key(7), p.shape), params)

    def log_prob(model, config, p):
        dist = da.policy_head(model.apply(p, hidden, stoch), config)
        return jnp.sum(da.policy_log_prob(dist, config, raw_sample=jnp.full((40, 2), 0.3)))

    _, tangent = jax.jvp(lambda p: log_prob(flax, cfg, p), (params,), (direction,))
    # Against reverse mode through the custom VJPs: <grad, v>.
    grad = jax.grad(lambda p: log_prob(cpu, cfg_cpu, p))(params)
    expected = sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True))
    np.testing.assert_allclose(float(tangent), float(expected), rtol=1e-4)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda p: log_prob(cpu, cfg_cpu, p), (params,), (direction,))


def test_auto_picks_the_cpu_kernels_on_the_cpu_backend_and_flax_elsewhere(monkeypatch):
    hidden, stoch = _latent(8)
    cfg, auto = _actor("layer", "auto")
    assert cfg.kernels == "auto" == da.ActorConfig.create(action_dim=2).kernels  # the default
    params = auto.init(jax.random.key(1), hidden, stoch)
    assert jax.default_backend() == "cpu"
    assert _has_custom_vjp(lambda p: auto.apply(p, hidden, stoch), params)
    assert _has_custom_vjp(
        lambda p: da.networks.MLP(8, 1).apply(da.networks.MLP(8, 1).init(jax.random.key(0), hidden), hidden), None
    )
    for backend in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        assert not _has_custom_vjp(lambda p: auto.apply(p, hidden, stoch), params)
        mlp = da.networks.MLP(8, 1)
        assert not _has_custom_vjp(lambda p, mlp=mlp: mlp.apply(mlp.init(jax.random.key(0), hidden), hidden), None)


def test_a_bad_kernels_value_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"`kernels` must be one of \('auto', 'cpu', 'flax'\)"):
        da.ActorConfig.create(action_dim=2, kernels="gpu")
    with pytest.raises(ValueError, match=r"MLP: `kernels` must be one of"):
        da.networks.MLP(8, 1, kernels="cuda").init(jax.random.key(0), jnp.ones((2, 3)))
    config = da.ActorConfig.create(action_dim=2, kernels="flax")
    assert da.ActorConfig.from_dict(config.to_dict()).kernels == "flax"
    older = {k: v for k, v in config.to_dict().items() if k != "kernels"}  # a config written before the field
    assert da.ActorConfig.from_dict(older).kernels == "auto"


def test_bfloat16_trunk_kernels_agree_to_bfloat16_rounding():
    hidden, stoch = _latent(64)
    (_, cpu), (_, flax) = _actor("layer", "cpu", "bfloat16"), _actor("layer", "flax", "bfloat16")
    params = cpu.init(jax.random.key(1), hidden, stoch)
    a, b = cpu.apply(params, hidden, stoch), flax.apply(params, hidden, stoch)
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=0, atol=0.02 * float(jnp.max(jnp.abs(a))))
