# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: py:percent
#     notebook_metadata_filter: kernelspec
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # `dreamer_actor` walkthrough
#
# `dreamer_actor` is the *actor* (the policy) of a JAX [DreamerV3](https://arxiv.org/abs/2301.04104)
# agent. For continuous actions it is a **tanh-squashed Gaussian**: the network's raw outputs become a
# mean and a log-std, a pre-squash value `u` (the *raw sample*) is drawn from that Gaussian, and the
# action is
#
# $$a = \tanh(u)\cdot \text{scale} + \text{bias}, \qquad
# \text{scale} = \tfrac{\text{high} - \text{low}}{2},\quad \text{bias} = \tfrac{\text{high} + \text{low}}{2},$$
#
# so every action lies inside the environment's bounds `[low, high]`.
#
# This notebook walks through the library in five steps:
#
# 1. build an `ActorConfig` from a gymnasium `Box`;
# 2. initialise the actor network and act with it (sampling and deterministic);
# 3. look at the density of the squashed actions, and see why the *tanh correction* is needed;
# 4. train a policy on a one-step bandit and watch what the entropy bonus does;
# 5. train an actor in imagination on a pendulum world model.
#
# It runs top to bottom on a CPU in well under three minutes. Setting the environment variable
# `DREAMER_ACTOR_NOTEBOOK_QUICK=1` (the test suite does) shortens the training runs further.
#
# This notebook is kept as a [jupytext](https://jupytext.readthedocs.io) percent script,
# `notebooks/dreamer_actor_walkthrough.py`; `make notebook` writes the `.ipynb` to `build/notebooks/`.

# %%
import os
import time

import gymnasium as gym
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import dreamer_actor as da
from dreamer_actor.examples import evaluation, imagination

QUICK = os.environ.get("DREAMER_ACTOR_NOTEBOOK_QUICK", "") not in ("", "0")
START = time.perf_counter()
print(f"dreamer_actor {da.__version__}, jax {jax.__version__}, devices {jax.devices()}, quick={QUICK}")

# %% [markdown]
# ## 1. A config from the action space
#
# Everything the actor needs to know about the action space and its own architecture lives in one
# frozen object, `ActorConfig`. `ActorConfig.from_space(box, ...)` takes the bounds straight from a
# gymnasium `Box` (it is `ActorConfig.create(box.low, box.high, ...)`) and stores `low`, `high` and
# the `scale` and `bias` of the formula above.
#
# `ActorConfig` is a JAX pytree: `low`, `high`, `scale` and `bias` are its *leaves* (float32 arrays
# you can change without recompiling a jitted function; every continuous action the library returns
# is clipped to `[low, high]`, so it lies exactly inside the `Box`), while the architecture (`layers`,
# `units`, `norm`, ...) is *static* (changing it changes shapes, so it retraces). Bad inputs fail
# early with a `ValueError` that names the problem, e.g. an unbounded `Box` (tanh cannot squash onto
# an infinite interval).
#
# Here: a two-dimensional action space with different bounds per dimension, and a small network.

# %%
box = gym.spaces.Box(low=np.array([-2.0, 0.0], np.float32), high=np.array([3.0, 1.0], np.float32))
config = da.ActorConfig.from_space(box, layers=2, units=64)

print("action_dim:", config.action_dim, "| distribution:", config.distribution)
print("scale:", config.scale, "bias:", config.bias)
print("low:  ", config.low, "high:", config.high)
print("raw outputs of the network:", config.family.num_outputs(config), "(a mean and a log-std per dimension)")

try:
    da.ActorConfig.from_space(gym.spaces.Box(low=-1.0, high=np.inf, shape=(1,), dtype=np.float32))
except ValueError as error:
    print("\nan unbounded Box is rejected:\n ", error)

