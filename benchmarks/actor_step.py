"""Benchmark of the actor's training step and acting path, side by side with baselines.

Run `python -m benchmarks.actor_step` (or `make bench`); `--quick` for a smoke run on
tiny shapes. Writes `actor_step.json` and `actor_step.md` into `--out`
(default `results/bench/`). See `benchmarks/README.md` for how to read them.

Sections (`--only a,b,...`):
  head      the head maths alone (sample, log-prob, entropy, loss, backward) on the
            trunk's raw `[N, 2A]` output: ours vs distrax vs PyTorch.
  step      the jitted training step at workloads S and L: ours vs the bare trunk,
            distrax, the matmul-only bound (roofline) and PyTorch.
  act       acting at batch 1 and 16, host arrays in and out: ours vs the bare
            trunk's jitted forward and PyTorch.
  compile   trace+lower and XLA compile time of each jitted function, XLA's FLOP
            count and buffer sizes.
  memory    peak resident memory of each training-step variant, one fresh process each.
  scaling   training-step time against the number of states (1k..64k at 3 x 256).
  platform  one `16384 x 1536 x 512` matrix product: XLA vs PyTorch vs numpy.
  flags     the S step and that matrix product under several XLA CPU flag sets, one
            fresh process per flag set (XLA reads its flags once per process).
  dispatch  acting at batch 1 and 16 (ours, trunk forward, PyTorch eager) and the S step
            with JAX's CPU client made with async dispatch on (the default) and off
            (`jax_cpu_enable_async_dispatch`), fresh processes alternating async, sync, ...

Every timed comparison interleaves its variants round by round (A B C A B C ...) and
reports per-round ratios, so the machine's drift affects both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import dreamer_actor as da

from benchmarks import _timing as T
from dreamer_actor._src import dense as dense_module

SECTIONS = ("head", "step", "act", "compile", "memory", "scaling", "platform", "flags", "dispatch")
ENTROPY_COEF = 3e-4

# XLA CPU flag sets tried by the `flags` section ("" is the default).
FLAG_SETS = {
    "default": "",
    "onednn_dot": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot",
    "onednn_dot_eltwise": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot,eltwise",
    "xnn_dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "ynn_dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "no_ynn": "--xla_cpu_experimental_ynn_fusion_type=",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "eigen_single_thread": "--xla_cpu_multi_thread_eigen=false",
}
QUICK_FLAG_SETS = ("onednn_dot",)  # one child: checks the mechanism, not the speed
# `jax_cpu_enable_async_dispatch` per mode; JAX reads it once, when it makes the CPU client.
DISPATCH_MODES = {"async": True, "sync": False}


# ----------------------------------------------------------------------------- workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    """Shapes of one benchmark workload: `starts x horizon` latent states through a trunk.

    Attributes:
      name: label in the results.
      starts, horizon: the states are a `[horizon, starts]` batch (DreamerV3 imagines
        `horizon` steps from each of `starts` replayed states).
      hidden: width `H` of the deterministic latent.
      stoch: `(S, C)`: `S` categorical latents of `C` classes (one-hot).
      layers, units: trunk depth and width.
      action_dim: `A`.
    """

    name: str
    starts: int
    horizon: int
    hidden: int = 512
    stoch: tuple[int, int] = (32, 32)
    layers: int = 3
    units: int = 256
    action_dim: int = 6

    @property
    def states(self) -> int:
        return self.starts * self.horizon

    @property
    def in_dim(self) -> int:
        return self.hidden + self.stoch[0] * self.stoch[1]


def workloads(quick: bool) -> dict[str, Workload]:
    if quick:
        return {
            "S": Workload("S", 16, 4, hidden=16, stoch=(4, 4), layers=2, units=32),
            "L": Workload("L", 8, 4, hidden=16, stoch=(4, 4), layers=2, units=64),
        }
    return {
        "S": Workload("S", 1024, 15),  # DreamerV3's imagination batch: 15,360 states, 1536 inputs
        "L": Workload("L", 1024, 4, units=1024),  # 4,096 states, trunk 3 x 1024
    }


def scaling_workloads(quick: bool) -> list[Workload]:
    sizes = (64, 128, 256) if quick else (1024, 4096, 16384, 65536)
    base = workloads(quick)["S"]
    return [dataclasses.replace(base, name=f"N={n}", starts=n, horizon=1) for n in sizes]


@dataclasses.dataclass
class Setup:
    """Inputs, config and parameters of one workload (device arrays and host copies)."""

    workload: Workload
    config: da.ActorConfig
    params: Any
    hidden: jax.Array
    stoch: jax.Array
    advantage: jax.Array
    key: jax.Array


def make_setup(w: Workload, seed: int = 0) -> Setup:
    config = da.ActorConfig.create(-1.0, 1.0, action_dim=w.action_dim, layers=w.layers, units=w.units)
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((w.horizon, w.starts, w.hidden), dtype=np.float32)
    classes = rng.integers(0, w.stoch[1], size=(w.horizon, w.starts, w.stoch[0]))
    stoch = np.eye(w.stoch[1], dtype=np.float32)[classes]
    advantage = rng.standard_normal((w.horizon, w.starts), dtype=np.float32)
    params = da.Actor.from_config(config).init(jax.random.key(seed), hidden[:1, :1], stoch[:1, :1])
    return Setup(w, config, params, jnp.asarray(hidden), jnp.asarray(stoch), jnp.asarray(advantage), jax.random.key(1))


# ----------------------------------------------------------------------------- JAX functions


class Trunk(nn.Module):
    """The bare trunk: `Actor`'s layers without the distribution head (same parameter names).

    Deliberately the naive flax composition (`nn.Dense`, `nn.LayerNorm`, `jax.nn.silu`), not the
    Actor's `_src/dense.py` and fused norm + activation: ours / bare then measures both too.
    """

    layers: int
    units: int
    out_dim: int

    @nn.compact
    def __call__(self, hidden: jax.Array, stoch: jax.Array) -> jax.Array:
        x = da.networks.flatten_latent(hidden, stoch)
        for i in range(self.layers):
            x = nn.Dense(self.units, use_bias=False, name=f"dense_{i}")(x)
            x = nn.LayerNorm(epsilon=1e-3, name=f"norm_{i}")(x)
            x = jax.nn.silu(x)
        return nn.Dense(self.out_dim, name="out")(x)


def trunk_of(config: da.ActorConfig) -> Trunk:
    return Trunk(config.layers, config.units, 2 * config.action_dim)


def trunk_loss(params: Any, config: da.ActorConfig, hidden: jax.Array, stoch: jax.Array) -> jax.Array:
    """Baseline 1: the bare trunk's forward with `loss = sum(outputs)`."""
    return jnp.sum(trunk_of(config).apply(params, hidden, stoch))


