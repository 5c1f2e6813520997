"""The probes behind benchmarks/README.md's "Round two" findings (issue #11), one process each section.

`python -m benchmarks.round_two_probes products` times each matrix product of the S step alone
(forward, weight gradient, input gradient of layer 0 and of a 256 x 256 layer) in XLA, PyTorch
and numpy; `act` splits `act` at batch 1 and 16 (config as an argument vs closed over,
`Actor.apply` alone, host vs device inputs, the first layer forced to a sum of products, the
forward's products alone); `small-matmul` times
the `[B, 1536] x [1536, 256]` product at B = 1, 16, 256 in XLA and numpy, and chains of 1, 4 and
16 small products per call (run it under different `XLA_FLAGS`, or with `--sync-dispatch`: JAX's
CPU client with async dispatch off, to compare);
`profile` runs the jitted S training step under `jax.profiler` and splits its time by what each
XLA thunk computes and lists the longest thunks (`--quick`: tiny shapes, to check the mechanism;
`--before`: with the LayerNorm core of before 3 December 2026); `dense` times the S and L
steps with the Actor's layers as `nn.Dense` vs `_src/dense.py`, and the first layer's weight
gradient alone in each form; `agent-dense` times the agent's update with flax's `nn.Dense` +
`nn.LayerNorm` + SiLU vs the Actor's blocks in its MLPs; `norm-variants` times the S step with
the LayerNorm + SiLU rewrites that did not pay; `agent-act` times the agent loop's acting step
(`run.loop_act`) against the call the loop made before it; `split` times the training step with
the first layer forced to concatenate vs to sum two products (`actor_step.first_layer_form`) at S,
L, two smaller state counts and a 512-unit trunk; `agent-split` times the agent's update with its
actor's first layer forced to each form; `dense-forward` times `_src/dense.py`'s forward product
against a transposed kernel; `small-forms` times the first layer's product at batch 1 and 16 in
every form XLA could be asked for, against PyTorch (MKL) and numpy; `compiler-options` times the
S step, `act` and the agent's update compiled with several XLA CPU options
(`COMPILER_OPTIONS`), interleaved in one process; `norm-backward` times the S and L steps and the
agent's update with the LayerNorm backward's row means as products with the scale, and
`norm-barrier` with the forward's row statistics behind a barrier, each against the form before;
`norm-rms` times an RMSNorm Actor's steps with today's RMSNorm core against the one before.
Variants are interleaved round by round; medians are printed.
"""

# ruff: noqa: B023  (every lambda is called inside the loop iteration that made it)
from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import glob
import gzip
import json
import os
import re
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import dreamer_actor as da


def rounds_of(fns: dict, rounds: int = 5, calls: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each zero-arg function in each round, variants interleaved round by round."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                jax.block_until_ready(fn())
            samples[name].append((time.perf_counter() - start) / calls)
    return samples


def interleaved(fns: dict, rounds: int = 5, calls: int = 1) -> dict[str, float]:
    """Median seconds per call of each zero-arg function (`rounds_of`)."""
    return {name: float(np.median(v)) for name, v in rounds_of(fns, rounds, calls).items()}


def products() -> None:
    import torch

    torch.set_num_threads(os.cpu_count())
    rng = np.random.default_rng(0)
    n = 15360
    for name, (k, m) in {"layer 0 (1536 x 256)": (1536, 256), "layer 1 (256 x 256)": (256, 256)}.items():
        x, w, g = (rng.standard_normal(s, dtype=np.float32) for s in ((n, k), (k, m), (n, m)))
        jx, jw, jg = map(jnp.asarray, (x, w, g))
        tx, tw, tg = map(torch.from_numpy, (x, w, g))
        fwd, dw = jax.jit(lambda x, w: x @ w), jax.jit(lambda x, g: jax.lax.dot_general(x, g, (((0,), (0,)), ((), ()))))
        dx = jax.jit(lambda g, w: jax.lax.dot_general(g, w, (((1,), (1,)), ((), ()))))
        cases = {
            "fwd x @ W": {"xla": lambda: fwd(jx, jw), "torch": lambda: tx @ tw, "numpy": lambda: x @ w},
            "dW x^T @ g": {"xla": lambda: dw(jx, jg), "torch": lambda: tx.T @ tg, "numpy": lambda: x.T @ g},
            "dx g @ W^T": {"xla": lambda: dx(jg, jw), "torch": lambda: tg @ tw.T, "numpy": lambda: g @ w.T},
        }
        for case, fns in cases.items():
            t = interleaved(fns)
            cells = "  ".join(f"{k} {v * 1e3:7.2f} ms" for k, v in t.items())
            print(f"{name} {case:12s} {cells}  xla/torch {t['xla'] / t['torch']:.2f}", flush=True)


def act() -> None:
    from benchmarks import actor_step

    rng = np.random.default_rng(0)
    for batch in (1, 16):
        cfg = da.ActorConfig.create(-1.0, 1.0, action_dim=6, layers=3, units=256)
        h = rng.standard_normal((batch, 512), dtype=np.float32)
        z = np.eye(32, dtype=np.float32)[rng.integers(0, 32, (batch, 32))]
        params, key = da.Actor.from_config(cfg).init(jax.random.key(0), h, z), jax.random.key(1)
        hd, zd = jnp.asarray(h), jnp.asarray(z)
        as_arg = jax.jit(functools.partial(da.act, training=False))
        closed = jax.jit(lambda p, h, z, k: da.act(p, cfg, h, z, k, training=False))
        apply = jax.jit(lambda p, h, z: da.Actor.from_config(cfg).apply(p, h, z))

        @jax.jit
        def split(p, h, z):
            with actor_step.first_layer_form("sum"):
                return da.Actor.from_config(cfg).apply(p, h, z)

        kernels = [leaf for leaf in jax.tree.leaves(params) if leaf.ndim == 2]  # the four layers' kernels, in order

        @jax.jit
        def products_only(kernels, h, z):  # the forward's matrix products and nothing else
            x = jnp.concatenate([h, z.reshape(z.shape[0], -1)], -1)
            for kernel in kernels:
                x = x @ kernel
            return x

        t = interleaved({
            "act(p, cfg, host)": lambda: np.asarray(as_arg(params, cfg, h, z, key)),
            "act(p, cfg, device)": lambda: np.asarray(as_arg(params, cfg, hd, zd, key)),
            "act, cfg closed over, host": lambda: np.asarray(closed(params, h, z, key)),
            "Actor.apply alone, host": lambda: np.asarray(apply(params, h, z)),
            "Actor.apply, first layer a sum of products, host": lambda: np.asarray(split(params, h, z)),
            "the forward's products alone, device": lambda: np.asarray(products_only(kernels, hd, zd)),
            "Actor.apply alone, device": lambda: np.asarray(apply(params, hd, zd)),
        }, rounds=7, calls=200)  # fmt: skip
        print(f"batch {batch}: " + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in t.items()), flush=True)


