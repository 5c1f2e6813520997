"""The demo's JAX pendulum against the installed gymnasium `Pendulum-v1` (the reference).

The demo trains only in imagination, in `dreamer_actor.examples.pendulum`, and is then scored
on the real environment: if the two disagree, the demo's claim means nothing. Each check sets
the real environment's state by hand and compares one step (or a short rollout) with the JAX
model. Gymnasium computes in float64 NumPy, the model in float32: one step agrees to float32
rounding (`STEP_TOL`); a rollout of chaotic dynamics only for a few steps (`ROLLOUT_TOL`).
"""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dreamer_actor.examples import pendulum

STEP_TOL = 2e-5  # relative+absolute, float32 vs float64, one step
ROLLOUT_TOL = 1e-3  # after 20 steps of the same actions


@pytest.fixture(scope="module")
def env():
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    yield env
    env.close()


def _real_step(env, state: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    env.unwrapped.state = np.asarray(state, np.float64).copy()
    obs, reward, terminated, truncated, _ = env.unwrapped.step(np.asarray(action, np.float32))
    assert not terminated and not truncated
    return np.asarray(env.unwrapped.state), float(reward), obs


def _random_states_and_actions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Angles well outside [-pi, pi) (the state is unwrapped), speeds up to and beyond the limit,
    # torques beyond the bounds (clipped by both).
    theta = rng.uniform(-3 * np.pi, 3 * np.pi, n)
    theta_dot = rng.uniform(-9.0, 9.0, n)
    actions = rng.uniform(-3.0, 3.0, (n, 1))
    return np.stack([theta, theta_dot], -1).astype(np.float32), actions.astype(np.float32)


def test_constants_are_gymnasiums(env):
    real = env.unwrapped
    assert (pendulum.GRAVITY, pendulum.MASS, pendulum.LENGTH, pendulum.DT) == (real.g, real.m, real.l, real.dt)
    assert (pendulum.MAX_TORQUE, pendulum.MAX_SPEED) == (real.max_torque, real.max_speed)
    assert pendulum.EPISODE_STEPS == env.spec.max_episode_steps
    assert env.observation_space.shape == (pendulum.OBS_DIM,)
    assert env.action_space.shape == (pendulum.ACTION_DIM,)


def test_one_step_matches_gymnasium_on_random_states_and_actions(env):
    states, actions = _random_states_and_actions(500, seed=1)
    next_states, rewards = jax.jit(pendulum.step)(jnp.asarray(states), jnp.asarray(actions))
    observations = pendulum.observe(next_states)
    for i in range(len(states)):
        real_next, real_reward, real_obs = _real_step(env, states[i], actions[i])
        np.testing.assert_allclose(next_states[i], real_next, rtol=STEP_TOL, atol=STEP_TOL, err_msg=f"state {i}")
        np.testing.assert_allclose(rewards[i], real_reward, rtol=STEP_TOL, atol=STEP_TOL, err_msg=f"reward {i}")
        np.testing.assert_allclose(observations[i], real_obs, rtol=STEP_TOL, atol=STEP_TOL, err_msg=f"obs {i}")


def test_rollout_matches_gymnasium_for_twenty_steps(env):
    rng = np.random.default_rng(2)
    for episode in range(5):
        obs, _ = env.reset(seed=100 + episode)
        state = jnp.asarray(env.unwrapped.state, jnp.float32)
        np.testing.assert_allclose(pendulum.observe(state), obs, atol=1e-6)
        for t in range(20):
            action = rng.uniform(-2.0, 2.0, 1).astype(np.float32)
            obs, reward, *_ = env.step(action)
            state, model_reward = pendulum.step(state, jnp.asarray(action))
            np.testing.assert_allclose(pendulum.observe(state), obs, atol=ROLLOUT_TOL, err_msg=f"{episode}, {t}")
            np.testing.assert_allclose(model_reward, reward, atol=ROLLOUT_TOL, rtol=ROLLOUT_TOL)


def test_reset_states_are_uniform_on_gymnasiums_box():
    from scipy import stats

    states = np.asarray(pendulum.reset_states(jax.random.key(0), 20_000))
    assert states.shape == (20_000, 2) and states.dtype == np.float32
    for column, high in ((0, np.pi), (1, 1.0)):
        x = states[:, column]
        assert x.min() >= -high and x.max() <= high
        # Kolmogorov-Smirnov against U(-high, high): a wrong range or shape gives p ~ 0.
        assert stats.kstest(x, stats.uniform(-high, 2 * high).cdf).pvalue > 1e-3
    assert abs(np.corrcoef(states.T)[0, 1]) < 0.05  # independent coordinates


def test_gradients_match_finite_differences_away_from_the_clips():
    # Inside the torque and speed limits the step is smooth; check_grads compares reverse- and
    # forward-mode derivatives with central differences (float32: a loose tolerance).
    state = jnp.asarray([0.7, -1.3])
    action = jnp.asarray([0.4])
    check_grads(
        lambda s, a: pendulum.step(s, a)[0], (state, action), order=1, modes=("rev", "fwd"), atol=1e-2, rtol=1e-2
    )
    check_grads(lambda s, a: pendulum.step(s, a)[1], (state, action), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)


def test_a_clipped_torque_passes_no_gradient():
    grad = jax.grad(lambda a: pendulum.step(jnp.asarray([0.5, 0.0]), a)[0][1])(jnp.asarray([2.5]))
    assert float(grad[0]) == 0.0


@pytest.mark.parametrize(
    ("state", "action", "named"),
    [
        (jnp.zeros((4, 3)), jnp.zeros((4, 1)), "`state`"),
        (jnp.zeros((4, 2)), jnp.zeros((4, 2)), "`action`"),
        (jnp.zeros((4, 2)), jnp.zeros((3, 1)), "`action`"),
        (jnp.zeros((4, 2), jnp.int32), jnp.zeros((4, 1)), "floating point"),
    ],
)
def test_bad_shapes_are_named(state, action, named):
    with pytest.raises(ValueError, match=named):
        pendulum.step(state, action)
