"""Every jitted entry point lowers for GPU and TPU on this CPU-only machine (`jax.export`).

`jax.export(fn, platforms=("cuda", "tpu"))` traces and lowers to StableHLO for those backends without
having them, so a change that breaks accelerator lowering (an op with no GPU/TPU rule, a CPU-only
custom call, a host callback) fails here. The check: the export succeeds for both platforms and the
module holds no custom call other than the sharding annotations jax itself emits.
"""

import json
import re
import subprocess
import sys
import textwrap

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import export

import dreamer_actor as da
from dreamer_actor.agent import run as agent_run
from dreamer_actor.agent import train as agent_train
from dreamer_actor.agent import world_model as wm

PLATFORMS = ("cuda", "tpu")
# Emitted by jax for sharding annotations; they carry no computation.
SHARDING_CALLS = {"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"}


def custom_calls(exported: export.Exported) -> set[str]:
    return set(re.findall(r"stablehlo\.custom_call @(\w+)", exported.mlir_module()))


def lowers(fn, *args, **static) -> export.Exported:
    exported = export.export(fn if hasattr(fn, "lower") else jax.jit(fn), platforms=PLATFORMS)(*args, **static)
    assert exported.platforms == PLATFORMS
    assert custom_calls(exported) <= SHARDING_CALLS, custom_calls(exported)
    return exported


@pytest.fixture(scope="module")
def actor():
    config = da.ActorConfig.create(low=[-2.0, 0.0], high=[3.0, 1.0], layers=2, units=16)
    hidden, stoch = jnp.zeros((3, 4, 12)), jnp.zeros((3, 4, 4, 5))  # [T, B, H], [T, B, S, C]
    params = da.Actor.from_config(config).init(jax.random.key(0), hidden, stoch)
    return config, params, hidden, stoch


@pytest.mark.parametrize("training", [False, True])
def test_acting_lowers_for_gpu_and_tpu(actor, training):
    config, params, hidden, stoch = actor
    lowers(
        lambda p, h, z, k: da.act(p, config, h, z, k, training=training), params, hidden[0], stoch[0], jax.random.key(1)
    )


def test_the_actor_training_step_lowers_for_gpu_and_tpu(actor):
    config, params, hidden, stoch = actor
    optimizer = optax.adam(1e-3)
    step = da.make_actor_train_step(config, optimizer)
    lowers(step, params, optimizer.init(params), hidden, stoch, jnp.ones((3, 4)), jax.random.key(1))


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_the_agents_update_and_policy_step_lower_for_gpu_and_tpu(env_id):
    run = agent_run.RunConfig.from_flags(
        env=env_id, deter=16, stoch=4, classes=4, units=16, batch=2, length=4, horizon=3
    )
    env = gym.make(env_id)
    actor_config, wm_config = run.model_configs(env)
    config = run.agent
    state = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, config)
    b, length, obs_dim, action_dim = config.batch, config.length, env.observation_space.shape[0], wm_config.action_dim
    batch = {
        "obs": np.zeros((b, length, obs_dim), np.float32), "action": np.zeros((b, length, action_dim), np.float32),
        "reward": np.zeros((b, length), np.float32), "is_first": np.zeros((b, length), bool),
        "terminated": np.zeros((b, length), bool),
    }  # fmt: skip
    lowers(agent_train.make_update(wm_config, actor_config, config), state, batch)
    policy_step = agent_train.make_policy_step(wm_config, actor_config)
    latent = wm.initial_latent(wm_config, (3,))
    args = (state.wm_params, state.actor_params, latent, jnp.zeros((3, action_dim)), jnp.zeros((3, obs_dim)),
            jnp.ones(3, bool), jax.random.key(2), 7)  # fmt: skip
    for deterministic in (False, True):
        lowers(policy_step, *args, deterministic=deterministic)


_MESH_SCRIPT = textwrap.dedent(
    """
    import json, re
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax import export
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import dreamer_actor as da

    assert jax.device_count() == 8, jax.devices()
    config = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=2, layers=2, units=16)
    T, B = 3, 16
    hidden, stoch = jnp.zeros((T, B, 12)), jnp.zeros((T, B, 4, 5))
    params = da.Actor.from_config(config).init(jax.random.key(0), hidden, stoch)
    optimizer = optax.adam(1e-3)
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    data, replicated = NamedSharding(mesh, P(None, "batch")), NamedSharding(mesh, P())
    step = jax.jit(
        da.make_actor_train_step(config, optimizer),
        in_shardings=(replicated, replicated, data, data, data, replicated),
        out_shardings=(replicated, replicated, replicated),
    )
    exported = export.export(step, platforms=("cuda", "tpu"))(
        params, optimizer.init(params), hidden, stoch, jnp.ones((T, B)), jax.random.key(1)
    )
    text = exported.mlir_module()
    print(json.dumps({
        "platforms": list(exported.platforms), "nr_devices": exported.nr_devices,
        "custom_calls": sorted(set(re.findall(r"stablehlo\\.custom_call @(\\w+)", text))),
        # Shardy annotations on @main's arguments: which are split along the mesh's "batch" axis.
        "main": next(line for line in text.splitlines() if "func.func public @main" in line),
    }))
    """
)


def test_the_sharded_actor_training_step_lowers_for_gpu_and_tpu_on_8_devices(host_devices_env):
    env = host_devices_env(8)
    done = subprocess.run([sys.executable, "-c", _MESH_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["platforms"] == list(PLATFORMS)
    assert result["nr_devices"] == 8
    assert set(result["custom_calls"]) <= SHARDING_CALLS, result["custom_calls"]
    # hidden, stoch and advantage (and only they) stay split along B over the mesh in the exported module.
    assert result["main"].count('{"batch"}') == 3, result["main"]
