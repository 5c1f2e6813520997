"""`ActorConfig`: validation, leaves vs static fields, retracing, serialization, gymnasium bounds."""

import json
import math

import gymnasium
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
        return da.tanh_normal.squash(u, config)

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
        return da.log_prob_with_tanh_correction(m, s, config, raw_sample=u)

    z = jnp.zeros((2, 3))
    for c in (c1, c2, c1):
        out = log_prob(c, z, z, z)
        # log N(0; 0, 1) - log scale - log(1 - tanh(0)^2), summed over 3 dims.
        expected = 3 * (-0.5 * math.log(2 * math.pi)) - float(jnp.sum(jnp.log(c.scale)))
        np.testing.assert_allclose(out, [expected] * 2, rtol=1e-6)


def test_round_trips_through_flax_serialization():
    cfg = da.ActorConfig.create(low=[-2.0, 0.0], high=[3.0, 1.0], units=32, norm="rms")
    state = serialization.to_state_dict(cfg)
    assert set(state) == {"low", "high", "scale", "bias"}
    np.testing.assert_array_equal(state["scale"], [2.5, 0.5])
    np.testing.assert_array_equal(state["low"], [-2.0, 0.0])
    template = da.ActorConfig.create(low=[-1.0, -1.0], high=[1.0, 1.0], units=32, norm="rms")
    restored = serialization.from_bytes(template, serialization.to_bytes(cfg))
    np.testing.assert_array_equal(restored.scale, cfg.scale)
    np.testing.assert_array_equal(restored.bias, cfg.bias)
    np.testing.assert_array_equal(restored.low, cfg.low)
    np.testing.assert_array_equal(restored.high, cfg.high)
    assert restored.units == 32 and restored.norm == "rms"
    back = serialization.from_state_dict(template, state)
    np.testing.assert_array_equal(back.low, [-2.0, 0.0])
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(cfg)


def test_config_is_a_pytree_with_four_leaves_and_hashable_static_part():
    cfg = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=2)
    leaves, treedef = jax.tree_util.tree_flatten(cfg)
    assert len(leaves) == 4  # low, high, scale, bias
    assert set(da.ActorConfig.static_fields()) | {"low", "high", "scale", "bias"} == set(type(cfg).__dataclass_fields__)
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
    a = jax.vmap(lambda c: da.tanh_normal.mode_action(jnp.zeros((2,)), c))(stacked)
    np.testing.assert_allclose(a, [[0.0, 0.0], [1.0, 1.0]])


def test_categorical_config():
    cfg = da.ActorConfig.create(distribution="categorical", action_dim=4)
    np.testing.assert_array_equal(cfg.scale, np.ones(4))
    np.testing.assert_array_equal(cfg.bias, np.zeros(4))
    np.testing.assert_array_equal(cfg.low, -np.ones(4))
    np.testing.assert_array_equal(cfg.high, np.ones(4))
    assert cfg.is_discrete and cfg.family is da.distributions.get("categorical") and cfg.family.num_outputs(cfg) == 4
    cont = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=3)
    assert not cont.is_discrete and cont.family.num_outputs(cont) == 6


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
        ({"low": -1.0, "high": 1.0, "action_dim": 0}, r"`action_dim` must be an int >= 1"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "layers": -1}, r"`layers` must be an int >= 0"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "units": 0}, r"`units` must be an int >= 1"),
        ({"low": -1.0, "high": 1.0, "action_dim": 1, "log_std_min": 3.0}, r"`log_std_min`.*log_std_max"),
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
    cfg = da.ActorConfig(low=-jnp.ones(2), high=jnp.ones(2), scale=jnp.ones(2), bias=jnp.zeros(2), action_dim=3)
    with pytest.raises(ValueError, match=r"`low` must be an array of shape \(3,\)"):
        cfg.validate()
    cfg = da.ActorConfig(low=jnp.ones(2), high=-jnp.ones(2), scale=jnp.ones(2), bias=jnp.zeros(2), action_dim=2)
    with pytest.raises(ValueError, match=r"`low` must be < `high`"):
        cfg.validate()


