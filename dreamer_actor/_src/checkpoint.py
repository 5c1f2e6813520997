"""Checkpoints of an actor: params, config, optimizer and normalizer state, with orbax.

    path = save_checkpoint("runs/actor/step_1000", params=params, config=config,
                           opt_state=opt_state, normalizer_state=norm_state, step=1000)
    ckpt = restore_checkpoint(path, config=config, params_like=params,
                              opt_state_like=optimizer.init(params),
                              normalizer_state_like=normalizer.init())
    ckpt.params, ckpt.config, ckpt.opt_state, ckpt.normalizer_state, ckpt.step

No pickle anywhere: arrays go through `orbax.checkpoint` (`StandardSave`, tensorstore),
everything else through orbax's JSON handler. A checkpoint is a directory of orbax
items:

* `params`, `config_arrays` (`scale`, `bias`), and `opt_state` / `normalizer_state`
  when given: arrays, written with their sharding and restored onto any devices;
* `metadata` (JSON): the config's static fields (`action_dim`, `layers`, `units`, ...),
  the step, the shape and dtype of every saved array, an optional user `extra`;
* `dreamer_actor_manifest.json`: the size and SHA-256 of every file, written last.

**Atomic.** Everything is written into a hidden temporary sibling
(`.<name>.tmp-<random>`) which is renamed to `directory` only once it is complete (the
manifest included): an interrupted save (exception, Ctrl-C, kill) never leaves a
checkpoint at `directory`, and a previous checkpoint there is untouched. On an exception
the temporary directory is removed; after a hard kill it is left behind (hidden, never
read, safe to delete). With `overwrite=True` the old checkpoint is first renamed to
`.<name>.old-<random>`, then the new one moved in, then the old one deleted: if the
process dies between the two renames, the old checkpoint is still whole under that name.

**Checked.** `restore_checkpoint` verifies every file against the manifest (a deleted,
truncated or corrupted file is an error naming it) and compares the stored static config
and array shapes with what you expect (`config`, `params_like`, `opt_state_like`,
`normalizer_state_like`) before reading any array, so a mismatch is a `ValueError`
listing the differences, not a tensorstore error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dreamer_actor._src.config import ActorConfig
from dreamer_actor._src.networks import Actor

FORMAT = "dreamer_actor.checkpoint/1"
MANIFEST = "dreamer_actor_manifest.json"
_ITEMS = ("params", "config_arrays", "opt_state", "normalizer_state")
_MAX_LISTED = 8


class Checkpoint(NamedTuple):
    """What `restore_checkpoint` returns.

    Attributes:
      params: the actor's variables, a nested dict of arrays (as `Actor.init` returns).
      config: the stored `ActorConfig`, rebuilt and validated.
      opt_state: the optimizer state with the structure of `opt_state_like`, or None
        when no template was given (or none was saved).
      normalizer_state: likewise, with the structure of `normalizer_state_like`.
      step: the step saved with the checkpoint.
      extra: the user's JSON metadata (`save_checkpoint(..., extra=)`), or None.
    """

    params: Any
    config: ActorConfig
    opt_state: Any
    normalizer_state: Any
    step: int
    extra: Any


# ----------------------------------------------------------------------------- helpers


def _config_static(config: ActorConfig) -> dict[str, Any]:
    """The static (non-leaf) fields of a config as JSON-ready values."""
    static = {}
    for field in dataclasses.fields(config):
        if field.metadata.get("pytree_node", True):
            continue
        value = getattr(config, field.name)
        static[field.name] = list(value) if isinstance(value, tuple) else value
    return static


def _config_from_static(static: dict[str, Any], scale: jax.Array, bias: jax.Array, path: pathlib.Path) -> ActorConfig:
    known = {f.name for f in dataclasses.fields(ActorConfig)} - {"scale", "bias"}
    unknown = sorted(set(static) - known)
    if unknown:
        raise ValueError(f"restore_checkpoint: {path} stores unknown config field(s) {unknown} (a newer version?).")
    static = dict(static)
    if static.get("action_dims") is not None:
        static["action_dims"] = tuple(static["action_dims"])
    config = ActorConfig(scale=scale, bias=bias, **static)
    config.validate()
    return config


def _leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """`{"path/to/leaf": (shape, dtype)}` for every leaf of a pytree (None and empty nodes have none)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    specs = {}
    for key_path, leaf in leaves:
        name = jax.tree_util.keystr(key_path, simple=True, separator="/")
        specs[name] = (tuple(int(d) for d in np.shape(leaf)), str(jnp.result_type(leaf)))
    return specs


def _specs_to_json(specs: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, Any]:
    return {name: {"shape": list(shape), "dtype": dtype} for name, (shape, dtype) in specs.items()}


