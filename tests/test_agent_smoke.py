"""Smoke run of the whole agent: a tiny DreamerV3 learns CartPole-v1 from 1,600 real steps.

Asserts that the world-model loss falls, that the trained agent beats a uniform random policy on
fixed evaluation seeds by a clear margin, and that `load(DIR)` gives a working policy.
"""

import json
import pathlib
import re

import gymnasium as gym
import numpy as np

from dreamer_actor.agent.evaluation import EVAL_SEED_BASE
from dreamer_actor.agent.run import RunConfig, train_agent

TINY = dict(
    env="CartPole-v1",
    steps=1600,
    seed=0,
    warmup=250,
    eval_every=1600,
    eval_episodes=10,
    deter=32,
    units=32,
    stoch=4,
    classes=4,
    layers=1,
    batch=8,
    length=16,
    train_ratio=64.0,
    model_lr=1e-3,
    actor_lr=1e-3,
    critic_lr=1e-3,
    progress=False,
)


def test_tiny_agent_learns_cartpole(tmp_path):
    curve = train_agent(RunConfig.from_flags(out=str(tmp_path), **TINY))
    losses = [entry["wm_loss"] for entry in curve["losses"]]
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
    final, random = curve["evals"][-1], curve["random"]
    assert random["mean"] < 30.0
    # A clear margin: at least twice the random policy's return and 25 more, deterministic and sampled.
    for mode in ("deterministic", "sampled"):
        assert final[mode]["mean"] > max(2.0 * random["mean"], random["mean"] + 25.0), (mode, final, random)
    saved = json.loads((tmp_path / "curve.json").read_text())
    assert saved["evals"][-1]["env_steps"] == TINY["steps"] and (tmp_path / "curve.png").stat().st_size > 0

    # The README's reload snippet, run as written on this run's folder (plus a check of each action).
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## The main job: a DreamerV3 agent") :]
    section = section[: section.index("\n## ")]
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL) if "load(" in block]
    assert '"runs/cartpole"' in snippet and "policy(obs)" in snippet
    snippet = snippet.replace('"runs/cartpole"', repr(str(tmp_path))).replace("policy(obs)", "checked(policy(obs))")
    returns = []
    for episode in range(3):
        namespace = {"checked": lambda a: (assert_in_space(a), a)[1]}
        exec(compile(snippet.replace("seed=0", f"seed={EVAL_SEED_BASE + episode}"), "README.md", "exec"), namespace)
        returns.append(namespace["total"])
    assert np.mean(returns) > max(2.0 * random["mean"], random["mean"] + 25.0), returns


def assert_in_space(action):
    assert gym.make("CartPole-v1").action_space.contains(action), action
