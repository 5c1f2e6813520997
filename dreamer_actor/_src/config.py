"""`ActorConfig`: the frozen pytree that describes an actor and its action space.

Array leaves (`scale`, `bias`) are numbers someone may change or sweep without
recompiling: a jitted function that takes the config as an argument is traced
once per *shape* of the bounds, not once per value. Everything that changes
shapes or Python control flow (layer sizes, norm, dtype, distribution kind) is a
static field: part of the treedef, so changing it retraces, as it must.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

DISTRIBUTIONS = ("tanh_normal", "bounded_normal", "categorical")
NORMS = ("layer", "rms", "none")
ACTIVATIONS = ("silu", "relu", "elu", "gelu", "tanh")
DTYPES = ("float32", "bfloat16", "float16", "float64")


def _as_bound(name: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"ActorConfig: `{name}` must be a number or an array of numbers, got {value!r}.") from error
    if array.ndim > 1:
        raise ValueError(
            f"ActorConfig: `{name}` must be a scalar or a 1-D array [action_dim], got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"ActorConfig: `{name}` must be finite, got {array.tolist()}. An unbounded Box cannot be"
            " squashed by tanh: give explicit bounds (or use distribution='categorical' for discrete actions)."
        )
    return array


@struct.dataclass
class ActorConfig:
    """Action space and architecture of an actor. Build it with `ActorConfig.create`.

    Attributes:
      scale: `[A]` float32 leaf, `(high - low) / 2` (ones for `categorical`).
      bias: `[A]` float32 leaf, `(high + low) / 2` (zeros for `categorical`).
      action_dim: number of continuous action dimensions, or of discrete choices.
      distribution: `"tanh_normal"` (default), `"bounded_normal"` (official DreamerV3)
        or `"categorical"` (discrete actions).
      layers: number of hidden layers in the MLP trunk.
      units: width of each hidden layer.
      norm: `"layer"`, `"rms"` or `"none"`, applied after each hidden Dense.
      activation: name of a `jax.nn` activation (`"silu"`, `"relu"`, ...).
      log_std_min, log_std_max: bounds of the pre-squash log-std (`tanh_normal`).
        The raw output is squashed smoothly into the interval with a sigmoid, so both
        ends are reachable only asymptotically and the gradient never dies abruptly
        (a hard clip would zero it). Chosen over softplus + `min_std` because the
        upper bound stops an entropy bonus from inflating the std without limit.
      init_std: std at initialization when the raw output is zero (`tanh_normal`).
      mean_limit: the pre-squash mean is `mean_limit * tanh(x / mean_limit)`, keeping
        it where `tanh` is not yet flat (`None`: unbounded, linear).
      min_std, max_std: std bounds of `bounded_normal`, as in DreamerV3.
      unimix: uniform mixture weight of `categorical` (DreamerV3: 0.01).
      action_dims: `categorical` only: sizes of several independent categorical heads
        (multi-discrete), e.g. `(3, 5)`; `action_dim` is then their sum and actions are
        concatenated one-hots. `None`: a single head of `action_dim` choices.
      output_scale: variance scale of the output layer's initializer (DreamerV3: 0.01,
        so a fresh policy starts near mean 0 and its initial std).
      dtype: compute dtype of the trunk (`"float32"` or `"bfloat16"`); the distribution
        maths always runs in float32 (float64 under x64).
    """

    scale: jax.Array
    bias: jax.Array
    action_dim: int = struct.field(pytree_node=False, default=1)
    distribution: str = struct.field(pytree_node=False, default="tanh_normal")
    layers: int = struct.field(pytree_node=False, default=3)
    units: int = struct.field(pytree_node=False, default=256)
    norm: str = struct.field(pytree_node=False, default="layer")
    activation: str = struct.field(pytree_node=False, default="silu")
    log_std_min: float = struct.field(pytree_node=False, default=-5.0)
    log_std_max: float = struct.field(pytree_node=False, default=2.0)
    init_std: float = struct.field(pytree_node=False, default=1.0)
    mean_limit: float | None = struct.field(pytree_node=False, default=5.0)
    min_std: float = struct.field(pytree_node=False, default=0.1)
    max_std: float = struct.field(pytree_node=False, default=1.0)
    unimix: float = struct.field(pytree_node=False, default=0.01)
    action_dims: tuple[int, ...] | None = struct.field(pytree_node=False, default=None)
    output_scale: float = struct.field(pytree_node=False, default=0.01)
    dtype: str = struct.field(pytree_node=False, default="float32")

    @classmethod
    def create(
        cls,
        low: Any = -1.0,
        high: Any = 1.0,
        *,
        action_dim: int | None = None,
        **static: Any,
    ) -> ActorConfig:
        """Builds a validated config from action bounds.

        Args:
          low, high: scalars or `[A]` arrays (e.g. `box.low`, `box.high` of a gymnasium
            `Box`); scalars are broadcast to `action_dim`. Ignored for `categorical`.
          action_dim: number of action dimensions; inferred from `low`/`high` when they
            are arrays. Required for `categorical` (the number of choices).
          **static: any static field of `ActorConfig` (`layers=`, `units=`, `norm=`, ...).

        Raises:
          ValueError: naming the field, for bounds that are non-finite, not strictly
            ordered (`low < high` everywhere) or of mismatched shapes, and for
            unknown option values.

        Example:
          >>> cfg = ActorConfig.create(low=[-2.0, 0.0], high=[3.0, 1.0])
          >>> cfg.scale.tolist(), cfg.bias.tolist()
          ([2.5, 0.5], [0.5, 0.5])
        """
        unknown = set(static) - {f for f in cls.__dataclass_fields__ if f not in ("scale", "bias", "action_dim")}
        if unknown:
            raise ValueError(f"ActorConfig.create: unknown option(s) {sorted(unknown)}.")
        distribution = static.get("distribution", "tanh_normal")
        if static.get("action_dims") is not None:
            try:
                static["action_dims"] = tuple(operator.index(d) for d in static["action_dims"])
            except TypeError as error:
                raise ValueError(
                    f"ActorConfig.create: `action_dims` must be a sequence of ints, got {static['action_dims']!r}."
                ) from error
            if action_dim is None and distribution == "categorical":
                action_dim = sum(static["action_dims"])
        if distribution == "categorical":
            if action_dim is None:
                raise ValueError("ActorConfig.create: `action_dim` (number of choices) is required for categorical.")
            scale = np.ones(int(action_dim))
            bias = np.zeros(int(action_dim))
        else:
            low_a, high_a = _as_bound("low", low), _as_bound("high", high)
            dims = {a.shape[0] for a in (low_a, high_a) if a.ndim == 1}
            if action_dim is not None:
                dims_with_arg = dims | {int(action_dim)}
            else:
                dims_with_arg = dims
            if len(dims_with_arg) > 1:
                raise ValueError(
                    "ActorConfig.create: shapes disagree: "
                    f"low {low_a.shape}, high {high_a.shape}, action_dim={action_dim}."
                )
            if not dims_with_arg:
                raise ValueError("ActorConfig.create: `action_dim` is required when `low` and `high` are scalars.")
            action_dim = dims_with_arg.pop()
            low_a = np.broadcast_to(low_a, (action_dim,))
            high_a = np.broadcast_to(high_a, (action_dim,))
            bad = np.nonzero(~(low_a < high_a))[0]
            if bad.size:
                raise ValueError(
                    f"ActorConfig.create: `low` must be < `high` in every dimension; violated at "
                    f"dims {bad.tolist()} (low={low_a[bad].tolist()}, high={high_a[bad].tolist()})."
                )
            scale = (high_a - low_a) / 2.0
            bias = (high_a + low_a) / 2.0
            if not np.all(np.isfinite(scale)) or not np.all(scale.astype(np.float32) > 0):
                raise ValueError(
                    f"ActorConfig.create: the range high - low must be finite and > 0 in float32, got {scale * 2}."
                )
        config = cls(
            scale=jnp.asarray(scale, jnp.float32),
            bias=jnp.asarray(bias, jnp.float32),
            action_dim=int(action_dim),
            **static,
        )
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: every static field plus `low` and `high` as lists of floats.

        Minimal shim for the checkpoint branch (replaced at merge by the full version).
        """
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            if field.metadata.get("pytree_node", True):
                continue
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        out["low"] = np.asarray(self.low, np.float64).tolist()
        out["high"] = np.asarray(self.high, np.float64).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActorConfig:
        """Rebuilds (and validates) a config written by `to_dict`.

        Minimal shim for the checkpoint branch (replaced at merge by the full version).

        Raises:
          ValueError: naming the fields, for unknown entries and invalid values.
        """
        fn = "ActorConfig.from_dict"
        if not isinstance(data, dict):
            raise TypeError(f"{fn}: `data` must be a dict (from `to_dict`), got {type(data).__name__}.")
        static_names = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("pytree_node", True)}
        unknown = sorted(set(data) - static_names - {"low", "high"})
        if unknown:
            raise ValueError(f"{fn}: unknown field(s) {unknown} (written by a newer version?).")
        static = {k: v for k, v in data.items() if k not in ("low", "high", "action_dim")}
        if static.get("action_dims") is not None:
            static["action_dims"] = tuple(static["action_dims"])
        if static.get("distribution") == "categorical":
            return cls.create(action_dim=data.get("action_dim"), **static)
        return cls.create(
            low=data.get("low", -1.0), high=data.get("high", 1.0), action_dim=data.get("action_dim"), **static
        )

    @property
    def low(self) -> jax.Array:
        """`[A]` lower action bound."""
        return self.bias - self.scale

    @property
    def high(self) -> jax.Array:
        """`[A]` upper action bound."""
        return self.bias + self.scale

    @property
    def is_discrete(self) -> bool:
        return self.distribution == "categorical"

    def validate(self) -> None:
        """Checks the static fields (Python values only: safe at trace time)."""

        def fail(field: str, expected: str) -> None:
            raise ValueError(f"ActorConfig: `{field}` must be {expected}, got {getattr(self, field)!r}.")

        if not isinstance(self.action_dim, int) or self.action_dim < 1:
            fail("action_dim", "a positive int")
        if self.distribution not in DISTRIBUTIONS:
            fail("distribution", f"one of {DISTRIBUTIONS}")
        if not isinstance(self.layers, int) or self.layers < 0:
            fail("layers", "an int >= 0")
        if not isinstance(self.units, int) or self.units < 1:
            fail("units", "a positive int")
        if self.norm not in NORMS:
            fail("norm", f"one of {NORMS}")
        if self.activation not in ACTIVATIONS:
            fail("activation", f"one of {ACTIVATIONS}")
        if self.dtype not in DTYPES:
            fail("dtype", f"one of {DTYPES}")
        if not (math.isfinite(self.log_std_min) and math.isfinite(self.log_std_max)) or not (
            self.log_std_min < self.log_std_max
        ):
            fail("log_std_min", "finite and < log_std_max")
        if not (math.exp(self.log_std_min) < self.init_std < math.exp(self.log_std_max)):
            fail(
                "init_std",
                f"strictly inside (exp(log_std_min), exp(log_std_max)) = "
                f"({math.exp(self.log_std_min):.3g}, {math.exp(self.log_std_max):.3g})",
            )
        if self.mean_limit is not None and not (math.isfinite(self.mean_limit) and self.mean_limit > 0):
            fail("mean_limit", "None or a finite number > 0")
        if not (0 < self.min_std < self.max_std and math.isfinite(self.max_std)):
            fail("min_std", "> 0 and < max_std")
        if not (0.0 <= self.unimix < 1.0):
            fail("unimix", "in [0, 1)")
        if self.action_dims is not None and not (
            self.distribution == "categorical"
            and isinstance(self.action_dims, tuple)
            and self.action_dims
            and all(isinstance(d, int) and d >= 1 for d in self.action_dims)
            and sum(self.action_dims) == self.action_dim
        ):
            fail("action_dims", "None, or (categorical only) a tuple of positive ints summing to action_dim")
        if not (self.output_scale > 0 and math.isfinite(self.output_scale)):
            fail("output_scale", "a finite number > 0")
        if getattr(self.scale, "shape", None) != (self.action_dim,) or getattr(self.bias, "shape", None) != (
            self.action_dim,
        ):
            raise ValueError(
                f"ActorConfig: `scale` and `bias` must have shape ({self.action_dim},), got "
                f"{getattr(self.scale, 'shape', None)} and {getattr(self.bias, 'shape', None)}."
            )

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def params_out(self) -> int:
        """Width of the actor's raw output layer."""
        return self.action_dim if self.is_discrete else 2 * self.action_dim
