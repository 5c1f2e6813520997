r"""One jitted DreamerV3 update: world model on replay, then actor and critic in its imagination.

`update(state, batch) -> (state, metrics, posteriors)` (built by `make_update`):

1. **World model**: `world_model_loss` on the replayed batch `[B, L]`, one optimizer step; its
   scan starts from zeros, or with `replay_context` (official DreamerV3's `replay_context: 1`)
   from the latent the replay stored with the row before the window.
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
   toward `replay_returns` (official DreamerV3's replay value loss). With `repval_grad` (official
   DreamerV3's `repval_grad: True`) that loss's gradient also reaches the world model through the
   replayed posteriors, added to step 1's gradient before its optimizer step (one loss over all
   modules, as official; needs `imagine_pre_update`).

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
from dreamer_actor.agent import behavior, flags, optimizers, spaces
from dreamer_actor.agent import world_model as wm

# AgentConfig fields that earlier agent.json files carry: the actor's shape was never read from them (it is
# its `da.ActorConfig`'s), and the critic's width was always the world model's `units`, which it now reads.
RETIRED_FIELDS = ("actor_layers", "actor_units", "critic_units")
# The learning rules whose defaults became official DreamerV3's on 6 December 2026, with the values a
# file written before each field existed was trained with (every later file stores its own).
EARLIER_RULES = {"slow_target": True, "predicted_start_cont": False, "repval_scale": 0.0, "imagine_pre_update": False}


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Learning hyperparameters (static: a change recompiles); a run's `RunConfig.agent`.

    A field with help text is also the command-line flag of the same name (`flags.flag`); a bad value
    is a ValueError naming it. The others:

    Attributes:
      lambda_: of the lambda-returns (DreamerV3: 0.95).
      rho: weight of REINFORCE in the `"mix"` estimator.
      grad_clip: Adam's global-norm clipping; agc: LaProp's adaptive clipping (`optimizers.laprop`).
      slow_rate: EMA rate of the slow critic; slow_reg: weight of the critic's pull to it.
      critic_layers: hidden layers of the critic (its width is the world model's `units`, as the actor's).
    """

    batch: int = flags.flag(16, "replayed sequences B per update", flags.int_at_least(1))
    length: int = flags.flag(32, "replayed sequence length L (B x L imagination starts)", flags.int_at_least(1))
    horizon: int = flags.flag(15, "imagination horizon", flags.int_at_least(1))
    discount: float = flags.flag(
        0.99, "discount of the lambda-returns (times the continue head's prediction)", flags.number(low=0.0, high=1.0)
    )
    lambda_: float = flags.field(0.95, flags.number(low=0.0, high=1.0))
    estimator: str = flags.flag(
        "reinforce",
        "actor gradient: reinforce (DreamerV3), dynamics (backprop through the world model), mix",
        flags.choice(da.train.ESTIMATORS),
    )
    rho: float = flags.field(0.5, flags.number(low=0.0, high=1.0))
    entropy_coef: float = flags.flag(3e-4, "actor entropy bonus", flags.number(low=0.0))
    model_lr: float = flags.flag(6e-4, "world-model learning rate", flags.number(positive=True))
    actor_lr: float = flags.flag(3e-4, "actor learning rate", flags.number(positive=True))
    critic_lr: float = flags.flag(3e-4, "critic learning rate", flags.number(positive=True))
    optimizer: str = flags.flag(
        "adam",
        "adam (global-norm clip 100) or laprop (official DreamerV3's: adaptive clip 0.3, LaProp, 1,000-update"
        " warm-up; official lr 4e-5)",
        flags.choice(optimizers.OPTIMIZERS),
    )
    grad_clip: float = flags.field(100.0, flags.number(positive=True))
    agc: float = flags.field(0.3, flags.number(positive=True))
    slow_rate: float = flags.field(0.02, flags.number(low=0.0, high=1.0))
    slow_reg: float = flags.field(1.0, flags.number(low=0.0))
    slow_target: bool = flags.flag(
        False,
        "lambda-returns bootstrap and advantage baseline from the slow critic (off: the online critic, as "
        "official DreamerV3)",
        flags.boolean,
    )
    predicted_start_cont: bool = flags.flag(
        True,
        "weight imagination starts by the continue head's prediction (official DreamerV3 and "
        "da.imagination_weights' recommendation; off: the replayed 1 - terminated)",
        flags.boolean,
    )
    repval_scale: float = flags.flag(
        0.3,
        "weight of the replay value loss: the critic also learns lambda-returns along the replayed posteriors"
        " (official DreamerV3: 0.3; 0 is off)",
        flags.number(low=0.0),
    )
    repval_grad: bool = flags.flag(
        False,
        "the replay value loss also trains the world model: its gradient flows into the replayed posteriors "
        "(official DreamerV3's repval_grad: True; needs --imagine-pre-update; no effect at --repval-scale 0)",
        flags.boolean,
    )
    imagine_pre_update: bool = flags.flag(
        True,
        "roll imagination out in the world model that made the starts, before this update's step (official "
        "DreamerV3; off: the updated one)",
        flags.boolean,
    )
    contdisc: bool = flags.flag(
        False,
        "the discount goes into the continue head's target, (1 - terminated) * discount, and imagination "
        "discounts by the predicted continue alone (official DreamerV3 with --discount 0.997); the replay "
        "value loss keeps the discount",
        flags.boolean,
    )
    replay_context: bool = flags.flag(
        False,
        "each replayed window starts from the latent stored with the row before it (the acting posterior, then "
        "the latest update's) instead of zeros (official DreamerV3's replay_context: 1)",
        flags.boolean,
    )
    critic_layers: int = flags.field(2, flags.int_at_least(1))

    def __post_init__(self):
        flags.check_fields(self)
        if self.contdisc and self.discount <= 0.0:
            raise ValueError("AgentConfig: `--contdisc` needs `--discount` > 0 (it is the continue head's target).")
        if self.repval_grad and not self.imagine_pre_update:
            raise ValueError(
                "AgentConfig: `--repval-grad` needs `--imagine-pre-update`: the world model's step waits for the "
                "replay value loss, which needs the imagined returns."
            )

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> AgentConfig:
        """The config of `dataclasses.asdict(config)` (an `agent.json`'s `"agent_config"`).

        `RETIRED_FIELDS`, which earlier files carry, are dropped; any other unknown field is a
        TypeError naming it. A learning rule the file predates is the value it was trained with
        (`EARLIER_RULES`), not today's default.
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


def apply_step(config: AgentConfig, lr: float, grads: Any, params: Any, opt_state: Any) -> tuple[Any, Any]:
    """One step of `optimizer(config, lr)`: `(new params, new optimizer state)`."""
    updates, opt_state = optimizer(config, lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def init_agent(
    key: jax.Array, wm_config: wm.WorldModelConfig, actor_config: da.ActorConfig, config: AgentConfig
) -> AgentState:
    """Fresh networks and optimizer states."""
    wm_key, actor_key, critic_key, key = jax.random.split(key, 4)
    wm_params = wm.init_world_model(wm_key, wm_config)
    latent = wm.initial_latent(wm_config, (1,))
    actor_params = da.Actor.from_config(actor_config).init(actor_key, latent.h, latent.z)
    critic_params = Critic(wm_config.units, config.critic_layers, wm_config.num_bins, wm_config.norm).init(
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
    """Step 6: `behavior.critic_loss` with the two-hot cross-entropy of the critic's logits, to `sg(returns)`
    plus `slow_reg` times that to the slow critic; with `replay` (`(h, z, returns, slow_values, weights)`
    of the replayed posteriors, `train_step`'s step 4), plus `repval_scale` times the same loss along them."""

    def loss(h, z, returns, slow_values, weights):
        logits = critic.apply(critic_params, h, z)
        per_step = lambda target: wm.twohot_loss(logits, target, bins)
        return behavior.critic_loss(per_step, returns, weights, slow_values=slow_values, slow_reg=config.slow_reg)

    total = loss(h, z, returns, slow_values[:-1], weights)
    if replay is not None:
        total = total + config.repval_scale * loss(*replay)
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
      batch: `[B, L, ...]` arrays from `ReplayStreams.sample`; with `config.replay_context`, from
        `ReplayStreams.sample_with_context` (plus `context_h [B, D]`, `context_z [B, S, C]`, the start).

    Returns:
      `(new state, metrics, posteriors)`: the scalar metrics, and the replayed batch's posterior
      `Latent` (`[B, L, ...]`, from the world model before this update) that `--replay-context`
      stores back into the replay.
    """
    model = wm.WorldModel(wm_config)
    critic = Critic(wm_config.units, config.critic_layers, wm_config.num_bins, wm_config.norm)
    bins = wm.twohot_bins(wm_config.num_bins)
    key, wm_key, imag_key = jax.random.split(state.key, 3)
    sg = jax.lax.stop_gradient

    # 1. World model. With `repval_grad` its gradient also carries the replay value loss's through the
    # posteriors (step 4), so the loss is linearized here and its step waits for that cotangent.
    repval_grad = config.repval_grad and config.repval_scale > 0
    context = wm.Latent(batch["context_h"], batch["context_z"]) if config.replay_context else None
    if repval_grad:

        def loss_and_posteriors(p):
            loss, (latents, metrics) = wm.world_model_loss(model, p, batch, wm_key, context)
            return (loss, latents), metrics

        (wm_loss, post), wm_vjp, wm_metrics = jax.vjp(loss_and_posteriors, state.wm_params, has_aux=True)
    else:
        (wm_loss, (post, wm_metrics)), wm_grads = jax.value_and_grad(
            lambda p: wm.world_model_loss(model, p, batch, wm_key, context), has_aux=True
        )(state.wm_params)
        wm_params, wm_opt = apply_step(config, config.model_lr, wm_grads, state.wm_params, state.wm_opt)

    # 2. Starts: all B * L posterior states.
    n = config.batch * config.length
    start = jax.tree.map(lambda x: sg(x.reshape(n, *x.shape[2:])), post)
    start_cont = 1.0 - batch["terminated"].reshape(n).astype(jnp.float32)
    # The rollout's model: after this update's world-model step, or (official DreamerV3) the parameters that
    # also made the starts.
    frozen = sg(state.wm_params if config.imagine_pre_update else wm_params)  # pre-update with repval_grad
    slow, online = sg(state.slow_critic_params), sg(state.critic_params)

    # 3. Actor.
    objective = functools.partial(
        actor_objective, model=model, critic=critic, frozen=frozen, slow=slow, online=online, start=start,
        start_cont=start_cont,
        normalizer_state=state.normalizer, key=imag_key, actor_config=actor_config, config=config,
    )  # fmt: skip
    actor_grads, aux = jax.grad(objective, has_aux=True)(state.actor_params)
    actor_params, actor_opt = apply_step(config, config.actor_lr, actor_grads, state.actor_params, state.actor_opt)

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

    def critic_loss_fn(p, replay_latent):
        return critic_objective(
            p, critic=critic, h=h, z=z, returns=returns, slow_values=aux["slow_values"], weights=weights, bins=bins,
            config=config, replay=replay if replay is None else (*replay_latent, *replay[2:]),
        )  # fmt: skip

    if repval_grad:
        # The replay value loss's gradient at the replayed posteriors (the window's last step has none),
        # pulled back through the world model and added to its own loss's gradient: official DreamerV3's
        # one loss over all modules with `repval_grad: True`.
        critic_loss, (critic_grads, (grad_h, grad_z)) = jax.value_and_grad(critic_loss_fn, argnums=(0, 1))(
            state.critic_params, (post.h[:, :-1], post.z[:, :-1])
        )
        pad = lambda g: jnp.concatenate([g, jnp.zeros_like(g[:, :1])], 1)
        (wm_grads,) = wm_vjp((jnp.ones_like(wm_loss), wm.Latent(pad(grad_h), pad(grad_z))))
        wm_params, wm_opt = apply_step(config, config.model_lr, wm_grads, state.wm_params, state.wm_opt)
    else:
        critic_loss, critic_grads = jax.value_and_grad(critic_loss_fn)(
            state.critic_params, None if replay is None else replay[:2]
        )
    critic_params, critic_opt = apply_step(
        config, config.critic_lr, critic_grads, state.critic_params, state.critic_opt
    )
    slow_critic_params = behavior.slow_update(state.slow_critic_params, critic_params, config.slow_rate)

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
    return new_state, metrics, jax.tree.map(sg, post)


def model_step(
    state: AgentState, batch: dict[str, jax.Array], *, wm_config: wm.WorldModelConfig, config: AgentConfig
) -> tuple[AgentState, dict[str, jax.Array]]:
    """A world-model-only update: step 1 of `train_step` alone (the loop's `--model-extra-ratio`).

    Args:
      batch: `[B, L, ...]` arrays from `ReplayStreams.sample` (no replay context).

    Returns:
      `(new state, metrics)`: the world model and its optimizer state one step on; actor, critic, slow
      critic, return normalizer and `step` (full updates done) as they were; the key advanced. A
      non-finite loss or gradient skips it as in `train_step` (metric `skipped`).
    """
    model = wm.WorldModel(wm_config)
    key, wm_key, _ = jax.random.split(state.key, 3)  # as `train_step` splits it: the same world-model step
    (wm_loss, (_, metrics)), grads = jax.value_and_grad(
        lambda p: wm.world_model_loss(model, p, batch, wm_key), has_aux=True
    )(state.wm_params)
    wm_params, wm_opt = apply_step(config, config.model_lr, grads, state.wm_params, state.wm_opt)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((wm_loss, grads))]))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = state.replace(wm_params=keep(wm_params, state.wm_params), wm_opt=keep(wm_opt, state.wm_opt), key=key)
    return new_state, {**metrics, "skipped": 1.0 - finite.astype(jnp.float32)}


def make_model_update(wm_config: wm.WorldModelConfig, config: AgentConfig):
    """Jitted `model_step`: `(state, batch) -> (state, metrics)`; the state's buffers are donated."""
    return jax.jit(functools.partial(model_step, wm_config=wm_config, config=config), donate_argnums=0)


def make_update(wm_config: wm.WorldModelConfig, actor_config: da.ActorConfig, config: AgentConfig, *, devices: int = 1):
    """Jitted `train_step`: `(state, batch) -> (state, metrics, posteriors)`; the state's buffers are donated.

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
    return jax.jit(
        step, donate_argnums=0, in_shardings=(replicated, split), out_shardings=(replicated, replicated, split)
    )


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
