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
`_rename_noreplace` for the fallback): of two concurrent saves to the same new path, one
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
(`_save_multiprocess`). All processes must see the same filesystem. Any single process can
restore the result.

**Checked.** `restore_checkpoint` verifies every file against the manifest (a deleted,
truncated or corrupted file is an error naming it) and compares the stored config (all
static fields and the bounds) and array shapes with what you expect (`config`,
`params_like`, `opt_state_like`, `normalizer_state_like`) before reading any array, so a
mismatch is a `ValueError` listing every difference, not a tensorstore error.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import os
import pathlib
import shutil
import sys
import time
import uuid
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dreamer_actor._src.config import ActorConfig
from dreamer_actor._src.networks import Actor

FORMAT = "dreamer_actor.checkpoint/2"
_FORMAT_PREFIX = "dreamer_actor.checkpoint/"
MANIFEST = "dreamer_actor_manifest.json"
_STATES = ("opt_state", "normalizer_state")
_STAGED = "checkpoint"  # the checkpoint's name inside its staging folder
_MAX_LISTED = 8


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


# ----------------------------------------------------------------------------- array specs


def _leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """`{"path/to/leaf": (shape, dtype)}` for every leaf of a pytree (None and empty nodes have none)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    specs = {}
    for key_path, leaf in leaves:
        name = jax.tree_util.keystr(key_path, simple=True, separator="/")
        specs[name] = (tuple(int(d) for d in np.shape(leaf)), str(jnp.result_type(leaf)))
    return specs


def _specs_to_json(specs: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, Any]:
    """`_leaf_specs` as JSON: `{"name": {"shape": [...], "dtype": "float32"}}`."""
    return {name: {"shape": list(shape), "dtype": dtype} for name, (shape, dtype) in specs.items()}


def _specs_from_json(entries: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Inverse of `_specs_to_json`."""
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
    """`float32[3, 4]` for a (shape, dtype) spec."""
    return f"{spec[1]}{list(spec[0])}"


def _listing(problems: list[str]) -> str:
    """Problems as indented lines, at most `_MAX_LISTED` of them, then a count of the rest."""
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    return "\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")


def _first_line(error: BaseException) -> str:
    """`Type: first line of the message` (orbax/tensorstore messages are long)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"


# ----------------------------------------------------------------------------- params vs config


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
    """ValueError listing every param leaf of `specs` that `Actor.from_config(config)` would not have."""
    problems = _diff_specs(specs, _expected_param_specs(config, specs), "param")
    if problems:
        raise ValueError(
            f"{fn}: {where} do not fit the config (action_dim={config.action_dim}, "
            f"distribution={config.distribution!r}, layers={config.layers}, units={config.units}, "
            f"norm={config.norm!r}):{_listing(problems)}"
        )


# ----------------------------------------------------------------------------- manifest and format


def _sha256(path: pathlib.Path) -> str:
    """Hex SHA-256 of a file's bytes."""
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


def _check_format(fmt: Any, path: pathlib.Path, fn: str) -> None:
    """ValueError unless `fmt` (from the manifest or the metadata) is `FORMAT`, naming the stored format."""
    if fmt == FORMAT:
        return
    if isinstance(fmt, str) and fmt.startswith(_FORMAT_PREFIX):
        raise ValueError(
            f"{fn}: {path} has format {fmt!r}; this version reads only {FORMAT!r}. Restore it with the "
            "dreamer_actor version that wrote it and save it again with this one."
        )
    raise ValueError(f"{fn}: {path} is not a dreamer_actor checkpoint (format {fmt!r}, expected {FORMAT!r}).")


def _read_manifest(directory: pathlib.Path, fn: str) -> dict[str, Any]:
    """The parsed manifest of `directory`: ValueError if it is missing or corrupted."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(
            f"{fn}: {directory} is not a complete dreamer_actor checkpoint: `{MANIFEST}` is missing "
            "(an interrupted save, or not written by `save_checkpoint`)."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest["files"], dict) or "format" not in manifest:
            raise TypeError("expected a mapping with `format` and a mapping `files`")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{fn}: the manifest {manifest_path} is corrupted ({error}).") from error
    return manifest


def _verify_files(directory: pathlib.Path, fn: str) -> None:
    """Checks the format and every file's size and SHA-256 against the manifest, listing every problem."""
    manifest = _read_manifest(directory, fn)
    _check_format(manifest["format"], directory, fn)
    problems = []
    for rel, entry in manifest["files"].items():
        file = directory / rel
        if not file.is_file():
            problems.append(f"`{rel}` is missing")
        elif file.stat().st_size != entry["size"]:
            problems.append(f"`{rel}` has {file.stat().st_size} bytes, expected {entry['size']} (truncated?)")
        elif _sha256(file) != entry["sha256"]:
            problems.append(f"`{rel}` is corrupted (its SHA-256 differs from the manifest)")
    if problems:
        raise ValueError(f"{fn}: the checkpoint at {directory} is damaged:{_listing(problems)}")