def small_matmul() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1536, 256), dtype=np.float32)
    jw, mm = jnp.asarray(w), jax.jit(lambda x, w: x @ w)
    cells = []
    for batch in (1, 16, 256):
        x = rng.standard_normal((batch, 1536), dtype=np.float32)
        jx = jnp.asarray(x)
        t = interleaved({"xla": lambda: mm(jx, jw), "numpy": lambda: x @ w}, rounds=7, calls=300)
        cells.append(f"B={batch}: xla {t['xla'] * 1e6:.0f} us, numpy {t['numpy'] * 1e6:.0f} us")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}: " + "; ".join(cells))
    # Other ways of asking XLA for the batch-1 product, and the cost of an empty jitted call.
    x1 = jnp.asarray(rng.standard_normal((1, 1536), dtype=np.float32))
    forms = {
        "x @ W": jax.jit(lambda x, w: x @ w),
        "padded to 8 rows": jax.jit(lambda x, w: (jnp.pad(x, ((0, 7), (0, 0))) @ w)[:1]),
        "vector @ W": jax.jit(lambda x, w: x[0] @ w),
        "(W^T @ x^T)^T": jax.jit(lambda x, w: (w.T @ x.T).T),
        "empty call": jax.jit(lambda x, w: x[:, :256] + w[0]),
    }
    t = interleaved({k: functools.partial(f, x1, jw) for k, f in forms.items()}, rounds=7, calls=300)
    print("batch 1: " + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in t.items()), flush=True)
    # n chained [1, 256] x [256, 256] products in one jitted call: the slope is the cost of one more
    # product, the intercept what every call pays (dispatch, the hand-off to XLA's threads).
    w256 = jnp.asarray(rng.standard_normal((256, 256), dtype=np.float32) / 16)
    x256 = jnp.asarray(rng.standard_normal((1, 256), dtype=np.float32))

    def chain(n):
        def fn(x, w):
            for _ in range(n):
                x = jnp.tanh(x @ w)
            return x

        return functools.partial(jax.jit(fn), x256, w256)

    t = interleaved({n: chain(n) for n in (1, 4, 16)}, rounds=7, calls=300)
    slope = (t[16] - t[1]) / 15
    cells = ", ".join(f"{n} {v * 1e6:.0f} us" for n, v in t.items())
    print(f"chained [1, 256] x [256, 256] products per call: {cells}; {slope * 1e6:.1f} us per product, "
          f"{(t[1] - slope) * 1e6:.0f} us per call", flush=True)  # fmt: skip


def small_forms() -> None:
    """`[B, 1536] x [1536, 256]` at acting sizes in every form XLA could be asked for, against MKL (PyTorch)."""
    import torch

    rng = np.random.default_rng(0)
    w = rng.standard_normal((1536, 256), dtype=np.float32)
    jw, jwt, wt = jnp.asarray(w), jnp.asarray(w.T.copy()), torch.from_numpy(w)
    forms = {
        "x @ W": (jax.jit(lambda x, w: x @ w), jw),
        "against W^T": (jax.jit(lambda x, wt: jax.lax.dot_general(x, wt, (((1,), (1,)), ((), ())))), jwt),
        "output columns in 2 products": (
            jax.jit(lambda x, w: jnp.concatenate([x @ w[:, :128], x @ w[:, 128:]], 1)),
            jw,
        ),
        "inputs in 2 products, summed": (jax.jit(lambda x, w: x[:, :768] @ w[:768] + x[:, 768:] @ w[768:]), jw),
    }
    for batch in (1, 16):
        x = rng.standard_normal((batch, 1536), dtype=np.float32)
        jx, xt = jnp.asarray(x), torch.from_numpy(x)
        fns = {k: functools.partial(f, jx, a) for k, (f, a) in forms.items()}
        fns["PyTorch (MKL)"], fns["numpy"] = (lambda: xt @ wt), (lambda: x @ w)
        t = interleaved(fns, rounds=7, calls=300)
        print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, async dispatch "
              f"{jax.config.values['jax_cpu_enable_async_dispatch']}, B={batch}: "
              + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in t.items()), flush=True)  # fmt: skip


