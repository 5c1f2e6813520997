"""The envs a run steps: `make_env` (any gymnasium id, DeepMind Control through shimmy, flat
observations, an action repeat), and `Envs`, N copies stepped together whose every action batch
is kept so that a run can be resumed.

`make_env(env_id, action_repeat)`:

* `dm_control/<domain>-<task>-v0` (e.g. `dm_control/cartpole-swingup-v0`) is registered from
  the `shimmy` package (`pip install "dreamer_actor[dmc]"`), with `MUJOCO_GL=disable` unless you
  set it: no frame is ever rendered.
* A `Dict` observation of 1-D (or scalar) Boxes is flattened by gymnasium's `FlattenObservation`
  in the Dict's key order, which gymnasium sorts: `cartpole-swingup`'s `{position [3], velocity
  [2]}` becomes `[position..., velocity...]` (5). Pixels (a Box of 2 or more dims) and a nested
  Dict are refused, naming the key.
* `action_repeat = k > 1` sends each action `k` times, sums the rewards, stops early at an
  episode's end, and reports the frames it stepped in `info["frames"]` (official DreamerV3's DMC
  scores use 2; their x-axis is frames).

`Envs(env_id, num_envs, mode, seed, action_repeat)` holds `num_envs` such envs in a gymnasium
vector env (`"sync"`: in this process; `"async"`: one worker process per copy, started with
`spawn`, so an env registered only in the parent process is not found there) with autoreset
disabled: an episode that ends is reset by `step` itself, at once, so each copy's stream is
exactly what one env driven by hand gives (the terminal observation, then the reset observation).

Seeding: `Envs.reset()` seeds copy `i` with `seed + i` (gymnasium's rule); every later reset is
unseeded and continues that copy's own generator. So the env side of a run is a function of the
seed and the actions sent, and `fast_forward(actions)` rebuilds it exactly: a resumed run re-steps
fresh copies with the recorded actions instead of pickling env internals, which works for every
env that is deterministic given its seed and actions (gymnasium's and dm_control's are; a resume
checks that it reached the observations it had).
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

VECTOR_MODES = ("sync", "async")


class Step(NamedTuple):
    """One step of all copies (`N` copies).

    Attributes:
      obs: `[N, O]` observation reached (for a copy whose episode ended: its last observation).
      reward: `[N]` float64; terminated, truncated: `[N]` bool.
      reset_obs: `[N, O]` the observations after the copies that ended were reset (the others
        unchanged), or None when no episode ended.
      frames: `[N]` frames each copy stepped (the action repeat, fewer where an episode ended).
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    reset_obs: np.ndarray | None
    frames: np.ndarray


def _check_observation_space(space: Any, env_id: str) -> None:
    """A 1-D Box, or a Dict of Boxes of at most 1 dim; a clear error naming what is not."""
    from gymnasium import spaces

    where = f"dreamer_actor.agent: {env_id}'s observation space"
    if isinstance(space, spaces.Box):
        if len(space.shape) != 1:
            raise TypeError(f"{where} is a Box of shape {space.shape} (pixels?); expected a 1-D Box or a Dict of them.")
        return
    if not isinstance(space, spaces.Dict):
        raise TypeError(f"{where} is {space!r}; expected a 1-D Box or a Dict of 1-D Boxes.")
    for key, sub in space.spaces.items():
        if isinstance(sub, spaces.Dict):
            raise TypeError(f"{where} has a nested Dict under {key!r}; expected a Dict of 1-D Boxes.")
        if not isinstance(sub, spaces.Box) or len(sub.shape) > 1:
            raise TypeError(
                f"{where} has {key!r}: {sub!r} (pixels?); expected a Dict of 1-D (or scalar) Boxes to flatten."
            )


def make_env(env_id: str, action_repeat: int = 1) -> Any:
    """One gymnasium env as a run sees it (see the module docstring): flat observations, the action repeat."""
    if env_id.startswith("dm_control/"):
        os.environ.setdefault("MUJOCO_GL", "disable")  # never render (dm_control would pick an OpenGL backend)
        try:
            import shimmy
        except ImportError as error:
            raise ImportError(
                f"dreamer_actor.agent: {env_id} needs the shimmy and dm_control packages: "
                'pip install "dreamer_actor[dmc]".'
            ) from error
        gym.register_envs(shimmy)
    env = gym.make(env_id)
    _check_observation_space(env.observation_space, env_id)
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = gym.wrappers.FlattenObservation(env)
    if action_repeat > 1:
        env = ActionRepeat(env, action_repeat)
    return env


class ActionRepeat(gym.Wrapper):
    """Sends each action `repeat` times, sums the rewards, stops at an episode's end; `info["frames"]`."""

    def __init__(self, env: Any, repeat: int):
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        total, frames = 0.0, 0
        while frames < self.repeat:
            obs, reward, terminated, truncated, info = self.env.step(action)
            total, frames = total + float(reward), frames + 1
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, {**info, "frames": frames}


def make_vector_env(env_id: str, num_envs: int, mode: str, action_repeat: int = 1) -> Any:
    """`num_envs` copies of `make_env(env_id, action_repeat)` in a gymnasium vector env, autoreset disabled."""
    from gymnasium.vector import AutoresetMode

    fns = [functools.partial(make_env, env_id, action_repeat)] * num_envs
    if mode == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)
    # JAX's threads make fork unsafe: the workers start fresh interpreters.
    return gym.vector.AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED, context="spawn")


class Envs:
    """`num_envs` copies of `env_id` (see the module docstring); `log` holds every action batch sent.

    Args:
      env_id: a gymnasium id.
      num_envs: `N >= 1`.
      mode: `"sync"` or `"async"`.
      seed: copy `i` is first reset with `seed + i`.
      action_repeat: see `make_env`.
    """

    def __init__(self, env_id: str, num_envs: int, mode: str, seed: int, action_repeat: int = 1):
        self.vec = make_vector_env(env_id, num_envs, mode, action_repeat)
        self.num_envs, self.seed = num_envs, seed
        self.single_observation_space = self.vec.single_observation_space
        self.single_action_space = self.vec.single_action_space
        self.log: list[np.ndarray] = []

    def reset(self) -> np.ndarray:
        """`[N, O]` first observations (copy `i` seeded `seed + i`); clears the action log."""
        self.log = []
        return np.asarray(self.vec.reset(seed=self.seed)[0])

    def step(self, actions: np.ndarray) -> Step:
        """Steps every copy with its row of `actions` (`[N, ...]`, the env's dtype) and resets those that end."""
        actions = np.asarray(actions)
        self.log.append(actions.copy())
        obs, reward, terminated, truncated, info = self.vec.step(actions)
        obs = np.asarray(obs).copy()
        frames = np.asarray(info["frames"], np.int64) if "frames" in info else np.ones(self.num_envs, np.int64)
        done = np.asarray(terminated) | np.asarray(truncated)
        reset_obs = None
        if done.any():
            reset_obs = np.asarray(self.vec.reset(options={"reset_mask": done})[0]).copy()
        reward = np.asarray(reward, np.float64)
        return Step(obs, reward, np.asarray(terminated), np.asarray(truncated), reset_obs, frames)

    def fast_forward(self, log: np.ndarray) -> np.ndarray:
        """Resets, then re-sends every action batch of `log` (`[T, N, ...]`); returns the current `[N, O]`."""
        obs = self.reset()
        for actions in log:
            step = self.step(actions)
            obs = step.obs if step.reset_obs is None else step.reset_obs
        return obs

    def close(self) -> None:
        self.vec.close()