def ours_loss(params, config, hidden, stoch, advantage, key) -> jax.Array:
    """Our training loss: `act(..., training=True)` then `actor_loss`."""
    out = da.act(params, config, hidden, stoch, key, training=True)
    loss, _ = da.actor_loss(out.log_prob, out.entropy, advantage, entropy_coef=ENTROPY_COEF)
    return loss


@contextlib.contextmanager
def first_layer_form(form: str):
    """While tracing inside it, `Actor`'s first Dense concatenates its two inputs (`"concatenate"`)
    or sums two products on the kernel's row blocks (`"sum"`), whatever `_src/dense.py`'s rule says."""
    if form not in ("concatenate", "sum"):
        raise ValueError(f"first_layer_form: `form` must be 'concatenate' or 'sum', got {form!r}.")
    rule = dense_module._sum_of_products
    dense_module._sum_of_products = lambda rows, features: form == "sum"
    try:
        yield
    finally:
        dense_module._sum_of_products = rule


def ours_split_loss(params, config, hidden, stoch, advantage, key) -> jax.Array:
    """`ours_loss` with the first layer forced to a sum of two products (the input never concatenated)."""
    with first_layer_form("sum"):
        return ours_loss(params, config, hidden, stoch, advantage, key)


def ours_concat_loss(params, config, hidden, stoch, advantage, key) -> jax.Array:
    """`ours_loss` with the first layer forced to concatenate its inputs."""
    with first_layer_form("concatenate"):
        return ours_loss(params, config, hidden, stoch, advantage, key)


def distrax_head_loss(mean, log_std, config, advantage, key) -> jax.Array:
    """The same estimator written with distrax: `Transformed(MultivariateNormalDiag, Tanh)`.

    A reparameterized base sample `u`, the action `sg(forward(u))` scored by the
    distribution's own `log_prob` (which inverts the tanh), and the entropy estimate
    `H[base] + log|det J|(u)` (distrax has no entropy for a tanh transform). Its noise is
    `jax.random.normal(key)` (ours: `standard_normal(key)`); at the same noise the loss and
    gradient equal ours on unsaturated samples (`tests/test_benchmarks.py`).
    """
    dist = da.tanh_normal.as_distrax(mean, log_std, config)
    u = dist.distribution.sample(seed=key)
    action = jax.lax.stop_gradient(dist.bijector.forward(u))
    log_prob = dist.log_prob(action)
    entropy = dist.distribution.entropy() + dist.bijector.forward_log_det_jacobian(u)
    loss, _ = da.actor_loss(log_prob, entropy, advantage, entropy_coef=ENTROPY_COEF)
    return loss


def distrax_loss(params, config, hidden, stoch, advantage, key) -> jax.Array:
    """Baseline 2: the training loss with the distrax head."""
    mean, log_std = _head_params(da.Actor.from_config(config).apply(params, hidden, stoch), config)
    return distrax_head_loss(mean, log_std, config, advantage, key)


def _head_params(raw: jax.Array, config: da.ActorConfig) -> tuple[jax.Array, jax.Array]:
    """The tanh_normal head: raw `[..., 2A]` output -> `(mean, log_std)`."""
    return tuple(da.policy_head(raw, config))


def ours_head_loss(raw, config, advantage, key) -> jax.Array:
    """Head maths alone: sample, log-prob, entropy, loss on raw trunk outputs `[..., 2A]`."""
    outputs = _head_params(raw, config)
    _, u = da.policy_sample(key, outputs, config)
    log_prob = da.policy_log_prob(outputs, config, raw_sample=u)
    entropy = da.policy_entropy(outputs, config, raw_sample=u)
    loss, _ = da.actor_loss(log_prob, entropy, advantage, entropy_coef=ENTROPY_COEF)
    return loss


def distrax_head_only_loss(raw, config, advantage, key) -> jax.Array:
    mean, log_std = _head_params(raw, config)
    return distrax_head_loss(mean, log_std, config, advantage, key)


OPTIMIZER = optax.adam(1e-4)


def with_adam(loss_fn: Callable[..., jax.Array]) -> Callable[..., Any]:
    """`(params, opt_state, *args) -> (params, opt_state)`: gradient of `loss_fn` + an Adam update."""

    def step(params, opt_state, *args):
        grads = jax.grad(loss_fn)(params, *args)
        updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return step


def _dot_operands(w: Workload, rows: int, backward: bool) -> tuple[list[np.ndarray], list[bool], float]:
    """Random host operands `[x_i, W_i, g_i, ...]` for the trunk's products at `rows` states.

    Returns `(arrays, needs_dx, flops)`; `needs_dx[i]` says layer `i` has an input gradient
    (every layer's but the first: the latent is no parameter). Without `backward` the `g_i` are
    still made (same list layout) but only the forward products count.
    """
    dims = [w.in_dim] + [w.units] * w.layers + [2 * w.action_dim]
    rng = np.random.default_rng(0)
    arrays, needs_dx, flops = [], [], 0.0
    for i, (k, m) in enumerate(itertools.pairwise(dims)):
        arrays += [rng.standard_normal(shape, dtype=np.float32) for shape in ((rows, k), (k, m), (rows, m))]
        needs_dx.append(i > 0)
        flops += 2.0 * rows * k * m * ((3 if i > 0 else 2) if backward else 1)
    return arrays, needs_dx, flops


def trunk_dots(w: Workload) -> tuple[Callable[..., Any], list[jax.Array], float]:
    """Baseline 3: exactly the matrix products of the trunk's forward and backward, nothing else.

    Forward `X_i @ W_i` for every Dense; backward `X_i^T @ G_i` (weight gradients) and
    `G_i @ W_i^T` (input gradients, except the first layer's: the latent is no
    parameter). Returns `(fn, operands, flops)`.
    """
    host, needs_dx, flops = _dot_operands(w, w.states, backward=True)

    def fn(*arrays):
        out = []
        for i, dx in enumerate(needs_dx):
            x, wt, g = arrays[3 * i : 3 * i + 3]
            out.append(x @ wt)
            out.append(jax.lax.dot_general(x, g, (((0,), (0,)), ((), ()))))
            if dx:
                out.append(jax.lax.dot_general(g, wt, (((1,), (1,)), ((), ()))))
        return out

    return fn, [jnp.asarray(a) for a in host], flops