# XLA CPU options given to one compilation (`.lower(...).compile(compiler_options=...)`), so that
# the variants can be interleaved in one process, unlike `XLA_FLAGS`, which is process-wide.
COMPILER_OPTIONS = {
    "default": {},
    "YNNPACK for dots only": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    "no YNNPACK fusions": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "512-bit vectors": {"xla_cpu_prefer_vector_width": 512},
}


def _compiled_per_option(jitted, *args) -> dict:
    """Option set name -> `jitted` lowered on `args` and compiled with those options."""
    lowered = jitted.lower(*args)
    return {name: lowered.compile(compiler_options=opts) if opts else lowered.compile()
            for name, opts in COMPILER_OPTIONS.items()}  # fmt: skip


def compiler_options(rounds: int = 9) -> None:
    """The S step, `act` at batch 1 and 16 and the agent's update, each compiled with every
    `COMPILER_OPTIONS` set, the sets interleaved round by round in this one process."""
    from benchmarks import actor_step, agent_update
    from dreamer_actor.agent import train as agent_train

    def report(label: str, compiled: dict, make_fn, calls: int = 1) -> None:
        fns = {name: make_fn(c) for name, c in compiled.items()}
        outs = {name: [np.asarray(x, np.float64) for x in jax.tree.leaves(fn())] for name, fn in fns.items()}
        base = outs["default"]
        drift = max(float(np.max(np.abs(a - b))) for o in outs.values() for a, b in zip(o, base, strict=True))
        samples = rounds_of(fns, rounds, calls=calls)
        cells = []
        for name, v in samples.items():
            r = np.array(v) / np.array(samples["default"])
            t = np.median(v)
            cells.append(f"{name} {t * 1e3:.1f} ms" if t > 1e-3 else f"{name} {t * 1e6:.0f} us")
            cells[-1] += f" ({np.median(r):.3f}, {r.min():.3f}-{r.max():.3f})"
        ynn = ", ".join(f"{n} {c.as_text().count('__ynn_fusion')}" for n, c in compiled.items())
        print(f"{label} (YNNPACK fusions: {ynn}; largest difference from default {drift:.1e}):\n  " + "; ".join(cells),
              flush=True)  # fmt: skip

    s = actor_step.make_setup(actor_step.workloads(False)["S"])
    args = (s.params, s.config, s.hidden, s.stoch, s.advantage, s.key)
    step = _compiled_per_option(jax.jit(jax.grad(actor_step.ours_loss)), *args)
    report("S step", step, lambda c: functools.partial(c, *args))
    act = jax.jit(functools.partial(da.act, training=False))
    for b in (1, 16):
        a = actor_step.make_setup(dataclasses.replace(s.workload, name=f"act{b}", starts=b, horizon=1))
        act_args = (a.params, a.config, np.array(a.hidden[0]), np.array(a.stoch[0]), a.key)  # host arrays in
        report(f"act batch {b}, host in and out", _compiled_per_option(act, *act_args),
               lambda c: (lambda: np.asarray(c(*act_args))), calls=200)  # fmt: skip
    for env_id in ("Pendulum-v1", "CartPole-v1"):
        agent = agent_update.build(env_id, "reinforce", False)
        cfg = agent.config
        batch = {k: jnp.asarray(v) for k, v in agent.replay.sample(cfg.batch, cfg.length).items()}
        update = agent_train.make_update(agent.wm_config, agent.actor_config, cfg)
        compiled = _compiled_per_option(update, agent.state, batch)
        # each variant updates its own copy of the agent's state, so the first calls' metrics compare
        report(f"agent update, {env_id}, REINFORCE", compiled, lambda c: agent_update.make_update_fn(agent, c, batch))


