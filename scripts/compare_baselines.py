"""Trains the DreamerV3 agent and SB3/sbx baselines side by side, scored by one evaluation; prints a markdown table.

Every agent is scored by `dreamer_actor.agent.run.evaluate_policy`: the same 20 fixed-seed episodes
(reset seeds 10000 + i), deterministic actions. The baselines are SAC on Pendulum-v1 and DQN on
CartPole-v1 from stable-baselines3 (PyTorch, CPU) and sbx (JAX) with rl-baselines3-zoo's tuned
hyperparameters. They need the `compare` extra: `pip install -e ".[compare]"`.

The table in docs/agent.md (3 seeds, each algo, both envs):

    for env in Pendulum-v1 CartPole-v1; do
      for algo in dreamer sb3 sbx; do
        .venv/bin/python scripts/compare_baselines.py train --algo $algo --env $env --seeds 0 1 2 \\
          --eval-every 2000 --eval-episodes 20 --out results/compare
      done
    done
    .venv/bin/python scripts/compare_baselines.py table results/compare --json results/compare/table.json

Wall times depend on the machine and its load: run one job at a time on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import pathlib
import time
from typing import Any

import numpy as np

from dreamer_actor.agent.run import check_out_dir, evaluate_policy

ENVS = ("Pendulum-v1", "CartPole-v1")
# rl-baselines3-zoo's n_timesteps for these envs; the Dreamer agent's default budget is 20k on both.
BASELINE_STEPS = {"Pendulum-v1": 20_000, "CartPole-v1": 50_000}
DREAMER_STEPS = 20_000
DEFAULT_THRESHOLDS = {"Pendulum-v1": -200.0, "CartPole-v1": 475.0}
RETURN_AT_STEPS = 20_000


def import_compare_extra(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise SystemExit(f'{error}: the baselines need the compare extra: pip install -e ".[compare]"') from error


def baseline_model(algo: str, env_id: str, seed: int) -> Any:
    """SAC (Pendulum-v1) or DQN (CartPole-v1) of sb3 or sbx, with rl-baselines3-zoo's hyperparameters."""
    import gymnasium as gym

    library = import_compare_extra("stable_baselines3" if algo == "sb3" else "sbx")
    extra = {"device": "cpu"} if algo == "sb3" else {}  # sbx runs on JAX's default device
    env = gym.make(env_id)
    if env_id == "Pendulum-v1":
        # rl-baselines3-zoo hyperparams/sac.yml, Pendulum-v1 (n_timesteps 20000): only learning_rate is tuned.
        return library.SAC("MlpPolicy", env, learning_rate=1e-3, seed=seed, **extra)
    # rl-baselines3-zoo hyperparams/dqn.yml, CartPole-v1 (n_timesteps 5e4).
    return library.DQN(
        "MlpPolicy", env, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000,
        gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
        exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]), seed=seed, **extra,
    )  # fmt: skip


