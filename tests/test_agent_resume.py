"""Runs you can leave alone: checkpoints of the whole run, resume after SIGKILL or SIGINT, determinism,
several env copies, skipped non-finite updates, and the bad inputs and faults that must end in a clear
error with nothing of the user's lost."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import flax.serialization
import flax.traverse_util
import gymnasium as gym
import jax
import numpy as np
import pytest

from dreamer_actor.agent import checkpoint as run_checkpoint
from dreamer_actor.agent import load
from dreamer_actor.agent import run as agent_run
from dreamer_actor.agent.replay import Replay, ReplayStreams

TINY = dict(
    env="CartPole-v1",
    steps=400,
    warmup=64,
    eval_every=200,
    eval_episodes=2,
    deter=16,
    units=16,
    stoch=4,
    classes=4,
    layers=1,
    batch=4,
    length=8,
    train_ratio=32.0,
    save_every=100,
    progress=False,
)
FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "progress"] + ["--no-progress"]


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dreamer_actor.agent", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip


def _wait_for_checkpoint(out: pathlib.Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not (out / run_checkpoint.CHECKPOINT_DIR / run_checkpoint.MANIFEST_FILE).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def _arrays(out: pathlib.Path) -> dict:
    blob = (out / run_checkpoint.CHECKPOINT_DIR / run_checkpoint.ARRAYS_FILE).read_bytes()
    return flax.traverse_util.flatten_dict(flax.serialization.msgpack_restore(blob), sep="/")


def _curve_without_clocks(out: pathlib.Path) -> dict:
    curve = json.loads((out / "curve.json").read_text())
    for key in ("wall_s", "resumed"):
        curve.pop(key, None)
    curve["config"].pop("out")
    curve["evals"] = [{k: v for k, v in e.items() if k not in ("wall_s", "eval_s")} for e in curve["evals"]]
    return curve


def _assert_same_run(a: pathlib.Path, b: pathlib.Path) -> None:
    arrays_a, arrays_b = _arrays(a), _arrays(b)
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=key)
    assert _curve_without_clocks(a) == _curve_without_clocks(b)
    assert (a / "world_model.msgpack").read_bytes() == (b / "world_model.msgpack").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--replay-context", "--online-replay", "--steps=240", "--eval-every=240", "--save-every=80"],
        ["--model-extra-ratio=48", "--steps=240", "--eval-every=240", "--save-every=80"],
    ],
    ids=["plain", "context_online", "model_extra"],
)
def test_sigkill_after_a_checkpoint_then_resume_equals_an_uninterrupted_run(tmp_path, extra):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = _cli(*FLAGS, *extra, f"--out={whole}")
    victim = _cli(*FLAGS, *extra, f"--out={killed}")
    _wait_for_checkpoint(killed, victim)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    state = json.loads((killed / "resume" / "state.json").read_text())
    assert 0 < state["counters"]["env_steps"] < TINY["steps"] and not (killed / "agent.json").exists()

    resumed = _cli("--resume", str(killed))
    for proc in (reference, resumed):
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
    assert json.loads((killed / "curve.json").read_text())["resumed"] == [{"env_steps": state["counters"]["env_steps"]}]
    # Bit for bit: every array of the run (networks, optimizer states, replay, latents, env log) and the curve.
    _assert_same_run(whole, killed)
    # The replay's stored latents (--replay-context) and online queue (--online-replay) are in the checkpoint.
    context = "--replay-context" in extra
    assert ("replay/0/h" in _arrays(whole)) == ("replay/online/queue" in _arrays(whole)) == context
    if "--model-extra-ratio=48" in extra:  # 1.5 world-model-only updates per env step after the warm-up
        curve = json.loads((whole / "curve.json").read_text())
        assert curve["model_updates"] == curve["evals"][-1]["model_updates"] == int(1.5 * (240 - 64 + 1))
        assert int(_arrays(whole)["agent/step"]) == curve["updates"] == int(1.0 * (240 - 64 + 1))  # full ones only


@pytest.mark.slow
def test_sigint_saves_says_how_to_resume_and_exits_0(tmp_path):
    out = tmp_path / "run"
    proc = _cli(*FLAGS, f"--out={out}")
    _wait_for_checkpoint(out, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "stopped by SIGINT" in stdout and f"--resume {out}" in stdout
    curve = json.loads((out / "curve.json").read_text())
    assert curve["interrupted"]["signal"] == "SIGINT" and curve["interrupted"]["env_steps"] < TINY["steps"]
    # The stopped run loads as a policy from its checkpoint, and the resume flag refuses a changed config.
    policy = load(out)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(policy(obs))
    with pytest.raises(SystemExit):
        from dreamer_actor.agent import __main__ as cli

        cli.parse_args(["--resume", str(out), "--steps", "7"])


def test_two_runs_with_one_seed_give_the_same_run(tmp_path):
    short = {**TINY, "steps": 160, "eval_every": 160, "save_every": 1000}
    for name in ("a", "b"):
        agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(tmp_path / name), **short))
    _assert_same_run(tmp_path / "a", tmp_path / "b")


def _corrupt(path: pathlib.Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    short = {**TINY, "steps": 160, "eval_every": 160, "save_every": 1000}
    agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(out), **short))
    return out, short


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(finished_run, tmp_path, how):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished_run[0], out)
    _corrupt(out / "resume" / "arrays.msgpack", how)
    with pytest.raises(ValueError, match=r"arrays\.msgpack.*(truncated|corrupted)"):
        agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(out), **finished_run[1]), resume=True)
    with pytest.raises(ValueError, match=r"arrays\.msgpack"):
        run_checkpoint.restore(out, {})


def test_a_foreign_checkpoint_is_refused(finished_run, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(finished_run[0], other)
    # The same folder resumed with other sizes: the flags are compared first ...
    bigger = {**finished_run[1], "units": 32}
    with pytest.raises(ValueError, match=r"--units 32 \(the run has 16\)"):
        agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(other), **bigger), resume=True)
    # ... and a checkpoint whose arrays are another run's (its state.json edited to claim this config).
    state_path = other / "resume" / "state.json"
    state = json.loads(state_path.read_text())
    state["run"]["world_model"]["units"] = 32
    text = json.dumps(state).encode()
    state_path.write_bytes(text)
    manifest_path = other / "resume" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["state.json"] = {"size": len(text), "sha256": run_checkpoint._sha256(text)}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not one of this run"):
        agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(other), **bigger), resume=True)


def test_load_names_a_damaged_or_foreign_file(finished_run, tmp_path):
    import shutil

    src, _ = finished_run
    for name, how, pattern in (
        ("world_model.msgpack", "truncate", r"world_model\.msgpack has \d+ bytes"),
        ("world_model.msgpack", "flip", r"world_model\.msgpack is corrupted"),
        ("agent.json", "truncate", r"agent\.json is not a readable"),
    ):
        out = tmp_path / f"{name}-{how}"
        shutil.copytree(src, out)
        _corrupt(out / name, how)
        with pytest.raises(ValueError, match=pattern):
            load(out)
    # Another run's world model (other sizes), its agent.json hash updated so only the shapes differ.
    out = tmp_path / "foreign"
    shutil.copytree(src, out)
    other = tmp_path / "other-run"
    agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(other), **{**finished_run[1], "deter": 8}))
    shutil.copy(other / "world_model.msgpack", out / "world_model.msgpack")
    meta = json.loads((out / "agent.json").read_text())
    meta.pop("world_model_file")
    (out / "agent.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"does not fit .*agent\.json's world model"):
        load(out)
    policy = load(src)
    with pytest.raises(ValueError, match=r"Policy: `obs` must have shape \(4,\)"):
        policy(np.zeros(3))


def test_run_json_records_what_wrote_the_run(finished_run):
    """run.json says which code made the run: the package's git commit (as `git rev-parse HEAD` in its folder gives
    it), the versions and the CPU."""
    import dreamer_actor

    written_by = json.loads((finished_run[0] / "run.json").read_text())["written_by"]
    git = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=pathlib.Path(dreamer_actor.__file__).parent, capture_output=True, text=True
    )
    assert written_by["git_commit"] == (git.stdout.strip() if git.returncode == 0 else None)
    assert written_by["dreamer_actor"] == dreamer_actor.__version__ and written_by["jax"] == jax.__version__
    assert isinstance(written_by["cpu"], str) and written_by["cpu"]


def test_load_reads_an_agent_json_with_the_retired_actor_fields(finished_run, tmp_path):
    """agent.json files written before AgentConfig lost `actor_layers` / `actor_units` (never read) and
    `critic_units` (always the world model's `units`, which the critic now reads) still load,
    and act as the same run; any other unknown field is refused, naming the file."""
    import shutil

    src, _ = finished_run
    old = tmp_path / "old-format"
    shutil.copytree(src, old)
    meta = json.loads((old / "agent.json").read_text())
    meta["agent_config"].update(actor_layers=2, actor_units=16, critic_units=16)
    (old / "agent.json").write_text(json.dumps(meta))
    obs = np.linspace(-1.0, 1.0, 4)
    np.testing.assert_array_equal(load(old)(obs), load(src)(obs))
    meta["agent_config"]["actor_width"] = 16
    (old / "agent.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"agent\.json is not a readable .*actor_width"):
        load(old)


EARLIER = {"norm": "layer", "slow_target": True, "predicted_start_cont": False, "repval_scale": 0.0,
           "imagine_pre_update": False}  # fmt: skip


def test_configs_that_predate_a_learning_rule_read_as_trained_not_as_todays_defaults():
    """A run.json / agent.json written before a rule's field existed was trained with the earlier default
    (the defaults became official DreamerV3's on 6 December 2026); a stored value is kept as it is."""
    from dreamer_actor.agent import train as agent_train
    from dreamer_actor.agent import world_model as wm

    today = agent_run.RunConfig().flag_values()
    assert {k: today[k] for k in EARLIER} == {
        "norm": "rms", "slow_target": False, "predicted_start_cont": True, "repval_scale": 0.3,
        "imagine_pre_update": True,
    }  # fmt: skip
    # Run files before that day held every flag at one level (the flat layout).
    flat = agent_run.RunConfig.from_flags(**TINY).flag_values()
    old = {k: v for k, v in flat.items() if k not in EARLIER}
    assert {k: agent_run.RunConfig.from_dict(old).flag_values()[k] for k in EARLIER} == EARLIER
    assert agent_run.RunConfig.from_dict(flat) == agent_run.RunConfig.from_flags(**TINY)
    stored = dataclasses.asdict(agent_run.RunConfig.from_flags(**TINY))
    assert agent_run.RunConfig.from_dict(stored) == agent_run.RunConfig.from_flags(**TINY)
    agent = dataclasses.asdict(agent_train.AgentConfig())
    rules = {k: v for k, v in EARLIER.items() if k != "norm"}
    assert {k: getattr(agent_train.AgentConfig.from_dict({k: v for k, v in agent.items() if k not in rules}), k)
            for k in rules} == rules  # fmt: skip
    assert agent_train.AgentConfig.from_dict(agent) == agent_train.AgentConfig()
    assert wm.WorldModelConfig.from_dict({"obs_dim": 3, "action_dim": 1}).norm == "layer"
    assert wm.WorldModelConfig.from_dict({"obs_dim": 3, "action_dim": 1, "norm": "rms"}).norm == "rms"


def test_load_reads_a_run_trained_before_the_rule_fields_existed(tmp_path):
    """A LayerNorm run with the earlier rules whose agent.json lacks the rule fields (as written before them)
    loads as the same policy; read with today's RMSNorm default its world model would not fit."""
    import shutil

    src = tmp_path / "earlier"
    agent_run.train_agent(
        agent_run.RunConfig.from_flags(
            out=str(src), **{**TINY, "steps": 160, "eval_every": 160, "save_every": 1000}, **EARLIER
        )
    )
    old = tmp_path / "old-format"
    shutil.copytree(src, old)
    meta = json.loads((old / "agent.json").read_text())
    for key in EARLIER:
        meta["agent_config"].pop(key, None)
    meta["world_model_config"].pop("norm")
    (old / "agent.json").write_text(json.dumps(meta))
    obs = np.linspace(-1.0, 1.0, 4)
    np.testing.assert_array_equal(load(old)(obs), load(src)(obs))
    meta["world_model_config"]["norm"] = "rms"
    (old / "agent.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError):
        load(old)


# ----------------------------------------------------------------------------- several envs


def test_replay_streams_sample_each_window_uniformly_and_never_across_streams():
    streams = ReplayStreams(3, capacity=12, obs_dim=1, action_dim=1, seed=5)
    rows = {0: 20, 1: 7, 2: 12}  # stream 0 wraps, stream 1 is short, stream 2 exactly full
    for stream, count in rows.items():
        for t in range(count):
            streams.add(stream, [stream * 1000 + t], [0.0], 0.0, t == 0, False)
    length = 4
    # The NumPy loop: every window of every stream, as the stored history of each stream.
    windows = []
    for stream, count in rows.items():
        kept = list(range(max(0, count - 12), count))
        windows += [tuple(stream * 1000 + t for t in kept[s : s + length]) for s in range(len(kept) - length + 1)]
    assert streams.num_windows(length) == len(windows) == 9 + 4 + 9
    draws = 22_000
    batch = streams.sample(draws, length)["obs"][..., 0]
    seen = [tuple(int(v) for v in row) for row in batch]
    assert set(seen) <= set(windows)
    counts = np.array([seen.count(w) for w in windows])
    # Uniform over the 22 windows: each count ~ Binomial(22000, 1/22), sd ~ 31; 6 sd is a fixed-seed bound.
    assert np.abs(counts - draws / len(windows)).max() < 6 * np.sqrt(draws / len(windows))


def test_one_stream_samples_what_replay_samples():
    a, b = Replay(10, 2, 1, seed=3), ReplayStreams(1, 10, 2, 1, seed=3)
    for t in range(15):
        a.add([t, -t], [0.5], float(t), t % 6 == 0, False)
        b.add(0, [t, -t], [0.5], float(t), t % 6 == 0, False)
    for _ in range(3):
        got, want = b.sample(5, 4), a.sample(5, 4)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize("vector", ["sync", "async"])
def test_four_envs_store_four_streams_as_four_hand_driven_envs(tmp_path, vector):
    out = tmp_path / "run"
    run = agent_run.RunConfig.from_flags(
        out=str(out), **{**TINY, "steps": 240, "eval_every": 240, "envs": 4, "vector": vector}
    )
    agent_run.train_agent(run)
    arrays = _arrays(out)
    log = arrays["loop/env_actions"]
    assert log.shape == (60, 4)
    for i in range(4):  # the NumPy loop: env copy i reset with seed + i, stepped with its actions, reset at once
        env = gym.make("CartPole-v1")
        obs, _ = env.reset(seed=run.seed + i)
        rows = [(obs, True, False, 0.0)]
        for action in log[:, i]:
            obs, reward, terminated, truncated, _ = env.step(int(action))
            rows.append((obs, False, terminated, reward))
            if terminated or truncated:
                obs, _ = env.reset()
                rows.append((obs, True, False, 0.0))
        size = int(arrays[f"replay/{i}/size"])
        assert size == len(rows)
        np.testing.assert_array_equal(arrays[f"replay/{i}/obs"][:size], np.stack([r[0] for r in rows]))
        np.testing.assert_array_equal(arrays[f"replay/{i}/is_first"][:size], [r[1] for r in rows])
        np.testing.assert_array_equal(arrays[f"replay/{i}/terminated"][:size], [r[2] for r in rows])
        np.testing.assert_array_equal(arrays[f"replay/{i}/reward"][:size], [r[3] for r in rows])
    curve = json.loads((out / "curve.json").read_text())
    assert curve["evals"][-1]["env_steps"] == 240 and {e["env"] for e in curve["episodes"]} <= {0, 1, 2, 3}


# ----------------------------------------------------------------------------- faults and bad input


class _FaultyEnv(gym.Env):
    """A 1-D env whose reward (or observation) turns NaN at step `bad_step`; an integer Box action space."""

    def __init__(self, bad_step: int = 10**9, what: str = "reward", integer_actions: bool = False):
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
        if integer_actions:
            self.action_space = gym.spaces.Box(-2, 2, (1,), np.int64)
        else:
            self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.bad_step, self.what, self.t = bad_step, what, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.x = 0, float(self.np_random.uniform(-1, 1))
        return np.array([self.x, 0.0], np.float32), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action)), action
        self.t += 1
        self.x = float(np.clip(self.x + 0.1 * float(np.asarray(action)[0]), -5, 5))
        obs = np.array([self.x, self.t / 50.0], np.float32)
        reward = -abs(self.x)
        if self.t >= self.bad_step and self.what == "reward":
            reward = float("nan")
        if self.t >= self.bad_step and self.what == "obs":
            obs[0] = np.nan
        return obs, reward, False, self.t >= 50, {}


for _name, _kwargs in {
    "NanReward": {"bad_step": 30, "what": "reward"},
    "NanObs": {"bad_step": 30, "what": "obs"},
    "IntBox": {"integer_actions": True},
}.items():
    gym.register(f"dreamer_actor_tests/{_name}-v0", entry_point=_FaultyEnv, kwargs=_kwargs)

FAULTY = {**TINY, "steps": 200, "eval_every": 200, "save_every": 50, "warmup": 32}


@pytest.mark.parametrize("name", ["NanReward", "NanObs"])
def test_a_non_finite_env_output_stops_the_run_with_its_last_good_state(tmp_path, name):
    out = tmp_path / "run"
    run = agent_run.RunConfig.from_flags(**{**FAULTY, "env": f"dreamer_actor_tests/{name}-v0", "out": str(out)})
    with pytest.raises(ValueError, match=r"non-finite observation or reward at env step 30"):
        agent_run.train_agent(run)
    arrays = _arrays(out)
    assert all(np.isfinite(v).all() for k, v in arrays.items() if v.dtype.kind == "f")
    assert json.loads((out / "resume" / "state.json").read_text())["counters"]["env_steps"] == 29
    action = load(out)(np.zeros(2, np.float32))
    assert np.isfinite(action).all()


def test_non_finite_updates_are_skipped_counted_and_k_in_a_row_stop_the_run(tmp_path, monkeypatch):
    from dreamer_actor.agent import train as agent_train

    real = agent_train.make_update
    poison = {"from": 20}

    def make_update(*args, **kwargs):
        update = real(*args, **kwargs)
        calls = {"n": 0}

        def poisoned(state, batch):
            calls["n"] += 1
            if calls["n"] >= poison["from"] or calls["n"] == 5:  # one lone NaN batch, later NaN for good
                batch = {**batch, "obs": np.full_like(batch["obs"], np.nan)}
            return update(state, batch)

        return poisoned

    monkeypatch.setattr(agent_train, "make_update", make_update)
    out = tmp_path / "run"
    run = agent_run.RunConfig.from_flags(out=str(out), **{**TINY, "steps": 200, "max_skips": 4})
    with pytest.raises(RuntimeError, match="4 updates in a row had a non-finite loss or gradient"):
        agent_run.train_agent(run)
    curve = json.loads((out / "curve.json").read_text())
    assert [s["updates"] for s in curve["skipped_updates"]] == [5, 20, 21, 22, 23]
    arrays = _arrays(out)
    assert all(np.isfinite(v).all() for k, v in arrays.items() if v.dtype.kind == "f")
    assert int(arrays["agent/step"]) == 23 - 5  # the 18 good updates


def test_a_skipped_update_leaves_every_learned_quantity_as_it_was():
    import jax

    from dreamer_actor.agent import train as agent_train

    run = agent_run.RunConfig.from_flags(**TINY)
    actor_config, wm_config = run.model_configs(gym.make("CartPole-v1"))
    config = run.agent
    state = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, config)
    before = jax.tree.map(np.asarray, state.replace(key=jax.random.key_data(state.key)))
    update = agent_train.make_update(wm_config, actor_config, config)
    batch = {
        "obs": np.full((4, 8, 4), np.nan, np.float32), "action": np.zeros((4, 8, 2), np.float32),
        "reward": np.zeros((4, 8), np.float32), "is_first": np.zeros((4, 8), bool),
        "terminated": np.zeros((4, 8), bool),
    }  # fmt: skip
    new, metrics, _ = update(state, batch)
    assert float(metrics["skipped"]) == 1.0
    after = new.replace(key=jax.random.key_data(new.key))
    for (path, a), b in zip(jax.tree.leaves_with_path(before), jax.tree.leaves(after), strict=True):
        if "key" not in jax.tree_util.keystr(path):
            np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert not np.array_equal(before.key, np.asarray(after.key))  # the key moves on


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"steps": 0}, "--steps"),
        ({"steps": -5}, "--steps"),
        ({"eval_every": 0}, "--eval-every"),
        ({"eval_episodes": 0}, "--eval-episodes"),
        ({"warmup": 5}, "--warmup"),
        ({"replay_capacity": 5}, "--replay-capacity"),
        ({"train_ratio": -1.0}, "--train-ratio"),
        ({"train_ratio": float("nan")}, "--train-ratio"),
        ({"model_lr": float("nan")}, "--model-lr"),
        ({"actor_lr": 0.0}, "--actor-lr"),
        ({"discount": 1.5}, "--discount"),
        ({"envs": 0}, "--envs"),
        ({"vector": "threads"}, "--vector"),
        ({"actor_output_scale": 0.0}, "--actor-output-scale"),
        ({"actor_output_scale": float("inf")}, "--actor-output-scale"),
        ({"warmup": 500}, "--warmup"),  # not below --steps
        ({"envs": 16}, "--warmup"),  # 64 warm-up steps over 16 envs: 4 each, below --length
        ({"warmup": 8, "replay_context": True}, "--warmup"),  # a context window is --length + 1 = 9 rows
        ({"replay_capacity": 8, "replay_context": True}, "--replay-capacity"),
        ({"model_extra_ratio": -1.0}, "--model-extra-ratio"),
        ({"model_extra_ratio": 32.0, "replay_context": True}, "--model-extra-ratio"),
        ({"model_extra_ratio": 32.0, "repval_grad": True}, "--model-extra-ratio"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(change, flag):
    with pytest.raises(ValueError, match=f"`{flag}`"):
        agent_run.RunConfig.from_flags(**{**TINY, **change})


def test_cli_bad_flag_is_a_usage_error_not_a_traceback():
    proc = _cli("--steps", "0", "--no-progress")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "`--steps` must be an int >= 1" in stderr and "Traceback" not in stderr


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    claim = run_checkpoint.Claim(out)
    try:
        for overwrite in (False, True):
            with pytest.raises(FileExistsError, match="in use by another run"):
                agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(out), **{**TINY, "overwrite": overwrite}))
        assert sorted(p.name for p in out.iterdir()) == ["run.lock"]
    finally:
        claim.release()