# `%name = shape opcode(operands), attributes`; a tuple's shape has spaces, so the shape is non-greedy.
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][\w-]*)\((.*)$")


def thunk_categories(hlo_text: str) -> dict[str, str]:
    """Instruction name -> category, for every instruction of an optimized HLO module's ENTRY.

    Categories: "matrix products" (a `dot`, or a fusion whose computation holds one),
    "input concatenation" (the `[..., H + Z]` input, which `Actor`'s first Dense concatenates),
    "materialized broadcasts" (a fusion that only broadcasts), "layout copies" (transposes
    and copies feeding products), "norm + activation" (what the `norm_i` modules traced),
    and "head, loss, noise" (everything else).
    """
    computations, name = {}, None
    for line in hlo_text.splitlines():
        if line and not line.startswith(" ") and "{" in line and "(" in line:
            name = line.split()[0].lstrip("%") if not line.startswith("ENTRY") else "ENTRY"
            computations[name] = []
        elif name is not None:
            computations[name].append(line)
    out = {}
    for line in computations.get("ENTRY", []):
        m = _INSTR.match(line)
        if m is None:
            continue
        instr, _, opcode, rest = m.groups()
        called = re.search(r"calls=%([\w.\-]+)", rest)
        body = "\n".join(computations.get(called.group(1), [])) if called else ""
        op_match = re.search(r'op_name="([^"]*)"', rest)
        op_name = op_match.group(1) if op_match else ""
        if opcode == "dot" or " dot(" in body:
            out[instr] = "matrix products"
        elif re.search(r"jvp\(Actor\)(/dense_0)?/concatenate$", op_name):  # Actor's first Dense concatenates
            out[instr] = "input concatenation"
        elif instr.startswith("wrapped_broadcast"):
            out[instr] = "materialized broadcasts"
        elif instr.startswith(("copy", "transpose")):
            out[instr] = "layout copies"
        elif "/norm_" in op_name:
            out[instr] = "norm + activation"
        else:
            out[instr] = "head, loss, noise"
    return out


def profile(quick: bool, steps: int = 5, before: bool = False, top: int = 12) -> dict[str, float]:
    """Seconds per S step spent in each `thunk_categories` category (and the wall time), and the `top`
    longest thunks. `before`: with the LayerNorm core of before 2026-12-03 (`_ln_core_variant`)."""
    import dreamer_actor._src.fused_norm as fn
    from benchmarks import actor_step

    s = actor_step.make_setup(actor_step.workloads(quick)["S"])
    args = (s.params, s.config, s.hidden, s.stoch, s.advantage, s.key)
    core = fn._layer_norm_act
    if before:
        fn._layer_norm_act = _ln_core_variant(_unbarriered_stats, scale_products=False)
    try:
        compiled = jax.jit(jax.grad(actor_step.ours_loss)).lower(*args).compile()
    finally:
        fn._layer_norm_act = core
    text = compiled.as_text()
    categories = thunk_categories(text)
    for _ in range(3):
        jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            start = time.perf_counter()
            for _ in range(steps):
                jax.block_until_ready(compiled(*args))
            wall = (time.perf_counter() - start) / steps
        (trace,) = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(trace) as f:
            events = json.load(f)["traceEvents"]
    totals, per_thunk = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in categories:
            totals[categories[e["name"]]] += e["dur"] * 1e-6 / steps
            per_thunk[e["name"]] += e["dur"] * 1e-6 / steps
    result = {"wall": wall, **{k: totals.get(k, 0.0) for k in sorted(set(categories.values()))}}
    full = "f32[" + ",".join(map(str, s.hidden.shape[:-1])) + f",{s.config.units}]"
    rooted = len(re.findall(r"ROOT %\S+ = " + re.escape(full) + r"\S* broadcast\(", text))
    print(f"S step ({s.workload.states} states): wall {wall * 1e3:.1f} ms per step, {steps} steps traced; "
          f"fusions whose output is a broadcast to {full}: {rooted}")  # fmt: skip
    for k, v in result.items():
        if k != "wall":
            print(f"  {k:24s} {v * 1e3:8.2f} ms  ({v / wall:5.1%} of wall)")
    print(
        "  (Eigen dots run asynchronously: their thunk events time the launch, so 'matrix products' is a lower "
        "bound and the wall time minus the other rows an upper one.)",
        flush=True,
    )
    entry = text[text.index("\nENTRY") :].splitlines()
    lines = {m.group(1): line.strip() for line in entry if (m := _INSTR.match(line))}
    print(f"  the {top} longest thunks:")
    for name, t in per_thunk.most_common(top):
        print(f"  {t * 1e3:8.2f} ms  {categories[name]:24s} {lines.get(name, name)[:150]}", flush=True)
    return result


def _ratios(samples: dict[str, list[float]], base: str) -> str:
    """Medians, and each variant's per-round ratio to `base` (median, min-max)."""
    cells = []
    for name, v in samples.items():
        r = np.array(v) / np.array(samples[base])
        cells.append(f"{name} {np.median(v) * 1e3:.1f} ms ({np.median(r):.3f}, {r.min():.3f}-{r.max():.3f})")
    return "; ".join(cells)


def dense_ab(rounds: int = 11) -> None:
    import torch
    from flax import linen as nn

    import dreamer_actor._src.networks as networks
    from benchmarks import actor_step
    from dreamer_actor._src.dense import Dense, dense

    class ConcatenatingDense(nn.Dense):
        """`nn.Dense` on the concatenation of a tuple input (the Actor gives its first layer two parts)."""

        def __call__(self, x):
            return super().__call__(jnp.concatenate(x, axis=-1) if isinstance(x, tuple | list) else x)

    for workload in ("S", "L"):
        s = actor_step.make_setup(actor_step.workloads(False)[workload])
        args = (s.params, s.config, s.hidden, s.stoch, s.advantage, s.key)
        fns = {}
        for name, module, loss in (
            ("nn.Dense", ConcatenatingDense, actor_step.ours_loss),
            ("_src/dense.py, concatenated input", Dense, actor_step.ours_concat_loss),
            ("_src/dense.py", Dense, actor_step.ours_loss),
        ):
            networks.Dense = module  # the Actor looks its Dense up at trace time
            compiled = jax.jit(jax.grad(loss)).lower(*args).compile()
            fns[name] = lambda compiled=compiled: compiled(*args)
        networks.Dense = Dense
        print(f"step {workload}, (ratio to nn.Dense): {_ratios(rounds_of(fns, rounds), 'nn.Dense')}", flush=True)

    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((15360, 1536), dtype=np.float32), rng.standard_normal((15360, 256), dtype=np.float32)
    jx, jg, kernel = jnp.asarray(x), jnp.asarray(g), jnp.zeros((1536, 256))
    autodiff = jax.jit(jax.grad(lambda k, x, g: jnp.sum((x @ k) * g)))
    ours = jax.jit(jax.grad(lambda k, x, g: jnp.sum(dense(x, k) * g)))
    bare = jax.jit(lambda x, g: jax.lax.dot_general(x, g, (((0,), (0,)), ((), ()))))
    barrier = jax.lax.optimization_barrier
    two_barriers = jax.jit(lambda x, g: barrier(barrier(g.T) @ x).T)
    tx, tg = torch.from_numpy(x), torch.from_numpy(g)
    fns = {
        "autodiff of x @ W": lambda: autodiff(kernel, jx, jg),
        "bare dot_general x^T g": lambda: bare(jx, jg),
        "_src/dense.py": lambda: ours(kernel, jx, jg),
        "barriers on g^T and g^T x": lambda: two_barriers(jx, jg),
        "numpy x^T g": lambda: x.T @ g,
        "torch x^T g": lambda: tx.T @ tg,
    }
    print(f"first layer's weight gradient: {_ratios(rounds_of(fns, rounds), 'autodiff of x @ W')}", flush=True)


def _ln_core_variant(stats=None, fwd_barrier=False, bwd_barrier=False, gh_barrier=False, scale_products=True):
    """A `_src/fused_norm.py` LayerNorm + activation core with one change (`stats`: the row statistics;
    `scale_products=False`: the backward's row means as `jnp.mean` of `gz * scale`, the core before c4210ee)."""
    import dreamer_actor._src.fused_norm as fn

    stats, barrier = stats or fn._ln_stats, jax.lax.optimization_barrier

    def fwd(x, scale, bias, eps, activation):
        mu, r = stats(x, eps)
        mu, r = barrier((mu, r)) if fwd_barrier else (mu, r)
        _, z = fn._ln_pre(x, mu, r, scale, bias)
        return fn._ACT[activation](z).astype(x.dtype), (x, mu, r, scale, bias)

    def bwd(eps, activation, res, g):
        x, mu, r, scale, bias = barrier(res) if bwd_barrier else res
        xhat, z = fn._ln_pre(x, mu, r, scale, bias)
        gz = fn._act_grad(activation, z, g.astype(z.dtype))
        gh = gz * fn._row(scale, x.ndim, z.dtype)
        gh = barrier(gh) if gh_barrier else gh  # its own loop fusion: no materialized scale broadcast
        mean = functools.partial(jnp.mean, axis=-1, keepdims=True)
        if scale_products:  # the row means of gz * scale as products with scale / F: no broadcast to reduce
            w = scale.astype(z.dtype) / x.shape[-1]
            dx = r * (gh - fn._row_dot(gz, w) - xhat * fn._row_dot(gz * xhat, w))
        else:
            dx = r * (gh - mean(gh) - xhat * mean(gh * xhat))
        batch = fn._batch_axes(x)
        return dx.astype(x.dtype), jnp.sum(gz * xhat, axis=batch), jnp.sum(gz, axis=batch)

    f = jax.custom_vjp(lambda x, scale, bias, eps, act: fwd(x, scale, bias, eps, act)[0], nondiff_argnums=(3, 4))
    f.defvjp(fwd, bwd)
    return f


def norm_variants(rounds: int = 9) -> None:
    """The S step with `_src/fused_norm.py`'s LayerNorm core swapped for the variants that did not pay."""
    import dreamer_actor._src.fused_norm as fn
    from benchmarks import actor_step

    core = fn._layer_norm_act

    def matvec_stats(x, eps):  # the row mean and mean square as products with a [F] vector
        w = jnp.full(x.shape[-1:], 1.0 / x.shape[-1], jnp.float32)
        mu, ms = (x @ w)[..., None], ((x * x) @ w)[..., None]
        return mu, jax.lax.rsqrt(jnp.maximum(0.0, ms - mu * mu) + eps)

    def variadic_stats(x, eps):  # the row sum and sum of squares in one variadic reduce: one read of x
        s, q = jax.lax.reduce(
            (x, x * x), (jnp.float32(0), jnp.float32(0)), lambda a, b: (a[0] + b[0], a[1] + b[1]), (x.ndim - 1,)
        )
        mu, ms = (s / x.shape[-1])[..., None], (q / x.shape[-1])[..., None]
        return mu, jax.lax.rsqrt(jnp.maximum(0.0, ms - mu * mu) + eps)

    def stacked_stats(x, eps):  # one reduce over [..., 2, F]: x and x^2 stacked
        m = jnp.mean(jnp.stack([x, x * x], axis=-2), axis=-1)
        mu, ms = m[..., :1], m[..., 1:]
        return mu, jax.lax.rsqrt(jnp.maximum(0.0, ms - mu * mu) + eps)

    variants = {
        "current": core,
        "matvec row statistics": _ln_core_variant(matvec_stats),
        "variadic-reduce row statistics": _ln_core_variant(variadic_stats),
        "stacked row statistics": _ln_core_variant(stacked_stats),
        "barrier on the forward's statistics": _ln_core_variant(fwd_barrier=True),
        "barrier on the backward's inputs": _ln_core_variant(bwd_barrier=True),
        "both barriers": _ln_core_variant(fwd_barrier=True, bwd_barrier=True),
        "barrier on gz * scale": _ln_core_variant(gh_barrier=True),
        "the library's core, as written here": _ln_core_variant(),
        "backward row means as jnp.mean (before)": _ln_core_variant(scale_products=False),
    }
    s = actor_step.make_setup(actor_step.workloads(False)["S"])
    args = (s.params, s.config, s.hidden, s.stoch, s.advantage, s.key)
    fns = {}
    for name, f in variants.items():
        fn._layer_norm_act = f  # `layer_norm_act` looks its core up at trace time
        compiled = jax.jit(jax.grad(actor_step.ours_loss)).lower(*args).compile()
        fns[name] = functools.partial(compiled, *args)
    fn._layer_norm_act = core
    print(f"S step, LayerNorm core (ratio to current): {_ratios(rounds_of(fns, rounds), 'current')}", flush=True)


def _unbarriered_stats(x, eps):
    """`_src/fused_norm.py`'s LayerNorm row statistics before 2026-12-03: no barrier after the reductions."""
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mu = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.maximum(0.0, jnp.mean(jnp.square(x32), axis=-1, keepdims=True) - jnp.square(mu))
    return mu, jax.lax.rsqrt(var + eps)


def _relative_drift(fns: dict, base: str) -> float:
    """Largest difference of any variant's outputs from `fns[base]`'s, relative to their largest value."""
    outs = {k: [np.asarray(x, np.float64) for x in jax.tree.leaves(f())] for k, f in fns.items()}
    return max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))
               for o in outs.values() for a, b in zip(o, outs[base], strict=True))  # fmt: skip


