"""`python -m dreamer_actor.demo`: learn Pendulum purely in imagination, evaluate on the real env.

The actor (`dreamer_actor.Actor`, tanh-Gaussian) and a small critic are trained only on
imagined rollouts (horizon 15) of a differentiable JAX model of gymnasium's `Pendulum-v1`
(`dreamer_actor.examples.pendulum`): lambda-returns, DreamerV3's return normalizer, and the
REINFORCE or the dynamics-backpropagation estimator (`dreamer_actor.policy_loss`); see
`dreamer_actor.examples.imagination` for every design decision. The real environment is
never used for training: every `--eval-every` updates the policy runs on the real
`gymnasium` `Pendulum-v1` on fixed seeds, with its sampled and its deterministic (mode)
action, and a uniform random policy on the same seeds gives the baseline.

Writes `<out>/pendulum_learning_curve.png` and `<out>/pendulum_learning_curve.json`, and
prints a summary table. Needs the `demo` extra (`pip install -e ".[demo]"`: gymnasium,
matplotlib, tqdm); `make demo` installs it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

import dreamer_actor as da
from dreamer_actor.examples import evaluation, imagination

TARGET_RETURN = -200.0
QUICK = {"starts": 256, "updates": 200, "eval_every": 50, "eval_episodes": 10}
_QUICK_FLAGS = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in QUICK.items())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dreamer_actor.demo",
        description=(
            "Train the dreamer_actor actor (and a small critic) purely in imagination on a differentiable JAX "
            "model of Pendulum-v1 (horizon 15, lambda-returns, DreamerV3 return normalization), evaluating on the "
            "real gymnasium Pendulum-v1 on fixed seeds. Writes <out>/pendulum_learning_curve.{png,json}."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--estimator",
        choices=da.train.ESTIMATORS,
        default="dynamics",
        help="policy-gradient estimator: 'dynamics' backpropagates the lambda-returns through the model "
        "(DreamerV1); 'reinforce' is the score function on normalized advantages (DreamerV3); 'mix' is "
        "rho * reinforce + (1 - rho) * dynamics",
    )
    parser.add_argument("--entropy-coef", type=float, default=3e-4, help="entropy bonus beta (DreamerV3: 3e-4)")
    parser.add_argument("--rho", type=float, default=0.5, help="REINFORCE weight of --estimator mix")
    parser.add_argument("--updates", type=int, default=1000, help="number of actor/critic updates")
    parser.add_argument("--seed", type=int, default=0, help="seed of the networks and of imagination")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    parser.add_argument("--starts", type=int, default=1024, help="imagination start states per update (batch B)")
    parser.add_argument("--horizon", type=int, default=15, help="imagination horizon T")
    parser.add_argument(
        "--start-mode",
        choices=imagination.START_MODES,
        default="continue",
        help="'continue': each update starts from the last imagined states of the previous one, restarting "
        "from reset states after 200 steps; 'reset': every update starts from fresh reset states",
    )
    parser.add_argument("--eval-every", type=int, default=100, help="evaluate on the real env every N updates")
    parser.add_argument("--eval-episodes", type=int, default=20, help="real-env episodes per evaluation (fixed seeds)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny CI preset: {_QUICK_FLAGS} (overrides those flags)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    for name in ("updates", "eval_every", "eval_episodes", "starts", "horizon"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    # Fail before training, not after it: the results folder must be creatable and writable.
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        probe = args.out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        parser.error(f"--out {args.out} is not a writable folder ({error.strerror or error})")
    if args.entropy_coef < 0:
        parser.error(f"--entropy-coef must be >= 0, got {args.entropy_coef}")
    if not 0.0 <= args.rho <= 1.0:
        parser.error(f"--rho must be in [0, 1], got {args.rho}")
    return args


def _evaluate(state: imagination.TrainState, actor_config, seeds: list[int], seed: int) -> dict[str, Any]:
    """Sampled and deterministic returns of the current policy on the real env."""
    params = state.actor_params
    deterministic = evaluation.run_episodes(
        lambda obs, t: imagination.policy_action(params, actor_config, obs, None, deterministic=True), seeds
    )
    base_key = jax.random.key(seed + 1)  # the same action noise at every evaluation
    sampled = evaluation.run_episodes(
        lambda obs, t: imagination.policy_action(
            params, actor_config, obs, jax.random.fold_in(base_key, t), deterministic=False
        ),
        seeds,
    )
    return {
        "deterministic_mean": float(deterministic.mean()),
        "deterministic_std": float(deterministic.std()),
        "sampled_mean": float(sampled.mean()),
        "sampled_std": float(sampled.std()),
        "deterministic_returns": deterministic.tolist(),
        "sampled_returns": sampled.tolist(),
    }


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["curve"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, xkey, xlabel in (
        (axes[0], "update", "imagination updates"),
        (axes[1], "wall_time_s", "wall time [s] (incl. compilation and evaluation)"),
    ):
        x = np.asarray([p[xkey] for p in curve])
        for mode, color in (("deterministic", "C0"), ("sampled", "C1")):
            mean = np.asarray([p[f"{mode}_mean"] for p in curve])
            std = np.asarray([p[f"{mode}_std"] for p in curve])
            ax.plot(x, mean, "o-", color=color, label=f"{mode} action")
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)
        ax.axhline(result["random_mean"], color="grey", ls=":", label="uniform random policy")
        ax.axhline(TARGET_RETURN, color="k", ls="--", lw=0.8, label=f"target {TARGET_RETURN:.0f}")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"return on real Pendulum-v1 (mean +- std, {result['args']['eval_episodes']} seeds)")
    axes[0].legend(loc="lower right")
    fig.suptitle(f"Pendulum learned in imagination: estimator={result['args']['estimator']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"{'update':>7} {'wall [s]':>9} {'deterministic':>17} {'sampled':>17}",
        "-" * 53,
    ]
    for p in result["curve"]:
        lines.append(
            f"{p['update']:>7d} {p['wall_time_s']:>9.1f} "
            f"{p['deterministic_mean']:>9.1f} +- {p['deterministic_std']:<5.0f}"
            f"{p['sampled_mean']:>9.1f} +- {p['sampled_std']:<5.0f}"
        )
    final = result["curve"][-1]
    reached = result["first_update_at_target"]
    lines += [
        "-" * 53,
        f"estimator {result['args']['estimator']}, {result['args']['updates']} updates x "
        f"{result['args']['starts']} starts x horizon {result['args']['horizon']}, seed {result['args']['seed']}",
        f"final return (real Pendulum-v1, {len(final['deterministic_returns'])} fixed seeds): "
        f"deterministic {final['deterministic_mean']:.1f} +- {final['deterministic_std']:.1f}, "
        f"sampled {final['sampled_mean']:.1f} +- {final['sampled_std']:.1f}",
        f"uniform random policy on the same seeds: {result['random_mean']:.1f} +- {result['random_std']:.1f}",
        (
            f"target {TARGET_RETURN:.0f} (deterministic) first reached at update {reached} "
            f"({result['wall_time_at_target_s']:.1f} s)"
            if reached is not None
            else f"target {TARGET_RETURN:.0f} not reached"
        ),
        f"total wall time {result['wall_time_s']:.1f} s (training {result['train_time_s']:.1f} s, "
        f"evaluation {result['eval_time_s']:.1f} s) on {result['device']}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Trains and evaluates as `args` says; returns (and writes) the result dict."""
    start = time.perf_counter()
    config = imagination.TrainConfig(
        estimator=args.estimator,
        entropy_coef=args.entropy_coef,
        rho=args.rho,
        starts=args.starts,
        horizon=args.horizon,
        start_mode=args.start_mode,
        # Updates per jitted call: divides both the evaluation period and the total.
        updates_per_call=math.gcd(math.gcd(args.eval_every, args.updates), 10),
    )
    actor_config = config.actor_config()
    seeds = evaluation.eval_seeds(args.eval_episodes)
    random = evaluation.random_returns(seeds, rng_seed=args.seed)
    state = imagination.init_train_state(jax.random.key(args.seed), config)
    train_step = imagination.make_train_step(config)

    eval_time = 0.0

    def evaluate(update: int) -> dict[str, Any]:
        nonlocal eval_time
        t0 = time.perf_counter()
        point = {"update": update, **_evaluate(state, actor_config, seeds, args.seed)}
        eval_time += time.perf_counter() - t0
        point["wall_time_s"] = time.perf_counter() - start
        return point

    curve = [evaluate(0)]
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.updates, desc=f"imagination ({args.estimator})", unit="upd", file=sys.stderr)
    update = 0
    while update < args.updates:
        state, metrics = train_step(state)
        update += config.updates_per_call
        if update % args.eval_every == 0 or update >= args.updates:
            jax.block_until_ready(state)
            curve.append(evaluate(update))
        if bar is not None:
            bar.update(config.updates_per_call)
            bar.set_postfix(
                loss=f"{float(metrics['loss']):.3g}",
                entropy=f"{float(metrics['entropy']):.2f}",
                real_return=f"{curve[-1]['deterministic_mean']:.0f}",
            )
    if bar is not None:
        bar.close()
    total = time.perf_counter() - start

    at_target = next((p for p in curve if p["deterministic_mean"] >= TARGET_RETURN), None)
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "config": {k: v for k, v in vars(config).items()},
        "env": evaluation.ENV_ID,
        "eval_seeds": seeds,
        "random_mean": float(random.mean()),
        "random_std": float(random.std()),
        "random_returns": random.tolist(),
        "curve": curve,
        "final_deterministic_mean": curve[-1]["deterministic_mean"],
        "final_sampled_mean": curve[-1]["sampled_mean"],
        "first_update_at_target": None if at_target is None else at_target["update"],
        "wall_time_at_target_s": None if at_target is None else at_target["wall_time_s"],
        "wall_time_s": total,
        "eval_time_s": eval_time,
        "train_time_s": total - eval_time,
        "device": f"{jax.default_backend()} ({jax.device_count()} device(s), {platform.machine()})",
        "jax_version": jax.__version__,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pendulum_learning_curve.json").write_text(json.dumps(result, indent=2, default=list))
    _plot(result, out / "pendulum_learning_curve.png")
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    print(_table(result))
    print(
        f"wrote {Path(args.out) / 'pendulum_learning_curve.png'} and {Path(args.out) / 'pendulum_learning_curve.json'}"
    )
    return result


if __name__ == "__main__":
    main()
