"""Two real jax processes (`jax.distributed`, gloo CPU collectives, 2 x 4 CPU devices) train and checkpoint.

Runs `scripts/multihost_example.py` twice, as process 0 and 1 of one run with its coordinator
on 127.0.0.1 (a free port), and compares what they write with the same step in this plain
process on the full batch (`reference()`): per-example keys make the samples independent of
the sharding, so only the order of the float32 sums over the batch differs. Then restores, in
this single process, the checkpoint both processes saved together.
"""

import importlib.util
import json
import pathlib
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import optax

import dreamer_actor as da

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "multihost_example.py"
NUM_PROCESSES, LOCAL_DEVICES = 2, 4
TIMEOUT_S = 240  # the whole two-process run (measured 45-140 s on a shared 2-core machine), then kill them

# Tolerances, two processes (8 devices) vs one device, float32: only the order of the sums over
# the global batch differs (as in tests/test_multidevice.py).
LOSS_RTOL = 1e-6  # loss and the other mean metrics: relative, plus the same absolute
MOMENT_TOL = 1e-5  # Adam's mu (0.1 g) and nu (0.001 g^2): each entry within this fraction of its leaf's largest
GRAD_NORM_RTOL = 1e-5
# Adam's first update is lr * g / (|g| + eps) ~ lr * sign(g): params are compared to 1e-3 lr where
# |g| > 1e-3 of its leaf's largest; elsewhere (g within rounding of 0) they may differ by up to 2 lr.
PARAM_ATOL_LR = 1e-3
SMALL_GRAD = 1e-3


def _load_example():
    spec = importlib.util.spec_from_file_location("multihost_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_processes(out: pathlib.Path, port: int, deadline: float, env: dict[str, str]) -> list[str]:
    """Starts the processes, waits for all of them (until `deadline`), kills any left; returns their logs."""
    logs = [out / f"log_{i}.txt" for i in range(NUM_PROCESSES)]
    procs = []
    try:
        for i, log in enumerate(logs):
            with open(log, "w") as f:
                command = [sys.executable, "-W", "error", str(SCRIPT), "--process-id", str(i), "--port", str(port)]
                command += ["--num-processes", str(NUM_PROCESSES), "--local-devices", str(LOCAL_DEVICES)]
                command += ["--out", str(out), "--timeout", "60"]
                procs.append(subprocess.Popen(command, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT))
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    texts = [log.read_text() for log in logs]
    codes = [proc.returncode for proc in procs]
    if codes != [0] * NUM_PROCESSES:
        shown = "\n".join(
            f"--- process {i} (exit code {c}):\n{t[-4000:]}" for i, (c, t) in enumerate(zip(codes, texts, strict=True))
        )
        raise AssertionError(f"the processes failed (negative code: killed after the {TIMEOUT_S} s limit):\n{shown}")
    return texts


def _close(actual, desired, tol, what):
    """Each entry within `tol` of the leaf's largest |entry|; returns the error in those units."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    scale = max(float(np.max(np.abs(desired))), 1e-30)
    np.testing.assert_allclose(actual, desired, rtol=0, atol=tol * scale, err_msg=what)
    return float(np.max(np.abs(actual - desired)) / scale)


def test_two_processes_train_and_checkpoint_like_one(tmp_path, host_devices_env):
    example = _load_example()
    out = tmp_path / "run"
    out.mkdir()
    started = time.monotonic()
    port = _free_port()
    deadline = started + TIMEOUT_S
    # The reference runs in this process while the two children run.
    logs: list = []
    failure: list = []

    def children():
        try:
            logs.extend(_run_processes(out, port, deadline, host_devices_env(LOCAL_DEVICES)))
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=children)
    thread.start()
    try:
        ref = example.reference()
    finally:
        thread.join(timeout=TIMEOUT_S + 30)
    if failure:
        raise failure[0]
    elapsed = time.monotonic() - started

    results = [dict(np.load(out / f"result_{i}.npz")) for i in range(NUM_PROCESSES)]
    reports = [json.loads((out / f"result_{i}.json").read_text()) for i in range(NUM_PROCESSES)]

    # Both processes hold the same replicated results, bit for bit, with the reference's leaves.
    assert sorted(results[0]) == sorted(ref)
    for name in ref:
        np.testing.assert_array_equal(results[1][name], results[0][name], err_msg=name)
    got = results[0]

    # Metrics.
    errors = {}
    for name in ("loss", "entropy", "log_prob", "advantage_mean", "advantage_std", "advantage_abs_max"):
        key = f"metrics/{name}"
        np.testing.assert_allclose(got[key], ref[key], rtol=LOSS_RTOL, atol=LOSS_RTOL, err_msg=key)
        errors[key] = float(abs(got[key] - ref[key]) / max(abs(float(ref[key])), 1e-30))
    np.testing.assert_allclose(got["metrics/grad_norm"], ref["metrics/grad_norm"], rtol=GRAD_NORM_RTOL)
    errors["metrics/grad_norm"] = float(abs(got["metrics/grad_norm"] / ref["metrics/grad_norm"] - 1))

    # Adam state and params.
    lr = example.LEARNING_RATE
    moments = [n for n in ref if n.startswith("opt_state/0/mu/") or n.startswith("opt_state/0/nu/")]
    assert len(moments) == 2 * len([n for n in ref if n.startswith("params/")]) > 0, sorted(ref)
    errors["moments"] = max(_close(got[n], ref[n], MOMENT_TOL, n) for n in moments)
    np.testing.assert_array_equal(got["opt_state/0/count"], ref["opt_state/0/count"])
    param_err = 0.0
    for name in (n for n in ref if n.startswith("params/")):
        mu = np.abs(ref["opt_state/0/mu/" + name.removeprefix("params/")])  # 0.1 * |g|
        clear = mu > SMALL_GRAD * np.max(mu)
        np.testing.assert_allclose(got[name][clear], ref[name][clear], rtol=0, atol=PARAM_ATOL_LR * lr, err_msg=name)
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=2 * lr * 1.001, err_msg=name)
        param_err = max(param_err, float(np.max(np.abs(got[name][clear] - ref[name][clear]), initial=0.0)) / lr)
    errors["params_where_g_clear_in_lr"] = param_err

    # The checkpoint both processes saved (then overwrote, both again) restores in this single process.
    prob = example.problem()
    path = out / "checkpoint"
    ckpt = da.restore_checkpoint(
        path,
        config=prob["config"],
        params_like=prob["params"],
        opt_state_like=optax.adam(lr).init(prob["params"]),
    )
    assert ckpt.step == 2
    restored = {**example.flat("params", ckpt.params), **example.flat("opt_state", ckpt.opt_state)}
    assert sorted(restored) == sorted(n for n in got if not n.startswith("metrics/"))
    for name, value in restored.items():
        np.testing.assert_array_equal(value, got[name], err_msg=name)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no staging/old leftovers

    # What each process saw: a save onto an existing checkpoint without overwrite is refused everywhere,
    # and every process restores the checkpoint onto the global mesh.
    assert "already exists" in reports[0]["exists_error"], reports[0]
    assert "process 0 of 2 failed" in reports[1]["exists_error"], reports[1]
    for report in reports:
        assert report["restored_on_mesh_equal"] and report["restored_sharding_replicated"], report
        assert report["restored_step"] == 2, report
    print(json.dumps({"seconds": elapsed, "errors": errors, "process_seconds": [r["seconds"] for r in reports]}))
