"""Time per agent update for several sizes (docs/agent.md's "Why these defaults" table).

Usage: `.venv/bin/python scripts/agent_update_sizes.py Pendulum-v1` (one process, sizes in turn,
median of 8 updates after one compile each; run it on an idle machine).
"""

import sys
import time

import gymnasium as gym
import jax
import numpy as np

from dreamer_actor.agent import spaces
from dreamer_actor.agent import train as T
from dreamer_actor.agent import world_model as wm
from dreamer_actor.agent.replay import Replay

env_id = sys.argv[1]
env = gym.make(env_id)


def run(deter, units, stoch, classes, batch, length, est="reinforce"):
    ac = spaces.actor_config_for(env.action_space, distribution=None, layers=2, units=units)
    od = spaces.obs_dim_for(env.observation_space)
    ad = spaces.model_action_dim(ac)
    wc = wm.WorldModelConfig(
        obs_dim=od, action_dim=ad, deter=deter, stoch=stoch, classes=classes, units=units, layers=2
    )
    cfg = T.AgentConfig(batch=batch, length=length, estimator=est)
    st = T.init_agent(jax.random.key(0), wc, ac, cfg)
    up = T.make_update(wc, ac, cfg)
    rp = Replay(5000, od, ad, seed=0)
    rng = np.random.default_rng(0)
    for i in range(3000):
        rp.add(rng.normal(size=od), rng.normal(size=ad), 0.0, i % 200 == 0, False)
    b = rp.sample(batch, length)
    t0 = time.perf_counter()
    st, m, _ = up(st, b)
    jax.block_until_ready(m)
    c = time.perf_counter() - t0
    ts = []
    for _ in range(8):
        b = rp.sample(batch, length)
        t0 = time.perf_counter()
        st, m, _ = up(st, b)
        jax.block_until_ready(m)
        ts.append(time.perf_counter() - t0)
    print(
        f"deter {deter} units {units} z {stoch}x{classes} B{batch} L{length} {est}: "
        f"compile {c:.1f}s update {np.median(ts) * 1e3:.0f} ms",
        flush=True,
    )


for args in [
    (128, 128, 16, 8, 16, 64),
    (128, 128, 16, 8, 16, 32),
    (64, 64, 16, 8, 16, 64),
    (128, 128, 16, 8, 8, 64),
    (256, 128, 16, 8, 16, 32),
    (128, 128, 16, 8, 16, 64, "dynamics"),
]:
    run(*args)
