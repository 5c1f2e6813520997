"""The benchmark script runs (smoke run on tiny shapes) and its results are well formed.

Speed itself is never asserted (the machines are shared and noisy): only that every section
produces positive timings, ratios and the targets table, and that the head variants it times
compute the same loss (a benchmark of a different computation would mean nothing).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer_actor._src.noise import standard_normal

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks` is a top-level folder, not part of the package

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from benchmarks import actor_step


def _quick_benchmark(out, *args: str) -> dict:
    """Runs `python -m benchmarks.actor_step --quick --out OUT ARGS...`; returns its JSON."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.actor_step", "--quick", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads((out / "actor_step.json").read_text())


@pytest.mark.slow
def test_quick_benchmark_writes_json_and_markdown(tmp_path):
    data = _quick_benchmark(tmp_path, "--only", "head,step,act,compile", "--no-torch-compile")
    sections = data["sections"]
    assert set(sections) == {"head", "step", "act", "compile"}
    for summary in (sections["head"], sections["step"]["S"], sections["act"]["batch1"], sections["act"]["batch16"]):
        for stats in summary["times"].values():
            assert 0.0 < stats["min"] <= stats["median"] <= stats["max"]
        for stats in summary["ratios"].values():
            assert stats["median"] > 0.0
    assert "ours / distrax" in sections["head"]["ratios"]
    assert "roofline: ours / matmuls_only" in sections["step"]["S"]["ratios"]
    assert "make_actor_train_step" in sections["step"]["S"]["times"]  # the path docs/multidevice.md tells users to call
    with_torch = "ours / torch_eager" in sections["step"]["S"]["ratios"]
    assert ("matmuls_only / torch_matmuls_only" in sections["step"]["S"]["ratios"]) == with_torch
    for b in (1, 16):
        act_ratios = sections["act"][f"batch{b}"]["ratios"]
        assert "roofline: ours / forward_products" in act_ratios
        assert ("forward_products / torch_forward_products" in act_ratios) == with_torch
    names = [row["name"] for row in data["targets"]]
    assert "step S: ours / bare flax trunk" in names and "head maths: ours / distrax" in names
    assert "ours_split_input / ours_concat_input" in sections["step"]["S"]["ratios"]
    assert data["meta"]["jax_device"].startswith(jax.devices()[0].platform)
    markdown = (tmp_path / "actor_step.md").read_text()
    assert "## Targets" in markdown and "## Head maths alone" in markdown


def _loss_at_noise(raw, config, advantage, eps):
    """The head loss from our pure functions at a given noise `eps`."""
    mean, log_std = actor_step._head_params(raw, config)
    u = jax.lax.stop_gradient(mean + jnp.exp(log_std) * eps)
    log_prob = actor_step.da.log_prob_with_tanh_correction(mean, log_std, config, raw_sample=u)
    entropy = actor_step.da.entropy_estimate(mean, log_std, config, raw_sample=u)
    return actor_step.da.actor_loss(log_prob, entropy, advantage, entropy_coef=actor_step.ENTROPY_COEF)[0]


def test_head_variants_compute_the_same_estimator():
    """Ours and the distrax baseline compute the same loss and gradient at the same noise.

    Ours draws `standard_normal(key)`, distrax `jax.random.normal(key)` (what a distrax user
    gets): each is compared with the loss built from our pure functions at its own noise.
    """
    config = actor_step.da.ActorConfig.create(-1.0, 1.0, action_dim=3, layers=1, units=8)
    raw = 0.3 * jax.random.normal(jax.random.key(0), (64, 6))
    advantage = jax.random.normal(jax.random.key(1), (64,))
    key = jax.random.key(2)
    ours_eps = standard_normal(key, (64, 3))
    distrax_eps = jax.random.normal(key, (64, 3))
    with jax.numpy_rank_promotion("allow"):  # distrax broadcasts implicitly
        theirs = actor_step.distrax_head_only_loss(raw, config, advantage, key)
        grad_theirs = jax.grad(actor_step.distrax_head_only_loss)(raw, config, advantage, key)
    np.testing.assert_allclose(theirs, _loss_at_noise(raw, config, advantage, distrax_eps), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        grad_theirs, jax.grad(_loss_at_noise)(raw, config, advantage, distrax_eps), rtol=1e-4, atol=1e-6
    )
    ours = actor_step.ours_head_loss(raw, config, advantage, key)
    np.testing.assert_allclose(ours, _loss_at_noise(raw, config, advantage, ours_eps), rtol=1e-6, atol=1e-7)
    grad_ours = jax.grad(actor_step.ours_head_loss)(raw, config, advantage, key)
    np.testing.assert_allclose(
        grad_ours, jax.grad(_loss_at_noise)(raw, config, advantage, ours_eps), rtol=1e-5, atol=1e-7
    )


