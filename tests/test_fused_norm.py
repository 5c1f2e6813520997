"""The fused norm + activation (`_src/fused_norm.py`) against the flax composition it replaces.

References: flax `nn.LayerNorm(epsilon=1e-3)` and the project's `networks.RMSNorm` (eps 1e-4),
each followed by `getattr(jax.nn, activation)`, differentiated by plain autodiff.

Compile time is most of this file's cost on CPU, so each test builds one jitted program
holding the fused function and its reference, and the sweep over activations closes over its
inputs (XLA folds the program to constants: the maths of the HLO, not the CPU kernels); the
default activation, low precision and vmap run compiled kernels with the inputs as arguments
(the edge rows do through the Actor in tests/test_domain.py), and one test runs op by op
without jit.

Tolerances, all as max |got - ref| / max |ref| over the array (`_assert_close`):
  * float32 values and gradients (inputs and params): 2e-6. Measured <= 1.9e-7 for values and
    <= 1.7e-7 for gradients (about one float32 ulp): the same maths in a different order.
  * bfloat16 / float16 inputs vs the float32 run on the same (exactly representable) inputs:
    elementwise |got - ref| <= 2 u |ref| + 1e-6 for the output and the input gradient, where
    u = 2^-8 (bfloat16) or 2^-11 (float16) is the unit roundoff: the statistics and the backward
    run in float32, so only the final rounding to the low dtype differs (u, doubled for the
    float32 ops' own ordering). Param gradients stay float32: 2e-6 as above.
  * Rows of constants: gradients 1e-5 (their dx is rounding noise of `x - mu` times r ~ 32).
  * The whole Actor, old (unfused) vs new on the same params: float32 2e-6 (measured <= 2.3e-7);
    bfloat16 1e-2 on the loss and 2e-2 on the gradients (measured 3.5e-3 and 5e-3: the unfused
    path rounds to bfloat16 twice per layer, the fused once).
  * `check_grads` (float32 finite differences, eps 1e-3): jax's default float32 gradient
    tolerance 2e-3 on one random projection, first order and reverse-over-reverse. A
    `custom_vjp` has no forward mode of its own (`jax.jvp` raises), so no "fwd" mode; forward
    over reverse (`jax.hessian`) works and is checked against the RMSNorm reference's (2e-6).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.test_util import check_grads

import dreamer_actor as da
from dreamer_actor._src import checkpoint_format as ckpt_format
from dreamer_actor._src.config import ACTIVATIONS
from dreamer_actor._src.fused_norm import FusedLayerNormAct, FusedRMSNormAct, layer_norm_act, rms_norm_act
from dreamer_actor._src.networks import RMSNorm

T, B, F = 3, 5, 16
TOL32 = 2e-6
UNIT_ROUNDOFF = {jnp.bfloat16: 2.0**-8, jnp.float16: 2.0**-11}


# Test data from numpy: eager jax.random compiles a kernel per shape (seconds for this file).
def _normal(seed, shape, scale=1.0, shift=0.0):
    return jnp.asarray(shift + scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _params(norm, seed, features=F):
    """`(scale,)` or `(scale, bias)`, away from their init so both gradients are exercised."""
    scale = _normal(seed, (features,), 0.3, 1.0)
    return (scale, _normal(seed + 1, (features,), 0.2)) if norm == "layer" else (scale,)


def _fused(norm, activation):
    if norm == "layer":
        return lambda x, scale, bias: layer_norm_act(x, scale, bias, eps=1e-3, activation=activation)
    return lambda x, scale: rms_norm_act(x, scale, eps=1e-4, activation=activation)


def _reference(norm, activation):
    act = getattr(jax.nn, activation)
    if norm == "layer":
        return lambda x, scale, bias: act(
            nn.LayerNorm(epsilon=1e-3).apply({"params": {"scale": scale, "bias": bias}}, x)
        )
    return lambda x, scale: act(RMSNorm(dtype=x.dtype).apply({"params": {"scale": scale}}, x))


def _value_and_grads(fn, x, params, cotangent):
    """`(fn(x, *params), the VJP of fn at cotangent)`: gradients w.r.t. `x` and every param."""
    y, vjp = jax.vjp(fn, x, *params)
    return y, vjp(cotangent.astype(y.dtype))


def _both(norm, activation, x, params, cotangent, *, fold=False):
    """Fused and reference `_value_and_grads`, in one jitted program (one compile per call).

    `fold=False` passes the inputs as arguments: the compiled CPU kernels run. `fold=True`
    closes over them, so XLA evaluates the whole program while compiling (constant folding):
    the maths of the same HLO, at a fraction of the compile time, but not the CPU kernels.
    """
    both = lambda x, c, *p: tuple(_value_and_grads(make(norm, activation), x, p, c) for make in (_fused, _reference))
    if fold:
        return jax.jit(lambda: both(x, cotangent, *params))()
    return jax.jit(both)(x, cotangent, *params)


def _assert_close(got, ref, tol=TOL32, what=""):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, what
    err = np.max(np.abs(got - ref), initial=0.0) / max(np.max(np.abs(ref), initial=0.0), 1e-30)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.3g}"


def _inputs(seed, shape=(T, B, F)):
    """`(x, cotangent)`."""
    return _normal(seed, shape, 2.0, 0.5), _normal(seed + 1, shape)


# ----------------------------------------------------------------------------- float32 vs flax


def _assert_matches(got, got_grads, ref, ref_grads, tol=TOL32):
    assert got.shape == ref.shape and got.dtype == ref.dtype
    _assert_close(got, ref, tol=tol, what="value")
    assert len(got_grads) == len(ref_grads)
    for name, g, r in zip(("x", "scale", "bias"), got_grads, ref_grads, strict=False):
        assert g.dtype == r.dtype
        _assert_close(g, r, tol=tol, what=f"d/d{name}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_values_and_gradients_match_the_flax_composition(norm, activation):
    """Every activation, `[T, B, F]` inputs; jitted and constant-folded (see `_both`)."""
    x, cotangent = _inputs(0)
    (got, got_grads), (ref, ref_grads) = _both(norm, activation, x, _params(norm, 15), cotangent, fold=True)
    _assert_matches(got, got_grads, ref, ref_grads)


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_compiled_and_eager_match_the_flax_composition(norm):
    """The default activation through the compiled CPU kernels (jit, inputs as arguments) and op by op."""
    x, cotangent = _inputs(0)
    params = _params(norm, 15)
    (got, got_grads), (ref, ref_grads) = _both(norm, "silu", x, params, cotangent)
    _assert_matches(got, got_grads, ref, ref_grads)
    _assert_matches(*_value_and_grads(_fused(norm, "silu"), x, params, cotangent), ref, ref_grads)


def test_check_grads_first_order_and_reverse_over_reverse():
    """Finite differences on both fused functions and on their (custom) gradients.

    One activation: the backward calls the activation's own VJP, so its structure (what
    could be wrong) is the same for all of them; the tests above pin each against flax.
    Reverse-over-reverse is `check_grads(grad f, order=1)`, what `check_grads(f, order=2,
    modes=["rev"])` checks, here with both functions jitted once.
    """
    x, cotangent = _inputs(20, (4, 8))
    args = (x, *_params("layer", 35, 8), _params("rms", 45, 8)[0])

    def fn(x, scale, bias, rms_scale):
        return _fused("layer", "silu")(x, scale, bias), _fused("rms", "silu")(x, rms_scale)

    def grad(*args):
        return jax.grad(lambda *a: sum(jnp.sum(cotangent * y) for y in fn(*a)), argnums=(0, 1, 2, 3))(*args)

    check_grads(jax.jit(fn), args, 1, ["rev"], eps=1e-3)
    check_grads(jax.jit(grad), args, 1, ["rev"], eps=1e-3)


def _hessian(fn, w, params):
    """`x -> d^2/dx^2 sum(w * fn(x, *params))`, `[F, F]`, by `jax.hessian` (forward over reverse)."""
    return jax.hessian(lambda x: jnp.sum(w * fn(x, *params)))


def test_forward_mode_raises_and_forward_over_reverse_works():
    """`jax.jvp` raises for both; `jax.hessian` equals flax's (RMSNorm only: compiling flax
    LayerNorm's Hessian costs seconds, and the mechanism, jvp of the plain-jnp backward, is shared)."""
    x, w = _normal(50, (F,)), _normal(51, (F,))
    for norm in ("layer", "rms"):
        params = _params(norm, 55)
        with pytest.raises(TypeError, match="forward-mode"):
            jax.jvp(lambda x, p=params, n=norm: _fused(n, "silu")(x, *p), (x,), (x,))
    rms_params = _params("rms", 55)
    got, ref = jax.jit(lambda: [_hessian(make("rms", "silu"), w, rms_params)(x) for make in (_fused, _reference)])()
    _assert_close(got, ref, what="Hessian")


