"""How a finished CartPole-v1 agent run's episodes end: length, terminated or truncated, final observation.

`python scripts/cartpole_terminations.py DIR [--episodes 10]` (reset seeds 20000 + i, deterministic
policy via `dreamer_actor.agent.load`). docs/agent.md's "every early end is the cart at the track's
edge" figures come from this script on the seed-0 runs.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

from dreamer_actor.agent import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="a finished `python -m dreamer_actor.agent --out DIR` run folder")
    parser.add_argument("--episodes", type=int, default=10, help="episodes, reset seeds 20000 + i (default 10)")
    args = parser.parse_args()
    policy = load(args.dir)
    env = gym.make("CartPole-v1")
    for i in range(args.episodes):
        obs, _ = env.reset(seed=20000 + i)
        policy.reset()
        steps, done, max_x = 0, False, 0.0
        while not done:
            obs, _, terminated, truncated, _ = env.step(policy(obs))
            steps, done, max_x = steps + 1, terminated or truncated, max(max_x, abs(float(obs[0])))
        end = "terminated" if terminated else "truncated"
        print(f"episode {i}: {steps} steps, {end}, final obs (x, x_dot, theta, theta_dot) {np.round(obs, 3)}, "
              f"max |x| {max_x:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