def torch_trunk_dots(w: Workload) -> tuple[Callable[[], Any], float]:
    """`trunk_dots`'s products on the same operands in PyTorch: `(fn, flops)`, `fn` timed to completion.

    Side by side with `matmuls_only` this is XLA's matrix-product library against PyTorch's
    (MKL or OpenBLAS on the CPU) on exactly the step's shapes, outside any step.
    """
    import torch

    from benchmarks import torch_actor

    device = torch_actor.default_device()
    host, needs_dx, flops = _dot_operands(w, w.states, backward=True)
    arrays = [torch.from_numpy(a).to(device) for a in host]

    def fn():
        out = []
        for i, dx in enumerate(needs_dx):
            x, wt, g = arrays[3 * i : 3 * i + 3]
            out += [x @ wt, x.T @ g] + ([g @ wt.T] if dx else [])
        torch_actor.synchronize(device)
        return out

    return fn, flops


def forward_dots(w: Workload) -> tuple[Callable[[], Any], Callable[[], Any] | None]:
    """The trunk's forward products alone at `w.states` rows (acting sizes), `(jax_fn, torch_fn or None)`.

    Each layer's `x_i @ W_i` on its own random operands, one jitted call for JAX (operands on
    the device), one eager call per product for PyTorch: what `act`'s products cost without the
    norms, activations, head, noise and host copies around them.
    """
    host, needs_dx, _ = _dot_operands(w, w.states, backward=False)
    operands = [jnp.asarray(a) for i, a in enumerate(host) if i % 3 < 2]
    dots = jax.jit(lambda *a: [a[2 * i] @ a[2 * i + 1] for i in range(len(needs_dx))])
    jax_fn = functools.partial(dots, *operands)
    try:
        import torch

        from benchmarks import torch_actor
    except ImportError:
        return jax_fn, None
    device = torch_actor.default_device()
    tensors = [torch.from_numpy(a).to(device) for i, a in enumerate(host) if i % 3 < 2]

    def torch_fn():
        with torch.no_grad():
            out = [tensors[2 * i] @ tensors[2 * i + 1] for i in range(len(needs_dx))]
        torch_actor.synchronize(device)
        return out

    return jax_fn, torch_fn


def step_flops(w: Workload) -> float:
    """Matrix-product FLOPs of one training step (forward + backward), as `trunk_dots` counts them."""
    dims = [w.in_dim] + [w.units] * w.layers + [2 * w.action_dim]
    return sum(2.0 * w.states * k * m * (3 if i > 0 else 2) for i, (k, m) in enumerate(itertools.pairwise(dims)))


# ----------------------------------------------------------------------------- torch (optional)


def torch_status() -> dict[str, Any]:
    """Whether PyTorch can be imported, its version and thread count."""
    try:
        import torch
    except ImportError:
        return {"installed": False, "status": "not installed"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"installed": True, "status": "installed", "version": torch.__version__, "threads": torch.get_num_threads(),
            "device": device}  # fmt: skip


def torch_compile_works(fn: Callable[..., Any], *args: Any) -> tuple[Callable[..., Any] | None, str, float]:
    """`(compiled_fn or None, status, first-call seconds)` for `torch.compile(fn)`."""
    import torch

    try:
        compiled = torch.compile(fn)
        start = time.perf_counter()
        compiled(*args)
        return compiled, "ok", time.perf_counter() - start
    except Exception as error:  # torch.compile needs a C++ toolchain; report why it failed
        return None, f"failed: {type(error).__name__}: {str(error)[:200]}", float("nan")


