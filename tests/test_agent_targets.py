"""The critic targets: lambda-returns bootstrapped from the slow or the online critic (official DreamerV3:
online), the slow critic's regularizer, and the critic loss, against NumPy loops in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer_actor.agent import run as agent_run
from dreamer_actor.agent import train as agent_train
from dreamer_actor.agent import world_model as wm


def numpy_lambda_returns(rew, val, con, gamma, lam):
    """R_t = r_{t+1} + gamma c_{t+1} ((1 - lam) v_{t+1} + lam R_{t+1}), R_H = v_H, over imagined s_0 .. s_H."""
    horizon = rew.shape[0] - 1
    out = np.zeros((horizon, *rew.shape[1:]))
    nxt = val[horizon]
    for t in reversed(range(horizon)):
        nxt = rew[t + 1] + gamma * con[t + 1] * ((1 - lam) * val[t + 1] + lam * nxt)
        out[t] = nxt
    return out


def numpy_twohot_ce(logits, target, bins):
    logits, bins = np.asarray(logits, np.float64), np.asarray(bins, np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    out = np.zeros(target.shape)
    for idx in np.ndindex(target.shape):
        x = np.clip(target[idx], bins[0], bins[-1])
        hi = min(max(int(np.searchsorted(bins, x, side="right")), 1), len(bins) - 1)
        w = np.clip((x - bins[hi - 1]) / (bins[hi] - bins[hi - 1]), 0, 1)
        out[idx] = -((1 - w) * log_probs[idx][hi - 1] + w * log_probs[idx][hi])
    return out


@pytest.fixture(scope="module")
def agent():
    import gymnasium as gym

    run = agent_run.RunConfig.from_flags(
        env="Pendulum-v1", deter=16, units=16, stoch=4, classes=4, layers=1, warmup=64, length=8
    )
    actor_config, wm_config = run.model_configs(gym.make("Pendulum-v1"))
    config = run.agent
    state = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, config)
    noise = lambda p, k: jax.tree.map(lambda x: x + 0.3 * jax.random.normal(k, x.shape), p)
    online, slow = noise(state.critic_params, jax.random.key(1)), noise(state.critic_params, jax.random.key(2))
    n = 6
    start = wm.Latent(
        jax.random.normal(jax.random.key(3), (n, wm_config.deter)),
        jax.nn.one_hot(jax.random.randint(jax.random.key(4), (n, wm_config.stoch), 0, wm_config.classes), 4),
    )
    return run, actor_config, wm_config, config, state, online, slow, start


@pytest.mark.parametrize(
    ("slow_target", "predicted_start_cont", "contdisc"),
    [(True, False, False), (False, False, False), (False, True, False), (False, True, True)],
)
def test_returns_bootstrap_from_the_chosen_critic_and_the_regularizer_is_the_slow_one(
    agent, slow_target, predicted_start_cont, contdisc
):
    import dataclasses

    _run, actor_config, wm_config, config, state, online, slow, start = agent
    config = dataclasses.replace(
        config, slow_target=slow_target, predicted_start_cont=predicted_start_cont, contdisc=contdisc, horizon=5
    )
    gamma = 1.0 if contdisc else config.discount  # contdisc: the discount is inside the continue head
    model, critic = (
        wm.WorldModel(wm_config),
        agent_train.Critic(wm_config.units, config.critic_layers, wm_config.num_bins, wm_config.norm),
    )
    n = start.h.shape[0]
    replayed_cont = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # 1 - terminated of the replayed starts
    _, aux = agent_train.actor_objective(
        state.actor_params, model=model, critic=critic, frozen=state.wm_params, slow=slow, online=online,
        start=start, start_cont=replayed_cont, normalizer_state=state.normalizer, key=jax.random.key(5),
        actor_config=actor_config, config=config,
    )  # fmt: skip
    latents = aux["latents"]
    bins = wm.twohot_bins(wm_config.num_bins)
    rew_logits, cont_logit = model.apply(state.wm_params, latents.h, latents.z, method=wm.WorldModel.reward_cont)
    rew = np.asarray(wm.twohot_mean(rew_logits, bins), np.float64)
    con = 1.0 / (1.0 + np.exp(-np.asarray(cont_logit, np.float64)))
    values = {
        name: np.asarray(wm.twohot_mean(critic.apply(params, latents.h, latents.z), bins), np.float64)
        for name, params in (("online", online), ("slow", slow))
    }
    assert np.abs(values["online"] - values["slow"]).max() > 1e-2  # the two critics really differ
    target = values["slow" if slow_target else "online"]
    want = numpy_lambda_returns(rew, target, con, gamma, config.lambda_)
    np.testing.assert_allclose(np.asarray(aux["returns"]), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(aux["slow_values"]), values["slow"], rtol=1e-5, atol=1e-6)

    # The critic's loss: two-hot cross-entropy to sg(R) + slow_reg x that to the slow critic's value, weighted.
    h, z = latents.h[:-1], latents.z[:-1]
    loss = agent_train.critic_objective(
        online, critic=critic, h=h, z=z, returns=aux["returns"], slow_values=aux["slow_values"],
        weights=aux["weights"], bins=bins, config=config,
    )  # fmt: skip
    logits = np.asarray(critic.apply(online, h, z))
    ce = numpy_twohot_ce(logits, np.asarray(aux["returns"], np.float64), bins)
    ce_slow = numpy_twohot_ce(logits, values["slow"][:-1], bins)
    # w_0 = c_start (the head's prediction at s_0, or the replayed flag), w_t = w_{t-1} gamma c_t.
    weights = np.zeros((config.horizon, n))
    weights[0] = con[0] if predicted_start_cont else np.asarray(replayed_cont)
    for t in range(1, config.horizon):
        weights[t] = weights[t - 1] * gamma * con[t]
    np.testing.assert_allclose(np.asarray(aux["weights"]), weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(loss), np.mean(weights * (ce + config.slow_reg * ce_slow)), rtol=1e-4)


def official_lambda_return(last, term, rew, boot, disc, lam):
    """Official DreamerV3's `lambda_return(last, term, rew, val, boot, disc, lam)` (agent.py), transcribed to
    NumPy; `val` is unused there."""
    rets = [boot[:, -1]]
    live = (1 - term.astype(np.float64))[:, 1:] * disc
    cont = (1 - last.astype(np.float64))[:, 1:] * lam
    interm = rew[:, 1:] + (1 - cont) * live * boot[:, 1:]
    for t in reversed(range(live.shape[1])):
        rets.append(interm[:, t] + live[:, t] * cont[:, t] * rets[-1])
    return np.stack(list(reversed(rets))[:-1], 1)


def test_replay_returns_match_official_repl_loss_on_sequences_that_cross_episodes():
    rng = np.random.default_rng(0)
    b, length = 3, 9
    is_first = np.zeros((b, length), bool)
    terminated = np.zeros((b, length), bool)
    is_first[0, 4] = True  # a truncation: x_3 is last but not terminal
    terminated[1, 5], is_first[1, 6] = True, True  # a terminal x_5, then a reset
    is_first[2, 0] = True
    reward = rng.normal(size=(b, length)).astype(np.float32)
    reward[is_first] = 0.0
    boot = rng.normal(size=(b, length)).astype(np.float32)
    last = np.concatenate([is_first[:, 1:], np.zeros((b, 1), bool)], 1)  # what the replay implies
    want = official_lambda_return(last, terminated, reward.astype(np.float64), boot.astype(np.float64), 0.99, 0.95)
    got, weights = agent_train.replay_returns(
        jnp.asarray(reward), jnp.asarray(terminated), jnp.asarray(is_first), jnp.asarray(boot),
        discount=0.99, lambda_=0.95,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(weights), 1.0 - last[:, :-1])  # official's weight = ~last
    # The window's own last step: whether x_{L-1} ends an episode does not change any target.
    last_end = last.copy()
    last_end[:, -1] = True
    np.testing.assert_allclose(
        official_lambda_return(last_end, terminated, reward.astype(np.float64), boot.astype(np.float64), 0.99, 0.95),
        want,
    )


def _pendulum_batch(config, seed):
    """A replayed `[B, L]` batch of random Pendulum-shaped rows, each sequence starting an episode."""
    rng = np.random.default_rng(seed)
    b, length = config.batch, config.length
    return {
        "obs": rng.normal(size=(b, length, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(b, length, 1)).astype(np.float32),
        "reward": rng.normal(size=(b, length)).astype(np.float32),
        "is_first": np.eye(length, dtype=bool)[np.zeros(b, int)],
        "terminated": np.zeros((b, length), bool),
    }


def test_the_replay_value_loss_enters_the_update(agent):
    import dataclasses

    _run, actor_config, wm_config, config, _state, *_ = agent
    batch = _pendulum_batch(config, seed=1)
    critics = {}
    for scale in (0.0, 0.3):
        cfg = dataclasses.replace(config, repval_scale=scale)
        new, metrics, _ = agent_train.make_update(wm_config, actor_config, cfg)(
            agent_train.init_agent(jax.random.key(0), wm_config, actor_config, cfg), batch
        )
        assert float(metrics["skipped"]) == 0.0
        critics[scale] = new.critic_params
    # The same world model and actor step; only the critic's gradient differs.
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(*map(jax.tree.leaves, critics.values()), strict=True)]
    assert max(moved) > 1e-7


@pytest.mark.parametrize("pre_update", [True, False])
def test_imagine_pre_update_rolls_out_in_the_model_that_made_the_starts(agent, pre_update):
    """With `imagine_pre_update` the actor and critic steps use only the world model before its step, so they
    cannot depend on the world model's learning rate; without it they do."""
    import dataclasses

    _run, actor_config, wm_config, config, *_ = agent
    batch = _pendulum_batch(config, seed=2)
    actors, critics = [], []
    for model_lr in (1e-4, 1e-2):
        cfg = dataclasses.replace(config, model_lr=model_lr, imagine_pre_update=pre_update)
        state = agent_train.init_agent(jax.random.key(0), wm_config, actor_config, cfg)
        new, _, _ = agent_train.make_update(wm_config, actor_config, cfg)(state, batch)
        actors.append(jax.tree.leaves(new.actor_params))
        critics.append(jax.tree.leaves(new.critic_params))
    same = all(np.array_equal(a, b) for a, b in zip(*actors, strict=True)) and all(
        np.array_equal(a, b) for a, b in zip(*critics, strict=True)
    )
    assert same == pre_update


