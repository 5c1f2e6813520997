"""`make_actor_train_step` (per-example keys) against the batched `act` step, and against the per-example
path as it was before 5 December 2026 (`act` vmapped over single examples), interleaved.

    python -m benchmarks.per_example_step --out benchmarks/results/per_example_step_<date>_<cpu>.json

The old path is transcribed here as the reference (`vmapped_act_step`): vmapping `act` over single examples
also vmaps the Dense layers' custom VJP, whose weight gradient then is one `[K, F]` outer product per
example, `[T, B, K, F]` in all (24 GB at DreamerV3's 15,360 states), so it is timed on smaller batches
only (`--old-starts`). Reported: median seconds per step, the per-round ratios, the compiled step's
temporary buffers and its largest array, and the outputs' largest difference between old and new.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import dreamer_actor as da
from benchmarks import _timing as T
from benchmarks import actor_step as AS


def vmapped_act_per_example(params, config, hidden, stoch, keys) -> da.ActorOutput:
    """The per-example path before 5 December 2026: `act` on each single example, one vmap per batch dim."""

    def one(h, z, k):
        return da.act(params, config, h, z, k, training=True)

    for _ in jnp.shape(hidden)[:-1]:
        one = jax.vmap(one)
    return one(hidden, stoch, keys)


def vmapped_act_step(config, optimizer):
    def step(params, opt_state, hidden, stoch, advantage, key):
        def loss(p):
            keys = da.train.example_keys(key, jnp.shape(advantage))
            out = vmapped_act_per_example(p, config, hidden, stoch, keys)
            return da.actor_loss(out.log_prob, out.entropy, advantage, entropy_coef=AS.ENTROPY_COEF)

        (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {**metrics, "grad_norm": optax.tree.norm(grads)}

    return step


def _compiled(fn, *args) -> dict[str, Any]:
    compiled = fn.lower(*args).compile()
    sizes = [
        int(np.prod([int(d) for d in dims.split(",") if d]))
        for dims in re.findall(r"f32\[([0-9,]*)\]", compiled.as_text())
    ]
    return {"temp_bytes": compiled.memory_analysis().temp_size_in_bytes, "largest_f32_array_elements": max(sizes)}


def measure(starts: int, repeats: int, with_old: bool) -> dict[str, Any]:
    s = AS.make_setup(dataclasses.replace(AS.workloads(False)["S"], starts=starts))
    c, h, z, adv, key, p = s.config, s.hidden, s.stoch, s.advantage, s.key, s.params
    opt = AS.OPTIMIZER
    state = opt.init(p)
    steps = {
        "make_actor_train_step": (
            jax.jit(da.make_actor_train_step(c, opt, entropy_coef=AS.ENTROPY_COEF)),
            (p, state, h, z, adv, key),
        ),
        "batched act + adam": (jax.jit(AS.with_adam(AS.ours_loss)), (p, state, c, h, z, adv, key)),
    }
    if with_old:
        steps["vmapped act (before)"] = (jax.jit(vmapped_act_step(c, opt)), (p, state, h, z, adv, key))
    result: dict[str, Any] = {"starts": starts, "states": starts * s.workload.horizon, "compiled": {}}
    for name, (fn, args) in steps.items():
        result["compiled"][name] = _compiled(fn, *args)
    keys = da.train.example_keys(key, adv.shape)
    new = jax.jit(lambda p: da.train.act_per_example(p, c, h, z, keys))(p)
    old = jax.jit(lambda p: vmapped_act_per_example(p, c, h, z, keys))(p)
    result["max_abs_diff_new_vs_old"] = {
        f: float(jnp.max(jnp.abs(a - b))) for f, a, b in zip(new._fields, new, old, strict=True)
    }
    times = T.interleaved(
        {name: (lambda fn=fn, args=args: fn(*args)) for name, (fn, args) in steps.items()}, repeats=repeats
    )
    base = times["make_actor_train_step"]
    result["median_s"] = {name: float(np.median(t)) for name, t in times.items()}
    result["seconds"] = times
    result["per_round_ratio_to_make_actor_train_step"] = {
        name: [a / b for a, b in zip(t, base, strict=True)]
        for name, t in times.items()
        if name != "make_actor_train_step"
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=1024, help="imagination starts of the main row (x 15 states)")
    parser.add_argument("--old-starts", default="32,128", help="batch sizes at which the old path is timed too")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    rows = [measure(args.starts, args.repeats, with_old=False)]
    rows += [measure(int(n), max(3, args.repeats // 2), with_old=True) for n in args.old_starts.split(",") if n]
    out = {"cpu": cpu or platform.processor(), "jax": jax.__version__, "rows": rows}
    text = json.dumps(out, indent=1)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    for r in rows:
        med = {k: round(v * 1e3, 1) for k, v in r["median_s"].items()}
        ratios = {k: round(float(np.median(v)), 3) for k, v in r["per_round_ratio_to_make_actor_train_step"].items()}
        print(r["states"], "states: median ms", med, "| median per-round ratio to make_actor_train_step", ratios)
        print("   compiled", r["compiled"], "| max |new - old|", r["max_abs_diff_new_vs_old"])


if __name__ == "__main__":
    main()
