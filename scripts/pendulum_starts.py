"""Which of a seed's first episodes of DMC pendulum_swingup start within 8 degrees of upright (docs/agent.md).

    .venv/bin/python scripts/pendulum_starts.py [--seeds 0 1 2 3 4] [--episodes 100]

The env is made as the agent makes it (`dreamer_actor.agent.make_env`, action repeat 2), reset once with the
seed and then unseeded, as a run's env copy is; the start angle does not depend on the actions taken.
"""

from __future__ import annotations

import argparse

import numpy as np

from dreamer_actor.agent import make_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    upright = np.cos(np.deg2rad(8.0))  # the observation's first entry is the pole's cosine to upright
    for seed in args.seeds:
        env = make_env("dm_control/pendulum-swingup-v0", 2)
        near = [env.reset(seed=seed)[0][0] > upright]
        near += [env.reset()[0][0] > upright for _ in range(args.episodes - 1)]
        which = np.flatnonzero(near).tolist()
        print(f"seed {seed}: {sum(near)} of {args.episodes} start near upright, episodes {which}")


if __name__ == "__main__":
    main()
