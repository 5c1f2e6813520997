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

With `latents=(D, S)` (the agent's `--replay-context`, official DreamerV3's `replay_context: 1`)
each row also holds an RSSM latent, written by the caller: first the acting posterior, then the
posterior of the latest update that replayed the row. `sample(B, L, context=True)` then draws
windows of `L + 1` rows and returns rows `1 .. L` with row 0's latent as the scan's start:

    h          [D]  deterministic state (float32)
    z          [S]  class index of each categorical latent (the one-hot sample, stored compactly)
"""

from __future__ import annotations

import collections

import numpy as np

FIELDS = ("obs", "action", "reward", "is_first", "terminated")


class Replay:
    """Ring buffer of steps.

    Args:
      capacity: maximum number of stored steps.
      obs_dim: `O`.
      action_dim: `A` (the width the world model reads).
      seed: seed of the sampling generator.
      latents: `(D, S)` to store a latent per row (see the module docstring); None stores none.
    """

    def __init__(
        self, capacity: int, obs_dim: int, action_dim: int, seed: int = 0, latents: tuple[int, int] | None = None
    ):
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
        if latents is not None:
            deter, stoch = latents
            self.data["h"] = np.zeros((capacity, deter), np.float32)
            self.data["z"] = np.zeros((capacity, stoch), np.uint8)
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

    @property
    def newest(self) -> int:
        """The row of the last `add`."""
        return (self.pos - 1) % self.capacity

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


class ReplayStreams:
    """`N` rings of `Replay`, one per env copy, sampled as one: windows never mix two copies' streams.

    `sample(B, L)` draws each of the `B` windows uniformly among *all* windows of all streams
    (stream `i` is chosen with probability `num_windows_i / total`), with one generator; with
    one stream it draws exactly what `Replay.sample` draws.

    With `online=W` (official DreamerV3's `replay.online: True`), each stream's newest `W` rows are
    queued as a window every `W` rows it receives, and every sample first takes the queued windows,
    oldest first, then draws the rest of its `B` uniformly: each fresh non-overlapping window is
    replayed at least once soon after it arrives. `W` is the window length the sampler draws (`L`,
    or `L + 1` with context).

    Args:
      streams: `N`.
      capacity: steps per stream.
      obs_dim, action_dim, seed, latents: as `Replay`.
      online: `W`, the window length of the online queue; None keeps no queue.
    """

    def __init__(
        self,
        streams: int,
        capacity: int,
        obs_dim: int,
        action_dim: int,
        seed: int = 0,
        latents: tuple[int, int] | None = None,
        online: int | None = None,
    ):
        if not (isinstance(streams, int) and streams >= 1):
            raise ValueError(f"ReplayStreams: `streams` must be a positive int, got {streams!r}.")
        if online is not None and not (isinstance(online, int) and 1 <= online <= capacity):
            raise ValueError(
                f"ReplayStreams: `online` must be None or an int in [1, capacity {capacity}], got {online!r}."
            )
        self.streams = [Replay(capacity, obs_dim, action_dim, latents=latents) for _ in range(streams)]
        self.rng = np.random.default_rng(seed)
        self.latents = latents
        self.online = online
        self.adds = np.zeros(streams, np.int64)  # rows each stream has received
        self.queue: collections.deque[tuple[int, int]] = collections.deque()  # (stream, that stream's add count)

    def __len__(self) -> int:
        return sum(len(stream) for stream in self.streams)

    def add(self, stream: int, obs, action, reward, is_first, terminated) -> None:
        """Appends one step to stream `stream`."""
        self.streams[stream].add(obs, action, reward, is_first, terminated)
        self.adds[stream] += 1
        if self.online is not None and self.adds[stream] % self.online == 0:
            self.queue.append((stream, int(self.adds[stream])))
            if len(self.queue) > self._queue_slots():  # nothing samples it: keep the windows still stored
                self.queue = collections.deque(x for x in self.queue if not self._stale(*x))

    def _queue_slots(self) -> int:
        """A bound on the queue's windows that are still stored (each stream holds `capacity // W` whole ones)."""
        return len(self.streams) * (self.streams[0].capacity // self.online + 1)

    def num_windows(self, length: int) -> int:
        return sum(stream.num_windows(length) for stream in self.streams)

    def _online_windows(self, batch: int, length: int) -> list[tuple[int, np.ndarray]]:
        """Up to `B` queued windows `(stream, rows [L])`, oldest first; one the ring overwrote since is dropped."""
        if length != self.online:
            raise ValueError(
                f"ReplayStreams.sample: windows of {length} rows from a replay whose online queue holds {self.online}."
            )
        taken = []
        while self.queue and len(taken) < batch:
            i, count = self.queue.popleft()
            stream = self.streams[i]
            if self._stale(i, count):
                continue
            end = (stream.pos - (self.adds[i] - count)) % stream.capacity  # the row after the window's last
            taken.append((i, (end - length + np.arange(length)) % stream.capacity))
        return taken

    def _stale(self, stream: int, count: int) -> bool:
        """Whether the ring has overwritten the oldest row of the window queued at `stream`'s add `count`."""
        return bool(self.adds[stream] - count > self.streams[stream].capacity - self.online)

    def _windows(self, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """`(stream [B], rows [B, L])`: the online queue's windows first, the rest drawn uniformly."""
        online = self._online_windows(batch, length) if self.online is not None else []
        which, rows = self._uniform_windows(batch - len(online), length)
        if online:
            which = np.concatenate([np.array([i for i, _ in online]), which])
            rows = np.concatenate([np.stack([r for _, r in online]), rows])
        return which, rows

    def _uniform_windows(self, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """`(stream [B], rows [B, L])` of `B` uniformly drawn windows."""
        counts = np.array([stream.num_windows(length) for stream in self.streams])
        total = int(counts.sum())
        if total == 0:
            sizes = [len(s) for s in self.streams]
            raise ValueError(f"Replay.sample: no stream holds {length} steps yet (sizes {sizes}).")
        offsets = self.rng.integers(0, total, size=batch)  # over the streams' windows laid end to end
        ends = np.cumsum(counts)
        which = np.searchsorted(ends, offsets, side="right")
        rows = np.empty((batch, length), np.int64)
        for b in range(batch):
            stream = self.streams[which[b]]
            offset = offsets[b] - (ends[which[b]] - counts[which[b]])
            oldest = stream.pos if stream.size == stream.capacity else 0
            rows[b] = (oldest + offset + np.arange(length)) % stream.capacity
        return which, rows

    def _gather(self, name: str, which: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.stack([self.streams[i].data[name][r] for i, r in zip(which, rows, strict=True)])

    def sample(self, batch: int, length: int) -> dict[str, np.ndarray]:
        """`B` windows: a dict of `[B, L, ...]` arrays with the fields of `FIELDS`."""
        which, rows = self._windows(batch, length)
        return {name: self._gather(name, which, rows) for name in FIELDS}

    def sample_with_context(
        self, batch: int, length: int, classes: int
    ) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """`B` windows of `L + 1` rows; the first is the context (needs `latents`).

        Returns:
          `(batch, where)`: the `FIELDS` of rows `1 .. L` (`[B, L, ...]`) plus row 0's stored latent,
          `context_h [B, D]` and `context_z [B, S, C]` (one-hot float32, `C = classes`); `where` names
          rows `1 .. L` for `write_latents`.
        """
        if self.latents is None:
            raise ValueError("ReplayStreams.sample_with_context: this replay stores no latents (`latents=None`).")
        which, rows = self._windows(batch, length + 1)
        out = {name: self._gather(name, which, rows[:, 1:]) for name in FIELDS}
        out["context_h"] = self._gather("h", which, rows[:, 0])
        out["context_z"] = np.eye(classes, dtype=np.float32)[self._gather("z", which, rows[:, 0])]
        return out, (which, rows[:, 1:])

    def write_latents(self, where: tuple[np.ndarray, np.ndarray], h: np.ndarray, z: np.ndarray) -> None:
        """Stores `h [B, L, D]` and the one-hot `z [B, L, S, C]` at the rows `where` names."""
        which, rows = where
        for b, i in enumerate(which):
            self.streams[i].data["h"][rows[b]] = h[b]
            self.streams[i].data["z"][rows[b]] = np.argmax(z[b], -1)

    def write_newest(self, h: np.ndarray, z: np.ndarray) -> None:
        """Stores `h [N, D]` and the one-hot `z [N, S, C]` at each stream's newest row (the acting posterior)."""
        for i, stream in enumerate(self.streams):
            stream.data["h"][stream.newest] = h[i]
            stream.data["z"][stream.newest] = np.argmax(z[i], -1)

    def state_dict(self) -> dict:
        """Every stored row and position and the online queue (for a run checkpoint); not the generator's state."""
        state = {
            str(i): {**stream.data, "pos": np.int64(stream.pos), "size": np.int64(stream.size)}
            for i, stream in enumerate(self.streams)
        }
        if self.online is not None:
            # Fixed shapes (a checkpoint's template is built before it is read): one slot per stream's window.
            slots = np.full((self._queue_slots(), 2), -1, np.int64)
            slots[: len(self.queue)] = np.array(list(self.queue), np.int64).reshape(-1, 2)
            state["online"] = {"adds": self.adds.copy(), "queue": slots}
        return state

    def load_state_dict(self, state: dict) -> None:
        for i, stream in enumerate(self.streams):
            entry = state[str(i)]
            for name in stream.data:
                stream.data[name][...] = entry[name]
            stream.pos, stream.size = int(entry["pos"]), int(entry["size"])
        if self.online is not None:
            self.adds[...] = state["online"]["adds"]
            self.queue = collections.deque((int(i), int(c)) for i, c in state["online"]["queue"] if i >= 0)
