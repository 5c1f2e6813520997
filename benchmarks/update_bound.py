"""What bounds the agent's update: its matrix products' FLOPs and their own speed, against its wall time.

    .venv/bin/python -m benchmarks.update_bound                  # the default agent on Pendulum-v1
    .venv/bin/python -m benchmarks.update_bound --env CartPole-v1 --rounds 9 --out results/bench/update_bound

For the update `train.make_update` compiles (built as `benchmarks.agent_update.build` builds it):

* `dot_flops`: every `dot` of the optimized HLO, `2 * output elements * contracted size`, times the trip
  count of each `while` it sits in (XLA's `known_trip_count`; a loop without one counts once and is
  reported), summed by the op_name of its JAX source;
* the update's wall time (median of `--rounds` calls, donated state fed back);
* the products alone: each distinct product shape of the HLO timed as one jitted `a @ b` (median), times
  how often the update runs it, so `products_alone_s` is what the update's products cost at XLA's own
  speed on this machine, with nothing around them;
* the profile (`jax.profiler`): thunk time in fusions that hold a product against every other thunk
  (loops' own thunks left out: their bodies' thunks are counted), and the longest of the others.

`products_alone_s / update_s` is the share of the update that no change short of fewer FLOPs or faster
products can remove. Writes `update_bound.json` and `update_bound.md` to `--out`.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import pathlib
import re
import statistics
import tempfile
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_COMPUTATION = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\w+)\[([\d,]*)\]\S* ([a-z][\w-]*)\((.*)$")


def computations(hlo_text: str) -> dict[str, list[str]]:
    """Optimized HLO text -> `{computation name: its instruction lines}` (the entry is `"ENTRY"`)."""
    out, name = {}, None
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line) if line and not line.startswith(" ") else None
        if m:
            name = "ENTRY" if m.group(1) else m.group(2)
            out[name] = []
        elif name is not None and line.startswith(" "):
            out[name].append(line)
    return out


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d]


def run_counts(comps: dict[str, list[str]]) -> tuple[collections.Counter, list[str]]:
    """How many times each computation runs per call of the entry, and the loops without a known trip count."""
    callees = collections.defaultdict(list)
    unknown = []
    for name, lines in comps.items():
        for line in lines:
            if " while(" in line:
                body = re.search(r"body=%([\w.\-]+)", line).group(1)
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
                if trips is None:
                    unknown.append(body)
                callees[name].append((body, int(trips.group(1)) if trips else 1))
            for callee in re.findall(r"(?:calls|to_apply)=%([\w.\-]+)", line):
                callees[name].append((callee, 1))
    counts = collections.Counter()

    def visit(name: str, times: int) -> None:
        counts[name] += times
        for callee, trips in callees.get(name, []):
            visit(callee, times * trips)

    visit("ENTRY", 1)
    return counts, unknown


def dot_flops(hlo_text: str) -> dict[str, Any]:
    """The products of an optimized HLO module, per call of its entry.

    Returns `{"flops": total, "by_op": {op_name: flops}, "shapes": {(m, k, n, batch): runs},
    "unknown_trip_loops": [...]}` where a product `[batch..., m, k] x [k, n]` is keyed by its operands'
    non-batch sizes.
    """
    comps = computations(hlo_text)
    counts, unknown = run_counts(comps)
    total, by_op, shapes = 0, collections.Counter(), collections.Counter()
    for name, lines in comps.items():
        if not counts[name]:
            continue
        shape_of = {m.group(1): _dims(m.group(3)) for line in lines if (m := _INSTR.match(line))}
        for line in lines:
            m = _INSTR.match(line)
            if m is None or m.group(4) != "dot":
                continue
            out = _dims(m.group(3))
            lhs_name, rhs_name = re.match(r"%([\w.\-]+), %([\w.\-]+)", m.group(5)).groups()
            lhs, rhs = shape_of[lhs_name], shape_of[rhs_name]
            contract = _dims(re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1))
            batch_dims = _dims((re.search(r"lhs_batch_dims=\{([\d,]*)\}", line) or re.match("()", "")).group(1))
            k = int(np.prod([lhs[d] for d in contract]))
            flops = 2 * int(np.prod(out)) * k * counts[name]
            total += flops
            op = re.search(r'op_name="([^"]*)"', line)
            by_op[op.group(1) if op else "?"] += flops
            batch = int(np.prod([lhs[d] for d in batch_dims]))
            m_size = int(np.prod(lhs)) // (k * batch)
            shapes[(m_size, k, int(np.prod(rhs)) // (k * batch), batch)] += counts[name]
    return {"flops": total, "by_op": dict(by_op), "shapes": dict(shapes), "unknown_trip_loops": unknown}


def time_product(m: int, k: int, n: int, batch: int, rounds: int) -> float:
    """Median seconds of one jitted float32 `[batch, m, k] @ [batch, k, n]` (no batch dim when batch is 1)."""
    lead = (batch,) if batch > 1 else ()
    a = jnp.full((*lead, m, k), 0.01, jnp.float32)
    b = jnp.full((*lead, k, n), 0.01, jnp.float32)
    fn = jax.jit(jnp.matmul)
    jax.block_until_ready(fn(a, b))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(fn(a, b))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile_split(compiled: Any, call: Any, hlo_text: str, steps: int = 3, top: int = 12) -> dict[str, Any]:
    """Per call: thunk seconds in fusions that hold a product, in every other thunk, and the longest others."""
    comps = computations(hlo_text)
    kind = {}
    for lines in comps.values():
        for line in lines:
            m = _INSTR.match(line)
            if m is None:
                continue
            called = re.search(r"calls=%([\w.\-]+)", m.group(5))
            body = "\n".join(comps.get(called.group(1), [])) if called else ""
            op = re.search(r'op_name="([^"]*)"', line)
            kind[m.group(1)] = (m.group(4), m.group(4) == "dot" or " dot(" in body, op.group(1) if op else "")
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            for _ in range(steps):
                call()
        (trace,) = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(trace) as f:
            events = json.load(f)["traceEvents"]
    split, others = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") != "X" or e.get("name") not in kind:
            continue
        opcode, has_dot, op_name = kind[e["name"]]
        if opcode in ("while", "call", "conditional"):
            continue
        seconds = e["dur"] * 1e-6 / steps
        split["with products" if has_dot else "other"] += seconds
        if not has_dot:
            others[re.sub(r"\[[^\]]*\]", "", op_name) or opcode] += seconds
    return {"thunks_with_products_s": split["with products"], "other_thunks_s": split["other"],
            "top_other": others.most_common(top)}  # fmt: skip


def measure(env_id: str, rounds: int) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from benchmarks import agent_update
        from dreamer_actor.agent import train as agent_train

    agent = agent_update.build(env_id, "reinforce", quick=False)
    config = agent.config
    batch = {k: jnp.asarray(v) for k, v in agent.replay.sample(config.batch, config.length).items()}
    update = agent_train.make_update(agent.wm_config, agent.actor_config, config)
    state = jax.tree.map(jnp.copy, agent.state)
    compiled = update.lower(state, batch).compile()
    text = compiled.as_text()
    box = {"state": state}

    def call():
        box["state"], metrics, _ = compiled(box["state"], batch)
        jax.block_until_ready(metrics)

    for _ in range(3):
        call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    update_s = statistics.median(times)
    flops = dot_flops(text)
    per_shape = {shape: time_product(*shape, rounds=max(rounds, 5)) for shape in flops["shapes"]}
    products_alone = sum(runs * per_shape[shape] for shape, runs in flops["shapes"].items())
    return {
        "env": env_id,
        "device": str(jax.devices()[0]),
        "update_s": update_s,
        "update_s_range": [min(times), max(times)],
        "dot_flops": flops["flops"],
        "unknown_trip_loops": flops["unknown_trip_loops"],
        "products_alone_s": products_alone,
        "products": [
            {
                "m": s[0],
                "k": s[1],
                "n": s[2],
                "batch": s[3],
                "runs": runs,
                "s_each": per_shape[s],
                "gflops": 2 * np.prod(s) / per_shape[s] / 1e9,
            }
            for s, runs in sorted(flops["shapes"].items(), key=lambda kv: -kv[1] * per_shape[kv[0]])
        ],
        "top_dot_ops": sorted(flops["by_op"].items(), key=lambda kv: -kv[1])[:12],
        **profile_split(compiled, call, text),
    }


def markdown(r: dict[str, Any]) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.1f} ms"

    low, high = r["update_s_range"]
    share = r["products_alone_s"] / r["update_s"]
    rows = [
        ("update (median of the rounds)", f"{ms(r['update_s'])} ({ms(low)}-{ms(high)})"),
        ("its products' FLOPs", f"{r['dot_flops'] / 1e9:.2f} GFLOP ({r['dot_flops'] / r['update_s'] / 1e9:.0f} GFLOP/s)"),  # noqa: E501
        ("the same products alone, each shape timed by itself", f"{ms(r['products_alone_s'])} ({share:.0%})"),
        ("profile: thunks holding a product / all others", f"{ms(r['thunks_with_products_s'])} / {ms(r['other_thunks_s'])}"),  # noqa: E501
    ]  # fmt: skip
    lines = [
        f"# What bounds the agent's update ({r['env']}, defaults, REINFORCE; {r['cpu']})",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += ["", "| product [m, k] x [k, n] (batch) | runs per update | alone, each | GFLOP/s |", "|---|---|---|---|"]
    for p in r["products"][:12]:
        shape = f"[{p['m']}, {p['k']}] x [{p['k']}, {p['n']}] ({p['batch']})"
        lines.append(f"| {shape} | {p['runs']} | {p['s_each'] * 1e6:.0f} us | {p['gflops']:.0f} |")
    lines += ["", "| the longest thunks without a product | per update |", "|---|---|"]
    lines += [f"| `{name[:110]}` | {ms(seconds)} |" for name, seconds in r["top_other"]]
    if r["unknown_trip_loops"]:
        lines += ["", f"Loops without a known trip count (their products counted once): {r['unknown_trip_loops']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", default="results/bench/update_bound")
    args = parser.parse_args(argv)
    from benchmarks.actor_step import _cpu_model

    result = {**measure(args.env, args.rounds), "cpu": _cpu_model()}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "update_bound.json").write_text(json.dumps(result, indent=1, default=str))
    text = markdown(result)
    (out / "update_bound.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