# ------------------------------------------------------------------------ from_space


def test_from_space_box_has_per_dimension_bounds():
    box = gymnasium.spaces.Box(low=np.array([-2.0, 0.0, -0.5], np.float32), high=np.array([3.0, 1.0, 0.25], np.float32))
    for distribution in ("tanh_normal", "bounded_normal"):
        cfg = da.ActorConfig.from_space(box, distribution=distribution, layers=1, units=8)
        assert cfg.distribution == distribution and cfg.action_dim == 3 and (cfg.layers, cfg.units) == (1, 8)
        np.testing.assert_array_equal(cfg.low, box.low)
        np.testing.assert_array_equal(cfg.high, box.high)
        np.testing.assert_array_equal(cfg.scale, (box.high.astype(np.float64) - box.low) / 2)
        np.testing.assert_array_equal(cfg.bias, (box.high.astype(np.float64) + box.low) / 2)
        # Sampled (even saturated) and mode actions are members of the Box.
        h, z = jnp.ones((64, 4)), jnp.ones((64, 2))
        params = da.Actor.from_config(cfg).init(jax.random.key(0), h, z)
        params = jax.tree.map(lambda x: x * 100.0, params)
        for a in (
            da.act(params, cfg, h, z, jax.random.key(1), training=False),
            da.act(params, cfg, h, z, None, training=False, deterministic=True),
        ):
            assert all(box.contains(np.asarray(x)) for x in a)
    assert da.ActorConfig.from_space(box).distribution == "tanh_normal"


def test_from_space_discrete_and_multi_discrete():
    cfg = da.ActorConfig.from_space(gymnasium.spaces.Discrete(5), layers=1)
    assert cfg.distribution == "categorical" and cfg.action_dim == 5 and cfg.action_dims is None and cfg.layers == 1
    multi = da.ActorConfig.from_space(gymnasium.spaces.MultiDiscrete([3, 2, 4]), unimix=0.0)
    assert multi.distribution == "categorical" and multi.action_dims == (3, 2, 4) and multi.action_dim == 9
    assert multi.unimix == 0.0
    with pytest.raises(ValueError, match="needs distribution='categorical'"):
        da.ActorConfig.from_space(gymnasium.spaces.Discrete(5), distribution="tanh_normal")
    with pytest.raises(ValueError, match="`distribution='categorical'` needs a Discrete space"):
        da.ActorConfig.from_space(gymnasium.spaces.Box(-1.0, 1.0, (2,)), distribution="categorical")
    with pytest.raises(ValueError, match="`action_dim` comes from the space"):
        da.ActorConfig.from_space(gymnasium.spaces.Discrete(5), action_dim=5)


def test_from_space_rejects_unbounded_multi_dimensional_and_other_spaces():
    low = np.array([-1.0, -np.inf, 0.0, -2.0], np.float32)
    high = np.array([1.0, 1.0, np.inf, 2.0], np.float32)
    with pytest.raises(ValueError, match=r"ActorConfig.from_space: the Box .* is unbounded in dims \[1, 2\]"):
        da.ActorConfig.from_space(gymnasium.spaces.Box(low=low, high=high))
    with pytest.raises(ValueError, match=r"a Box action space must be 1-D .* of shape \(2, 3\)"):
        da.ActorConfig.from_space(gymnasium.spaces.Box(-1.0, 1.0, (2, 3)))
    space = gymnasium.spaces.Dict({"move": gymnasium.spaces.Discrete(3)})
    with pytest.raises(TypeError, match=r"ActorConfig.from_space: unsupported action space Dict\(.*\(Dict\)"):
        da.ActorConfig.from_space(space)
    with pytest.raises(TypeError, match=r"unsupported action space .*\(Tuple\)"):
        da.ActorConfig.from_space(gymnasium.spaces.Tuple([gymnasium.spaces.Discrete(2)]))


