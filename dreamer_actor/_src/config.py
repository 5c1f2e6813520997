"""`ActorConfig`: the frozen pytree that describes an actor and its action space.

Array leaves (`low`, `high`, `scale`, `bias`) are numbers someone may change or sweep
without recompiling: a jitted function that takes the config as an argument is traced
once per *shape* of the bounds, not once per value. Everything that changes shapes or
Python control flow (layer sizes, norm, dtype, distribution family) is a static field:
part of the treedef, so changing it retraces, as it must.

Bounds are stored in float32, rounded *inwards* (`low` up, `high` down, to the nearest
float32), so a returned action clipped to `[low, high]` in float32 or float64 lies inside
the caller's bounds exactly, whatever their dtype.
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

NORMS = ("layer", "rms", "none")
ACTIVATIONS = ("silu", "relu", "elu", "gelu", "tanh")
DTYPES = ("float32", "bfloat16", "float16", "float64")
KERNELS = ("auto", "cpu", "flax")
_LEAVES = ("low", "high", "scale", "bias")
# exp() of a log-std beyond this overflows float32 in the log-prob's z-score.
LOG_STD_LIMIT = 80.0
_F32 = np.finfo(np.float32)


def _as_bound(fn: str, name: str, value: Any) -> np.ndarray:
    if isinstance(value, str | bytes) or (
        isinstance(value, list | tuple) and any(isinstance(v, str | bytes) for v in value)
    ):
        raise ValueError(f"{fn}: `{name}` must be a number or an array of numbers, got the string {value!r}.")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{fn}: `{name}` must be a number or an array of numbers, got {value!r}.") from error
    if array.ndim > 1:
        raise ValueError(f"{fn}: `{name}` must be a scalar or a 1-D array [action_dim], got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        bad = np.nonzero(~np.isfinite(np.atleast_1d(array)))[0].tolist()
        raise ValueError(
            f"{fn}: `{name}` must be finite, got {array.tolist()} (dims {bad}). An unbounded Box cannot be"
            " squashed by tanh: give explicit bounds (or use distribution='categorical' for discrete actions)."
        )
    return array


def _inward_float32(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 bounds inside `[low, high]`: `low` rounded up, `high` rounded down."""
    low32, high32 = low.astype(np.float32), high.astype(np.float32)
    low32 = np.where(low32.astype(np.float64) < low, np.nextafter(low32, np.float32(np.inf)), low32)
    high32 = np.where(high32.astype(np.float64) > high, np.nextafter(high32, np.float32(-np.inf)), high32)
    # XLA on CPU flushes subnormals to 0, which is outside for a positive `low` or a negative
    # `high`: round those to the smallest normal float32, still inwards.
    low32 = np.where((low32 > 0) & (low32 < _F32.tiny), _F32.tiny, low32).astype(np.float32)
    high32 = np.where((high32 < 0) & (high32 > -_F32.tiny), -_F32.tiny, high32).astype(np.float32)
    return low32, high32


def _bound_leaves(fn: str, low: np.ndarray, high: np.ndarray) -> dict[str, jax.Array]:
    """Validated float32 `low`, `high`, `scale`, `bias` leaves from float64 bounds `[A]`."""
    bad = np.nonzero(~(low < high))[0]
    if bad.size:
        raise ValueError(
            f"{fn}: `low` must be < `high` in every dimension; violated at "
            f"dims {bad.tolist()} (low={low[bad].tolist()}, high={high[bad].tolist()})."
        )
    if np.any(np.abs(low) > _F32.max) or np.any(np.abs(high) > _F32.max):
        raise ValueError(
            f"{fn}: `low` and `high` must be within float32's range (|x| <= {_F32.max:.3g}), got "
            f"low={low.tolist()}, high={high.tolist()}."
        )
    scale = (high - low) / 2.0
    bias = (high + low) / 2.0
    scale32 = scale.astype(np.float32)
    if not np.all(np.isfinite(scale32)) or not np.all(scale32 >= _F32.tiny):
        raise ValueError(
            f"{fn}: `low` and `high` must span a range `high - low` that is finite and at least "
            f"{2 * _F32.tiny:.3g} (not subnormal) in float32 in every dimension, got {(high - low).tolist()}."
        )
    low32, high32 = _inward_float32(low, high)
    if not np.all(low32 < high32):
        raise ValueError(f"{fn}: `low` and `high` are too close to be distinct in float32: {low.tolist()}.")
    return {
        "low": jnp.asarray(low32),
        "high": jnp.asarray(high32),
        "scale": jnp.asarray(scale32),
        "bias": jnp.asarray(bias.astype(np.float32)),
    }


