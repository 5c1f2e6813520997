"""The agent's run plumbing: the shared evaluation protocol, the run folder's safety rules, the CLI."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

from dreamer_actor.agent import __main__ as agent_cli
from dreamer_actor.agent import run as agent_run
from dreamer_actor.agent.evaluation import EVAL_SEED_BASE


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_evaluate_policy_matches_a_plain_gymnasium_loop(env_id):
    # A fixed open-loop action sequence, so both sides act identically; CartPole episodes end at
    # different steps, which checks that finished episodes stop accumulating.
    episodes = 3
    space = gym.make(env_id).action_space
    space.seed(7)
    plan = [space.sample() for _ in range(500)]
    step = {"t": 0}
    seen_first = []

    def act(obs, first):
        assert obs.shape == (episodes, gym.make(env_id).observation_space.shape[0]) and obs.dtype == np.float32
        seen_first.append(first.copy())
        action = plan[step["t"]]
        step["t"] += 1
        return [action] * episodes

    returns = agent_run.evaluate_policy(env_id, act, episodes=episodes)

    expected = []
    for i in range(episodes):
        env = gym.make(env_id)
        env.reset(seed=EVAL_SEED_BASE + i)
        total, t, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(plan[t])
            total, t, done = total + reward, t + 1, terminated or truncated
        expected.append(total)
    np.testing.assert_allclose(returns, expected, rtol=1e-12)
    assert seen_first[0].all() and not any(f.any() for f in seen_first[1:])


def test_random_act_is_seeded():
    a = agent_run.random_act("Pendulum-v1", 2, seed=3)
    b = agent_run.random_act("Pendulum-v1", 2, seed=3)
    obs, first = np.zeros((2, 3), np.float32), np.ones(2, bool)
    for _ in range(3):
        np.testing.assert_array_equal(np.stack(a(obs, first)), np.stack(b(obs, first)))


def test_out_dir_rules(tmp_path):
    check = agent_run.check_out_dir
    check(tmp_path / "new", overwrite=False)  # missing: fine
    (tmp_path / "empty").mkdir()
    check(tmp_path / "empty", overwrite=False)

    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"notes\.txt"):
            check(user, overwrite=overwrite)
    assert (user / "notes.txt").read_text() == "mine"

    previous = tmp_path / "previous"
    (previous / "actor").mkdir(parents=True)
    (previous / "curve.json").write_text("{}")
    (previous / "run.json").write_text('{"format": "dreamer_actor.agent_run/1"}')
    with pytest.raises(FileExistsError, match="--overwrite"):
        check(previous, overwrite=False)
    check(previous, overwrite=True)

    only_actor = tmp_path / "only_actor"
    (only_actor / "actor").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a previous run"):
        check(only_actor, overwrite=True)

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        check(a_file, overwrite=True)


def test_train_agent_refuses_a_user_folder_before_training(tmp_path):
    (tmp_path / "data.csv").write_text("1,2")
    run = agent_run.RunConfig.from_flags(env="CartPole-v1", steps=100, warmup=50, out=str(tmp_path), progress=False)
    with pytest.raises(FileExistsError, match=r"data\.csv"):
        agent_run.train_agent(run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_cli_documents_and_parses_every_flag(capsys):
    with pytest.raises(SystemExit):
        agent_cli.parse_args(["--help"])
    text = "".join(capsys.readouterr().out.split())  # no whitespace: argparse wraps lines, also after a hyphen
    defaults = agent_run.RunConfig()
    # Every field with help text, the run's own and its nested configs', is a flag documented by that text.
    documented = []
    for config in (defaults, defaults.world_model, defaults.agent):
        for field in dataclasses.fields(config):
            if "help" in field.metadata:
                assert "--" + field.name.replace("_", "-") in text, field.name
                assert "".join(field.metadata["help"].split()) in text, field.name
                documented.append(field.name)
    assert len(documented) == len(set(documented)) == len(defaults.flag_values()) == 45
    run, resume = agent_cli.parse_args(
        ["--env", "CartPole-v1", "--steps", "1234", "--overwrite", "--no-progress", "--units", "64", "--batch", "8",
         "--norm", "layer", "--slow-target", "--model-lr", "1e-4"]
    )  # fmt: skip
    assert not resume
    assert (run.env, run.steps, run.overwrite, run.progress) == ("CartPole-v1", 1234, True, False)
    assert (run.world_model.units, run.world_model.norm, run.agent.batch, run.agent.slow_target) == (
        64,
        "layer",
        8,
        True,
    )
    assert run.agent.model_lr == 1e-4 and run == agent_run.RunConfig.from_flags(**run.flag_values())
    # The choices come from the modules that define them.
    assert "{layer,rms}" in text and "{reinforce,dynamics,mix}" in text and "{adam,laprop}" in text


def test_run_config_nests_the_world_model_and_agent_configs():
    """One declaration per field: `from_flags` routes each flag to the config that owns it; a field the run
    sets from the env is refused; a bad value names its flag; an unknown flag is a TypeError naming it."""
    from dreamer_actor.agent import train as agent_train
    from dreamer_actor.agent import world_model as wm

    run = agent_run.RunConfig.from_flags(env="CartPole-v1", deter=32, length=8, warmup=64, repval_scale=0.0)
    assert run.world_model == wm.WorldModelConfig(deter=32)
    assert run.agent == agent_train.AgentConfig(length=8, repval_scale=0.0)
    assert agent_run.RunConfig.from_dict(dataclasses.asdict(run)) == run
    assert run.with_flags(units=64).world_model.units == 64 and run.world_model.units == 128
    with pytest.raises(TypeError, match=r"no flag named \['critic_units', 'lambda_'\]"):
        run.with_flags(lambda_=0.9, critic_units=64)
    bad = (({"units": 0}, "--units"), ({"norm": "batch"}, "--norm"), ({"estimator": "x"}, "--estimator"),
           ({"repval_scale": -1.0}, "--repval-scale"), ({"slow_target": 1}, "--slow-target"))  # fmt: skip
    for change, flag in bad:
        with pytest.raises(ValueError, match=f"`{flag}` must be"):
            agent_run.RunConfig.from_flags(**change)
    with pytest.raises(ValueError, match="come from the env"):
        agent_run.RunConfig(world_model=wm.WorldModelConfig(obs_dim=3))
    # The model's sizes reach the world model, the actor and the critic; the env sets its dimensions.
    actor_config, wm_config = run.model_configs(gym.make("CartPole-v1"))
    assert (wm_config.obs_dim, wm_config.action_dim, wm_config.deter, actor_config.units) == (4, 2, 32, 128)
    assert (
        agent_run.RunConfig.from_flags(contdisc=True, discount=0.997)
        .model_configs(gym.make("Pendulum-v1"))[1]
        .cont_discount
        == 0.997
    )


@pytest.mark.parametrize("scale", [0.01, 4.0])
def test_actor_output_scale_sets_the_spread_of_the_actors_output_layer_at_init(scale):
    """`--actor-output-scale` reaches the actor: its output kernel starts with the spread of flax's
    `variance_scaling(scale, "fan_avg", "truncated_normal")`, sqrt(scale / fan_avg) (the truncated normal is
    rescaled to that std). 256 weights: the sample std is within 4.4 % (one sigma) of it; checked within 20 %."""
    import jax

    from dreamer_actor.agent import train as agent_train

    run = agent_run.RunConfig.from_flags(env="Pendulum-v1", actor_output_scale=scale)
    actor_config, wm_config = run.model_configs(gym.make("Pendulum-v1"))
    assert actor_config.output_scale == scale
    state = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, run.agent)
    kernel = np.asarray(state.actor_params["params"]["out"]["kernel"])
    fan_in, fan_out = kernel.shape
    want = np.sqrt(scale / ((fan_in + fan_out) / 2))
    assert kernel.size == 256 and abs(kernel.std() / want - 1) < 0.2, (kernel.std(), want)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_loop_act_equals_the_policy_step_on_device_arrays(env_id):
    """`loop_act` feeds NumPy in and indexes on the host; it must return what the plain call returns, bitwise."""
    import jax
    import jax.numpy as jnp

    from dreamer_actor.agent import spaces
    from dreamer_actor.agent import train as agent_train
    from dreamer_actor.agent import world_model as wm

    run = agent_run.RunConfig.from_flags(env=env_id, deter=16, stoch=4, classes=4, units=16, layers=1)
    env = gym.make(env_id)
    actor_config, wm_config = run.model_configs(env)
    state = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, run.agent)
    policy_step = agent_train.make_policy_step(wm_config, actor_config)
    obs = env.reset(seed=3)[0].astype(np.float64)  # a float64 observation is cast, as the loop's envs may give
    latent = wm.initial_latent(wm_config, (1,))
    prev = jnp.zeros((1, spaces.model_action_dim(actor_config)))
    key = jax.random.key(1)
    for step, is_first in ((1, True), (2, False)):
        got = agent_run.loop_act(
            policy_step, state.wm_params, state.actor_params, latent, prev, obs[None], np.array([is_first]), key, step
        )
        want_latent, action, model_action = policy_step(
            state.wm_params, state.actor_params, latent, prev, jnp.asarray(obs[None], jnp.float32),
            jnp.asarray([is_first]), key, step, deterministic=False,
        )  # fmt: skip
        for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(want_latent), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(got[1], model_action)
        assert isinstance(got[2], np.ndarray) and isinstance(got[3], np.ndarray)
        np.testing.assert_array_equal(got[2], np.asarray(action))
        np.testing.assert_array_equal(got[3], np.asarray(model_action))
        assert env.action_space.contains(spaces.env_action(actor_config, got[2][0], env.action_space))
        latent, prev = got[0], got[1]
