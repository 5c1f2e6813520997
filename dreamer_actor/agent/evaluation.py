"""The evaluation protocol every policy in this project is scored with: fixed reset seeds, lockstep episodes.

Episode `i` of an `N`-episode evaluation runs in its own env instance reset with seed
`EVAL_SEED_BASE + i` (never a training seed), so every policy and every evaluation starts from the
same states. The `N` envs are stepped in lockstep and the policy acts on the `[N, O]` batch of
observations with one call per step; an episode that ends stops stepping and accumulating. The
return is the undiscounted sum of the env's own rewards. Used by the agent
(`run.evaluate_policy`), the exact-model example and the demo (`examples.evaluation`) and the
baselines (`scripts/compare_baselines.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

EVAL_SEED_BASE = 10_000


def eval_seeds(episodes: int) -> list[int]:
    """The fixed reset seeds of an `episodes`-episode evaluation: `EVAL_SEED_BASE + i`."""
    if isinstance(episodes, bool) or not (isinstance(episodes, int) and episodes >= 1):
        raise ValueError(f"eval_seeds: `episodes` must be a positive int, got {episodes!r}.")
    return [EVAL_SEED_BASE + i for i in range(episodes)]


def run_episodes(
    policy: Callable[[np.ndarray, int], Any], seeds: Sequence[int], make_env: Callable[[], Any]
) -> np.ndarray:
    """Runs one full episode per seed, all in lockstep.

    Args:
      policy: `(obs [N, O] float32, t) -> N env actions` (a list, or an array whose first axis is `N`),
        called once per time step `t` (0 at the resets) with every episode's observation; the actions of
        episodes that have ended are ignored.
      seeds: `N` reset seeds.
      make_env: makes one env (`N` are made and closed here).

    Returns:
      `[N]` float64 undiscounted episode returns.
    """
    envs = [make_env() for _ in seeds]
    try:
        obs = np.stack([env.reset(seed=int(seed))[0] for env, seed in zip(envs, seeds, strict=True)])
        obs = obs.astype(np.float32)
        returns = np.zeros(len(envs))
        active = np.ones(len(envs), bool)
        t = 0
        while active.any():
            actions = policy(obs, t)
            if not isinstance(actions, list):
                actions = np.asarray(actions)
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