# %% [markdown]
# ## 2. Initialise the actor and act
#
# In Dreamer the actor sees the world model's latent state, made of two parts: `hidden`, the
# deterministic recurrent state `h_t` (shape `[..., H]`), and `stoch`, the stochastic state `z_t`
# (here `S = 4` categorical variables with `C = 4` classes each, as one-hots: shape `[..., S, C]`).
# `Actor` is a flax module; it concatenates the two, runs an MLP and returns its *raw* output layer,
# `[..., 2A]` for the tanh-Gaussian. `da.policy_head(raw, config)` turns the raw outputs into the
# distribution family's parameters, here `da.tanh_normal.Params(mean, log_std)` of the Gaussian over
# `u` (the mean softly limited, the log-std squashed into `[log_std_min, log_std_max]`). We fake a
# batch of 5 latent states.
#
# `da.act` runs the network, the head and the distribution in one call:
#
# * `training=False`: a sampled action, `[..., A]`, for acting in the environment;
# * `training=False, deterministic=True`: the deterministic action `tanh(mean) * scale + bias`
#   (for evaluation; no key needed);
# * `training=True`: an `ActorOutput(action, raw_sample, log_prob, entropy)` for the actor loss.
#   `raw_sample` is the pre-squash `u` the action came from; `log_prob` is the log-density at the
#   stop-gradiented `raw_sample` (its gradient is the REINFORCE score) and includes the tanh
#   correction of section 3; the `entropy` is a one-sample estimate (the squashed Gaussian has no
#   closed-form entropy).

# %%
actor = da.Actor.from_config(config)
batch = 5
hidden = jax.random.normal(jax.random.key(1), (batch, 32))
stoch = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (batch, 4), 0, 4), 4)  # [B, S=4, C=4]
params = actor.init(jax.random.key(0), hidden, stoch)

raw = actor.apply(params, hidden, stoch)  # [B, 2A]
dist = da.policy_head(raw, config)  # da.tanh_normal.Params(mean, log_std), each [B, A]
print("raw", raw.shape, "-> mean", dist.mean.shape, "std at init:", jnp.exp(dist.log_std)[0])  # about init_std = 1

sampled = da.act(params, config, hidden, stoch, jax.random.key(3), training=False)
greedy = da.act(params, config, hidden, stoch, None, training=False, deterministic=True)
out = da.act(params, config, hidden, stoch, jax.random.key(3), training=True)

print("sampled actions:\n", sampled)
print("deterministic actions:\n", greedy)
print("raw samples u:\n", out.raw_sample)
print("log_prob:", out.log_prob, "\nentropy estimate:", out.entropy)
assert all(box.contains(np.asarray(a)) for a in sampled), "actions must lie in the Box"
assert np.allclose(out.action, sampled), "same key, same sample"
assert np.allclose(da.tanh_normal.squash(out.raw_sample, config), out.action), "a = tanh(u) * scale + bias"
assert np.allclose(
    out.log_prob, da.log_prob_with_tanh_correction(dist.mean, dist.log_std, config, raw_sample=out.raw_sample)
), "act's log_prob is the corrected log-density at its raw sample"

# %% [markdown]
# ## 3. The density of a squashed action, and the tanh correction
#
# If $u \sim \mathcal N(\mu, \sigma^2)$ and $a = s \tanh(u) + b$, the change-of-variables formula gives
# the density of the action:
#
# $$p(a) = \frac{\mathcal N(u;\mu,\sigma)}{|da/du|}, \qquad u = \operatorname{atanh}\frac{a-b}{s},
# \qquad \frac{da}{du} = s\,(1-\tanh^2 u),$$
#
# $$\log p(a) = \log \mathcal N(u;\mu,\sigma) - \log s - \log(1-\tanh^2 u).$$
#
# The last two terms are the *tanh correction* (the log-Jacobian). Forgetting them gives the
# "naive" density $\mathcal N(\operatorname{atanh}\frac{a-b}{s};\mu,\sigma)$, which is not a density
# at all: its integral over `[low, high]` is $s\,\mathbb E[1-\tanh^2 u]$, equal to 1 only by accident.
# In an actor loss the log-prob drives the REINFORCE gradient and the entropy bonus, so a wrong one
# biases both.
#
# `da.log_prob_with_tanh_correction` computes the corrected log-density, either from the pre-squash
# sample `raw_sample=u` (exact, the usual case during training) or from a stored `action=a` (as here;
# `da.tanh_normal.unsquash` is the inverse map `a -> u`). Away from 0 it evaluates
# $\log(1-\tanh^2 u)$ as $2(\log 2 - |u| - \operatorname{softplus}(-2|u|))$, which stays exact where
# $\tanh u$ rounds to $\pm1$ in float32.
#
# Below: a one-dimensional `Box(low=-2, high=3)` and four pre-squash Gaussians `(mean, std)`,
# among them a *saturated* one (mean 2, std 2) that puts much of its mass where tanh is flat,
# i.e. right next to the upper bound.

