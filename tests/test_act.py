"""`act` end to end (tanh_normal): outputs vs the module + pure functions, gradients, jit, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dreamer_actor as da
from dreamer_actor._src.noise import standard_normal

LOW, HIGH = np.array([-2.0, 0.0]), np.array([3.0, 1.0])


@pytest.fixture(scope="module")
def setup():
    cfg = da.ActorConfig.create(low=LOW, high=HIGH, layers=1, units=16)
    h = jax.random.normal(jax.random.key(1), (4, 3, 8))
    z = jax.random.normal(jax.random.key(2), (4, 3, 2, 3))
    params = da.Actor.from_config(cfg).init(jax.random.key(0), h, z)
    # Make the outputs O(1) so that gradients and comparisons are not trivially small.
    params = jax.tree_util.tree_map_with_path(lambda p, x: x * 50.0 if "out" in jax.tree_util.keystr(p) else x, params)
    return cfg, params, h, z


def test_training_outputs_match_module_and_pure_functions(setup):
    cfg, params, h, z = setup
    key = jax.random.key(3)
    out = da.act(params, cfg, h, z, key, training=True)
    assert isinstance(out, da.ActorOutput)
    assert out.action.shape == (4, 3, 2) and out.log_prob.shape == (4, 3) and out.entropy.shape == (4, 3)
    mean, log_std = da.policy_head(da.Actor.from_config(cfg).apply(params, h, z), cfg)
    action, u = da.sample_action(key, mean, log_std, cfg)
    np.testing.assert_allclose(out.action, action, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.raw_sample, u, rtol=1e-6, atol=1e-6)
    assert da.ActorOutput._fields == ("action", "raw_sample", "log_prob", "entropy")
    np.testing.assert_allclose(
        out.log_prob, da.log_prob_with_tanh_correction(mean, log_std, cfg, raw_sample=u), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(out.entropy, da.entropy_estimate(mean, log_std, cfg, raw_sample=u), rtol=1e-5, atol=1e-5)
    # Acting: same sample, action only; deterministic: the squashed mean.
    np.testing.assert_allclose(da.act(params, cfg, h, z, key, training=False), action, rtol=1e-6, atol=1e-6)
    mode = da.act(params, cfg, h, z, None, training=False, deterministic=True)
    np.testing.assert_allclose(
        mode, np.tanh(np.asarray(mean, np.float64)) * (HIGH - LOW) / 2 + (HIGH + LOW) / 2, rtol=1e-5, atol=1e-6
    )
    low, high = jnp.broadcast_to(cfg.low, action.shape), jnp.broadcast_to(cfg.high, action.shape)
    assert bool(jnp.all((out.action >= low) & (out.action <= high)))


def test_action_carries_no_gradient_to_params(setup):
    cfg, params, h, z = setup

    def action_only_loss(p):
        a = da.act(p, cfg, h, z, jax.random.key(4), training=True).action
        return jnp.sum(jnp.square(a - 0.3))

    grads = jax.grad(action_only_loss)(params)
    for g in jax.tree.leaves(grads):
        np.testing.assert_array_equal(g, 0.0)
    # ...while the log-prob does carry one (REINFORCE path).
    g_lp = jax.grad(lambda p: jnp.sum(da.act(p, cfg, h, z, jax.random.key(4), training=True).log_prob))(params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_lp)) > 0


def test_reparameterized_action_gradient_matches_finite_differences(setup):
    cfg, params, h, z = setup
    key = jax.random.key(5)
    w = jnp.broadcast_to(jnp.array([1.0, -3.0]), (4, 3, 2))

    def f(p):
        a = da.act(p, cfg, h, z, key, training=False, reparameterize=True)
        return jnp.sum(w * a)

    grads = jax.grad(f)(params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 0
    # Directional derivative along a random direction vs a central difference.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(6), len(leaves))
    direction = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)])
    analytic = sum(
        float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True)
    )
    eps = 1e-3
    shifted = lambda s: jax.tree.map(lambda x, d: x + s * eps * d, params, direction)
    numeric = (float(f(shifted(1.0))) - float(f(shifted(-1.0)))) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2)


def test_per_sample_act_vmapped_over_time_and_batch_equals_batched_call(setup):
    cfg, params, h, z = setup

    def one(hh, zz):
        return da.act(params, cfg, hh, zz, None, training=False, deterministic=True)

    np.testing.assert_allclose(jax.vmap(jax.vmap(one))(h, z), one(h, z), rtol=1e-5, atol=1e-6)
    # Sampling per element with its own key equals the batched call with those noises.
    keys = jax.random.split(jax.random.key(7), 12).reshape(4, 3)
    per = jax.vmap(jax.vmap(lambda k, hh, zz: da.act(params, cfg, hh, zz, k, training=True)))(keys, h, z)
    mean, log_std = da.policy_head(da.Actor.from_config(cfg).apply(params, h, z), cfg)
    eps = jax.vmap(jax.vmap(lambda k: standard_normal(k, (2,))))(keys)
    u = mean + jnp.exp(log_std) * eps
    np.testing.assert_allclose(per.action, da.tanh_normal.squash(u, cfg), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        per.log_prob, da.log_prob_with_tanh_correction(mean, log_std, cfg, raw_sample=u), rtol=1e-4, atol=1e-4
    )


def test_act_inside_scan_with_a_loss_gives_finite_nonzero_grads(setup):
    cfg, params, h, z = setup

    def rollout_loss(p, key):
        def step(carry, inp):
            k, hh, zz = inp
            out = da.act(p, cfg, hh, zz, k, training=True)
            return carry, out

        _, outs = jax.lax.scan(step, None, (jax.random.split(key, 4), h, z))
        adv = -jnp.sum(jnp.square(outs.action - 0.5), axis=-1)
        return da.actor_loss(outs.log_prob, outs.entropy, adv - jnp.mean(adv))[0]

    grads = jax.jit(jax.grad(rollout_loss))(params, jax.random.key(8))
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert max(float(jnp.abs(g).max()) for g in leaves) > 0


class ActVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_act(self):
        cfg = da.ActorConfig.create(low=LOW, high=HIGH, layers=1, units=8)
        h, z = jnp.ones((5, 4)), jnp.ones((5, 3))
        params = da.Actor.from_config(cfg).init(jax.random.key(0), h, z)
        out = self.variant(lambda p, c, hh, zz, k: da.act(p, c, hh, zz, k, training=True))(
            params, cfg, h, z, jax.random.key(1)
        )
        mean, log_std = da.policy_head(da.Actor.from_config(cfg).apply(params, h, z), cfg)
        a, u = da.sample_action(jax.random.key(1), mean, log_std, cfg)
        np.testing.assert_allclose(out.action, a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            out.log_prob, da.log_prob_with_tanh_correction(mean, log_std, cfg, raw_sample=u), rtol=1e-5, atol=1e-5
        )


def test_bad_arguments_raise(setup):
    cfg, params, h, z = setup
    with pytest.raises(TypeError, match=r"`training` must be a Python bool"):
        da.act(params, cfg, h, z, jax.random.key(0), training=1)
    with pytest.raises(TypeError, match=r"`training` must be a Python bool"):
        da.act(params, cfg, h, z, jax.random.key(0), training=jnp.array(True))
    with pytest.raises(TypeError, match=r"`deterministic` must be a Python bool"):
        da.act(params, cfg, h, z, jax.random.key(0), training=False, deterministic="yes")
    with pytest.raises(ValueError, match=r"`key` \(a PRNG key\) is required"):
        da.act(params, cfg, h, z, None, training=True)
    with pytest.raises(ValueError, match=r"`deterministic=True` is for acting only"):
        da.act(params, cfg, h, z, None, training=True, deterministic=True)
    with pytest.raises(ValueError, match=r"leading \(batch\) dims of `hidden`"):
        da.act(params, cfg, h[:2], z, jax.random.key(0), training=False)
    with pytest.raises(ValueError, match=r"`hidden` must be a floating-point array"):
        da.act(params, cfg, h.astype(jnp.int32), z, jax.random.key(0), training=False)


# ------------------------------------------------------------------ every family

FAMILY_CONFIGS = {
    "tanh_normal": lambda: da.ActorConfig.create(low=LOW, high=HIGH, layers=1, units=16),
    "bounded_normal": lambda: da.ActorConfig.create(
        low=LOW, high=HIGH, layers=1, units=16, distribution="bounded_normal"
    ),
    "categorical": lambda: da.ActorConfig.create(distribution="categorical", action_dims=(3, 2), layers=1, units=16),
}


def _family_setup(distribution, out_scale=50.0):
    cfg = FAMILY_CONFIGS[distribution]()
    h = jax.random.normal(jax.random.key(1), (4, 3, 8))
    z = jax.random.normal(jax.random.key(2), (4, 3, 2, 3))
    params = da.Actor.from_config(cfg).init(jax.random.key(0), h, z)
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x * out_scale if "out" in jax.tree_util.keystr(p) else x, params
    )
    return cfg, params, h, z


@pytest.mark.parametrize("distribution", list(FAMILY_CONFIGS))
@pytest.mark.parametrize("reparameterize", [False, True])
def test_log_prob_is_the_score_function_whatever_reparameterize_is(distribution, reparameterize):
    cfg, params, h, z = _family_setup(distribution)
    key = jax.random.key(11)
    weights = jax.random.normal(jax.random.key(12), (4, 3))

    def from_act(p):
        out = da.act(p, cfg, h, z, key, training=True, reparameterize=reparameterize)
        return jnp.sum(weights * out.log_prob), out

    def reference(p, raw_sample):
        dist = da.policy_head(da.Actor.from_config(cfg).apply(p, h, z), cfg)
        return jnp.sum(weights * da.policy_log_prob(dist, cfg, raw_sample=jax.lax.stop_gradient(raw_sample)))

    (value, out), grads = jax.value_and_grad(from_act, has_aux=True)(params)
    ref_value, ref_grads = jax.value_and_grad(reference)(params, out.raw_sample)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6 * float(jnp.abs(r).max()))
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 0
    # The same raw_sample as a plain sample with that key (reparameterize changes gradients only).
    dist = da.policy_head(da.Actor.from_config(cfg).apply(params, h, z), cfg)
    action, raw = da.policy_sample(key, dist, cfg)
    np.testing.assert_allclose(out.raw_sample, raw, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.action, action, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("distribution", list(FAMILY_CONFIGS))
def test_reparameterized_raw_sample_carries_the_pathwise_gradient(distribution):
    cfg, params, h, z = _family_setup(distribution)
    w = jax.random.normal(jax.random.key(13), (4, 3, cfg.action_dim))

    def raw_sum(p, reparameterize):
        out = da.act(p, cfg, h, z, jax.random.key(14), training=True, reparameterize=reparameterize)
        return jnp.sum(w * out.raw_sample)

    g_rp = jax.grad(raw_sum)(params, True)
    g_sg = jax.grad(raw_sum)(params, False)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_sg))
    # categorical's raw_sample is the one-hot without gradient; the Gaussians' is pathwise.
    moved = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_rp))
    assert (moved > 0.0) == (distribution != "categorical")


def test_bounded_normal_raw_sample_is_unclipped_and_the_action_clipped():
    cfg, params, h, z = _family_setup("bounded_normal", out_scale=1.0)
    # A wide std (the default max_std = 1 and raw_std ~ 0: std ~ 0.9): many samples fall outside [-1, 1].
    assert cfg.max_std == 1.0
    keys = jax.random.split(jax.random.key(15), 8)
    outs = [da.act(params, cfg, h, z, k, training=True) for k in keys]
    raw = np.concatenate([np.asarray(o.raw_sample, np.float64) for o in outs])
    action = np.concatenate([np.asarray(o.action, np.float64) for o in outs])
    assert np.any(raw > 1.0) and np.any(raw < -1.0)
    low32, high32 = np.asarray(cfg.low, np.float64), np.asarray(cfg.high, np.float64)
    assert np.all((action >= low32) & (action <= high32))
    assert np.any(action == low32) and np.any(action == high32)  # the clip really happens
    scale, bias = (HIGH - LOW) / 2, (HIGH + LOW) / 2
    np.testing.assert_allclose(action, np.clip(raw, -1.0, 1.0) * scale + bias, rtol=1e-6, atol=1e-6)
    # The log-prob is the Normal's at the unclipped sample (numpy float64).
    dist = da.policy_head(da.Actor.from_config(cfg).apply(params, h, z), cfg)
    m, s = (np.asarray(x, np.float64) for x in dist)
    x = np.asarray(outs[0].raw_sample, np.float64)
    ref = np.sum(-0.5 * ((x - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi) - np.log(scale), -1)
    np.testing.assert_allclose(outs[0].log_prob, ref, rtol=1e-5, atol=1e-5)
