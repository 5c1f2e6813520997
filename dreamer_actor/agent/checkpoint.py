"""The whole run on disk: a verified, atomically replaced checkpoint `DIR/resume/`, and the claim on `DIR`.

`DIR/resume/` holds (format `dreamer_actor.agent_run/1`):

* `arrays.msgpack`: every array of the run (flax msgpack): the agent's state (networks, optimizer
  states, return normalizer, PRNG key data), every replay stream, the loop's latents, previous
  actions and observations, and the log of env actions (`envs.Envs.fast_forward` rebuilds the envs);
* `state.json`: counters, NumPy generator states, the curve so far and the run's config;
* `manifest.json`: size and SHA-256 of both, written last.

**Atomic.** A checkpoint is written into a hidden `DIR/.resume.tmp-<random>` folder, fsynced,
and renamed into place; the previous one is first renamed to `.resume.old-<random>` and deleted
only once the new one is in place. A kill at any moment leaves either a whole `resume/` or, between
the two renames, a whole `.resume.old-*` that `restore` falls back to.

**Checked.** `restore` verifies both files against the manifest and every array's path, shape and
dtype against the run being resumed: a truncated, corrupted or foreign checkpoint is a `ValueError`
naming the file and what differs.

**Claimed.** `claim(DIR)` takes an exclusive `flock` on `DIR/run.lock` for the life of the run, so
a second run on the same folder fails at its start instead of overwriting the first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import uuid
from typing import Any

import flax.serialization
import jax
import numpy as np

FORMAT = "dreamer_actor.agent_run/1"
CHECKPOINT_DIR = "resume"
ARRAYS_FILE = "arrays.msgpack"
STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = "run.lock"
FN = "dreamer_actor.agent"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_synced(path: pathlib.Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    flat = flax.traverse_util.flatten_dict(tree, sep="/") if isinstance(tree, dict) else {}
    return {key: (tuple(np.shape(value)), str(np.asarray(value).dtype)) for key, value in flat.items()}


def save(out: pathlib.Path, arrays: dict[str, Any], state: dict[str, Any]) -> None:
    """Writes `arrays` (a nested dict of arrays) and `state` (JSON) as `out/resume/`, atomically."""
    arrays = jax.tree.map(np.asarray, arrays)
    blob = flax.serialization.msgpack_serialize(arrays)
    text = json.dumps({"format": FORMAT, **state}).encode()
    staged = out / f".{CHECKPOINT_DIR}.tmp-{uuid.uuid4().hex[:12]}"
    staged.mkdir()
    try:
        _write_synced(staged / ARRAYS_FILE, blob)
        _write_synced(staged / STATE_FILE, text)
        manifest = {
            "format": FORMAT,
            "files": {
                ARRAYS_FILE: {"size": len(blob), "sha256": _sha256(blob)},
                STATE_FILE: {"size": len(text), "sha256": _sha256(text)},
            },
        }
        _write_synced(staged / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
        target = out / CHECKPOINT_DIR
        old = None
        if target.exists():
            old = out / f".{CHECKPOINT_DIR}.old-{uuid.uuid4().hex[:12]}"
            os.rename(target, old)
        os.rename(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _location(out: pathlib.Path) -> pathlib.Path | None:
    """`out/resume`, or a whole previous checkpoint left between the two renames of a save; None if none."""
    target = out / CHECKPOINT_DIR
    if target.is_dir():
        return target
    olds = sorted(out.glob(f".{CHECKPOINT_DIR}.old-*"), key=lambda p: p.stat().st_mtime)
    return olds[-1] if olds else None


def exists(out: pathlib.Path) -> bool:
    return _location(out) is not None


def _verified(out: pathlib.Path) -> tuple[pathlib.Path, dict[str, bytes]]:
    where = _location(out)
    if where is None:
        raise FileNotFoundError(f"{FN}: {out} holds no run checkpoint ({CHECKPOINT_DIR}/).")
    try:
        manifest = json.loads((where / MANIFEST_FILE).read_text())
        files = manifest["files"]
        fmt = manifest["format"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{FN}: the checkpoint {where} has no readable {MANIFEST_FILE} ({error}).") from error
    if fmt != FORMAT:
        raise ValueError(f"{FN}: {where} has format {fmt!r}; this version reads only {FORMAT!r}.")
    data, problems = {}, []
    for name in (ARRAYS_FILE, STATE_FILE):
        path = where / name
        if name not in files or not path.is_file():
            problems.append(f"`{name}` is missing")
            continue
        data[name] = path.read_bytes()
        if len(data[name]) != files[name]["size"]:
            problems.append(f"`{name}` has {len(data[name])} bytes, expected {files[name]['size']} (truncated?)")
        elif _sha256(data[name]) != files[name]["sha256"]:
            problems.append(f"`{name}` is corrupted (its SHA-256 differs from the manifest)")
    if problems:
        raise ValueError(f"{FN}: the checkpoint at {where} is damaged: " + "; ".join(problems) + ".")
    return where, data


def read_state(out: pathlib.Path) -> dict[str, Any]:
    """The verified JSON state of `out`'s checkpoint (counters, curve, `run` config)."""
    _, data = _verified(out)
    return json.loads(data[STATE_FILE])


def restore(out: pathlib.Path, like: dict[str, Any], *, subset: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(arrays, state)` of `out`'s checkpoint; `arrays` must match `like`'s paths, shapes and dtypes.

    With `subset`, only `like`'s top-level entries are read and checked (the others are dropped).
    """
    where, data = _verified(out)
    try:
        arrays = flax.serialization.msgpack_restore(data[ARRAYS_FILE])
    except Exception as error:  # msgpack raises its own exception types
        raise ValueError(f"{FN}: {where / ARRAYS_FILE} could not be read ({error}).") from error
    if subset and isinstance(arrays, dict):
        arrays = {key: value for key, value in arrays.items() if key in like}
    stored, expected = _leaf_specs(arrays), _leaf_specs(jax.tree.map(np.asarray, like))
    problems = [f"`{k}` is missing" for k in expected if k not in stored]
    problems += [f"`{k}` is not expected" for k in stored if k not in expected]
    problems += [
        f"`{k}` is {stored[k]}, expected {expected[k]}" for k in expected if k in stored and stored[k] != expected[k]
    ]
    if problems:
        raise ValueError(
            f"{FN}: the checkpoint at {where} is not one of this run (another config?): " + "; ".join(problems[:8])
        )
    return arrays, json.loads(data[STATE_FILE])


def holder(out: pathlib.Path) -> str | None:
    """Who holds `out`'s claim now (`"pid N"`), or None when no running run does."""
    path = out / LOCK_FILE
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


class Claim:
    """An exclusive `flock` on `out/run.lock`, held until `release()` (or the process ends)."""

    def __init__(self, out: pathlib.Path):
        self.path = out / LOCK_FILE
        try:
            self.file = open(self.path, "a+")  # held for the run's life
        except OSError as error:
            raise OSError(f"{FN}: cannot write to the run folder {out} ({error.strerror}).") from error
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise FileExistsError(
                f"{FN}: the run folder {out} is in use by another run ({holder}); pass another --out."
            ) from error
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