# %%
box1 = gym.spaces.Box(low=np.array([-2.0], np.float32), high=np.array([3.0], np.float32))
config1 = da.ActorConfig.from_space(box1)
cases = [(0.0, 1.0), (0.7, 0.3), (-1.0, 0.5), (2.0, 2.0)]  # (mean, std) of u


def densities(mean, std, actions):
    # Corrected and naive densities at `actions` [N, 1] for a constant (mean, std).
    mean_arr = jnp.full(actions.shape, mean, actions.dtype)
    log_std_arr = jnp.full(actions.shape, np.log(std), actions.dtype)
    corrected = jnp.exp(da.log_prob_with_tanh_correction(mean_arr, log_std_arr, config1, action=actions))
    u = da.tanh_normal.unsquash(actions, config1)[:, 0]
    naive = jnp.exp(jax.scipy.stats.norm.logpdf(u, mean, std))  # no Jacobian: the common mistake
    return np.asarray(corrected), np.asarray(naive)


low, high = float(box1.low[0]), float(box1.high[0])
grid = np.linspace(low, high, 2001, dtype=np.float32)[1:-1, None]  # interior points, [N, 1]

fig, axes = plt.subplots(1, len(cases), figsize=(17, 3.6), sharex=True)
for ax, (mu, sd) in zip(axes, cases, strict=True):
    corrected, naive = densities(mu, sd, jnp.asarray(grid))
    ax.plot(grid[:, 0], corrected, label="corrected p(a)")
    ax.plot(grid[:, 0], naive, "--", label="naive (no Jacobian)")
    for bound in (low, high):
        ax.axvline(bound, color="grey", lw=0.8)
    top = max(naive.max(), corrected.max())
    ax.set_ylim(0, min(1.1 * top, 2.0))
    title = f"mean {mu}, std {sd}"
    if corrected.max() > 2.0:
        title += "\n(corrected density spikes at the bounds)"
    ax.set_title(title)
    ax.set_xlabel("action a")
axes[0].set_ylabel("density")
axes[0].legend(loc="upper left", fontsize=8)
fig.suptitle("tanh-squashed Gaussian on Box(low=-2, high=3)")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Do they integrate to one?** We integrate both curves over `[low, high]` with the trapezoid rule.
#
# A uniform grid in `a` is fine for the first three cases, but the saturated policy piles a large part
# of its mass into a thin layer next to the bound (a sample `u = 4` is already within
# `2.5 * (1 - tanh(4)) ≈ 0.0017` of `high`), which a uniform grid cannot resolve. So we also integrate on
# nodes `a_i = s tanh(u_i) + b` for a fine uniform grid of `u_i` in `[-15, 15]`: the same trapezoid rule
# in `a`, with nodes that crowd where the density does. Those nodes need float64 (in float32,
# `tanh(u)` rounds to 1 for `u > 9`), so that part runs under `jax.enable_x64`; the library computes in
# float64 when given float64 inputs.
#
# Reference for the naive integral: $s\,\mathbb E[1-\tanh^2 u]$ by Monte Carlo (an independent check).