# ------------------------------------------------------------- to_dict / from_dict


@pytest.mark.parametrize(
    "make",
    [
        lambda: da.ActorConfig.create(low=[-2.0, 0.1], high=[3.0, 0.7], units=32, norm="rms", mean_limit=None),
        lambda: da.ActorConfig.create(low=-1.5, high=2.5, action_dim=3, distribution="bounded_normal", min_std=0.2),
        lambda: da.ActorConfig.create(distribution="categorical", action_dims=(2, 3), unimix=0.05, dtype="bfloat16"),
    ],
)
def test_to_dict_from_dict_round_trip_through_json(make):
    cfg = make()
    data = json.loads(json.dumps(cfg.to_dict()))
    back = da.ActorConfig.from_dict(data)
    assert jax.tree.structure(back) == jax.tree.structure(cfg)  # every static field equal
    for name in ("low", "high", "scale", "bias"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cfg, name))
        assert getattr(back, name).dtype == jnp.float32
    assert back.to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['nrom'\]"):
        da.ActorConfig.from_dict({**data, "nrom": "layer"})
    data.pop("action_dim")
    with pytest.raises(ValueError, match=r"missing field\(s\) \['action_dim'\]"):
        da.ActorConfig.from_dict(data)


def test_bounds_are_rounded_inwards_to_float32():
    rng = np.random.default_rng(0)
    low = rng.uniform(-10.0, 0.0, 1000)
    high = low + rng.uniform(1e-3, 10.0, 1000)
    low[:4], high[:4] = [-1.0, -0.5, -(2.0**-20), -3.0], [1.0, 0.25, 2.0**-10, 0.0]  # float32-representable
    cfg = da.ActorConfig.create(low=low, high=high)
    low32, high32 = np.asarray(cfg.low, np.float64), np.asarray(cfg.high, np.float64)
    assert np.all(low32 >= low) and np.all(high32 <= high)
    # Equal when representable, else the nearest float32 on the inside.
    representable_low = low.astype(np.float32).astype(np.float64) == low
    representable_high = high.astype(np.float32).astype(np.float64) == high
    assert representable_low[:4].all() and representable_high[:4].all() and not representable_low[4:].all()
    np.testing.assert_array_equal(low32[representable_low], low[representable_low])
    np.testing.assert_array_equal(high32[representable_high], high[representable_high])
    below = np.nextafter(cfg.low, np.float32(-np.inf)).astype(np.float64)
    above = np.nextafter(cfg.high, np.float32(np.inf)).astype(np.float64)
    assert np.all(below[~representable_low] < low[~representable_low])
    assert np.all(above[~representable_high] > high[~representable_high])
    # Saturated actions stay inside the float64 bounds.
    a = da.tanh_normal.squash(jnp.asarray(np.stack([np.full(1000, 30.0), np.full(1000, -30.0)]), jnp.float32), cfg)
    a64 = np.asarray(a, np.float64)
    assert np.all(a64 >= low) and np.all(a64 <= high)


# --------------------------------------------------------------------------- replace