class TorchBench:
    """The PyTorch reference on a `Setup`'s weights and inputs."""

    def __init__(self, setup: Setup) -> None:
        import torch

        from benchmarks import torch_actor

        self.torch, self.ta = torch, torch_actor
        self.device = device = torch_actor.default_device()
        self.model = torch_actor.TorchActor.from_flax(setup.params, setup.config, setup.workload.in_dim, device)
        self.hidden = torch.from_numpy(np.array(setup.hidden)).to(device)
        self.stoch = torch.from_numpy(np.array(setup.stoch)).to(device)
        self.advantage = torch.from_numpy(np.array(setup.advantage)).to(device)
        self.scale = torch.from_numpy(np.array(setup.config.scale)).to(device)
        self.bias = torch.from_numpy(np.array(setup.config.bias)).to(device)

    def head_fn(self) -> Callable[[Any], Any]:
        """Head maths + backward on a raw `[N, 2A]` output (a leaf tensor)."""
        torch, ta = self.torch, self.ta
        model, scale, adv = self.model, self.scale, self.advantage.reshape(-1)

        def fn(raw):
            raw = raw.detach().requires_grad_(True)
            mean, log_std = model.head(raw)
            eps = torch.randn_like(mean)
            loss = ta.head_loss(mean, log_std, eps, adv, scale)
            (grad,) = torch.autograd.grad(loss, raw)
            ta.synchronize(self.device)  # timed to completion, as JAX's block_until_ready
            return grad

        return fn

    def step_fn(self) -> Callable[[], Any]:
        """Training step: forward, loss, backward into the parameters' `.grad`."""
        torch, ta = self.torch, self.ta
        model, scale = self.model, self.scale

        def fn(hidden, stoch, adv):
            model.zero_grad(set_to_none=True)
            mean, log_std = model(hidden, stoch)
            eps = torch.randn_like(mean)
            loss = ta.head_loss(mean, log_std, eps, adv, scale)
            loss.backward()
            ta.synchronize(self.device)
            return loss

        return fn

    def act_fn(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        ta, model, scale, bias = self.ta, self.model, self.scale, self.bias
        return lambda h, z: ta.act(model, h, z, scale, bias)


# ----------------------------------------------------------------------------- sections


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "n/a"
    if s >= 1.0:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def section_head(args, setups) -> dict[str, Any]:
    s = setups["S"]
    n = s.workload.states
    raw = jax.random.normal(jax.random.key(2), (n, 2 * s.config.action_dim), jnp.float32)
    adv = s.advantage.reshape(n)
    ours = jax.jit(jax.grad(ours_head_loss))
    dx = jax.jit(jax.grad(distrax_head_only_loss))
    variants = {
        "ours": lambda: ours(raw, s.config, adv, s.key),
        "distrax": lambda: dx(raw, s.config, adv, s.key),
    }
    extra: dict[str, Any] = {}
    if args.torch["installed"]:
        tb = TorchBench(s)
        raw_t = tb.torch.from_numpy(np.array(raw)).to(tb.device)
        head = tb.head_fn()
        variants["torch_eager"] = lambda: head(raw_t)
        if args.torch_compile:
            compiled, status, first = torch_compile_works(head, raw_t)
            extra["torch_compile"] = {"status": status, "first_call_s": first}
            if compiled is not None:
                variants["torch_compile"] = lambda: compiled(raw_t)
    times = T.interleaved(variants, repeats=args.repeats, warmup=args.warmup, min_round_s=args.min_round_s)
    ratios = {"ours / distrax": ("ours", "distrax")}
    for name in ("torch_eager", "torch_compile"):
        if name in times:
            ratios[f"ours / {name}"] = ("ours", name)
    return {"shape": [n, 2 * s.config.action_dim], **T.summarize(times, ratios), **extra}


def _step_variants(
    s: Setup, with_torch: bool, torch_compile: bool, with_adam_variants: bool = True
) -> tuple[dict[str, Callable[[], Any]], dict]:
    """Name -> zero-arg callable for every training-step variant of a workload."""
    c, h, z, adv, key, p = s.config, s.hidden, s.stoch, s.advantage, s.key, s.params
    trunk = jax.jit(jax.grad(trunk_loss))
    ours = jax.jit(jax.grad(ours_loss))
    ours_split = jax.jit(jax.grad(ours_split_loss))
    ours_concat = jax.jit(jax.grad(ours_concat_loss))
    dx = jax.jit(jax.grad(distrax_loss))
    opt_state = OPTIMIZER.init(p)
    trunk_adam = jax.jit(with_adam(trunk_loss))
    ours_adam = jax.jit(with_adam(ours_loss))
    dots, operands, _ = trunk_dots(s.workload)
    dots = jax.jit(dots)
    variants = {
        "trunk": lambda: trunk(p, c, h, z),
        "ours": lambda: ours(p, c, h, z, adv, key),
        "ours_split_input": lambda: ours_split(p, c, h, z, adv, key),
        "ours_concat_input": lambda: ours_concat(p, c, h, z, adv, key),
        "distrax": lambda: dx(p, c, h, z, adv, key),
        "matmuls_only": lambda: dots(*operands),
    }
    # What docs/multidevice.md tells users to call: per-example keys, vmapped over single examples.
    library_step = jax.jit(da.make_actor_train_step(c, OPTIMIZER, entropy_coef=ENTROPY_COEF))
    variants["make_actor_train_step"] = lambda: library_step(p, opt_state, h, z, adv, key)
    if with_adam_variants:
        variants["trunk+adam"] = lambda: trunk_adam(p, opt_state, c, h, z)
        variants["ours+adam"] = lambda: ours_adam(p, opt_state, c, h, z, adv, key)
    extra: dict[str, Any] = {}
    if with_torch:
        tb = TorchBench(s)
        step = tb.step_fn()
        targs = (tb.hidden, tb.stoch, tb.advantage)
        variants["torch_eager"] = lambda: step(*targs)
        variants["torch_matmuls_only"] = torch_trunk_dots(s.workload)[0]
        if torch_compile:
            compiled, status, first = torch_compile_works(step, *targs)
            extra["torch_compile"] = {"status": status, "first_call_s": first}
            if compiled is not None:
                variants["torch_compile"] = lambda: compiled(*targs)
    return variants, extra


def section_step(args, setups) -> dict[str, Any]:
    out = {}
    for name, s in setups.items():
        if args.quick and name != "S":
            continue  # the same code at other shapes: left out of the smoke run
        variants, extra = _step_variants(
            s, args.torch["installed"], args.torch_compile, with_adam_variants=not args.quick
        )
        times = T.interleaved(variants, repeats=args.repeats, warmup=args.warmup)
        ratios = {
            "ours / trunk": ("ours", "trunk"),
            "ours / distrax": ("ours", "distrax"),
            "ours_split_input / ours_concat_input": ("ours_split_input", "ours_concat_input"),
            **({"ours+adam / trunk+adam": ("ours+adam", "trunk+adam")} if "ours+adam" in times else {}),
            **(
                {"make_actor_train_step / ours+adam": ("make_actor_train_step", "ours+adam")}
                if "ours+adam" in times
                else {}
            ),
            "roofline: ours / matmuls_only": ("ours", "matmuls_only"),
            "roofline: trunk / matmuls_only": ("trunk", "matmuls_only"),
        }
        for t in ("torch_eager", "torch_compile"):
            if t in times:
                ratios[f"ours / {t}"] = ("ours", t)
        if "torch_matmuls_only" in times:
            # XLA's products vs PyTorch's on the same shapes; with nothing else in the step, ours
            # could be at best `matmuls_only / torch_compile` of torch.compile's time.
            ratios["matmuls_only / torch_matmuls_only"] = ("matmuls_only", "torch_matmuls_only")
            for t in ("torch_compile", "torch_eager"):
                if t in times:
                    ratios[f"matmuls_only / {t}"] = ("matmuls_only", t)
                    ratios[f"torch roofline: {t} / torch_matmuls_only"] = (t, "torch_matmuls_only")
        result = T.summarize(times, ratios)
        flops = step_flops(s.workload)
        dots_s = result["times"]["matmuls_only"]["median"]
        result.update(
            {
                "workload": dataclasses.asdict(s.workload),
                "states": s.workload.states,
                "matmul_flops": flops,
                "matmul_rate_gflops": flops / dots_s / 1e9,
                **extra,
            }
        )
        out[name] = result
    return out


def _act_row(args, s: Setup, act: Callable[..., Any]) -> dict[str, Any]:
    h, z = np.array(s.hidden[0]), np.array(s.stoch[0])  # host arrays [batch, ...]
    c, p, key = s.config, s.params, s.key
    fwd = jax.jit(trunk_of(c).apply)
    dots, torch_dots = forward_dots(s.workload)
    variants = {
        "ours": lambda: np.asarray(act(p, c, h, z, key)),
        "trunk_forward": lambda: np.asarray(fwd(p, h, z)),
        "forward_products": lambda: T.block(dots()),
    }
    extra: dict[str, Any] = {}
    if args.torch["installed"]:
        tact = TorchBench(s).act_fn()
        variants["torch_eager"] = lambda: tact(h, z)
        variants["torch_forward_products"] = torch_dots
        if args.torch_compile:
            compiled, status, first = torch_compile_works(tact, h, z)
            extra["torch_compile"] = {"status": status, "first_call_s": first}
            if compiled is not None:
                variants["torch_compile"] = lambda: compiled(h, z)
    times = T.interleaved(variants, repeats=args.repeats, warmup=args.warmup, min_round_s=args.min_round_s)
    ratios = {
        "ours / trunk_forward": ("ours", "trunk_forward"),
        "roofline: ours / forward_products": ("ours", "forward_products"),
    }
    for t in ("torch_eager", "torch_compile"):
        if t in times:
            ratios[f"ours / {t}"] = ("ours", t)
    if "torch_forward_products" in times:
        ratios["forward_products / torch_forward_products"] = ("forward_products", "torch_forward_products")
        ratios["forward_products / torch_eager"] = ("forward_products", "torch_eager")
    return {**T.summarize(times, ratios), **extra}


def section_act(args, setups) -> dict[str, Any]:
    act = jax.jit(functools.partial(da.act, training=False))
    w0 = setups["S"].workload
    return {
        f"batch{b}": _act_row(args, make_setup(dataclasses.replace(w0, name=f"act{b}", starts=b, horizon=1)), act)
        for b in (1, 16)
    }


def section_compile(args, setups) -> dict[str, Any]:
    s = setups["S"]
    c, h, z, adv, key, p = s.config, s.hidden, s.stoch, s.advantage, s.key, s.params
    opt_state = OPTIMIZER.init(p)
    reps = 1 if args.quick else 3
    jobs = {
        "trunk": (jax.grad(trunk_loss), (p, c, h, z)),
        "ours": (jax.grad(ours_loss), (p, c, h, z, adv, key)),
        "distrax": (jax.grad(distrax_loss), (p, c, h, z, adv, key)),
        "trunk+adam": (with_adam(trunk_loss), (p, opt_state, c, h, z)),
        "ours+adam": (with_adam(ours_loss), (p, opt_state, c, h, z, adv, key)),
        "act (batch 16)": (
            functools.partial(da.act, training=False),
            (p, c, np.asarray(h)[0, :16], np.asarray(z)[0, :16], key),
        ),
    }
    if args.quick:
        jobs = {k: jobs[k] for k in ("trunk", "ours")}
    out: dict[str, Any] = {}
    for name, (fn, fargs) in jobs.items():
        out[name] = T.compile_seconds(fn, *fargs, repeats=reps)
        # First call of a fresh jit (trace + compile + run) minus the steady-state call.
        jitted = jax.jit(lambda *a, fn=fn: fn(*a))
        first = T.time_once(lambda jitted=jitted, fargs=fargs: jitted(*fargs))
        steady = min(T.time_once(lambda jitted=jitted, fargs=fargs: jitted(*fargs)) for _ in range(2))
        out[name].update({"first_call_s": first, "steady_s": steady, "first_minus_steady_s": first - steady})
    return out


MEMORY_VARIANTS = ("trunk", "ours", "distrax", "ours+adam", "torch_eager")


def child_memory(args) -> dict[str, Any]:
    """In a fresh process: build S, run one variant 3 times, report peak RSS (VmHWM) before and after."""
    s = make_setup(workloads(args.quick)["S"])
    want_torch = args.variant.startswith("torch")
    variants, _ = _step_variants(s, with_torch=want_torch, torch_compile=False)
    T.block((s.hidden, s.stoch, s.params))
    setup_rss = T.peak_rss_bytes()
    fn = variants[args.variant]
    for _ in range(3):
        T.block(fn())
    peak = T.peak_rss_bytes()
    return {
        "variant": args.variant,
        "setup_rss": setup_rss,
        "peak_rss": peak,
        "delta": peak - setup_rss,
        "getrusage_maxrss": T.getrusage_peak_bytes(),
    }


def section_memory(args, setups) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in MEMORY_VARIANTS[:2] if args.quick else MEMORY_VARIANTS:
        if v.startswith("torch") and not args.torch["installed"]:
            continue
        child = ["--_child", "memory", "--variant", v] + (["--quick"] if args.quick else [])
        out[v] = T.run_child(child)
    ok = {k: r for k, r in out.items() if "error" not in r}
    if "trunk" in ok:
        for r in ok.values():
            r["peak_ratio_vs_trunk"] = r["peak_rss"] / ok["trunk"]["peak_rss"]
            r["delta_ratio_vs_trunk"] = r["delta"] / max(ok["trunk"]["delta"], 1)
    return out


def _scaling_row(args, s: Setup) -> dict[str, Any]:
    c, h, z, adv, key, p = s.config, s.hidden, s.stoch, s.advantage, s.key, s.params
    trunk = jax.jit(jax.grad(trunk_loss))
    ours = jax.jit(jax.grad(ours_loss))
    times = T.interleaved(
        {"ours": lambda: ours(p, c, h, z, adv, key), "trunk": lambda: trunk(p, c, h, z)},
        repeats=args.repeats,
        warmup=args.warmup,
    )
    return {"states": s.workload.states, **T.summarize(times, {"ours / trunk": ("ours", "trunk")})}


def section_scaling(args, setups) -> dict[str, Any]:
    rows = [_scaling_row(args, make_setup(w)) for w in scaling_workloads(args.quick)]
    ns = np.array([r["states"] for r in rows], dtype=np.float64)
    fit = {}
    for v in ("ours", "trunk"):
        ts = np.array([r["times"][v]["median"] for r in rows])
        slope, intercept = np.polyfit(ns, ts, 1)
        pred = slope * ns + intercept
        ss_res, ss_tot = float(np.sum((ts - pred) ** 2)), float(np.sum((ts - ts.mean()) ** 2))
        fit[v] = {
            "seconds_per_1k_states": float(slope * 1e3),
            "intercept_s": float(intercept),
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            # time per state at the largest size over time per state at the smallest
            "per_state_cost_ratio_largest_vs_smallest": float((ts[-1] / ns[-1]) / (ts[0] / ns[0])),
        }
    return {"rows": rows, "linear_fit": fit}


def _big_matmul(quick: bool) -> tuple[int, int, int]:
    return (256, 128, 64) if quick else (16384, 1536, 512)


def section_platform(args, setups) -> dict[str, Any]:
    m, k, n = _big_matmul(args.quick)
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((m, k), dtype=np.float32)
    b_np = rng.standard_normal((k, n), dtype=np.float32)
    a, b = jnp.asarray(a_np), jnp.asarray(b_np)
    dot = jax.jit(jnp.matmul)
    variants = {"xla": lambda: dot(a, b), "numpy": lambda: a_np @ b_np}
    if args.torch["installed"]:
        import torch

        from benchmarks import torch_actor

        device = torch_actor.default_device()
        at, bt = torch.from_numpy(a_np).to(device), torch.from_numpy(b_np).to(device)

        def torch_matmul():
            out = at @ bt
            torch_actor.synchronize(device)
            return out

        variants["torch"] = torch_matmul
    times = T.interleaved(variants, repeats=args.repeats, warmup=args.warmup)
    ratios = {"xla / numpy": ("xla", "numpy")}
    if "torch" in times:
        ratios["xla / torch"] = ("xla", "torch")
    result = T.summarize(times, ratios)
    flops = 2.0 * m * k * n
    result["shape"] = [m, k, n]
    result["gflops"] = {v: flops / t["median"] / 1e9 for v, t in result["times"].items()}
    return result


def child_flags(args) -> dict[str, Any]:
    """In a fresh process (XLA_FLAGS set by the parent): the big matmul and the S steps."""
    s = make_setup(workloads(args.quick)["S"])
    m, k, n = _big_matmul(args.quick)
    a = jax.random.normal(jax.random.key(0), (m, k))
    b = jax.random.normal(jax.random.key(1), (k, n))
    dot = jax.jit(jnp.matmul)
    variants, _ = _step_variants(s, with_torch=False, torch_compile=False)
    names = ("trunk", "ours") if args.quick else ("trunk", "ours", "matmuls_only")
    chosen = {"matmul": lambda: dot(a, b), **{v: variants[v] for v in names}}
    first_call = T.time_once(chosen["ours"])  # trace + compile + one run
    times = T.interleaved(chosen, repeats=args.repeats, warmup=args.warmup)
    return {
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "first_call_ours_s": first_call,
        **T.summarize(times, {"ours / trunk": ("ours", "trunk")}),
    }


def section_flags(args, setups) -> dict[str, Any]:
    names = QUICK_FLAG_SETS if args.quick else tuple(FLAG_SETS)
    out: dict[str, Any] = {}
    for name in names:
        child = ["--_child", "flags", "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
        child += ["--quick"] if args.quick else []
        env = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + FLAG_SETS[name]).strip()}
        out[name] = T.run_child(child, env=env)
    base = out.get("default", {})
    if "times" in base:
        for r in out.values():
            if "times" in r:
                r["vs_default"] = {
                    v: r["times"][v]["median"] / base["times"][v]["median"] for v in r["times"] if v in base["times"]
                }
    return out