def _core_ab(cores: dict, rounds: int = 15, agent_rounds: int = 9) -> None:
    """The S and L steps and the agent's update (REINFORCE) with each LayerNorm core in `cores`
    (the first is the baseline), interleaved; the gradients' largest relative difference is printed."""
    import dreamer_actor._src.fused_norm as fn
    from benchmarks import actor_step, agent_update
    from dreamer_actor.agent import train as agent_train

    core, base = fn._layer_norm_act, next(iter(cores))

    for workload in ("S", "L"):
        s = actor_step.make_setup(actor_step.workloads(False)[workload])
        args = (s.params, s.config, s.hidden, s.stoch, s.advantage, s.key)
        fns = {}
        for name, f in cores.items():
            fn._layer_norm_act = f  # `layer_norm_act` looks its core up at trace time
            fns[name] = functools.partial(jax.jit(jax.grad(actor_step.ours_loss)).lower(*args).compile(), *args)
        fn._layer_norm_act = core
        print(f"step {workload} (gradients' relative drift {_relative_drift(fns, base):.1e}): "
              f"{_ratios(rounds_of(fns, rounds), base)}", flush=True)  # fmt: skip
    for env_id in ("Pendulum-v1", "CartPole-v1"):
        agent = agent_update.build(env_id, "reinforce", False)
        c = agent.config
        batch = {k: jnp.asarray(v) for k, v in agent.replay.sample(c.batch, c.length).items()}
        fns = {}
        for name, f in cores.items():
            fn._layer_norm_act = f
            update = agent_train.make_update(agent.wm_config, agent.actor_config, c)
            fns[name] = agent_update.make_update_fn(agent, update, batch)
            jax.block_until_ready(fns[name]())  # traced (and compiled) with this core
        fn._layer_norm_act = core
        print(f"agent update {env_id}, REINFORCE: {_ratios(rounds_of(fns, agent_rounds), base)}", flush=True)


