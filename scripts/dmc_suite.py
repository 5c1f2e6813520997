"""Issue 21's DeepMind Control runs, one after another, each resumable: run the same command again to go on.

    .venv/bin/python scripts/dmc_suite.py --out results/dmc --seeds 0 1 -- --train-ratio 192
    .venv/bin/python scripts/dmc_suite.py --out results/dmc --seeds 0 --cpu 0 -- --train-ratio 192 &   # two
    .venv/bin/python scripts/dmc_suite.py --out results/dmc --seeds 1 --cpu 1 -- --train-ratio 192 &   # side by side

For each task (`--tasks`, default issue 21's four: `SUITE`) and each seed, in that order, the run folder
`OUT/TASK/NAME-sSEED` (NAME: `--name`, default `defaults` plus the flags after `--`, e.g.
`defaults-train-ratio-192`) is

* skipped when its run has finished (its last evaluation at its `--steps`);
* continued with `python -m dreamer_actor.agent --resume` when it holds a checkpoint (`resume/`: a run
  stopped by a session's end, Ctrl-C or a kill goes on from its last `--save-every`, bit for bit);
* started otherwise (`--overwrite` where a run stopped before its first checkpoint left its files) with the
  protocol of docs/agent.md: `--action-repeat 2 --steps 50000 --eval-every 5000 --eval-episodes 5
  --distribution bounded_normal` (100k frames), the seed, and the flags after `--`.

What a run prints goes to `OUT/TASK/NAME-sSEED.log` (appended). `--cpu N` pins the runs to core N with one
thread (`taskset`, `OMP_NUM_THREADS=1`), so two suites share a 2-core machine side by side. `--dry-run`
prints each run's state and command. `scripts/dmc_results.py OUT` makes the table.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

SUITE = ("cartpole_swingup", "pendulum_swingup", "reacher_easy", "cup_catch")
TASKS = (*SUITE, "walker_walk")
# Issue 21's protocol: 100k env frames at official DreamerV3's DMC action repeat, 10 evaluations of 5 episodes.
PROTOCOL = ("--action-repeat", "2", "--steps", "50000", "--eval-every", "5000", "--eval-episodes", "5",
            "--distribution", "bounded_normal")  # fmt: skip


def env_id(task: str) -> str:
    """`cup_catch` -> `dm_control/ball_in_cup-catch-v0` (official's task names to gymnasium's ids)."""
    domain, _, name = task.rpartition("_")
    if not domain or not name:
        raise ValueError(f"dmc_suite: task {task!r}: expected DOMAIN_TASK, e.g. cartpole_swingup")
    return f"dm_control/{'ball_in_cup' if domain == 'cup' else domain}-{name}-v0"


def variant_name(extra: list[str]) -> str:
    """The folder name's variant: `defaults` and the extra flags, e.g. `['--train-ratio', '192']` ->
    `defaults-train-ratio-192`."""
    parts = [a.lstrip("-").replace("/", "_").replace("=", "-") for a in extra]
    return "-".join(["defaults", *parts])


def run_state(folder: pathlib.Path) -> str:
    """`finished`, `stopped` (a checkpoint to resume from), `started` (a run's files, no checkpoint) or `new`."""
    try:
        steps = json.loads((folder / "run.json").read_text())["run"]["steps"]
    except FileNotFoundError:
        return "new" if not folder.exists() or not any(folder.iterdir()) else "started"
    try:
        evals = json.loads((folder / "curve.json").read_text())["evals"]
    except FileNotFoundError:
        evals = []
    if evals and evals[-1]["env_steps"] >= steps:
        return "finished"
    return "stopped" if (folder / "resume").is_dir() else "started"


def command(folder: pathlib.Path, state: str, task: str, seed: int, extra: list[str], python: str) -> list[str]:
    """The agent's command line for a run in `state` (not `finished`)."""
    agent = [python, "-m", "dreamer_actor.agent"]
    if state == "stopped":
        return [*agent, "--resume", str(folder), "--no-progress"]
    fresh = [*agent, "--env", env_id(task), *PROTOCOL, "--seed", str(seed), *extra, "--out", str(folder),
             "--no-progress"]  # fmt: skip
    return [*fresh, "--overwrite"] if state == "started" else fresh


def plan(out: pathlib.Path, tasks: list[str], seeds: list[int], name: str, extra: list[str], python: str,
         ) -> list[dict[str, Any]]:  # fmt: skip
    """Every (task, seed) in order: its folder, state and command (None when finished)."""
    rows = []
    for task in tasks:
        for seed in seeds:
            folder = out / task / f"{name}-s{seed}"
            state = run_state(folder)
            cmd = None if state == "finished" else command(folder, state, task, seed, extra, python)
            rows.append({"task": task, "seed": seed, "folder": folder, "state": state, "command": cmd})
    return rows


def final_scores(folder: pathlib.Path) -> str:
    try:
        last = json.loads((folder / "curve.json").read_text())["evals"][-1]
    except (FileNotFoundError, IndexError, KeyError):
        return "no evaluation"
    return f"{last['frames']} frames, evaluation {last['deterministic']['mean']:.0f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the runs go to OUT/TASK/NAME-sSEED")
    parser.add_argument("--tasks", nargs="+", default=list(SUITE), help=f"official's task names (default: {SUITE})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--name", help="the variant's folder name (default: `defaults` and the flags after --)")
    parser.add_argument("--cpu", type=int, help="pin the runs to this core, one thread each")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs dreamer_actor.agent")
    parser.add_argument("--dry-run", action="store_true", help="print each run's state and command, run nothing")
    args = parser.parse_args(own)
    for task in args.tasks:
        env_id(task)  # a malformed name fails before anything runs
    name = args.name or variant_name(extra)
    rows = plan(args.out, args.tasks, args.seeds, name, extra, args.python)
    env = dict(os.environ)
    prefix: list[str] = []
    if args.cpu is not None:
        prefix, env["OMP_NUM_THREADS"] = ["taskset", "-c", str(args.cpu)], "1"
    failed = 0
    for row in rows:
        folder, state = row["folder"], row["state"]
        if row["command"] is None:
            print(f"{folder}: finished ({final_scores(folder)})", flush=True)
            continue
        cmd = [*prefix, *row["command"]]
        print(f"{folder}: {state}; {' '.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        folder.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        with open(folder.parent / f"{folder.name}.log", "a") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        took = (time.time() - start) / 60
        print(f"{folder}: exit {code} after {took:.1f} min ({final_scores(folder)})", flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