def _not_a_checkpoint(path: pathlib.Path) -> str | None:
    """Why `path` may not be replaced by `overwrite=True`, or None for a checkpoint `save_checkpoint` wrote.

    A replaceable checkpoint is a real directory (not a symbolic link) holding a manifest of
    any `dreamer_actor.checkpoint/*` format and nothing the manifest does not list, so that
    replacing it deletes no file of the user's.
    """
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.is_dir():
        return "it is not a directory"
    try:
        manifest = _read_manifest(path, "save_checkpoint")
    except ValueError:
        return f"it holds no valid `{MANIFEST}`, so it was not written by save_checkpoint"
    if not (isinstance(manifest["format"], str) and manifest["format"].startswith(_FORMAT_PREFIX)):
        return f"its `{MANIFEST}` has the unknown format {manifest['format']!r}"
    listed = set(manifest["files"]) | {MANIFEST}
    listed_dirs = {parent.as_posix() for rel in listed for parent in pathlib.PurePosixPath(rel).parents}
    unlisted = []
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = pathlib.Path(root) / name
            rel = full.relative_to(path).as_posix()
            is_dir = name in dirs and not full.is_symlink()
            if (rel not in listed_dirs) if is_dir else (rel not in listed or full.is_symlink()):
                unlisted.append(rel)
    if unlisted:
        return f"it holds entries its manifest does not list (yours?): {sorted(unlisted)[:_MAX_LISTED]}"
    return None


# ----------------------------------------------------------------------------- saving


def _refuse_protected(directory: str | os.PathLike, path: pathlib.Path, fn: str) -> None:
    """ValueError for targets never to be written or replaced: `""`, the cwd, its ancestors, the home dir."""
    if os.fspath(directory) == "":
        raise ValueError(
            f"{fn}: `directory` is an empty path (the current directory, {path}); expected the checkpoint's own "
            "folder. Nothing was changed."
        )
    resolved = path.resolve()
    cwd = pathlib.Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ValueError(
            f"{fn}: `directory` {path} is the current directory or one of its ancestors; expected a folder of "
            "its own for the checkpoint (e.g. runs/actor/step_1000). Nothing was changed."
        )
    if resolved == pathlib.Path.home().resolve():
        raise ValueError(f"{fn}: `directory` {path} is the home directory; expected a folder of its own.")


def _check_target(directory: str | os.PathLike, path: pathlib.Path, overwrite: bool, fn: str) -> None:
    """Refuses a target that exists (unless `overwrite` and it is a checkpoint), before anything is written."""
    _refuse_protected(directory, path, fn)
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise FileExistsError(f"{fn}: {path} already exists (pass overwrite=True to replace a checkpoint).")
    why = _not_a_checkpoint(path)
    if why is not None:
        raise FileExistsError(
            f"{fn}: refusing to overwrite {path}: {why}. overwrite=True replaces only a checkpoint written by "
            "save_checkpoint; nothing was changed."
        )


def _metadata(
    config: ActorConfig, param_specs: dict, step: int, opt_state: Any, normalizer_state: Any, extra: Any
) -> dict[str, Any]:
    """The JSON `metadata` item: format, config, step, array specs and the user's `extra`."""
    fn = "save_checkpoint"
    config_dict = config.to_dict()
    try:
        json.dumps(config_dict)
    except TypeError as error:
        raise TypeError(f"{fn}: `config.to_dict()` is not JSON-serializable ({error}).") from error
    metadata = {
        "format": FORMAT,
        "step": int(step),
        "config": config_dict,
        "specs": {
            "params": _specs_to_json(param_specs),
            **{
                name: None if s is None else _specs_to_json(_leaf_specs(s))
                for name, s in zip(_STATES, (opt_state, normalizer_state), strict=True)
            },
        },
        "extra": extra,
    }
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{fn}: `extra` must be JSON-serializable ({error}).") from error
    return metadata