# %%
u_nodes = np.linspace(-15.0, 15.0, 6001)
rng = np.random.default_rng(0)
print(f"{'mean':>5} {'std':>4} | {'corrected':>9} {'(uniform grid)':>14} | {'naive':>6} {'s E[1-tanh^2 u]':>15}")
with jax.enable_x64(True):
    a_nodes = jnp.asarray(float(config1.bias[0]) + float(config1.scale[0]) * np.tanh(u_nodes))[:, None]
    for mu, sd in cases:
        corrected, naive = densities(mu, sd, a_nodes)
        int_corrected = np.trapezoid(corrected, a_nodes[:, 0])
        int_naive = np.trapezoid(naive, a_nodes[:, 0])
        int_uniform = np.trapezoid(densities(mu, sd, jnp.asarray(grid))[0], grid[:, 0])
        reference = float(config1.scale[0]) * np.mean(1.0 - np.tanh(rng.normal(mu, sd, 10**6)) ** 2)
        print(f"{mu:5.1f} {sd:4.1f} | {int_corrected:9.5f} {int_uniform:14.5f} | {int_naive:6.3f} {reference:15.3f}")
        assert abs(int_corrected - 1.0) < 1e-3, "the corrected density integrates to 1"
        assert abs(int_naive - reference) < 0.01, "naive integral = s E[1 - tanh(u)^2]"
        assert abs(int_naive - 1.0) > 0.1, "the naive density is not normalized"

# %% [markdown]
# The corrected density integrates to 1 in every case (on the uniform grid the saturated case seems
# to lose mass: that is the spike at the bound the grid steps over, not an error of the density).
# The naive one integrates to anything between 0.6 and 1.6 here. Note also its *shape*: for the
# saturated policy the naive curve is small near `high`, exactly where the policy actually puts its
# actions.

# %% [markdown]
# ## 4. A bandit: what the entropy bonus does
#
# A one-step problem: pick an action `a` in `[-2, 3]`, receive the reward $r(a) = -(a - 2)^2$,
# peaked at the interior point `a* = 2`. The policy is just two learnable numbers, the pre-squash
# `mean` and `log_std` (a network on a constant input would behave the same way).
#
# Each training step samples a batch of 256 actions with `da.sample_action` (which returns the
# action and its `raw_sample`) and minimises `da.actor_loss`, DreamerV3's REINFORCE loss with an
# entropy bonus:
#
# $$\mathcal L = -\operatorname{mean}\big(\operatorname{sg}(A)\,\log\pi(a) + \beta\,H[\pi]\big),
# \qquad A = r(a) - \bar r,$$
#
# where the advantage `A` uses the batch-mean reward as the baseline, `sg` is stop-gradient, the
# log-prob is the corrected one from section 3 (evaluated at the raw samples), and the
# entropy `H` is `da.entropy_estimate` (exact Gaussian part plus a sampled Jacobian term).
#
# We train with Adam for several values of the entropy coefficient `β`. `entropy_coef` may be a traced
# scalar, so `jax.vmap` trains all of them at once in one compiled function; the training loop itself
# is a `jax.lax.scan`.

# %%
bandit_config = da.ActorConfig.create(low=[-2.0], high=[3.0])
TARGET = 2.0
BATCH = 256
STEPS = 300 if QUICK else 1000
COEFS = np.array([0.0, 0.03, 0.3], np.float32)
optimizer = optax.adam(0.05)


def reward(action):
    return -jnp.square(action[..., 0] - TARGET)


def bandit_loss(theta, key, entropy_coef):
    mean = jnp.broadcast_to(theta["mean"], (BATCH, 1))
    log_std = jnp.broadcast_to(theta["log_std"], (BATCH, 1))
    action, raw_sample = da.sample_action(key, mean, log_std, bandit_config)
    log_prob = da.log_prob_with_tanh_correction(mean, log_std, bandit_config, raw_sample=raw_sample)
    entropy = da.entropy_estimate(mean, log_std, bandit_config, raw_sample=raw_sample)
    r = reward(action)
    loss, metrics = da.actor_loss(log_prob, entropy, r - jnp.mean(r), entropy_coef=entropy_coef)
    return loss, {"entropy": metrics["entropy"], "reward": jnp.mean(r)}


