"""Probe (issue 22): the REINFORCE actor gradient with the rollout forward only and the actor batched.

    PYTHONPATH=. .venv/bin/python scripts/reinforce_batched.py [Pendulum-v1]   # ~2 min on 2 free cores

Under REINFORCE no gradient flows through the imagined rollout, so `train.imagine` can run under
`stop_gradient` and the actor's log-prob and entropy be recomputed for all `T x N` states in one call
(`da.Actor.apply`, `da.policy_head`, `da.policy_log_prob`, `da.policy_entropy` at the rollout's raw
samples). This compiles the default agent's `train_step` as it is and with `train.imagine` replaced
that way, in one process, prints how far the updated params differ and times both, interleaved over 7
rounds. Measured (benchmarks/README.md, "What bounds the update"): no faster, so not adopted.
"""

from __future__ import annotations

import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import dreamer_actor as da
from benchmarks import agent_update
from dreamer_actor.agent import train as agent_train

ORIGINAL_IMAGINE = agent_train.imagine


def imagine_batched(model, wm_params, actor_params, actor_config, start, key, *, horizon, reparameterize):
    """`train.imagine`, with REINFORCE's log-prob and entropy computed outside the scan."""
    if reparameterize:
        return ORIGINAL_IMAGINE(
            model, wm_params, actor_params, actor_config, start, key, horizon=horizon, reparameterize=True
        )
    sg = jax.lax.stop_gradient
    latents, outs = sg(
        ORIGINAL_IMAGINE(model, wm_params, sg(actor_params), actor_config, start, key, horizon=horizon,
                         reparameterize=False)
    )  # fmt: skip
    raw = da.Actor.from_config(actor_config).apply(actor_params, latents.h[:-1], latents.z[:-1])
    dist = da.policy_head(raw, actor_config)
    log_prob = da.policy_log_prob(dist, actor_config, raw_sample=outs.raw_sample)
    entropy = da.policy_entropy(dist, actor_config, raw_sample=outs.raw_sample)
    return latents, outs._replace(log_prob=log_prob, entropy=entropy)


def main(env_id: str = "Pendulum-v1") -> None:
    agent = agent_update.build(env_id, "reinforce", quick=False)
    batch = {k: jnp.asarray(v) for k, v in agent.replay.sample(agent.config.batch, agent.config.length).items()}
    step = functools.partial(
        agent_train.train_step, wm_config=agent.wm_config, actor_config=agent.actor_config, config=agent.config
    )
    now = jax.jit(step).lower(agent.state, batch).compile()
    agent_train.imagine = imagine_batched  # read at trace time by `train.actor_objective`
    try:
        batched = jax.jit(lambda s, b: step(s, b)).lower(agent.state, batch).compile()
    finally:
        agent_train.imagine = ORIGINAL_IMAGINE
    state_now, _, _ = now(agent.state, batch)
    state_batched, _, _ = batched(agent.state, batch)
    for name in ("actor_params", "critic_params", "wm_params"):
        pairs = zip(
            jax.tree.leaves(getattr(state_now, name)), jax.tree.leaves(getattr(state_batched, name)), strict=True
        )
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs)
        print(f"{name}: max |difference| {diff:.3g}")
    times: dict[str, list[float]] = {"now": [], "batched": []}
    for _ in range(7):
        for name, fn in (("now", now), ("batched", batched)):
            began = time.perf_counter()
            jax.block_until_ready(fn(agent.state, batch))
            times[name].append(time.perf_counter() - began)
    ratio = np.array(times["batched"]) / np.array(times["now"])
    print(f"{env_id}: now {np.median(times['now']) * 1e3:.1f} ms, batched {np.median(times['batched']) * 1e3:.1f} ms, "
          f"per-round ratio {np.median(ratio):.3f} ({ratio.min():.3f}-{ratio.max():.3f})")  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
