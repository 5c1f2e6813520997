"""The agent's update beside official DreamerV3's train step, alternated in one script run.

    .venv/bin/python -m benchmarks.official_update --official-src CHECKOUT --official-python PYTHON \\
        [--rounds 3] [--updates 20] [--cpus 0] [--out DIR]

Official DreamerV3 is not a dependency. CHECKOUT is a checkout of danijar/dreamerv3 (measured at
e3f02248693a79dc8b0ebd62c93683888ddaccfe: `git clone https://github.com/danijar/dreamerv3 && git -C
dreamerv3 checkout e3f0224`), PYTHON a venv that runs it: `python3 -m venv dv3-venv && dv3-venv/bin/pip
install -r dreamerv3/requirements.txt jax==0.6.2` (jax 0.6.2 is the newest jax that runs that commit:
0.7 rejects its positional `jax.jit` arguments). The child `benchmarks/official_train_step.py` runs
there and imports nothing of this project.

Each round runs every variant once, each in a fresh process (the order rotates by round), all on the
same Pendulum-v1-shaped task (3-D observation, 1-D action), replayed batch 16 x 32, horizon 15,
float32, one device:

  official_size1m  official's `Agent.train` at its `size1m` preset (637k parameters);
  ours_size1m      our `make_update` at official size1m's widths as closely as our flags allow
                   (GRU 512, 32 x 4 latents, MLPs 3 x 64);
  ours_defaults    our `make_update` at `RunConfig()`'s sizes.

A process times its first call (trace, compile, run; official compiles while building its `Agent`,
and that time is added) and then `--updates` calls, each on a fresh random batch and waited for.
Reported per variant: median seconds per update, updates/s, the first call, peak resident memory,
parameters (networks only); ratios `ours / official` per round (median and range). The
env steps/s that the update alone allows at train ratio 64 is `8 * updates/s` (one update per 8 env
steps at 16 x 32). `--cpus 0` pins every child to CPU 0 (`taskset`), so a second job can use the other.
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
VARIANTS = ("official_size1m", "ours_size1m", "ours_defaults")
# Official size1m in our flags: rssm {deter 512, classes 4} and stoch 32 from its defaults, units 64,
# 3 hidden layers in the encoder/decoder/heads (official: encoder 3, reward/continue heads 1, actor and
# critic 3; ours: --layers for all but actor and critic, which have 2).
SIZE1M = {"deter": 512, "stoch": 32, "classes": 4, "units": 64, "layers": 3}
BATCH, LENGTH, TRAIN_RATIO = 16, 32, 64.0


def ours_child(size: str, updates: int) -> dict[str, Any]:
    """Our update at `size` ("defaults" or "size1m"), timed as the official child times its step."""
    import resource
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    import gymnasium as gym
    import jax

    from benchmarks import _timing as T
    from dreamer_actor.agent import train as agent_train
    from dreamer_actor.agent.run import RunConfig

    run = RunConfig.from_flags(batch=BATCH, length=LENGTH, progress=False, **(SIZE1M if size == "size1m" else {}))
    actor_config, wm_config = run.model_configs(gym.make("Pendulum-v1"))
    config = run.agent
    state = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, config)
    params = int(sum(np.prod(x.shape) for p in (state.wm_params, state.actor_params, state.critic_params)
                     for x in jax.tree.leaves(p)))  # fmt: skip
    update = agent_train.make_update(wm_config, actor_config, config)
    times = T.time_agent_updates(update, state, BATCH, LENGTH, updates)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"first_s": times[0], "times": times[1:], "peak_rss_bytes": peak, "params": params,
            "jax": jax.__version__}  # fmt: skip


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    if variant == "official_size1m":
        cmd = [str(args.official_python), str(HERE / "official_train_step.py"), "--src", str(args.official_src),
               "--updates", str(args.updates), "--batch", str(BATCH), "--length", str(LENGTH)]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "benchmarks.official_update", "--_child", variant.removeprefix("ours_"),
               "--updates", str(args.updates)]  # fmt: skip
    if args.cpus:
        cmd = ["taskset", "-c", args.cpus, *cmd]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent, timeout=3600, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} exited with {done.returncode}: {done.stderr[-3000:]}")
    return json.loads(lines[-1])


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"variants": {}, "ratios": {}}
    for v in VARIANTS:
        per_round = [float(np.median(r[v]["times"])) for r in rounds]
        median = float(np.median([t for r in rounds for t in r[v]["times"]]))
        out["variants"][v] = {
            "update_s": median, "per_round_s": per_round, "updates_per_s": 1.0 / median,
            "env_steps_per_s_update_bound": (BATCH * LENGTH / TRAIN_RATIO) / median,
            # Official compiles while building its Agent (`build_s`), ours on the first call.
            "first_call_s": [r[v]["first_s"] + r[v].get("build_s", 0.0) for r in rounds],
            "peak_rss_mb": max(r[v]["peak_rss_bytes"] for r in rounds) / 2**20,
            "params": rounds[0][v]["params"], "jax": rounds[0][v]["jax"],
        }  # fmt: skip
    for num in ("ours_size1m", "ours_defaults"):
        ratios = [float(np.median(r[num]["times"]) / np.median(r["official_size1m"]["times"])) for r in rounds]
        out["ratios"][f"{num} / official_size1m"] = {"median": float(np.median(ratios)), "min": min(ratios),
                                                     "max": max(ratios)}  # fmt: skip
    return out


def markdown(result: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"# Agent update vs official DreamerV3's train step ({meta['date']})",
        "",
        f"`{meta['command']}` on {meta['cpu']} ({meta['cores']} cores), commit {meta['commit']}; "
        f"{meta['rounds']} rounds x {meta['updates']} updates per variant, fresh process each, order rotated; "
        f"Pendulum-v1-shaped batch {BATCH} x {LENGTH}, float32.",
        "",
        "| variant | params | s / update (median) | per-round medians | updates/s | env steps/s the update allows "
        "at ratio 64 | build + first call s | peak RSS MB | jax |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v, s in result["variants"].items():
        lines.append(
            f"| {v} | {s['params']:,} | {s['update_s']:.3f} | {', '.join(f'{t:.3f}' for t in s['per_round_s'])} "
            f"| {s['updates_per_s']:.2f} | {s['env_steps_per_s_update_bound']:.1f} "
            f"| {', '.join(f'{t:.1f}' for t in s['first_call_s'])} | {s['peak_rss_mb']:.0f} | {s['jax']} |"
        )
    lines += ["", "| ratio (time per update) | median | min - max over rounds |", "|---|---|---|"]
    for name, r in result["ratios"].items():
        lines.append(f"| {name} | {r['median']:.3f} | {r['min']:.3f} - {r['max']:.3f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-src", type=pathlib.Path, help="a checkout of danijar/dreamerv3")
    parser.add_argument("--official-python", type=pathlib.Path, help="a Python that runs that checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=20, help="timed updates per variant and round")
    parser.add_argument("--cpus", default="", help="taskset CPU list for every child (e.g. 0)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench/official_update"))
    parser.add_argument("--_child", choices=("defaults", "size1m"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child is None:
        if args.official_src is None or not (args.official_src / "dreamerv3" / "agent.py").is_file():
            parser.error(f"--official-src {args.official_src}: not a checkout of danijar/dreamerv3")
        if args.official_python is None or not os.access(args.official_python, os.X_OK):
            parser.error(f"--official-python {args.official_python}: not an executable")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child:
        print(json.dumps(ours_child(args._child, args.updates)))
        return 0
    from benchmarks.actor_step import _cpu_model, _git_commit

    rounds = []
    for r in range(args.rounds):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        rounds.append({v: run_variant(v, args) for v in order})
        print(f"round {r + 1}: " + ", ".join(f"{v} {np.median(rounds[-1][v]['times']):.3f} s" for v in VARIANTS),
              flush=True)  # fmt: skip
    result = summarize(rounds)
    meta = {
        "date": datetime.date.today().isoformat(), "cpu": _cpu_model(), "cores": os.cpu_count(),
        "commit": _git_commit(), "rounds": args.rounds, "updates": args.updates, "python": platform.python_version(),
        "command": "python -m benchmarks.official_update " + " ".join(argv if argv is not None else sys.argv[1:]),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "official_update.json").write_text(json.dumps({"meta": meta, **result, "rounds": rounds}, indent=1))
    text = markdown(result, meta)
    (args.out / "official_update.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