def train_bandit(key, entropy_coef):
    theta = {"mean": jnp.zeros(1), "log_std": jnp.zeros(1)}

    def step(carry, step_key):
        theta, opt_state = carry
        grads, metrics = jax.grad(bandit_loss, has_aux=True)(theta, step_key, entropy_coef)
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(theta, updates), opt_state), metrics

    (theta, _), history = jax.lax.scan(step, (theta, optimizer.init(theta)), jax.random.split(key, STEPS))
    return theta, history


tic = time.perf_counter()
thetas, history = jax.jit(jax.vmap(train_bandit, in_axes=(None, 0)))(jax.random.key(0), jnp.asarray(COEFS))
jax.block_until_ready(history)
print(f"{len(COEFS)} x {STEPS} steps in {time.perf_counter() - tic:.1f} s")


# %%
def smooth(x, width=20):
    return np.convolve(x, np.ones(width) / width, mode="valid")


fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
actions = np.linspace(-2.0, 3.0, 2001, dtype=np.float32)[1:-1, None]
for i, beta in enumerate(COEFS):
    axes[0].plot(smooth(np.asarray(history["entropy"][i])), label=f"β = {beta:g}")
    axes[1].plot(smooth(np.asarray(history["reward"][i])), label=f"β = {beta:g}")
    mean = jnp.broadcast_to(thetas["mean"][i], actions.shape)
    log_std = jnp.broadcast_to(thetas["log_std"][i], actions.shape)
    density = jnp.exp(da.log_prob_with_tanh_correction(mean, log_std, bandit_config, action=jnp.asarray(actions)))
    axes[2].plot(actions[:, 0], density, label=f"β = {beta:g}")
axes[0].set(title="entropy estimate (nats)", xlabel="step")
axes[1].set(title="mean reward", xlabel="step", ylim=(-1.5, 0.05))
axes[2].set(title="final policy density p(a)", xlabel="action a")
axes[2].axvline(TARGET, color="grey", ls=":", label="a* (best action)")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Without a bonus (`β = 0`) the policy keeps narrowing around `a* = 2`: greedy, but it stops
# exploring. A larger `β` keeps it wider, at a small cost in reward.
#
# How wide? For a narrow policy, `a ≈ N(a*, σ²)`, the objective is
# $\mathbb E[r] + \beta H \approx -\sigma^2 + \beta\cdot\tfrac12\log(2\pi e\sigma^2)$, maximised at
# $\sigma = \sqrt{\beta/2}$. We compare that with the spread of actions sampled from the trained
# policies (and check that the deterministic action, `da.tanh_normal.mode_action`, found `a*`).

# %%
final_entropy = np.asarray(history["entropy"][:, -50:].mean(axis=1))
print(f"{'beta':>5} | {'mode action':>11} | {'std of a':>8} {'sqrt(beta/2)':>12} | {'entropy':>7}")
for i, beta in enumerate(COEFS):
    mode = float(da.tanh_normal.mode_action(thetas["mean"][i], bandit_config)[0])
    mean = jnp.broadcast_to(thetas["mean"][i], (100_000, 1))
    log_std = jnp.broadcast_to(thetas["log_std"][i], (100_000, 1))
    samples, _ = da.sample_action(jax.random.key(7), mean, log_std, bandit_config)
    spread = float(jnp.std(samples))
    print(f"{beta:5.2f} | {mode:11.3f} | {spread:8.3f} {np.sqrt(beta / 2):12.3f} | {final_entropy[i]:7.2f}")
    assert abs(mode - TARGET) < 0.1, "the deterministic action finds the peak"
    if beta > 0.1:
        assert abs(spread / np.sqrt(beta / 2) - 1.0) < 0.2, "the spread matches the Gaussian approximation"
assert np.all(np.diff(final_entropy) > 0), "a larger entropy bonus keeps a larger entropy"

