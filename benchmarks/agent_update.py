"""Benchmark of the DreamerV3 agent's update, split into its parts, and the training loop's env steps per second.

Run `python -m benchmarks.agent_update` (`make bench` runs it after `actor_step`); `--quick`
shrinks every size (a smoke run of seconds per configuration). Writes `agent_update.json` and
`agent_update.md` into `--out` (default `results/bench/agent_update/`). See `benchmarks/README.md`.

For each environment (Pendulum-v1, CartPole-v1) and actor-gradient estimator (REINFORCE,
dynamics), the agent is built exactly as `dreamer_actor.agent.run.train_agent` builds it from
`RunConfig()` (`RunConfig.model_configs`, `RunConfig.agent`), its
replay is filled with uniform random transitions from the real env (the loop's warm-up policy),
and these are timed, interleaved round by round (`_timing.interleaved`):

  update        the jitted `train.make_update` (donated state fed back each call), on one
                replayed batch kept on the device;
  wm            (a) world-model loss + gradient + Adam step (`world_model_loss`, `optimizer`);
  imagine       (b) `train.imagine` forward only, from the `B * L` posterior starts;
  actor_grad    (c) `jax.grad` of the actor objective: imagination + reward/continue/slow-critic
                heads + lambda-returns + return normalizer + `policy_loss` (contains (b));
  critic_grad   (d) the critic's loss + gradient on (c)'s imagined states and returns;
  act           `run.loop_act` (the loop's `train.make_policy_step` call), batch 1, host arrays in and
                out, deterministic=False;
  env           one gymnasium `env.step` (random action, reset at an episode's end);
  replay_add, replay_sample   the loop's host-side `Replay.add` and `Replay.sample(B, L)`.

Every part is jitted on its own and called on the same inputs (the state before the first
update; (c) and (d) on the world model after (a)'s step, as in `train_step`): (c) and (d) are
`train.actor_objective` and `train.critic_objective`, the functions `train_step` calls; the
benchmark checks the parts against `train_step` (same keys, same state: the losses must agree).

Env steps per second of the training loop at the default train ratio:
`1 / (t_act + t_env + t_update / updates_per_step)`, `updates_per_step = train_ratio / (B * L)`,
per round (median, min-max); `loop` adds the host replay work (`add` per step, `sample` per update).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import dreamer_actor as da

from benchmarks import _timing as T
from benchmarks.actor_step import _cpu_model, _fmt_time, _git_commit
from dreamer_actor.agent import run as agent_run
from dreamer_actor.agent import spaces
from dreamer_actor.agent import train as agent_train
from dreamer_actor.agent import world_model as wm
from dreamer_actor.agent.replay import Replay
from dreamer_actor.agent.run import RunConfig, make_replay

ENVS = ("Pendulum-v1", "CartPole-v1")
ESTIMATORS = ("reinforce", "dynamics")
PARTS = ("wm", "actor_grad", "critic_grad")  # disjoint; `imagine` is inside `actor_grad`
VARIANTS = ("update", "wm", "imagine", "actor_grad", "critic_grad", "act", "env", "replay_add", "replay_sample")
LABELS = {
    "update": "full update (`make_update`)",
    "wm": "(a) world model: loss + grad + Adam",
    "imagine": "(b) imagination forward (inside c)",
    "actor_grad": "(c) actor objective: grad",
    "critic_grad": "(d) critic: loss + grad",
    "act": "act (`run.loop_act`, batch 1, host in/out)",
    "env": "env step (gymnasium)",
    "replay_add": "replay.add (host, per env step)",
    "replay_sample": "replay.sample(B, L) (host, per update)",
}
# --quick: every size small enough to compile and run in seconds (RunConfig fields, so the
# agent is still built by the same code path).
QUICK = {"deter": 16, "stoch": 4, "classes": 4, "units": 16, "batch": 2, "length": 8, "horizon": 3, "warmup": 64}


# ----------------------------------------------------------------------------- the agent, as train_agent builds it


@dataclasses.dataclass
class Agent:
    run: RunConfig
    env: Any
    actor_config: da.ActorConfig
    wm_config: wm.WorldModelConfig
    config: agent_train.AgentConfig
    state: agent_train.AgentState
    replay: Replay


def build(env_id: str, estimator: str, quick: bool) -> Agent:
    """The agent of `train_agent(RunConfig.from_flags(env=env_id, estimator=estimator))`, replay filled at random."""
    import gymnasium as gym

    run = RunConfig.from_flags(env=env_id, estimator=estimator, progress=False, **(QUICK if quick else {}))
    env = gym.make(run.env)
    actor_config, wm_config = run.model_configs(env)
    action_dim = wm_config.action_dim
    config = run.agent
    state = agent_train.init_agent(jax.random.key(run.seed), wm_config, actor_config, config)
    replay = make_replay(run, wm_config)
    # Random transitions: the loop's warm-up policy in the real env.
    rng = np.random.default_rng(run.seed)
    obs, _ = env.reset(seed=run.seed)
    env.action_space.seed(run.seed)
    replay.add(0, obs, np.zeros(action_dim), 0.0, True, False)
    for _ in range(max(run.warmup, config.length)):
        action_np, model_np = spaces.random_actions(actor_config, rng)
        obs, reward, terminated, truncated, _ = env.step(spaces.env_action(actor_config, action_np, env.action_space))
        replay.add(0, obs, model_np, reward, False, terminated)
        if terminated or truncated:
            obs, _ = env.reset()
            replay.add(0, obs, np.zeros(action_dim), 0.0, True, False)
    return Agent(run, env, actor_config, wm_config, config, state, replay)


# ----------------------------------------------------------------------------- the update's parts


@dataclasses.dataclass
class Parts:
    """The jitted parts and their fixed inputs (see the module docstring)."""

    fns: dict[str, Callable[[], Any]]
    first_call_s: dict[str, float]
    check: Callable[[Callable[..., Any]], dict[str, float]]


def make_parts(agent: Agent, batch: dict[str, jax.Array]) -> Parts:
    wm_config, actor_config, config, state = agent.wm_config, agent.actor_config, agent.config, agent.state
    model = wm.WorldModel(wm_config)
    critic = agent_train.Critic(wm_config.units, config.critic_layers, wm_config.num_bins, wm_config.norm)
    bins = wm.twohot_bins(wm_config.num_bins)
    wm_opt = agent_train.optimizer(config, config.model_lr)
    sg = jax.lax.stop_gradient
    # The keys train_step draws from the state's key.
    _, wm_key, imag_key = jax.random.split(state.key, 3)
    n = config.batch * config.length
    reparameterize = config.estimator != "reinforce"

    @jax.jit
    def wm_step(wm_params, opt_state, batch, key):
        (_, (post, metrics)), grads = jax.value_and_grad(
            lambda p: wm.world_model_loss(model, p, batch, key), has_aux=True
        )(wm_params)
        updates, opt_state = wm_opt.update(grads, opt_state, wm_params)
        return optax.apply_updates(wm_params, updates), opt_state, post, metrics

    @jax.jit
    def imagine_fwd(frozen, actor_params, start, key):
        return agent_train.imagine(
            model, frozen, actor_params, actor_config, start, key, horizon=config.horizon, reparameterize=reparameterize
        )

    @jax.jit
    def actor_grad(actor_params, frozen, slow, start, start_cont, normalizer_state, key):
        return jax.grad(
            lambda p: agent_train.actor_objective(
                p,
                model=model,
                critic=critic,
                frozen=frozen,
                slow=slow,
                start=start,
                start_cont=start_cont,
                normalizer_state=normalizer_state,
                key=key,
                actor_config=actor_config,
                config=config,
            ),
            has_aux=True,
        )(actor_params)

    @jax.jit
    def critic_grad(critic_params, h, z, returns, slow_values, weights):
        return jax.value_and_grad(
            lambda p: agent_train.critic_objective(
                p,
                critic=critic,
                h=h,
                z=z,
                returns=returns,
                slow_values=slow_values,
                weights=weights,
                bins=bins,
                config=config,
            )
        )(critic_params)

    # The inputs, as train_step computes them for this state and batch (first calls: compile + run).
    first_call: dict[str, float] = {}

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        out = T.block(fn(*a))
        first_call[name] = time.perf_counter() - t0
        return out

    new_wm, _, post, wm_metrics = timed("wm", wm_step, state.wm_params, state.wm_opt, batch, wm_key)
    start = jax.tree.map(lambda x: sg(x.reshape(n, *x.shape[2:])), post)
    start_cont = 1.0 - batch["terminated"].reshape(n).astype(jnp.float32)
    frozen, slow = new_wm, state.slow_critic_params
    _, aux = timed(
        "actor_grad", actor_grad, state.actor_params, frozen, slow, start, start_cont, state.normalizer, imag_key
    )
    latents = aux["latents"]
    h, z = latents.h[:-1], latents.z[:-1]
    critic_loss, _ = timed(
        "critic_grad", critic_grad, state.critic_params, h, z, aux["returns"], aux["slow_values"], aux["weights"]
    )

    def check(update: Callable[..., Any]) -> dict[str, float]:
        """|train_step's losses - the parts'| on the same state and batch (a copy: the state is donated)."""
        _, metrics, _ = update(jax.tree.map(jnp.copy, state), batch)
        ours = {"wm_loss": wm_metrics["wm_loss"], "actor_loss": aux["actor_loss"], "critic_loss": critic_loss}
        out = {name: abs(float(metrics[name]) - float(v)) for name, v in ours.items()}
        out.update({f"{name}_value": float(metrics[name]) for name in ours})
        return out

    fns = {
        "wm": lambda: wm_step(state.wm_params, state.wm_opt, batch, wm_key),
        "imagine": lambda: imagine_fwd(frozen, state.actor_params, start, imag_key),
        "actor_grad": lambda: actor_grad(
            state.actor_params, frozen, slow, start, start_cont, state.normalizer, imag_key
        ),
        "critic_grad": lambda: critic_grad(
            state.critic_params, h, z, aux["returns"], aux["slow_values"], aux["weights"]
        ),
    }
    return Parts(fns, first_call, check)


# ----------------------------------------------------------------------------- the loop's other pieces


def make_update_fn(agent: Agent, update: Callable[..., Any], batch: dict[str, jax.Array]) -> Callable[[], Any]:
    """The full jitted update, its donated state fed back (a copy of the agent's: the parts keep theirs)."""
    box = {"state": jax.tree.map(jnp.copy, agent.state)}

    def call():
        box["state"], metrics, _ = update(box["state"], batch)
        return metrics

    return call


def make_act_fn(agent: Agent) -> Callable[[], Any]:
    """One acting step as the loop runs it: host observation in, host actions out."""
    policy_step = agent_train.make_policy_step(agent.wm_config, agent.actor_config)
    obs = np.asarray(agent.env.reset(seed=agent.run.seed)[0], np.float32)
    box = {
        "latent": wm.initial_latent(agent.wm_config, (1,)),
        "prev": jnp.zeros((1, spaces.model_action_dim(agent.actor_config))),
        "step": 0,
    }
    act_key = jax.random.key(agent.run.seed + 1)
    state = agent.state

    def call():
        box["step"] += 1
        box["latent"], box["prev"], action, model_action = agent_run.loop_act(
            policy_step, state.wm_params, state.actor_params, box["latent"], box["prev"], obs[None],
            np.array([box["step"] == 1]), act_key, box["step"],
        )  # fmt: skip
        return action, model_action

    return call


def make_env_fn(agent: Agent) -> Callable[[], Any]:
    """One env step with a random action (converted by `spaces.env_action`), a reset at an episode's end."""
    env, actor_config = agent.env, agent.actor_config
    rng = np.random.default_rng(agent.run.seed + 2)
    actions = [spaces.random_actions(actor_config, rng)[0] for _ in range(256)]
    box = {"i": 0}
    env.reset(seed=agent.run.seed)

    def call():
        box["i"] += 1
        obs, _, terminated, truncated, _ = env.step(
            spaces.env_action(actor_config, actions[box["i"] % len(actions)], env.action_space)
        )
        if terminated or truncated:
            obs, _ = env.reset()
        return obs

    return call


def make_replay_fns(agent: Agent) -> dict[str, Callable[[], Any]]:
    replay, config = agent.replay, agent.config
    row = {name: array[0].copy() for name, array in replay.data.items()}
    return {
        "replay_add": lambda: replay.add(0, row["obs"], row["action"], row["reward"], False, False),
        "replay_sample": lambda: replay.sample(config.batch, config.length),
    }


# ----------------------------------------------------------------------------- one configuration


def bench_config(args, env_id: str, estimator: str) -> dict[str, Any]:
    agent = build(env_id, estimator, args.quick)
    config = agent.config
    batch = {k: jnp.asarray(v) for k, v in agent.replay.sample(config.batch, config.length).items()}
    parts = make_parts(agent, batch)
    update = agent_train.make_update(agent.wm_config, agent.actor_config, config)
    variants = {
        "update": make_update_fn(agent, update, batch),
        "wm": parts.fns["wm"],
        "imagine": parts.fns["imagine"],
        "actor_grad": parts.fns["actor_grad"],
        "critic_grad": parts.fns["critic_grad"],
        "act": make_act_fn(agent),
        "env": make_env_fn(agent),
        **make_replay_fns(agent),
    }
    # First call of each (trace + compile + run for the jitted ones; the parts (a), (c), (d) had theirs).
    first_call = {name: T.time_once(fn) for name, fn in variants.items() if name not in parts.first_call_s}
    first_call = {name: {**first_call, **parts.first_call_s}[name] for name in variants}
    times = T.interleaved(variants, repeats=args.rounds, warmup=args.warmup, min_round_s=args.min_round_s)
    out = T.summarize(times)
    out["first_call_s"] = first_call

    # Per-round derived quantities (a slow spell moves every variant of a round alike).
    rounds = range(args.rounds)
    parts_sum = [sum(times[p][r] for p in PARTS) for r in rounds]
    ups = agent.run.train_ratio / (config.batch * config.length)
    derived = {
        "parts_sum_s": parts_sum,
        "parts_sum / update": [parts_sum[r] / times["update"][r] for r in rounds],
        "imagine / actor_grad": [times["imagine"][r] / times["actor_grad"][r] for r in rounds],
        **{f"share {p}": [times[p][r] / parts_sum[r] for r in rounds] for p in (*PARTS, "imagine")},
        "env_steps_per_s": [1.0 / (times["act"][r] + times["env"][r] + times["update"][r] * ups) for r in rounds],
        "env_steps_per_s_loop": [
            1.0
            / (
                times["act"][r]
                + times["env"][r]
                + times["replay_add"][r]
                + (times["update"][r] + times["replay_sample"][r]) * ups
            )
            for r in rounds
        ],
        "update_share_of_step": [
            times["update"][r] * ups / (times["act"][r] + times["env"][r] + times["update"][r] * ups) for r in rounds
        ],
    }
    out["derived"] = {name: T.stats(v) for name, v in derived.items()}
    out["samples"] = {"times": times, **{k: v for k, v in derived.items()}}
    out["check"] = parts.check(update)
    out["setup"] = {
        "env": env_id,
        "estimator": estimator,
        "distribution": agent.actor_config.distribution,
        "action_dim": int(agent.actor_config.action_dim),
        "obs_dim": agent.wm_config.obs_dim,
        "world_model_config": dataclasses.asdict(agent.wm_config),
        "agent_config": dataclasses.asdict(config),
        "train_ratio": agent.run.train_ratio,
        "updates_per_env_step": ups,
        "imagined_states": config.batch * config.length * config.horizon,
    }
    agent.env.close()
    return out


# ----------------------------------------------------------------------------- report


def _range(st: dict[str, float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(st['median'])} ({fmt(st['min'])} - {fmt(st['max'])})"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _num(x: float) -> str:
    return f"{x:.3f}"


def _rate(x: float) -> str:
    return f"{x:.1f}"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Agent update benchmark",
        "",
        f"{meta['date']} - jax {meta['jax']} (jaxlib {meta['jaxlib']}), device {meta['device']}, "
        f"{meta['cpu']} ({meta['cores']} cores), rounds {meta['rounds']}"
        f"{', QUICK (tiny sizes)' if meta['quick'] else ''}; git {meta['git']}",
        f"XLA_FLAGS: `{meta['xla_flags'] or '(none)'}`; load average before/after: "
        f"{meta['loadavg_before']} / {meta.get('loadavg_after')}",
        "",
        "Medians over interleaved rounds; parts (a) + (c) + (d) are disjoint, (b) runs inside (c). "
        "Env steps/s = 1 / (t_act + t_env + t_update x updates per env step); `loop` adds replay.add "
        "and replay.sample.",
        "",
        "| env | estimator | update | (a) wm | (b) imagine | (c) actor grad | (d) critic grad | "
        "(a+c+d) / update | act | env step | env steps/s | loop steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["configs"]:
        s, t, d = r["setup"], r["times"], r["derived"]
        lines.append(
            f"| {s['env']} | {s['estimator']} | {_fmt_time(t['update']['median'])} | "
            + " | ".join(
                f"{_fmt_time(t[p]['median'])} ({_pct(d[f'share {p}']['median'])})"
                for p in ("wm", "imagine", "actor_grad", "critic_grad")
            )
            + f" | {_num(d['parts_sum / update']['median'])} | {_fmt_time(t['act']['median'])} | "
            f"{_fmt_time(t['env']['median'])} | {_rate(d['env_steps_per_s']['median'])} | "
            f"{_rate(d['env_steps_per_s_loop']['median'])} |"
        )
    lines += ["", "Percentages: share of the sum of parts (a) + (c) + (d)."]
    for r in results["configs"]:
        s, t, d, c = r["setup"], r["times"], r["derived"], r["check"]
        w, a = s["world_model_config"], s["agent_config"]
        lines += [
            "",
            f"## {s['env']}, {s['estimator']} ({s['distribution']}, O = {s['obs_dim']}, A = {s['action_dim']})",
            "",
            f"World model deter {w['deter']}, stoch {w['stoch']} x {w['classes']}, units {w['units']} x "
            f"{w['layers']}; batch {a['batch']} x length {a['length']}, horizon {a['horizon']} "
            f"({s['imagined_states']} imagined states); train ratio {s['train_ratio']:g}: "
            f"{s['updates_per_env_step']:.4g} updates per env step.",
            "",
            "| variant | median (min - max) | share of (a)+(c)+(d) | first call (compile + run) |",
            "|---|---|---|---|",
        ]
        for name in VARIANTS:
            share = _range(d[f"share {name}"], _pct) if f"share {name}" in d else ""
            lines.append(
                f"| {LABELS[name]} | {_range(t[name], _fmt_time)} | {share} | {_fmt_time(r['first_call_s'][name])} |"
            )
        lines += [
            "",
            "| derived (per round) | median (min - max) |",
            "|---|---|",
            f"| sum of parts (a)+(c)+(d) | {_range(d['parts_sum_s'], _fmt_time)} |",
            f"| sum of parts / full update | {_range(d['parts_sum / update'], _num)} |",
            f"| (b) imagination / (c) actor grad | {_range(d['imagine / actor_grad'], _num)} |",
            f"| update's share of one env step's time | {_range(d['update_share_of_step'], _pct)} |",
            f"| env steps/s | {_range(d['env_steps_per_s'], _rate)} |",
            f"| env steps/s with replay add + sample | {_range(d['env_steps_per_s_loop'], _rate)} |",
            "",
            f"Check against `train_step` (same state, batch and keys), |difference|: wm_loss "
            f"{c['wm_loss']:.2e}, actor_loss {c['actor_loss']:.2e}, critic_loss {c['critic_loss']:.2e} "
            f"(values {c['wm_loss_value']:.4g}, {c['actor_loss_value']:.4g}, {c['critic_loss_value']:.4g}).",
        ]
    return "\n".join(lines) + "\n"


def _device() -> str:
    d = jax.devices()[0]
    return f"{d.platform} ({getattr(d, 'device_kind', '?')}) x {jax.device_count()}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agent_update", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="timed interleaved rounds (default 7; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per variant (default 2; quick 1)")
    parser.add_argument("--out", default="results/bench/agent_update", help="output folder")
    parser.add_argument("--envs", default=",".join(ENVS), help=f"comma-separated (default {','.join(ENVS)})")
    parser.add_argument(
        "--estimators", default=",".join(ESTIMATORS), help=f"comma-separated (default {','.join(ESTIMATORS)})"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds if args.rounds is not None else (2 if args.quick else 7)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.min_round_s = 0.005 if args.quick else 0.05
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.envs = tuple(e.strip() for e in args.envs.split(",") if e.strip())
    args.estimators = tuple(e.strip() for e in args.estimators.split(",") if e.strip())
    bad = [e for e in args.estimators if e not in da.train.ESTIMATORS]
    if bad:
        parser.error(f"unknown estimator(s) {bad}; choose from {', '.join(da.train.ESTIMATORS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    import jaxlib

    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "git": _git_commit(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "device": _device(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "quick": args.quick,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "min_round_s": args.min_round_s,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    results: dict[str, Any] = {"meta": meta, "configs": []}
    for env_id in args.envs:
        for estimator in args.estimators:
            start = time.perf_counter()
            print(f"[bench] {env_id} {estimator} ...", file=sys.stderr, flush=True)
            results["configs"].append(bench_config(args, env_id, estimator))
            print(f"[bench] {env_id} {estimator} done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    json_path = os.path.join(args.out, "agent_update.json")
    md_path = os.path.join(args.out, "agent_update.md")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=2, allow_nan=True)
    text = markdown(results)
    with open(md_path, "w") as f:
        f.write(text)
    print(text)
    print(f"[bench] wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
