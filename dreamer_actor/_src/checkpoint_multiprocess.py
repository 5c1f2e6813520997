"""`save_checkpoint` in a multi-process run (`checkpoint.py`'s "Several processes"): every step separated by a
collective, so an error on one process is raised on all of them."""

from __future__ import annotations

import json
import os
import pathlib
import uuid
import zlib

import jax
import numpy as np

from dreamer_actor._src import checkpoint_commit as commit
from dreamer_actor._src import checkpoint_format as fmt

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
            path, items, metadata = fmt._prepare(*arguments)
            digest = zlib.crc32(json.dumps([str(path), overwrite, metadata], sort_keys=True).encode())
            if primary:
                commit._check_target(directory, path, overwrite, fn)
                path.parent.mkdir(parents=True, exist_ok=True)
                token = uuid.uuid4().hex[:_TOKEN_BYTES].encode()
                stage = path.parent / f".{path.name}.tmp-{token.decode()}"
                os.mkdir(stage)
        except Exception as caught:
            error = caught
        token = _agree(error, "check the arguments and the target", digest=digest, token=token)
        stage = path.parent / f".{path.name}.tmp-{token.decode()}"
        try:
            commit._write_items(stage / commit._STAGED, items, path)
        except Exception as caught:
            error = caught
        _agree(error, "write its part of the checkpoint")
        if primary:
            try:
                commit._write_final_manifest(stage / commit._STAGED, path)
                commit._commit(stage / commit._STAGED, path, overwrite)
                os.rmdir(stage)
            except Exception as caught:
                error = caught
        _agree(error, "commit the checkpoint")
    except BaseException:
        if primary and stage is not None:
            commit._remove_tree(stage)
        raise
    return path
