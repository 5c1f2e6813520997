r"""How good is a finished DreamerV3 agent run's world model on held-out real transitions?

    .venv/bin/python scripts/agent_diagnostics.py DIR [--episodes 5] [--sampled] [--horizons 1 15] \
        [--json DIR/diagnostics.json] [--overwrite]

`DIR` is a finished `python -m dreamer_actor.agent --out DIR` run (`dreamer_actor.agent.load(DIR)`).

**Data.** `--episodes` real episodes of the run's env (`DIR/agent.json` "env") with the trained
policy (`load(DIR)`: deterministic mode actions by default, `--sampled` for sampled actions),
episode `i` reset with seed `20000 + i`: held out from training (the run seed) and from the
run's evaluations (`10000 + i`). Each step records the observation, the world-model action the
policy took (`Policy.prev_action` after the call: `spaces.model_action` of the actor's action),
the reward and `terminated`, and is arranged in the replay's time convention (see
`dreamer_actor/agent/world_model.py`): row `t` holds `x_t`, `a_{t-1}` (zeros at row 0), `r_t`,
`is_first_t`, `terminated_t`; an episode of `T` env steps has rows `0..T`. `world_model.observe`
filters the rows to the posterior latent `s_t = (h_t, z_t ~ q)` at every row.

**Open-loop prediction** (one number set per horizon `k` of `--horizons`). From `s_t`, `k` prior
steps (`world_model.imagine_step`, one latent sample per step, as in the agent's imagination) with
the *real* actions `a_t .. a_{t+k-1}` give the predicted state at `t+k`; every pair with
`t + k <= T` in the same episode counts (`n`; targets are real transitions, rows `1..T`).
`k = 0` is allowed: the posterior's own reconstruction (no prior step), the floor the dynamics
errors are to be read against.

* `reward rmse`, `mae`, `bias`: of the reward head's two-hot mean minus the real `r_{t+k}`;
  `std` is the real rewards' standard deviation over the same targets, i.e. the RMSE of always
  predicting their mean: `rmse / std` well below 1 means the model knows more than the average.
* `obs rmse`: `symexp(decoder)` minus the real `x_{t+k}` in raw units, over all dimensions and
  per dimension, next to each dimension's real standard deviation over the targets.
* `p(cont)`: the continue head's `sigmoid` at the real terminal states (`terminated`, the
  CartPole pole falling: should be near 0) and at the non-terminal ones (near 1; `min` is the
  worst false alarm). A time-limit truncation is not a terminal and is never a target 0.

**Imagined vs real return.** From every posterior state `s_t` with at least `H` real steps after
it (`t + H <= T`; `H` and the discount `gamma` are the run's `horizon` and `discount`, DreamerV3's
15 and 0.99), the actor imagines `H` steps inside the model exactly as the agent acts
(`da.act(training=False, deterministic=True)` on the latent, `spaces.model_action`; with
`--sampled` the sampled action of `train.make_policy_step`). In the convention of the agent's
lambda-returns (rewards predicted at the imagined states `s_1 .. s_H`):

* `imagined = sum_{j=1..H} gamma^(j-1) rhat_j`, the discounted predicted rewards;
* `real = sum_{j=1..H} gamma^(j-1) r_{t+j}`, the next `H` real rewards of the same episode;
* `bias = mean(imagined - real)`, `rmse`, and `corr` (Pearson, over the starts; null when the
  real returns do not vary, e.g. CartPole's reward 1 per step);
* `imagined (cont-weighted)`: `sum_j gamma^(j-1) prod_{i<j} c_i rhat_j` with the continue head's
  `c_i` at `s_i`, the lambda = 1 return without bootstrap the agent's targets are built from.

The report is printed and written as JSON to `--json` (default `DIR/diagnostics.json`); an existing
file is refused unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import dreamer_actor as da
from dreamer_actor.agent import policy as agent_policy
from dreamer_actor.agent import spaces
from dreamer_actor.agent import world_model as wm

SEED_BASE = 20_000  # held out: training resets with the run seed, evaluation with 10000 + i


# ----------------------------------------------------------------------------- data


def collect_episodes(policy: agent_policy.Policy, env_id: str, episodes: int) -> list[dict[str, np.ndarray]]:
    """`episodes` real episodes of `policy`, episode `i` reset with seed `SEED_BASE + i`.

    Returns one dict per episode of `[T + 1, ...]` rows in the replay's time convention:
    `obs [T + 1, O]`, `action [T + 1, A]` (a_{t-1}, zeros at row 0), `reward [T + 1]` (0 at row 0),
    `is_first [T + 1]`, `terminated [T + 1]`, plus `truncated` (a bool: the episode hit its time limit).
    """
    import gymnasium as gym

    env = gym.make(env_id)
    action_dim = spaces.model_action_dim(policy.actor_config)
    out = []
    for i in range(episodes):
        obs, _ = env.reset(seed=SEED_BASE + i)
        policy.reset()
        rows = {"obs": [obs], "action": [np.zeros(action_dim)], "reward": [0.0], "terminated": [False]}
        done = truncated = False
        while not done:
            action = policy(obs)
            model_action = np.asarray(policy.prev_action[0])  # the model's a_t for this step
            obs, reward, terminated, truncated, _ = env.step(action)
            rows["obs"].append(obs)
            rows["action"].append(model_action)
            rows["reward"].append(float(reward))
            rows["terminated"].append(bool(terminated))
            done = terminated or truncated
        length = len(rows["obs"])
        out.append(
            {
                "obs": np.asarray(rows["obs"], np.float32),
                "action": np.asarray(rows["action"], np.float32),
                "reward": np.asarray(rows["reward"], np.float32),
                "is_first": np.arange(length) == 0,
                "terminated": np.asarray(rows["terminated"], bool),
                "truncated": bool(truncated),
            }
        )
    env.close()
    return out


def pad_batch(episodes: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stacks episodes into `[E, L, ...]` arrays (zero-padded after each end) and `rows [E]` (`T_e + 1`)."""
    rows = np.array([len(ep["reward"]) for ep in episodes])
    length = int(rows.max())
    batch = {}
    for name in ("obs", "action", "reward", "is_first", "terminated"):
        first = episodes[0][name]
        array = np.zeros((len(episodes), length, *first.shape[1:]), first.dtype)
        for e, ep in enumerate(episodes):
            array[e, : rows[e]] = ep[name]
        batch[name] = array
    return batch, rows


