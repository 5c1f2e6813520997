"""The jitted training step sharded over 8 host CPU devices equals the one-device step.

`XLA_FLAGS=--xla_force_host_platform_device_count=8` must be set before jax is imported,
so the sharded run lives in a subprocess. The in-process tests check the step itself on
one device against closed forms (Adam's first update) and the per-example keying.
"""

import json
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dreamer_actor as da
from dreamer_actor._src.noise import standard_normal

# Tolerances of sharded vs one-device results (float32; only the order of the sums over the
# batch differs): the loss to 1e-6 relative; each gradient entry to 1e-5 of its leaf's largest
# entry (a gradient is a sum of T * B per-example terms, so small entries carry the absolute
# rounding error of the large ones).
LOSS_RTOL = 1e-6
GRAD_TOL = 1e-5
DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "multidevice.md"

_SCRIPT = textwrap.dedent(
    """
    import json, pathlib, sys, tempfile
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import dreamer_actor as da
    from dreamer_actor._src.noise import standard_normal

    loss_rtol, grad_tol = (float(x) for x in sys.argv[1:3])

    def close(actual, desired, tol, what):
        actual, desired = np.asarray(actual), np.asarray(desired)
        np.testing.assert_allclose(actual, desired, rtol=0, atol=tol * np.max(np.abs(desired)), err_msg=what)
        return float(np.max(np.abs(actual - desired)) / np.max(np.abs(desired)))
    assert jax.device_count() == 8, jax.devices()
    T, B, H, S, C = 4, 16, 24, 4, 5
    config = da.ActorConfig.create(low=[-2.0, 0.0, -1.0], high=[3.0, 1.0, 1.0], layers=2, units=32)
    k = jax.random.split(jax.random.key(0), 5)
    hidden = jax.random.normal(k[0], (T, B, H))
    stoch = jax.nn.one_hot(jax.random.randint(k[1], (T, B, S), 0, C), C)
    advantage = jax.random.normal(k[2], (T, B))
    weights = jax.random.uniform(k[3], (T, B), minval=0.5, maxval=1.0)
    key = k[4]
    params = da.Actor.from_config(config).init(jax.random.key(1), hidden, stoch)
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    loss_fn = da.train.make_actor_loss_fn(config, entropy_coef=3e-3)
    step = da.make_actor_train_step(config, optimizer, entropy_coef=3e-3)

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    data, replicated = NamedSharding(mesh, P(None, "batch")), NamedSharding(mesh, P())
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    batch1 = jax.device_put((hidden, stoch, advantage, weights), one)
    batch8 = jax.device_put((hidden, stoch, advantage, weights), data)
    params1, opt_state1 = jax.device_put((params, opt_state), one)
    params8, opt_state8 = jax.device_put((params, opt_state), replicated)
    assert batch8[0].addressable_shards[0].data.shape == (T, B // 8, H)
    assert batch8[1].addressable_shards[0].data.shape == (T, B // 8, S, C)

    # 1. Per-example noise does not depend on the sharding (bit-identical).
    A = config.action_dim
    noise = lambda key: jax.vmap(jax.vmap(lambda k: standard_normal(k, (A,))))(da.train.example_keys(key, (T, B)))
    eps1 = jax.jit(noise, out_shardings=one)(key)
    eps8 = jax.jit(noise, out_shardings=NamedSharding(mesh, P(None, "batch", None)))(key)
    assert len(eps8.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(eps8), np.asarray(eps1))

    # 2. The actor's outputs on the sharded batch: sharded along B, equal to one device.
    act = jax.jit(lambda p, h, z, key: da.train.act_per_example(p, config, h, z, da.train.example_keys(key, (T, B))))
    out1, out8 = act(params1, *batch1[:2], key), act(params8, *batch8[:2], key)
    assert out8.log_prob.sharding.is_equivalent_to(data, 2), out8.log_prob.sharding
    assert out8.action.sharding.is_equivalent_to(NamedSharding(mesh, P(None, "batch", None)), 3)
    assert {s.data.shape for s in out8.log_prob.addressable_shards} == {(T, B // 8)}
    for a, b in zip(out8, out1):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)

    # 3. Loss and gradients: sharded vs one device.
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (loss1, metrics1), grads1 = value_and_grad(params1, *batch1[:3], key, batch1[3])
    (loss8, metrics8), grads8 = value_and_grad(params8, *batch8[:3], key, batch8[3])
    np.testing.assert_allclose(float(loss8), float(loss1), rtol=loss_rtol)
    grad_err = []
    for (path, g8), g1 in zip(jax.tree_util.tree_leaves_with_path(grads8), jax.tree.leaves(grads1), strict=True):
        assert g8.sharding.is_fully_replicated and len(g8.sharding.device_set) == 8
        grad_err.append(close(g8, g1, grad_tol, jax.tree_util.keystr(path)))

    # 4. The full jitted step (act, loss, grad, Adam update), as a user runs it.
    train1 = jax.jit(step)
    train8 = jax.jit(step)
    hlo8 = train8.lower(params8, opt_state8, *batch8[:3], key, batch8[3]).compile().as_text()
    hlo1 = train1.lower(params1, opt_state1, *batch1[:3], key, batch1[3]).compile().as_text()
    assert "all-reduce" in hlo8 and "all-reduce" not in hlo1  # gradients really were reduced across devices
    new1, st1, m1 = train1(params1, opt_state1, *batch1[:3], key, batch1[3])
    new8, st8, m8 = train8(params8, opt_state8, *batch8[:3], key, batch8[3])
    for leaf in jax.tree.leaves((new8, st8)):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
    np.testing.assert_allclose(float(m8["loss"]), float(loss1), rtol=loss_rtol)
    np.testing.assert_allclose(float(m8["grad_norm"]), float(m1["grad_norm"]), rtol=grad_tol)
    mu1, mu8 = st1[0].mu, st8[0].mu  # Adam's first moment after one step: 0.1 * grads
    for a, b, g in zip(jax.tree.leaves(mu8), jax.tree.leaves(mu1), jax.tree.leaves(grads1), strict=True):
        close(a, b, grad_tol, "mu")
        np.testing.assert_allclose(np.asarray(b), 0.1 * np.asarray(g), rtol=1e-6, atol=0)
    # Adam's first update is lr * g / (|g| + eps), about lr * sign(g): an entry whose gradient is
    # within rounding of 0 may move by up to 2 lr differently in the two runs (that is Adam, not
    # the sharding), so the updated params are compared where |g| > 1e-3 of the leaf's largest.
    lr, eps = 1e-3, 1e-8
    for p8, p1, p0, g in zip(*(jax.tree.leaves(t) for t in (new8, new1, params, grads1)), strict=True):
        g = np.asarray(g, np.float64)
        np.testing.assert_allclose(np.asarray(p1), np.asarray(p0) - lr * g / (np.abs(g) + eps), rtol=0, atol=1e-3 * lr)
        mask = np.abs(g) > 1e-3 * np.max(np.abs(g))
        np.testing.assert_allclose(np.asarray(p8)[mask], np.asarray(p1)[mask], rtol=0, atol=1e-3 * lr)

    # 5. A checkpoint of sharded params and replicated optimizer state restores onto the same shardings.
    units_sharded = NamedSharding(mesh, P(None, "batch"))
    sharded_params = jax.tree_util.tree_map_with_path(
        lambda path, x: jax.device_put(x, units_sharded if "dense_0" in jax.tree_util.keystr(path) and x.ndim == 2
                                      else replicated), new8)
    kernel = sharded_params["params"]["dense_0"]["kernel"]
    assert {s.data.shape for s in kernel.addressable_shards} == {(kernel.shape[0], 32 // 8)}
    path = da.save_checkpoint(pathlib.Path(tempfile.mkdtemp()) / "ck", params=sharded_params, config=config,
                              opt_state=st8, step=1)
    opt_like = optimizer.init(sharded_params)  # mu, nu inherit the params' shardings; count is on one device
    restored = da.restore_checkpoint(path, config=config, params_like=sharded_params, opt_state_like=opt_like)
    templates = jax.tree.leaves((sharded_params, opt_like))
    saved = jax.tree.leaves((sharded_params, st8))
    for a, like, b in zip(jax.tree.leaves((restored.params, restored.opt_state)), templates, saved, strict=True):
        assert a.sharding.is_equivalent_to(like.sharding, a.ndim), (a.sharding, like.sharding)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert restored.params["params"]["dense_0"]["kernel"].sharding.is_equivalent_to(units_sharded, 2)
    plain = da.restore_checkpoint(path)  # no template: onto one device
    np.testing.assert_array_equal(np.asarray(plain.params["params"]["dense_0"]["kernel"]), np.asarray(kernel))
    assert len(plain.params["params"]["dense_0"]["kernel"].sharding.device_set) == 1

    # 6. The recipe in docs/multidevice.md runs as written.
    doc = pathlib.Path(sys.argv[3]).read_text()
    namespace = {}
    exec(doc.split("```python", 1)[1].split("```", 1)[0], namespace)
    assert len(namespace["mesh"].devices.flat) == 8 and np.isfinite(float(namespace["metrics"]["loss"]))
    assert jax.tree.leaves(namespace["params"])[0].sharding.is_fully_replicated

    print(json.dumps({
        "loss_rel_err": abs(float(loss8) - float(loss1)) / abs(float(loss1)),
        "grad_max_rel_err": max(grad_err),
        "devices": jax.device_count(),
    }))
    """
)