def _storage_error(path: pathlib.Path, what: str, error: BaseException) -> OSError:
    """An OSError naming the checkpoint's path and the cause (its errno kept when it has one)."""
    message = f"save_checkpoint: could not {what} {path} ({_first_line(error)})."
    code = getattr(error, "errno", None)
    return OSError(code, message) if isinstance(code, int) else OSError(message)


def _remove_tree(path: pathlib.Path, attempts: int = 6) -> None:
    """Removes our own temporary folder, retrying while a failed save's background writer still adds files.

    After a storage error orbax's asynchronous tensorstore writes can still create files for
    a moment, so a single `rmtree` can meet a folder that is not empty yet (seen under load).
    """
    for attempt in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        time.sleep(0.05 * 2**attempt)


def _write_items(staged: pathlib.Path, items: dict[str, Any], path: pathlib.Path) -> None:
    """Writes the orbax items to `staged` (several processes: each its own shards); errors name `path`."""
    import orbax.checkpoint as ocp

    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            checkpointer.save(staged, args=ocp.args.Composite(**items))
    except Exception as error:  # orbax/tensorstore raise ValueError, OSError, RuntimeError, ...
        raise _storage_error(path, "write the checkpoint", error) from error


def _write_final_manifest(staged: pathlib.Path, path: pathlib.Path) -> None:
    """Writes the manifest of the finished `staged` checkpoint; storage errors name `path`."""
    try:
        _write_manifest(staged)
    except OSError as error:
        raise _storage_error(path, "write the manifest of", error) from error


def _write_staged(staged: pathlib.Path, items: dict[str, Any], path: pathlib.Path) -> None:
    """Writes the orbax items, then the manifest, to `staged`; storage errors name `path`."""
    _write_items(staged, items, path)
    _write_final_manifest(staged, path)


# Linux renameat2(2); glibc >= 2.28 exports it.
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", -1), getattr(errno, "EOPNOTSUPP", -1)}


