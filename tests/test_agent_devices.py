"""The agent's update data-parallel over 8 host CPU devices (`--devices 8`) equals the one-device update.

`XLA_FLAGS=--xla_force_host_platform_device_count=8` must be set before jax is imported, so the
sharded runs live in a subprocess.

Tolerance: each leaf of the state after one update within `TOL` of its largest entry (at least 1e-3),
with the rollout in the pre-update world model (`imagine_pre_update`). After the world model's own
step the comparison is loose by nature: its first Adam step moves each weight by about the learning
rate whatever the gradient's size, so entries whose gradient is rounding noise move either way; and
the two-hot heads at init (uniform probabilities over bins up to 4.9e8) turn a logit difference of
1e-8 into a value difference of ~0.02. So that case checks the world model only.
"""

import json
import subprocess
import sys
import textwrap

import pytest

TOL = 2e-5

_SCRIPT = textwrap.dedent(
    """
    import json, os, tempfile
    import jax, numpy as np, gymnasium as gym
    from dreamer_actor.agent import load, run as agent_run, train as agent_train

    assert jax.device_count() == 8, jax.devices()
    result = {}
    for env_id, pre_update in (("Pendulum-v1", True), ("Pendulum-v1", False), ("CartPole-v1", True)):
        run = agent_run.RunConfig.from_flags(env=env_id, deter=16, stoch=4, classes=4, units=16, batch=8, length=6,
                                  horizon=4, imagine_pre_update=pre_update)
        env = gym.make(env_id)
        actor_config, wm_config = run.model_configs(env)
        config = run.agent
        b, L, O, A = config.batch, config.length, env.observation_space.shape[0], wm_config.action_dim
        rng = np.random.default_rng(0)
        batch = {
            "obs": rng.normal(size=(b, L, O)).astype(np.float32),
            "action": rng.uniform(-1, 1, (b, L, A)).astype(np.float32),
            "reward": rng.normal(size=(b, L)).astype(np.float32),
            "is_first": np.eye(L, dtype=bool)[np.zeros(b, int)],
            "terminated": rng.uniform(size=(b, L)) < 0.05,
        }
        states, devices_used = {}, {}
        for devices in (1, 8):
            state = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, config)
            compiled = agent_train.make_update(wm_config, actor_config, config, devices=devices).lower(
                state, batch).compile()
            assert ("all-reduce" in compiled.as_text()) == (devices == 8)  # gradients summed across devices
            state, metrics, _ = compiled(state, batch)
            assert float(metrics["skipped"]) == 0.0
            devices_used[devices] = sorted({len(x.sharding.device_set) for x in jax.tree.leaves(state)})
            states[devices] = jax.tree.map(np.asarray, state.replace(key=jax.random.key_data(state.key)))
        errors = {}
        for (path, a), b1 in zip(jax.tree_util.tree_leaves_with_path(states[8]), jax.tree.leaves(states[1]),
                                 strict=True):
            errors[jax.tree_util.keystr(path)] = float(np.max(np.abs(a - b1)) / max(float(np.max(np.abs(b1))), 1e-3))
        result[f"{env_id} pre_update={pre_update}"] = {"errors": errors, "devices": devices_used}

    # A whole tiny run with --devices 8 (categorical actor, --replay-context): trains, saves, and loads back.
    with tempfile.TemporaryDirectory() as out:
        tiny = agent_run.RunConfig.from_flags(env="CartPole-v1", steps=100, warmup=40, eval_every=100, eval_episodes=1,
                                   deter=16, stoch=4, classes=4, units=16, batch=8, length=6, horizon=4,
                                   train_ratio=8.0, devices=8, replay_context=True, out=out, progress=False)
        result["updates"] = agent_run.train_agent(tiny)["updates"]
        obs, _ = gym.make("CartPole-v1").reset(seed=0)
        result["action"] = int(load(out)(obs))
    # The size of XLA's intra-op pool, which runs the devices' collectives (PJRT_NPROC: tests/conftest.py).
    result["pool_threads"] = sum(
        open(f"/proc/self/task/{t}/comm").read().strip() == "tf_XLAEigen" for t in os.listdir("/proc/self/task"))
    print(json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def sharded(host_devices_env):
    env = host_devices_env(8)
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_collectives_have_the_threads_they_may_wait_on(sharded, host_devices_env):
    # XLA's default pool here is max(cores, devices) = 8 threads, in which the update's collectives deadlocked.
    assert sharded["pool_threads"] == int(host_devices_env(8)["PJRT_NPROC"]) > 8


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["Pendulum-v1 pre_update=True", "CartPole-v1 pre_update=True", "Pendulum-v1 pre_update=False"]
)
def test_the_update_on_8_devices_equals_one_device(sharded, case):
    result = sharded[case]
    assert result["devices"] == {"1": [1], "8": [8]}  # the state comes back replicated over the 8 devices
    checked = result["errors"] if "True" in case else {k: v for k, v in result["errors"].items() if "wm_" in k}
    assert checked
    worst = max(checked, key=checked.get)
    assert checked[worst] <= TOL, (worst, checked[worst])


@pytest.mark.slow
def test_a_run_on_8_devices_trains_saves_and_loads(sharded):
    assert sharded["updates"] > 0
    assert sharded["action"] in (0, 1)


def test_devices_must_divide_the_batch_and_exist():
    from dreamer_actor.agent import run as agent_run

    with pytest.raises(ValueError, match="--devices"):
        agent_run.RunConfig.from_flags(devices=3, batch=16)
    with pytest.raises(ValueError, match="--devices"):
        agent_run.RunConfig.from_flags(devices=0)
