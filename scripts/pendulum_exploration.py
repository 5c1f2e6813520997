"""How often blind exploration finds DMC pendulum_swingup's sparse reward (docs/agent.md, DeepMind Control).

    .venv/bin/python scripts/pendulum_exploration.py [--episodes 20]

Each policy plays `--episodes` episodes (1,000 frames, action repeat 2, reset seeds 0 .. N-1) through
`dreamer_actor.agent.make_env`, as the agent sees the task; prints the mean and max return and how many
episodes scored above 0, split by where they started: the reward is 1 only with the pole within 8 degrees
of upright (dm_control's `_ANGLE_BOUND`), and a reset puts the pole at a uniform random angle, so about
4.4 % of episodes start there and collect reward while the pole falls. `random MLP mean` is
`clip(N(tanh(f(s)), 1))` with a fresh untrained 3-64-1 tanh MLP `f` per episode (what an untrained
bounded-normal actor at its maximum std does).
"""

from __future__ import annotations

import argparse

import numpy as np

from dreamer_actor.agent import make_env


def random_mlp(seed: int):
    r = np.random.default_rng(seed)
    w1, w2 = r.normal(0, 1 / np.sqrt(3), (3, 64)), r.normal(0, 1 / 8, (64, 1))
    return lambda obs: 3.0 * np.tanh(np.tanh(obs @ w1) @ w2)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    env = make_env("dm_control/pendulum-swingup-v0", 2)
    rng = np.random.default_rng(0)
    policies = {
        "uniform": lambda obs, f: rng.uniform(-1, 1, 1),
        "clip N(0, 1)": lambda obs, f: np.clip(rng.normal(0, 1, 1), -1, 1),
        "tanh N(0, 0.87)": lambda obs, f: np.tanh(rng.normal(0, 0.87, 1)),
        "random MLP mean": lambda obs, f: np.clip(np.tanh(f(obs)) + rng.normal(0, 1, 1), -1, 1),
    }
    upright = np.cos(np.deg2rad(8.0))  # the observation's first entry is the pole's cosine to upright
    for name, policy in policies.items():
        returns, near = [], []
        for episode in range(args.episodes):
            obs, _ = env.reset(seed=episode)
            near.append(obs[0] > upright)
            f, total, done = random_mlp(episode), 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy(obs, f).astype(np.float32))
                total, done = total + reward, terminated or truncated
            returns.append(total)
        hits = sum(r > 0 for r in returns)
        near_hits = sum(r > 0 for r, n in zip(returns, near, strict=True) if n)
        print(
            f"{name:18s} mean {np.mean(returns):6.1f}  max {np.max(returns):6.1f}  above 0: {hits}/{args.episodes}"
            f"  (of the {sum(near)} that started within 8 degrees of upright: {near_hits}; of the other "
            f"{args.episodes - sum(near)}: {hits - near_hits})"
        )


if __name__ == "__main__":
    main()
