"""`--replay-context` (official DreamerV3's `replay_context: 1`): the replay stores a latent per row,
each replayed window starts from the latent of the row before it, and the update's posteriors are
written back."""

import dataclasses

import flax
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer_actor.agent import run as agent_run
from dreamer_actor.agent import train as agent_train
from dreamer_actor.agent import world_model as wm
from dreamer_actor.agent.replay import ReplayStreams

D, S, C = 3, 2, 4


def _filled(rows: dict[int, int], capacity: int = 12) -> ReplayStreams:
    """Streams whose row `t` of stream `i` holds obs `1000 i + t` and, as its acting latent, h = that value
    and z = classes `(t % C, (t + 1) % C)`."""
    replay = ReplayStreams(len(rows), capacity, obs_dim=1, action_dim=1, seed=7, latents=(D, S))
    for t in range(max(rows.values())):
        for i, count in rows.items():
            if t < count:
                replay.add(i, [1000 * i + t], [0.0], 0.0, t == 0, False)
        h = np.array([[1000 * i + t] * D for i in rows], np.float32)
        z = np.eye(C, dtype=np.float32)[np.array([[t % C, (t + 1) % C] for _ in rows])]
        stale = [i for i, count in rows.items() if t >= count]  # streams that stopped: keep their newest row as is
        for i in stale:
            stream = replay.streams[i]
            h[i], z[i] = stream.data["h"][stream.newest], np.eye(C, dtype=np.float32)[stream.data["z"][stream.newest]]
        replay.write_newest(h, z)
    return replay


def test_a_context_window_is_the_rows_after_a_row_whose_latent_starts_it():
    rows = {0: 20, 1: 7, 2: 12}  # stream 0 wraps, stream 1 is short, stream 2 exactly full
    replay, length = _filled(rows), 4
    batch, (which, where) = replay.sample_with_context(3_000, length, C)
    obs = batch["obs"][..., 0]
    assert obs.shape == (3_000, length) and batch["context_h"].shape == (3_000, D)
    assert batch["context_z"].shape == (3_000, S, C)
    first = obs[:, 0].astype(int)
    # Consecutive rows of one stream's stored history, the row before them included.
    np.testing.assert_array_equal(obs, first[:, None] + np.arange(length))
    stream, t = first // 1000, first % 1000
    np.testing.assert_array_equal(stream, which)
    kept_from = np.array([max(0, rows[i] - 12) for i in stream])
    assert (t - 1 >= kept_from).all() and (t + length - 1 < np.array([rows[i] for i in stream])).all()
    # The context is row t - 1's latent.
    np.testing.assert_array_equal(batch["context_h"], np.repeat((first - 1)[:, None], D, 1).astype(np.float32))
    want_z = np.stack([(t - 1) % C, t % C], -1)
    np.testing.assert_array_equal(batch["context_z"], np.eye(C, dtype=np.float32)[want_z])
    # Every window with a row before it is drawn: 8 + 3 + 8 of them (stream 0 keeps 12 rows, 1 keeps 7).
    assert len(set(first.tolist())) == replay.num_windows(length + 1) == 8 + 3 + 8
    # `where` names the rows the batch came from.
    for b in range(5):
        np.testing.assert_array_equal(replay.streams[which[b]].data["obs"][where[b], 0], obs[b])


def test_written_latents_are_what_the_next_context_reads():
    replay = _filled({0: 9})
    _, where = replay.sample_with_context(4, 3, C)
    rng = np.random.default_rng(0)
    h = rng.normal(size=(4, 3, D)).astype(np.float32)
    z = np.eye(C, dtype=np.float32)[rng.integers(0, C, size=(4, 3, S))]
    replay.write_latents(where, h, z)
    _, rows = where
    # Windows of one batch may overlap: the later window's write wins, as a loop over the batch writes them.
    want = {}
    for b in range(4):
        for j in range(3):
            want[int(rows[b, j])] = (h[b, j], z[b, j])
    for row, (want_h, want_z) in want.items():
        np.testing.assert_array_equal(replay.streams[0].data["h"][row], want_h)
        np.testing.assert_array_equal(np.eye(C)[replay.streams[0].data["z"][row]], want_z)
    # A window that starts after a written row reads it as its context.
    stream = replay.streams[0]
    row = int(rows[0, 0])
    replay.rng = np.random.default_rng(1)
    for _ in range(50):
        nxt, (_, nrows) = replay.sample_with_context(1, 2, C)
        if nrows[0, 0] == row + 1:
            np.testing.assert_array_equal(nxt["context_h"][0], stream.data["h"][row])
            break
    else:
        pytest.fail("no window after the written row in 50 draws of 8")


def test_a_replay_without_latents_refuses_a_context_sample():
    replay = ReplayStreams(1, 10, 1, 1)
    for t in range(5):
        replay.add(0, [t], [0.0], 0.0, t == 0, False)
    with pytest.raises(ValueError, match="sample_with_context: this replay stores no latents"):
        replay.sample_with_context(2, 2, C)


