"""A trained agent as a policy with its own latent state, and `load(DIR)` for a finished run.

```python
import gymnasium as gym
from dreamer_actor.agent import load

policy = load("runs/pendulum")             # deterministic=True by default; sampled with deterministic=False
env = gym.make("Pendulum-v1")
obs, _ = env.reset(seed=0)
policy.reset()                             # new episode: the RSSM state starts from zeros
done, total = False, 0.0
while not done:
    obs, reward, terminated, truncated, _ = env.step(policy(obs))
    total += reward
    done = terminated or truncated
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

import dreamer_actor as da
from dreamer_actor.agent import spaces
from dreamer_actor.agent import train as agent_train
from dreamer_actor.agent import world_model as wm

WORLD_MODEL_FILE = "world_model.msgpack"
AGENT_FILE = "agent.json"
ACTOR_DIR = "actor"


class Policy:
    """Acts on raw observations of one environment, filtering them through the world model.

    Each call updates the posterior latent `(h, z)` with the observation (resetting it on the
    first call after `reset()`) and returns the actor's action for the environment: a
    `[A]` float array inside the Box, or an int for a Discrete space.

    Args:
      wm_params, actor_params: trained variables.
      wm_config: `WorldModelConfig`; actor_config: `da.ActorConfig`.
      deterministic: the actor's mode action (True) or a sample.
      seed: seed of the latent and action samples.
      discrete_start: `space.start` of a Discrete action space (None for a Box).
      action_dtype: the Box's dtype; an integer Box gets the action rounded and clipped to its bounds.
    """

    def __init__(
        self,
        wm_params: Any,
        actor_params: Any,
        wm_config: wm.WorldModelConfig,
        actor_config: da.ActorConfig,
        *,
        deterministic: bool = True,
        seed: int = 0,
        discrete_start: int | None = None,
        action_dtype: str = "float32",
    ):
        self.wm_params, self.actor_params = wm_params, actor_params
        self.wm_config, self.actor_config = wm_config, actor_config
        self.deterministic = deterministic
        self.discrete_start = discrete_start
        self.action_dtype = np.dtype(action_dtype)
        self._step = agent_train.make_policy_step(wm_config, actor_config)
        self._key = jax.random.key(seed)
        self._counter = 0
        self.reset()

    def reset(self) -> None:
        """Starts a new episode: the next observation resets the latent state."""
        self.latent = wm.initial_latent(self.wm_config, (1,))
        self.prev_action = jnp.zeros((1, spaces.model_action_dim(self.actor_config)))
        self.is_first = True

    def __call__(self, obs: Any) -> Any:
        """The environment action for observation `obs [O]`."""
        if isinstance(obs, dict):
            raise ValueError(
                "Policy: `obs` is a dict; expected the flat observation of dreamer_actor.agent.make_env(env_id, "
                "action_repeat), the env as the agent was trained on it (Dict observations flattened in key order)."
            )
        obs = np.asarray(obs, np.float32)
        if obs.shape != (self.wm_config.obs_dim,):
            raise ValueError(
                f"Policy: `obs` must have shape ({self.wm_config.obs_dim},) (the env this agent was trained on), "
                f"got {obs.shape}."
            )
        self.latent, action, self.prev_action = self._step(
            self.wm_params,
            self.actor_params,
            self.latent,
            self.prev_action,
            jnp.asarray(obs)[None],
            jnp.asarray([self.is_first]),
            self._key,
            self._counter,
            deterministic=self.deterministic,
        )
        self.is_first = False
        self._counter += 1
        action = np.asarray(action[0])
        if self.discrete_start is not None:
            return int(np.argmax(action)) + self.discrete_start
        return spaces.box_action(self.actor_config, action, self.action_dtype)

    policy = __call__


def save_agent(directory: str | pathlib.Path, state: agent_train.AgentState, meta: dict[str, Any]) -> None:
    """Writes `DIR/actor/` (`da.save_checkpoint`), `DIR/world_model.msgpack` (flax serialization of the
    world model and critic variables) and, last, `DIR/agent.json` (`meta`: configs and run settings, and
    the world model file's size and SHA-256, checked by `load`). Each file is replaced atomically."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    actor_config = da.ActorConfig.from_dict(meta["actor_config"])
    da.save_checkpoint(
        directory / ACTOR_DIR,
        params=state.actor_params,
        config=actor_config,
        normalizer_state=state.normalizer,
        step=int(state.step),
        extra={"env": meta.get("env"), "seed": meta.get("seed")},
        overwrite=True,
    )
    blob = flax.serialization.to_bytes({"world_model": state.wm_params, "critic": state.critic_params})
    _replace(directory / WORLD_MODEL_FILE, blob)
    meta = {**meta, "world_model_file": {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}}
    _replace(directory / AGENT_FILE, json.dumps(meta, indent=2).encode())


def _replace(path: pathlib.Path, data: bytes) -> None:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _specs(tree: Any) -> dict[str, tuple]:
    return {
        jax.tree_util.keystr(k): (np.shape(v), str(np.asarray(v).dtype)) for k, v in jax.tree.leaves_with_path(tree)
    }


def _read_meta(path: pathlib.Path) -> dict[str, Any]:
    fn = "dreamer_actor.agent.load"
    try:
        meta = json.loads(path.read_text())
        for key in ("world_model_config", "actor_config", "agent_config"):
            meta[key]
        wm.WorldModelConfig.from_dict(meta["world_model_config"])
        agent_train.AgentConfig.from_dict(meta["agent_config"])
        da.ActorConfig.from_dict(meta["actor_config"])
    except (ValueError, KeyError, TypeError) as error:
        what = f"missing {error}" if isinstance(error, KeyError) else str(error).splitlines()[0]
        raise ValueError(f"{fn}: {path} is not a readable agent.json of this agent ({what}).") from error
    return meta


def load(directory: str | pathlib.Path, *, deterministic: bool = True, seed: int = 0) -> Policy:
    """Loads a run (`python -m dreamer_actor.agent --out DIR`) as a `Policy`.

    A finished run is read from its `agent.json`, `world_model.msgpack` and `actor/`; a run that
    was stopped before its end from its latest checkpoint `DIR/resume/`. Every file is checked
    (size and SHA-256, configs, every array's shape and dtype) before it is used.

    Args:
      directory: the run's `--out` folder.
      deterministic: act with the mode (True) or sample the actor.
      seed: seed of the policy's samples.

    Raises:
      FileNotFoundError: `directory` holds neither a finished run nor a run checkpoint.
      ValueError: a damaged, truncated or foreign file, naming it.
    """
    from dreamer_actor.agent import checkpoint as run_checkpoint

    fn = "dreamer_actor.agent.load"
    directory = pathlib.Path(directory)
    meta_path = directory / AGENT_FILE
    if not meta_path.exists():
        if run_checkpoint.exists(directory):
            return _load_checkpoint(directory, deterministic=deterministic, seed=seed)
        raise FileNotFoundError(f"{fn}: {meta_path} not found and no run checkpoint; is {directory} a run folder?")
    meta = _read_meta(meta_path)
    wm_config = wm.WorldModelConfig.from_dict(meta["world_model_config"])
    actor_config = da.ActorConfig.from_dict(meta["actor_config"])
    checkpoint = da.restore_checkpoint(directory / ACTOR_DIR, config=actor_config)
    agent_config = agent_train.AgentConfig.from_dict(meta["agent_config"])
    template = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, agent_config)
    like = {"world_model": template.wm_params, "critic": template.critic_params}
    path = directory / WORLD_MODEL_FILE
    if not path.is_file():
        raise ValueError(f"{fn}: {path} is missing.")
    blob = path.read_bytes()
    expected = meta.get("world_model_file")
    if expected is not None and len(blob) != expected["size"]:
        raise ValueError(f"{fn}: {path} has {len(blob)} bytes, expected {expected['size']} (truncated?).")
    if expected is not None and hashlib.sha256(blob).hexdigest() != expected["sha256"]:
        raise ValueError(f"{fn}: {path} is corrupted or from another run (its SHA-256 differs from {meta_path}'s).")
    try:
        raw = flax.serialization.msgpack_restore(blob)
    except Exception as error:  # msgpack's own exception types
        raise ValueError(f"{fn}: {path} could not be read ({error}).") from error
    got, want = _specs(raw), _specs(flax.serialization.to_state_dict(like))
    if got != want:
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        raise ValueError(
            f"{fn}: {path} does not fit {meta_path}'s world model (another run's file?): "
            + "; ".join(f"{k}: {got.get(k)} vs expected {want.get(k)}" for k in diff[:5])
        )
    blob = flax.serialization.from_state_dict(like, raw)
    return Policy(
        blob["world_model"],
        checkpoint.params,
        wm_config,
        actor_config,
        deterministic=deterministic,
        seed=seed,
        discrete_start=meta.get("discrete_start"),
        action_dtype=meta.get("action_dtype", "float32"),
    )


def _load_checkpoint(directory: pathlib.Path, *, deterministic: bool, seed: int) -> Policy:
    """The policy of the latest run checkpoint in `directory` (a run stopped before its end)."""
    from dreamer_actor.agent import run as agent_run

    run = agent_run.stored_config(directory)
    envs = agent_run.envs_lib.Envs(run.env, 1, "sync", run.seed, run.action_repeat)
    try:
        loop = agent_run._Loop(dataclasses.replace(run), envs, *run.model_configs(envs))
        loop.restore_params(directory)
        meta = agent_run._agent_meta(run, loop)
    finally:
        envs.close()
    return Policy(
        loop.state.wm_params,
        loop.state.actor_params,
        loop.wm_config,
        loop.actor_config,
        deterministic=deterministic,
        seed=seed,
        discrete_start=meta["discrete_start"],
        action_dtype=meta["action_dtype"],
    )
