"""Timing check: the fused norm + activation against the flax composition it replaces.

Run `python -m benchmarks.fused_norm` (defaults: 4096 x 256 inputs, 3 layers, 10 rounds;
about half a minute on 2 CPU cores). Each variant is a jitted `value_and_grad` of
`sum(trunk(x))` w.r.t. the params, the trunk being `layers` x (Dense without bias, norm,
silu): flax `nn.LayerNorm(epsilon=1e-3)` + `jax.nn.silu` vs `FusedLayerNormAct`, and the
project's `RMSNorm` + `jax.nn.silu` vs `FusedRMSNormAct`. The variants run interleaved
(`_timing.interleaved`) and the printed ratios are per-round `fused / flax` (below 1: the
fused one is faster).
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from benchmarks import _timing as T
from dreamer_actor._src.fused_norm import FusedLayerNormAct, FusedRMSNormAct
from dreamer_actor._src.networks import RMSNorm


class _Trunk(nn.Module):
    """`layers` x (Dense without bias, norm, silu); `kind` picks the norm and whether it is fused."""

    kind: str  # "layer_flax", "layer_fused", "rms_flax", "rms_fused"
    layers: int
    units: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.layers):
            x = nn.Dense(self.units, use_bias=False, name=f"dense_{i}")(x)
            if self.kind == "layer_flax":
                x = jax.nn.silu(nn.LayerNorm(epsilon=1e-3, name=f"norm_{i}")(x))
            elif self.kind == "layer_fused":
                x = FusedLayerNormAct("silu", eps=1e-3, name=f"norm_{i}")(x)
            elif self.kind == "rms_flax":
                x = jax.nn.silu(RMSNorm(name=f"norm_{i}")(x))
            else:
                x = FusedRMSNormAct("silu", eps=1e-4, name=f"norm_{i}")(x)
        return x


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="rows of the input")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)

    x = jnp.asarray(np.random.default_rng(0).standard_normal((args.n, args.units), dtype=np.float32))
    variants, params = {}, None
    for kind in ("layer_flax", "layer_fused", "rms_flax", "rms_fused"):
        trunk = _Trunk(kind, args.layers, args.units)
        if params is None or kind == "rms_flax":  # the same params for both members of a pair
            params = trunk.init(jax.random.key(0), x)
            for name in params["params"]:  # scale and bias off their init
                if name.startswith("norm_"):
                    params["params"][name] = jax.tree.map(lambda p: p + 0.1, params["params"][name])
        step = jax.jit(jax.value_and_grad(lambda p, x, trunk=trunk: jnp.sum(trunk.apply(p, x))))
        variants[kind] = lambda step=step, params=params: step(params, x)
    # Same maths: the losses agree (float32 sums of n * units terms).
    losses = {k: float(fn()[0]) for k, fn in variants.items()}
    times = T.interleaved(variants, repeats=args.rounds, warmup=2)
    summary = T.summarize(
        times, {"layer fused/flax": ("layer_fused", "layer_flax"), "rms fused/flax": ("rms_fused", "rms_flax")}
    )
    summary["losses"] = losses
    summary["shape"] = {"n": args.n, "units": args.units, "layers": args.layers, "rounds": args.rounds}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