def norm_backward() -> None:
    """The LayerNorm backward's row means of `gz * scale` as products with `scale / F` (the current
    core) vs as `jnp.mean` (`_ln_core_variant(scale_products=False)`)."""
    import dreamer_actor._src.fused_norm as fn

    _core_ab({"current": fn._layer_norm_act, "row means as jnp.mean": _ln_core_variant(scale_products=False)})


def norm_barrier() -> None:
    """The LayerNorm forward's row statistics behind `_row_stats_barrier` (the current core) vs not, and
    the core before both of 2026-12-03's changes."""
    import dreamer_actor._src.fused_norm as fn

    _core_ab({
        "current": fn._layer_norm_act,
        "no barrier on the statistics": _ln_core_variant(_unbarriered_stats),
        "before 2026-12-03 (neither change)": _ln_core_variant(_unbarriered_stats, scale_products=False),
    })  # fmt: skip


def _rms_core_before():
    """`_src/fused_norm.py`'s RMSNorm + activation core before 2026-12-03: no barrier on the row
    statistic, and the backward's row mean of `gz * scale * xhat` as `jnp.mean`."""
    import dreamer_actor._src.fused_norm as fn

    def fwd(x, scale, eps, activation):
        x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        r = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
        _, z = fn._rms_pre(x, r, scale)
        return fn._ACT[activation](z).astype(x.dtype), (x, r, scale)

    def bwd(eps, activation, res, g):
        x, r, scale = res
        xhat, z = fn._rms_pre(x, r, scale)
        gz = fn._act_grad(activation, z, g.astype(z.dtype))
        gh = gz * fn._row(scale, x.ndim, z.dtype)
        dx = r * (gh - xhat * jnp.mean(gh * xhat, axis=-1, keepdims=True))
        return dx.astype(x.dtype), jnp.sum(gz * xhat, axis=fn._batch_axes(x)).astype(scale.dtype)

    f = jax.custom_vjp(lambda x, scale, eps, act: fwd(x, scale, eps, act)[0], nondiff_argnums=(2, 3))
    f.defvjp(fwd, bwd)
    return f


def norm_rms(rounds: int = 15) -> None:
    """The S and L steps of an Actor with `norm="rms"`: the current RMSNorm core vs `_rms_core_before`."""
    import dreamer_actor._src.fused_norm as fn
    from benchmarks import actor_step

    core = fn._rms_norm_act
    for workload in ("S", "L"):
        s = actor_step.make_setup(actor_step.workloads(False)[workload])
        config = s.config.replace(norm="rms")
        params = da.Actor.from_config(config).init(jax.random.key(0), s.hidden[:1, :1], s.stoch[:1, :1])
        args = (params, config, s.hidden, s.stoch, s.advantage, s.key)
        fns = {}
        for name, f in (("current", core), ("before 2026-12-03", _rms_core_before())):
            fn._rms_norm_act = f  # `rms_norm_act` looks its core up at trace time
            fns[name] = functools.partial(jax.jit(jax.grad(actor_step.ours_loss)).lower(*args).compile(), *args)
        fn._rms_norm_act = core
        print(f"step {workload}, norm='rms' (gradients' relative drift {_relative_drift(fns, 'current'):.1e}): "
              f"{_ratios(rounds_of(fns, rounds), 'current')}", flush=True)  # fmt: skip