# ----------------------------------------------------------------------------- low precision


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_low_precision_is_float32_rounded_once(norm):
    """bfloat16 and float16 inputs vs float32 on the same values: one rounding of the output and dx."""
    x, cotangent = _inputs(40)
    params = _params(norm, 55)
    fn = _fused(norm, "silu")
    run = lambda x, c: _value_and_grads(fn, x, params, c)
    low = (jnp.bfloat16, jnp.float16)

    @jax.jit
    def both(x, cotangent):
        cases = [(x.astype(d), cotangent.astype(d)) for d in low]
        return [(run(x, c), run(x.astype(jnp.float32), c.astype(jnp.float32))) for x, c in cases]

    for dtype, ((got, got_grads), (ref, ref_grads)) in zip(low, both(x, cotangent), strict=True):
        assert got.dtype == dtype and got_grads[0].dtype == dtype
        assert all(g.dtype == jnp.float32 for g in got_grads[1:])
        bound = 2 * UNIT_ROUNDOFF[dtype]
        for g, r in ((got, ref), (got_grads[0], ref_grads[0])):
            g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
            np.testing.assert_array_less(np.abs(g - r), bound * np.abs(r) + 1e-6)
        for g, r in zip(got_grads[1:], ref_grads[1:], strict=True):
            _assert_close(g, r)