# ----------------------------------------------------------------------------- jitted model passes


def make_functions(wm_config: wm.WorldModelConfig, actor_config: da.ActorConfig, *, deterministic: bool):
    """The three jitted passes: `(filter_fn, open_loop_fn, imagine_fn)` (see their docstrings)."""
    model = wm.WorldModel(wm_config)
    bins = wm.twohot_bins(wm_config.num_bins)

    def predictions(wm_params, latent):
        dec, rew_logits, cont_logit = model.apply(wm_params, latent.h, latent.z, method=wm.WorldModel.heads)
        return wm.symexp(dec), wm.twohot_mean(rew_logits, bins), jax.nn.sigmoid(cont_logit)

    @jax.jit
    def filter_fn(wm_params, obs, prev_actions, is_first, key):
        """Posterior latents `h [E, L, D]`, `z [E, L, S, C]` of the padded episode batch."""
        latents, _, _ = wm.observe(model, wm_params, obs, prev_actions, is_first, key)
        return latents

    @jax.jit
    def open_loop_fn(wm_params, start, actions, key):
        """`start [N]` latents, real `actions [K, N, A]` -> predictions at `k = 0 .. K`:
        `(obs [K + 1, N, O] raw units, reward [K + 1, N], p_cont [K + 1, N])`."""

        def body(latent, inputs):
            action, step_key = inputs
            latent = wm.imagine_step(model, wm_params, latent, action, step_key)
            return latent, predictions(wm_params, latent)

        _, outs = jax.lax.scan(body, start, (actions, jax.random.split(key, actions.shape[0])))
        first = predictions(wm_params, start)
        return jax.tree.map(lambda x0, xs: jnp.concatenate([x0[None], xs], 0), first, outs)

    def actor_model_action(actor_params, latent, key):
        """The model action of the agent's acting rule (`train.make_policy_step`)."""
        if deterministic:
            action = da.act(actor_params, actor_config, latent.h, latent.z, None, training=False, deterministic=True)
            return spaces.model_action(actor_config, action)
        if actor_config.distribution == "bounded_normal":
            out = da.act(actor_params, actor_config, latent.h, latent.z, key, training=True)
            return spaces.model_action(actor_config, out.action, out.raw_sample)
        action = da.act(actor_params, actor_config, latent.h, latent.z, key, training=False)
        return spaces.model_action(actor_config, action)

    @functools.partial(jax.jit, static_argnames=("horizon",))
    def imagine_fn(wm_params, actor_params, start, key, *, horizon):
        """`start [N]` latents -> the actor's imagined `(reward [H, N], p_cont [H, N])` at `s_1 .. s_H`."""

        def body(latent, step_key):
            act_key, model_key = jax.random.split(step_key)
            action = actor_model_action(actor_params, latent, act_key)
            latent = wm.imagine_step(model, wm_params, latent, action, model_key)
            rew_logits, cont_logit = model.apply(wm_params, latent.h, latent.z, method=wm.WorldModel.reward_cont)
            return latent, (wm.twohot_mean(rew_logits, bins), jax.nn.sigmoid(cont_logit))

        _, outs = jax.lax.scan(body, start, jax.random.split(key, horizon))
        return outs

    return filter_fn, open_loop_fn, imagine_fn