@functools.cache
def _renameat2():
    """libc's `renameat2`, or None where it is not available (not Linux, old glibc, musl without it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _rename_noreplace(src: pathlib.Path, dst: pathlib.Path) -> None:
    """Renames the directory `src` to `dst`; FileExistsError if `dst` exists, never replacing it.

    On Linux: `renameat2(RENAME_NOREPLACE)`, atomic. Where that is unavailable (other
    systems, or a filesystem without the flag): `os.rename` after a check that `dst` does
    not exist. Renaming a directory onto a file or a non-empty directory fails on POSIX
    (ENOTDIR / ENOTEMPTY) and onto anything on Windows, so the only thing a concurrent
    writer's race can lose there is an empty directory created between check and rename,
    never a checkpoint (which always holds its manifest).
    """
    renameat2 = _renameat2()
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(dst))
        if code not in _UNSUPPORTED:
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    try:
        os.rename(src, dst)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from error
        raise


def _commit(staged: pathlib.Path, path: pathlib.Path, overwrite: bool) -> None:
    """Moves the finished `staged` checkpoint to `path`, never replacing anything but a checkpoint.

    Without a checkpoint at `path`, one rename that fails if `path` appeared meanwhile.
    With `overwrite`, the old checkpoint is first renamed aside (and checked again there:
    a concurrent writer may have put something else at `path`), the new one moved in, and
    only then the old one deleted.
    """
    fn = "save_checkpoint"
    if not (overwrite and os.path.lexists(path)):
        try:
            _rename_noreplace(staged, path)
        except FileExistsError as error:
            raise FileExistsError(
                f"{fn}: {path} appeared while this checkpoint was written (a concurrent save?); it was left as it is."
            ) from error
        return
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
    _rename_noreplace(path, old)
    why = _not_a_checkpoint(old)
    if why is not None:
        try:
            _rename_noreplace(old, path)  # put it back
        except FileExistsError as error:
            raise FileExistsError(
                f"{fn}: refusing to overwrite {path}: {why} (it changed during the save); it is kept as it was at "
                f"{old}, since something new is at {path}."
            ) from error
        raise FileExistsError(f"{fn}: refusing to overwrite {path}: {why} (it changed during the save).")
    try:
        _rename_noreplace(staged, path)
    except FileExistsError as error:
        raise FileExistsError(
            f"{fn}: a concurrent save put a checkpoint at {path} while this one replaced it; the previous "
            f"checkpoint is kept whole at {old}."
        ) from error
    shutil.rmtree(old, ignore_errors=True)


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
        return _save_multiprocess(arguments, overwrite)
    path, items, _ = _prepare(*arguments)
    _check_target(directory, path, overwrite, fn)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    os.mkdir(stage)  # ours alone: everything temporary, orbax's tmp folder included, lies inside
    try:
        _write_staged(stage / _STAGED, items, path)
        _commit(stage / _STAGED, path, overwrite)
    except BaseException:
        _remove_tree(stage)
        raise
    os.rmdir(stage)
    return path


def _prepare(
    directory: str | os.PathLike,
    params: Any,
    config: ActorConfig,
    opt_state: Any,
    normalizer_state: Any,
    step: int,
    extra: Any,
) -> tuple[pathlib.Path, dict[str, Any], dict[str, Any]]:
    """Checks the arguments of `save_checkpoint`; returns the absolute path, the orbax items and the metadata."""
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
    metadata = _metadata(config, param_specs, step, opt_state, normalizer_state, extra)
    path = pathlib.Path(directory).absolute()
    items = {"params": ocp.args.StandardSave(params), "metadata": ocp.args.JsonSave(metadata)}
    for name, state in zip(_STATES, (opt_state, normalizer_state), strict=True):
        if state is not None:
            items[name] = ocp.args.StandardSave(state)
    return path, items, metadata


# ----------------------------------------------------------------------------- saving from several processes

# Errors another process can learn of through `_agree`: their index + 1 is sent, 0 means none.
_ERROR_TYPES: tuple[type[Exception], ...] = (FileExistsError, FileNotFoundError, ValueError, TypeError, OSError)
_TOKEN_BYTES = 12  # the staging folder's random suffix, chosen by process 0


def _error_code(error: BaseException | None) -> int:
    """0 for no error, else 1 + the index of the first `_ERROR_TYPES` entry it is an instance of (or one more)."""
    if error is None:
        return 0
    return next((i + 1 for i, cls in enumerate(_ERROR_TYPES) if isinstance(error, cls)), len(_ERROR_TYPES) + 1)


def _agree(error: Exception | None, what: str, *, digest: int = 0, token: bytes = b"") -> bytes:
    """One step of a multi-process save: every process calls it at the same point, and all fail if any did.

    A `process_allgather` (a collective over all devices, so also a barrier) collects from
    each process whether it failed, a `digest` of its arguments (which must agree) and
    process 0's `token`. A failed process re-raises its own error; the others raise an error
    of the same type (`RuntimeError` for other types) naming the failed processes. Returns
    process 0's `token`.
    """
    from jax.experimental import multihost_utils

    row = np.zeros(2 + _TOKEN_BYTES, np.uint32)
    row[0] = _error_code(error)
    row[1] = digest
    row[2 : 2 + len(token)] = np.frombuffer(token, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(row))  # [process_count, 2 + _TOKEN_BYTES]
    if error is not None:
        raise error
    failed = [int(i) for i in np.flatnonzero(rows[:, 0])]
    if failed:
        code = int(rows[failed[0], 0])
        cls = _ERROR_TYPES[code - 1] if code <= len(_ERROR_TYPES) else RuntimeError
        raise cls(
            f"save_checkpoint: process {', '.join(map(str, failed))} of {len(rows)} failed to {what} (see the error "
            "there); the checkpoint was not saved."
        )
    if len(set(rows[:, 1].tolist())) > 1:
        raise ValueError(
            "save_checkpoint: the processes of this multi-process run passed different arguments (directory, "
            f"config, array shapes, step or extra; digests {rows[:, 1].tolist()}); every process must save the same "
            "checkpoint. Nothing was written."
        )
    return bytes(rows[0, 2:].astype(np.uint8)).rstrip(b"\0")


def _save_multiprocess(arguments: tuple, overwrite: bool) -> pathlib.Path:
    """`save_checkpoint` called by every process of a multi-process run (`jax.process_count() > 1`).

    Every process checks the arguments and passes its shards to orbax's save, which
    writes each array once (every shard by the process that holds its first replica).
    Process 0 alone does the filesystem work that must happen once: checking the target,
    creating the staging folder, writing the manifest and the final no-replace rename
    (`_commit`, with the overwrite rules of the single-process save). The steps are
    separated by `_agree`, so an error on any process is raised on all of them (nothing is
    committed, process 0 removes the staging folder) instead of leaving the others waiting.
    Needs a filesystem shared by all processes.
    """
    fn = "save_checkpoint"
    directory = arguments[0]
    primary = jax.process_index() == 0
    stage: pathlib.Path | None = None
    error: Exception | None = None
    try:
        digest, token = 0, b""
        try:
            path, items, metadata = _prepare(*arguments)
            digest = zlib.crc32(json.dumps([str(path), overwrite, metadata], sort_keys=True).encode())
            if primary:
                _check_target(directory, path, overwrite, fn)
                path.parent.mkdir(parents=True, exist_ok=True)
                token = uuid.uuid4().hex[:_TOKEN_BYTES].encode()
                stage = path.parent / f".{path.name}.tmp-{token.decode()}"
                os.mkdir(stage)
        except Exception as caught:
            error = caught
        token = _agree(error, "check the arguments and the target", digest=digest, token=token)
        stage = path.parent / f".{path.name}.tmp-{token.decode()}"
        try:
            _write_items(stage / _STAGED, items, path)
        except Exception as caught:
            error = caught
        _agree(error, "write its part of the checkpoint")
        if primary:
            try:
                _write_final_manifest(stage / _STAGED, path)
                _commit(stage / _STAGED, path, overwrite)
                os.rmdir(stage)
            except Exception as caught:
                error = caught
        _agree(error, "commit the checkpoint")
    except BaseException:
        if primary and stage is not None:
            _remove_tree(stage)
        raise
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
        raise ValueError(f"{fn}: could not read the checkpoint at {path} ({_first_line(error)}).") from error


def _read_metadata(path: pathlib.Path, verify: bool, fn: str) -> dict[str, Any]:
    """Verifies the files (when `verify`) and returns the `metadata` item, checking its format."""
    import orbax.checkpoint as ocp

    if verify:
        _verify_files(path, fn)
    metadata = _read_items(path, fn, metadata=ocp.args.JsonRestore()).metadata
    _check_format(metadata.get("format") if isinstance(metadata, dict) else None, path, fn)
    return metadata


def _decode_metadata(metadata: dict[str, Any], path: pathlib.Path, fn: str) -> tuple[ActorConfig, dict]:
    """The stored config (validated, and fitting the stored params) and the array specs by item."""
    try:
        specs = {name: None if v is None else _specs_from_json(v) for name, v in metadata["specs"].items()}
        if specs.get("params") is None:
            raise KeyError("specs/params")
        stored_config = ActorConfig.from_dict(metadata["config"])
        stored_config.validate()
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise ValueError(f"{fn}: the config or array specs stored at {path} are invalid: {error}") from error
    _check_params_match_config(specs["params"], stored_config, fn, f"the params stored at {path}")
    return stored_config, specs


# ----------------------------------------------------------------------------- restoring: compare


def _config_differences(stored: ActorConfig, expected: ActorConfig) -> list[str]:
    """Every field of `to_dict()` (static fields, `low`, `high`) that differs."""
    stored_dict, expected_dict = stored.to_dict(), expected.to_dict()
    return [
        f"config `{name}`: stored {stored_dict.get(name)!r}, expected {expected_dict.get(name)!r}"
        for name in sorted(set(stored_dict) | set(expected_dict))
        if stored_dict.get(name) != expected_dict.get(name)
    ]


def _differences(stored_config: ActorConfig, specs: dict, config: Any, templates: dict[str, Any], fn: str) -> list[str]:
    """Every difference between the stored config/specs and the expected config and templates."""
    problems = []
    if config is not None:
        config.validate()
        problems += _config_differences(stored_config, config)
    if templates["params"] is not None:
        _params_paths(templates["params"], fn)
        problems += _diff_specs(specs["params"], _leaf_specs(templates["params"]), "param")
    for item in _STATES:
        if templates[item] is None:
            continue
        if specs.get(item) is None:
            problems.append(f"`{item}_like` was given but the checkpoint has no {item}")
        else:
            problems += _diff_specs(specs[item], _leaf_specs(templates[item]), item)
    return problems


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
    for item in _STATES:
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
    stored_config, specs = _decode_metadata(metadata, path, fn)
    templates = {"params": params_like, "opt_state": opt_state_like, "normalizer_state": normalizer_state_like}
    problems = _differences(stored_config, specs, config, templates, fn)
    if problems:
        raise ValueError(f"{fn}: the checkpoint at {path} does not match what was expected:{_listing(problems)}")
    arrays = _read_arrays(path, specs, templates, fn)
    return Checkpoint(
        params=arrays["params"],
        config=stored_config,
        opt_state=arrays.get("opt_state"),
        normalizer_state=arrays.get("normalizer_state"),
        step=int(metadata["step"]),
        extra=metadata.get("extra"),
    )
