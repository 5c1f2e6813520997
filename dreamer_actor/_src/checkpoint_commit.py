"""Writing a checkpoint without replacing anything of the user's (`checkpoint.py`'s "Atomic" and "Nothing of yours
is replaced"): the target rules, the staging folder, the no-replace rename and the overwrite commit."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import pathlib
import shutil
import sys
import time
import uuid
from typing import Any

from dreamer_actor._src import checkpoint_format as fmt

_STAGED = "checkpoint"  # the checkpoint's name inside its staging folder


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
    why = fmt._not_a_checkpoint(path)
    if why is not None:
        raise FileExistsError(
            f"{fn}: refusing to overwrite {path}: {why}. overwrite=True replaces only a checkpoint written by "
            "save_checkpoint; nothing was changed."
        )


def _storage_error(path: pathlib.Path, what: str, error: BaseException) -> OSError:
    """An OSError naming the checkpoint's path and the cause (its errno kept when it has one)."""
    message = f"save_checkpoint: could not {what} {path} ({fmt._first_line(error)})."
    code = getattr(error, "errno", None)
    return OSError(code, message) if isinstance(code, int) else OSError(message)


def _remove_tree(path: pathlib.Path, *, quiet: float = 0.5, timeout: float = 15.0) -> None:
    """Removes our own temporary folder, and again until it has stayed gone for `quiet` seconds.

    After a storage error orbax's asynchronous tensorstore writes can still create files, and
    the folders above them, for a moment: a single `rmtree` can meet a folder that is not empty
    yet, or see it come back (both seen under load, the second with 1.5 s of retries). After
    `timeout` seconds the hidden folder is left, as after a hard kill.
    """
    deadline = time.monotonic() + timeout
    while True:
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.05 if os.path.lexists(path) else quiet)
        if not os.path.lexists(path) or time.monotonic() > deadline:
            return


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
        fmt._write_manifest(staged)
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
    why = fmt._not_a_checkpoint(old)
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
