"""Mutation check for the core tests (a dev script, not part of pytest).

Copies the repository (without `.venv`, `.git` and caches) to a temporary directory, applies
each mutation to the *copy* with a plain string replacement, runs the core test files there
with `PYTHONPATH=<copy>` (asserting, in the process that runs pytest, that
`dreamer_actor.__file__` lies inside the copy) and reports whether some test failed.
The working tree it was started from is never modified.

Usage:
    .venv/bin/python scripts/mutation_check.py            # all mutations
    .venv/bin/python scripts/mutation_check.py jacobian   # only those whose name contains "jacobian"

Exit status 0 when the unmutated copy passes and every mutation is caught.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
CORE_TESTS = [
    "tests/test_tanh_normal.py",
    "tests/test_distributions.py",
    "tests/test_losses.py",
    "tests/test_estimators.py",
    "tests/test_act.py",
    "tests/test_checks.py",
    "tests/test_properties.py",
    "tests/test_config.py",
    "tests/test_networks.py",
    "tests/test_bandit.py",
    "tests/test_returns.py",
    "tests/test_normalizer.py",
    "tests/test_float64.py",
]
IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", "*.egg-info", "results"
)


class Mutation(NamedTuple):
    name: str
    path: str
    old: str
    new: str


# Not listed: unclipping bounded_normal's env action (`to_bounds(x)` instead of
# `to_bounds(clip(x, -1, 1))`) is an equivalent mutant, since `to_bounds` ends with the clip to
# [low, high]: no test can tell them apart.
MUTATIONS = [
    Mutation(
        "tanh-1-drop-jacobian-tanh-term",
        "dreamer_actor/_src/distributions/tanh_normal.py",
        "jnp.log(_common.broadcast_last(config.scale, u)) + log1m_tanh_sq(u)",
        "jnp.log(_common.broadcast_last(config.scale, u))",
    ),
    Mutation(
        "tanh-2-drop-affine-log-scale-term",
        "dreamer_actor/_src/distributions/tanh_normal.py",
        "jnp.log(_common.broadcast_last(config.scale, u)) + log1m_tanh_sq(u)",
        "log1m_tanh_sq(u)",
    ),
    Mutation(
        "tanh-3-drop-stop-gradient-in-sample",
        "dreamer_actor/_src/distributions/tanh_normal.py",
        "        u = jax.lax.stop_gradient(u)\n    return squash(u, config), u",
        "        u = u\n    return squash(u, config), u",
    ),
    Mutation(
        "tanh-4-log-std-head-ignores-init-std",
        "dreamer_actor/_src/distributions/tanh_normal.py",
        "jax.nn.sigmoid(raw_std + offset)",
        "jax.nn.sigmoid(raw_std)",
    ),
    Mutation(
        "bounds-1-flip-affine-map-sign",
        "dreamer_actor/_src/distributions/_common.py",
        "action = y * broadcast_last(config.scale, y) + broadcast_last(config.bias, y)",
        "action = broadcast_last(config.bias, y) - y * broadcast_last(config.scale, y)",
    ),
    Mutation(
        "bounds-2-swap-scale-and-bias",
        "dreamer_actor/_src/distributions/_common.py",
        "action = y * broadcast_last(config.scale, y) + broadcast_last(config.bias, y)",
        "action = y * broadcast_last(config.bias, y) + broadcast_last(config.scale, y)",
    ),
    Mutation(
        "bounds-3-drop-final-clip",
        "dreamer_actor/_src/distributions/_common.py",
        "    return jnp.clip(action, broadcast_last(config.low, y), broadcast_last(config.high, y))",
        "    return action",
    ),
    Mutation(
        "bounded-1-drop-log-scale",
        "dreamer_actor/_src/distributions/bounded_normal.py",
        "axis=-1) - _sum_log_scale(config, mean.dtype)",
        "axis=-1)",
    ),
    Mutation(
        "bounded-2-std-without-the-plus-2-offset",
        "dreamer_actor/_src/distributions/bounded_normal.py",
        "jax.nn.sigmoid(raw_std + 2.0)",
        "jax.nn.sigmoid(raw_std)",
    ),
    Mutation(
        "bounded-4-raw-sample-clipped",
        "dreamer_actor/_src/distributions/bounded_normal.py",
        "return _common.to_bounds(jnp.clip(x, -1.0, 1.0), config), x",
        "return _common.to_bounds(jnp.clip(x, -1.0, 1.0), config), jnp.clip(x, -1.0, 1.0)",
    ),
    Mutation(
        "categorical-1-drop-unimix-in-log-probs",
        "dreamer_actor/_src/distributions/categorical.py",
        "    if config.unimix > 0.0:\n        log_softmax",
        "    if False:\n        log_softmax",
    ),
    Mutation(
        "categorical-2-mode-argmin",
        "dreamer_actor/_src/distributions/categorical.py",
        "index = jnp.argmax(_to_heads(dist.logits, config, -jnp.inf), axis=-1)",
        "index = jnp.argmin(_to_heads(dist.logits, config, jnp.inf), axis=-1)",
    ),
    Mutation(
        "categorical-3-nan-logits-give-a-one-hot",
        "dreamer_actor/_src/distributions/categorical.py",
        "return _from_heads(jnp.where(nan[..., None], jnp.nan, onehot), config)",
        "return _from_heads(onehot, config)",
    ),
    Mutation(
        "act-1-log-prob-at-the-differentiable-sample",
        "dreamer_actor/_src/act.py",
        "log_prob = family.log_prob(dist, config, raw_sample=jax.lax.stop_gradient(raw_sample))",
        "log_prob = family.log_prob(dist, config, raw_sample=raw_sample)",
    ),
    Mutation(
        "loss-1-drop-stop-gradient-on-advantage",
        "dreamer_actor/_src/losses.py",
        "advantage = jax.lax.stop_gradient(advantage).astype(log_prob.dtype)",
        "advantage = advantage.astype(log_prob.dtype)",
    ),
    Mutation(
        "returns-1-swap-lambda-and-one-minus-lambda",
        "dreamer_actor/_src/returns.py",
        "offset = rewards + gamma * (1.0 - lambda_) * next_values",
        "offset = rewards + gamma * lambda_ * next_values",
    ),
    Mutation(
        "returns-2-ignore-continues",
        "dreamer_actor/_src/returns.py",
        "gamma = discount * continues",
        "gamma = discount * jnp.ones_like(continues)",
    ),
    Mutation(
        "normalizer-1-swap-percentiles",
        "dreamer_actor/_src/normalizer.py",
        "returns, jnp.asarray([self.low_percentile, self.high_percentile], jnp.float32)",
        "returns, jnp.asarray([self.high_percentile, self.low_percentile], jnp.float32)",
    ),
    Mutation(
        "normalizer-2-do-not-skip-non-finite-batches",
        "dreamer_actor/_src/normalizer.py",
        "finite = jnp.all(jnp.isfinite(returns))",
        "finite = jnp.asarray(True)",
    ),
]

# Runs pytest in-process after checking that the package comes from the copy.
RUNNER = """
import sys
from pathlib import Path
import dreamer_actor
copy = Path(sys.argv[1]).resolve()
where = Path(dreamer_actor.__file__).resolve()
if not where.is_relative_to(copy):
    print(f"WRONG PACKAGE: dreamer_actor imported from {where}, not from the copy {copy}")
    sys.exit(99)