# ----------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_constant_rows_and_large_inputs_follow_the_documented_domain(norm):
    """Zero variance and |x| up to 1e30, row by row (vmap: a NaN row cannot spoil the others' sums).

    Rows of constants are finite; at |x| = 1e20 the mean square overflows to inf, r = 0 and
    the output is act(bias), finite; at 1e30 LayerNorm's `mean^2` overflows too and the output
    is NaN, as flax's (the domain `tests/test_domain.py` documents); RMSNorm stays finite.
    """
    signs = jnp.where(jnp.arange(F) % 2 == 0, 1.0, -1.0)
    rows = [jnp.zeros(F), jnp.full(F, 0.7), jnp.full(F, -3e3), jnp.linspace(-1.0, 1.0, F)]
    rows += [1e20 * signs, 1e20 * jnp.linspace(0.01, 0.1, F), 1e30 * signs, jnp.full(F, 1e30)]
    x, cotangent = jnp.stack(rows), _normal(70, (len(rows), F))
    params = _params(norm, 65)
    per_row = lambda fn: jax.vmap(lambda x, c: _value_and_grads(fn, x, params, c))
    # Constant-folded (see `_both`); the compiled kernels at 1e20 and 1e30 run in tests/test_domain.py.
    (got, got_grads), (ref, ref_grads) = jax.jit(
        lambda: (per_row(_fused(norm, "silu"))(x, cotangent), per_row(_reference(norm, "silu"))(x, cotangent))
    )()
    finite = 8 if norm == "rms" else 6
    for g, r in zip((got, *got_grads), (ref, *ref_grads), strict=True):  # per-row param gradients too
        assert bool(jnp.all(jnp.isfinite(g[:finite])))
        # Constant rows' dx is rounding noise of x - mu times r ~ 32 (flax: the same noise).
        _assert_close(g[:finite], r[:finite], tol=1e-5)
        np.testing.assert_array_equal(jnp.isnan(g), jnp.isnan(r))
    if norm == "layer":
        assert bool(jnp.all(jnp.isnan(got[7])))  # the documented end of the domain
        # Zero variance with x - mu = 0 exactly (zeros; 1e20: r = 0): the output is act(bias).
        np.testing.assert_allclose(got[jnp.array([0, 4, 5])], jnp.stack([jax.nn.silu(params[1])] * 3), rtol=1e-6)


