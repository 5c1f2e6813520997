"""Does the work tree compute what an earlier commit computed? The guard for a refactor.

    .venv/bin/python scripts/same_results.py --base HEAD~3      # ~8 minutes on 2 cores

Checks out `--base` into a temporary git worktree and runs, with each tree's own code (PYTHONPATH) and
this venv, the same small jobs:

* three tiny agent runs (`python -m dreamer_actor.agent`, 400 env steps), every learning rule given as
  a flag so that the jobs do not move when a default does: Pendulum-v1 with bounded_normal and the
  earlier rules, CartPole-v1 with today's default rules (official's but the discount), Acrobot-v1 with
  official DreamerV3's rules and the mix estimator; each run's `world_model.msgpack` must be byte for
  byte the same and its `curve.json` equal but for the clock fields (`wall_s`, `eval_s`) and its own
  `--out`, its run config compared as the flags it reads as (`RunConfig.from_dict`, so a change of the
  file's layout alone is not a difference);
* the exact-model example (`examples.imagination`): 6 updates per estimator, the states' bytes hashed.

Prints each comparison and exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from dreamer_actor.agent.run import RunConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ("--steps 400 --warmup 64 --eval-every 200 --eval-episodes 2 --deter 16 --stoch 4 --classes 4 --units 16 "
        "--batch 4 --length 8 --horizon 5 --no-progress").split()  # fmt: skip
EARLIER = "--slow-target --repval-scale 0 --no-predicted-start-cont --no-imagine-pre-update --norm layer"
OFFICIAL = "--no-slow-target --repval-scale 0.3 --predicted-start-cont --imagine-pre-update --norm rms"
RUNS = {
    "Pendulum-v1": f"--distribution bounded_normal {EARLIER} --discount 0.99 --no-contdisc".split(),
    "CartPole-v1": f"{OFFICIAL} --discount 0.99 --no-contdisc".split(),
    "Acrobot-v1": f"{OFFICIAL} --contdisc --discount 0.997 --estimator mix".split(),
}
CLOCKS = ("wall_s", "eval_s")
EXAMPLE = """
import hashlib, warnings
warnings.simplefilter("ignore")
import flax.serialization, jax
from dreamer_actor.examples import imagination as im
for estimator in ("reinforce", "dynamics", "mix"):
    config = im.TrainConfig(starts=64, horizon=5, updates_per_call=3, estimator=estimator)
    state, step = im.init_train_state(jax.random.key(0), config), im.make_train_step(config)
    for _ in range(2):
        state, _ = step(state)
    arrays = (state.actor_params, state.critic_params, state.slow_critic_params, state.actor_opt, state.critic_opt,
              state.normalizer, state.starts, jax.random.key_data(state.key))
    print(estimator, hashlib.sha256(flax.serialization.to_bytes(jax.device_get(arrays))).hexdigest())
"""


def strip(curve: dict) -> dict:
    """The curve without its clock fields and its own output folder."""
    if isinstance(curve, dict):
        return {k: strip(v) for k, v in curve.items() if k not in CLOCKS and k != "out"}
    if isinstance(curve, list):
        return [strip(v) for v in curve]
    return curve


def _run(cmd: list[str], tree: pathlib.Path, env: dict[str, str]) -> str:
    """Runs `cmd` in `tree`; its stdout, or SystemExit with its stderr's tail."""
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed in {tree}:\n{done.stderr[-3000:]}")
    return done.stdout


def run_tree(tree: pathlib.Path, out: pathlib.Path) -> dict[str, object]:
    """Every job's result with `tree`'s code: world-model bytes and stripped curve per env, example hashes."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    results: dict[str, object] = {}
    for env_id, flags in RUNS.items():
        folder = out / env_id
        cmd = [sys.executable, "-m", "dreamer_actor.agent", "--env", env_id, *TINY, *flags, "--out", str(folder)]
        _run(cmd, tree, env)
        results[f"{env_id} world model"] = (folder / "world_model.msgpack").read_bytes()
        curve = json.loads((folder / "curve.json").read_text())
        curve["config"] = RunConfig.from_dict(curve["config"]).flag_values()
        results[f"{env_id} curve"] = strip(curve)
    results["example states"] = _run([sys.executable, "-c", EXAMPLE], tree, env)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the commit to compare the work tree with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            before = run_tree(base, pathlib.Path(tmp) / "before")
            after = run_tree(ROOT, pathlib.Path(tmp) / "after")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    differ = [name for name in before if before[name] != after[name]]
    for name in before:
        print(f"{name}: {'DIFFERS' if name in differ else 'same'}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
