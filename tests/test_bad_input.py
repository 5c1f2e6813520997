"""Bad input, generated: every rejected config option or argument gets a TypeError/ValueError at
config or trace time that names the argument (never an XLA error, never a silent coercion).

Deterministic in CI (`derandomize=True`). Each strategy draws values that are wrong for one
field (wrong type, a bool for an int, NaN/inf, out of range, a string from a YAML file); the
assertion is that the error message contains the field's name in backticks.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dreamer_actor as da

SETTINGS = settings(max_examples=40, derandomize=True, deadline=None)
NOT_A_NUMBER = st.sampled_from(["3e-4", "1", None, [1.0], {"a": 1}, b"2"])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])

# field -> strategy of values that are wrong for it (with every other option valid)
BAD_OPTIONS = {
    "action_dim": st.one_of(
        st.integers(max_value=0), st.just(True), st.floats(0.5, 5.5).filter(lambda x: x != int(x)), NOT_A_NUMBER
    ),
    "layers": st.one_of(st.integers(max_value=-1), st.just(True), st.just(2.5), NOT_A_NUMBER),
    "units": st.one_of(st.integers(max_value=0), st.just(False), st.just(64.0), NOT_A_NUMBER),
    "norm": st.one_of(st.text(max_size=5).filter(lambda s: s not in ("layer", "rms", "none")), st.just(None)),
    "activation": st.text(max_size=5).filter(lambda s: s not in ("silu", "relu", "elu", "gelu", "tanh")),
    "dtype": st.sampled_from(["int32", "float8", "", "f32"]),
    "distribution": st.text(min_size=1, max_size=8).filter(lambda s: s not in da.distributions.names()),
    "log_std_max": st.one_of(st.floats(81.0, 1e6), NON_FINITE, NOT_A_NUMBER),
    "log_std_min": st.one_of(st.floats(-1e6, -81.0), st.floats(2.0, 50.0), NON_FINITE, NOT_A_NUMBER),
    "init_std": st.one_of(st.floats(8.0, 1e3), st.floats(-10.0, 0.006), NON_FINITE, NOT_A_NUMBER),
    "mean_limit": st.one_of(st.floats(-100.0, 0.0), NON_FINITE, st.just("5")),
    "output_scale": st.one_of(st.floats(-10.0, 0.0), NON_FINITE, st.just("0.01")),
}


@pytest.mark.parametrize("field", sorted(BAD_OPTIONS))
def test_a_bad_config_option_is_an_error_naming_it(field):
    @SETTINGS
    @given(BAD_OPTIONS[field])
    def check(value):
        kwargs = {"action_dim": 2} if field != "action_dim" else {}
        with pytest.raises((TypeError, ValueError)) as info:
            da.ActorConfig.create(**kwargs, **{field: value})
        assert f"`{field}`" in str(info.value), str(info.value)

    check()


BAD_BOUNDS = st.one_of(
    st.tuples(st.just(-1e300), st.just(1e300)),  # overflows float32
    st.tuples(st.just(0.0), st.just(1e-40)),  # a subnormal range in float32
    st.tuples(st.floats(0.0, 10.0), st.floats(-10.0, 0.0)),  # low >= high
    st.tuples(NON_FINITE, st.just(1.0)),
    st.tuples(st.just("-1"), st.just(1.0)),
)


@SETTINGS
@given(BAD_BOUNDS)
def test_bad_bounds_are_an_error_naming_low_or_high(bounds):
    low, high = bounds
    with pytest.raises((TypeError, ValueError)) as info:
        da.ActorConfig.create(low=low, high=high, action_dim=2)
    message = str(info.value)
    assert "`low`" in message or "`high`" in message, message


@SETTINGS
@given(st.sampled_from(["scale", "bias", "low", "high"]), st.sampled_from([0.0, -1.0, math.nan, math.inf, "x"]))
def test_replace_validates_every_leaf(field, value):
    config = da.ActorConfig.create(low=[-1.0, 0.0], high=[1.0, 2.0])
    if field in ("bias", "low") and value in (0.0, -1.0):  # valid: any bias; a low below high
        new = config.replace(**{field: value})
        if field == "bias":
            np.testing.assert_allclose(new.low, value - np.asarray(config.scale))
        else:
            np.testing.assert_allclose(new.scale, (np.asarray(config.high) - value) / 2)
        return
    with pytest.raises((TypeError, ValueError)) as info:
        config.replace(**{field: value})
    message = str(info.value)
    assert any(f"`{name}`" in message for name in ("scale", "bias", "low", "high")), message


CONFIG = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=2, layers=1, units=8)
HIDDEN, STOCH = jnp.zeros((3, 4)), jnp.zeros((3, 2, 2))
PARAMS = da.Actor.from_config(CONFIG).init(jax.random.key(0), HIDDEN, STOCH)
MEAN = jnp.zeros((3, 2))


def _call(name: str, value):
    """Calls a public function with `name` set to the bad `value`, everything else valid."""
    key = jax.random.key(1)
    if name in ("training", "deterministic", "reparameterize"):
        kwargs = {"training": False, name: value}
        return da.act(PARAMS, CONFIG, HIDDEN, STOCH, key, **kwargs)
    if name == "config":
        return da.act(PARAMS, value, HIDDEN, STOCH, key, training=False)
    if name == "key":
        return da.sample_action(value, MEAN, MEAN, CONFIG)
    if name in ("raw_sample", "action"):
        return da.log_prob_with_tanh_correction(MEAN, MEAN, CONFIG, **{name: value})
    if name == "entropy_coef":
        return da.actor_loss(MEAN[:, 0], MEAN[:, 0], MEAN[:, 0], entropy_coef=value)
    if name in ("rho", "scale"):
        return da.policy_loss(MEAN[:, 0], MEAN[:, 0], MEAN[:, 0], MEAN[:, 0], estimator="mix", **{name: value})
    if name == "discount":
        return da.lambda_returns(MEAN, MEAN, MEAN, MEAN[0], discount=value)
    if name == "num_samples":
        return da.entropy_estimate(MEAN, MEAN, CONFIG, key=key, num_samples=value)
    raise AssertionError(name)


BAD_ARGUMENTS = {
    "training": st.sampled_from([1, 0, None, "yes", jnp.asarray(True)]),
    "deterministic": st.sampled_from([1, None, "no", np.bool_(True)]),
    "reparameterize": st.sampled_from([1, None, "no", jnp.asarray(False)]),
    "config": st.sampled_from([None, {}, "tanh_normal", 3]),
    "key": st.sampled_from([None, 0, "key", jnp.zeros(3)]),
    "raw_sample": st.sampled_from([jnp.zeros((3, 3)), jnp.zeros((3, 2), jnp.int32), jnp.zeros(2), "u"]),
    "action": st.sampled_from([jnp.zeros((3, 3)), jnp.zeros((3, 2), jnp.int32), jnp.zeros((2, 3))]),
    "entropy_coef": st.sampled_from(["3e-4", None, -1.0, math.nan, jnp.zeros(2)]),
    "rho": st.sampled_from([-0.5, 1.5, "0.5", math.nan, jnp.zeros(2)]),
    "scale": st.sampled_from([0.0, -2.0, "1", math.nan, jnp.ones(2)]),
    "discount": st.sampled_from([1.5, -0.1, "0.99", jnp.ones(2)]),
    "num_samples": st.sampled_from([0, -1, 2.5, True, "4"]),
}


@pytest.mark.parametrize("name", sorted(BAD_ARGUMENTS))
def test_a_bad_argument_is_an_error_naming_it(name):
    @SETTINGS
    @given(BAD_ARGUMENTS[name])
    def check(value):
        with pytest.raises((TypeError, ValueError)) as info:
            _call(name, value)
        assert f"`{name}`" in str(info.value), str(info.value)

    check()