@pytest.mark.parametrize("norm", ["layer", "rms"])
def test_batch_dims_vmap_and_a_single_row(norm):
    x, cotangent = _inputs(100)
    params = _params(norm, 115)
    fn = _fused(norm, "gelu")
    argnums = tuple(range(1 + len(params)))
    grad = jax.grad(lambda x, *p_and_c: jnp.sum(p_and_c[-1] * fn(x, *p_and_c[:-1])), argnums=argnums)

    @jax.jit
    def variants(x, cotangent, *params):
        return (
            fn(x, *params),
            jax.vmap(fn, in_axes=(0, *[None] * len(params)))(x, *params),  # vmap over T of [B, F]
            fn(x.reshape(T * B, F), *params).reshape(x.shape),  # [T * B, F]
            fn(x[1, 2], *params),  # one row [F] (the shape the Actor is initialized with)
            grad(x, *params, cotangent),  # the batch gradient
            jax.vmap(grad)(x, *[jnp.stack([p] * T) for p in params], cotangent),  # per T, params batched too
        )

    full, over_t, flat, row, batch_grads, per_t = variants(x, cotangent, *params)
    for got in (over_t, flat):
        _assert_close(got, full)
    _assert_close(row, full[1, 2])
    _assert_close(per_t[0], batch_grads[0])
    for g, r in zip(per_t[1:], batch_grads[1:], strict=True):  # per-T param gradients sum to the batch's
        _assert_close(jnp.sum(g, axis=0), r)


def test_bad_arguments_are_value_errors_naming_them():
    x = jnp.ones((2, 4))
    with pytest.raises(ValueError, match=r"layer_norm_act: `bias` must be .* shape \(4,\)"):
        layer_norm_act(x, jnp.ones(4), jnp.zeros(3), eps=1e-3, activation="silu")
    with pytest.raises(ValueError, match=r"rms_norm_act: `x` must be a floating-point"):
        rms_norm_act(jnp.ones((2, 4), jnp.int32), jnp.ones(4), eps=1e-4, activation="silu")
    with pytest.raises(ValueError, match=r"`activation` must be one of"):
        rms_norm_act(x, jnp.ones(4), eps=1e-4, activation="swish")
    with pytest.raises(ValueError, match=r"`eps` must be a positive Python number"):
        rms_norm_act(x, jnp.ones(4), eps=0.0, activation="silu")


# ----------------------------------------------------------------------------- modules and the Actor


def test_module_params_are_those_of_the_flax_modules():
    """Same tree, shapes, dtypes and init values as `nn.LayerNorm` / `RMSNorm` (float32 and bfloat16 params)."""
    x = jnp.ones((2, 3, F))
    pairs = [(FusedRMSNormAct(), RMSNorm())] + [
        (FusedLayerNormAct(param_dtype=d), nn.LayerNorm(epsilon=1e-3, param_dtype=d))
        for d in (jnp.float32, jnp.bfloat16)
    ]
    inits = jax.jit(lambda k: [(fused.init(k, x), ref.init(k, x)) for fused, ref in pairs])(jax.random.key(0))
    for got, ref in inits:
        assert jax.tree.structure(got) == jax.tree.structure(ref)
        for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
            assert g.shape == r.shape and g.dtype == r.dtype
            np.testing.assert_array_equal(g, r)


