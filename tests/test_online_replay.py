"""`--online-replay` (official DreamerV3's `replay.online: True`): every `W` fresh rows of a stream form a
window that the next samples take before their uniform draws."""

import collections

import numpy as np
import pytest

from dreamer_actor.agent.replay import ReplayStreams

W, CAPACITY = 4, 10


def _add(replay, reference, stream, value):
    """Adds obs `value` to `stream` and mirrors the queue by hand: every W-th row queues the last W values."""
    replay.add(stream, [value], [0.0], 0.0, False, False)
    reference["rows"][stream].append(value)
    if len(reference["rows"][stream]) % W == 0:
        reference["queue"].append((stream, reference["rows"][stream][-W:]))


def _still_stored(reference, stream, window):
    return window[0] in reference["rows"][stream][-CAPACITY:]


def test_fresh_windows_are_replayed_first_oldest_first_then_uniform_draws():
    replay = ReplayStreams(2, CAPACITY, 1, 1, seed=0, online=W)
    reference = {"rows": {0: [], 1: []}, "queue": collections.deque()}
    rng = np.random.default_rng(1)
    value, served = 0, 0
    for _ in range(60):
        for _ in range(rng.integers(1, 7)):  # an uneven mix of the two streams' rows
            stream = int(rng.integers(0, 2))
            _add(replay, reference, stream, 1000 * stream + value)
            value += 1
        if replay.num_windows(W) == 0:
            continue
        batch = 3
        obs = replay.sample(batch, W)["obs"][..., 0].astype(int)
        want = []
        while reference["queue"] and len(want) < batch:
            stream, window = reference["queue"].popleft()
            if _still_stored(reference, stream, window):  # an overwritten window is dropped, not served
                want.append(window)
        served += len(want)
        np.testing.assert_array_equal(obs[: len(want)], np.array(want).reshape(-1, W))
        for row in obs[len(want) :]:  # the rest: some stored window of one stream, consecutive rows
            stream = int(row[0] // 1000)
            stored = reference["rows"][stream][-CAPACITY:]
            assert list(row) == stored[stored.index(row[0]) : stored.index(row[0]) + W]
    assert served > 20


def test_the_queue_resumes_from_a_checkpoint_as_it_was():
    def filled():
        replay = ReplayStreams(2, CAPACITY, 1, 1, seed=3, online=W)
        for t in range(23):
            replay.add(t % 2, [t], [0.0], 0.0, False, False)
        return replay

    a = filled()
    a.sample(1, W)
    b = ReplayStreams(2, CAPACITY, 1, 1, seed=99, online=W)
    b.load_state_dict(a.state_dict())
    b.rng.bit_generator.state = a.rng.bit_generator.state
    assert list(a.queue) == list(b.queue) and len(a.queue) > 0
    for t in range(23, 40):
        for replay in (a, b):
            replay.add(t % 2, [t], [0.0], 0.0, False, False)
        np.testing.assert_array_equal(a.sample(3, W)["obs"], b.sample(3, W)["obs"])


def test_an_unsampled_queue_keeps_only_windows_still_stored():
    replay = ReplayStreams(3, CAPACITY, 1, 1, online=W)
    for t in range(1000):
        replay.add(t % 3, [t], [0.0], 0.0, False, False)
    # Bounded by the windows a stream can still hold (a checkpoint stores the queue in fixed slots).
    assert 0 < len(replay.queue) <= 3 * (CAPACITY // W + 1)
    # What it serves is stored: each stream's last CAPACITY rows are t = 1000 - 3 CAPACITY .. 999.
    obs = replay.sample(len(replay.queue), W)["obs"][..., 0]
    assert obs.min() >= 1000 - 3 * CAPACITY and (np.diff(obs, axis=1) == 3).all()


def test_the_online_queue_needs_its_own_window_length():
    replay = ReplayStreams(1, CAPACITY, 1, 1, online=W)
    for t in range(8):
        replay.add(0, [t], [0.0], 0.0, False, False)
    with pytest.raises(ValueError, match="windows of 3 rows from a replay whose online queue holds 4"):
        replay.sample(2, 3)
    with pytest.raises(ValueError, match="`online` must be None or an int in"):
        ReplayStreams(1, CAPACITY, 1, 1, online=CAPACITY + 1)
