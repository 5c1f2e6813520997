"""Which of a seed's first episodes of DMC pendulum_swingup start within 8 degrees of upright (docs/agent.md).

    .venv/bin/python scripts/pendulum_starts.py [--seeds 0 1 2 3 4] [--episodes 100]
    .venv/bin/python scripts/pendulum_starts.py --runs docs/results/dmc/runs/pendulum_swingup/*

The env is made as the agent makes it (`dreamer_actor.agent.make_env`, action repeat 2), reset once with the
seed and then unseeded, as a run's env copy is; the start angle does not depend on the actions taken.

With `--runs`, for each run folder (its `run.json` and `curve.json`) the seed's first near-upright start,
that episode's return `R`, the env step `t` it ended at, and `R * train_ratio * ln(T / t)`: its reward
times the number of times each of its rows is replayed by the run's last env step `T`, in expectation
under uniform replay with one env (an update every `batch * length / train_ratio` env steps draws
`batch * length` of the `s` rows stored, so a row is drawn `train_ratio / s` times per env step `s`;
summed from `t` to `T`: about `train_ratio * ln(T / t)`). The run's last evaluation is printed beside it,
and the run's first swing-up from below (its first rewarded episode that did not start near upright), its
first training episode above 300 (where it holds the pole) and the updates between the two (or from the
swing-up to the run's end where it never holds).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import numpy as np

from dreamer_actor.agent import make_env

UPRIGHT = np.cos(np.deg2rad(8.0))  # the observation's first entry is the pole's cosine to upright
HOLD = 300.0  # a training episode above this holds the pole for part of its 1,000 frames


def near_upright_starts(seed: int, episodes: int) -> list[int]:
    """The episodes (0-based) of the first `episodes` resets of `seed` that start within 8 degrees."""
    env = make_env("dm_control/pendulum-swingup-v0", 2)
    near = [env.reset(seed=seed)[0][0] > UPRIGHT]
    near += [env.reset()[0][0] > UPRIGHT for _ in range(episodes - 1)]
    return np.flatnonzero(near).tolist()


def swing_up_to_hold(
    episodes: list[dict], starts: list[int], updates_per_step: float
) -> tuple[int | None, int | None, float | None]:
    """(first swing-up from below, first episode above `HOLD` from it on, updates between, or to the end).

    `episodes` are curve.json's (`return`, `env_steps` at its end); `starts` the near-upright ones, left out
    of the swing-ups; an update comes every `1 / updates_per_step` env steps.
    """
    swing = next((i for i, e in enumerate(episodes) if e["return"] > 0 and i not in starts), None)
    if swing is None:
        return None, None, None
    hold = next((i for i in range(swing, len(episodes)) if episodes[i]["return"] > HOLD), None)
    until = episodes[-1 if hold is None else hold]["env_steps"]
    return swing, hold, (until - episodes[swing]["env_steps"]) * updates_per_step


def replayed_reward(run_dir: pathlib.Path) -> str:
    """One line: the run's first near-upright start, its return, the replayed reward, the last evaluation."""
    config = json.loads((run_dir / "run.json").read_text())["run"]
    curve = json.loads((run_dir / "curve.json").read_text())
    episodes = curve["episodes"]
    starts = near_upright_starts(config["seed"], len(episodes))
    if not starts:
        return f"{run_dir.name}: seed {config['seed']}, no near-upright start in {len(episodes)} episodes"
    first = episodes[starts[0]]
    last_step = episodes[-1]["env_steps"]
    replayed = first["return"] * config["train_ratio"] * math.log(last_step / first["env_steps"])
    agent = config.get("agent", {})
    per_step = config["train_ratio"] / (agent.get("batch", 16) * agent.get("length", 32))
    swing, hold, updates = swing_up_to_hold(episodes, starts, per_step)
    if swing is None:
        after = "no swing-up from below"
    elif hold is None:
        after = f"first swing-up from below episode {swing}, none above {HOLD:.0f} ({updates:.0f} updates to the end)"
    else:
        after = f"first swing-up from below episode {swing}, first above {HOLD:.0f} {hold} ({updates:.0f} updates on)"
    return (
        f"{run_dir.name}: seed {config['seed']}, train ratio {config['train_ratio']:g}: first near-upright start "
        f"episode {starts[0]} (return {first['return']:.0f}, ends at env step {first['env_steps']}); replayed "
        f"reward {replayed:.0f}; {after}; last evaluation {curve['evals'][-1]['deterministic']['mean']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--runs", type=pathlib.Path, nargs="+", help="run folders: the replayed reward of each")
    args = parser.parse_args()
    if args.runs:
        for run_dir in args.runs:
            print(replayed_reward(run_dir))
        return
    for seed in args.seeds:
        which = near_upright_starts(seed, args.episodes)
        print(f"seed {seed}: {len(which)} of {args.episodes} start near upright, episodes {which}")


if __name__ == "__main__":
    main()