@pytest.fixture(scope="module")
def tiny():
    run = agent_run.RunConfig.from_flags(
        env="Pendulum-v1", deter=16, units=16, stoch=4, classes=4, layers=1, warmup=64, length=6, batch=3
    )
    actor_config, wm_config = run.model_configs(gym.make("Pendulum-v1"))
    rng = np.random.default_rng(3)
    b, length = 3, 6
    batch = {
        "obs": rng.normal(size=(b, length, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(b, length, 1)).astype(np.float32),
        "reward": rng.normal(size=(b, length)).astype(np.float32),
        "is_first": np.zeros((b, length), bool),
        "terminated": np.zeros((b, length), bool),
        "context_h": rng.normal(size=(b, 16)).astype(np.float32),
        "context_z": np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(b, 4))],
    }
    configs = {flag: dataclasses.replace(run.agent, replay_context=flag) for flag in (False, True)}
    updates = {flag: agent_train.make_update(wm_config, actor_config, c) for flag, c in configs.items()}
    return run, actor_config, wm_config, batch, configs, updates


def _update(tiny, replay_context, batch):
    _run, actor_config, wm_config, _, configs, updates = tiny
    state = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, configs[replay_context])
    wm_params = jax.tree.map(jnp.copy, state.wm_params)  # the update donates the state
    new, metrics, post = updates[replay_context](state, batch)
    return wm_params, new, metrics, post


def test_the_context_latent_is_the_world_models_start(tiny):
    wm_config, batch = tiny[2], tiny[3]
    params, _new, metrics, post = _update(tiny, True, batch)
    assert float(metrics["skipped"]) == 0.0
    # h_0 = f(h_context, z_context, a_0), by hand from the GRU step; h does not depend on the posterior's draw.
    model = wm.WorldModel(wm_config)
    want = model.apply(
        params, jnp.asarray(batch["context_h"]), jnp.asarray(batch["context_z"]), jnp.asarray(batch["action"][:, 0]),
        method=wm.WorldModel.deter_step,
    )  # fmt: skip
    np.testing.assert_allclose(post.h[:, 0], want, rtol=1e-6, atol=1e-6)
    # Without the flag the scan starts at zeros, whatever the batch carries.
    _, _, plain_metrics, plain = _update(tiny, False, batch)
    zero = model.apply(
        params, jnp.zeros((3, 16)), jnp.zeros((3, 4, 4)), jnp.asarray(batch["action"][:, 0]),
        method=wm.WorldModel.deter_step,
    )  # fmt: skip
    np.testing.assert_allclose(plain.h[:, 0], zero, rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(post.h[:, 0] - plain.h[:, 0]).max()) > 1e-3
    assert float(metrics["wm_loss"]) != float(plain_metrics["wm_loss"])


def test_an_episode_start_in_the_first_row_resets_the_context_away(tiny):
    batch = {**tiny[3], "is_first": np.eye(6, dtype=bool)[np.zeros(3, int)]}
    _, new, metrics, post = _update(tiny, True, batch)
    _, plain_new, plain_metrics, plain_post = _update(tiny, False, batch)
    assert {k: float(v) for k, v in metrics.items()} == {k: float(v) for k, v in plain_metrics.items()}
    for a, b in zip(
        jax.tree.leaves((new.wm_params, post)), jax.tree.leaves((plain_new.wm_params, plain_post)), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_a_run_with_replay_context_stores_every_observed_rows_latent(tmp_path, monkeypatch):
    """The acting posterior reaches each row the policy read; each update writes back the rows it replayed."""
    from dreamer_actor.agent import checkpoint as run_checkpoint

    writes = []
    real = ReplayStreams.write_latents

    def write_latents(self, where, h, z):
        writes.append(h.shape)
        real(self, where, h, z)

    monkeypatch.setattr(ReplayStreams, "write_latents", write_latents)

    run = agent_run.RunConfig.from_flags(
        env="CartPole-v1", steps=160, warmup=64, eval_every=160, eval_episodes=1, deter=8, units=8, stoch=2,
        classes=2, layers=1, batch=2, length=8, train_ratio=16.0, replay_context=True, out=str(tmp_path),
        save_every=80, progress=False,
    )  # fmt: skip
    curve = agent_run.train_agent(run)
    assert len(writes) == curve["updates"] > 0 and set(writes) == {(2, 8, 8)}
    blob = (tmp_path / run_checkpoint.CHECKPOINT_DIR / run_checkpoint.ARRAYS_FILE).read_bytes()
    arrays = flax.traverse_util.flatten_dict(flax.serialization.msgpack_restore(blob), sep="/")
    size = int(arrays["replay/0/size"])
    h, first = arrays["replay/0/h"][:size], arrays["replay/0/is_first"][:size]
    assert arrays["replay/0/z"].dtype == np.uint8 and arrays["replay/0/z"][:size].shape == (size, 2)
    # Rows after an episode start: the GRU moved away from zero. The newest row is not yet read by the policy.
    moved = np.any(h != 0, -1)
    assert moved[:-1][~first[:-1]].all()
