r"""One jitted DreamerV3 update: world model on replay, then actor and critic in its imagination.

`update(state, batch)` (built by `make_update`):

1. **World model**: `world_model_loss` on the replayed batch `[B, L]`, one optimizer step.
2. **Starts**: every posterior state of that batch, `N = B * L` starts (stop-gradiented),
   with the start continue `c_start` the continue head's prediction at the start (official
   DreamerV3), or with `predicted_start_cont=False` the replayed `1 - terminated`.
3. **Imagination** (in the world model that made the starts, before step 1's update, as official
   DreamerV3; with `imagine_pre_update=False` the updated one): `lax.scan` over `horizon` steps
   of `da.act(actor_params, actor_config, hidden=h, stoch=z, key, training=True,
   reparameterize=...)` on the model's latent (`z` is the `[N, S, C]` one-hot) and the RSSM
   prior step; the world model gets
   `spaces.model_action(...)` (the unclipped `raw_sample` for bounded_normal).
4. **Returns**: reward `rew[t]` (two-hot mean) and continue `con[t] = sigmoid(logit)` predicted
   at the imagined states `s_0 .. s_T`, values `v[t]` of the online critic (official DreamerV3;
   `slow_target=True`: the slow critic's);
   `da.lambda_returns(rew[1:], v[:-1], con[1:], v[-1], discount=gamma)`,
   `da.imagination_weights(con[1:], gamma, start_continues=c_start)`.
5. **Actor**: `da.policy_loss` on `(R - v) / max(1, P95 - P5)` (`da.ReturnNormalizer`),
   REINFORCE by default (`"dynamics"` / `"mix"` backpropagate through the frozen model).
6. **Critic**: two-hot cross-entropy to `sg(R)` plus `slow_reg` times the cross-entropy to the
   slow critic's value, weighted; the slow critic is an EMA (`slow_rate`) of the critic. Plus
   `repval_scale` (0.3; 0 turns it off) times the same loss along the replayed posteriors
   toward `replay_returns` (official DreamerV3's replay value loss).

If any loss or gradient is non-finite, the update is skipped: the state comes back unchanged
but for its PRNG key, and the metric `skipped` is 1 (the training loop counts and limits these).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import dreamer_actor as da
from dreamer_actor.agent import behavior, optimizers, spaces
from dreamer_actor.agent import world_model as wm

# AgentConfig fields that earlier agent.json files carry and that never had an effect.
RETIRED_FIELDS = ("actor_layers", "actor_units")
# The learning rules whose defaults became official DreamerV3's on 6 December 2026, with the values a
# file written before each field existed was trained with (every later file stores its own).
EARLIER_RULES = {"slow_target": True, "predicted_start_cont": False, "repval_scale": 0.0, "imagine_pre_update": False}


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Learning hyperparameters (static: a change recompiles).

    Attributes:
      batch, length: replayed `B` sequences of length `L` per update (`B * L` imagination starts).
      horizon: imagined steps per start (DreamerV3: 15).
      discount, lambda_: of the lambda-returns.
      estimator: `"reinforce"` (DreamerV3), `"dynamics"` or `"mix"` (`rho` weights REINFORCE).
      entropy_coef: actor entropy bonus on the normalized advantage scale (DreamerV3: 3e-4).
      optimizer: `"adam"` (global-norm clipping at `grad_clip`, then Adam) or `"laprop"` (official
        DreamerV3's: adaptive clipping at `agc`, LaProp, a 1,000-update warm-up; `optimizers.laprop`).
      model_lr, actor_lr, critic_lr: learning rates; grad_clip: Adam's global-norm clipping; agc: LaProp's.
      slow_rate: EMA rate of the slow critic; slow_reg: weight of the critic's pull to it.
      predicted_start_cont: weight each start by the continue head's prediction there (True, official
        DreamerV3 and `da.imagination_weights`' recommendation) or by the replayed `1 - terminated` (False).
      repval_scale: weight of the replay value loss (official DreamerV3: 0.3; 0 turns it off): the critic
        also learns `replay_returns` along the replayed posterior sequences.
      contdisc: the discount lives in the continue head (its target `(1 - terminated) * discount`, set
        by the run as `WorldModelConfig.cont_discount`), so imagination discounts by the predicted
        continue alone (official DreamerV3's `contdisc: True`); the replay value loss keeps `discount`.
      imagine_pre_update: roll imagination out in the world model that made the starts, before this
        update's step (True, official DreamerV3), or in the model after it (False).
      slow_target: the lambda-returns bootstrap from, and the advantage baseline is, the slow critic
        (True) or the online critic (False, official DreamerV3's `imag_loss: {slowtar: False}`).
      critic_layers, critic_units: the critic's MLP (the actor's shape is its `da.ActorConfig`'s).
    """

    batch: int = 16
    length: int = 64
    horizon: int = 15
    discount: float = 0.99
    lambda_: float = 0.95
    estimator: str = "reinforce"
    rho: float = 0.5
    entropy_coef: float = 3e-4
    model_lr: float = 6e-4
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    optimizer: str = "adam"
    grad_clip: float = 100.0
    agc: float = 0.3
    slow_rate: float = 0.02
    slow_reg: float = 1.0
    slow_target: bool = False
    predicted_start_cont: bool = True
    repval_scale: float = 0.3
    imagine_pre_update: bool = True
    contdisc: bool = False
    critic_layers: int = 2
    critic_units: int = 128

    def __post_init__(self):
        if self.optimizer not in optimizers.OPTIMIZERS:
            raise ValueError(
                f"AgentConfig: `optimizer` must be one of {optimizers.OPTIMIZERS}, got {self.optimizer!r}."
            )
        if self.estimator not in da.train.ESTIMATORS:
            raise ValueError(f"AgentConfig: `estimator` must be one of {da.train.ESTIMATORS}, got {self.estimator!r}.")
        for name in ("batch", "length", "horizon", "critic_layers", "critic_units"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"AgentConfig: `{name}` must be a positive int, got {value!r}.")
        for name in ("discount", "lambda_", "rho"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AgentConfig: `{name}` must be in [0, 1], got {getattr(self, name)!r}.")

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> AgentConfig:
        """The config of `dataclasses.asdict(config)` (an `agent.json`'s `"agent_config"`).

        `actor_layers` and `actor_units`, which `agent.json` files written before 6 December 2026 carry
        and nothing ever read (the actor's shape is its `da.ActorConfig`), are dropped; any other
        unknown field is a TypeError naming it. A learning rule the file predates is the value it
        was trained with (`EARLIER_RULES`), not today's default.
        """
        return cls(**{**EARLIER_RULES, **{k: v for k, v in fields.items() if k not in RETIRED_FIELDS}})


class Critic(nn.Module):
    """Two-hot value head: feature `[..., F]` -> logits `[..., K]` (zero-initialized output: value 0)."""

    units: int
    layers: int
    num_bins: int = wm.NUM_BINS
    norm: str = "layer"

    @nn.compact
    def __call__(self, h: jax.Array, z: jax.Array) -> jax.Array:
        feat = da.networks.flatten_latent(h, z)
        return da.networks.MLP(self.units, self.layers, out=self.num_bins, zero_out=True, norm=self.norm)(feat)


@struct.dataclass
class AgentState:
    """Every learned quantity, a pytree.

    Attributes:
      wm_params, actor_params, critic_params, slow_critic_params: network variables.
      wm_opt, actor_opt, critic_opt: optax states.
      normalizer: `da.ReturnNormalizerState`.
      key: PRNG key; step: `[]` int32 updates done.
    """

    wm_params: Any
    actor_params: Any
    critic_params: Any
    slow_critic_params: Any
    wm_opt: Any
    actor_opt: Any
    critic_opt: Any
    normalizer: da.ReturnNormalizerState
    key: jax.Array
    step: jax.Array


def optimizer(config: AgentConfig, lr: float) -> optax.GradientTransformation:
    """The optimizer `config.optimizer` names, at learning rate `lr` (see `AgentConfig`)."""
    return optimizers.make(config.optimizer, lr, config.grad_clip if config.optimizer == "adam" else config.agc)


def init_agent(
    key: jax.Array, wm_config: wm.WorldModelConfig, actor_config: da.ActorConfig, config: AgentConfig
) -> AgentState:
    """Fresh networks and optimizer states."""
    wm_key, actor_key, critic_key, key = jax.random.split(key, 4)
    wm_params = wm.init_world_model(wm_key, wm_config)
    latent = wm.initial_latent(wm_config, (1,))
    actor_params = da.Actor.from_config(actor_config).init(actor_key, latent.h, latent.z)
    critic_params = Critic(config.critic_units, config.critic_layers, wm_config.num_bins, wm_config.norm).init(
        critic_key, latent.h, latent.z
    )
    return AgentState(
        wm_params=wm_params,
        actor_params=actor_params,
        critic_params=critic_params,
        slow_critic_params=jax.tree.map(jnp.copy, critic_params),
        wm_opt=optimizer(config, config.model_lr).init(wm_params),
        actor_opt=optimizer(config, config.actor_lr).init(actor_params),
        critic_opt=optimizer(config, config.critic_lr).init(critic_params),
        normalizer=da.ReturnNormalizer().init(),
        key=key,
        step=jnp.zeros((), jnp.int32),
    )


def imagine(
    model: wm.WorldModel,
    wm_params: Any,
    actor_params: Any,
    actor_config: da.ActorConfig,
    start: wm.Latent,
    key: jax.Array,
    *,
    horizon: int,
    reparameterize: bool,
) -> tuple[wm.Latent, da.ActorOutput]:
    """Rolls the actor out in the model's prior.

    Args:
      start: `Latent(h [N, D], z [N, S, C])`.

    Returns:
      `(latents h [T + 1, N, D], z [T + 1, N, S, C]` (s_0 .. s_T), `ActorOutput` of `[T, N, ...]`).
    """

    def step(latent, step_key):
        act_key, model_key = jax.random.split(step_key)
        out = da.act(
            actor_params, actor_config, latent.h, latent.z, act_key, training=True, reparameterize=reparameterize
        )
        action = spaces.model_action(actor_config, out.action, out.raw_sample)
        return wm.imagine_step(model, wm_params, latent, action, model_key), out

    return behavior.rollout(step, start, key, horizon)


def actor_objective(
    actor_params: Any,
    *,
    model: wm.WorldModel,
    critic: Critic,
    frozen: Any,
    slow: Any,
    online: Any,
    start: wm.Latent,
    start_cont: jax.Array,
    normalizer_state: da.ReturnNormalizerState,
    key: jax.Array,
    actor_config: da.ActorConfig,
    config: AgentConfig,
) -> tuple[jax.Array, dict[str, Any]]:
    """Step 5: the actor's loss on imagination from `start` in the frozen model (`frozen` world-model,
    `slow` and `online` critic params: the returns' values are the slow critic's, or with
    `config.slow_target=False` the online critic's), and what the critic step and the metrics reuse
    (stop-gradiented)."""
    sg = jax.lax.stop_gradient
    bins = wm.twohot_bins(model.config.num_bins)
    latents, outs = imagine(
        model,
        frozen,
        actor_params,
        actor_config,
        start,
        key,
        horizon=config.horizon,
        reparameterize=config.estimator != "reinforce",
    )
    rew_logits, cont_logit = model.apply(frozen, latents.h, latents.z, method=wm.WorldModel.reward_cont)
    rewards = wm.twohot_mean(rew_logits, bins)  # [T + 1, N]
    gamma = 1.0 if config.contdisc else config.discount  # contdisc: the discount is in the continue head
    conts = jax.nn.sigmoid(cont_logit)
    slow_values = wm.twohot_mean(critic.apply(slow, latents.h, latents.z), bins)
    values = slow_values if config.slow_target else wm.twohot_mean(critic.apply(online, latents.h, latents.z), bins)
    start_cont = conts[0] if config.predicted_start_cont else start_cont
    loss, aux = behavior.actor_loss(
        outs.log_prob, outs.entropy, rewards[1:], values, conts[1:], discount=gamma, lambda_=config.lambda_,
        normalizer=da.ReturnNormalizer(), normalizer_state=normalizer_state, estimator=config.estimator,
        rho=config.rho, entropy_coef=config.entropy_coef, start_continues=start_cont,
    )  # fmt: skip
    aux = {
        **aux,
        "latents": sg(latents),
        "slow_values": sg(slow_values),
        "entropy": jnp.mean(sg(outs.entropy)),
        "imag_reward": jnp.mean(sg(rewards[1:])),
        "imag_cont": jnp.mean(sg(conts[1:])),
        "actor_loss": sg(loss),
    }
    return loss, aux


def critic_objective(critic_params, *, critic, h, z, returns, slow_values, weights, bins, config, replay=None):
    """Step 6: two-hot cross-entropy to `sg(returns)` plus `slow_reg` times that to the slow critic, weighted;
    with `replay` (`replay_critic_targets`' `(h, z, returns, slow_values, weights)`), plus `repval_scale`
    times the same loss along the replayed sequences."""
    logits = critic.apply(critic_params, h, z)
    loss = wm.twohot_loss(logits, returns, bins) + config.slow_reg * wm.twohot_loss(logits, slow_values[:-1], bins)
    total = jnp.mean(weights * loss)
    if replay is not None:
        rh, rz, rreturns, rslow, rweights = replay
        rlogits = critic.apply(critic_params, rh, rz)
        rloss = wm.twohot_loss(rlogits, rreturns, bins) + config.slow_reg * wm.twohot_loss(rlogits, rslow, bins)
        total = total + config.repval_scale * jnp.mean(rweights * rloss)
    return total


def replay_returns(
    reward: jax.Array, terminated: jax.Array, is_first: jax.Array, boot: jax.Array, *, discount: float, lambda_: float
) -> tuple[jax.Array, jax.Array]:
    r"""Lambda-returns along replayed sequences, bootstrapped with the imagined returns (official `repl_loss`).

    With `last_t = is_first_{t+1}` (x_t ends its episode; the window's last step never matters),
    `live_t = discount (1 - terminated_t)` and `cont_t = lambda (1 - last_t)`:

        R_{L-1} = boot_{L-1},   R_t = r_{t+1} + live_{t+1} ((1 - cont_{t+1}) boot_{t+1} + cont_{t+1} R_{t+1}),

    where `boot_t` is the imagined lambda-return from the posterior state of step t.

    Args:
      reward, terminated, is_first: `[B, L]` replayed rows (`replay.Replay`'s convention).
      boot: `[B, L]` imagined returns `R_0` from each step's posterior state.

    Returns:
      `(returns [B, L - 1], weights [B, L - 1])`: the targets of steps 0 .. L-2, and `1 - last_t`.
    """
    f32 = jnp.float32
    last = jnp.concatenate([is_first[:, 1:], jnp.zeros_like(is_first[:, :1])], 1).astype(f32)
    live = discount * (1.0 - terminated[:, 1:].astype(f32))
    cont = lambda_ * (1.0 - last[:, 1:])
    interm = reward[:, 1:] + (1.0 - cont) * live * boot[:, 1:]

    def body(nxt, inputs):
        i, lv, c = inputs
        ret = i + lv * c * nxt
        return ret, ret

    swap = lambda x: jnp.swapaxes(x, 0, 1)[::-1]
    _, rets = jax.lax.scan(body, boot[:, -1], (swap(interm), swap(live), swap(cont)))
    return jnp.swapaxes(rets[::-1], 0, 1), 1.0 - last[:, :-1]


def train_step(
    state: AgentState,
    batch: dict[str, jax.Array],
    *,
    wm_config: wm.WorldModelConfig,
    actor_config: da.ActorConfig,
    config: AgentConfig,
) -> tuple[AgentState, dict[str, jax.Array]]:
    """One update of world model, actor and critic (pure; see the module docstring).

    Args:
      batch: `[B, L, ...]` arrays from `Replay.sample`.
    """
    model = wm.WorldModel(wm_config)
    critic = Critic(config.critic_units, config.critic_layers, wm_config.num_bins, wm_config.norm)
    bins = wm.twohot_bins(wm_config.num_bins)
    key, wm_key, imag_key = jax.random.split(state.key, 3)
    sg = jax.lax.stop_gradient

    # 1. World model.
    (wm_loss, (post, wm_metrics)), wm_grads = jax.value_and_grad(
        lambda p: wm.world_model_loss(model, p, batch, wm_key), has_aux=True
    )(state.wm_params)
    wm_updates, wm_opt = optimizer(config, config.model_lr).update(wm_grads, state.wm_opt, state.wm_params)
    wm_params = optax.apply_updates(state.wm_params, wm_updates)

    # 2. Starts: all B * L posterior states.
    n = config.batch * config.length
    start = jax.tree.map(lambda x: sg(x.reshape(n, *x.shape[2:])), post)
    start_cont = 1.0 - batch["terminated"].reshape(n).astype(jnp.float32)
    # The rollout's model: after this update's world-model step, or (official DreamerV3) the parameters that
    # also made the starts.
    frozen = sg(state.wm_params if config.imagine_pre_update else wm_params)
    slow, online = sg(state.slow_critic_params), sg(state.critic_params)

    # 3. Actor.
    objective = functools.partial(
        actor_objective, model=model, critic=critic, frozen=frozen, slow=slow, online=online, start=start,
        start_cont=start_cont,
        normalizer_state=state.normalizer, key=imag_key, actor_config=actor_config, config=config,
    )  # fmt: skip
    actor_grads, aux = jax.grad(objective, has_aux=True)(state.actor_params)
    actor_updates, actor_opt = optimizer(config, config.actor_lr).update(
        actor_grads, state.actor_opt, state.actor_params
    )
    actor_params = optax.apply_updates(state.actor_params, actor_updates)

    # 4. Critic.
    latents, returns, weights = aux["latents"], aux["returns"], aux["weights"]
    h, z = latents.h[:-1], latents.z[:-1]
    replay = None
    if config.repval_scale > 0:  # official DreamerV3's replay value loss, along the replayed posteriors
        b, length = config.batch, config.length
        rreturns, rweights = replay_returns(
            batch["reward"], batch["terminated"], batch["is_first"], returns[0].reshape(b, length),
            discount=config.discount, lambda_=config.lambda_,
        )  # fmt: skip
        rh, rz = sg(post.h[:, :-1]), sg(post.z[:, :-1])
        rslow = wm.twohot_mean(critic.apply(slow, rh, rz), bins)
        replay = (rh, rz, sg(rreturns), sg(rslow), rweights)

    critic_loss, critic_grads = jax.value_and_grad(
        lambda p: critic_objective(
            p, critic=critic, h=h, z=z, returns=returns, slow_values=aux["slow_values"], weights=weights, bins=bins,
            config=config, replay=replay,
        )
    )(state.critic_params)  # fmt: skip
    critic_updates, critic_opt = optimizer(config, config.critic_lr).update(
        critic_grads, state.critic_opt, state.critic_params
    )
    critic_params = optax.apply_updates(state.critic_params, critic_updates)
    rate = config.slow_rate
    slow_critic_params = behavior.slow_update(state.slow_critic_params, critic_params, rate)

    candidate = AgentState(
        wm_params=wm_params,
        actor_params=actor_params,
        critic_params=critic_params,
        slow_critic_params=slow_critic_params,
        wm_opt=wm_opt,
        actor_opt=actor_opt,
        critic_opt=critic_opt,
        normalizer=aux["normalizer"],
        key=key,
        step=state.step + 1,
    )
    # A non-finite loss or gradient anywhere skips the whole update (the key still advances).
    finite = jnp.all(jnp.stack([
        jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((wm_loss, wm_grads, actor_grads, critic_loss, critic_grads))
    ]))  # fmt: skip
    kept = {
        name: jax.tree.map(lambda new, old: jnp.where(finite, new, old), getattr(candidate, name), getattr(state, name))
        for name in ("wm_params", "actor_params", "critic_params", "slow_critic_params", "wm_opt", "actor_opt",
                     "critic_opt", "normalizer", "step")
    }  # fmt: skip
    new_state = AgentState(**kept, key=key)
    metrics = {
        **wm_metrics,
        "actor_loss": aux["actor_loss"],
        "critic_loss": critic_loss,
        "entropy": aux["entropy"],
        "imag_return": jnp.mean(returns[0]),
        "imag_reward": aux["imag_reward"],
        "imag_cont": aux["imag_cont"],
        "return_scale": aux["scale"],
        "skipped": 1.0 - finite.astype(jnp.float32),
    }
    return new_state, metrics


def make_update(wm_config: wm.WorldModelConfig, actor_config: da.ActorConfig, config: AgentConfig, *, devices: int = 1):
    """Jitted `(state, batch) -> (state, metrics)`; the state's buffers are donated.

    `devices > 1`: data parallel over the first `devices` of `jax.devices()`. The replayed batch
    (and with it every imagination start) is split along `B` over a mesh axis `"batch"`, the state
    is replicated, and XLA sums the gradients across devices. The random draws do not depend on the
    split (jax's partitionable threefry), so the result is the one-device update up to the order of
    float sums. `config.batch` must be a multiple of `devices`.
    """
    step = functools.partial(train_step, wm_config=wm_config, actor_config=actor_config, config=config)
    if devices == 1:
        return jax.jit(step, donate_argnums=0)
    available = jax.devices()
    if not 1 <= devices <= len(available) or config.batch % devices:
        raise ValueError(
            f"make_update: `devices` must be in [1, {len(available)}] (jax.devices()) and divide the batch "
            f"{config.batch}, got {devices}."
        )
    mesh = jax.sharding.Mesh(np.array(available[:devices]), ("batch",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    return jax.jit(step, donate_argnums=0, in_shardings=(replicated, split), out_shardings=(replicated, replicated))


# ----------------------------------------------------------------------------- acting


def make_policy_step(wm_config: wm.WorldModelConfig, actor_config: da.ActorConfig):
    """Jitted acting step on a batch of `N` environments.

    `(wm_params, actor_params, latent, prev_action [N, A], obs [N, O], is_first [N], key, counter, deterministic)
    -> (latent, actor action [N, A] (the env's, in bounds / one-hot), model action [N, A])`, with the
    step's randomness `fold_in(key, counter)` (an int, so the caller never splits keys on the host):
    the posterior latent is updated with the new observation, then `da.act(training=False)` acts on it
    (for a sampled bounded_normal action `act(training=True)`, whose `raw_sample` the world model reads).
    """
    model = wm.WorldModel(wm_config)

    @functools.partial(jax.jit, static_argnames=("deterministic",))
    def policy_step(wm_params, actor_params, latent, prev_action, obs, is_first, key, counter, *, deterministic):
        post_key, act_key = jax.random.split(jax.random.fold_in(key, counter))
        embed = model.apply(wm_params, obs, method=wm.WorldModel.embed)
        latent, _, _ = wm.obs_step(model, wm_params, latent, prev_action, embed, is_first, post_key)
        if deterministic:
            action = da.act(actor_params, actor_config, latent.h, latent.z, None, training=False, deterministic=True)
            return latent, action, spaces.model_action(actor_config, action)
        if actor_config.distribution == "bounded_normal":
            out = da.act(actor_params, actor_config, latent.h, latent.z, act_key, training=True)
            return latent, out.action, spaces.model_action(actor_config, out.action, out.raw_sample)
        action = da.act(actor_params, actor_config, latent.h, latent.z, act_key, training=False)
        return latent, action, spaces.model_action(actor_config, action)

    return policy_step
