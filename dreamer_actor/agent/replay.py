"""Fixed-capacity replay of real transitions (NumPy, host side) with uniform sequence sampling.

Each stored step `t` is one row (see `world_model`'s time convention):

    obs        [O]  x_t, the observation reached
    action     [A]  a_{t-1}, the world-model action that led to x_t (zeros at an episode start)
    reward     []   r_t of that transition (0 at an episode start)
    is_first   []   True for the first observation of an episode (after `env.reset`)
    terminated []   True if x_t is terminal (gymnasium `terminated`; a truncation stays False)

The buffer is a ring: once `capacity` rows are stored, each new row overwrites the oldest.
`sample(B, L)` draws `B` windows of `L` consecutive rows uniformly among all windows that lie
entirely in the stored history (a window never spans the seam between the newest and the
oldest row). Windows may cross episode boundaries; `is_first` marks where the RSSM resets.
"""

from __future__ import annotations

import numpy as np

FIELDS = ("obs", "action", "reward", "is_first", "terminated")


class Replay:
    """Ring buffer of steps.

    Args:
      capacity: maximum number of stored steps.
      obs_dim: `O`.
      action_dim: `A` (the width the world model reads).
      seed: seed of the sampling generator.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, seed: int = 0):
        if not (isinstance(capacity, int) and capacity >= 1):
            raise ValueError(f"Replay: `capacity` must be a positive int, got {capacity!r}.")
        self.capacity = capacity
        self.data = {
            "obs": np.zeros((capacity, obs_dim), np.float32),
            "action": np.zeros((capacity, action_dim), np.float32),
            "reward": np.zeros((capacity,), np.float32),
            "is_first": np.zeros((capacity,), bool),
            "terminated": np.zeros((capacity,), bool),
        }
        self.pos = 0  # next row to write
        self.size = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward, is_first, terminated) -> None:
        """Appends one step (overwrites the oldest once full)."""
        row = self.pos
        self.data["obs"][row] = obs
        self.data["action"][row] = action
        self.data["reward"][row] = reward
        self.data["is_first"][row] = is_first
        self.data["terminated"][row] = terminated
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def num_windows(self, length: int) -> int:
        """How many distinct length-`L` windows can be sampled now."""
        return max(0, self.size - length + 1)

    def window_starts(self, batch: int, length: int) -> np.ndarray:
        """`[B]` buffer rows where the sampled windows start (uniform over `num_windows(length)`)."""
        count = self.num_windows(length)
        if count == 0:
            raise ValueError(f"Replay.sample: {self.size} stored steps, fewer than the sequence length {length}.")
        offsets = self.rng.integers(0, count, size=batch)  # from the oldest stored row
        oldest = self.pos if self.size == self.capacity else 0
        return (oldest + offsets) % self.capacity

    def sample(self, batch: int, length: int) -> dict[str, np.ndarray]:
        """`B` uniformly drawn windows: a dict of `[B, L, ...]` arrays with the fields of `FIELDS`."""
        starts = self.window_starts(batch, length)
        rows = (starts[:, None] + np.arange(length)[None, :]) % self.capacity
        return {name: array[rows] for name, array in self.data.items()}
