"""Timing helpers: interleaved rounds, medians with min-max, compile time, peak memory.

Everything here is framework-agnostic except `block`, which waits for JAX arrays
(`jax.block_until_ready`) and leaves anything else (PyTorch tensors, numpy arrays,
which are ready when returned) alone.

Why interleaved rounds: on a small shared machine the speed drifts by 10-40% over
seconds, so timing variant A for ten runs and then variant B for ten runs measures
the drift as much as the difference. `interleaved` times one call of every variant
per round, `A B C A B C ...`, and `round_ratios` divides the two variants' times
within each round, so a slow spell slows both sides of each ratio alike.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax


def block(x: Any) -> Any:
    """Waits until every JAX array in `x` is computed; returns `x`."""
    leaves = jax.tree.leaves(x)
    if any(isinstance(leaf, jax.Array) for leaf in leaves):
        jax.block_until_ready(x)
    return x


def time_once(fn: Callable[[], Any]) -> float:
    """Seconds for one call of `fn()`, including waiting for its (JAX) result."""
    start = time.perf_counter()
    block(fn())
    return time.perf_counter() - start


def stats(samples: Sequence[float]) -> dict[str, float]:
    """`{"median", "min", "max", "n"}` of a list of numbers."""
    if not samples:
        raise ValueError("stats: `samples` is empty.")
    return {
        "median": float(statistics.median(samples)),
        "min": float(min(samples)),
        "max": float(max(samples)),
        "n": len(samples),
    }


def interleaved(
    variants: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 2,
    min_round_s: float = 0.0,
) -> dict[str, list[float]]:
    """Times every variant once per round, in the order given, for `repeats` rounds.

    Args:
      variants: name -> zero-argument callable (close over the inputs). Each is
        called `warmup` times first (compiling it), then once per round.
      repeats: number of timed rounds (>= 1).
      warmup: untimed calls of each variant before the first round.
      min_round_s: a variant whose single call takes less than this is called
        repeatedly within its slot, and the slot's mean per call is recorded, so that
        microsecond-scale calls (acting at batch 1) are not swamped by timer noise.

    Returns:
      name -> list of `repeats` seconds per call, round `r` at index `r`.
    """
    if repeats < 1:
        raise ValueError(f"interleaved: `repeats` must be >= 1, got {repeats}.")
    inner = {}
    for name, fn in variants.items():
        for _ in range(warmup):
            block(fn())
        one = time_once(fn)
        inner[name] = max(1, int(min_round_s / max(one, 1e-9))) if min_round_s > 0 else 1
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            n = inner[name]
            start = time.perf_counter()
            for _ in range(n):
                block(fn())
            times[name].append((time.perf_counter() - start) / n)
    return times


def round_ratios(times: Mapping[str, Sequence[float]], num: str, den: str) -> list[float]:
    """Per-round `times[num][r] / times[den][r]`."""
    return [a / b for a, b in zip(times[num], times[den], strict=True)]


def summarize(times: Mapping[str, Sequence[float]], ratios: Mapping[str, tuple[str, str]] = ()) -> dict[str, Any]:
    """`{"times": {name: stats}, "ratios": {label: stats of per-round ratios}}`."""
    return {
        "times": {name: stats(ts) for name, ts in times.items()},
        "ratios": {label: stats(round_ratios(times, num, den)) for label, (num, den) in dict(ratios).items()},
    }


def compile_seconds(fn: Callable[..., Any], *args: Any, repeats: int = 3, **kwargs: Any) -> dict[str, Any]:
    """Trace+lower and compile times of `jax.jit(fn)` on `args`, median of `repeats` fresh jits.

    A fresh `jax.jit` of a fresh wrapper each time defeats JAX's in-memory caches (the
    persistent compilation cache is off unless configured), so every repeat traces,
    lowers and compiles from scratch.

    Returns:
      `{"lower": stats, "compile": stats, "total": stats}` in seconds, plus the last
      compiled executable's `"flops"` and `"memory"` (XLA's static analyses) when available.
    """
    lower_s, compile_s, total_s = [], [], []
    compiled = None
    for _ in range(repeats):

        def wrapper(*a, **k):
            return fn(*a, **k)

        start = time.perf_counter()
        lowered = jax.jit(wrapper).lower(*args, **kwargs)
        mid = time.perf_counter()
        compiled = lowered.compile()
        end = time.perf_counter()
        lower_s.append(mid - start)
        compile_s.append(end - mid)
        total_s.append(end - start)
    out: dict[str, Any] = {"lower": stats(lower_s), "compile": stats(compile_s), "total": stats(total_s)}
    out.update(xla_analyses(compiled))
    return out


def xla_analyses(compiled: Any) -> dict[str, Any]:
    """XLA's static FLOP count and buffer sizes of a compiled executable (None if absent)."""
    out: dict[str, Any] = {"flops": None, "memory": None}
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, list | tuple):
            cost = cost[0] if cost else {}
        out["flops"] = float(cost.get("flops")) if cost and cost.get("flops") is not None else None
    except Exception:  # analyses are best-effort extras; a backend may not implement them
        pass
    try:
        mem = compiled.memory_analysis()
        out["memory"] = {
            name: int(getattr(mem, f"{name}_size_in_bytes"))
            for name in ("argument", "output", "temp", "generated_code")
            if hasattr(mem, f"{name}_size_in_bytes")
        }
    except Exception:  # see above
        pass
    return out


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes.

    On Linux this is `VmHWM` from `/proc/self/status`: the high-water mark of this
    process's own address space. `resource.getrusage(RUSAGE_SELF).ru_maxrss` is the
    fallback elsewhere; on Linux it is unusable in a child process, because the kernel
    carries `ru_maxrss` over `fork` + `exec`, so a child of a 700 MiB parent reports at
    least 700 MiB whatever it does (see `getrusage_peak_bytes`).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return getrusage_peak_bytes()


def getrusage_peak_bytes() -> int:
    """`resource.getrusage(RUSAGE_SELF).ru_maxrss` in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def run_child(args: Sequence[str], *, timeout: float = 600.0, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Runs `python -m benchmarks.actor_step <args>` in a fresh process; parses its last stdout line as JSON.

    Fresh processes are needed wherever state is process-wide: peak RSS (a high-water
    mark of the whole process) and XLA flags (read once, when the backend starts).
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.actor_step", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        return {"error": f"child {' '.join(args)} exited with {proc.returncode}: {tail}"}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"child {' '.join(args)} printed no JSON: {lines[-1][:500]}"}


def time_agent_updates(update: Callable[..., Any], state: Any, batch: int, length: int, updates: int) -> list[float]:
    """Seconds of `updates + 1` calls of the agent's jitted update, the first (compile) included.

    Each call gets a fresh random Pendulum-shaped batch `[batch, length]` (3 observations, 1
    action, one episode start per row) and the state the call before returned (it is donated).
    """
    import numpy as np

    rng = np.random.default_rng(0)
    times = []
    for _ in range(updates + 1):
        data = {
            "obs": rng.uniform(-2, 2, (batch, length, 3)).astype(np.float32),
            "action": rng.uniform(-1, 1, (batch, length, 1)).astype(np.float32),
            "reward": rng.uniform(-2, 2, (batch, length)).astype(np.float32),
            "is_first": np.eye(length, dtype=bool)[np.zeros(batch, int)],
            "terminated": np.zeros((batch, length), bool),
        }
        began = time.perf_counter()
        state, _, _ = update(state, data)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - began)
    return times
