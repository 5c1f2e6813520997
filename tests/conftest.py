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


# XLA:CPU runs the work of every device of a process, collectives included, on one intra-op thread pool
# of max(cores, devices) threads, where PJRT_NPROC, when set, stands for the core count. A collective holds
# its thread until every device has reached it, and a device may start its next collective while the
# previous one still waits. So with 8 threads, 8 devices and a program of independent collectives (the
# agent's update: the world model's gradient all-reduce beside the return normalizer's all-gather), the
# waiting collectives can take every thread while another device's turn is still queued behind them.
# XLA ends that after 40 s: "Termination timeout for `all gather ...` ... only 7 of them arrived", seen
# on the 2-core VMs in the 8-device agent test (twice on 6 December 2026: in a suite run, then in a clean
# clone's CI run). 64 threads leave room for eight waiting collectives per device.
HOST_DEVICE_THREADS = 64


@pytest.fixture(scope="session")
def host_devices_env():
    """`host_devices_env(count)`: this process's environment for a subprocess whose jax sees `count` CPU devices.

    The subprocess must not have imported jax before: XLA reads both variables when its client starts.
    """

    def env(count: int) -> dict[str, str]:
        flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}".strip()
        return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "PJRT_NPROC": str(HOST_DEVICE_THREADS)}

    return env
