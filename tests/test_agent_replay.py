"""The agent's replay buffer and its action-space mapping."""

import gymnasium as gym
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dreamer_actor.agent import spaces
from dreamer_actor.agent.replay import Replay


def _fill(replay, count, episode=7):
    for i in range(count):
        replay.add(
            obs=[i, -i],
            action=[i % 3],
            reward=0.5 * i,
            is_first=i % episode == 0,
            terminated=i % episode == episode - 1,
        )


def test_wrap_around_and_sequences_as_stored():
    replay = Replay(10, obs_dim=2, action_dim=1, seed=0)
    _fill(replay, 25)
    assert len(replay) == 10 and replay.pos == 5
    np.testing.assert_array_equal(np.sort(replay.data["obs"][:, 0]), np.arange(15, 25))
    batch = replay.sample(200, 4)
    assert batch["obs"].shape == (200, 4, 2) and batch["action"].shape == (200, 4, 1)
    assert batch["reward"].shape == batch["is_first"].shape == batch["terminated"].shape == (200, 4)
    i = batch["obs"][..., 0]
    np.testing.assert_array_equal(np.diff(i, axis=1), 1)  # consecutive, never across the newest/oldest seam
    assert i.min() >= 15 and i.max() <= 24
    np.testing.assert_array_equal(batch["obs"][..., 1], -i)
    np.testing.assert_array_equal(batch["action"][..., 0], i % 3)
    np.testing.assert_array_equal(batch["reward"], 0.5 * i)
    np.testing.assert_array_equal(batch["is_first"], i % 7 == 0)
    np.testing.assert_array_equal(batch["terminated"], i % 7 == 6)
    assert batch["is_first"].any() and batch["terminated"].any()
    assert set(np.unique(i[:, 0]).tolist()) == set(range(15, 22))  # every one of the 7 windows is drawn


def test_not_enough_steps():
    replay = Replay(10, obs_dim=2, action_dim=1)
    _fill(replay, 3)
    with pytest.raises(ValueError, match="fewer than the sequence length 4"):
        replay.sample(1, 4)
    with pytest.raises(ValueError, match="capacity"):
        Replay(0, 2, 1)


@pytest.mark.parametrize("stored", [30, 77])  # partly filled; full and wrapped
def test_uniform_start_indices_chi_square(stored):
    replay = Replay(50, obs_dim=2, action_dim=1, seed=1)
    _fill(replay, stored)
    length = 5
    windows = replay.num_windows(length)
    assert windows == min(stored, 50) - length + 1
    first_obs = replay.sample(40 * windows * 25, length)["obs"][:, 0, 0].astype(int)
    oldest = stored - min(stored, 50)
    counts = np.bincount(first_obs - oldest, minlength=windows)
    assert counts.shape == (windows,)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_box_mapping_per_dimension():
    box = gym.spaces.Box(low=np.array([-2.0, 0.0], np.float32), high=np.array([3.0, 1.0], np.float32))
    config = spaces.actor_config_for(box, layers=1, units=8)
    assert config.distribution == "tanh_normal" and config.action_dim == 2
    np.testing.assert_array_equal(np.asarray(config.low), [-2.0, 0.0])
    np.testing.assert_array_equal(np.asarray(config.high), [3.0, 1.0])
    assert spaces.actor_config_for(box, distribution="bounded_normal").distribution == "bounded_normal"
    # The world model's action: normalized units for tanh_normal, the unclipped sample for bounded_normal.
    unit = spaces.model_action(config, jnp.array([[3.0, 0.0], [-2.0, 0.5]]))
    np.testing.assert_allclose(np.asarray(unit), [[1.0, -1.0], [-1.0, 0.0]], atol=1e-6)
    bounded = spaces.actor_config_for(box, distribution="bounded_normal")
    raw = jnp.array([[1.7, -2.5]])
    np.testing.assert_array_equal(np.asarray(spaces.model_action(bounded, jnp.array([[3.0, 0.0]]), raw)), raw)
    action, model = spaces.random_actions(config, np.random.default_rng(0))
    assert box.contains(action) and np.all(np.abs(model) <= 1)
    assert box.contains(spaces.env_action(config, action, box))


def test_discrete_mapping():
    space = gym.spaces.Discrete(3, start=1)
    config = spaces.actor_config_for(space, layers=1, units=8)
    assert config.distribution == "categorical" and config.action_dim == 3
    assert spaces.model_action_dim(config) == 3
    assert spaces.env_action(config, np.array([0.0, 0.0, 1.0]), space) == 3  # argmax + start
    onehot, model = spaces.random_actions(config, np.random.default_rng(0))
    assert onehot.sum() == 1.0 and np.array_equal(onehot, model)


def test_bad_spaces_name_the_space():
    unbounded = gym.spaces.Box(low=np.array([-1.0, -np.inf]), high=np.array([1.0, np.inf]), dtype=np.float64)
    with pytest.raises(ValueError, match=r"Box.*unbounded in dims \[1\]"):
        spaces.actor_config_for(unbounded)
    dict_space = gym.spaces.Dict({"a": gym.spaces.Discrete(2)})
    with pytest.raises(TypeError, match=r"unsupported action space Dict\("):
        spaces.actor_config_for(dict_space)
    with pytest.raises(ValueError, match="Discrete"):
        spaces.actor_config_for(gym.spaces.Discrete(2), distribution="tanh_normal")
    with pytest.raises(ValueError, match="Box"):
        spaces.actor_config_for(gym.spaces.Box(-1.0, 1.0, (1,), np.float32), distribution="categorical")
    with pytest.raises(TypeError, match="1-D Box observation space"):
        spaces.obs_dim_for(gym.spaces.Discrete(4))
