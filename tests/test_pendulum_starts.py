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