def _specs_from_json(entries: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {name: (tuple(e["shape"]), e["dtype"]) for name, e in entries.items()}


def _diff_specs(stored: dict, expected: dict, what: str) -> list[str]:
    """Human-readable differences between two `_leaf_specs` results."""
    problems = []
    for name in expected:
        if name not in stored:
            problems.append(f"{what} `{name}`: expected {_fmt(expected[name])}, not in the checkpoint")
        elif stored[name] != expected[name]:
            problems.append(f"{what} `{name}`: stored {_fmt(stored[name])}, expected {_fmt(expected[name])}")
    problems += [
        f"{what} `{name}`: stored {_fmt(stored[name])}, not expected" for name in stored if name not in expected
    ]
    return problems


def _fmt(spec: tuple[tuple[int, ...], str]) -> str:
    return f"{spec[1]}{list(spec[0])}"


def _listing(problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    return "\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")


def _params_paths(params: Any, fn: str) -> None:
    """Params must be nested string-keyed mappings of arrays (what linen's `init` returns)."""
    if not isinstance(params, Mapping) or not params:
        raise TypeError(f"{fn}: `params` must be the actor's variables (a nested dict of arrays), got {type(params)}.")
    for key_path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not all(isinstance(k, jax.tree_util.DictKey) and isinstance(k.key, str) for k in key_path):
            raise TypeError(
                f"{fn}: `params` must be nested dicts with string keys, found the leaf "
                f"{jax.tree_util.keystr(key_path)}."
            )


def _expected_param_specs(config: ActorConfig, specs: dict) -> dict:
    """The param shapes `Actor.from_config(config)` has for the input width found in `specs`."""
    first = "params/dense_0/kernel" if config.layers > 0 else "params/out/kernel"
    if first not in specs or len(specs[first][0]) != 2:
        return {first: ((-1, -1), "float32")}  # cannot infer the input width: report the missing kernel
    in_dim = specs[first][0][0]
    shapes = jax.eval_shape(
        Actor.from_config(config).init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((in_dim,), jnp.float32),
        jax.ShapeDtypeStruct((0,), jnp.float32),
    )
    return _leaf_specs(shapes)


def _check_params_match_config(specs: dict, config: ActorConfig, fn: str, where: str) -> None:
    problems = _diff_specs(specs, _expected_param_specs(config, specs), "param")
    if problems:
        raise ValueError(
            f"{fn}: {where} do not fit the config (action_dim={config.action_dim}, "
            f"distribution={config.distribution!r}, layers={config.layers}, units={config.units}, "
            f"norm={config.norm!r}):{_listing(problems)}"
        )


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(directory: pathlib.Path) -> None:
    """Records size and SHA-256 of every file under `directory`; written last, fsynced."""
    files = {}
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = file.relative_to(directory).as_posix()
        files[rel] = {"size": file.stat().st_size, "sha256": _sha256(file)}
    tmp = directory / (MANIFEST + ".partial")
    with open(tmp, "w") as f:
        json.dump({"format": FORMAT, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)


def _verify_files(directory: pathlib.Path, fn: str) -> None:
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(
            f"{fn}: {directory} is not a complete dreamer_actor checkpoint: `{MANIFEST}` is missing "
            "(an interrupted save, or not written by `save_checkpoint`)."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        fmt = manifest["format"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{fn}: the manifest {manifest_path} is corrupted ({error}).") from error
    if fmt != FORMAT:
        raise ValueError(f"{fn}: {directory} has format {fmt!r}; this version reads {FORMAT!r}.")
    problems = []
    for rel, entry in files.items():
        file = directory / rel
        if not file.is_file():
            problems.append(f"`{rel}` is missing")
        elif file.stat().st_size != entry["size"]:
            problems.append(f"`{rel}` has {file.stat().st_size} bytes, expected {entry['size']} (truncated?)")
        elif _sha256(file) != entry["sha256"]:
            problems.append(f"`{rel}` is corrupted (its SHA-256 differs from the manifest)")
    if problems:
        raise ValueError(f"{fn}: the checkpoint at {directory} is damaged:{_listing(problems)}")


def _abstract(tree: Any, default_sharding: jax.sharding.Sharding) -> Any:
    """Restore targets: shape, dtype and sharding of each leaf (a template's sharding if it has one)."""

    def one(leaf):
        sharding = getattr(leaf, "sharding", None)
        if not isinstance(sharding, jax.sharding.Sharding):
            sharding = default_sharding
        return jax.ShapeDtypeStruct(np.shape(leaf), jnp.result_type(leaf), sharding=sharding)

    return jax.tree.map(one, tree)


def _nested_targets(specs: dict, sharding: jax.sharding.Sharding) -> dict:
    """Rebuilds the nested-dict params structure from `"a/b/c"` leaf names."""
    tree: dict = {}
    for name, (shape, dtype) in specs.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = jax.ShapeDtypeStruct(shape, jnp.dtype(dtype), sharding=sharding)
    return tree


# ----------------------------------------------------------------------------- API


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    params: Any,
    config: ActorConfig,
    opt_state: Any = None,
    normalizer_state: Any = None,
    step: int = 0,
    extra: Any = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Saves an actor atomically to `directory` (which must not exist unless `overwrite`).

    Args:
      directory: the checkpoint's path, e.g. `runs/actor/step_1000`; parents are created.
      params: the actor's variables (`Actor.from_config(config).init(...)`); their shapes
        are checked against `config`.
      config: the `ActorConfig`; static fields go to JSON, `scale`/`bias` to arrays.
      opt_state: optional optimizer state (any pytree of arrays, e.g. an optax state).
      normalizer_state: optional `ReturnNormalizerState` (any pytree of arrays).
      step: training step, stored as an int.
      extra: optional JSON-serializable metadata of yours (env id, seed, ...).
      overwrite: replace an existing checkpoint at `directory`.

    Returns:
      The absolute path of the checkpoint.

    Raises:
      FileExistsError: `directory` exists and `overwrite` is False.
      TypeError: `config` is not an `ActorConfig`, `params` not a nested dict of arrays,
        or `extra` not JSON-serializable.
      ValueError: `params` do not fit `config` (listing the differing leaves).
    """
    import orbax.checkpoint as ocp  # imported lazily: `import dreamer_actor` stays light

    fn = "save_checkpoint"
    if not isinstance(config, ActorConfig):
        raise TypeError(f"{fn}: `config` must be an ActorConfig, got {type(config).__name__}.")
    config.validate()
    _params_paths(params, fn)
    param_specs = _leaf_specs(params)
    _check_params_match_config(param_specs, config, fn, "`params`")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"{fn}: `step` must be an int, got {step!r}.")
    metadata = {
        "format": FORMAT,
        "step": int(step),
        "config": _config_static(config),
        "specs": {
            "params": _specs_to_json(param_specs),
            "config_arrays": _specs_to_json(_leaf_specs({"scale": config.scale, "bias": config.bias})),
            "opt_state": None if opt_state is None else _specs_to_json(_leaf_specs(opt_state)),
            "normalizer_state": None if normalizer_state is None else _specs_to_json(_leaf_specs(normalizer_state)),
        },
        "extra": extra,
    }
    try:
        json.dumps(metadata)
    except TypeError as error:
        raise TypeError(f"{fn}: `extra` must be JSON-serializable ({error}).") from error

    path = pathlib.Path(directory).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{fn}: {path} already exists (pass overwrite=True to replace it).")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    items = {
        "params": ocp.args.StandardSave(params),
        "config_arrays": ocp.args.StandardSave({"scale": config.scale, "bias": config.bias}),
        "metadata": ocp.args.JsonSave(metadata),
    }
    if opt_state is not None:
        items["opt_state"] = ocp.args.StandardSave(opt_state)
    if normalizer_state is not None:
        items["normalizer_state"] = ocp.args.StandardSave(normalizer_state)
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            checkpointer.save(tmp, args=ocp.args.Composite(**items))
        _write_manifest(tmp)
        _commit(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _commit(tmp: pathlib.Path, path: pathlib.Path) -> None:
    """Moves the finished `tmp` to `path` (keeping any old checkpoint whole until the new one is in place)."""
    if not path.exists():
        os.rename(tmp, path)
        return
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def restore_checkpoint(
    directory: str | os.PathLike,
    *,
    config: ActorConfig | None = None,
    params_like: Any = None,
    opt_state_like: Any = None,
    normalizer_state_like: Any = None,
    verify: bool = True,
) -> Checkpoint:
    """Restores a checkpoint written by `save_checkpoint`, after checking it.

    Optimizer and normalizer states are restored only when you pass a template of their
    structure (`optimizer.init(params)`, `normalizer.init()`): optax states are tuples of
    NamedTuples that arrays alone cannot rebuild. Arrays are restored with the sharding of
    the corresponding template leaf (e.g. replicated over a mesh), else onto the default
    device.

    Args:
      directory: the checkpoint's path.
      config: the `ActorConfig` you expect; its static fields (`action_dim`, `layers`,
        `units`, `distribution`, ...) and `scale`/`bias` must equal the stored ones.
        None: accept the stored config.
      params_like: expected params (arrays or `jax.ShapeDtypeStruct`s): leaf names,
        shapes and dtypes must match; their shardings are used.
      opt_state_like: template of the optimizer state, e.g. `optimizer.init(params)`.
      normalizer_state_like: template of the normalizer state, e.g. `normalizer.init()`.
      verify: check every file's size and SHA-256 against the manifest first (reads the
        whole checkpoint once more).

    Returns:
      A `Checkpoint(params, config, opt_state, normalizer_state, step, extra)`.

    Raises:
      FileNotFoundError: `directory` does not exist (naming the path).
      ValueError: the checkpoint is incomplete or damaged (naming the file), or it does
        not match `config` / the templates (listing every difference), or a template is
        given for a state that was not saved.
    """
    import orbax.checkpoint as ocp

    fn = "restore_checkpoint"
    path = pathlib.Path(directory).absolute()
    if not path.exists():
        leftovers = sorted(p.name for p in path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
        hint = (
            f" A previous checkpoint survives as {leftovers} next to it (an interrupted overwrite)."
            if leftovers
            else ""
        )
        raise FileNotFoundError(f"{fn}: no checkpoint at {path}.{hint}")
    if not path.is_dir():
        raise ValueError(f"{fn}: {path} is a file, not a checkpoint directory.")
    if config is not None and not isinstance(config, ActorConfig):
        raise TypeError(f"{fn}: `config` must be an ActorConfig or None, got {type(config).__name__}.")
    if verify:
        _verify_files(path, fn)

    def read(**args):
        try:
            with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
                return checkpointer.restore(path, args=ocp.args.Composite(**args))
        except Exception as error:  # orbax/tensorstore errors are long: summarize, keep the cause
            first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            raise ValueError(
                f"{fn}: could not read the checkpoint at {path} ({type(error).__name__}: {first_line})."
            ) from error

    metadata = read(metadata=ocp.args.JsonRestore()).metadata
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{fn}: {path} is not a dreamer_actor checkpoint of format {FORMAT!r}.")
    stored_static = metadata["config"]
    specs = {k: None if v is None else _specs_from_json(v) for k, v in metadata["specs"].items()}

    # Compare everything before reading any array.
    try:  # placeholder bounds: only the static fields matter until the arrays are read
        stored_config = _config_from_static(
            stored_static,
            jnp.ones(specs["config_arrays"]["scale"][0], jnp.float32),
            jnp.zeros(specs["config_arrays"]["bias"][0], jnp.float32),
            path,
        )
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{fn}: the config stored at {path} is invalid: {error}") from error
    _check_params_match_config(specs["params"], stored_config, fn, f"the params stored at {path}")
    problems = []
    if config is not None:
        config.validate()
        expected_static = _config_static(config)
        for name in sorted(set(expected_static) | set(stored_static)):
            if stored_static.get(name) != expected_static.get(name):
                problems.append(
                    f"config `{name}`: stored {stored_static.get(name)!r}, expected {expected_static.get(name)!r}"
                )
    if params_like is not None:
        _params_paths(params_like, fn)
        problems += _diff_specs(specs["params"], _leaf_specs(params_like), "param")
    for item, like in (("opt_state", opt_state_like), ("normalizer_state", normalizer_state_like)):
        if like is None:
            continue
        if specs[item] is None:
            problems.append(f"`{item}_like` was given but the checkpoint has no {item}")
        else:
            problems += _diff_specs(specs[item], _leaf_specs(like), item)
    if problems:
        raise ValueError(f"{fn}: the checkpoint at {path} does not match what was expected:{_listing(problems)}")

    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    targets = {
        "params": _nested_targets(specs["params"], default) if params_like is None else _abstract(params_like, default),
        "config_arrays": _nested_targets(specs["config_arrays"], default),
    }
    if opt_state_like is not None:
        targets["opt_state"] = _abstract(opt_state_like, default)
    if normalizer_state_like is not None:
        targets["normalizer_state"] = _abstract(normalizer_state_like, default)
    restored = read(**{name: ocp.args.StandardRestore(target) for name, target in targets.items()})

    stored_config = stored_config.replace(
        scale=restored["config_arrays"]["scale"], bias=restored["config_arrays"]["bias"]
    )
    if config is not None:
        for name in ("scale", "bias"):
            stored, expected = np.asarray(getattr(stored_config, name)), np.asarray(getattr(config, name))
            if not np.array_equal(stored, expected):
                problems.append(f"config `{name}`: stored {stored.tolist()}, expected {expected.tolist()}")
        if problems:
            raise ValueError(f"{fn}: the checkpoint at {path} does not match what was expected:{_listing(problems)}")
    return Checkpoint(
        params=restored["params"],
        config=stored_config,
        opt_state=restored["opt_state"] if opt_state_like is not None else None,
        normalizer_state=restored["normalizer_state"] if normalizer_state_like is not None else None,
        step=int(metadata["step"]),
        extra=metadata.get("extra"),
    )
