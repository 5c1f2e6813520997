"""The DeepMind Control results table and curves: every agent run folder under DIR, against the anchors.

    .venv/bin/python scripts/dmc_results.py results/dmc --markdown docs/results/dmc/table.md \\
        --plot docs/results/dmc/curves.png --copy docs/results/dmc/runs \\
        --official-scores ../dreamerv3/scores/dmc_proprio-dreamerv3.json.gz   # a danijar/dreamerv3 checkout

`--plot-variants NAME ...` plots only those variants (the headline figure of docs/agent.md).

A run is a folder with `run.json` and `curve.json` (`python -m dreamer_actor.agent --out DIR`). Runs are
grouped by task and by *variant*: the learning rules (`variant`) and the other flags that differ from the
agent's defaults. Two scores per run, both at the run's last frame:

* `eval`: the deterministic evaluation (the mean of its episodes, fixed reset seeds);
* `train`: the mean return of the training episodes (the sampled policy, as it explored) that ended in
  the last 10,000 env frames: what official DreamerV3's score files report, binned by frames.

Below the table, issue 21's four-task mean (`SUITE`) for each variant with finished runs on all four tasks:
the mean over the tasks of each task's mean over seeds, and how many tasks reach official DreamerV3's score.

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
# Issue 21's four-task mean (walker_walk is its stretch task, outside the mean).
SUITE = ("cartpole_swingup", "pendulum_swingup", "reacher_easy", "cup_catch")
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


def official_curves(path: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Official DreamerV3's mean training score over its seeds at each logged frame count, per task.

    `path`: `scores/dmc_proprio-dreamerv3.json.gz` of a danijar/dreamerv3 checkout (a list of
    `{task: "dmc_<name>", seed, xs: env frames, ys: scores}`). Tasks are named as `task_name` names them.
    """
    import gzip

    by_task: dict[str, list[dict[str, Any]]] = {}
    for record in json.loads(gzip.decompress(path.read_bytes())):
        by_task.setdefault(record["task"].removeprefix("dmc_").replace("ball_in_cup", "cup"), []).append(record)
    curves = {}
    for task, records in by_task.items():
        length = min(len(r["xs"]) for r in records)
        xs = np.asarray(records[0]["xs"][:length], float)
        curves[task] = (xs, np.mean([r["ys"][:length] for r in records], 0))
    return curves