def child_dispatch(args) -> dict[str, Any]:
    """In a fresh process whose CPU client `main` made in `--variant`'s dispatch mode: acting and the S step."""
    from jax._src import xla_bridge

    args.torch, args.torch_compile = torch_status(), False
    s = make_setup(workloads(args.quick)["S"])
    client = xla_bridge.get_backend("cpu")
    out: dict[str, Any] = {
        "mode": args.variant,
        "async_dispatch": bool(jax.config.values["jax_cpu_enable_async_dispatch"]),
        "client": f"{client.platform} {client.platform_version}",
    }
    act = jax.jit(functools.partial(da.act, training=False))
    for b in (1, 16):
        w = dataclasses.replace(s.workload, name=f"act{b}", starts=b, horizon=1)
        out[f"batch{b}"] = _act_row(args, make_setup(w), act)
    variants, _ = _step_variants(s, with_torch=False, torch_compile=False)
    times = T.interleaved({v: variants[v] for v in ("trunk", "ours")}, repeats=args.repeats, warmup=args.warmup)
    out["step_S"] = T.summarize(times, {"ours / trunk": ("ours", "trunk")})
    return out


def section_dispatch(args, setups) -> dict[str, Any]:
    """Fresh processes alternating async, sync, async, sync (drift shows as the spread within a mode)."""
    pairs = 1 if args.quick else 2
    runs = []
    for _ in range(pairs):
        for mode in DISPATCH_MODES:
            child = ["--_child", "dispatch", "--variant", mode, "--repeats", str(args.repeats)]
            child += ["--warmup", str(args.warmup)] + (["--quick"] if args.quick else [])
            runs.append(T.run_child(child))
    return {"runs": runs}