def test_sharded_training_step_equals_one_device(host_devices_env):
    env = host_devices_env(8)
    args = [str(x) for x in (LOSS_RTOL, GRAD_TOL, DOC)]
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", _SCRIPT, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    print(result)


# --------------------------------------------------------------------------- one device, in process

T, B, H = 3, 5, 7


def _setup(distribution="tanh_normal"):
    if distribution == "categorical":
        config = da.ActorConfig.create(distribution="categorical", action_dim=4, layers=1, units=16)
    else:
        config = da.ActorConfig.create(low=[-1.0, 0.0], high=[1.0, 2.0], layers=1, units=16, distribution=distribution)
    k = jax.random.split(jax.random.key(3), 4)
    hidden = jax.random.normal(k[0], (T, B, H))
    stoch = jax.nn.softmax(jax.random.normal(k[1], (T, B, 2, 3)))
    advantage = jax.random.normal(k[2], (T, B))
    weights = jax.random.uniform(k[3], (T, B))
    params = da.Actor.from_config(config).init(jax.random.key(4), hidden, stoch)
    return config, params, hidden, stoch, advantage, weights


@pytest.mark.parametrize("distribution", ["tanh_normal", "bounded_normal", "categorical"])
def test_step_is_act_per_example_then_actor_loss_then_adam(distribution):
    config, params, hidden, stoch, advantage, weights = _setup(distribution)
    lr, b1, b2, eps, beta = 1e-2, 0.9, 0.999, 1e-8, 0.05
    optimizer = optax.adam(lr, b1=b1, b2=b2, eps=eps)
    key = jax.random.key(9)
    step = jax.jit(da.make_actor_train_step(config, optimizer, entropy_coef=beta))
    new_params, new_state, metrics = step(params, optimizer.init(params), hidden, stoch, advantage, key, weights)

    # Example (t, b) uses exactly keys[t, b]: compare with `act` on that single example.
    keys = da.train.example_keys(key, (T, B))
    out = da.train.act_per_example(params, config, hidden, stoch, keys)
    for t, b in [(0, 0), (1, 3), (2, 4)]:
        single = da.act(params, config, hidden[t, b], stoch[t, b], keys[t, b], training=True)
        for batched, alone in zip(out, single, strict=True):
            np.testing.assert_allclose(np.asarray(batched[t, b]), np.asarray(alone), rtol=1e-6, atol=1e-6)

    # The loss, by hand in float64 from the per-example outputs.
    lp, ent = np.asarray(out.log_prob, np.float64), np.asarray(out.entropy, np.float64)
    adv, w = np.asarray(advantage, np.float64), np.asarray(weights, np.float64)
    np.testing.assert_allclose(float(metrics["loss"]), -np.mean(w * (adv * lp + beta * ent)), rtol=1e-5)

    # Gradients of that loss, and Adam's bias-corrected first update: m_hat = g, v_hat = g^2.
    def loss(p):
        o = da.train.act_per_example(p, config, hidden, stoch, keys)
        return -jnp.mean(weights * (jax.lax.stop_gradient(advantage) * o.log_prob + beta * o.entropy))

    grads = jax.grad(loss)(params)
    g_flat = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)]).astype(np.float64)
    np.testing.assert_allclose(float(metrics["grad_norm"]), np.sqrt(np.sum(g_flat**2)), rtol=1e-5)
    for p_new, p_old, g in zip(*(jax.tree.leaves(x) for x in (new_params, params, grads)), strict=True):
        g = np.asarray(g, np.float64)
        expected = np.asarray(p_old, np.float64) - lr * g / (np.abs(g) + eps)
        np.testing.assert_allclose(np.asarray(p_new), expected, rtol=0, atol=lr * 1e-3)
    assert int(new_state[0].count) == 1