def _smoothed_episodes(run: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Frames every 5k and the mean return of the training episodes that ended in the 10k frames before."""
    episodes = run["curve"]["episodes"]
    frames = np.array([e["frames"] for e in episodes])
    returns = np.array([e["return"] for e in episodes])
    centres = np.arange(TRAIN_WINDOW, run["frames"] + 1, TRAIN_WINDOW // 2)
    binned = [returns[(frames > c - TRAIN_WINDOW) & (frames <= c)] for c in centres]
    return centres, np.array([b.mean() if b.size else np.nan for b in binned])


def plot(runs: list[dict[str, Any]], path: pathlib.Path, official: dict[str, Any] | None = None) -> None:
    """Per task, against env frames (top) and wall-clock minutes (bottom): each variant's mean over its
    seeds (thick; thin: each seed) of the training episodes' return (smoothed over 10k frames; line) and
    of the deterministic evaluations (dots). Wall time is the run's own clock at each evaluation: a
    resumed run adds the clock of each process that ran it, up to its last checkpoint (time while
    stopped between processes is not counted; time while paused with SIGSTOP is). `official`
    (`official_curves`): official DreamerV3's training score against frames, dashed; without it, its
    score at 100k frames as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.5 * len(tasks), 6.6), squeeze=False)
    names = sorted({r["variant"] for r in runs})
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    styles = {name: "-" if i < 10 else ":" for i, name in enumerate(names)}
    for col, task in enumerate(tasks):
        top, bottom = axes[0][col], axes[1][col]
        for name in names:
            group = [r for r in runs if r["task"] == task and r["variant"] == name]
            if not group:
                continue
            style = dict(color=colors[name], ls=styles[name])
            smoothed = [_smoothed_episodes(r) for r in group]
            for x, y in smoothed:
                top.plot(x, y, lw=0.6, alpha=0.35, **style)
            shortest = min(len(x) for x, _ in smoothed)
            top.plot(smoothed[0][0][:shortest], np.mean([y[:shortest] for _, y in smoothed], 0), lw=1.8, **style)
            evals = [r["curve"]["evals"] for r in group]
            n = min(len(e) for e in evals)
            mean_eval = np.mean([[e["deterministic"]["mean"] for e in ev[:n]] for ev in evals], 0)
            top.plot([e["frames"] for e in evals[0][:n]], mean_eval, "o", ms=3, color=colors[name])
            for ev in evals:
                minutes = [e["wall_s"] / 60 for e in ev]
                bottom.plot(minutes, [e["deterministic"]["mean"] for e in ev], marker="o", ms=2, lw=0.9, **style)
        if official and task in official:
            xs, ys = official[task]
            keep = xs <= max(r["frames"] for r in runs if r["task"] == task)
            top.plot(xs[keep], ys[keep], color="k", ls="--", lw=1.2)
        elif task in ANCHORS:
            top.axhline(ANCHORS[task][0], color="k", ls="--", lw=1)
        top.set_title(task, fontsize=9)
        top.set_xlabel("env frames")
        bottom.set_xlabel("wall-clock minutes")
    axes[0][0].set_ylabel("return (line: training episodes; dots: eval)")
    axes[1][0].set_ylabel("deterministic eval, each seed")
    handles = [plt.Line2D([], [], color=colors[n], ls=styles[n], label=n) for n in names]
    label = "official DreamerV3 (training episodes, mean of 5 seeds)" if official else "official DreamerV3 at 100k"
    handles.append(plt.Line2D([], [], color="k", ls="--", label=label))
    fig.tight_layout()
    # Below the axes, whatever its length: the saved figure grows to hold it.
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), fontsize=7, ncol=2)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def select_variants(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The runs of the variants `names` (as the table names them); a name no run has is an error listing them."""
    known = sorted({r["variant"] for r in runs})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"dmc_results: --plot-variants: no run of {unknown}; the variants found: {known}")
    return [r for r in runs if r["variant"] in names]


def suite_means(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant with finished runs on every task of `SUITE`: the mean over the tasks of each task's seed mean.

    Returns one dict per such variant: `eval` and `train` (the four-task means), `seeds` (the fewest
    finished seeds of a task), `at_official` (the tasks whose seed-mean eval is at or above official
    DreamerV3's score) and `per_task` (task -> seed-mean eval).
    """
    by_variant: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for run in runs:
        if run["done"] and run["task"] in SUITE:
            by_variant.setdefault(run["variant"], {}).setdefault(run["task"], []).append(run)
    means = []
    for name, tasks in sorted(by_variant.items()):
        if len(tasks) < len(SUITE):
            continue
        per_task = {t: float(np.mean([r["eval"] for r in tasks[t]])) for t in SUITE}
        trains = [float(np.mean([r["train"] for r in tasks[t] if r["train"] is not None])) for t in SUITE]
        means.append({
            "variant": name, "eval": float(np.mean(list(per_task.values()))), "train": float(np.mean(trains)),
            "seeds": min(len(tasks[t]) for t in SUITE), "per_task": per_task,
            "at_official": [t for t in SUITE if per_task[t] >= ANCHORS[t][0]],
        })  # fmt: skip
    return means


def suite_markdown(runs: list[dict[str, Any]]) -> str:
    """The four-task means (`suite_means`) as a table, with the anchors' means; empty if no variant has all four."""
    means = suite_means(runs)
    if not means:
        return ""
    anchors = " / ".join(f"{np.mean([ANCHORS[t][i] for t in SUITE]):.0f}" for i in range(3))
    lines = [
        f"| variant | fewest seeds per task | {' | '.join(SUITE)} | four-task mean eval | train "
        "| tasks at or above official | official DreamerV3 / TD-MPC2 / SAC |",
        "|" + "---|" * (len(SUITE) + 6),
    ]
    for m in means:
        cells = [m["variant"], str(m["seeds"]), *(f"{m['per_task'][t]:.0f}" for t in SUITE), f"{m['eval']:.0f}",
                 f"{m['train']:.0f}", f"{len(m['at_official'])} of {len(SUITE)}", anchors]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    parser.add_argument("--plot-variants", nargs="+", metavar="VARIANT",
                        help="plot only these variants, named as the table names them (default: all)")  # fmt: skip
    parser.add_argument("--copy", type=pathlib.Path, help="copy each run's run.json and curve.json under here")
    parser.add_argument(
        "--official-scores", type=pathlib.Path,
        help="scores/dmc_proprio-dreamerv3.json.gz of a danijar/dreamerv3 checkout: its curves in the plot",
    )  # fmt: skip
    args = parser.parse_args(argv)
    runs = load_runs(args.dir)
    if not runs:
        raise SystemExit(f"no run with an evaluation under {args.dir}")
    try:  # a wrong variant name fails before anything is written
        shown = select_variants(runs, args.plot_variants) if args.plot_variants else runs
    except ValueError as error:
        parser.error(str(error))
    table = markdown(runs)
    suite = suite_markdown(runs)
    if suite:
        table += f"\n\nThe four-task mean ({', '.join(SUITE)}), per variant with finished runs on all four:\n\n{suite}"
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(shown, args.plot, official_curves(args.official_scores) if args.official_scores else None)
    if args.copy:
        copy_runs(runs, args.dir, args.copy)


if __name__ == "__main__":
    main()