def test_matmul_flops_count_forward_and_backward_products():
    w = actor_step.Workload("t", 2, 3, hidden=4, stoch=(2, 3), layers=2, units=5, action_dim=1)
    n, dims = 6, [10, 5, 5, 2]
    expected = 2 * n * dims[0] * dims[1] * 2 + 2 * n * dims[1] * dims[2] * 3 + 2 * n * dims[2] * dims[3] * 3
    assert actor_step.step_flops(w) == expected
    fn, operands, flops = actor_step.trunk_dots(w)
    assert flops == expected
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in fn(*operands))


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_torch_products_are_the_xla_products_on_the_same_operands():
    w = actor_step.Workload("t", 2, 3, hidden=4, stoch=(2, 3), layers=2, units=5, action_dim=1)
    fn, operands, flops = actor_step.trunk_dots(w)
    if not _torch_importable():  # CI installs no torch: the PyTorch side must say so, not half-run
        with pytest.raises(ImportError):
            actor_step.torch_trunk_dots(w)
        return
    torch_fn, torch_flops = actor_step.torch_trunk_dots(w)
    assert torch_flops == flops
    ours, theirs = fn(*operands), torch_fn()
    assert [tuple(x.shape) for x in ours] == [tuple(t.shape) for t in theirs]
    for x, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(np.asarray(x), t.cpu().numpy(), rtol=1e-5, atol=1e-5)


def test_forward_products_are_each_layers_input_times_its_kernel():
    w = actor_step.Workload("t", 3, 1, hidden=4, stoch=(2, 3), layers=2, units=5, action_dim=2)
    host, needs_dx, _ = actor_step._dot_operands(w, w.states, backward=False)
    expected = [host[3 * i] @ host[3 * i + 1] for i in range(len(needs_dx))]
    jax_fn, torch_fn = actor_step.forward_dots(w)
    assert (torch_fn is not None) == _torch_importable()
    outputs = [("jax", jax_fn)] + ([("torch", torch_fn)] if torch_fn is not None else [])
    for name, f in outputs:
        got = [np.asarray(x) if name == "jax" else x.cpu().numpy() for x in f()]
        assert [g.shape for g in got] == [(3, 5), (3, 5), (3, 4)]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_first_layer_forms_give_the_same_loss_and_gradients():
    """`ours_split_loss` and `ours_concat_loss` force the two forms of `Actor`'s first Dense; both are
    `ours_loss` (float32 sums in another order), and each really is the form it names (the HLO)."""
    config = actor_step.da.ActorConfig.create(-1.0, 1.0, action_dim=2, layers=2, units=16)
    hidden = jax.random.normal(jax.random.key(0), (5, 7, 12))
    stoch = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (5, 7, 4), 0, 3), 3)
    advantage = jax.random.normal(jax.random.key(2), (5, 7))
    key = jax.random.key(3)
    params = actor_step.da.Actor.from_config(config).init(jax.random.key(4), hidden, stoch)
    args = (params, config, hidden, stoch, advantage, key)
    grads = jax.jit(jax.grad(actor_step.ours_loss))(*args)
    for loss in (actor_step.ours_split_loss, actor_step.ours_concat_loss):
        np.testing.assert_allclose(loss(*args), actor_step.ours_loss(*args), rtol=1e-5)
        form_grads = jax.jit(jax.grad(loss))(*args)
        assert jax.tree.structure(grads) == jax.tree.structure(form_grads)
        for g, fg in zip(jax.tree.leaves(grads), jax.tree.leaves(form_grads), strict=True):
            np.testing.assert_allclose(fg, g, rtol=1e-4, atol=1e-6)
    # The [5, 7, 24] input of the first layer is built only when the form concatenates.
    for loss, concatenates in ((actor_step.ours_split_loss, False), (actor_step.ours_concat_loss, True)):
        text = jax.jit(jax.grad(loss)).lower(*args).as_text()
        assert ("tensor<5x7x24xf32>" in text) == concatenates
    with pytest.raises(ValueError, match="first_layer_form: `form`"):
        with actor_step.first_layer_form("split"):
            pass