# ----------------------------------------------------------------------------- metrics


def _f(x: Any) -> float | None:
    """A JSON-safe float (None for nan / inf)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or np.std(a) < 1e-8 * (1 + np.abs(a).mean()) or np.std(b) < 1e-8 * (1 + np.abs(b).mean()):
        return None
    return _f(np.corrcoef(a, b)[0, 1])


def open_loop_metrics(
    batch: dict[str, np.ndarray], rows: np.ndarray, preds: tuple[np.ndarray, ...], horizons: list[int]
) -> dict[str, Any]:
    """Per horizon `k`: reward, observation and continue errors of the predictions at `t + k`.

    Args:
      batch, rows: from `pad_batch` (`[E, L, ...]`, `[E]`).
      preds: `open_loop_fn`'s `(obs [K + 1, E * L, O], reward [K + 1, E * L], p_cont [K + 1, E * L])`.
    """
    pred_obs, pred_rew, pred_cont = preds
    num_ep, length = batch["reward"].shape
    t = np.arange(length)
    result = {}
    for k in horizons:
        target = np.minimum(t + k, length - 1)
        # [E, L]: start t with a target t + k inside the episode that is a real transition (not row 0)
        valid = (t[None, :] + k <= rows[:, None] - 1) & ~batch["is_first"][:, target]
        real_obs = batch["obs"][:, target][valid]  # [n, O]
        real_rew = batch["reward"][:, target][valid]
        real_term = batch["terminated"][:, target][valid]
        p_obs = pred_obs[k].reshape(num_ep, length, -1)[valid]
        p_rew = pred_rew[k].reshape(num_ep, length)[valid]
        p_cont = pred_cont[k].reshape(num_ep, length)[valid]
        n = int(valid.sum())
        if n == 0:
            result[str(k)] = {"n": 0}
            continue
        rew_err = p_rew - real_rew
        obs_err = p_obs - real_obs
        cont = {
            "n_terminal": int(real_term.sum()),
            "p_cont_terminal_mean": _f(p_cont[real_term].mean()) if real_term.any() else None,
            "p_cont_nonterminal_mean": _f(p_cont[~real_term].mean()) if (~real_term).any() else None,
            "p_cont_nonterminal_min": _f(p_cont[~real_term].min()) if (~real_term).any() else None,
            "log_loss": _f(
                -np.mean(np.where(real_term, np.log(1 - p_cont + 1e-7), np.log(p_cont + 1e-7)).astype(np.float64))
            ),
        }
        result[str(k)] = {
            "n": n,
            "reward": {
                "rmse": _f(np.sqrt(np.mean(rew_err**2))),
                "mae": _f(np.mean(np.abs(rew_err))),
                "bias": _f(np.mean(rew_err)),
                "real_std": _f(np.std(real_rew)),
                "real_mean": _f(np.mean(real_rew)),
            },
            "obs": {
                "rmse": _f(np.sqrt(np.mean(obs_err**2))),
                "rmse_per_dim": [_f(v) for v in np.sqrt(np.mean(obs_err**2, 0))],
                "real_std_per_dim": [_f(v) for v in np.std(real_obs, 0)],
            },
            "cont": cont,
        }
    return result


def return_starts(rows: np.ndarray, length: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """`(episode, t)` index arrays of every row with at least `horizon` real steps after it."""
    e, t = np.nonzero(np.arange(length)[None, :] + horizon <= rows[:, None] - 1)
    return e, t


def real_returns(batch: dict[str, np.ndarray], e: np.ndarray, t: np.ndarray, horizon: int, discount: float):
    """`[N]` `sum_{j=1..H} discount^(j-1) r_{t+j}` of the real rewards after each start."""
    steps = t[:, None] + np.arange(1, horizon + 1)[None, :]
    weights = discount ** np.arange(horizon)
    return (batch["reward"][e[:, None], steps].astype(np.float64) * weights).sum(-1)


def return_metrics(imag_rew: np.ndarray, imag_cont: np.ndarray, real: np.ndarray, discount: float) -> dict[str, Any]:
    """Imagined (`[H, N]` rewards and continues at `s_1 .. s_H`) vs real `[N]` discounted returns."""
    horizon = imag_rew.shape[0]
    weights = discount ** np.arange(horizon)[:, None]
    imagined = (imag_rew.astype(np.float64) * weights).sum(0)
    survive = np.concatenate([np.ones_like(imag_cont[:1]), np.cumprod(imag_cont[:-1], 0)], 0).astype(np.float64)
    imagined_cont = (imag_rew * survive * weights).sum(0)
    diff = imagined - real
    return {
        "n_starts": len(real),
        "imagined_mean": _f(imagined.mean()),
        "real_mean": _f(real.mean()),
        "bias": _f(diff.mean()),
        "rmse": _f(np.sqrt(np.mean(diff**2))),
        "corr": _corr(imagined, real),
        "real_std": _f(real.std()),
        "imagined_std": _f(imagined.std()),
        "imagined_cont_weighted_mean": _f(imagined_cont.mean()),
        "bias_cont_weighted": _f((imagined_cont - real).mean()),
    }


# ----------------------------------------------------------------------------- main


def diagnose(
    policy: agent_policy.Policy,
    episodes: list[dict[str, np.ndarray]],
    *,
    horizons: list[int],
    imagine_horizon: int,
    discount: float,
    deterministic: bool,
    seed: int,
    wm_params: Any = None,
) -> dict[str, Any]:
    """All model numbers on collected episodes (`wm_params` overrides the policy's world model)."""
    wm_params = policy.wm_params if wm_params is None else wm_params
    filter_fn, open_loop_fn, imagine_fn = make_functions(
        policy.wm_config, policy.actor_config, deterministic=deterministic
    )
    batch, rows = pad_batch(episodes)
    num_ep, length = batch["reward"].shape
    filter_key, open_key, imagine_key = jax.random.split(jax.random.key(seed), 3)
    post = filter_fn(wm_params, batch["obs"], batch["action"], batch["is_first"], filter_key)
    flat = jax.tree.map(lambda x: x.reshape(num_ep * length, *x.shape[2:]), post)

    out: dict[str, Any] = {}
    k_max = max(horizons)
    if k_max > 0:
        # actions[j - 1, (e, t)] = a_{t+j-1} = row t + j's action (clipped at the padded end; masked later)
        idx = np.minimum(np.arange(length)[None, :] + np.arange(1, k_max + 1)[:, None], length - 1)  # [K, L]
        actions = np.moveaxis(batch["action"][:, idx], 0, 1).reshape(k_max, num_ep * length, -1)
    else:
        actions = np.zeros((0, num_ep * length, batch["action"].shape[-1]), np.float32)
    preds = jax.device_get(open_loop_fn(wm_params, flat, actions, open_key))
    out["open_loop"] = open_loop_metrics(batch, rows, preds, horizons)

    e, t = return_starts(rows, length, imagine_horizon)
    if len(e) == 0:
        out["returns"] = {"n_starts": 0}
    else:
        start = jax.tree.map(lambda x: x[e, t], post)
        imag_rew, imag_cont = jax.device_get(
            imagine_fn(wm_params, policy.actor_params, start, imagine_key, horizon=imagine_horizon)
        )
        real = real_returns(batch, e, t, imagine_horizon, discount)
        out["returns"] = return_metrics(np.asarray(imag_rew), np.asarray(imag_cont), real, discount)
    return out


def _fmt(x: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:{width}.3g}"


def report(result: dict[str, Any]) -> str:
    """The compact human-readable report of `main`'s result dict."""
    data, lines = result["data"], []
    mode = "sampled" if result["sampled"] else "deterministic"
    lines.append(
        f"{result['dir']} ({result['env']}): {data['episodes']} held-out episodes, reset seeds "
        f"{SEED_BASE}..{SEED_BASE + data['episodes'] - 1}, {mode} policy"
    )
    lines.append(
        f"  returns {' '.join(f'{r:.1f}' for r in data['returns'])} (mean {np.mean(data['returns']):.1f}); "
        f"lengths {' '.join(str(n) for n in data['lengths'])}; {data['terminated']} terminated, "
        f"{data['truncated']} truncated"
    )
    lines.append(f"  real reward per step: mean {data['reward_mean']:.4g}, std {data['reward_std']:.4g}")
    lines.append("")
    lines.append("open-loop prediction: posterior at t, k prior steps with the real actions, compared at t+k")
    lines.append(
        f"  {'k':>3} {'n':>6} | {'rew rmse':>8} {'mae':>8} {'bias':>8} {'real std':>8} | {'obs rmse':>8}"
        "  per dim rmse/std"
    )
    for k, m in result["open_loop"].items():
        if m["n"] == 0:
            lines.append(f"  {k:>3} {0:>6} | (no start has {k} real steps after it)")
            continue
        r, o = m["reward"], m["obs"]
        dims = " ".join(
            f"{_fmt(a, 0).strip()}/{_fmt(b, 0).strip()}"
            for a, b in zip(o["rmse_per_dim"], o["real_std_per_dim"], strict=True)
        )
        lines.append(
            f"  {k:>3} {m['n']:>6} | {_fmt(r['rmse'])} {_fmt(r['mae'])} {_fmt(r['bias'])} {_fmt(r['real_std'])} | "
            f"{_fmt(o['rmse'])}  {dims}"
        )
    for k, m in result["open_loop"].items():
        if m["n"] == 0:
            continue
        c = m["cont"]
        at_term = (
            f"at the {c['n_terminal']} real terminals {c['p_cont_terminal_mean']:.3f}"
            if c["n_terminal"]
            else "no real terminal among the targets"
        )
        lines.append(
            f"  p(cont) k={k}: {at_term}; non-terminal mean {_fmt(c['p_cont_nonterminal_mean'], 0).strip()}, "
            f"min {_fmt(c['p_cont_nonterminal_min'], 0).strip()}; log-loss {_fmt(c['log_loss'], 0).strip()}"
        )
    lines.append("")
    ret = result["returns"]
    lines.append(
        f"imagined vs real {result['imagine_horizon']}-step discounted return (gamma {result['discount']}), "
        f"{mode} actor, from {ret['n_starts']} starts"
    )
    if ret["n_starts"]:
        corr = "null (real returns constant)" if ret["corr"] is None else f"{ret['corr']:.3f}"
        lines.append(
            f"  imagined mean {ret['imagined_mean']:.4g}, real mean {ret['real_mean']:.4g}, bias {ret['bias']:.4g}, "
            f"rmse {ret['rmse']:.4g} (real std {ret['real_std']:.4g}), corr {corr}"
        )
        lines.append(
            f"  cont-weighted imagined mean {ret['imagined_cont_weighted_mean']:.4g} "
            f"(bias {ret['bias_cont_weighted']:.4g})"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="World-model diagnostics of a finished DreamerV3 agent run on held-out real episodes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("dir", help="a finished `python -m dreamer_actor.agent --out DIR` run folder")
    parser.add_argument("--episodes", type=int, default=5, help=f"real episodes, reset seeds {SEED_BASE} + i")
    parser.add_argument("--sampled", action="store_true", help="sample the actor (default: its mode action)")
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 15], help="open-loop steps k (0: posterior)")
    parser.add_argument("--imagine-horizon", type=int, default=None, help="H of the returns (default: the run's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent and action samples")
    parser.add_argument("--json", default=None, help="output JSON (default: DIR/diagnostics.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if min(args.horizons) < 0:
        parser.error("--horizons must be >= 0")
    if args.imagine_horizon is not None and args.imagine_horizon < 1:
        parser.error("--imagine-horizon must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    directory = pathlib.Path(args.dir)
    json_path = pathlib.Path(args.json) if args.json else directory / "diagnostics.json"
    if json_path.exists() and not args.overwrite:  # before any work: nothing a user owns is replaced
        raise SystemExit(f"agent_diagnostics: {json_path} exists; pass --overwrite to replace it, or another --json.")
    meta_path = directory / agent_policy.AGENT_FILE
    if not meta_path.exists():
        raise SystemExit(f"agent_diagnostics: {meta_path} not found; is {directory} a finished agent run?")
    meta = json.loads(meta_path.read_text())
    horizon = args.imagine_horizon or int(meta["agent_config"]["horizon"])
    discount = float(meta["agent_config"]["discount"])
    horizons = sorted(set(args.horizons))

    start_time = time.perf_counter()
    policy = agent_policy.load(directory, deterministic=not args.sampled, seed=args.seed)
    episodes = collect_episodes(policy, meta["env"], args.episodes)
    rewards = np.concatenate([ep["reward"][1:] for ep in episodes])
    result: dict[str, Any] = {
        "dir": str(directory),
        "env": meta["env"],
        "sampled": args.sampled,
        "seed": args.seed,
        "seed_base": SEED_BASE,
        "horizons": horizons,
        "imagine_horizon": horizon,
        "discount": discount,
        "data": {
            "episodes": args.episodes,
            "lengths": [len(ep["reward"]) - 1 for ep in episodes],
            "returns": [float(ep["reward"].sum()) for ep in episodes],
            "terminated": int(sum(ep["terminated"].any() for ep in episodes)),
            "truncated": int(sum(ep["truncated"] for ep in episodes)),
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
        },
    }
    result.update(
        diagnose(
            policy,
            episodes,
            horizons=horizons,
            imagine_horizon=horizon,
            discount=discount,
            deterministic=not args.sampled,
            seed=args.seed,
        )
    )
    result["wall_s"] = time.perf_counter() - start_time
    print(report(result))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    with open(json_path, "w" if args.overwrite else "x") as f:  # "x": never replaces a file made meanwhile
        json.dump(result, f, indent=1)
    print(f"\nwrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
