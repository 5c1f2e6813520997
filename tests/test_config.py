"""`ActorConfig`: validation, leaves vs static fields, retracing, serialization, gymnasium bounds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import dreamer_actor as da


def test_scale_and_bias_are_half_range_and_midpoint():
    low, high = np.array([-2.0, 0.0, -1e4, 5.0]), np.array([3.0, 1e-3, 1e4, 7.5])
    cfg = da.ActorConfig.create(low=low, high=high)
    assert cfg.action_dim == 4
    assert cfg.scale.dtype == jnp.float32 and cfg.scale.shape == (4,)
    np.testing.assert_allclose(cfg.scale, (high - low) / 2, rtol=1e-7)
    np.testing.assert_allclose(cfg.bias, (high + low) / 2, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(cfg.low, low, rtol=1e-6)
    np.testing.assert_allclose(cfg.high, high, rtol=1e-6)
    # Scalars broadcast to action_dim.
    cfg2 = da.ActorConfig.create(low=-2.0, high=3.0, action_dim=3)
    np.testing.assert_array_equal(cfg2.scale, [2.5] * 3)
    np.testing.assert_array_equal(cfg2.bias, [0.5] * 3)
    # A scalar and an array mix.
    cfg3 = da.ActorConfig.create(low=0.0, high=[1.0, 4.0])
    np.testing.assert_array_equal(cfg3.scale, [0.5, 2.0])
    np.testing.assert_array_equal(cfg3.bias, [0.5, 2.0])


def test_gymnasium_box_bounds_work_directly():
    import gymnasium

    box = gymnasium.spaces.Box(low=np.array([-2.0, 0.0], np.float32), high=np.array([3.0, 1.0], np.float32))
    cfg = da.ActorConfig.create(low=box.low, high=box.high)
    assert cfg.action_dim == 2
    np.testing.assert_array_equal(cfg.low, box.low)
    np.testing.assert_array_equal(cfg.high, box.high)
    # Sampled actions are valid Box members.
    a, _ = da.sample_action(jax.random.key(0), jnp.full((64, 2), 3.0), jnp.zeros((64, 2)), cfg)
    assert all(box.contains(np.asarray(x, np.float32)) for x in a)
    unbounded = gymnasium.spaces.Box(low=-np.inf, high=np.inf, shape=(2,), dtype=np.float32)
    with pytest.raises(ValueError, match=r"`low` must be finite"):
        da.ActorConfig.create(low=unbounded.low, high=unbounded.high)


def test_new_bound_values_do_not_retrace_but_a_static_change_does():
    traces = []

    @jax.jit
    def f(config, u):
        traces.append(config.units)
        return da.squash(u, config)

    u = jnp.array([[0.3, -0.2]])
    c1 = da.ActorConfig.create(low=[-1.0, 0.0], high=[1.0, 2.0])
    c2 = da.ActorConfig.create(low=[-5.0, 3.0], high=[7.0, 3.5])
    np.testing.assert_allclose(f(c1, u), np.tanh([[0.3, -0.2]]) * [1.0, 1.0] + [0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(f(c2, u), np.tanh([[0.3, -0.2]]) * [6.0, 0.25] + [1.0, 3.25], rtol=1e-6)
    assert len(traces) == 1
    # A config built with `.replace` of leaves only is the same treedef, too.
    f(c1.replace(scale=c1.scale * 2.0), u)
    assert len(traces) == 1
    # A different static field changes the treedef and retraces.
    f(da.ActorConfig.create(low=[-1.0, 0.0], high=[1.0, 2.0], units=64), u)
    assert traces == [256, 64]


def test_chex_assert_max_traces_guard():
    import chex

    c1 = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=3)
    c2 = da.ActorConfig.create(low=-4.0, high=0.5, action_dim=3)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def log_prob(config, m, s, u):
        return da.log_prob_with_tanh_correction(m, s, config, pre_tanh=u)

    z = jnp.zeros((2, 3))
    for c in (c1, c2, c1):
        out = log_prob(c, z, z, z)
        # log N(0; 0, 1) - log scale - log(1 - tanh(0)^2), summed over 3 dims.
        expected = 3 * (-0.5 * math.log(2 * math.pi)) - float(jnp.sum(jnp.log(c.scale)))
        np.testing.assert_allclose(out, [expected] * 2, rtol=1e-6)


def test_round_trips_through_flax_serialization():
    cfg = da.ActorConfig.create(low=[-2.0, 0.0], high=[3.0, 1.0], units=32, norm="rms")
    state = serialization.to_state_dict(cfg)
    assert set(state) == {"scale", "bias"}
    np.testing.assert_array_equal(state["scale"], [2.5, 0.5])
    template = da.ActorConfig.create(low=[-1.0, -1.0], high=[1.0, 1.0], units=32, norm="rms")
    restored = serialization.from_bytes(template, serialization.to_bytes(cfg))
    np.testing.assert_array_equal(restored.scale, cfg.scale)
    np.testing.assert_array_equal(restored.bias, cfg.bias)
    assert restored.units == 32 and restored.norm == "rms"
    back = serialization.from_state_dict(template, state)
    np.testing.assert_array_equal(back.low, [-2.0, 0.0])
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(cfg)


def test_config_is_a_pytree_with_two_leaves_and_hashable_static_part():
    cfg = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=2)
    leaves, treedef = jax.tree_util.tree_flatten(cfg)
    assert len(leaves) == 2
    hash(treedef)  # static fields are hashable: jit can cache on them
    other = da.ActorConfig.create(low=-7.0, high=9.0, action_dim=2)
    assert jax.tree_util.tree_structure(other) == treedef
    assert hash(jax.tree_util.tree_structure(other)) == hash(treedef)
    for name, field in type(cfg).__dataclass_fields__.items():
        if field.metadata.get("pytree_node", True) is False:
            hash(getattr(cfg, name))
    # Frozen.
    with pytest.raises(Exception, match="cannot assign"):
        cfg.units = 3
    # tree.map over the config keeps the static fields.
    doubled = jax.tree.map(lambda x: 2 * x, cfg)
    np.testing.assert_array_equal(doubled.scale, [2.0, 2.0])
    assert doubled.units == cfg.units
    # vmap over stacked bounds (a sweep over action ranges).
    stacked = jax.tree.map(lambda *x: jnp.stack(x), cfg, other)
    a = jax.vmap(lambda c: da.mode_action(jnp.zeros((2,)), c))(stacked)
    np.testing.assert_allclose(a, [[0.0, 0.0], [1.0, 1.0]])


def test_categorical_config():
    cfg = da.ActorConfig.create(distribution="categorical", action_dim=4)
    np.testing.assert_array_equal(cfg.scale, np.ones(4))
    np.testing.assert_array_equal(cfg.bias, np.zeros(4))
    assert cfg.is_discrete and cfg.params_out() == 4
    assert da.ActorConfig.create(low=-1.0, high=1.0, action_dim=3).params_out() == 6


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"low": 1.0, "high": 1.0, "action_dim": 1}, r"`low` must be < `high`.*dims \[0\]"),
        ({"low": [0.0, 2.0], "high": [1.0, 1.0]}, r"`low` must be < `high`.*dims \[1\]"),
        ({"low": -np.inf, "high": 1.0, "action_dim": 1}, r"`low` must be finite"),
        ({"low": -1.0, "high": np.nan, "action_dim": 1}, r"`high` must be finite"),
        ({"low": [0.0, 0.0], "high": [1.0, 1.0, 1.0]}, r"shapes disagree"),
        ({"low": [0.0, 0.0], "high": [1.0, 1.0], "action_dim": 3}, r"shapes disagree"),
        ({"low": 0.0, "high": 1.0}, r"`action_dim` is required"),
        ({"low": [[0.0]], "high": [[1.0]]}, r"`low` must be a scalar or a 1-D array"),
        ({"low": "a", "high": 1.0, "action_dim": 1}, r"`low` must be a number"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "nrom": "layer"}, r"unknown option\(s\) \['nrom'\]"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "norm": "batch"}, r"`norm` must be one of"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "activation": "swish"}, r"`activation` must be one of"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "distribution": "beta"}, r"`distribution` must be one of"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "dtype": "int8"}, r"`dtype` must be one of"),
        ({"low": -1.0, "high": 1.0, "action_dim": 0}, r"`action_dim` must be a positive int"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "layers": -1}, r"`layers` must be an int >= 0"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "units": 0}, r"`units` must be a positive int"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "log_std_min": 3.0}, r"`log_std_min` must be finite and <"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "init_std": 100.0}, r"`init_std` must be strictly inside"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "mean_limit": -1.0}, r"`mean_limit` must be None or"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "output_scale": 0.0}, r"`output_scale` must be"),
        ({"distribution": "categorical"}, r"`action_dim` \(number of choices\) is required"),
    ],
)
def test_bad_config_raises_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        da.ActorConfig.create(**kwargs)


def test_direct_construction_is_validated_too():
    cfg = da.ActorConfig(scale=jnp.ones(2), bias=jnp.zeros(2), action_dim=3)
    with pytest.raises(ValueError, match=r"`scale` and `bias` must have shape \(3,\)"):
        cfg.validate()