def test_the_step_never_holds_a_weight_gradient_per_example():
    """The network runs once on the whole batch: no buffer of the compiled step is as large as one
    weight gradient per example (vmapping the Dense's custom VJP over single examples wrote
    `[T, B, K, F]` outer products: 170x the time at 1,920 rows, out of memory at DreamerV3's 15,360)."""
    T_, B_, H_, units = 4, 16, 24, 32
    config = da.ActorConfig.create(low=[-1.0, 0.0], high=[1.0, 2.0], layers=2, units=units)
    hidden = jnp.zeros((T_, B_, H_))
    stoch = jnp.zeros((T_, B_, 2, 3))
    params = da.Actor.from_config(config).init(jax.random.key(0), hidden, stoch)
    optimizer = optax.adam(1e-3)
    step = jax.jit(da.make_actor_train_step(config, optimizer))
    args = (params, optimizer.init(params), hidden, stoch, jnp.ones((T_, B_)), jax.random.key(1))
    text = step.lower(*args).compile().as_text()
    sizes = [int(np.prod([int(d) for d in dims.split(",") if d])) for dims in re.findall(r"f32\[([0-9,]*)\]", text)]
    per_example_kernel = T_ * B_ * (H_ + 6) * units  # the first layer's [K, F] kernel, once per example
    assert max(sizes) < per_example_kernel // 4, max(sizes)


