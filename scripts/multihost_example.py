"""Multi-host training of the actor, tried on one machine: two processes x 4 CPU devices.

Each process calls `jax.distributed.initialize` (coordinator on 127.0.0.1), builds the global
mesh of all 8 devices, feeds its half of the `[T, B, ...]` batch with
`jax.make_array_from_process_local_data`, runs one jitted `make_actor_train_step` and saves a
checkpoint with `save_checkpoint` (called by both processes). Run it by hand from the
repository root, one command per process (here both from one shell):

    .venv/bin/python scripts/multihost_example.py --process-id 0 --port 12355 --out /tmp/multihost &
    .venv/bin/python scripts/multihost_example.py --process-id 1 --port 12355 --out /tmp/multihost
    wait

Each process writes `OUT/result_<id>.npz` (loss, metrics, updated params and Adam state, all
gathered with `process_allgather`) and `OUT/result_<id>.json` (timings and what the
checkpoint checks saw); process 0's checkpoint lands in `OUT/checkpoint`.
`tests/test_multihost.py` runs exactly this and compares it with `reference()`, the same step
on the full batch in one plain process.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--port", type=int, required=True, help="coordinator port on 127.0.0.1 (the same for all)")
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--local-devices", type=int, default=4, help="CPU devices per process")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="folder for results and the checkpoint")
    parser.add_argument("--timeout", type=int, default=60, help="seconds to wait for the other processes at start")
    return parser.parse_args(argv)


if __name__ == "__main__":  # before jax is imported: CPU backend with several devices per process
    _ARGS = parse_args()
    if _DEVICE_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICE_FLAG}={_ARGS.local_devices}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import dreamer_actor as da  # noqa: E402

T, B, H, S, C = 4, 16, 24, 4, 5  # B is the global batch, split over all devices
ENTROPY_COEF = 3e-3
LEARNING_RATE = 1e-3


def problem() -> dict:
    """The config, the full batch and initial params (numpy) and the raw PRNG key: the same in every process."""
    config = da.ActorConfig.create(low=[-2.0, 0.0, -1.0], high=[3.0, 1.0, 1.0], layers=2, units=32)
    rng = np.random.default_rng(0)
    batch = {
        "hidden": rng.standard_normal((T, B, H), dtype=np.float32),
        "stoch": np.eye(C, dtype=np.float32)[rng.integers(0, C, (T, B, S))],
        "advantage": rng.standard_normal((T, B), dtype=np.float32),
        "weights": rng.uniform(0.5, 1.0, (T, B)).astype(np.float32),
    }
    # The actor's param shapes (traced, nothing compiled), filled with numpy draws: cheap, the same in every process.
    shapes = jax.eval_shape(da.Actor.from_config(config).init, jax.random.key(1), batch["hidden"][0], batch["stoch"][0])

    def leaf(path, shape):
        if len(shape.shape) == 2:  # kernels: fan-in scaled
            return (rng.standard_normal(shape.shape) / np.sqrt(shape.shape[0])).astype(shape.dtype)
        if jax.tree_util.keystr(path).endswith("'scale']"):  # norm scales
            return np.ones(shape.shape, shape.dtype)
        return (0.1 * rng.standard_normal(shape.shape)).astype(shape.dtype)

    params = jax.tree_util.tree_map_with_path(leaf, shapes)
    key = np.asarray(jax.random.key_data(jax.random.key(2)))  # raw uint32[2]: `example_keys` splits it per (t, b)
    return {"config": config, "batch": batch, "params": params, "key": key}


def flat(prefix: str, tree) -> dict[str, np.ndarray]:
    """`{"prefix/path/to/leaf": array}` for an npz file."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {f"{prefix}/{jax.tree_util.keystr(p, simple=True, separator='/')}": np.asarray(x) for p, x in leaves}


def run_step(prob: dict, params, opt_state, batch: dict, key) -> tuple:
    """The jitted train step: `(params, opt_state, metrics)`."""
    step = jax.jit(da.make_actor_train_step(prob["config"], optax.adam(LEARNING_RATE), entropy_coef=ENTROPY_COEF))
    return step(params, opt_state, batch["hidden"], batch["stoch"], batch["advantage"], key, batch["weights"])