def test_an_unwritable_out_and_an_unknown_env_fail_before_training_leaving_nothing(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    with pytest.raises(OSError, match="cannot create the run folder"):
        agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(a_file / "run"), **TINY))
    assert a_file.read_text() == "mine"
    out = tmp_path / "unknown"
    with pytest.raises(gym.error.Error):
        agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(out), **{**TINY, "env": "NoSuchEnv-v0"}))
    assert not out.exists()


def test_overwrite_replaces_a_previous_run_and_nothing_else(finished_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    for name in ("run.json", "run.lock"):  # an older run's folder: agent.json marks it
        (out / name).unlink()
    before = (out / "world_model.msgpack").read_bytes()
    again = {**finished_run[1], "seed": 1, "overwrite": True}
    agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(out), **again))
    assert (out / "world_model.msgpack").read_bytes() != before
    assert json.loads((out / "run.json").read_text())["run"]["seed"] == 1
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(out), **again))
    assert (out / "notes.txt").read_text() == "mine" and (out / "agent.json").exists()


def test_overwrite_refuses_a_folder_with_only_a_users_curve_json(tmp_path):
    (tmp_path / "curve.json").write_text('{"mine": true}')
    with pytest.raises(FileExistsError, match="not a previous run"):
        agent_run.train_agent(agent_run.RunConfig.from_flags(out=str(tmp_path), **{**TINY, "overwrite": True}))
    assert json.loads((tmp_path / "curve.json").read_text()) == {"mine": True}


def test_an_integer_box_policy_returns_the_spaces_dtype(tmp_path):
    out = tmp_path / "run"
    agent_run.train_agent(
        agent_run.RunConfig.from_flags(**{**FAULTY, "env": "dreamer_actor_tests/IntBox-v0", "out": str(out)})
    )
    policy = load(out, deterministic=False)
    env = gym.make("dreamer_actor_tests/IntBox-v0")
    obs, _ = env.reset(seed=1)
    for _ in range(20):
        action = policy(obs)
        assert action.dtype == np.int64 and env.action_space.contains(action)
        obs, *_ = env.step(action)
