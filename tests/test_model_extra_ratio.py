"""`--model-extra-ratio`: world-model-only updates between the full ones.

The loop's count of them and a resume bit for bit are in tests/test_agent_resume.py."""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from dreamer_actor.agent import run as agent_run
from dreamer_actor.agent import train as agent_train

TINY = dict(env="Pendulum-v1", deter=16, units=16, stoch=4, classes=4, layers=1, batch=4, length=8, progress=False)


def _setup():
    run = agent_run.RunConfig.from_flags(**TINY)
    actor_config, wm_config = run.model_configs(gym.make("Pendulum-v1"))
    state = agent_train.init_agent(jax.random.key(3), wm_config, actor_config, run.agent)
    rng = np.random.default_rng(0)
    batch = {
        "obs": rng.normal(size=(4, 8, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, (4, 8, 1)).astype(np.float32),
        "reward": rng.normal(size=(4, 8)).astype(np.float32),
        "is_first": np.eye(8, dtype=bool)[np.zeros(4, int)],
        "terminated": np.zeros((4, 8), bool),
    }  # fmt: skip
    return run, actor_config, wm_config, state, batch


def _leaves(state):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree.leaves_with_path(
        state.replace(key=jax.random.key_data(state.key)))}  # fmt: skip


def test_model_step_is_the_full_updates_world_model_step_and_nothing_else():
    run, actor_config, wm_config, state, batch = _setup()
    before = _leaves(state)
    full, _, _ = agent_train.make_update(wm_config, actor_config, run.agent)(jax.tree.map(jnp.copy, state), batch)
    alone, metrics = agent_train.make_model_update(wm_config, run.agent)(jax.tree.map(jnp.copy, state), batch)
    full, alone = _leaves(full), _leaves(alone)
    assert float(metrics["skipped"]) == 0.0
    moved = [p for p in alone if p.startswith(".wm_params") and not np.array_equal(alone[p], before[p])]
    assert len(moved) > len([p for p in alone if p.startswith(".wm_params")]) // 2  # it is a step
    for path, value in alone.items():
        if path.startswith((".wm_params", ".wm_opt", ".key")):
            # The same world-model step as the full update's (same key), to float tolerance of two compilations.
            np.testing.assert_allclose(value, full[path], rtol=1e-5, atol=1e-6, err_msg=path)
        else:  # actor, critic, slow critic, normalizer and the update count untouched
            np.testing.assert_array_equal(value, before[path], err_msg=path)


def test_a_non_finite_world_model_step_is_skipped():
    run, _, wm_config, state, batch = _setup()
    before = _leaves(state)
    poisoned = {**batch, "obs": np.full_like(batch["obs"], np.nan)}
    new, metrics = agent_train.make_model_update(wm_config, run.agent)(jax.tree.map(jnp.copy, state), poisoned)
    assert float(metrics["skipped"]) == 1.0
    after = _leaves(new)
    for path, value in after.items():
        if path != ".key":
            np.testing.assert_array_equal(value, before[path], err_msg=path)
    assert not np.array_equal(after[".key"], before[".key"])