def test_per_example_samples_are_independent_and_standard_normal():
    # 4000 examples x 2 dims from per-example keys: mean, variance and the lag-1 correlation
    # between neighbouring examples within 5 standard errors of N(0, 1) / 0.
    keys = da.train.example_keys(jax.random.key(0), (40, 100))
    eps = np.asarray(jax.vmap(jax.vmap(lambda k: standard_normal(k, (2,))))(keys), np.float64).reshape(-1)
    n = eps.size
    assert abs(eps.mean()) < 5 / np.sqrt(n)
    assert abs(eps.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert abs(np.corrcoef(eps[:-2:2], eps[2::2])[0, 1]) < 5 / np.sqrt(n / 2)


def test_step_names_a_bad_batch():
    config, params, hidden, stoch, advantage, _ = _setup()
    step = da.make_actor_train_step(config, optax.adam(1e-3))
    with pytest.raises(ValueError, match=r"`hidden` must be \[\*batch, H\] with the batch shape \(3, 4\)"):
        step(params, optax.adam(1e-3).init(params), hidden, stoch, advantage[:, :4], jax.random.key(0))
    with pytest.raises(ValueError, match="`keys` must have the batch shape"):
        da.train.act_per_example(params, config, hidden, stoch, da.train.example_keys(jax.random.key(0), (T,)))
    with pytest.raises(TypeError, match="`config` must be an ActorConfig"):
        da.make_actor_train_step({"action_dim": 2}, optax.adam(1e-3))