def library_versions() -> dict[str, str]:
    versions = {}
    for name in ("stable-baselines3", "sbx-rl", "torch", "jax"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def train_baseline(
    algo: str, env_id: str, seed: int, steps: int, eval_every: int, episodes: int, run_dir: pathlib.Path
) -> None:
    """Trains one sb3/sbx model for exactly `steps` env steps into `run_dir/curve.json`, evaluating every
    `eval_every` steps and at the end (the file is rewritten after each evaluation, as the Dreamer run does)."""
    BaseCallback = import_compare_extra("stable_baselines3.common.callbacks").BaseCallback

    start = time.perf_counter()
    model = baseline_model(algo, env_id, seed)
    curve: dict[str, Any] = {"algo": algo, "env": env_id, "seed": seed, "steps": steps, "model": type(model).__name__}
    curve.update(versions=library_versions(), evals=[])
    run_dir.mkdir(parents=True, exist_ok=True)
    curve_path = run_dir / "curve.json"

    def evaluate(env_steps: int) -> None:
        eval_start = time.perf_counter()
        # predict returns [N] ints for DQN (CartPole takes an int) and [N, 1] float32 for SAC (Pendulum takes [1]).
        act = lambda obs, first: list(model.predict(obs, deterministic=True)[0])
        returns = evaluate_policy(env_id, act, episodes=episodes)
        eval_s = time.perf_counter() - eval_start + (curve["evals"][-1]["eval_s"] if curve["evals"] else 0.0)
        stats = {"mean": float(np.mean(returns)), "std": float(np.std(returns)), "returns": returns.tolist()}
        wall_s = time.perf_counter() - start
        curve["evals"].append({"env_steps": env_steps, "wall_s": wall_s, "eval_s": eval_s, "deterministic": stats})
        curve_path.write_text(json.dumps(curve, indent=1))

    class EvalAndStop(BaseCallback):
        # Stopping here keeps the budget exact: with train_freq=256 SB3 collects whole rollouts, so DQN
        # would otherwise run on to the next multiple of 256 (50176 steps for 5e4).
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0 or self.num_timesteps >= steps:
                evaluate(self.num_timesteps)
            return self.num_timesteps < steps

    model.learn(total_timesteps=steps, callback=EvalAndStop())
    curve["wall_s"] = time.perf_counter() - start
    curve_path.write_text(json.dumps(curve, indent=1))


# RunConfig fields a Dreamer run may change from the agent's defaults, with their label prefix.
# RunConfig fields a dreamer run may change, and the label part of a changed one (a bool: the prefix alone).
DREAMER_OPTIONS = {
    "estimator": "", "terminal_weight": "tw", "discount": "g", "distribution": "", "optimizer": "",
    "slow_target": "slowtarget" , "predicted_start_cont": "predcont", "repval_scale": "rv", "action_repeat": "ar",
    "imagine_pre_update": "preupdate", "contdisc": "contdisc", "norm": "",
    "model_lr": "mlr", "actor_lr": "alr", "critic_lr": "clr", "train_ratio": "tr",
}  # fmt: skip


def dreamer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `DREAMER_OPTIONS` given on the command line (None: the agent's default)."""
    return {name: getattr(args, name) for name in DREAMER_OPTIONS if getattr(args, name) is not None}


def dreamer_label(options: dict[str, Any]) -> str:
    """The table's algo name of a Dreamer run: `dreamer` at the agent's defaults, plus `-<prefix><value>`
    for each option that differs from them (e.g. `dreamer-dynamics`, `dreamer-tw10-g0.997`)."""
    from dreamer_actor.agent.run import RunConfig

    defaults = RunConfig().flag_values()
    parts = ["dreamer"]
    for name, prefix in DREAMER_OPTIONS.items():
        value = options.get(name, defaults[name])
        if value == defaults[name]:
            continue
        if isinstance(value, bool):
            parts.append(prefix if value else f"no{prefix}")
        else:
            parts.append(f"{prefix}{value:g}" if isinstance(value, float) else f"{prefix}{value}")
    return "-".join(parts)


def train_dreamer(
    env_id: str, seed: int, steps: int, eval_every: int, episodes: int, run_dir: pathlib.Path, overwrite: bool,
    options: dict[str, Any],
) -> None:  # fmt: skip
    """Trains the Dreamer agent (`options` override `RunConfig` fields) into `run_dir` and adds the keys
    shared by every curve to its curve.json."""
    from dreamer_actor.agent.run import RunConfig, train_agent

    run = RunConfig.from_flags(env=env_id, steps=steps, seed=seed, eval_every=eval_every, eval_episodes=episodes,
                               out=str(run_dir), overwrite=overwrite, progress=False, **options)  # fmt: skip
    train_agent(run, resume=resumable(run_dir))
    curve_path = run_dir / "curve.json"
    curve = json.loads(curve_path.read_text())  # the file, not the returned dict (that holds the agent state)
    model = "DreamerV3" if run.agent.estimator == "reinforce" else f"DreamerV3 ({run.agent.estimator})"
    curve.update(algo=dreamer_label(options), env=env_id, seed=seed, steps=steps, model=model)
    curve_path.write_text(json.dumps(curve, indent=1))


def resumable(run_dir: pathlib.Path) -> bool:
    """A dreamer run that stopped before its end: it has a checkpoint and no final agent."""
    return (run_dir / "resume").is_dir() and not (run_dir / "agent.json").exists()


def train(args: argparse.Namespace) -> None:
    steps = args.steps or (DREAMER_STEPS if args.algo == "dreamer" else BASELINE_STEPS[args.env])
    options = dreamer_options(args)
    if options and args.algo != "dreamer":
        raise SystemExit(f"--{', --'.join(options).replace('_', '-')}: dreamer runs only")
    label = dreamer_label(options) if args.algo == "dreamer" else args.algo
    run_dirs = {seed: args.out / label / args.env / f"seed{seed}" for seed in args.seeds}
    if args.algo != "dreamer" and args.env not in ENVS:
        raise SystemExit(f"--algo {args.algo}: only {ENVS}")
    for run_dir in run_dirs.values():  # before any training, so a late seed cannot fail after hours of work
        if args.algo == "dreamer" and resumable(run_dir):
            continue  # continued where it stopped
        try:
            check_out_dir(run_dir, overwrite=args.overwrite)
        except FileExistsError as error:
            raise SystemExit(str(error)) from error
    for seed, run_dir in run_dirs.items():
        if args.algo == "dreamer":
            train_dreamer(args.env, seed, steps, args.eval_every, args.eval_episodes, run_dir, args.overwrite, options)
        else:
            train_baseline(args.algo, args.env, seed, steps, args.eval_every, args.eval_episodes, run_dir)
        final = json.loads((run_dir / "curve.json").read_text())["evals"][-1]
        print(f"{label} {args.env} seed {seed}: final {final['deterministic']['mean']:.1f}", flush=True)


def first_reaching(evals: list[dict[str, Any]], threshold: float) -> dict[str, Any] | None:
    return next((e for e in evals if e["deterministic"]["mean"] >= threshold), None)


def return_summary(entries: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Mean over seeds of each seed's mean return, its std across seeds, and the mean within-seed episode std."""
    found = [e["deterministic"] for e in entries if e is not None]
    if not found:
        return None
    means = [d["mean"] for d in found]
    return {"mean": float(np.mean(means)), "std_seeds": float(np.std(means)),
            "std_episodes": float(np.mean([d["std"] for d in found])), "seeds": len(found)}  # fmt: skip


def summarize(curves: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """The table's numbers for one (env, algo): every curve is one seed."""
    reached = [r for r in (first_reaching(c["evals"], threshold) for c in curves) if r is not None]
    at_steps = [next((e for e in c["evals"] if e["env_steps"] == RETURN_AT_STEPS), None) for c in curves]
    return {
        "env": curves[0]["env"],
        "algo": curves[0]["algo"],
        "model": curves[0].get("model", ""),
        "seeds": sorted(c["seed"] for c in curves),
        "steps": sorted({c["steps"] for c in curves}),
        "threshold": threshold,
        "reached": len(reached),
        "steps_to_threshold": float(np.mean([r["env_steps"] for r in reached])) if reached else None,
        "wall_s_to_threshold": float(np.mean([r["wall_s"] for r in reached])) if reached else None,
        f"return_at_{RETURN_AT_STEPS}": return_summary(at_steps),
        "final_return": return_summary([c["evals"][-1] for c in curves]),
        "wall_s": float(np.mean([c["wall_s"] for c in curves])),
    }


def format_return(summary: dict[str, Any] | None, seeds: int) -> str:
    if summary is None:
        return "—"
    partial = f" ({summary['seeds']}/{seeds} seeds)" if summary["seeds"] < seeds else ""
    return f"{summary['mean']:.1f} ± {summary['std_seeds']:.1f} (episodes ± {summary['std_episodes']:.0f}){partial}"


def format_reached(value: float | None, row: dict[str, Any]) -> str:
    count = f"{row['reached']}/{len(row['seeds'])} reached"
    return count if value is None else f"{value:.0f} ({count})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| env (threshold) | algo | seeds | env steps budget | env steps to threshold | wall s to threshold "
        f"| return at {RETURN_AT_STEPS // 1000}k steps | final return | total wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        n = len(row["seeds"])
        cells = [
            row["env"] + f" (≥ {row['threshold']:g})",
            f"{row['algo']} {row['model']}".strip(),
            str(n),
            "/".join(str(s) for s in row["steps"]),
            format_reached(row["steps_to_threshold"], row),
            format_reached(row["wall_s_to_threshold"], row),
            format_return(row[f"return_at_{RETURN_AT_STEPS}"], n),
            format_return(row["final_return"], n),
            f"{row['wall_s']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(groups: dict[tuple[str, str], list[dict[str, Any]]], thresholds: dict[str, float]) -> str:
    """One row per run: first evaluation at or above the threshold, return at 20k steps and at the end."""
    lines = [
        f"| env | algo | seed | first eval >= threshold (env steps, wall s) | return at {RETURN_AT_STEPS // 1000}k "
        "| final return (env steps) | total wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for (env, algo), curves in sorted(groups.items()):
        for curve in sorted(curves, key=lambda c: c["seed"]):
            hit = first_reaching(curve["evals"], thresholds.get(env, math.inf))
            at = next((e for e in curve["evals"] if e["env_steps"] == RETURN_AT_STEPS), None)
            final = curve["evals"][-1]
            cells = [
                env,
                algo,
                str(curve["seed"]),
                f"{hit['env_steps']} ({hit['wall_s']:.0f} s)" if hit else "not reached",
                "—" if at is None else f"{at['deterministic']['mean']:.1f} ± {at['deterministic']['std']:.0f}",
                f"{final['deterministic']['mean']:.1f} ± {final['deterministic']['std']:.0f} ({final['env_steps']})",
                f"{curve['wall_s']:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(args: argparse.Namespace) -> None:
    thresholds = {**DEFAULT_THRESHOLDS, **dict(args.thresholds or [])}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted(args.dir.rglob("curve.json")):
        curve = json.loads(path.read_text())
        # A run still in progress has no final wall_s yet (and a Dreamer one no "algo"): left out.
        if curve.get("evals") and "wall_s" in curve and "algo" in curve:
            groups.setdefault((curve["env"], curve["algo"]), []).append(curve)
    if not groups:
        raise SystemExit(f"no curve.json with evaluations under {args.dir}")
    rows = [summarize(curves, thresholds.get(env, math.inf)) for (env, _), curves in sorted(groups.items())]
    print(markdown_table(rows))
    if args.per_seed:
        print()
        print(per_seed_table(groups, thresholds))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def parse_threshold(text: str) -> tuple[str, float]:
    env_id, sep, value = text.rpartition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected ENV=RETURN, got {text!r}")
    return env_id, float(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train agents, one per seed; write DIR/<algo>/<env>/seed<S>/")
    add = train_parser.add_argument
    add(
        "--algo",
        choices=("dreamer", "sb3", "sbx"),
        required=True,
        help="dreamer: this project's agent; sb3/sbx: SAC on Pendulum-v1, DQN on CartPole-v1",
    )
    add("--env", required=True, help=f"gymnasium environment id ({', '.join(ENVS)}; dreamer: any, e.g. DMC)")
    add(
        "--estimator",
        choices=("reinforce", "dynamics", "mix"),
        default=None,
        help="dreamer only: the actor's gradient estimator (default: the agent's, reinforce)",
    )
    add(
        "--terminal-weight",
        type=float,
        default=None,
        help="dreamer only: continue-loss weight of terminal steps (default: the agent's, 1 as DreamerV3)",
    )
    add("--discount", type=float, default=None, help="dreamer only: discount of the returns (default: the agent's)")
    add("--distribution", default=None, choices=("tanh_normal", "bounded_normal"), help="dreamer only: Box actor")
    add("--optimizer", default=None, choices=("adam", "laprop"), help="dreamer only: the optimizer")
    add("--slow-target", default=None, action=argparse.BooleanOptionalAction, help="dreamer only: bootstrap")
    add("--predicted-start-cont", default=None, action=argparse.BooleanOptionalAction, help="dreamer only")
    add("--repval-scale", type=float, default=None, help="dreamer only: replay value loss weight")
    add("--imagine-pre-update", default=None, action=argparse.BooleanOptionalAction, help="dreamer only")
    add("--contdisc", default=None, action=argparse.BooleanOptionalAction, help="dreamer only")
    add("--norm", default=None, choices=("layer", "rms"), help="dreamer only: every network's normalization")
    add("--action-repeat", type=int, default=None, help="dreamer only: frames per action (DMC: 2)")
    for flag in ("--model-lr", "--actor-lr", "--critic-lr", "--train-ratio"):
        add(flag, type=float, default=None, help="dreamer only (default: the agent's)")
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed (default: 0 1 2)")
    add(
        "--steps",
        type=int,
        default=None,
        help="env steps per run; default: 20000 for dreamer, rl-baselines3-zoo's n_timesteps for sb3/sbx "
        "(20000 on Pendulum-v1, 50000 on CartPole-v1)",
    )
    add(
        "--eval-every",
        type=int,
        default=2000,
        help="env steps between evaluations, plus one at the end (default: 2000)",
    )
    add("--eval-episodes", type=int, default=20, help="episodes per evaluation, reset seeds 10000 + i (default: 20)")
    add(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("results/compare"),
        help="results root DIR (default: results/compare)",
    )
    add("--overwrite", action="store_true", help="replace previous runs' files in DIR/<algo>/<env>/seed<S>/")
    table_parser = commands.add_parser("table", help="print a markdown table of every curve.json under DIR")
    add = table_parser.add_argument
    add("dir", type=pathlib.Path, help="results root (train's --out)")
    add(
        "--thresholds",
        nargs="+",
        type=parse_threshold,
        metavar="ENV=RETURN",
        help="deterministic mean return that counts as solved (default: Pendulum-v1=-200 CartPole-v1=475)",
    )
    add("--json", type=pathlib.Path, default=None, help="also write the table's numbers to this file")
    add("--per-seed", action="store_true", help="also print one row per run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "train":
        train(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
