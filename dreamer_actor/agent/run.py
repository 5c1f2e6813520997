"""The training loop: act in a real gymnasium env, store transitions, update in imagination, evaluate.

`train_agent(RunConfig(...))` is what `python -m dreamer_actor.agent` runs; it returns the curve
(also written to `DIR/curve.json`) and saves the agent for `dreamer_actor.agent.load(DIR)`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dreamer_actor.agent import policy as agent_policy
from dreamer_actor.agent import spaces
from dreamer_actor.agent import train as agent_train
from dreamer_actor.agent import world_model as wm

EVAL_SEED_BASE = 10_000  # evaluation episode i resets with seed EVAL_SEED_BASE + i (never a training seed)
RUN_FILES = ("curve.json", "curve.png", agent_policy.AGENT_FILE, agent_policy.WORLD_MODEL_FILE, agent_policy.ACTOR_DIR)


def check_out_dir(out: pathlib.Path, *, overwrite: bool) -> None:
    """Refuses a run folder that holds anything but a previous run's files (nothing a user owns is replaced).

    A missing or empty folder is fine. With `overwrite`, a folder holding only `RUN_FILES`
    (and an `agent.json` or `curve.json`, so it is one of this agent's runs) is reused: its files
    are replaced as the new run writes them. Anything else raises `FileExistsError` naming the folder.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"dreamer_actor.agent: `out` {str(out)!r} exists and is not a folder.")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"dreamer_actor.agent: `out` folder {str(out)!r} is not empty ({', '.join(entries[:5])}); "
            "pass a new folder, or --overwrite to replace a previous run of this agent there."
        )
    foreign = [name for name in entries if name not in RUN_FILES]
    if foreign or not {"agent.json", "curve.json"} & set(entries):
        raise FileExistsError(
            f"dreamer_actor.agent: `out` folder {str(out)!r} is not a previous run of this agent "
            f"(it holds {', '.join(foreign[:5]) or 'no agent.json or curve.json'}); --overwrite only "
            "replaces a run's own files. Pass a new folder."
        )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run (the CLI's flags; see `python -m dreamer_actor.agent --help`)."""

    env: str = "Pendulum-v1"
    steps: int = 20_000
    seed: int = 0
    out: str | None = None
    distribution: str | None = None
    estimator: str = "reinforce"
    train_ratio: float = 64.0
    warmup: int = 1000
    eval_every: int = 2000
    eval_episodes: int = 20
    replay_capacity: int = 1_000_000
    deter: int = 128
    stoch: int = 16
    classes: int = 8
    units: int = 128
    layers: int = 2
    batch: int = 16
    length: int = 32
    horizon: int = 15
    discount: float = 0.99
    model_lr: float = 6e-4
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    entropy_coef: float = 3e-4
    terminal_weight: float = 1.0
    overwrite: bool = False
    progress: bool = True

    def model_configs(self, env: Any) -> tuple[Any, wm.WorldModelConfig]:
        """`(ActorConfig, WorldModelConfig)` for the gymnasium `env`'s spaces and this run's sizes."""
        actor_config = spaces.actor_config_for(
            env.action_space, distribution=self.distribution, layers=2, units=self.units
        )
        wm_config = wm.WorldModelConfig(
            obs_dim=spaces.obs_dim_for(env.observation_space),
            action_dim=spaces.model_action_dim(actor_config),
            deter=self.deter,
            stoch=self.stoch,
            classes=self.classes,
            units=self.units,
            layers=self.layers,
            terminal_weight=self.terminal_weight,
        )
        return actor_config, wm_config

    def agent_config(self) -> agent_train.AgentConfig:
        return agent_train.AgentConfig(
            batch=self.batch,
            length=self.length,
            horizon=self.horizon,
            discount=self.discount,
            estimator=self.estimator,
            entropy_coef=self.entropy_coef,
            model_lr=self.model_lr,
            actor_lr=self.actor_lr,
            critic_lr=self.critic_lr,
            actor_units=self.units,
            critic_units=self.units,
        )


def evaluate_policy(env_id: str, act: Any, *, episodes: int) -> np.ndarray:
    """Returns `[episodes]` returns of `act` on the real env, episode `i` reset with seed `EVAL_SEED_BASE + i`.

    The evaluation protocol every agent in this project is scored with (the Dreamer agent here,
    SAC/DQN in `scripts/compare_baselines.py`). All episodes run in lockstep: each step calls
    `act(obs [episodes, O] float32, first [episodes] bool)` once and gets one env action per
    episode (`first` is true at each episode's reset; finished episodes' actions are ignored).
    """
    import gymnasium as gym

    envs = [gym.make(env_id) for _ in range(episodes)]
    obs = np.stack([env.reset(seed=EVAL_SEED_BASE + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    first = np.ones(episodes, bool)
    done = np.zeros(episodes, bool)
    returns = np.zeros(episodes)
    while not done.all():
        actions = act(obs, first.copy())
        first[:] = False
        for i, env in enumerate(envs):
            if done[i]:
                continue
            o, r, terminated, truncated, _ = env.step(actions[i])
            obs[i] = o
            returns[i] += r
            done[i] = terminated or truncated
    for env in envs:
        env.close()
    return returns


def random_act(env_id: str, episodes: int, seed: int) -> Any:
    """An `evaluate_policy` act function of uniform random actions (episode `i`'s space seeded `1000 seed + i`)."""
    import gymnasium as gym

    action_spaces = [gym.make(env_id).action_space for _ in range(episodes)]
    for i, space in enumerate(action_spaces):
        space.seed(seed * 1000 + i)
    return lambda obs, first: [space.sample() for space in action_spaces]


def agent_act(
    env_id: str,
    policy_step: Any,
    wm_params: Any,
    actor_params: Any,
    wm_config: wm.WorldModelConfig,
    actor_config: Any,
    *,
    episodes: int,
    deterministic: bool,
    seed: int = 0,
) -> Any:
    """An `evaluate_policy` act function of the agent: one batched `policy_step` per step, its own latents."""
    import gymnasium as gym

    action_space = gym.make(env_id).action_space
    state = {
        "latent": wm.initial_latent(wm_config, (episodes,)),
        "prev": jnp.zeros((episodes, spaces.model_action_dim(actor_config))),
        "counter": 0,
    }
    key = jax.random.key(seed)

    def act(obs: np.ndarray, first: np.ndarray) -> list[Any]:
        state["latent"], actions, state["prev"] = policy_step(
            wm_params, actor_params, state["latent"], state["prev"], obs, first, key, state["counter"],
            deterministic=deterministic,
        )  # fmt: skip
        state["counter"] += 1
        actions = np.asarray(actions)
        return [spaces.env_action(actor_config, a, action_space) for a in actions]

    return act


def loop_act(
    policy_step: Any,
    wm_params: Any,
    actor_params: Any,
    latent: Any,
    prev: Any,
    obs: np.ndarray,
    is_first: bool,
    key: jax.Array,
    step: int,
) -> tuple[Any, jax.Array, np.ndarray, np.ndarray]:
    """The training loop's acting step on one env: `(latent, model action [1, A], action [A], model action [A])`.

    The observation and `is_first` go into the jitted step as NumPy arrays, and each action comes
    back with one copy before it is indexed on the host: `jnp.asarray` on the inputs and
    `action[0]` on the device are calls into JAX of their own, which took this step from 259 to
    467 us (`python -m benchmarks.round_two_probes agent-act`, benchmarks/README.md).
    """
    latent, action, model_action = policy_step(
        wm_params, actor_params, latent, prev, np.asarray(obs, np.float32)[None], np.asarray([is_first]), key, step,
        deterministic=False,
    )  # fmt: skip
    return latent, model_action, np.asarray(action)[0], np.asarray(model_action)[0]


def _plot(curve: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = curve["evals"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, x_name, label in ((axes[0], "env_steps", "environment steps"), (axes[1], "wall_s", "wall time (s)")):
        x = np.array([e[x_name] for e in evals])
        for mode, color in (("deterministic", "C0"), ("sampled", "C1")):
            mean = np.array([e[mode]["mean"] for e in evals])
            std = np.array([e[mode]["std"] for e in evals])
            ax.plot(x, mean, "o-", color=color, label=mode)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
        ax.axhline(curve["random"]["mean"], color="gray", ls="--", label="random policy")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"return ({len(evals[0]['deterministic']['returns'])} fixed-seed episodes)")
    axes[0].legend()
    fig.suptitle(
        f"DreamerV3 agent, {curve['config']['env']}, seed {curve['config']['seed']}, {curve['config']['estimator']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _stats(returns: np.ndarray) -> dict[str, Any]:
    return {"mean": float(np.mean(returns)), "std": float(np.std(returns)), "returns": [float(r) for r in returns]}


def train_agent(run: RunConfig) -> dict[str, Any]:
    """Trains one agent (see the package docstring); returns the curve dict (also `DIR/curve.json`)."""
    import gymnasium as gym

    start_time = time.perf_counter()
    out = pathlib.Path(run.out) if run.out else None
    if out is not None:  # before any training: a bad folder fails in a second, not after the run
        check_out_dir(out, overwrite=run.overwrite)
        out.mkdir(parents=True, exist_ok=True)
    env = gym.make(run.env)
    actor_config, wm_config = run.model_configs(env)
    obs_dim, action_dim = wm_config.obs_dim, wm_config.action_dim
    config = run.agent_config()
    state = agent_train.init_agent(jax.random.key(run.seed), wm_config, actor_config, config)
    update = agent_train.make_update(wm_config, actor_config, config)
    policy_step = agent_train.make_policy_step(wm_config, actor_config)
    replay = agent_replay_for(run, obs_dim, action_dim)
    rng = np.random.default_rng(run.seed)
    act_key = jax.random.key(run.seed + 1)
    replayed_per_update = config.batch * config.length

    random_returns = evaluate_policy(
        run.env, random_act(run.env, run.eval_episodes, run.seed), episodes=run.eval_episodes
    )
    curve: dict[str, Any] = {
        "config": dataclasses.asdict(run),
        "random": _stats(random_returns),
        "evals": [],
        "episodes": [],
        "losses": [],
    }

    obs, _ = env.reset(seed=run.seed)
    env.action_space.seed(run.seed)
    replay.add(obs, np.zeros(action_dim), 0.0, True, False)
    latent = wm.initial_latent(wm_config, (1,))
    prev = jnp.zeros((1, action_dim))
    is_first, ep_return, ep_len, owed, updates = True, 0.0, 0, 0.0, 0
    metrics: dict[str, float] = {}
    bar = None
    if run.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.steps, desc=run.env, unit="step", dynamic_ncols=True)

    def do_eval(step: int) -> dict[str, Any]:
        entry = {"env_steps": step, "updates": updates, "wall_s": time.perf_counter() - start_time}
        for mode in ("deterministic", "sampled"):
            act = agent_act(
                run.env, policy_step, state.wm_params, state.actor_params, wm_config, actor_config,
                episodes=run.eval_episodes, deterministic=mode == "deterministic", seed=run.seed,
            )  # fmt: skip
            returns = evaluate_policy(run.env, act, episodes=run.eval_episodes)
            entry[mode] = _stats(returns)
        entry["wall_s"] = time.perf_counter() - start_time
        curve["evals"].append(entry)
        if out is not None:
            (out / "curve.json").write_text(json.dumps(curve, indent=1))
        return entry

    last_eval = None
    for step in range(1, run.steps + 1):
        latent, model_action, action_np, model_np = loop_act(
            policy_step, state.wm_params, state.actor_params, latent, prev, obs, is_first, act_key, step
        )
        if step <= run.warmup:
            action_np, model_np = spaces.random_actions(actor_config, rng)
            model_action = jnp.asarray(model_np)[None]
        obs, reward, terminated, truncated, _ = env.step(spaces.env_action(actor_config, action_np, env.action_space))
        replay.add(obs, model_np, reward, False, terminated)
        prev, is_first = model_action, False
        ep_return += float(reward)
        ep_len += 1
        if terminated or truncated:
            curve["episodes"].append({"env_steps": step, "return": ep_return, "length": ep_len})
            obs, _ = env.reset()
            replay.add(obs, np.zeros(action_dim), 0.0, True, False)
            is_first, ep_return, ep_len = True, 0.0, 0
        if step >= run.warmup:
            owed += run.train_ratio / replayed_per_update
            while owed >= 1.0:
                state, m = update(state, replay.sample(config.batch, config.length))
                owed -= 1.0
                updates += 1
                if updates % 25 == 1:
                    metrics = {k: float(v) for k, v in m.items()}
                    curve["losses"].append({"env_steps": step, "updates": updates, **metrics})
        if step % run.eval_every == 0 or step == run.steps:
            last_eval = do_eval(step)
        if bar is not None:
            bar.update(1)
            if step % 50 == 0 or step == run.steps:
                post = {"ep_ret": curve["episodes"][-1]["return"] if curve["episodes"] else float("nan")}
                for name in ("wm_loss", "dec_loss", "rew_loss", "kl", "entropy"):
                    if name in metrics:
                        post[name] = metrics[name]
                if last_eval is not None:
                    post["eval"] = last_eval["deterministic"]["mean"]
                bar.set_postfix({k: f"{v:.3g}" for k, v in post.items()}, refresh=False)
    if bar is not None:
        bar.close()
    curve["wall_s"] = time.perf_counter() - start_time
    curve["updates"] = updates
    if out is not None:
        (out / "curve.json").write_text(json.dumps(curve, indent=1))
        _plot(curve, out / "curve.png")
        meta = {
            "env": run.env,
            "seed": run.seed,
            "world_model_config": dataclasses.asdict(wm_config),
            "actor_config": actor_config.to_dict(),
            "agent_config": dataclasses.asdict(config),
            "discrete_start": int(env.action_space.start) if actor_config.distribution == "categorical" else None,
            "run": dataclasses.asdict(run),
        }
        agent_policy.save_agent(out, state, meta)
    env.close()
    curve["state"] = state
    return curve


def agent_replay_for(run: RunConfig, obs_dim: int, action_dim: int):
    from dreamer_actor.agent.replay import Replay

    return Replay(min(run.replay_capacity, run.steps * 2 + 10), obs_dim, action_dim, seed=run.seed)
