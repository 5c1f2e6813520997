"""The agent's update on one core, on two, and data parallel over two host devices; batch 16 and 32.

Issue 21's DMC runs take 33-36 min per 100k frames at train ratio 64 on one core and about 2 h at
ratio 256, the ratio that made pendulum_swingup's seed 0 hold the pole; the target is 60 min on this
2-core CPU. The train ratio fixes the replayed rows per env step, so what a run costs in updates is
`ratio * policy_steps / (B * L) * t_update(B)`: this benchmark measures `t_update` for each way of
spending the two cores and for two batch sizes, and prints that cost per 100k frames.

Each variant runs in a fresh process (`XLA_FLAGS` is read once per process), pinned with `taskset`,
the order rotated round by round. The agent is the default one (`RunConfig`) with the
`bounded_normal` actor on a Pendulum-shaped task (3 observations, 1 action: DMC pendulum_swingup's
shapes), updated on random batches; `devices=2` is `make_update(..., devices=2)` over two host CPU
devices (`--xla_force_host_platform_device_count=2`).

    python -m benchmarks.update_scaling [--rounds 3] [--updates 20] [--variants 1core_b16,2dev_b16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
LENGTH, FRAMES, ACTION_REPEAT, WARMUP, RATIOS = 32, 100_000, 2, 1000, (64, 256)
# name: (taskset CPU list, host devices, batch)
VARIANTS = {
    "1core_b16": ("0", 1, 16),
    "2cores_b16": ("0,1", 1, 16),
    "2dev_b16": ("0,1", 2, 16),
    "1core_b32": ("0", 1, 32),
    "2cores_b32": ("0,1", 1, 32),
    "2dev_b32": ("0,1", 2, 32),
}


def child(devices: int, batch: int, updates: int) -> dict[str, Any]:
    """`updates` timed calls of the default agent's jitted update (after one untimed first call)."""
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    import gymnasium as gym
    import jax

    from benchmarks import _timing as T
    from dreamer_actor.agent import train as agent_train
    from dreamer_actor.agent.run import RunConfig

    if jax.device_count() < devices:
        raise RuntimeError(f"update_scaling: {devices} devices asked, jax sees {jax.device_count()}")
    run = RunConfig.from_flags(batch=batch, length=LENGTH, devices=devices, distribution="bounded_normal",
                               progress=False)  # fmt: skip
    actor_config, wm_config = run.model_configs(gym.make("Pendulum-v1"))
    config = run.agent
    state = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, config)
    update = agent_train.make_update(wm_config, actor_config, config, devices=devices)
    times = T.time_agent_updates(update, state, batch, LENGTH, updates)
    return {"first_s": times[0], "times": times[1:], "devices": jax.device_count(), "jax": jax.__version__}


def run_variant(name: str, updates: int) -> dict[str, Any]:
    cpus, devices, batch = VARIANTS[name]
    cmd = ["taskset", "-c", cpus, sys.executable, "-m", "benchmarks.update_scaling", "--_child",
           f"{devices},{batch}", "--updates", str(updates)]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONWARNINGS": "ignore"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}" if devices > 1 else ""
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent, timeout=1800, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name} exited with {done.returncode}: {done.stderr[-3000:]}")
    return json.loads(lines[-1])


def updates_per_run(batch: int, ratio: float) -> int:
    """The updates of a `FRAMES`-frame run as the loop owes them: `ratio / (B * L)` per policy step after warm-up."""
    return int(ratio * (FRAMES // ACTION_REPEAT - WARMUP + 1) / (batch * LENGTH))


def update_minutes(update_s: float, batch: int, ratio: float) -> float:
    """Minutes spent in updates by a `FRAMES`-frame run (acting, env steps and evaluations not counted)."""
    return updates_per_run(batch, ratio) * update_s / 60.0


def summarize(rounds: list[dict[str, dict[str, Any]]], names: list[str]) -> dict[str, Any]:
    base = names[0]
    out: dict[str, Any] = {}
    for name in names:
        batch = VARIANTS[name][2]
        median = float(np.median([t for r in rounds for t in r[name]["times"]]))
        # Time per replayed row against the first variant's, per round: the cost of a fixed train ratio.
        ratios = [
            float(np.median(r[name]["times"]) / batch / (np.median(r[base]["times"]) / VARIANTS[base][2]))
            for r in rounds
        ]
        out[name] = {
            "update_s": median,
            "per_round_s": [float(np.median(r[name]["times"])) for r in rounds],
            "first_call_s": [r[name]["first_s"] for r in rounds],
            "row_cost_vs_first": {"median": float(np.median(ratios)), "min": min(ratios), "max": max(ratios)},
            "update_minutes_per_100k_frames": {str(k): update_minutes(median, batch, k) for k in RATIOS},
        }
    return out


def markdown(result: dict[str, Any], meta: dict[str, Any]) -> str:
    first = next(iter(result))
    lines = [
        f"# The agent's update over cores, devices and batch ({meta['date']})",
        "",
        f"`{meta['command']}` on {meta['cpu']}, commit {meta['commit']}; {meta['rounds']} rounds x "
        f"{meta['updates']} updates per variant, a fresh process each, order rotated; batch B x {LENGTH}, "
        f"bounded_normal actor, Pendulum shapes, float32.",
        "",
        f"| variant (CPUs, devices, B) | s / update | per-round medians | time per replayed row / {first}'s "
        f"(median, min - max) | update minutes per 100k frames at ratio {RATIOS[0]} / {RATIOS[1]} "
        "(action repeat 2) | first call s |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in result.items():
        cpus, devices, batch = VARIANTS[name]
        r, m = s["row_cost_vs_first"], s["update_minutes_per_100k_frames"]
        per_round = ", ".join(f"{t:.3f}" for t in s["per_round_s"])
        first_calls = ", ".join(f"{t:.1f}" for t in s["first_call_s"])
        lines.append(
            f"| {name} ({cpus}; {devices}; {batch}) | {s['update_s']:.3f} | {per_round} "
            f"| {r['median']:.3f} ({r['min']:.3f} - {r['max']:.3f}) "
            f"| {m[str(RATIOS[0])]:.1f} / {m[str(RATIOS[1])]:.1f} | {first_calls} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=20, help="timed updates per variant and round")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench/update_scaling"))
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; expected names of {', '.join(VARIANTS)}")
    if args.rounds < 1 or args.updates < 1:
        parser.error(f"--rounds and --updates must be >= 1, got {args.rounds} and {args.updates}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child:
        devices, batch = (int(x) for x in args._child.split(","))
        print(json.dumps(child(devices, batch, args.updates)))
        return 0
    from benchmarks.actor_step import _cpu_model, _git_commit

    names = args.variants.split(",")
    rounds = []
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        rounds.append({name: run_variant(name, args.updates) for name in order})
        print(f"round {r + 1}: " + ", ".join(f"{n} {np.median(rounds[-1][n]['times']):.3f} s" for n in names))
    result = summarize(rounds, names)
    meta = {
        "date": datetime.date.today().isoformat(), "cpu": _cpu_model() or platform.processor(),
        "commit": _git_commit(), "rounds": args.rounds, "updates": args.updates,
        "command": "python -m benchmarks.update_scaling " + " ".join(argv if argv is not None else sys.argv[1:]),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "update_scaling.json").write_text(json.dumps({"meta": meta, "result": result, "rounds": rounds}))
    (args.out / "update_scaling.md").write_text(markdown(result, meta))
    print(markdown(result, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
