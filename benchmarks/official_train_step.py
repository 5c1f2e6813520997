"""Times official DreamerV3's train step; run by *official's* Python, not this project's.

    OFFICIAL_PYTHON benchmarks/official_train_step.py --src CHECKOUT [--updates N] [--configs size1m] ...

`benchmarks/official_update.py` starts it (see there); it imports only the checkout (danijar/dreamerv3,
unmodified) and what that checkout's venv holds, never `dreamer_actor`. It builds official's `Agent`
as `dreamerv3/main.py`'s `make_agent` does, from `configs.yaml` (`defaults`, then `--configs`, then
the flags), for a Pendulum-v1-shaped task: a 3-vector observation and a 1-D action in [-1, 1] (what
official's gym wrapper gives for Pendulum-v1). Each call trains on a fresh batch of uniform random
values in those spaces (`B x (T + replay_context)`, as its replay hands out), and waits for the new
parameters. Prints one JSON line: the first call's seconds (trace + compile + run), each later
call's seconds, the peak resident memory, the networks' parameter count
(the optimizer's moments and the slow critic left out). `build_s` is the `Agent` construction, where
official compiles its train, report and policy functions (`jax.precompile`).
"""

import argparse
import json
import pathlib
import resource
import sys
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", required=True, type=pathlib.Path)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--configs", nargs="+", default=["size1m"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(args.src))
    sys.argv = sys.argv[:1]
    import dreamerv3.main  # noqa: F401  (puts official's packages on sys.path)
    import elements
    import jax
    import numpy as np
    import ruamel.yaml as yaml
    from dreamerv3.agent import Agent

    configs = yaml.YAML(typ="safe").load((args.src / "dreamerv3" / "configs.yaml").read_text())
    config = elements.Config(configs["defaults"])
    for name in args.configs:
        config = config.update(configs[name])
    config = elements.Flags(config).parse([
        "--batch_size", str(args.batch), "--batch_length", str(args.length), "--seed", str(args.seed),
        "--jax.platform", "cpu", "--jax.compute_dtype", args.dtype, "--jax.prealloc", "False",
        "--logdir", "/tmp/unused-official-logdir",
    ])  # fmt: skip
    obs_space = {
        "vector": elements.Space(np.float32, (3,)),
        "reward": elements.Space(np.float32),
        "is_first": elements.Space(bool),
        "is_last": elements.Space(bool),
        "is_terminal": elements.Space(bool),
    }
    act_space = {"action": elements.Space(np.float32, (1,), -1.0, 1.0)}
    began = time.perf_counter()
    agent = Agent(obs_space, act_space, elements.Config(
        **config.agent, logdir=config.logdir, seed=config.seed, jax=config.jax, batch_size=config.batch_size,
        batch_length=config.batch_length, replay_context=config.replay_context,
        report_length=config.report_length, replica=config.replica, replicas=config.replicas,
    ))  # fmt: skip
    build_s = time.perf_counter() - began  # official compiles train, report and policy here (`precompile`)
    # Networks only: the optimizer's moments and the slow critic are entries of `agent.params` too.
    sizes = {k: int(np.prod(v.shape)) for k, v in agent.params.items()}
    groups = {}
    for k, size in sizes.items():
        groups[k.split("/")[0]] = groups.get(k.split("/")[0], 0) + size
    rng = np.random.default_rng(args.seed)
    shape = (config.batch_size, config.batch_length + config.replay_context)

    def batch() -> dict:
        data = {}
        for key, space in agent.spaces.items():
            if key in ("is_first", "is_last", "is_terminal"):
                data[key] = np.zeros(shape, bool)
            elif key == "consec":
                data[key] = np.zeros(shape, np.int32)
            elif np.issubdtype(space.dtype, np.floating):
                low = -1.0 if key == "action" else -2.0
                data[key] = rng.uniform(low, -low, (*shape, *space.shape)).astype(space.dtype)
            else:
                data[key] = np.zeros((*shape, *space.shape), space.dtype)
        data["is_first"][:, 0] = True
        return data

    streamed = iter(agent.stream(iter(batch, None)))
    carry = agent.init_train(config.batch_size)
    times = []
    for _ in range(args.updates + 1):
        data = next(streamed)
        began = time.perf_counter()
        carry, _, _ = agent.train(carry, data)
        jax.block_until_ready(agent.params)
        times.append(time.perf_counter() - began)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"build_s": build_s, "first_s": times[0], "times": times[1:], "peak_rss_bytes": peak,
                      "params": sum(v for k, v in groups.items() if k not in ("opt", "slowval", "slowval_count",
                                                                              "retnorm")),
                      "param_groups": groups, "jax": jax.__version__}))  # fmt: skip


if __name__ == "__main__":
    main()