def test_rms_norm_everywhere_trains_saves_and_loads(tmp_path):
    import flax

    from dreamer_actor.agent import load

    run = agent_run.RunConfig.from_flags(
        env="Pendulum-v1", steps=96, warmup=64, eval_every=96, eval_episodes=1, deter=8, units=8, stoch=2,
        classes=2, layers=1, batch=2, length=8, train_ratio=16.0, norm="rms", out=str(tmp_path), progress=False,
    )  # fmt: skip
    curve = agent_run.train_agent(run)
    state = curve["state"]
    for name, params in (
        ("world model", state.wm_params),
        ("actor", state.actor_params),
        ("critic", state.critic_params),
    ):
        flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
        norms = {k: v for k, v in flat.items() if "/norm" in k}
        assert norms and all(k.endswith("/scale") for k in norms), (name, sorted(norms))  # RMSNorm: a scale only
    assert curve["skipped_updates"] == [] and curve["updates"] > 0
    policy = load(tmp_path)
    assert np.isfinite(policy(np.zeros(3, np.float32))).all()


def test_contdisc_puts_the_discount_into_the_continue_heads_target():
    import gymnasium as gym

    run = agent_run.RunConfig.from_flags(
        env="Pendulum-v1", deter=8, units=8, stoch=2, classes=2, layers=1, warmup=64, length=8,
        contdisc=True, discount=0.997,
    )  # fmt: skip
    _, wm_config = run.model_configs(gym.make("Pendulum-v1"))
    assert wm_config.cont_discount == 0.997
    model = wm.WorldModel(wm_config)
    params = wm.init_world_model(jax.random.key(0), wm_config)
    rng = np.random.default_rng(3)
    batch = {
        "obs": rng.normal(size=(2, 8, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, (2, 8, 1)).astype(np.float32),
        "reward": np.zeros((2, 8), np.float32), "is_first": np.eye(8, dtype=bool)[[0, 0]],
        "terminated": np.zeros((2, 8), bool),
    }  # fmt: skip
    batch["terminated"][1, 5] = True
    _, (_, metrics) = wm.world_model_loss(model, params, batch, jax.random.key(1))
    latents, _, _ = wm.observe(model, params, batch["obs"], batch["action"], batch["is_first"], jax.random.key(1))
    _, _, logit = model.apply(params, latents.h, latents.z, method=wm.WorldModel.heads)
    x = np.asarray(logit, np.float64)
    target = (1.0 - batch["terminated"]) * 0.997
    bce = np.maximum(x, 0) - x * target + np.log1p(np.exp(-np.abs(x)))  # the log-loss of a soft target
    np.testing.assert_allclose(float(metrics["cont_loss"]), bce.mean(), rtol=1e-5)


def test_repval_grad_is_the_gradient_of_one_loss_over_world_model_and_critic(agent, monkeypatch):
    """With `repval_grad` the world model's gradient is that of official DreamerV3's one loss: the world-model
    loss plus `repval_scale` times the replay value loss through the replayed posteriors (its targets held
    fixed), transcribed here as a plain `jax.grad` of that sum; the update reads the gradient off an SGD step."""
    import dataclasses
    import functools

    import optax

    _run, actor_config, wm_config, config, state, online, slow, _ = agent
    cfg = dataclasses.replace(config, repval_grad=True, repval_scale=0.3)
    # A trained-looking critic: the fresh one's zero output layer would pass no gradient to its input.
    state = state.replace(critic_params=online, slow_critic_params=slow)
    batch = {k: jnp.asarray(v) for k, v in _pendulum_batch(cfg, seed=3).items()}
    monkeypatch.setattr(agent_train, "optimizer", lambda config, lr: optax.sgd(1.0))
    # Jitted as the agent runs it (traced after the SGD patch); eager dispatch of the scans costs minutes.
    step = lambda c: jax.jit(
        functools.partial(agent_train.train_step, wm_config=wm_config, actor_config=actor_config, config=c)
    )
    new, metrics, _ = step(cfg)(state, batch)
    assert float(metrics["skipped"]) == 0.0
    got = jax.tree.map(lambda old, upd: old - upd, state.wm_params, new.wm_params)

    sg = jax.lax.stop_gradient
    model = wm.WorldModel(wm_config)
    critic = agent_train.Critic(wm_config.units, cfg.critic_layers, wm_config.num_bins, wm_config.norm)
    bins = wm.twohot_bins(wm_config.num_bins)
    _, wm_key, imag_key = jax.random.split(state.key, 3)
    b, length = cfg.batch, cfg.length
    _, (post, _) = jax.jit(lambda p: wm.world_model_loss(model, p, batch, wm_key))(state.wm_params)
    _, aux = jax.jit(lambda actor_params: agent_train.actor_objective(
        actor_params, model=model, critic=critic, frozen=state.wm_params, slow=slow, online=online,
        start=jax.tree.map(lambda x: x.reshape(b * length, *x.shape[2:]), post),
        start_cont=1.0 - batch["terminated"].reshape(-1).astype(jnp.float32), normalizer_state=state.normalizer,
        key=imag_key, actor_config=actor_config, config=cfg,
    ))(state.actor_params)  # fmt: skip
    targets, weights = agent_train.replay_returns(
        batch["reward"], batch["terminated"], batch["is_first"], aux["returns"][0].reshape(b, length),
        discount=cfg.discount, lambda_=cfg.lambda_,
    )  # fmt: skip

    def replay_value_loss(p):
        _, (post, _) = wm.world_model_loss(model, p, batch, wm_key)
        h, z = post.h[:, :-1], post.z[:, :-1]
        slow_values = wm.twohot_mean(critic.apply(slow, sg(h), sg(z)), bins)
        logits = critic.apply(online, h, z)
        loss = wm.twohot_loss(logits, sg(targets), bins) + cfg.slow_reg * wm.twohot_loss(logits, sg(slow_values), bins)
        return cfg.repval_scale * jnp.mean(weights * loss)

    own = jax.jit(jax.grad(lambda p: wm.world_model_loss(model, p, batch, wm_key)[0]))(state.wm_params)
    extra = jax.jit(jax.grad(replay_value_loss))(state.wm_params)
    want = jax.tree.map(jnp.add, own, extra)
    extra_norm, own_norm = float(optax.tree.norm(extra)), float(optax.tree.norm(own))
    assert extra_norm > 1e-3 * own_norm  # the replay value loss's share is there to be found
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True):
        scale = max(float(jnp.abs(w).max()), 1e-12)
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4 * scale + 1e-6, err_msg=jax.tree_util.keystr(path))
    # Without it, the world model's gradient is its own loss's alone.
    plain, _, _ = step(dataclasses.replace(cfg, repval_grad=False))(state, batch)
    for g, w in zip(jax.tree.leaves(jax.tree.map(jnp.subtract, state.wm_params, plain.wm_params)), jax.tree.leaves(own),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4 * max(float(jnp.abs(w).max()), 1e-12) + 1e-6)