def agent_dense(rounds: int = 9) -> None:
    from flax import linen as nn

    import dreamer_actor._src.networks as networks
    from benchmarks import agent_update
    from dreamer_actor.agent import train as agent_train

    class FlaxLayerNormSiLU(nn.Module):
        """`nn.LayerNorm` then SiLU with `FusedLayerNormAct`'s param names (so the same state fits)."""

        activation: str = "silu"
        eps: float = 1e-3

        @nn.compact
        def __call__(self, x):
            params = {
                "scale": self.param("scale", nn.initializers.ones, x.shape[-1:]),
                "bias": self.param("bias", nn.initializers.zeros, x.shape[-1:]),
            }
            return jax.nn.silu(nn.LayerNorm(epsilon=self.eps).apply({"params": params}, x))

    # Since 5 December 2026 the agent's MLPs are `da.networks.MLP`, which reads both names from
    # `_src/networks.py` as the Actor does: swapping them swaps the Actor's norm too (before, only its Dense).
    library = (networks.Dense, networks.FusedLayerNormAct)
    for env_id in ("Pendulum-v1", "CartPole-v1"):
        agent = agent_update.build(env_id, "reinforce", quick=False)
        c = agent.config
        batch = {k: jnp.asarray(v) for k, v in agent.replay.sample(c.batch, c.length).items()}
        fns = {}
        for name, blocks in (("flax", (nn.Dense, FlaxLayerNormSiLU)), ("library", library)):
            networks.Dense, networks.FusedLayerNormAct = blocks
            update = agent_train.make_update(agent.wm_config, agent.actor_config, c)
            fns[name] = agent_update.make_update_fn(agent, update, batch)
            jax.block_until_ready(fns[name]())  # traced (and compiled) with these blocks
        networks.Dense, networks.FusedLayerNormAct = library
        print(f"agent update {env_id}, REINFORCE: {_ratios(rounds_of(fns, rounds), 'flax')}", flush=True)


def agent_act(rounds: int = 7) -> None:
    """The training loop's acting step (Pendulum-v1): `run.loop_act` vs the call the loop made before it."""
    from benchmarks import agent_update
    from dreamer_actor.agent import run as agent_run
    from dreamer_actor.agent import spaces
    from dreamer_actor.agent import train as agent_train
    from dreamer_actor.agent import world_model as wm

    agent = agent_update.build("Pendulum-v1", "reinforce", False)
    policy_step = agent_train.make_policy_step(agent.wm_config, agent.actor_config)
    obs = np.asarray(agent.env.reset(seed=0)[0], np.float32)
    latent = wm.initial_latent(agent.wm_config, (1,))
    prev = jnp.zeros((1, spaces.model_action_dim(agent.actor_config)))
    key, st = jax.random.key(1), agent.state

    def before():  # device arrays made one by one, outputs indexed on the device
        _, action, model_action = policy_step(
            st.wm_params, st.actor_params, latent, prev, jnp.asarray(obs[None], jnp.float32), jnp.asarray([False]),
            key, 5, deterministic=False,
        )  # fmt: skip
        return np.asarray(action[0]), np.asarray(model_action[0])

    def loop_act():
        out = agent_run.loop_act(
            policy_step, st.wm_params, st.actor_params, latent, prev, obs[None], np.array([False]), key, 5
        )
        return out[2][0], out[3][0]

    assert all(np.array_equal(a, b) for a, b in zip(before(), loop_act(), strict=True))
    t = interleaved({"before": before, "run.loop_act": loop_act}, rounds=rounds, calls=300)
    print("agent acting step, Pendulum-v1: " + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in t.items()), flush=True)


def split_input(rounds: int = 11, concat_only: bool = False) -> None:
    """The training step with the first layer forced to concatenate vs to sum two products, at several sizes."""
    from benchmarks import actor_step

    base = actor_step.workloads(False)
    if concat_only:  # the S step's input concatenation alone, XLA vs numpy
        s = actor_step.make_setup(base["S"])
        h = s.hidden.reshape(-1, s.hidden.shape[-1])
        z = s.stoch.reshape(h.shape[0], -1)
        hn, zn = np.asarray(h), np.asarray(z)
        concat = jax.jit(lambda h, z: jnp.concatenate([h, z], -1))
        t = interleaved({"xla": lambda: concat(h, z), "numpy": lambda: np.concatenate([hn, zn], -1)}, 7, 5)
        print(
            f"concatenate {list(h.shape)} + {list(z.shape)}: "
            + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items())
        )
        return
    for name, w in (
        ("S", base["S"]),
        ("S widths, 4096 states", dataclasses.replace(base["S"], starts=256, horizon=16)),
        ("S widths, 1024 states", dataclasses.replace(base["S"], starts=64, horizon=16)),
        ("S inputs, trunk 3 x 512", dataclasses.replace(base["S"], units=512)),
        ("L", base["L"]),
    ):
        s = actor_step.make_setup(w)
        args = (s.params, s.config, s.hidden, s.stoch, s.advantage, s.key)
        fns = {}
        for variant, loss in (("concatenated", actor_step.ours_concat_loss), ("sum", actor_step.ours_split_loss)):
            compiled = jax.jit(jax.grad(loss)).lower(*args).compile()
            fns[variant] = functools.partial(compiled, *args)
        print(f"step {name} ({w.states} states): {_ratios(rounds_of(fns, rounds), 'concatenated')}", flush=True)