def reference() -> dict[str, np.ndarray]:
    """The same step in one plain process on the full batch (one device): what the processes must reproduce."""
    prob = problem()
    params, opt_state, metrics = run_step(
        prob, prob["params"], optax.adam(LEARNING_RATE).init(prob["params"]), prob["batch"], prob["key"]
    )
    return {**flat("params", params), **flat("opt_state", opt_state), **flat("metrics", metrics)}


def main(args: argparse.Namespace) -> None:
    from jax.experimental import multihost_utils

    started = time.perf_counter()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # the default in jax 0.10; explicit here
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{args.port}",
        num_processes=args.num_processes,
        process_id=args.process_id,
        local_device_ids=list(range(args.local_devices)),
        initialization_timeout=args.timeout,
    )
    n = args.num_processes * args.local_devices
    assert jax.process_count() == args.num_processes and jax.device_count() == n, jax.devices()
    assert jax.local_device_count() == args.local_devices, jax.local_devices()
    initialized = time.perf_counter()

    prob = problem()
    prepared = time.perf_counter()
    mesh = Mesh(np.array(jax.devices()), ("batch",))  # the global mesh, Auto axes
    data, replicated = NamedSharding(mesh, P(None, "batch")), NamedSharding(mesh, P())
    # This process's devices hold a contiguous block of B: feed just that part of the batch.
    per_process = B // args.num_processes
    mine = slice(args.process_id * per_process, (args.process_id + 1) * per_process)
    batch = {
        name: jax.make_array_from_process_local_data(data, x[:, mine], x.shape) for name, x in prob["batch"].items()
    }
    assert batch["hidden"].shape == (T, B, H) and not batch["hidden"].is_fully_addressable
    assert {s.data.shape for s in batch["hidden"].addressable_shards} == {(T, B // n, H)}
    put = lambda tree: jax.tree.map(lambda x: jax.make_array_from_process_local_data(replicated, np.asarray(x)), tree)
    params = put(prob["params"])
    opt_state = put(optax.adam(LEARNING_RATE).init(prob["params"]))
    key = put(prob["key"])

    params, opt_state, metrics = run_step(prob, params, opt_state, batch, key)
    assert params["params"]["out"]["kernel"].sharding.is_fully_replicated
    gathered = multihost_utils.process_allgather((params, opt_state, metrics), tiled=True)
    stepped = time.perf_counter()

    # Checkpoint, saved by every process (params and Adam state replicated over the global mesh).
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "checkpoint"
    report = {"process_id": args.process_id}
    da.save_checkpoint(path, params=params, config=prob["config"], opt_state=opt_state, step=1)
    try:  # a second save without overwrite: refused on every process, nothing changed
        da.save_checkpoint(path, params=params, config=prob["config"], step=2)
        report["exists_error"] = None
    except FileExistsError as error:
        report["exists_error"] = str(error)
    # Overwrite by both processes (step 2); then every process restores it onto the global mesh.
    da.save_checkpoint(path, params=params, config=prob["config"], opt_state=opt_state, step=2, overwrite=True)
    restored = da.restore_checkpoint(path, config=prob["config"], params_like=params, opt_state_like=opt_state)
    same = jax.tree.map(
        lambda a, b: bool(np.array_equal(a, b)),
        multihost_utils.process_allgather((restored.params, restored.opt_state), tiled=True),
        gathered[:2],
    )
    report["restored_on_mesh_equal"] = all(jax.tree.leaves(same))
    report["restored_step"] = restored.step
    report["restored_sharding_replicated"] = restored.params["params"]["out"]["kernel"].sharding.is_fully_replicated
    multihost_utils.sync_global_devices("multihost_example: done")
    saved = time.perf_counter()

    params_np, opt_state_np, metrics_np = gathered
    arrays = {**flat("params", params_np), **flat("opt_state", opt_state_np), **flat("metrics", metrics_np)}
    np.savez(args.out / f"result_{args.process_id}.npz", **arrays)
    report["seconds"] = {
        "initialize": initialized - started,
        "problem": prepared - initialized,
        "step": stepped - prepared,
        "checkpoints": saved - stepped,
    }
    (args.out / f"result_{args.process_id}.json").write_text(json.dumps(report, indent=1))
    print(f"process {args.process_id}: loss {float(metrics_np['loss']):.6f}, {report['seconds']}", flush=True)


if __name__ == "__main__":
    main(_ARGS)
