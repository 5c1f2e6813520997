"""Checkpoints of an actor: params, config, optimizer and normalizer state, with orbax.

    path = save_checkpoint("runs/actor/step_1000", params=params, config=config,
                           opt_state=opt_state, normalizer_state=norm_state, step=1000)
    ckpt = restore_checkpoint(path, config=config, params_like=params,
                              opt_state_like=optimizer.init(params),
                              normalizer_state_like=normalizer.init())
    ckpt.params, ckpt.config, ckpt.opt_state, ckpt.normalizer_state, ckpt.step

No pickle anywhere: arrays go through `orbax.checkpoint` (`StandardSave`, tensorstore),
everything else through orbax's JSON handler. A checkpoint (format
`dreamer_actor.checkpoint/2`) is a directory of orbax items:

* `params`, and `opt_state` / `normalizer_state` when given: arrays, written with their
  sharding and restored onto any devices;
* `metadata` (JSON): the format, the whole config as `ActorConfig.to_dict()` writes it
  (static fields and the bounds `low`/`high`), the step, the shape and dtype of every saved
  array, and an optional user `extra`;
* `dreamer_actor_manifest.json`: the format and the size and SHA-256 of every file,
  written last.

Format `/1` (the config's bounds in a separate `config_arrays` item) is not read: restoring
one is a `ValueError` naming its format.

**Atomic.** Everything is written into a hidden staging folder `.<name>.tmp-<random>`
next to `directory` (orbax's own `*.orbax-checkpoint-tmp*` folder lies inside it). The
finished checkpoint is renamed to `directory` only once it is complete, manifest included,
with a rename that never replaces anything (`renameat2(RENAME_NOREPLACE)` on Linux; see
`checkpoint_commit._rename_noreplace` for the fallback): of two concurrent saves to the same new path, one
wins and the other raises `FileExistsError`. An interrupted save (exception, Ctrl-C) never
leaves a checkpoint at `directory` and removes its staging folder; after a hard kill the
staging folder is left behind (hidden, never read, safe to delete). Storage errors are
re-raised as `OSError` naming `directory` and the cause.

**Nothing of yours is replaced.** `overwrite=True` replaces only a directory that
`save_checkpoint` wrote: it holds `dreamer_actor_manifest.json` and no file or folder the
manifest does not list. Anything else (a plain file, a folder of your files, a symbolic
link) is refused with `FileExistsError` and left untouched; `""`, the current directory,
its ancestors and the home directory are refused with `ValueError` whatever `overwrite`.
The old checkpoint stays whole until the new one is in place: it is renamed to
`.<name>.old-<random>` (and checked again there), the new one is moved in, then the old
one deleted. If the process dies between the two renames, the old checkpoint is still
whole under that name (and `restore_checkpoint` of `directory` says so).

**Several processes.** In a multi-process run (`jax.distributed`, `jax.process_count() > 1`)
every process calls `save_checkpoint` with the same arguments and its globally sharded
arrays; orbax writes each array once, and process 0 alone checks the target, creates the
staging folder, writes the manifest and renames (same rules as above). The steps are
separated by collectives, so an error on any process is raised on all of them
(`checkpoint_multiprocess`). All processes must see the same filesystem. Any single process can
restore the result.

**Checked.** `restore_checkpoint` verifies every file against the manifest (a deleted,
truncated or corrupted file is an error naming it) and compares the stored config (all
static fields and the bounds) and array shapes with what you expect (`config`,
`params_like`, `opt_state_like`, `normalizer_state_like`) before reading any array, so a
mismatch is a `ValueError` listing every difference, not a tensorstore error.

**Why not orbax's `CheckpointManager`.** It keeps a series of numbered step folders under one root
that it owns (`root/0/`, `root/1/`, ...), decides which to keep and deletes the rest, and finalizes
each with its own temporary path (an atomic rename or a commit file). That is the layout of a
training run's step series, not of one checkpoint at a folder the user names: it does not refuse to
replace a folder it did not write, verify files against a manifest, or compare a stored config.
So this module uses orbax's `Checkpointer` for the items (arrays, JSON) and adds those rules. The
code is split by concern: `checkpoint_format.py` (specs, metadata, manifest, the checks),
`checkpoint_commit.py` (the target rules, staging and the no-replace rename) and
`checkpoint_multiprocess.py` (several processes).
"""

from __future__ import annotations

import os
import pathlib
import uuid
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dreamer_actor._src import checkpoint_commit as commit
from dreamer_actor._src import checkpoint_format as fmt
from dreamer_actor._src import checkpoint_multiprocess as multiprocess
from dreamer_actor._src.checkpoint_format import FORMAT as FORMAT
from dreamer_actor._src.checkpoint_format import MANIFEST as MANIFEST
from dreamer_actor._src.config import ActorConfig


