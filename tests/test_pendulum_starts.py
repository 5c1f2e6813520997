"""scripts/pendulum_starts.py: the near-upright starts against the physics' hinge angle, the replayed reward."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from dreamer_actor.agent import make_env

_PATH = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "pendulum_starts.py"
_SPEC = importlib.util.spec_from_file_location("pendulum_starts", _PATH)
ps = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ps)


def _starts_from_the_hinge(seed, episodes):
    """The same resets, judged by the hinge angle in the simulator (0 is upright) instead of the observation."""
    env = make_env("dm_control/pendulum-swingup-v0", 2)
    angles = []
    for episode in range(episodes):
        env.reset(seed=seed if episode == 0 else None)
        angles.append(float(env.unwrapped._env.physics.named.data.qpos["hinge"][0]))
    wrapped = np.abs((np.asarray(angles) + np.pi) % (2 * np.pi) - np.pi)
    return np.flatnonzero(wrapped < np.deg2rad(8.0)).tolist()


@pytest.mark.parametrize("seed", [0, 2])
def test_near_upright_starts_are_the_resets_whose_hinge_is_within_8_degrees(seed):
    starts = ps.near_upright_starts(seed, 40)
    assert starts == _starts_from_the_hinge(seed, 40)
    assert starts  # seeds 0 and 2 each have one in their first 40 resets (episodes 28 and 13)


def test_replayed_reward_is_the_return_times_the_expected_draws_of_a_row(tmp_path):
    episodes, length, ratio = 40, 500, 64.0
    (start,) = ps.near_upright_starts(0, episodes)
    curve = {
        "episodes": [{"env_steps": length * (i + 1), "return": 4.0 if i == start else 0.0} for i in range(episodes)],
        "evals": [{"deterministic": {"mean": 14.0}}],
    }
    (tmp_path / "curve.json").write_text(json.dumps(curve))
    (tmp_path / "run.json").write_text(json.dumps({"run": {"seed": 0, "train_ratio": ratio}}))
    # Each env step s after the start draws train_ratio / s of a stored row, in expectation: the sum.
    t, last = length * (start + 1), length * episodes
    expected = 4.0 * ratio * sum(1.0 / s for s in range(t + 1, last + 1))
    line = ps.replayed_reward(tmp_path)
    assert f"episode {start} (return 4," in line
    printed = float(line.split("replayed reward ")[1].split(";")[0])
    assert abs(printed - expected) <= 1.0  # ln(T / t) against the sum: within rounding here


def test_the_updates_from_the_first_swing_up_to_the_hold_count_env_steps_between_them():
    def episodes(returns):
        return [{"env_steps": 500 * (i + 1), "return": r} for i, r in enumerate(returns)]

    # Episode 1 is a near-upright start (left out), 3 the first swing-up from below, 6 the first above 300.
    held = episodes([0, 5, 0, 40, 60, 0, 800, 900])
    assert ps.swing_up_to_hold(held, [1], 0.125) == (3, 6, (3_500 - 2_000) * 0.125)
    swung = episodes([0, 5, 0, 40, 60, 0, 100, 90])  # never above 300: the updates to the run's end
    assert ps.swing_up_to_hold(swung, [1], 0.375) == (3, None, (4_000 - 2_000) * 0.375)
    assert ps.swing_up_to_hold(episodes([0, 5, 0]), [1], 0.125) == (None, None, None)  # only its start rewarded


class _ZeroPolicy:
    """Stands in for `dreamer_actor.agent.Policy`: torque 0, the model action it would record."""

    def __init__(self):
        self.prev_action = np.zeros((1, 1), np.float32)
        self.calls = 0

    def reset(self):
        self.prev_action = np.zeros((1, 1), np.float32)

    def __call__(self, obs):
        self.calls += 1
        self.prev_action = np.full((1, 1), 0.5, np.float32)
        return np.zeros(1, np.float32)


def test_upright_episodes_start_near_upright_and_keep_the_replay_rows(monkeypatch):
    _rh_spec = importlib.util.spec_from_file_location("pendulum_reward_head", _PATH.parent / "pendulum_reward_head.py")
    rh = importlib.util.module_from_spec(_rh_spec)
    monkeypatch.syspath_prepend(str(_PATH.parent))  # its imports of the sibling scripts
    _rh_spec.loader.exec_module(rh)
    policy = _ZeroPolicy()
    episodes = rh.upright_episodes(policy, starts=2, steps=5)
    assert len(episodes) == 2 and policy.calls == 10
    for episode in episodes:
        assert episode["obs"][0, 0] > ps.UPRIGHT  # the reset's pole cosine
        assert episode["obs"].shape == (6, 3) and episode["action"].shape == (6, 1)
        np.testing.assert_array_equal(episode["action"][:, 0], [0.0, 0.5, 0.5, 0.5, 0.5, 0.5])  # a_{t-1}
        assert episode["reward"][0] == 0.0 and episode["is_first"].tolist() == [True] + [False] * 5
    # Started within 8 degrees and not pushed, the pole earns 2 (one per frame) on the first step.
    assert all(episode["reward"][1] == 2.0 for episode in episodes)