print(f"dreamer_actor imported from {where}")
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""


def run_tests(copy: Path, stop_first: bool) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    args = ["-q", "-rf", "-p", "no:xdist", "-p", "no:cacheprovider", *CORE_TESTS]
    if stop_first:
        args.insert(0, "-x")
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(copy), *args], cwd=copy, env=env, capture_output=True, text=True
    )
    return proc.returncode, proc.stdout + proc.stderr


def summarize(output: str) -> list[str]:
    lines = output.splitlines()
    failed = [x for x in lines if x.startswith(("FAILED", "ERROR"))]
    tail = [x for x in lines if " passed" in x or " failed" in x or " error" in x]
    return failed[:5] + tail[-1:]


def main() -> int:
    selected = [m for m in MUTATIONS if len(sys.argv) < 2 or any(a in m.name for a in sys.argv[1:])]
    ok = True
    with tempfile.TemporaryDirectory(prefix="mutation_check_") as tmp:
        base = Path(tmp) / "base"
        shutil.copytree(REPO, base, ignore=IGNORE)
        print(f"repository {REPO} copied to {base}", flush=True)

        start = time.time()
        rc, out = run_tests(base, stop_first=False)
        origin = next((x for x in out.splitlines() if "imported from" in x or "WRONG PACKAGE" in x), "?")
        print(f"[baseline] rc={rc} ({time.time() - start:.0f}s) {origin}")
        for line in summarize(out):
            print(f"    {line}")
        if rc != 0:
            print("baseline does not pass: fix the tests first.\n" + out[-4000:])
            return 1

        results = []
        for m in selected:
            copy = Path(tmp) / m.name
            shutil.copytree(base, copy)
            target = copy / m.path
            text = target.read_text()
            if text.count(m.old) != 1:
                print(f"[{m.name}] mutation target found {text.count(m.old)} times in {m.path}: cannot apply")
                results.append((m.name, False))
                ok = False
                continue
            target.write_text(text.replace(m.old, m.new))
            start = time.time()
            rc, out = run_tests(copy, stop_first=True)
            if rc == 99:
                print(out)
                return 1
            caught = rc != 0
            results.append((m.name, caught))
            ok &= caught
            print(f"[{m.name}] {'CAUGHT' if caught else 'NOT CAUGHT'} (rc={rc}, {time.time() - start:.0f}s)")
            for line in summarize(out):
                print(f"    {line}")
            shutil.rmtree(copy)

    print("\nsummary:")
    for name, caught in results:
        print(f"  {name:45s} {'caught' if caught else 'NOT CAUGHT'}")
    # The working tree was never touched.
    for m in MUTATIONS:
        assert m.old in (REPO / m.path).read_text(), m.name
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
