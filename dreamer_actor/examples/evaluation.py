"""Evaluation on the real gymnasium `Pendulum-v1`, on fixed seeds.

The protocol of `dreamer_actor.agent.evaluation` (the one loop every policy in this project is scored
with) on `gymnasium.make("Pendulum-v1")`: each of the `N` episodes in its own env instance reset with
its own seed, stepped in lockstep (all Pendulum episodes last exactly 200 steps: `TimeLimit`
truncation, no termination), the policy acting on the `[N, 3]` batch with one call per step. The
return is the undiscounted sum of the environment's own rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dreamer_actor.agent.evaluation import EVAL_SEED_BASE as EVAL_SEED_BASE
from dreamer_actor.agent.evaluation import eval_seeds as eval_seeds

ENV_ID = "Pendulum-v1"


def run_episodes(policy: Callable[[np.ndarray, int], np.ndarray], seeds: Sequence[int]) -> np.ndarray:
    """Runs one full `Pendulum-v1` episode per seed (`agent.evaluation.run_episodes`).

    Args:
      policy: `(obs [N, 3] float32, t) -> actions [N, 1]` (anything array-like); called once
        per time step `t` with all `N` observations.
      seeds: `N` reset seeds.

    Returns:
      `[N]` float64 undiscounted episode returns.
    """
    import gymnasium as gym

    from dreamer_actor.agent import evaluation

    return evaluation.run_episodes(policy, seeds, lambda: gym.make(ENV_ID))


def random_returns(seeds: Sequence[int], rng_seed: int = 0) -> np.ndarray:
    """`[N]` returns of the uniform random policy on `[-2, 2]` (the baseline), fixed seeds."""
    rng = np.random.default_rng(rng_seed)
    return run_episodes(lambda obs, t: rng.uniform(-2.0, 2.0, (obs.shape[0], 1)), seeds)