def dispatch_ratio(results: dict[str, Any], mode: str, batch: int, ratio: str = "ours / torch_eager") -> float | None:
    """Median over `mode`'s child processes of each one's median act `ratio` at `batch`."""
    values = [
        r[f"batch{batch}"]["ratios"][ratio]["median"]
        for r in _ratio(results, "dispatch", "runs") or []
        if r.get("mode") == mode and ratio in r.get(f"batch{batch}", {}).get("ratios", {})
    ]
    return float(np.median(values)) if values else None


SECTION_FNS = {
    "head": section_head,
    "step": section_step,
    "act": section_act,
    "compile": section_compile,
    "memory": section_memory,
    "scaling": section_scaling,
    "platform": section_platform,
    "flags": section_flags,
    "dispatch": section_dispatch,
}


# ----------------------------------------------------------------------------- targets and report


def _ratio(results, *path) -> float | None:
    node: Any = results
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #11's targets (and round one's head targets), each `{name, value, limit, op, met}`.

    `met` is None when the ratio was not measured or the row has no limit (`op` "report").
    """
    rows: list[tuple[str, float | None, float | None, str]] = []

    def med(*path):
        node = _ratio(results, *path)
        return None if node is None else node["median"]

    rows.append(("head maths: ours / distrax", med("head", "ratios", "ours / distrax"), 0.5, "<="))
    rows.append(("head maths: ours / torch eager", med("head", "ratios", "ours / torch_eager"), 1.0, "<"))
    for name, limits in (("S", (1.0, 0.9, 0.9)), ("L", (None, None, None))):
        ratios = ("step", name, "ratios")
        rows.append((f"step {name}: ours / torch.compile", med(*ratios, "ours / torch_compile"), limits[0], "<="))
        rows.append((f"step {name}: ours / torch eager", med(*ratios, "ours / torch_eager"), limits[1], "<="))
        rows.append((f"step {name}: ours / bare flax trunk", med(*ratios, "ours / trunk"), limits[2], "<="))
        rows.append((f"step {name}: roofline (ours / matmuls only)", med(*ratios, "roofline: ours / matmuls_only"),
                     None, "<="))  # fmt: skip
        rows.append((f"step {name}: split first layer / concatenated input",
                     med(*ratios, "ours_split_input / ours_concat_input"), None, "<="))  # fmt: skip
        rows.append((f"step {name}: XLA's products / PyTorch's, same shapes",
                     med(*ratios, "matmuls_only / torch_matmuls_only"), None, "<="))  # fmt: skip
        rows.append((f"step {name}: XLA's products alone / torch.compile's whole step",
                     med(*ratios, "matmuls_only / torch_compile"), None, "<="))  # fmt: skip
    for b in (1, 16):
        rows.append((f"act batch {b}: ours / torch eager", med("act", f"batch{b}", "ratios", "ours / torch_eager"),
                     0.7, "<="))  # fmt: skip
        rows.append((f"act batch {b}: ours / trunk forward", med("act", f"batch{b}", "ratios", "ours / trunk_forward"),
                     None, "<="))  # fmt: skip
    for b in (1, 16):
        rows.append((f"act batch {b}, async dispatch off: ours / torch eager", dispatch_ratio(results, "sync", b),
                     0.7, "<="))  # fmt: skip
    for b in (1, 16):
        rows.append((f"act batch {b}, async dispatch off: XLA's forward products / PyTorch's",
                     dispatch_ratio(results, "sync", b, "forward_products / torch_forward_products"),
                     None, "<="))  # fmt: skip
        rows.append((f"act batch {b}, async dispatch off: XLA's forward products alone / torch eager's act",
                     dispatch_ratio(results, "sync", b, "forward_products / torch_eager"), None, "<="))  # fmt: skip
    rows.append(("compile S step (trace+lower+compile, s)", med("compile", "ours", "total"), 3.0, "<="))
    mem = _ratio(results, "memory", "ours", "peak_ratio_vs_trunk")
    rows.append(("peak RSS S step: ours / trunk", mem, 1.1, "<="))
    out = []
    for name, value, limit, op in rows:
        if limit is None:
            op = "report"
        met = None if value is None or limit is None else (value <= limit if op == "<=" else value < limit)
        out.append({"name": name, "value": value, "limit": limit, "op": op, "met": met})
    return out


def _times_table(summary: dict[str, Any]) -> list[str]:
    lines = ["| variant | median | min - max |", "|---|---|---|"]
    for name, st in summary["times"].items():
        lines.append(f"| {name} | {_fmt_time(st['median'])} | {_fmt_time(st['min'])} - {_fmt_time(st['max'])} |")
    if summary.get("ratios"):
        lines += ["", "| ratio (per round) | median | min - max |", "|---|---|---|"]
        for name, st in summary["ratios"].items():
            lines.append(f"| {name} | {st['median']:.3f} | {st['min']:.3f} - {st['max']:.3f} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Actor benchmark",
        "",
        f"{meta['date']} - jax {meta['jax']} on {meta.get('jax_device', 'cpu')}, "
        f"{meta['cpu']} ({meta['cores']} cores), "
        f"PyTorch: {meta['torch']['status']} {meta['torch'].get('version', '')} on {meta['torch'].get('device', '-')}"
        f", repeats {meta['repeats']}{', QUICK (tiny shapes)' if meta['quick'] else ''}",
        f"XLA_FLAGS: `{meta['xla_flags'] or '(none)'}`; load average before/after: "
        f"{meta['loadavg_before']} / {meta.get('loadavg_after')}",
        "",
        "## Targets",
        "",
        "| target | measured | limit | met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        value = "not measured" if t["value"] is None else f"{t['value']:.3f}"
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        limit = "(reported)" if t["limit"] is None else f"{t['op']} {t['limit']}"
        lines.append(f"| {t['name']} | {value} | {limit} | {met} |")
    sec = results["sections"]
    if "head" in sec:
        lines += ["", f"## Head maths alone (raw output {sec['head']['shape']}, value and gradient)", ""]
        lines += _times_table(sec["head"])
    if "step" in sec:
        for name, r in sec["step"].items():
            w = r["workload"]
            lines += [
                "",
                f"## Training step {name}: {r['states']} states, {w['hidden']} + {w['stoch'][0]}x{w['stoch'][1]} "
                f"inputs, trunk {w['layers']} x {w['units']}, {w['action_dim']} actions",
                "",
                f"Matrix products: {r['matmul_flops'] / 1e9:.2f} GFLOP per step; "
                f"matmuls-only rate {r['matmul_rate_gflops']:.1f} GFLOP/s.",
                "",
            ]
            lines += _times_table(r)
    if "act" in sec:
        for name, r in sec["act"].items():
            lines += ["", f"## Acting, {name} (host arrays in and out)", ""]
            lines += _times_table(r)
    if "compile" in sec:
        lines += [
            "",
            "## Compile (S)",
            "",
            "| function | trace+lower | XLA compile | first call - steady | XLA GFLOP | temp buffers |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in sec["compile"].items():
            flops = "-" if r.get("flops") is None else f"{r['flops'] / 1e9:.2f}"
            temp = "-" if not r.get("memory") else f"{r['memory'].get('temp', 0) / 2**20:.1f} MiB"
            lines.append(
                f"| {name} | {_fmt_time(r['lower']['median'])} | {_fmt_time(r['compile']['median'])} | "
                f"{_fmt_time(r['first_minus_steady_s'])} | {flops} | {temp} |"
            )
    if "memory" in sec:
        lines += [
            "",
            "## Peak resident memory (S step, one fresh process per variant)",
            "",
            "| variant | after setup | peak | peak - setup | peak ratio vs trunk | (peak - setup) ratio |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in sec["memory"].items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:80]} | | | | |")
                continue
            mib = 2**20
            lines.append(
                f"| {name} | {r['setup_rss'] / mib:.0f} MiB | {r['peak_rss'] / mib:.0f} MiB | "
                f"{r['delta'] / mib:.0f} MiB | {r.get('peak_ratio_vs_trunk', float('nan')):.3f} | "
                f"{r.get('delta_ratio_vs_trunk', float('nan')):.3f} |"
            )
    if "scaling" in sec:
        lines += [
            "",
            "## Scaling (training step, trunk 3 x 256 unless quick)",
            "",
            "| states | ours | trunk | ours / trunk | ours per 1k states |",
            "|---|---|---|---|---|",
        ]
        for r in sec["scaling"]["rows"]:
            t = r["times"]
            lines.append(
                f"| {r['states']} | {_fmt_time(t['ours']['median'])} | {_fmt_time(t['trunk']['median'])} | "
                f"{r['ratios']['ours / trunk']['median']:.3f} | {_fmt_time(t['ours']['median'] / r['states'] * 1e3)} |"
            )
        for v, f in sec["scaling"]["linear_fit"].items():
            lines.append(
                f"\nLinear fit ({v}): {_fmt_time(f['seconds_per_1k_states'])} per 1k states + "
                f"{_fmt_time(f['intercept_s'])}, r^2 = {f['r2']:.4f}; per-state cost largest/smallest = "
                f"{f['per_state_cost_ratio_largest_vs_smallest']:.2f}."
            )
    if "platform" in sec:
        r = sec["platform"]
        lines += ["", f"## One matrix product {' x '.join(map(str, r['shape']))} (float32)", ""]
        lines += _times_table(r)
        lines += ["", ", ".join(f"{v}: {g:.1f} GFLOP/s" for v, g in r["gflops"].items())]
    if "flags" in sec:
        lines += [
            "",
            "## XLA CPU flags (one fresh process each; medians, ratio vs default)",
            "",
            "| flag set | matmul | trunk step | ours step | matmuls only | ours / trunk | first call ours |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in sec["flags"].items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:100]} | | | | | |")
                continue
            t, vs = r["times"], r.get("vs_default", {})

            def cell(v, t=t, vs=vs):
                if v not in t:
                    return "-"
                ratio = f" ({vs[v]:.2f}x)" if v in vs else ""
                return f"{_fmt_time(t[v]['median'])}{ratio}"

            lines.append(
                f"| {name} | {cell('matmul')} | {cell('trunk')} | {cell('ours')} | {cell('matmuls_only')} | "
                f"{r['ratios']['ours / trunk']['median']:.3f} | {_fmt_time(r['first_call_ours_s'])} |"
            )
        lines += ["", "Flag sets: " + "; ".join(f"{k}: `{v or '(none)'}`" for k, v in FLAG_SETS.items())]
    if "dispatch" in sec:
        lines += [
            "",
            "## CPU dispatch (`jax_cpu_enable_async_dispatch`; one fresh process per row, in this order; medians)",
            "",
            "| mode | act b1: ours | torch eager | ours / eager | act b16: ours | torch eager | ours / eager "
            "| step S: ours | trunk | ours / trunk |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sec["dispatch"]["runs"]:
            if "error" in r:
                lines.append(f"| error: {r['error'][:100]} | | | | | | | | | |")
                continue
            cells = [f"{r['mode']} (async_dispatch={r['async_dispatch']})"]
            for b in (1, 16):
                t, rt = r[f"batch{b}"]["times"], r[f"batch{b}"]["ratios"]
                eager = t.get("torch_eager")
                cells += [_fmt_time(t["ours"]["median"]), "-" if eager is None else _fmt_time(eager["median"])]
                cells.append(f"{rt['ours / torch_eager']['median']:.3f}" if "ours / torch_eager" in rt else "-")
            t = r["step_S"]["times"]
            cells += [_fmt_time(t["ours"]["median"]), _fmt_time(t["trunk"]["median"])]
            cells.append(f"{r['step_S']['ratios']['ours / trunk']['median']:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "The trunk's forward products alone (`forward_dots`), in the same processes:",
            "",
            "| mode | b1: XLA | PyTorch | XLA / PyTorch | b16: XLA | PyTorch | XLA / PyTorch |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sec["dispatch"]["runs"]:
            if "error" in r:
                continue
            cells = [r["mode"]]
            for b in (1, 16):
                t, rt = r[f"batch{b}"]["times"], r[f"batch{b}"]["ratios"]
                for v in ("forward_products", "torch_forward_products"):
                    cells.append(_fmt_time(t[v]["median"]) if v in t else "-")
                key = "forward_products / torch_forward_products"
                cells.append(f"{rt[key]['median']:.3f}" if key in rt else "-")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.actor_step", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 2 repeats: a smoke run")
    parser.add_argument("--out", default="results/bench", help="output folder (default: results/bench)")
    parser.add_argument("--only", default=None, help=f"comma-separated sections from {', '.join(SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per comparison (default 7; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per variant (default 2; quick 1)")
    parser.add_argument(
        "--torch-compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time torch.compile'd variants (default: on, off with --quick; compiling takes a while)",
    )
    parser.add_argument("--dump-hlo", action="store_true", help="write the optimized HLO of the S step and trunk")
    parser.add_argument("--_child", choices=("memory", "flags", "dispatch"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else (2 if args.quick else 7)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.torch_compile = (not args.quick) if args.torch_compile is None else args.torch_compile
    args.min_round_s = 0.005 if args.quick else 0.05
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    sections = SECTIONS if args.only is None else tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    args.sections = sections
    return args


def dump_hlo(setups: dict[str, Setup], out_dir: str) -> list[str]:
    s = setups["S"]
    c, h, z, adv, key, p = s.config, s.hidden, s.stoch, s.advantage, s.key, s.params
    paths = []
    for name, fn, fargs in (
        ("trunk", jax.grad(trunk_loss), (p, c, h, z)),
        ("ours", jax.grad(ours_loss), (p, c, h, z, adv, key)),
        (
            "ours_head",
            jax.grad(ours_head_loss),
            (jnp.zeros((s.workload.states, 2 * c.action_dim)), c, adv.reshape(-1), key),
        ),
    ):
        path = os.path.join(out_dir, f"hlo_{name}.txt")
        with open(path, "w") as f:
            f.write(jax.jit(fn).lower(*fargs).compile().as_text())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child == "memory":
        print(json.dumps(child_memory(args)))
        return 0
    if args._child == "flags":
        print(json.dumps(child_flags(args)))
        return 0
    if args._child == "dispatch":
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():  # the setting would be silently ignored
            raise RuntimeError(
                "actor_step --_child dispatch: JAX's backends were made before the dispatch mode was set"
            )
        jax.config.update("jax_cpu_enable_async_dispatch", DISPATCH_MODES[args.variant])
        print(json.dumps(child_dispatch(args)))
        return 0
    args.torch = torch_status()
    os.makedirs(args.out, exist_ok=True)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "git": _git_commit(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "jax_device": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}) x {jax.device_count()}",
        "torch": args.torch,
        "torch_compile": args.torch_compile,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "quick": args.quick,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "sections": list(args.sections),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    setups = {name: make_setup(w) for name, w in workloads(args.quick).items()}
    results: dict[str, Any] = {"meta": meta, "sections": {}}
    for name in args.sections:
        start = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        results["sections"][name] = SECTION_FNS[name](args, setups)
        print(f"[bench] {name} done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    if args.dump_hlo:
        meta["hlo"] = dump_hlo(setups, args.out)
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = targets(results["sections"])
    json_path = os.path.join(args.out, "actor_step.json")
    md_path = os.path.join(args.out, "actor_step.md")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=2, allow_nan=True)
    with open(md_path, "w") as f:
        f.write(markdown(results))
    print(markdown(results))
    print(f"[bench] wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
