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

import json
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
    ):
        self.wm_params, self.actor_params = wm_params, actor_params
        self.wm_config, self.actor_config = wm_config, actor_config
        self.deterministic = deterministic
        self.discrete_start = discrete_start
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
        self.latent, action, self.prev_action = self._step(
            self.wm_params,
            self.actor_params,
            self.latent,
            self.prev_action,
            jnp.asarray(obs, jnp.float32)[None],
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
        return action

    policy = __call__


def save_agent(directory: str | pathlib.Path, state: agent_train.AgentState, meta: dict[str, Any]) -> None:
    """Writes `DIR/actor/` (`da.save_checkpoint`), `DIR/world_model.msgpack` (flax serialization of the
    world model and critic variables) and `DIR/agent.json` (`meta`: configs and run settings)."""
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
    (directory / WORLD_MODEL_FILE).write_bytes(blob)
    (directory / AGENT_FILE).write_text(json.dumps(meta, indent=2))


def load(directory: str | pathlib.Path, *, deterministic: bool = True, seed: int = 0) -> Policy:
    """Loads a finished run (`python -m dreamer_actor.agent --out DIR`) as a `Policy`.

    Args:
      directory: the run's `--out` folder.
      deterministic: act with the mode (True) or sample the actor.
      seed: seed of the policy's samples.

    Raises:
      FileNotFoundError: `directory` has no `agent.json` (not a finished run).
    """
    directory = pathlib.Path(directory)
    meta_path = directory / AGENT_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"dreamer_actor.agent.load: {meta_path} not found; is {directory} a finished run?")
    meta = json.loads(meta_path.read_text())
    wm_config = wm.WorldModelConfig(**meta["world_model_config"])
    actor_config = da.ActorConfig.from_dict(meta["actor_config"])
    checkpoint = da.restore_checkpoint(directory / ACTOR_DIR, config=actor_config)
    agent_config = agent_train.AgentConfig(**meta["agent_config"])
    template = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, agent_config)
    blob = flax.serialization.from_bytes(
        {"world_model": template.wm_params, "critic": template.critic_params},
        (directory / WORLD_MODEL_FILE).read_bytes(),
    )
    return Policy(
        blob["world_model"],
        checkpoint.params,
        wm_config,
        actor_config,
        deterministic=deterministic,
        seed=seed,
        discrete_start=meta.get("discrete_start"),
    )
