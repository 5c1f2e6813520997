"""The DeepMind Control results table and curves: every agent run folder under DIR, against the anchors.

    .venv/bin/python scripts/dmc_results.py results/dmc --markdown docs/results/dmc/table.md \\
        --plot docs/results/dmc/curves.png --copy docs/results/dmc/runs

A run is a folder with `run.json` and `curve.json` (`python -m dreamer_actor.agent --out DIR`). Runs are
grouped by task and by *variant*: the learning rules (`variant`) and the other flags that differ from the
agent's defaults. Two scores per run, both at the run's last frame:

* `eval`: the deterministic evaluation (the mean of its episodes, fixed reset seeds);
* `train`: the mean return of the training episodes (the sampled policy, as it explored) that ended in
  the last 10,000 env frames: what official DreamerV3's score files report, binned by frames.

A run that has not reached its `--steps` (still going, or stopped) is listed with the frames it has
reached ("at N frames"); a copied run (`--copy`: run.json and curve.json only) counts as finished when
its last evaluation is at its `--steps`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
from typing import Any

import numpy as np

# Scores at 100k env frames (issue 21): official DreamerV3 (scores/dmc_proprio-dreamerv3.json.gz in
# danijar/dreamerv3, 5 seeds, training episodes, action repeat 2), TD-MPC2 and SAC (nicklashansen/tdmpc2
# results/, 3 seeds).
ANCHORS = {
    "cartpole_swingup": (528, 839, 835),
    "pendulum_swingup": (830, 724, 96),
    "reacher_easy": (693, 937, 540),
    "cup_catch": (730, 981, 958),
    "walker_walk": (475, 962, 708),
}
TRAIN_WINDOW = 10_000
# The learning rules (docs/official_differences.md): official DreamerV3's, and the agent's defaults
# before 6 December 2026 ("earlier rules"). Today's defaults are official's with the discount 0.99.
OFFICIAL_RULES = {"contdisc": True, "discount": 0.997, "imagine_pre_update": True, "norm": "rms",
                  "predicted_start_cont": True, "repval_scale": 0.3, "slow_target": False}  # fmt: skip
# Fields that say what was run, not how it learned: left out of the variant's name.
NOT_VARIANT = {"env", "seed", "out", "steps", "eval_every", "eval_episodes", "progress", "overwrite",
               "save_every", "max_skips", "vector", "replay_capacity"}  # fmt: skip


def task_name(env_id: str) -> str:
    """`dm_control/ball_in_cup-catch-v0` -> `cup_catch` (official's names); other ids unchanged."""
    if not env_id.startswith("dm_control/"):
        return env_id
    domain, task = env_id.removeprefix("dm_control/").rsplit("-", 1)[0].split("-", 1)
    return f"{'cup' if domain == 'ball_in_cup' else domain}_{task}"


def variant(run: dict[str, Any]) -> str:
    """What `run` (run.json's "run") learned with: its rules, then its other flags that differ from the defaults.

    The rules are named by their set: `defaults`, `official's rules`, `earlier rules`, or the nearer of
    the defaults and official's (fewer rules differ; the defaults on a tie) with the rules that differ
    from it written out (`official's rules, norm=layer`, `defaults, repval_scale=0.0`).
    """
    from dreamer_actor.agent import train as agent_train
    from dreamer_actor.agent import world_model as wm
    from dreamer_actor.agent.run import RunConfig

    run = RunConfig.from_dict({**run, "progress": False}).flag_values()
    defaults = RunConfig().flag_values()
    # The earlier rules: today's discount and contdisc (they never changed), the rest as before the switch.
    earlier = {**{k: defaults[k] for k in OFFICIAL_RULES}, **agent_train.EARLIER_RULES, "norm": wm.EARLIER_NORM}
    rules = {k: run[k] for k in OFFICIAL_RULES}
    off_official = [f"{k}={v}" for k, v in sorted(rules.items()) if v != OFFICIAL_RULES[k]]
    off_defaults = [f"{k}={v}" for k, v in sorted(rules.items()) if v != defaults[k]]
    if rules == earlier:
        label = "earlier rules"
    elif len(off_defaults) <= len(off_official):
        label = ", ".join(["defaults", *off_defaults])
    else:
        label = ", ".join(["official's rules", *off_official])
    others = [f"{k}={v}" for k, v in sorted(run.items())
              if k not in NOT_VARIANT and k not in OFFICIAL_RULES and v != defaults[k]]  # fmt: skip
    return " ".join([label, *others])


def train_score(curve: dict[str, Any], window: int = TRAIN_WINDOW) -> float | None:
    """Mean return of the training episodes that ended in the last `window` frames of the run so far."""
    end = curve["evals"][-1]["frames"] if curve["evals"] else 0
    returns = [e["return"] for e in curve["episodes"] if end - window < e["frames"] <= end]
    return float(np.mean(returns)) if returns else None


def load_runs(root: pathlib.Path) -> list[dict[str, Any]]:
    runs = []
    for marker in sorted(root.rglob("run.json")):
        curve_path = marker.parent / "curve.json"
        if not curve_path.exists():
            continue
        curve = json.loads(curve_path.read_text())
        if not curve.get("evals"):
            continue
        config = json.loads(marker.read_text())["run"]
        last = curve["evals"][-1]
        runs.append({
            "dir": marker.parent, "task": task_name(config["env"]), "variant": variant(config),
            "seed": config["seed"], "frames": last["frames"], "done": last["env_steps"] >= config["steps"],
            "eval": last["deterministic"]["mean"], "train": train_score(curve), "wall_s": curve.get("wall_s"),
            "curve": curve,
        })  # fmt: skip
    return runs


def _mean_std(values: list[float | None]) -> str:
    found = [v for v in values if v is not None]
    return f"{np.mean(found):.0f} ± {np.std(found):.0f}" if found else "—"


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def markdown(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| task | variant | seeds | frames | eval (mean ± std over seeds) | train score | per seed (eval / train) "
        "| wall min per run | official DreamerV3 / TD-MPC2 / SAC at 100k |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["task"], run["variant"]), []).append(run)
    for (task, name), group in sorted(groups.items()):
        group.sort(key=lambda r: r["seed"])
        frames = sorted({r["frames"] for r in group})
        per_seed = ", ".join(
            f"s{r['seed']}: {r['eval']:.0f} / {_score(r['train'])}" + ("" if r["done"] else f" (at {r['frames']})")
            for r in group
        )
        walls = [r["wall_s"] for r in group if r["done"] and r["wall_s"] is not None]
        anchor = ANCHORS.get(task)
        cells = [
            task, name, str(len(group)), "/".join(str(f) for f in frames),
            _mean_std([r["eval"] for r in group]), _mean_std([r["train"] for r in group]), per_seed,
            f"{np.mean(walls) / 60:.0f}" if walls else "—",
            " / ".join(str(a) for a in anchor) if anchor else "—",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: pathlib.Path) -> None:
    """Per task: training-episode returns (smoothed over 10k frames) and evaluations against frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    names = sorted({r["variant"] for r in runs})
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    for ax, task in zip(axes[0], tasks, strict=True):
        for run in (r for r in runs if r["task"] == task):
            episodes = run["curve"]["episodes"]
            frames = np.array([e["frames"] for e in episodes])
            returns = np.array([e["return"] for e in episodes])
            centres = np.arange(TRAIN_WINDOW, run["frames"] + 1, TRAIN_WINDOW // 2)
            binned = [returns[(frames > c - TRAIN_WINDOW) & (frames <= c)] for c in centres]
            ax.plot(centres, [b.mean() if b.size else np.nan for b in binned], color=colors[run["variant"]], alpha=0.7)
            evals = run["curve"]["evals"]
            ax.plot([e["frames"] for e in evals], [e["deterministic"]["mean"] for e in evals], "o",
                    ms=3, color=colors[run["variant"]])  # fmt: skip
        if task in ANCHORS:
            ax.axhline(ANCHORS[task][0], color="k", ls="--", lw=1)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("env frames")
    axes[0][0].set_ylabel("return (line: training episodes; dots: eval)")
    handles = [plt.Line2D([], [], color=colors[n], label=n) for n in names]
    handles.append(plt.Line2D([], [], color="k", ls="--", label="official DreamerV3 at 100k"))
    fig.legend(handles=handles, loc="lower center", fontsize=7, ncol=2)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * len(names) / 2, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def copy_runs(runs: list[dict[str, Any]], root: pathlib.Path, dest: pathlib.Path) -> None:
    """run.json and curve.json of each run (its weights stay out), under the same relative path."""
    for run in runs:
        target = dest / run["dir"].relative_to(root)
        target.mkdir(parents=True, exist_ok=True)
        for name in ("run.json", "curve.json"):
            shutil.copyfile(run["dir"] / name, target / name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=pathlib.Path, help="searched recursively for run folders")
    parser.add_argument("--markdown", type=pathlib.Path, help="also write the table here")
    parser.add_argument("--plot", type=pathlib.Path, help="write the curves (png) here")
    parser.add_argument("--copy", type=pathlib.Path, help="copy each run's run.json and curve.json under here")
    args = parser.parse_args(argv)
    runs = load_runs(args.dir)
    if not runs:
        raise SystemExit(f"no run with an evaluation under {args.dir}")
    table = markdown(runs)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(runs, args.plot)
    if args.copy:
        copy_runs(runs, args.dir, args.copy)


if __name__ == "__main__":
    main()