class _UnfusedActor(da.Actor):
    """The Actor before fusion (Dense, flax LayerNorm or RMSNorm, activation): the checkpoint reference."""

    @nn.compact
    def __call__(self, hidden, stoch):
        dtype = jnp.dtype(self.dtype)
        x = da.networks.flatten_latent(hidden, stoch).astype(dtype)
        for i, width in enumerate(self.hidden_sizes):
            x = nn.Dense(
                width, use_bias=self.norm == "none", dtype=dtype, param_dtype=self.param_dtype, name=f"dense_{i}"
            )(x)
            if self.norm == "layer":
                x = nn.LayerNorm(epsilon=1e-3, dtype=dtype, param_dtype=self.param_dtype, name=f"norm_{i}")(x)
            elif self.norm == "rms":
                x = RMSNorm(dtype=dtype, name=f"norm_{i}")(x)
            x = getattr(jax.nn, self.activation)(x)
        init = nn.initializers.variance_scaling(self.output_scale, "fan_avg", "truncated_normal")
        out = nn.Dense(self.num_outputs, dtype=dtype, param_dtype=self.param_dtype, kernel_init=init, name="out")(x)
        return out.astype(jnp.promote_types(jnp.float32, self.param_dtype))


@pytest.mark.parametrize(
    ("norm", "activation", "dtype"),
    [("layer", "silu", "float32"), ("rms", "gelu", "float32"), ("layer", "silu", "bfloat16")],
)
def test_params_of_the_unfused_actor_load_and_give_the_same_outputs(norm, activation, dtype):
    config = da.ActorConfig.create(action_dim=2, norm=norm, activation=activation, layers=2, units=F, dtype=dtype)
    hidden = _normal(0, (T, B, 6))
    stoch = jnp.asarray(np.eye(3, dtype=np.float32)[np.random.default_rng(1).integers(0, 3, (T, B, 2))])
    old, new = _UnfusedActor.from_config(config), da.Actor.from_config(config)
    # What a checkpoint restore compares (`checkpoint._leaf_specs` of `Actor.init`'s shapes): every
    # leaf's path, shape and dtype. eval_shape: no init to compile.
    specs = [jax.eval_shape(m.init, jax.random.key(0), hidden, stoch) for m in (old, new)]
    assert ckpt_format._leaf_specs(specs[0]) == ckpt_format._leaf_specs(specs[1])
    # The old Actor's param tree with trained-looking values (norm scales and biases off their init).
    rng = np.random.default_rng(2)

    def trained_looking(path, leaf):  # norm scales around 1, everything else around 0
        return jnp.asarray((path[-1].key == "scale") + 0.3 * rng.standard_normal(leaf.shape), leaf.dtype)

    params = jax.tree_util.tree_map_with_path(trained_looking, specs[0])
    loss = lambda module: jax.value_and_grad(lambda p: jnp.sum(jnp.sin(module.apply(p, hidden, stoch))))(params)
    # Constant-folded (closes over the inputs): the compiled Actor is pinned against numpy by
    # tests/test_trunk_options.py and runs in every act/train test.
    (got, got_grads), (ref, ref_grads) = jax.jit(lambda: (loss(new), loss(old)))()
    # bfloat16: both round the trunk's activations to bfloat16 (the unfused twice per layer), so they
    # agree to a few bfloat16 roundings (u = 2^-8) through two layers: measured 3.5e-3 on the loss and
    # <= 5e-3 on the gradients; bounds 1e-2 (2.6 u) and 2e-2 (5 u).
    tol_loss, tol_grad = (TOL32, TOL32) if dtype == "float32" else (1e-2, 2e-2)
    _assert_close(got, ref, tol=tol_loss, what="loss")
    for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(got_grads), jax.tree.leaves(ref_grads), strict=True):
        _assert_close(g, r, tol=tol_grad, what=jax.tree_util.keystr(path))