# %% [markdown]
# ## 5. Learning a pendulum in imagination
#
# Dreamer trains its actor on trajectories *imagined* by a world model, never on the real
# environment. Here the world model is replaced by an exact, differentiable JAX copy of
# gymnasium's `Pendulum-v1` physics (`dreamer_actor.examples.pendulum`), so the imagination loop is
# a `lax.scan` of `act` and `pendulum.step`. The pendulum is fully observed, so its observation
# `[cos th, sin th, thdot]` is passed as the actor's `hidden` input with an empty `stoch` (a real
# world model would pass its `h_t` and `z_t` instead).
#
# `dreamer_actor.examples.imagination` holds the whole update: horizon-15 rollouts from a batch
# of start states with `act(..., training=True, reparameterize=True)`, `da.lambda_returns`
# bootstrapped with a slow critic, `da.ReturnNormalizer`, `da.policy_loss` with the *dynamics*
# estimator (the gradient of the returns flows through the pathwise actions and the differentiable
# model) and Adam on the actor and a small critic. We train for a short while and then run the
# deterministic policy on the **real** gymnasium `Pendulum-v1`, on fixed seeds, next to a uniform
# random policy. (`python -m dreamer_actor.demo` does the full run, with both estimators.)

# %%
UPDATES = 60 if QUICK else 400
train_config = imagination.TrainConfig(estimator="dynamics", starts=256 if QUICK else 512, updates_per_call=20)
state = imagination.init_train_state(jax.random.key(0), train_config)
train_step = imagination.make_train_step(train_config)
pendulum_config = train_config.actor_config()
seeds = evaluation.eval_seeds(5)


def real_return(state):
    params = state.actor_params
    returns = evaluation.run_episodes(
        lambda obs, t: imagination.policy_action(params, pendulum_config, obs, None, deterministic=True), seeds
    )
    return float(returns.mean())


tic = time.perf_counter()
curve = {"update": [0], "imagined": [np.nan], "real": [real_return(state)]}
for update in range(train_config.updates_per_call, UPDATES + 1, train_config.updates_per_call):
    state, metrics = train_step(state)
    curve["update"].append(update)
    curve["imagined"].append(float(metrics["imagined_reward"]))
    curve["real"].append(real_return(state) if update % 100 == 0 or update == UPDATES else np.nan)
random_return = float(evaluation.random_returns(seeds).mean())
print(
    f"{UPDATES} updates x {train_config.starts} starts x horizon {train_config.horizon} "
    f"in {time.perf_counter() - tic:.0f} s (with evaluation)"
)
print(f"real Pendulum-v1, {len(seeds)} seeds: trained {curve['real'][-1]:.0f}, random {random_return:.0f}")
assert curve["real"][-1] > random_return + 200, "the policy learned in imagination beats random on the real env"

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
updates = np.asarray(curve["update"])
axes[0].plot(updates, curve["imagined"], "o-")
axes[0].set(title="mean imagined reward per step", xlabel="update")
real = np.asarray(curve["real"])
seen = ~np.isnan(real)
axes[1].plot(updates[seen], real[seen], "o-", label="trained actor (deterministic)")
axes[1].axhline(random_return, color="grey", ls=":", label="uniform random policy")
axes[1].set(title=f"return on the real Pendulum-v1 ({len(seeds)} seeds)", xlabel="update")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Where to go next
#
# * `README.md`: installation; `docs/maths.md`: the maths, and which entropy each function returns.
# * `python -m dreamer_actor.demo`: the full pendulum demo (longer training, real-environment evaluation).
# * The docstrings: every public function states its shapes, e.g. `help(da.act)`.
# * Other action spaces: `da.ActorConfig.from_space` also takes `Discrete` / `MultiDiscrete` spaces
#   (`categorical`), and `distribution="bounded_normal"` gives official DreamerV3's bounded Gaussian;
#   `da.distributions.names()` lists the families, each behind the same `da.policy_*` verbs.

# %%
print(f"notebook ran in {time.perf_counter() - START:.0f} s (quick={QUICK})")