def _positive_int(fn: str, name: str, value: Any, minimum: int = 1) -> int:
    """`value` as an int >= minimum; bools and non-integral numbers are rejected, numpy ints accepted."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{fn}: `{name}` must be an int >= {minimum}, got the bool {value!r}.")
    try:
        value = operator.index(value)
    except TypeError as error:
        raise ValueError(f"{fn}: `{name}` must be an int >= {minimum}, got {value!r}.") from error
    if value < minimum:
        raise ValueError(f"{fn}: `{name}` must be an int >= {minimum}, got {value!r}.")
    return value


@struct.dataclass
class ActorConfig:
    """Action space and architecture of an actor. Build it with `ActorConfig.create`.

    Attributes:
      low, high: `[A]` float32 leaves, the action bounds, rounded inwards to float32
        (`low` up, `high` down); `-1`/`1` for `categorical`. Every action the library
        returns lies in `[low, high]` exactly.
      scale: `[A]` float32 leaf, `(high - low) / 2` (of the bounds as given, in float64).
      bias: `[A]` float32 leaf, `(high + low) / 2`.
      action_dim: number of continuous action dimensions, or of discrete choices.
      distribution: the action distribution family: `"tanh_normal"` (default),
        `"bounded_normal"` (official DreamerV3) or `"categorical"` (discrete actions);
        see `dreamer_actor.distributions.names()`.
      layers: number of hidden layers in the MLP trunk.
      units: width of each hidden layer.
      norm: `"layer"`, `"rms"` or `"none"`, applied after each hidden Dense.
      activation: name of a `jax.nn` activation (`"silu"`, `"relu"`, ...).
      log_std_min, log_std_max: bounds of the pre-squash log-std (`tanh_normal`).
        The raw output is squashed smoothly into the interval with a sigmoid, so both
        ends are reachable only asymptotically and the gradient never dies abruptly.
      init_std: std at initialization when the raw output is zero (`tanh_normal`).
      mean_limit: the pre-squash mean is `mean_limit * tanh(x / mean_limit)`, keeping
        it where `tanh` is not yet flat (`None`: unbounded, linear) (`tanh_normal`).
      min_std, max_std: std bounds of `bounded_normal`, as in DreamerV3 (0.1, 1.0).
      unimix: uniform mixture weight of `categorical` (DreamerV3: 0.01).
      action_dims: `categorical` only: sizes of several independent categorical heads
        (multi-discrete), e.g. `(3, 5)`; `action_dim` is then their sum and actions are
        concatenated one-hots. `None`: a single head of `action_dim` choices.
      output_scale: variance scale of the output layer's initializer (DreamerV3: 0.01,
        so a fresh policy starts near mean 0 and its initial std).
      dtype: compute dtype of the trunk (`"float32"` or `"bfloat16"`); the distribution
        maths always runs in float32 (float64 under x64).
      kernels: how the trunk's Dense and norm + activation layers are computed, with the same
        params and outputs to float rounding: `"cpu"`, the custom VJPs tuned for XLA CPU
        (`_src/dense.py`, `_src/fused_norm.py`; reverse mode only, `jax.jvp` raises `TypeError`);
        `"flax"`, `nn.Dense`, `nn.LayerNorm` / `RMSNorm` and the activation (forward mode works);
        `"auto"` (default), `"cpu"` where `jax.default_backend()` is the CPU when the actor is
        traced, `"flax"` on GPU and TPU, where the CPU kernels have not been measured faster
        (`jax.export` for a GPU from a CPU host traces on the CPU: say `"flax"` there).
    """

    low: jax.Array
    high: jax.Array
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
    kernels: str = struct.field(pytree_node=False, default="auto")

    @classmethod
    def static_fields(cls) -> tuple[str, ...]:
        """Names of the static (non-leaf) fields, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _LEAVES)

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
            are arrays. Required for `categorical` (the number of choices) unless
            `action_dims` is given.
          **static: any static field of `ActorConfig` (`layers=`, `units=`, `norm=`, ...).

        Raises:
          ValueError: naming the field, for bounds that are non-finite, not strictly
            ordered (`low < high` everywhere), of mismatched shapes, outside float32's
            range or of a subnormal width, and for unknown or invalid option values.

        Example:
          >>> cfg = ActorConfig.create(low=[-2.0, 0.0], high=[3.0, 1.0])
          >>> cfg.scale.tolist(), cfg.bias.tolist()
          ([2.5, 0.5], [0.5, 0.5])
        """
        fn = "ActorConfig.create"
        unknown = set(static) - set(cls.static_fields()) - {"action_dim"}
        if unknown:
            raise ValueError(f"{fn}: unknown option(s) {sorted(unknown)}; expected some of {cls.static_fields()}.")
        for name in ("layers", "units"):
            if name in static:
                static[name] = _positive_int(fn, name, static[name], minimum=0 if name == "layers" else 1)
        distribution = static.get("distribution", "tanh_normal")
        if static.get("action_dims") is not None:
            dims = static["action_dims"]
            if isinstance(dims, str) or not hasattr(dims, "__iter__"):
                raise ValueError(f"{fn}: `action_dims` must be a sequence of ints, got {dims!r}.")
            static["action_dims"] = tuple(_positive_int(fn, "action_dims", d) for d in dims)
            if action_dim is None and distribution == "categorical":
                action_dim = sum(static["action_dims"])
        if action_dim is not None:
            action_dim = _positive_int(fn, "action_dim", action_dim)
        if distribution == "categorical":
            if action_dim is None:
                raise ValueError(f"{fn}: `action_dim` (number of choices) is required for categorical.")
            leaves = _bound_leaves(fn, -np.ones(action_dim), np.ones(action_dim))
        else:
            low_a, high_a = _as_bound(fn, "low", low), _as_bound(fn, "high", high)
            dims = {a.shape[0] for a in (low_a, high_a) if a.ndim == 1}
            dims_with_arg = dims | ({action_dim} if action_dim is not None else set())
            if len(dims_with_arg) > 1:
                raise ValueError(
                    f"{fn}: shapes disagree: low {low_a.shape}, high {high_a.shape}, action_dim={action_dim}."
                )
            if not dims_with_arg:
                raise ValueError(f"{fn}: `action_dim` is required when `low` and `high` are scalars.")
            action_dim = dims_with_arg.pop()
            if action_dim < 1:
                raise ValueError(f"{fn}: `low` and `high` must have at least one dimension, got shape (0,).")
            leaves = _bound_leaves(
                fn, np.broadcast_to(low_a, (action_dim,)).copy(), np.broadcast_to(high_a, (action_dim,)).copy()
            )
        config = cls(**leaves, action_dim=int(action_dim), **static)
        config.validate()
        return config

    @classmethod
    def from_space(cls, space: Any, **options: Any) -> ActorConfig:
        """Builds a config for a gymnasium action space (gymnasium is imported only here).

        * `Box` of shape `(A,)`: per-dimension bounds `space.low`, `space.high`;
          `distribution` `"tanh_normal"` unless given (`"bounded_normal"` works too).
          Every bound must be finite.
        * `Discrete(n)`: `categorical` with `action_dim = n`. The env action is
          `argmax(action) + space.start`.
        * `MultiDiscrete(nvec)` (1-D): `categorical` with `action_dims = tuple(nvec)`; the
          env action is the per-head argmax (plus `space.start`).

        Args:
          space: a `gymnasium.spaces.Box`, `Discrete` or `MultiDiscrete`.
          **options: static fields (`layers=`, `units=`, `distribution=`, ...).

        Raises:
          TypeError: for any other space, naming it.
          ValueError: for an unbounded or non-1-D `Box` (naming the dimensions), or a
            `categorical` distribution asked for a `Box` (and vice versa).
        """
        fn = "ActorConfig.from_space"
        try:
            from gymnasium import spaces
        except ImportError as error:  # pragma: no cover - gymnasium is an optional dependency
            raise ImportError(f"{fn}: needs gymnasium (`pip install gymnasium`).") from error
        for name in ("low", "high", "action_dim", "action_dims"):
            if name in options:
                raise ValueError(f"{fn}: `{name}` comes from the space; do not pass it.")
        if isinstance(space, spaces.Box):
            if len(space.shape) != 1:
                raise ValueError(f"{fn}: a Box action space must be 1-D (A,), got {space!r} of shape {space.shape}.")
            unbounded = np.nonzero(~(np.isfinite(space.low) & np.isfinite(space.high)))[0].tolist()
            if unbounded:
                raise ValueError(
                    f"{fn}: the Box {space!r} is unbounded in dims {unbounded}; a tanh-squashed or bounded policy"
                    " needs finite `low` and `high` in every dimension (wrap the env to rescale its actions)."
                )
            if options.get("distribution") == "categorical":
                raise ValueError(f"{fn}: `distribution='categorical'` needs a Discrete space, got {space!r}.")
            return cls.create(low=space.low, high=space.high, **options)
        if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
            if options.setdefault("distribution", "categorical") != "categorical":
                raise ValueError(
                    f"{fn}: a {type(space).__name__} space needs distribution='categorical', "
                    f"got {options['distribution']!r}."
                )
            if isinstance(space, spaces.Discrete):
                return cls.create(action_dim=int(space.n), **options)
            if len(space.nvec.shape) != 1:
                raise ValueError(f"{fn}: a MultiDiscrete space must be 1-D, got nvec of shape {space.nvec.shape}.")
            return cls.create(action_dims=tuple(int(n) for n in space.nvec), **options)
        raise TypeError(
            f"{fn}: unsupported action space {space!r} ({type(space).__name__}); expected a gymnasium Box, "
            "Discrete or MultiDiscrete."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: every static field plus the leaves `low`, `high`, `scale`,
        `bias` as lists of floats.

        `ActorConfig.from_dict(config.to_dict())` equals `config` bit for bit (float32 values
        are exact in JSON's float64).
        """
        out: dict[str, Any] = {}
        for name in self.static_fields():
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        for name in _LEAVES:  # float32 values are exact in JSON's float64
            out[name] = np.asarray(getattr(self, name), np.float64).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActorConfig:
        """Rebuilds (and validates) a config written by `to_dict`.

        Raises:
          ValueError: naming the fields, for unknown or missing entries (e.g. written by a
            newer version) and for invalid values.
        """
        fn = "ActorConfig.from_dict"
        if not isinstance(data, dict):
            raise TypeError(f"{fn}: `data` must be a dict (from `to_dict`), got {type(data).__name__}.")
        known = {*cls.static_fields(), *_LEAVES}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{fn}: unknown field(s) {unknown} (written by a newer version?).")
        missing = sorted({"low", "high", "distribution", "action_dim"} - set(data))
        if missing:
            raise ValueError(f"{fn}: missing field(s) {missing}.")
        static = {k: v for k, v in data.items() if k not in (*_LEAVES, "action_dim")}
        if static.get("action_dims") is not None:
            static["action_dims"] = tuple(static["action_dims"])
        if data["distribution"] == "categorical":
            config = cls.create(action_dim=data["action_dim"], **static)
        else:
            config = cls.create(low=data["low"], high=data["high"], action_dim=data["action_dim"], **static)
        # `scale` and `bias` were computed from the bounds as first given (in float64), which
        # the float32 `low`/`high` may round: restore the stored leaves bit for bit.
        stored = {}
        for name in ("scale", "bias"):
            if name in data:
                stored[name] = jnp.asarray(np.asarray(data[name], np.float64).astype(np.float32))
                if stored[name].shape != (config.action_dim,):
                    raise ValueError(f"{fn}: `{name}` must have {config.action_dim} entries, got {data[name]!r}.")
        if stored:
            config = dataclasses.replace(config, **stored)
            config.validate()
        return config

    @property
    def family(self):
        """The distribution family module of `distribution` (see `dreamer_actor.distributions`)."""
        from dreamer_actor._src.distributions import registry

        return registry.get(self.distribution)

    @property
    def is_discrete(self) -> bool:
        return self.family.DISCRETE

    def validate(self) -> None:
        """Checks the static fields, and the bound leaves when they are concrete arrays.

        Safe at trace time (traced leaves are checked for shape only). Raises `ValueError`
        naming the field.
        """
        from dreamer_actor._src.distributions import registry

        def fail(field: str, expected: str) -> None:
            raise ValueError(f"ActorConfig: `{field}` must be {expected}, got {getattr(self, field)!r}.")

        for name, minimum in (("action_dim", 1), ("layers", 0), ("units", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                fail(name, f"an int >= {minimum}")
        if self.distribution not in registry.names():
            fail("distribution", f"one of {registry.names()}")
        if self.norm not in NORMS:
            fail("norm", f"one of {NORMS}")
        if self.activation not in ACTIVATIONS:
            fail("activation", f"one of {ACTIVATIONS}")
        if self.dtype not in DTYPES:
            fail("dtype", f"one of {DTYPES}")
        if self.kernels not in KERNELS:
            fail("kernels", f"one of {KERNELS}")
        if isinstance(self.output_scale, bool) or not (
            isinstance(self.output_scale, int | float) and math.isfinite(self.output_scale) and self.output_scale > 0
        ):
            fail("output_scale", "a finite number > 0")
        for name in _LEAVES:
            if getattr(getattr(self, name), "shape", None) != (self.action_dim,):
                raise ValueError(
                    f"ActorConfig: `{name}` must be an array of shape ({self.action_dim},) (action_dim), got "
                    f"{getattr(getattr(self, name), 'shape', type(getattr(self, name)).__name__)}."
                )
        family = registry.get(self.distribution)
        if self.action_dims is not None and not family.DISCRETE:
            fail("action_dims", f"None for the continuous distribution {self.distribution!r}")
        self._validate_concrete_bounds()
        family.validate_config(self)

    def _validate_concrete_bounds(self) -> None:
        values = [getattr(self, name) for name in _LEAVES]
        if any(isinstance(v, jax.core.Tracer) for v in values):
            return
        low, high, scale, bias = (np.asarray(v) for v in values)
        for name, v in zip(_LEAVES, (low, high, scale, bias), strict=True):
            if not np.issubdtype(v.dtype, np.floating) or not np.all(np.isfinite(v)):
                raise ValueError(f"ActorConfig: `{name}` must be finite floating point, got {v.tolist()}.")
        if not np.all(scale >= _F32.tiny):
            raise ValueError(
                f"ActorConfig: `scale` must be >= {_F32.tiny:.3g} (positive, not subnormal), got {scale.tolist()}."
            )
        if not np.all(low < high):
            raise ValueError(f"ActorConfig: `low` must be < `high`, got low={low.tolist()}, high={high.tolist()}.")

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)


def _replace(self: ActorConfig, **updates: Any) -> ActorConfig:
    """Returns a validated copy with `updates` applied.

    Bounds stay consistent: new `low`/`high` recompute `scale`/`bias`, and new
    `scale`/`bias` recompute `low`/`high` (in float64 from the given values). Traced
    leaves (inside `jit`) are replaced as given, with a shape check only.
    """
    fn = "ActorConfig.replace"
    unknown = set(updates) - {f.name for f in dataclasses.fields(self)}
    if unknown:
        raise ValueError(f"{fn}: unknown field(s) {sorted(unknown)}.")
    given = {name for name in _LEAVES if name in updates}
    traced = any(isinstance(updates[name], jax.core.Tracer) for name in given)
    if given and not traced:
        current = {name: np.asarray(getattr(self, name), np.float64) for name in _LEAVES}
        new = {name: _as_bound(fn, name, updates[name]) for name in given}
        if given & {"low", "high"} and given & {"scale", "bias"} and given != set(_LEAVES):
            raise ValueError(f"{fn}: give either `low`/`high` or `scale`/`bias` (or all four), not both.")
        for name, value in new.items():
            if value.shape != (self.action_dim,):
                value = np.broadcast_to(value, (self.action_dim,)) if value.ndim == 0 else value
                if value.shape != (self.action_dim,):
                    raise ValueError(
                        f"{fn}: `{name}` must have shape ({self.action_dim},) (action_dim), got {value.shape}."
                    )
                new[name] = value
        if given == set(_LEAVES):
            # All four at once (`flax.serialization.from_state_dict`, a tree of saved leaves): taken
            # as given in float32, `scale`/`bias` not recomputed from the (inward-rounded) bounds,
            # if they agree with `bias -+ scale` up to float32 rounding.
            leaves = {name: new[name].astype(np.float32) for name in _LEAVES}
            low, high, scale, bias = (leaves[name].astype(np.float64) for name in _LEAVES)
            tol = 4 * np.finfo(np.float32).eps * (np.abs(low) + np.abs(high) + np.abs(bias) + scale)
            if not (np.all(np.abs(bias - scale - low) <= tol) and np.all(np.abs(bias + scale - high) <= tol)):
                raise ValueError(
                    f"{fn}: `low`, `high`, `scale`, `bias` disagree (need low = bias - scale, high = bias + scale), "
                    f"got low={low.tolist()}, high={high.tolist()}, scale={scale.tolist()}, bias={bias.tolist()}."
                )
            config = dataclasses.replace(self, **{**updates, **{k: jnp.asarray(v) for k, v in leaves.items()}})
            config.validate()
            return config
        if given & {"low", "high"}:
            low, high = new.get("low", current["low"]), new.get("high", current["high"])
        else:
            scale, bias = new.get("scale", current["scale"]), new.get("bias", current["bias"])
            if not np.all(scale > 0):
                raise ValueError(f"{fn}: `scale` must be > 0 in every dimension, got {scale.tolist()}.")
            low, high = bias - scale, bias + scale
        for name, value in (("low", low), ("high", high)):
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{fn}: `{name}` must be finite, got {value.tolist()}.")
        updates = {**updates, **_bound_leaves(fn, low, high)}
    config = dataclasses.replace(self, **updates)
    config.validate()
    return config


ActorConfig.replace = _replace  # flax's `replace` skips validation
