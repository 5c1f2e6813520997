"""Strict numerics for the whole suite (as equinox's tests do).

`jax_numpy_rank_promotion="raise"` turns the classic RL-loss bug, `(B,) * (B, 1)`
silently broadcasting to `(B, B)`, into an error. Float64 tests live in their own
files and run in subprocesses, since `jax_enable_x64` is process-global.
"""

import os
import pathlib
import warnings

# XLA's compile is most of an agent test's time on 2 cores, and many tests (and the CLI subprocesses
# they start, which inherit this) compile the same tiny agent through fresh `jax.jit` objects: with
# jax's persistent compilation cache each program compiles once per suite (keyed by the program, the
# jax and jaxlib versions and the compile options; under build/, git-ignored).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(pathlib.Path(__file__).resolve().parents[1] / "build" / "jax-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import jax  # after the cache's environment, which jax reads at import
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])  # were jax imported earlier
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import distrax  # noqa: F401  (tfp-nightly's own DeprecationWarnings, once)


@pytest.fixture
def key():
    return jax.random.key(0)
