"""Does a pendulum_swingup run's world model know where the reward is? Its reward head near upright.

    .venv/bin/python scripts/pendulum_reward_head.py RUN [RUN ...] [--starts 8] [--steps 20]

For each run folder (`dreamer_actor.agent.load`: the finished run, or a stopped one's last checkpoint),
the env (`make_env`, action repeat 2) is reset with seeds 20000, 20001, ... (held out from the run's
training and its evaluations, which use the run seed and 10000 + i) until `--starts` resets have put
the pole within 8 degrees of upright; from each, `--steps` policy steps of the run's deterministic
policy. The world model filters each episode as the agent does when it acts (`world_model.observe`:
row `t` holds `x_t`, `a_{t-1}`, `r_t`), and its reward head's two-hot mean at row `t`'s posterior is
set against the real `r_t` (0, 1 or 2 per policy step: one per frame with the pole within 8 degrees).
Printed per run: over the rows whose real reward is above 0, the mean real and predicted reward; over
the others, the mean and largest prediction.
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import numpy as np
from agent_diagnostics import pad_batch  # scripts/ is on sys.path when run as a script
from pendulum_starts import UPRIGHT

from dreamer_actor.agent import load, make_env
from dreamer_actor.agent import world_model as wm

SEED_BASE = 20_000


def upright_episodes(policy, starts: int, steps: int) -> list[dict[str, np.ndarray]]:
    """`starts` episodes of `steps` policy steps from resets within 8 degrees of upright, as replay rows."""
    env = make_env("dm_control/pendulum-swingup-v0", 2)
    episodes, seed = [], SEED_BASE
    while len(episodes) < starts:
        obs, _ = env.reset(seed=seed)
        seed += 1
        if obs[0] <= UPRIGHT:
            continue
        policy.reset()
        rows = {"obs": [obs], "action": [np.zeros_like(np.asarray(policy.prev_action[0]))], "reward": [0.0]}
        for _ in range(steps):
            action = policy(obs)
            rows["action"].append(np.asarray(policy.prev_action[0]))  # the model's a_t for this step
            obs, reward, _, _, _ = env.step(action)
            rows["obs"].append(obs)
            rows["reward"].append(float(reward))
        length = steps + 1
        episodes.append(
            {
                "obs": np.asarray(rows["obs"], np.float32),
                "action": np.asarray(rows["action"], np.float32),
                "reward": np.asarray(rows["reward"], np.float32),
                "is_first": np.arange(length) == 0,
                "terminated": np.zeros(length, bool),
            }
        )
    env.close()
    return episodes


def reward_predictions(policy, episodes: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """`(real [E, L], predicted [E, L])`: the real rewards and the reward head's mean at each posterior."""
    model = wm.WorldModel(policy.wm_config)
    bins = wm.twohot_bins(policy.wm_config.num_bins)

    @jax.jit
    def predict(params, obs, prev_actions, is_first, key):
        latents, _, _ = wm.observe(model, params, obs, prev_actions, is_first, key)
        logits, _ = model.apply(params, latents.h, latents.z, method=wm.WorldModel.reward_cont)
        return wm.twohot_mean(logits, bins)

    batch, _ = pad_batch(episodes)
    predicted = predict(policy.wm_params, batch["obs"], batch["action"], batch["is_first"], jax.random.key(0))
    return batch["reward"], np.asarray(predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=pathlib.Path, nargs="+")
    parser.add_argument("--starts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    for run_dir in args.runs:
        policy = load(run_dir)
        real, predicted = reward_predictions(policy, upright_episodes(policy, args.starts, args.steps))
        rewarded = real > 0
        print(
            f"{run_dir.name}: {rewarded.sum()} rewarded rows, real {real[rewarded].mean():.2f}, predicted "
            f"{predicted[rewarded].mean():.3f} (min {predicted[rewarded].min():.3f}); {(~rewarded).sum()} "
            f"unrewarded rows, predicted {predicted[~rewarded].mean():.3f} (max {predicted[~rewarded].max():.3f})"
        )


if __name__ == "__main__":
    main()