class Checkpoint(NamedTuple):
    """What `restore_checkpoint` returns.

    Attributes:
      params: the actor's variables, a nested dict of arrays (as `Actor.init` returns).
      config: the stored `ActorConfig`, rebuilt by `ActorConfig.from_dict` (validated).
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
      directory: the checkpoint's own folder, e.g. `runs/actor/step_1000`; parents are created.
      params: the actor's variables (`Actor.from_config(config).init(...)`); their shapes
        are checked against `config`.
      config: the `ActorConfig`, stored as JSON (`config.to_dict()`).
      opt_state: optional optimizer state (any pytree of arrays, e.g. an optax state).
      normalizer_state: optional `ReturnNormalizerState` (any pytree of arrays).
      step: training step, stored as an int.
      extra: optional JSON-serializable metadata of yours (env id, seed, ...).
      overwrite: replace an existing checkpoint at `directory`. Only a directory written by
        `save_checkpoint` (its manifest, and nothing the manifest does not list) is replaced.

    In a multi-process run every process must call it, with the same arguments (see the
    module docstring); an error on one process is raised on all, and it returns once the
    checkpoint is in place.

    Returns:
      The absolute path of the checkpoint.

    Raises:
      FileExistsError: `directory` exists and `overwrite` is False, or it is not a
        checkpoint (a file, a folder of yours, a symbolic link), or a concurrent save
        created it first. Nothing at `directory` is changed.
      ValueError: `directory` is `""`, the current directory or an ancestor of it, or the
        home directory; or `params` do not fit `config` (listing the differing leaves).
      TypeError: `config` is not an `ActorConfig`, `params` not a nested dict of arrays,
        or `extra` not JSON-serializable.
      OSError: writing failed (disk full, permissions, ...), naming `directory` and the
        cause; the staging folder is removed.
    """
    fn = "save_checkpoint"
    arguments = (directory, params, config, opt_state, normalizer_state, step, extra)
    if jax.process_count() > 1:
        return multiprocess._save_multiprocess(arguments, overwrite)
    path, items, _ = fmt._prepare(*arguments)
    commit._check_target(directory, path, overwrite, fn)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    os.mkdir(stage)  # ours alone: everything temporary, orbax's tmp folder included, lies inside
    try:
        commit._write_staged(stage / commit._STAGED, items, path)
        commit._commit(stage / commit._STAGED, path, overwrite)
    except BaseException:
        commit._remove_tree(stage)
        raise
    os.rmdir(stage)
    return path


# ----------------------------------------------------------------------------- restoring: read


def _existing_directory(directory: str | os.PathLike, fn: str) -> pathlib.Path:
    """The absolute path of an existing directory; FileNotFoundError (with a hint at leftovers) or ValueError."""
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
    return path


def _read_items(path: pathlib.Path, fn: str, **args: Any) -> Any:
    """Reads orbax items from `path`; orbax/tensorstore errors become a short ValueError naming `path`."""
    import orbax.checkpoint as ocp

    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            return checkpointer.restore(path, args=ocp.args.Composite(**args))
    except Exception as error:  # orbax/tensorstore errors are long: summarize, keep the cause
        raise ValueError(f"{fn}: could not read the checkpoint at {path} ({fmt._first_line(error)}).") from error


def _read_metadata(path: pathlib.Path, verify: bool, fn: str) -> dict[str, Any]:
    """Verifies the files (when `verify`) and returns the `metadata` item, checking its format."""
    import orbax.checkpoint as ocp

    if verify:
        fmt._verify_files(path, fn)
    metadata = _read_items(path, fn, metadata=ocp.args.JsonRestore()).metadata
    fmt._check_format(metadata.get("format") if isinstance(metadata, dict) else None, path, fn)
    return metadata


# ----------------------------------------------------------------------------- restoring: arrays


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


def _targets(specs: dict, templates: dict[str, Any]) -> dict[str, Any]:
    """Abstract restore targets: params (from the template, else the stored specs) and the templated states."""
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = templates["params"]
    targets = {"params": _nested_targets(specs["params"], default) if params is None else _abstract(params, default)}
    for item in fmt._STATES:
        if templates[item] is not None:
            targets[item] = _abstract(templates[item], default)
    return targets


def _read_arrays(path: pathlib.Path, specs: dict, templates: dict[str, Any], fn: str) -> dict[str, Any]:
    """Reads params and the templated states onto their target shardings."""
    import orbax.checkpoint as ocp

    targets = _targets(specs, templates)
    restored = _read_items(path, fn, **{name: ocp.args.StandardRestore(t) for name, t in targets.items()})
    return {name: restored[name] for name in targets}


# ----------------------------------------------------------------------------- restoring: API


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
      config: the `ActorConfig` you expect; its `to_dict()` (static fields `action_dim`,
        `layers`, `units`, `distribution`, ... and the bounds `low`/`high`) must equal the
        stored one's. None: accept the stored config.
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
      ValueError: the checkpoint is incomplete or damaged (naming the file), of another
        format (naming it), or it does not match `config` / the templates (listing every
        difference, before any array is read), or a template is given for a state that
        was not saved.
    """
    fn = "restore_checkpoint"
    path = _existing_directory(directory, fn)
    if config is not None and not isinstance(config, ActorConfig):
        raise TypeError(f"{fn}: `config` must be an ActorConfig or None, got {type(config).__name__}.")
    metadata = _read_metadata(path, verify, fn)
    stored_config, specs = fmt._decode_metadata(metadata, path, fn)
    templates = {"params": params_like, "opt_state": opt_state_like, "normalizer_state": normalizer_state_like}
    problems = fmt._differences(stored_config, specs, config, templates, fn)
    if problems:
        raise ValueError(f"{fn}: the checkpoint at {path} does not match what was expected:{fmt._listing(problems)}")
    arrays = _read_arrays(path, specs, templates, fn)
    return Checkpoint(
        params=arrays["params"],
        config=stored_config,
        opt_state=arrays.get("opt_state"),
        normalizer_state=arrays.get("normalizer_state"),
        step=int(metadata["step"]),
        extra=metadata.get("extra"),
    )
