"""Env steps/s and wall time to a score with `--envs N` (`python -m dreamer_actor.agent`), one run after another.

    .venv/bin/python scripts/envs_throughput.py run --env Pendulum-v1 --envs 1 4 8 --steps 12000 \\
        --out results/envs/pendulum
    .venv/bin/python scripts/envs_throughput.py table results/envs/pendulum --target -200

`run` starts one fresh process per N (sequentially, so they never share the cores; extra agent
flags go after `--`) into `OUT/envs<N>/`, resumable like any run. `table` reads their curves:
policy steps/s over the training time (wall time less the evaluations, `eval_s`), updates, and
the first evaluation (deterministic mean) at or above `--target`: env steps and wall time.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys


def run(args: argparse.Namespace, extra: list[str]) -> None:
    out = pathlib.Path(args.out)
    for n in args.envs:
        folder = out / f"envs{n}"
        flags = ["--env", args.env, "--envs", str(n), "--steps", str(args.steps), "--vector", args.vector]
        resume = (folder / "resume").is_dir()
        command = [sys.executable, "-m", "dreamer_actor.agent"]
        command += ["--resume", str(folder)] if resume else [*flags, "--out", str(folder), *extra]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)


def table(args: argparse.Namespace) -> None:
    rows = [
        "| N envs | policy steps | env frames | updates | training steps/s | wall s | first eval >= target (wall s) |"
    ]
    rows.append("|---|---|---|---|---|---|---|")
    for folder in sorted(pathlib.Path(args.dir).glob("envs*"), key=lambda p: int(p.name[4:])):
        curve = json.loads((folder / "curve.json").read_text())
        evals = curve["evals"]
        eval_s = sum(e.get("eval_s", 0.0) for e in evals)
        steps, wall = evals[-1]["env_steps"], curve.get("wall_s", evals[-1]["wall_s"])
        hit = next((e for e in evals if args.target is not None and e["deterministic"]["mean"] >= args.target), None)
        reach = f"{hit['env_steps']:,} ({hit['wall_s']:.0f} s)" if hit else "not reached"
        frames, updates = evals[-1].get("frames", steps), curve.get("updates", 0)
        rows.append(
            f"| {curve['config']['envs']} | {steps:,} | {frames:,} | {updates:,} "
            f"| {steps / (wall - eval_s):.1f} | {wall:.0f} | {reach} |"
        )
    print("\n".join(rows))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--env", required=True)
    p.add_argument("--envs", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--vector", default="sync", choices=("sync", "async"))
    p.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("dir")
    t.add_argument("--target", type=float, default=None)
    args = parser.parse_args(argv)
    run(args, extra) if args.command == "run" else table(args)


if __name__ == "__main__":
    main()
