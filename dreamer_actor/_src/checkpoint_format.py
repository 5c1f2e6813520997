"""The checkpoint format (`checkpoint.py`): array specs, the `metadata` item, the manifest (every file's size and
SHA-256) and the checks that read them back, with the messages that list every difference."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dreamer_actor._src.config import ActorConfig
from dreamer_actor._src.networks import Actor

FORMAT = "dreamer_actor.checkpoint/2"
_FORMAT_PREFIX = "dreamer_actor.checkpoint/"
MANIFEST = "dreamer_actor_manifest.json"
_STATES = ("opt_state", "normalizer_state")
_MAX_LISTED = 8


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


# ----------------------------------------------------------------------------- the metadata item


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


# ----------------------------------------------------------------------------- restoring: decode and compare


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