def agent_split(rounds: int = 9) -> None:
    """The agent's update with its actor's first layer forced to concatenate vs to sum two products."""
    from benchmarks import actor_step, agent_update
    from dreamer_actor.agent import train as agent_train

    for env_id in ("Pendulum-v1", "CartPole-v1"):
        agent = agent_update.build(env_id, "reinforce", False)
        batch = jax.device_put(agent.replay.sample(agent.config.batch, agent.config.length))
        fns, concats = {}, {}
        for form in ("concatenate", "sum"):
            update = agent_train.make_update(agent.wm_config, agent.actor_config, agent.config)
            fns[form] = agent_update.make_update_fn(agent, update, batch)
            with actor_step.first_layer_form(form):
                jax.block_until_ready(fns[form]())  # traced (and compiled) in this form
                concats[form] = update.lower(agent.state, batch).as_text().count("stablehlo.concatenate")
        print(f"agent update {env_id}, REINFORCE, concatenations in the lowered update {concats}: "
              f"{_ratios(rounds_of(fns, rounds), 'concatenate')}", flush=True)  # fmt: skip


def dense_forward(rounds: int = 9) -> None:
    """`_src/dense.py`'s forward product as `x @ W` (current) vs against a materialized `W^T`, its
    contraction on both operands' last dim ("NT"), behind a barrier: alone, in the S and L steps, acting."""
    import dreamer_actor._src.dense as dense_module
    from benchmarks import actor_step

    current = dense_module._forward

    def nt_forward(x, kernel):
        kernel_t = jax.lax.optimization_barrier(kernel.T)  # kept [F, K]: XLA cannot fold it into the dot
        return jax.lax.dot_general(x, kernel_t, (((x.ndim - 1,), (1,)), ((), ())))

    forms = {"x @ W": current, "x @ (W^T)^T, NT": nt_forward}
    rng = np.random.default_rng(0)
    x, w = (
        jnp.asarray(rng.standard_normal((15360, 1536), np.float32)),
        jnp.asarray(rng.standard_normal((1536, 256), np.float32)),
    )
    alone = {name: functools.partial(jax.jit(f), x, w) for name, f in forms.items()}
    print(f"[15360, 1536] x [1536, 256] alone: {_ratios(rounds_of(alone, rounds, calls=3), 'x @ W')}", flush=True)
    for name in ("S", "L"):
        s = actor_step.make_setup(actor_step.workloads(False)[name])
        args = (s.params, s.config, s.hidden, s.stoch, s.advantage, s.key)
        fns = {}
        for form, f in forms.items():
            dense_module._forward = f
            fns[form] = functools.partial(jax.jit(jax.grad(actor_step.ours_loss)).lower(*args).compile(), *args)
        dense_module._forward = current
        print(f"step {name}: {_ratios(rounds_of(fns, rounds), 'x @ W')}", flush=True)
    cfg = da.ActorConfig.create(-1.0, 1.0, action_dim=6, layers=3, units=256)
    for batch in (1, 16):
        h = rng.standard_normal((batch, 512), dtype=np.float32)
        z = np.eye(32, dtype=np.float32)[rng.integers(0, 32, (batch, 32))]
        params, key = da.Actor.from_config(cfg).init(jax.random.key(0), h, z), jax.random.key(1)
        fns = {}
        for form, f in forms.items():
            dense_module._forward = f
            compiled = jax.jit(functools.partial(da.act, training=False)).lower(params, cfg, h, z, key).compile()
            fns[form] = functools.partial(lambda c, *a: np.asarray(c(*a)), compiled, params, cfg, h, z, key)
        dense_module._forward = current
        print(f"act batch {batch}: {_ratios(rounds_of(fns, rounds, calls=200), 'x @ W')}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sections = (
        "products",
        "act",
        "small-matmul",
        "profile",
        "dense",
        "agent-dense",
        "norm-variants",
        "agent-act",
        "split",
        "agent-split",
        "dense-forward",
        "small-forms",
        "compiler-options",
        "norm-backward",
        "norm-barrier",
        "norm-rms",
    )
    parser.add_argument("section", choices=sections)
    parser.add_argument("--quick", action="store_true", help="profile: tiny shapes")
    parser.add_argument("--before", action="store_true", help="profile: the LayerNorm core of before 2026-12-03")
    parser.add_argument("--concat-only", action="store_true", help="split: time the input concatenation alone")
    parser.add_argument(
        "--sync-dispatch",
        action="store_true",
        help="make JAX's CPU client with async dispatch off (jax_cpu_enable_async_dispatch=False)",
    )
    parsed = parser.parse_args()
    if parsed.sync_dispatch:  # read once, when the CPU client is made: nothing above has touched a device
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    if parsed.section == "profile":
        profile(parsed.quick, before=parsed.before)
    else:
        run = {"products": products, "act": act, "small-matmul": small_matmul, "dense": dense_ab}
        run["agent-dense"], run["norm-variants"], run["agent-act"] = agent_dense, norm_variants, agent_act
        run["split"] = functools.partial(split_input, concat_only=parsed.concat_only)
        run["agent-split"], run["dense-forward"], run["small-forms"] = agent_split, dense_forward, small_forms
        run["compiler-options"], run["norm-backward"] = compiler_options, norm_backward
        run["norm-barrier"], run["norm-rms"] = norm_barrier, norm_rms
        run[parsed.section]()