@pytest.mark.slow
def test_dispatch_section_runs_each_mode_in_its_own_process(tmp_path):
    """`--only dispatch`: one child per mode, each reporting the dispatch setting its CPU client was made with."""
    data = _quick_benchmark(tmp_path, "--only", "dispatch")
    runs = data["sections"]["dispatch"]["runs"]
    assert [(r["mode"], r["async_dispatch"]) for r in runs] == [("async", True), ("sync", False)]
    for r in runs:
        for summary in (r["batch1"], r["batch16"], r["step_S"]):
            for stats in summary["times"].values():
                assert 0.0 < stats["min"] <= stats["median"] <= stats["max"]
    rows = {row["name"]: row for row in data["targets"]}
    for b in (1, 16):
        row = rows[f"act batch {b}, async dispatch off: ours / torch eager"]
        torch_installed = "ours / torch_eager" in runs[1][f"batch{b}"]["ratios"]
        assert (row["value"] is not None) == torch_installed
    assert "## CPU dispatch" in (tmp_path / "actor_step.md").read_text()


def test_dispatch_child_refuses_a_backend_made_before_the_mode_is_set():
    """The setting is read when the CPU client is made: a child whose backend already exists must say so."""
    code = (
        "import jax, sys; jax.devices(); from benchmarks import actor_step; "
        "sys.exit(actor_step.main(['--_child', 'dispatch', '--variant', 'sync', '--quick']))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "before the dispatch mode was set" in result.stderr


def test_official_update_refuses_a_folder_that_is_not_official_dreamerv3(tmp_path, capsys):
    from benchmarks import official_update

    with pytest.raises(SystemExit) as error:
        official_update.main(["--official-src", str(tmp_path), "--official-python", sys.executable])
    assert error.value.code == 2
    assert "not a checkout of danijar/dreamerv3" in capsys.readouterr().err


def test_official_update_ratios_are_per_round_medians():
    from benchmarks import official_update

    def variant(times, **extra):
        return {"times": times, "first_s": 1.0, "peak_rss_bytes": 2**20, "params": 10, "jax": "x", **extra}

    rounds = [
        {"official_size1m": variant([1.0, 1.0, 3.0], build_s=5.0), "ours_size1m": variant([0.5, 0.5, 9.0]),
         "ours_defaults": variant([0.2, 0.3, 0.4])},
        {"official_size1m": variant([2.0, 2.0, 2.0], build_s=5.0), "ours_size1m": variant([0.5, 0.5, 0.5]),
         "ours_defaults": variant([0.2, 0.2, 0.2])},
    ]  # fmt: skip
    result = official_update.summarize(rounds)
    ratio = result["ratios"]["ours_size1m / official_size1m"]
    assert (ratio["min"], ratio["max"], ratio["median"]) == (0.25, 0.5, 0.375)  # 0.5 / 1.0 and 0.5 / 2.0
    official = result["variants"]["official_size1m"]
    assert official["first_call_s"] == [6.0, 6.0]  # its compile happens while building the Agent
    assert official["env_steps_per_s_update_bound"] == pytest.approx(8.0 / 2.0)  # median 2.0 s per update
    assert "| ours_defaults |" in official_update.markdown(result, {
        "date": "d", "command": "c", "cpu": "cpu", "cores": 2, "commit": "abc", "rounds": 2, "updates": 3,
    })  # fmt: skip


def test_update_bound_counts_each_product_once_per_loop_trip():
    """`update_bound.dot_flops` on a compiled function of known products: a 7-step scan of [32, 64] x [64, 64]
    and a batched [3, 24, 40] x [3, 40, 48]; under `jax.grad` (w.r.t. the scan's operands only) each scan
    product runs three times (forward, input and weight gradients) and the batched one not at all."""
    from benchmarks.update_bound import dot_flops

    def f(x, w, a, b):
        h, _ = jax.lax.scan(lambda h, _: (jnp.tanh(h @ w), None), x, None, length=7)
        return h.sum() + jnp.matmul(a, b).sum()

    args = (jnp.ones((32, 64)), jnp.full((64, 64), 0.01), jnp.ones((3, 24, 40)), jnp.ones((3, 40, 48)))
    forward = dot_flops(jax.jit(f).lower(*args).compile().as_text())
    assert forward["flops"] == 2 * 32 * 64 * 64 * 7 + 2 * 3 * 24 * 40 * 48
    assert forward["shapes"] == {(32, 64, 64, 1): 7, (24, 40, 48, 3): 1} and not forward["unknown_trip_loops"]
    backward = dot_flops(jax.jit(jax.grad(f, argnums=(0, 1))).lower(*args).compile().as_text())
    assert backward["flops"] == 3 * 2 * 32 * 64 * 64 * 7


def test_per_example_step_finds_the_old_paths_weight_gradient_per_example():
    """`benchmarks.per_example_step` on tiny batches: the old vmapped path's largest buffer is a weight gradient
    per example (`[T, B, K, F]`), the library's step and the batched one hold nothing that large, and the
    outputs of old and new agree."""
    from benchmarks import per_example_step

    horizon, inputs, units = 15, 512 + 32 * 32, 256
    row = per_example_step.measure(2, repeats=1, with_old=True)
    per_example = horizon * 2 * inputs * units
    assert row["compiled"]["vmapped act (before)"]["largest_f32_array_elements"] >= per_example
    for name in ("make_actor_train_step", "batched act + adam"):
        assert row["compiled"][name]["largest_f32_array_elements"] < per_example // 4, name
    assert max(row["max_abs_diff_new_vs_old"].values()) < 1e-5
    assert set(row["median_s"]) == {"make_actor_train_step", "batched act + adam", "vmapped act (before)"}


def test_update_scaling_counts_the_updates_the_loop_made():
    from benchmarks import update_scaling

    # The loop's own count, in committed runs of 100k frames (action repeat 2, batch 16 x 32, warm-up 1,000).
    for name, ratio in (("bnoff-g099-tr256-s0", 256), ("bnoff-g099-tr128-s0", 128), ("bnoff-g099-s0", 64)):
        curve = json.loads((ROOT / "docs/results/dmc/runs/pendulum_swingup" / name / "curve.json").read_text())
        assert curve["config"]["train_ratio"] == ratio and curve["config"]["warmup"] == update_scaling.WARMUP
        assert update_scaling.updates_per_run(16, ratio) == curve["evals"][-1]["updates"]
    assert update_scaling.update_minutes(0.6, 32, 256) == pytest.approx(12_250 * 0.6 / 60)


def test_update_scaling_compares_time_per_replayed_row():
    from benchmarks import update_scaling

    def variant(times):
        return {"times": times, "first_s": 9.0}

    rounds = [
        {"1core_b16": variant([1.0, 1.0, 5.0]), "2dev_b32": variant([1.0, 1.0, 1.0])},
        {"1core_b16": variant([2.0, 2.0, 2.0]), "2dev_b32": variant([3.0, 3.0, 3.0])},
    ]
    result = update_scaling.summarize(rounds, ["1core_b16", "2dev_b32"])
    ratio = result["2dev_b32"]["row_cost_vs_first"]  # (1.0 / 32) / (1.0 / 16) and (3.0 / 32) / (2.0 / 16)
    assert (ratio["min"], ratio["max"]) == (0.5, 0.75)
    assert "| 2dev_b32 (0,1; 2; 32) |" in update_scaling.markdown(
        result, {"date": "d", "command": "c", "cpu": "cpu", "commit": "abc", "rounds": 2, "updates": 3}
    )
    with pytest.raises(SystemExit):
        update_scaling.parse_args(["--variants", "1core_b16,3cores"])
