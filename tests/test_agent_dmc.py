"""The DeepMind Control route: shimmy's dm_control envs, Dict observations flattened in key order, the
action repeat and its frame count, bad observation spaces refused, and a tiny agent on one DMC task."""

import json

import gymnasium as gym
import numpy as np
import pytest
import shimmy

from dreamer_actor.agent import envs as envs_lib
from dreamer_actor.agent import make_env
from dreamer_actor.agent import run as agent_run

gym.register_envs(shimmy)


@pytest.mark.parametrize(
    ("env_id", "keys"),
    [
        ("dm_control/cartpole-swingup-v0", {"position": 3, "velocity": 2}),
        ("dm_control/walker-walk-v0", {"height": 1, "orientations": 14, "velocity": 9}),
    ],
)
def test_dict_observations_are_flattened_in_sorted_key_order(env_id, keys):
    flat, raw = make_env(env_id), gym.make(env_id)
    assert flat.observation_space.shape == (sum(keys.values()),)
    assert list(raw.observation_space.spaces) == sorted(keys)  # gymnasium's Dict sorts its keys
    obs, _ = flat.reset(seed=3)
    raw_obs, _ = raw.reset(seed=3)
    assert {k: np.size(v) for k, v in raw_obs.items()} == keys
    # The NumPy reference: each entry raveled, concatenated in sorted key order.
    np.testing.assert_array_equal(obs, np.concatenate([np.ravel(raw_obs[k]) for k in sorted(keys)]))
    action = flat.action_space.sample()
    obs, *_ = flat.step(action)
    raw_obs, *_ = raw.step(action)
    np.testing.assert_array_equal(obs, np.concatenate([np.ravel(raw_obs[k]) for k in sorted(keys)]))


def test_action_repeat_sums_rewards_against_stepping_by_hand():
    repeated, raw = make_env("dm_control/cartpole-swingup-v0", 3), gym.make("dm_control/cartpole-swingup-v0")
    repeated.reset(seed=1)
    raw.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-1, 1, size=1)
        obs, reward, terminated, truncated, info = repeated.step(action)
        want = 0.0
        for _ in range(3):
            raw_obs, r, *_ = raw.step(action)
            want += r
        assert info["frames"] == 3 and not (terminated or truncated)
        assert reward == pytest.approx(want, rel=1e-12, abs=0)
        np.testing.assert_array_equal(obs, np.concatenate([np.ravel(raw_obs[k]) for k in sorted(raw_obs)]))


class _Counter(gym.Env):
    """Reward t at step t; an episode truncated after `length` steps; observations as configured."""

    def __init__(self, length=7, obs_space=None):
        self.observation_space = obs_space or gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), float(self.t), False, self.t >= self.length, {}


gym.register("dreamer_actor_tests/Counter-v0", entry_point=_Counter)
gym.register(
    "dreamer_actor_tests/Pixels-v0",
    entry_point=_Counter,
    kwargs={"obs_space": gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)})},
)
gym.register(
    "dreamer_actor_tests/Nested-v0",
    entry_point=_Counter,
    kwargs={"obs_space": gym.spaces.Dict({"arm": gym.spaces.Dict({"q": gym.spaces.Box(-1, 1, (2,))})})},
)
gym.register("dreamer_actor_tests/Image-v0", entry_point=_Counter, kwargs={"obs_space": gym.spaces.Box(0, 1, (4, 4))})


def test_action_repeat_stops_at_an_episodes_end_and_counts_its_frames():
    env = make_env("dreamer_actor_tests/Counter-v0", 3)  # 7 frames: 3 + 3 + 1
    env.reset(seed=0)
    got = [env.step(np.zeros(1, np.float32)) for _ in range(3)]
    assert [g[1] for g in got] == [1 + 2 + 3, 4 + 5 + 6, 7]
    assert [g[4]["frames"] for g in got] == [3, 3, 1]
    assert [g[3] for g in got] == [False, False, True]


def test_a_run_counts_frames_beside_policy_steps(tmp_path):
    run = agent_run.RunConfig.from_flags(
        env="dreamer_actor_tests/Counter-v0", action_repeat=3, steps=120, warmup=40, eval_every=120,
        eval_episodes=2, deter=8, units=8, stoch=2, classes=2, layers=1, batch=2, length=4, train_ratio=4.0,
        out=str(tmp_path), progress=False,
    )  # fmt: skip
    agent_run.train_agent(run)
    curve = json.loads((tmp_path / "curve.json").read_text())
    # 3-step episodes of 3 + 3 + 1 frames: 40 whole episodes in 120 policy steps.
    assert [e["episode_frames"] for e in curve["episodes"]] == [7] * 40
    assert [e["length"] for e in curve["episodes"]] == [3] * 40
    assert curve["evals"][-1]["env_steps"] == 120 and curve["evals"][-1]["frames"] == 280
    assert curve["episodes"][-1]["return"] == pytest.approx(28.0)


@pytest.mark.parametrize(
    ("env_id", "pattern"),
    [
        ("dreamer_actor_tests/Pixels-v0", r"'pixels'.*pixels\?"),
        ("dreamer_actor_tests/Nested-v0", r"nested Dict under 'arm'"),
        ("dreamer_actor_tests/Image-v0", r"Box of shape \(4, 4\)"),
    ],
)
def test_bad_observation_spaces_are_refused_naming_them(env_id, pattern, tmp_path):
    with pytest.raises(TypeError, match=pattern):
        make_env(env_id)
    out = tmp_path / "run"
    run = agent_run.RunConfig.from_flags(env=env_id, steps=100, warmup=50, length=8, out=str(out), progress=False)
    with pytest.raises(TypeError, match=pattern):
        agent_run.train_agent(run)
    assert not out.exists()


def test_vector_envs_fast_forward_to_the_same_dmc_state():
    a = envs_lib.Envs("dm_control/reacher-easy-v0", 2, "sync", seed=4, action_repeat=2)
    a.reset()
    rng = np.random.default_rng(1)
    for _ in range(30):
        step = a.step(rng.uniform(-1, 1, size=(2, 2)))
    b = envs_lib.Envs("dm_control/reacher-easy-v0", 2, "sync", seed=4, action_repeat=2)
    np.testing.assert_array_equal(b.fast_forward(np.stack(a.log)), step.obs)


@pytest.mark.slow
def test_a_tiny_agent_beats_a_random_policy_on_cartpole_swingup(tmp_path):
    run = agent_run.RunConfig.from_flags(
        env="dm_control/cartpole-swingup-v0", action_repeat=2, steps=6000, warmup=1000, eval_every=6000,
        eval_episodes=4, deter=64, units=64, stoch=8, classes=8, layers=1, batch=8, length=32, train_ratio=32.0,
        model_lr=1e-3, actor_lr=1e-3, critic_lr=1e-3, out=str(tmp_path), progress=False,
    )  # fmt: skip
    curve = agent_run.train_agent(run)
    final, random = curve["evals"][-1], curve["random"]
    assert final["frames"] == 12_000
    for mode in ("deterministic", "sampled"):
        # Seed 0 on this CPU: 178.5 (deterministic) and 170.2 (sampled) against 55.4.
        assert final[mode]["mean"] > max(2.0 * random["mean"], random["mean"] + 60.0), (mode, final, random)
