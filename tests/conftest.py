"""Strict numerics for the whole suite (as equinox's tests do).

`jax_numpy_rank_promotion="raise"` turns the classic RL-loss bug, `(B,) * (B, 1)`
silently broadcasting to `(B, B)`, into an error. Float64 tests live in their own
files and run in subprocesses, since `jax_enable_x64` is process-global.
"""

import warnings

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import distrax  # noqa: F401  (tfp-nightly's own DeprecationWarnings, once)


@pytest.fixture
def key():
    return jax.random.key(0)
