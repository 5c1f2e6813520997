r"""A small DreamerV3-style world model (RSSM) in flax linen.

Shapes: `B` batch, `L` sequence length, `O` observation width, `A` world-model action width,
`D` GRU width (`deter`), `S x C` categorical latents (`stoch x classes`), `E` embedding width,
`K = 255` two-hot bins.

Time convention of a replayed sequence (as `replay.Replay` stores it): step `t` holds the
observation `x_t`, the action `a_{t-1}` that led to it (zeros at an episode start), the reward
`r_t` of that transition, `is_first_t` and `terminated_t`. The RSSM

    h_t = GRU(h_{t-1}, z_{t-1}, a_{t-1})          (state and action reset to 0 where is_first_t)
    prior      p(z_t | h_t)
    posterior  q(z_t | h_t, e_t),  e_t = enc(symlog(x_t))

and the heads read the feature `concat(h_t, flatten(z_t))`: the decoder predicts `symlog(x_t)`,
the reward head `r_t` (symlog two-hot), the continue head `1 - terminated_t` (a time-limit
truncation is *not* a terminal, so it is never a target 0).

Everything is pure: `WorldModel` holds the parameters; `observe`, `imagine_step`,
`world_model_loss` are functions of `(model, params, ...)` that scan over time with `lax.scan`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

import dreamer_actor as da
from dreamer_actor.agent import flags

NUM_BINS = 255
NORMS = ("layer", "rms")
EARLIER_NORM = "layer"  # the default until 6 December 2026: what a file without `norm` was trained with


# ----------------------------------------------------------------------------- transforms


def symlog(x: jax.Array) -> jax.Array:
    """`sign(x) log(1 + |x|)`, any shape."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    """Inverse of `symlog`: `sign(x) (exp(|x|) - 1)`, any shape."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def twohot_bins(num_bins: int = NUM_BINS) -> jax.Array:
    """`[K]` DreamerV3 bins `symexp(linspace(-20, 20, K))`, exactly symmetric around 0 (K odd)."""
    if num_bins % 2 != 1 or num_bins < 3:
        raise ValueError(f"twohot_bins: `num_bins` must be odd and >= 3, got {num_bins}.")
    half = symexp(jnp.linspace(-20.0, 0.0, (num_bins - 1) // 2 + 1, dtype=jnp.float32))
    return jnp.concatenate([half, -half[:-1][::-1]], 0)


def twohot_encode(x: jax.Array, bins: jax.Array) -> jax.Array:
    """Two-hot encoding `[...]` -> `[..., K]` on the bins (values outside are clipped to the end bins).

    The two weights interpolate linearly between the neighbouring bins, so
    `sum(twohot_encode(x) * bins, -1) == x` for every `x` inside `[bins[0], bins[-1]]`.
    """
    x = jnp.clip(x, bins[0], bins[-1])
    num_bins = bins.shape[0]
    grid = bins.reshape((1,) * x.ndim + bins.shape)  # explicit broadcast (rank promotion may be "raise")
    count = jnp.sum((grid <= x[..., None]).astype(jnp.int32), -1)  # bins[count - 1] <= x < bins[count]
    above = jnp.clip(count, 1, num_bins - 1)
    below = above - 1
    lo, hi = bins[below], bins[above]
    weight_hi = jnp.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return (
        jax.nn.one_hot(below, num_bins) * (1.0 - weight_hi)[..., None]
        + jax.nn.one_hot(above, num_bins) * weight_hi[..., None]
    )


def twohot_mean(logits: jax.Array, bins: jax.Array) -> jax.Array:
    """Expected value `[..., K]` logits -> `[...]` over the antisymmetric `twohot_bins`.

    Each pair of bins `+-b_k` enters as `(p_{m+k} - p_{m-k}) * b_k`: the probabilities cancel before
    they meet the bins (up to 4.9e8), so uniform probabilities (a zero-initialized head) give 0 exactly
    in any summation order. The plain `sum(p * bins)` is off by up to ~2 there, and XLA reorders it
    (it did when the batch was sharded over devices). Elsewhere both are within float32 rounding of
    `sum(p * |bins|)` (tests/test_agent_world_model.py).
    """
    probs = jax.nn.softmax(logits, -1)
    m = (bins.shape[0] - 1) // 2
    asymmetry = probs[..., m + 1 :] - probs[..., :m][..., ::-1]  # p(+b_k) - p(-b_k), k = 1 .. m
    return jnp.sum(asymmetry * bins[m + 1 :].reshape((1,) * (asymmetry.ndim - 1) + (m,)), -1)


def twohot_loss(logits: jax.Array, target: jax.Array, bins: jax.Array) -> jax.Array:
    """Cross-entropy `[..., K]`, `[...]` -> `[...]` of the logits against `twohot_encode(sg(target))`."""
    target = jax.lax.stop_gradient(twohot_encode(target, bins))
    return -jnp.sum(target * jax.nn.log_softmax(logits, -1), -1)


def unimix_probs(logits: jax.Array, unimix: float) -> jax.Array:
    """`[..., C]` logits -> `(1 - unimix) softmax + unimix / C`: every class keeps >= unimix / C."""
    classes = logits.shape[-1]
    return (1.0 - unimix) * jax.nn.softmax(logits, -1) + unimix / classes


def sample_onehot(key: jax.Array, probs: jax.Array) -> jax.Array:
    """Straight-through one-hot sample `[..., S, C]` of `probs`: value one-hot, gradient of `probs`."""
    index = jax.random.categorical(key, jnp.log(probs), -1)
    onehot = jax.nn.one_hot(index, probs.shape[-1], dtype=probs.dtype)
    return onehot + (probs - jax.lax.stop_gradient(probs))  # exactly one-hot forward


def categorical_kl(p: jax.Array, q: jax.Array) -> jax.Array:
    """`KL(p || q)` of `[..., S, C]` probabilities, summed over the `S` latents -> `[...]`."""
    return jnp.sum(p * (jnp.log(p) - jnp.log(q)), (-2, -1))


def kl_losses(post: jax.Array, prior: jax.Array, free_nats: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """DreamerV3's balanced KL terms of `[..., S, C]` posterior and prior probabilities.

    Returns `(dyn, rep, kl)`, each `[...]`: `dyn = max(free, KL(sg(post) || prior))` trains the prior,
    `rep = max(free, KL(post || sg(prior)))` the posterior (representation); `kl` is the plain value.
    """
    sg = jax.lax.stop_gradient
    dyn = categorical_kl(sg(post), prior)
    rep = categorical_kl(post, sg(prior))
    return jnp.maximum(dyn, free_nats), jnp.maximum(rep, free_nats), sg(dyn)


# ----------------------------------------------------------------------------- modules


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """Sizes and loss scales of the world model (static); a run's `RunConfig.world_model`.

    A field with help text is also the command-line flag of the same name (`flags.flag`); a bad value
    is a ValueError naming it. The others:

    Attributes:
      obs_dim: `O`, observation width (flat vector observations); action_dim: `A`, width of the action
        the model reads (one-hot for discrete actions). Both come from the env's spaces: a run's
        config leaves them None and `RunConfig.model_configs(env)` sets them.
      unimix: uniform mix of the latent categoricals (DreamerV3: 1%).
      free_nats: free bits of both KL terms (DreamerV3: 1).
      dyn_scale, rep_scale: KL balancing (DreamerV3: 1.0 and 0.1).
      num_bins: two-hot bins of the reward head (and of the agent's critic).
      cont_discount: the continue head's target is `(1 - terminated) * cont_discount` (1: the plain
        flag; official DreamerV3's `contdisc` puts its discount `1 - 1/333` here; a run sets it from
        `AgentConfig.contdisc` and `discount`).

    `terminal_weight` weighs a terminal step's continue loss (DreamerV3: 1, every step alike).
    Terminals are rare in replay (CartPole-v1: well under 1% of the steps once episodes are long), so
    a larger weight makes the head fit them; it biases p(continue) down only where the model cannot
    tell a terminal from a non-terminal.
    """

    obs_dim: int | None = flags.field(None, flags.int_at_least(1, none=True))
    action_dim: int | None = flags.field(None, flags.int_at_least(1, none=True))
    deter: int = flags.flag(128, "RSSM GRU width D", flags.int_at_least(1))
    stoch: int = flags.flag(16, "number S of categorical latents", flags.int_at_least(1))
    classes: int = flags.flag(8, "classes C per latent", flags.int_at_least(2))
    units: int = flags.flag(128, "width of every MLP (encoder, decoder, heads, actor, critic)", flags.int_at_least(1))
    layers: int = flags.flag(
        2, "hidden layers of encoder, decoder and heads (actor and critic have 2)", flags.int_at_least(0)
    )
    unimix: float = flags.field(0.01, flags.number(low=0.0, high=0.99))
    free_nats: float = flags.field(1.0, flags.number(low=0.0))
    dyn_scale: float = flags.field(1.0, flags.number(low=0.0))
    rep_scale: float = flags.field(0.1, flags.number(low=0.0))
    num_bins: int = flags.field(NUM_BINS, flags.int_at_least(2))
    terminal_weight: float = flags.flag(
        1.0, "weight of terminal steps in the continue head's loss (DreamerV3: 1)", flags.number(positive=True)
    )
    norm: str = flags.flag(
        "rms",
        "rms (official DreamerV3's RMSNorm) or layer (LayerNorm) in every network: world model, GRU, actor, critic",
        flags.choice(NORMS),
    )
    cont_discount: float = flags.field(1.0, flags.number(positive=True, high=1.0))

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> WorldModelConfig:
        """The config of `dataclasses.asdict(config)` (an `agent.json`'s `"world_model_config"`).

        A file written before `norm` existed was trained with LayerNorm, the default until
        6 December 2026; it says `"layer"` here, not today's default.
        """
        return cls(**{"norm": EARLIER_NORM, **fields})

    def __post_init__(self):
        flags.check_fields(self)

    @property
    def feat_dim(self) -> int:
        """Width of `concat(h, flatten(z))`."""
        return self.deter + self.stoch * self.classes


def _require_dims(config: WorldModelConfig) -> None:
    if config.obs_dim is None or config.action_dim is None:
        raise ValueError(
            "WorldModel: `config.obs_dim` and `config.action_dim` are None; they come from the env's spaces "
            "(RunConfig.model_configs(env) sets them)."
        )


class GRUCell(nn.Module):
    """DreamerV3's normalized GRU: `[..., D]` state, `[..., I]` input -> `[..., D]`; update bias -1."""

    deter: int
    norm: str = "layer"

    @nn.compact
    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        parts = nn.Dense(3 * self.deter, use_bias=False, name="gates")(jnp.concatenate([h, x], -1))
        if self.norm == "rms":
            parts = da.networks.RMSNorm(eps=1e-4, name="norm")(parts)
        else:
            parts = nn.LayerNorm(epsilon=1e-3, name="norm")(parts)
        reset, cand, update = jnp.split(parts, 3, -1)
        reset = jax.nn.sigmoid(reset)
        cand = jnp.tanh(reset * cand)
        update = jax.nn.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * h


class WorldModel(nn.Module):
    """RSSM, encoder, decoder, reward and continue heads; call methods via `model.apply(params, ..., method=)`."""

    config: WorldModelConfig

    def setup(self):
        c = self.config
        _require_dims(c)
        self.encoder = da.networks.MLP(c.units, c.layers, norm=c.norm)
        self.img_in = da.networks.MLP(c.units, 1, norm=c.norm)
        self.gru = GRUCell(c.deter, norm=c.norm)
        self.prior_net = da.networks.MLP(c.units, 1, out=c.stoch * c.classes, norm=c.norm)
        self.post_net = da.networks.MLP(c.units, 1, out=c.stoch * c.classes, norm=c.norm)
        self.decoder = da.networks.MLP(c.units, c.layers, out=c.obs_dim, norm=c.norm)
        self.reward_head = da.networks.MLP(c.units, c.layers, out=c.num_bins, zero_out=True, norm=c.norm)
        self.cont_head = da.networks.MLP(c.units, c.layers, out=1, norm=c.norm)

    def _probs(self, flat_logits: jax.Array) -> jax.Array:
        c = self.config
        return unimix_probs(flat_logits.reshape(*flat_logits.shape[:-1], c.stoch, c.classes), c.unimix)

    def embed(self, obs: jax.Array) -> jax.Array:
        """`[..., O]` observations -> `[..., E]` embeddings of `symlog(obs)`."""
        return self.encoder(symlog(obs))

    def deter_step(self, h: jax.Array, z: jax.Array, action: jax.Array) -> jax.Array:
        """`h [..., D]`, `z [..., S, C]`, `action [..., A]` -> next `h [..., D]`.

        Each action entry is divided by `sg(max(1, |a|))` first (official DreamerV3's RSSM core): a
        bounded_normal sample outside `[-1, 1]` enters at magnitude 1; every other action (inside the
        bounds, one-hot) is unchanged, bit for bit.
        """
        action = action / jax.lax.stop_gradient(jnp.maximum(1.0, jnp.abs(action)))
        z_flat = z.reshape(*z.shape[:-2], -1)
        return self.gru(h, self.img_in(jnp.concatenate([z_flat, action], -1)))

    def prior(self, h: jax.Array) -> jax.Array:
        """`[..., D]` -> prior probabilities `[..., S, C]` (unimixed)."""
        return self._probs(self.prior_net(h))

    def posterior(self, h: jax.Array, embed: jax.Array) -> jax.Array:
        """`[..., D]`, `[..., E]` -> posterior probabilities `[..., S, C]` (unimixed)."""
        return self._probs(self.post_net(jnp.concatenate([h, embed], -1)))

    def heads(self, h: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Feature heads: `(decoded symlog obs [..., O], reward logits [..., K], continue logit [...])`."""
        feat = da.networks.flatten_latent(h, z)
        return self.decoder(feat), self.reward_head(feat), self.cont_head(feat)[..., 0]

    def reward_cont(self, h: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(reward logits [..., K], continue logit [...])` without the decoder (for imagination)."""
        feat = da.networks.flatten_latent(h, z)
        return self.reward_head(feat), self.cont_head(feat)[..., 0]

    def __call__(self, obs: jax.Array, action: jax.Array) -> Any:
        """Touches every submodule once (for `init`): `obs [B, O]`, `action [B, A]`."""
        c = self.config
        h = jnp.zeros((*obs.shape[:-1], c.deter), obs.dtype)
        z = jnp.zeros((*obs.shape[:-1], c.stoch, c.classes), obs.dtype)
        h = self.deter_step(h, z, action)
        post = self.posterior(h, self.embed(obs))
        return self.prior(h), post, self.heads(h, post)


# ----------------------------------------------------------------------------- pure functions


@struct.dataclass
class Latent:
    """RSSM state: `h [..., D]` deterministic, `z [..., S, C]` stochastic (one-hot sample)."""

    h: jax.Array
    z: jax.Array


def initial_latent(config: WorldModelConfig, batch: tuple[int, ...]) -> Latent:
    """Zeros `h [*batch, D]`, `z [*batch, S, C]`: the state before an episode's first step."""
    return Latent(jnp.zeros((*batch, config.deter)), jnp.zeros((*batch, config.stoch, config.classes)))


def init_world_model(key: jax.Array, config: WorldModelConfig) -> Any:
    """Fresh parameters of `WorldModel(config)`."""
    _require_dims(config)
    init = jax.jit(WorldModel(config).init)  # one compiled call: far faster than op-by-op on CPU
    return init(key, jnp.zeros((1, config.obs_dim)), jnp.zeros((1, config.action_dim)))


def _reset(x: jax.Array, is_first: jax.Array) -> jax.Array:
    """Zeros the rows of `x [B, ...]` where `is_first [B]` is true."""
    mask = (1.0 - is_first.astype(x.dtype)).reshape(is_first.shape + (1,) * (x.ndim - is_first.ndim))
    return x * mask


def obs_step(
    model: WorldModel,
    params: Any,
    latent: Latent,
    prev_action: jax.Array,
    embed: jax.Array,
    is_first: jax.Array,
    key: jax.Array,
) -> tuple[Latent, jax.Array, jax.Array]:
    """One filtering step.

    Args:
      latent: previous state, `h [B, D]`, `z [B, S, C]`.
      prev_action: `[B, A]` a_{t-1}.
      embed: `[B, E]` e_t.
      is_first: `[B]` bool; resets state and action to zeros first.
      key: PRNG key of the posterior sample.

    Returns:
      `(Latent(h_t, z_t ~ posterior), posterior probs [B, S, C], prior probs [B, S, C])`.
    """
    h, z, a = _reset(latent.h, is_first), _reset(latent.z, is_first), _reset(prev_action, is_first)
    h = model.apply(params, h, z, a, method=WorldModel.deter_step)
    prior = model.apply(params, h, method=WorldModel.prior)
    post = model.apply(params, h, embed, method=WorldModel.posterior)
    return Latent(h, sample_onehot(key, post)), post, prior


def observe(
    model: WorldModel,
    params: Any,
    obs: jax.Array,
    prev_actions: jax.Array,
    is_first: jax.Array,
    key: jax.Array,
    start: Latent | None = None,
) -> tuple[Latent, jax.Array, jax.Array]:
    """Filters replayed sequences with `lax.scan` over time.

    Args:
      obs: `[B, L, O]`; prev_actions: `[B, L, A]`; is_first: `[B, L]` bool.
      start: state before step 0 (zeros by default).

    Returns:
      `(Latent(h [B, L, D], z [B, L, S, C]), post [B, L, S, C], prior [B, L, S, C])`.
    """
    batch = obs.shape[0]
    start = initial_latent(model.config, (batch,)) if start is None else start
    embeds = model.apply(params, obs, method=WorldModel.embed)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    keys = jax.random.split(key, obs.shape[1])

    def body(latent, inputs):
        action, embed, first, step_key = inputs
        latent, post, prior = obs_step(model, params, latent, action, embed, first, step_key)
        return latent, (latent, post, prior)

    _, (latents, post, prior) = jax.lax.scan(body, start, (swap(prev_actions), swap(embeds), swap(is_first), keys))
    return jax.tree.map(swap, latents), swap(post), swap(prior)


def imagine_step(model: WorldModel, params: Any, latent: Latent, action: jax.Array, key: jax.Array) -> Latent:
    """Prior step `Latent [N, ...]`, `action [N, A]` -> next `Latent` with `z ~ prior` (straight-through)."""
    h = model.apply(params, latent.h, latent.z, action, method=WorldModel.deter_step)
    prior = model.apply(params, h, method=WorldModel.prior)
    return Latent(h, sample_onehot(key, prior))


def world_model_loss(
    model: WorldModel, params: Any, batch: dict[str, jax.Array], key: jax.Array, start: Latent | None = None
) -> tuple[jax.Array, tuple[Latent, dict[str, jax.Array]]]:
    """DreamerV3's world-model loss on a replayed batch.

    `loss = mean_{B,L}(dec + rew + cont + dyn_scale * dyn + rep_scale * rep)` with the symlog
    squared error of the decoder (summed over `O`), the two-hot cross-entropy of the reward,
    the Bernoulli log-loss of the continue flag `(1 - terminated) * cont_discount` (times
    `terminal_weight` at terminal steps), and the free-bits KL terms.

    Args:
      batch: `obs [B, L, O]`, `action [B, L, A]` (a_{t-1}), `reward [B, L]`, `is_first [B, L]`,
        `terminated [B, L]`.
      start: the state before step 0 (zeros by default; `--replay-context` passes the stored one).

    Returns:
      `(loss [], (posterior Latent [B, L, ...], metrics))`.
    """
    c = model.config
    latents, post, prior = observe(model, params, batch["obs"], batch["action"], batch["is_first"], key, start)
    dec, rew_logits, cont_logit = model.apply(params, latents.h, latents.z, method=WorldModel.heads)
    dec_loss = jnp.sum(jnp.square(dec - symlog(batch["obs"])), -1)
    rew_loss = twohot_loss(rew_logits, batch["reward"], twohot_bins(c.num_bins))
    cont_target = (1.0 - batch["terminated"].astype(jnp.float32)) * c.cont_discount
    cont_loss = optax_sigmoid_bce(cont_logit, cont_target) * jnp.where(batch["terminated"], c.terminal_weight, 1.0)
    dyn, rep, kl = kl_losses(post, prior, c.free_nats)
    loss = jnp.mean(dec_loss + rew_loss + cont_loss + c.dyn_scale * dyn + c.rep_scale * rep)
    metrics = {
        "wm_loss": loss,
        "dec_loss": jnp.mean(dec_loss),
        "rew_loss": jnp.mean(rew_loss),
        "cont_loss": jnp.mean(cont_loss),
        "kl": jnp.mean(kl),
    }
    return loss, (latents, metrics)


def optax_sigmoid_bce(logit: jax.Array, target: jax.Array) -> jax.Array:
    """Binary cross-entropy `[...]` of a logit against a target in [0, 1] (stable)."""
    return jnp.maximum(logit, 0.0) - logit * target + jnp.log1p(jnp.exp(-jnp.abs(logit)))
