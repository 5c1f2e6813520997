"""Evaluation on the real gymnasium `Pendulum-v1`, on fixed seeds.

Each of the `N` episodes runs in its own `gymnasium.make("Pendulum-v1")` instance, reset
with its own seed (`seeds[i]`), so the start states are the same for every policy and every
evaluation. The `N` environments are stepped in lockstep (all Pendulum episodes last exactly
200 steps: `TimeLimit` truncation, no termination), and the policy acts on the `[N, 3]`
batch of observations with one jitted call per step. The return is the undiscounted sum
of the environment's own rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

ENV_ID = "Pendulum-v1"
EVAL_SEED_BASE = 10_000  # episode i of an evaluation is reset with seed EVAL_SEED_BASE + i


def eval_seeds(episodes: int) -> list[int]:
    """The fixed reset seeds of an `episodes`-episode evaluation."""
    if not (isinstance(episodes, int) and episodes >= 1):
        raise ValueError(f"eval_seeds: `episodes` must be a positive int, got {episodes!r}.")
    return [EVAL_SEED_BASE + i for i in range(episodes)]


def run_episodes(policy: Callable[[np.ndarray, int], np.ndarray], seeds: Sequence[int]) -> np.ndarray:
    """Runs one full episode per seed on the real environment.

    Args:
      policy: `(obs [N, 3] float32, t) -> actions [N, 1]` (anything array-like); called once
        per time step `t` with all `N` observations.
      seeds: `N` reset seeds.

    Returns:
      `[N]` float64 undiscounted episode returns.
    """
    import gymnasium as gym

    envs = [gym.make(ENV_ID) for _ in seeds]
    try:
        obs = np.stack([env.reset(seed=int(seed))[0] for env, seed in zip(envs, seeds, strict=True)])
        returns = np.zeros(len(envs))
        active = np.ones(len(envs), bool)
        t = 0
        while active.any():
            actions = np.asarray(policy(obs, t), np.float32).reshape(len(envs), -1)
            for i, env in enumerate(envs):
                if not active[i]:
                    continue
                obs_i, reward, terminated, truncated, _ = env.step(actions[i])
                obs[i] = obs_i
                returns[i] += float(reward)
                active[i] = not (terminated or truncated)
            t += 1
        return returns
    finally:
        for env in envs:
            env.close()


def random_returns(seeds: Sequence[int], rng_seed: int = 0) -> np.ndarray:
    """`[N]` returns of the uniform random policy on `[-2, 2]` (the baseline), fixed seeds."""
    rng = np.random.default_rng(rng_seed)
    return run_episodes(lambda obs, t: rng.uniform(-2.0, 2.0, (obs.shape[0], 1)), seeds)
