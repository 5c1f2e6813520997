"""`_src/dense.py` against flax's `nn.Dense` and a float64 NumPy reference.

Tolerances, as max |got - ref| / max |ref| over the array:
  * forward: bitwise equal to `nn.Dense` (the same `dot_general`), float32.
  * float32 gradients vs `nn.Dense` autodiff and vs float64 NumPy `g @ W^T`, `x^T g`,
    `sum(g)`: 2e-6 (the same sums in another order; about 10 float32 ulps of headroom).
  * bfloat16 compute: the gradients vs the float32 run on the same (bfloat16-exact) inputs:
    3 * 2^-8 (the bfloat16 unit roundoff, tripled for rounding the product's inputs and output).
  * `check_grads` (float32 finite differences, eps 1e-3): jax's float32 default 2e-3, first order
    and reverse over reverse; no forward mode (a `custom_vjp`: `jax.jvp` raises `TypeError`),
    but forward over reverse (`jax.hessian`) equals plain autodiff's to 2e-6.
  * several inputs: `Dense((x_1, x_2))` vs `Dense` on their concatenation, both forms of the
    rule (concatenate; sum of products): outputs and gradients 2e-6.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.test_util import check_grads

from dreamer_actor._src import dense as dense_module
from dreamer_actor._src.dense import Dense, dense

TOL32 = 2e-6


def _normal(seed, shape, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _rel(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def _loss(module, params, x, weights):
    return jnp.sum(module.apply(params, x).astype(jnp.float32) * weights)


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("shape", [(7, 12), (3, 5, 12)])
def test_params_outputs_and_gradients_are_those_of_nn_dense(use_bias, shape):
    init = nn.initializers.variance_scaling(0.5, "fan_avg", "truncated_normal")
    ours, ref = Dense(6, use_bias=use_bias, kernel_init=init), nn.Dense(6, use_bias=use_bias, kernel_init=init)
    x = _normal(0, shape)
    params = ours.init(jax.random.key(1), x)
    ref_params = ref.init(jax.random.key(1), x)
    assert jax.tree.structure(params) == jax.tree.structure(ref_params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_array_equal(a, b)
    if use_bias:  # away from the zero init, so the bias enters the outputs
        params = jax.tree.map(lambda p: p + 0.1, params)
    weights = _normal(2, (*shape[:-1], 6))
    for wrap in (lambda f: f, jax.jit):
        np.testing.assert_array_equal(wrap(ours.apply)(params, x), wrap(ref.apply)(params, x))
        grads = wrap(jax.grad(lambda p, x: _loss(ours, p, x, weights), argnums=(0, 1)))(params, x)
        ref_grads = wrap(jax.grad(lambda p, x: _loss(ref, p, x, weights), argnums=(0, 1)))(params, x)
        for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
            assert g.dtype == r.dtype and g.shape == r.shape
            assert _rel(g, r) <= TOL32

    # Independent reference: the gradients written out in float64 NumPy.
    kernel = np.asarray(params["params"]["kernel"], np.float64)
    rows, g = np.asarray(x, np.float64).reshape(-1, shape[-1]), np.asarray(weights, np.float64).reshape(-1, 6)
    assert _rel(grads[0]["params"]["kernel"], rows.T @ g) <= TOL32
    assert _rel(grads[1], (g @ kernel.T).reshape(shape)) <= TOL32
    if use_bias:
        assert _rel(grads[0]["params"]["bias"], g.sum(0)) <= TOL32


def test_bfloat16_compute_is_the_float32_run_rounded():
    x = _normal(0, (4, 9, 16)).astype(jnp.bfloat16).astype(jnp.float32)  # bfloat16-exact inputs
    kernel = _normal(1, (16, 8), 0.3).astype(jnp.bfloat16).astype(jnp.float32)
    weights = _normal(2, (4, 9, 8))

    def grads(dtype):
        def loss(x, kernel):
            return jnp.sum(dense(x.astype(dtype), kernel.astype(dtype)).astype(jnp.float32) * weights)

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)

    for got, ref in zip(grads(jnp.bfloat16), grads(jnp.float32), strict=True):
        assert _rel(got, ref) <= 3 * 2.0**-8


def test_check_grads_reverse_over_reverse_hessian_and_no_forward_mode():
    x, kernel = _normal(0, (5, 6)), _normal(1, (6, 3), 0.5)
    check_grads(lambda x, k: jnp.tanh(dense(x, k)), (x, kernel), order=2, modes=["rev"], eps=1e-3)
    with pytest.raises(TypeError):
        jax.jvp(dense, (x, kernel), (x, kernel))
    # Forward over reverse: the Hessian in the kernel equals plain autodiff's of `x @ W`.
    hessian = jax.hessian(lambda k: jnp.sum(jnp.tanh(dense(x, k))))(kernel)
    assert _rel(hessian, jax.hessian(lambda k: jnp.sum(jnp.tanh(x @ k)))(kernel)) <= TOL32


def test_vmap_of_the_gradient_is_the_loop_of_gradients():
    x, kernel = _normal(0, (4, 3, 6)), _normal(1, (6, 5))

    def grad(x):
        return jax.grad(lambda k: jnp.sum(jnp.sin(dense(x, k))))(kernel)

    batched = jax.jit(jax.vmap(grad))(x)
    for i in range(x.shape[0]):
        assert _rel(batched[i], grad(x[i])) <= TOL32


def test_bad_arguments_are_value_errors_naming_them():
    x = jnp.ones((3, 4))
    with pytest.raises(ValueError, match="dense: `x`"):
        dense(jnp.ones((3, 4), jnp.int32), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"dense: `kernel`.*K = 4"):
        dense(x, jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="dense: `kernel`"):
        dense(x, jnp.ones((4, 2), jnp.bfloat16))


@pytest.mark.parametrize("sum_of_products", [False, True])
@pytest.mark.parametrize("use_bias", [False, True])
def test_several_inputs_are_the_layer_on_their_concatenation(monkeypatch, sum_of_products, use_bias):
    """A tuple input has the params of the concatenated input's layer and, in either form, its
    outputs and gradients (inputs and params); the rule picks the form from the static shapes."""
    monkeypatch.setattr(dense_module, "_sum_of_products", lambda rows, features: sum_of_products)
    parts = (_normal(0, (3, 5, 4)), _normal(1, (3, 5, 9)))
    module = Dense(6, use_bias=use_bias)
    params = module.init(jax.random.key(0), parts)
    whole = jnp.concatenate(parts, axis=-1)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, module.init(jax.random.key(0), whole))
    jax.tree.map(np.testing.assert_array_equal, params, module.init(jax.random.key(0), whole))  # same init
    if use_bias:
        params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias
    weights = _normal(2, (3, 5, 6))
    for fn in (lambda f: f, jax.jit):
        got = fn(module.apply)(params, parts)
        want = module.apply(params, whole)
        assert _rel(got, want) <= TOL32
        g_params, g_parts = fn(jax.grad(lambda p, xs: _loss(module, p, xs, weights), argnums=(0, 1)))(params, parts)
        w_params, w_whole = jax.grad(lambda p, x: _loss(module, p, x, weights), argnums=(0, 1))(params, whole)
        for g, w in zip(jax.tree.leaves(g_params), jax.tree.leaves(w_params), strict=True):
            assert _rel(g, w) <= TOL32
        assert _rel(jnp.concatenate(g_parts, axis=-1), w_whole) <= TOL32
    text = jax.jit(module.apply).lower(params, parts).as_text()
    assert ("tensor<3x5x13xf32>" in text) == (not sum_of_products)


def test_bfloat16_compute_concatenates_whatever_the_rule(monkeypatch):
    """Summing bfloat16 products would round each before the sum: a bfloat16 layer concatenates."""
    monkeypatch.setattr(dense_module, "_sum_of_products", lambda rows, features: True)
    parts = (_normal(0, (3, 5, 4)), _normal(1, (3, 5, 9)))
    module = Dense(6, dtype=jnp.bfloat16)
    params = module.init(jax.random.key(0), parts)
    assert "tensor<3x5x13xbf16>" in jax.jit(module.apply).lower(params, parts).as_text()
    np.testing.assert_array_equal(module.apply(params, parts), module.apply(params, jnp.concatenate(parts, -1)))


def test_the_rule_sums_products_on_many_rows_of_a_narrow_layer():
    """The default rule, as documented: many rows and at most 256 features sum products."""
    rule = dense_module._sum_of_products
    assert rule(15360, 256) and rule(4096, 256)
    assert not rule(1024, 256) and not rule(1, 256) and not rule(16, 256)
    assert not rule(4096, 1024) and not rule(15360, 512)


def test_several_inputs_with_different_leading_dims_are_a_value_error():
    with pytest.raises(ValueError, match="Dense: the inputs in `x` must share their leading dims"):
        Dense(3).init(jax.random.key(0), (jnp.zeros((2, 4)), jnp.zeros((3, 4))))
    with pytest.raises(ValueError, match="Dense: `x` must be an array"):
        Dense(3).init(jax.random.key(0), ())
