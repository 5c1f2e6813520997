"""Runs the Pendulum demo for several estimators, start modes and seeds; prints docs/exact_model.md's table.

    .venv/bin/python scripts/demo_sweep.py --seeds 0 1 2 --out results/demo_sweep

Each run is `python -m dreamer_actor.demo` with default settings except the ones varied here,
one after another in this process (so their wall times are comparable), and writes its own
`pendulum_learning_curve.{png,json}` under `<out>/<estimator>_<start_mode>_seed<k>/`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dreamer_actor import demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--estimators", nargs="+", default=["dynamics", "reinforce"])
    parser.add_argument("--start-modes", nargs="+", default=["continue"])
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("results/demo_sweep"))
    args = parser.parse_args()

    rows = []
    for start_mode in args.start_modes:
        for estimator in args.estimators:
            for seed in args.seeds:
                out = args.out / f"{estimator}_{start_mode}_seed{seed}"
                argv = ["--estimator", estimator, "--start-mode", start_mode, "--seed", str(seed)]
                argv += ["--updates", str(args.updates), "--out", str(out), "--no-progress"]
                result = demo.run(demo.parse_args(argv))
                rows.append((estimator, start_mode, seed, result))
                print(f"{estimator} {start_mode} seed {seed}: {result['final_deterministic_mean']:.1f}", flush=True)

    lines = [
        "| estimator | start mode | seed | final return, deterministic | sampled | first eval >= -200 | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for estimator, start_mode, seed, r in rows:
        final = r["curve"][-1]
        reached = (
            f"update {r['first_update_at_target']} ({r['wall_time_at_target_s']:.0f} s)"
            if r["first_update_at_target"] is not None
            else "not reached"
        )
        lines.append(
            f"| {estimator} | {start_mode} | {seed} | {final['deterministic_mean']:.1f} +- "
            f"{final['deterministic_std']:.0f} | {final['sampled_mean']:.1f} +- {final['sampled_std']:.0f} | "
            f"{reached} | {r['wall_time_s']:.0f} s |"
        )
    random = [r["random_mean"] for *_, r in rows]
    lines.append("")
    lines.append(f"Uniform random policy on the same 20 seeds: {np.mean(random):.1f}.")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.md").write_text(table + "\n")
    summary = [
        {"estimator": e, "start_mode": m, "seed": s, "final_deterministic_mean": r["final_deterministic_mean"]}
        for e, m, s, r in rows
    ]
    (args.out / "sweep.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