def test_replace_validates_and_keeps_the_bounds_consistent():
    cfg = da.ActorConfig.create(low=[-1.0, 0.0], high=[1.0, 2.0], layers=1)
    for kwargs, match in [
        ({"scale": 0.0}, r"ActorConfig.replace: `scale` must be > 0"),
        ({"scale": [1.0, -1.0]}, r"ActorConfig.replace: `scale` must be > 0"),
        ({"scale": jnp.ones(3)}, r"ActorConfig.replace: `scale` must have shape \(2,\)"),
        ({"bias": [0.0, 1.0, 2.0]}, r"ActorConfig.replace: `bias` must have shape \(2,\)"),
        ({"low": [1.0, 0.0]}, r"ActorConfig.replace: `low` must be < `high`.*dims \[0\]"),
        ({"high": [1.0, -1.0]}, r"ActorConfig.replace: `low` must be < `high`.*dims \[1\]"),
        ({"low": [np.nan, 0.0]}, r"`low` must be finite"),
        ({"low": [-2.0, 0.0], "scale": [1.0, 1.0]}, r"either `low`/`high` or `scale`/`bias`"),
        ({"units": 0}, r"`units` must be an int >= 1"),
        ({"norm": "batch"}, r"`norm` must be one of"),
        ({"unknown": 1}, r"unknown field\(s\) \['unknown'\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            cfg.replace(**kwargs)
    # New low/high recompute scale and bias, and vice versa.
    new = cfg.replace(low=[0.0, 0.5])
    np.testing.assert_array_equal(new.low, [0.0, 0.5])
    np.testing.assert_array_equal(new.high, [1.0, 2.0])
    np.testing.assert_array_equal(new.scale, [0.5, 0.75])
    np.testing.assert_array_equal(new.bias, [0.5, 1.25])
    new = cfg.replace(bias=[0.0, 5.0])
    np.testing.assert_array_equal(new.low, [-1.0, 4.0])
    np.testing.assert_array_equal(new.high, [1.0, 6.0])
    np.testing.assert_array_equal(new.scale, cfg.scale)
    new = cfg.replace(scale=[3.0, 0.5])
    np.testing.assert_array_equal(new.low, [-3.0, 0.5])
    np.testing.assert_array_equal(new.high, [3.0, 1.5])
    assert cfg.replace(units=8).units == 8 and cfg.replace(units=8).layers == 1
    # All four leaves at once (what flax.serialization restores) are taken as given if consistent.
    leaves = {name: getattr(cfg, name) for name in ("low", "high", "scale", "bias")}
    same = cfg.replace(**leaves)
    for name, value in leaves.items():
        np.testing.assert_array_equal(getattr(same, name), value)
    with pytest.raises(ValueError, match=r"`low`, `high`, `scale`, `bias` disagree"):
        cfg.replace(**{**leaves, "bias": leaves["bias"] + 0.5})


# ---------------------------------------------------------------------------- create


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"low": -1e300, "high": 1e300, "action_dim": 1}, r"`low` and `high` must be within float32's range"),
        ({"low": 0.0, "high": 1e-40, "action_dim": 1}, r"`low` and `high` must span a range|range `high - low`"),
        ({"action_dim": -1}, r"`action_dim` must be an int >= 1, got -1"),
        ({"action_dim": 2.7}, r"`action_dim` must be an int >= 1, got 2.7"),
        ({"action_dim": True}, r"`action_dim` must be an int >= 1, got the bool True"),
        ({"action_dim": 1, "layers": True}, r"`layers` must be an int >= 0, got the bool True"),
        ({"action_dim": 1, "units": 64.0}, r"`units` must be an int >= 1, got 64.0"),
        ({"action_dim": 1, "log_std_max": 1000}, r"`log_std_min`.*log_std_max.*1000"),
        ({"action_dim": 1, "distribution": "categorical", "unimix": 1.0}, r"`unimix` must be a number in \[0, 1\)"),
        ({"action_dim": 1, "distribution": "bounded_normal", "min_std": 2.0}, r"`min_std` and `max_std`"),
    ],
)
def test_create_rejects_bad_arguments_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        da.ActorConfig.create(**kwargs)


def test_create_accepts_numpy_ints():
    cfg = da.ActorConfig.create(action_dim=np.int64(2), units=np.int64(64), layers=np.int32(2))
    assert (cfg.action_dim, cfg.units, cfg.layers) == (2, 64, 2)
    assert all(type(v) is int for v in (cfg.action_dim, cfg.units, cfg.layers))  # hashable, JSON-ready
    json.dumps(cfg.to_dict())
