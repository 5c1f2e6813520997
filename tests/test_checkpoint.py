"""Checkpoints: exact round trips, clear errors, and atomic saves (interrupted in-process and by SIGKILL)."""

import functools
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dreamer_actor as da
from dreamer_actor._src import checkpoint as ckpt_module
from dreamer_actor._src import checkpoint_commit as commit_module
from dreamer_actor._src import checkpoint_format as format_module

T, B, H = 3, 4, 6


def _latents(key, config):
    k1, k2 = jax.random.split(key)
    hidden = jax.random.normal(k1, (T, B, H))
    stoch = jax.nn.one_hot(jax.random.randint(k2, (T, B, 2), 0, 3), 3)  # [T, B, S=2, C=3]
    return hidden, stoch


CONFIGS = {
    "tanh_normal_rms": lambda: da.ActorConfig.create(
        low=[-2.0, 0.0, -1.0], high=[3.0, 1.0, 1.0], layers=2, units=8, norm="rms", mean_limit=None
    ),
    "categorical_multi": lambda: da.ActorConfig.create(
        distribution="categorical", action_dims=(3, 2), layers=1, units=8, unimix=0.02
    ),
}


@functools.cache
def _trained(name):
    """Params, Adam state and normalizer state after two real updates (non-trivial mu, nu, count)."""
    config = CONFIGS[name]()
    hidden, stoch = _latents(jax.random.key(0), config)
    params = _init_params(config, seed=1)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)
    step = jax.jit(da.make_actor_train_step(config, optimizer, entropy_coef=1e-2))
    normalizer = da.ReturnNormalizer()
    norm_state = normalizer.init()
    for i in range(2):
        returns = jax.random.normal(jax.random.key(100 + i), (T, B)) * 10.0
        norm_state, scale = normalizer.update(norm_state, returns)
        advantage = da.normalize_advantage(returns, jnp.zeros_like(returns), scale)
        params, opt_state, _ = step(params, opt_state, hidden, stoch, advantage, jax.random.key(200 + i))
    return config, params, optimizer, opt_state, normalizer, norm_state, (hidden, stoch), step


def _init_params(config, seed):
    return da.Actor.from_config(config).init(jax.random.key(seed), jnp.zeros((1, H)), jnp.zeros((1, 2, 3)))


def _assert_trees_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config, params, optimizer, opt_state, normalizer, norm_state, latents, _ = _trained("tanh_normal_rms")
    path = da.save_checkpoint(
        tmp_path_factory.mktemp("ck") / "run" / "step_2",
        params=params,
        config=config,
        opt_state=opt_state,
        normalizer_state=norm_state,
        step=2,
        extra={"env": "Pendulum-v1", "seed": 0},
    )
    return path, config, params, optimizer, opt_state, normalizer, norm_state, latents


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_is_exact_and_the_restored_actor_acts_identically(tmp_path, name):
    config, params, optimizer, opt_state, normalizer, norm_state, (hidden, stoch), step = _trained(name)
    path = da.save_checkpoint(
        tmp_path / "ck", params=params, config=config, opt_state=opt_state, normalizer_state=norm_state, step=7
    )
    assert path == (tmp_path / "ck").absolute()
    restored = da.restore_checkpoint(
        path,
        config=config,
        params_like=params,
        opt_state_like=optimizer.init(params),
        normalizer_state_like=normalizer.init(),
    )
    assert restored.step == 7 and restored.extra is None
    _assert_trees_identical(restored.params, params)
    _assert_trees_identical(restored.opt_state, opt_state)
    _assert_trees_identical(restored.normalizer_state, norm_state)
    assert isinstance(restored.normalizer_state, da.ReturnNormalizerState)
    assert type(restored.opt_state[0]) is type(opt_state[0])  # optax's ScaleByAdamState, not a dict
    # The config: every static field equal, bounds bit-identical.
    assert jax.tree.structure(restored.config) == jax.tree.structure(config)
    _assert_trees_identical(restored.config, config)
    # Bit-identical actions for the same key: sampled, deterministic, and the training outputs.
    key = jax.random.key(11)
    act = jax.jit(da.act, static_argnames=("training", "deterministic"))
    for kwargs in ({"training": False}, {"training": True}, {"training": False, "deterministic": True}):
        original = act(params, config, hidden, stoch, key, **kwargs)
        again = act(restored.params, restored.config, hidden, stoch, key, **kwargs)
        _assert_trees_identical(again, original)
    # Training resumes exactly where it stopped (the Adam moments and count were restored).
    advantage = jnp.linspace(-1.0, 1.0, T * B).reshape(T, B)
    resumed = step(restored.params, restored.opt_state, hidden, stoch, advantage, key)
    continued = step(params, opt_state, hidden, stoch, advantage, key)
    _assert_trees_identical(resumed[:2], continued[:2])


def test_restore_without_templates_gives_params_config_and_step(saved):
    path, config, params, *_ = saved
    restored = da.restore_checkpoint(path)
    _assert_trees_identical(restored.params, params)
    _assert_trees_identical(restored.config, config)
    assert restored.opt_state is None and restored.normalizer_state is None
    assert restored.step == 2 and restored.extra == {"env": "Pendulum-v1", "seed": 0}
    leaf = jax.tree.leaves(restored.params)[0]
    assert isinstance(leaf, jax.Array) and leaf.sharding.is_fully_replicated


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"action_dim": 2}, ["`action_dim`: stored 3, expected 2"]),
        ({"layers": 3}, ["`layers`: stored 2, expected 3"]),
        ({"units": 16, "norm": "layer"}, ["`units`: stored 8, expected 16", "`norm`: stored 'rms', expected 'layer'"]),
        ({"distribution": "bounded_normal"}, ["`distribution`"]),
    ],
)
def test_a_mismatched_config_is_a_clear_value_error(saved, changes, named):
    path = saved[0]
    static = {"layers": 2, "units": 8, "norm": "rms", "mean_limit": None, **changes}
    action_dim = static.pop("action_dim", 3)
    expected = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=action_dim, **static)
    with pytest.raises(ValueError, match="does not match what was expected") as info:
        da.restore_checkpoint(path, config=expected)
    for text in named:
        assert text in str(info.value)


def test_bounds_and_static_differences_are_listed_together_before_any_array_is_read(saved, monkeypatch):
    # Format /1 compared the bounds only after reading the arrays, and raised on the static fields
    # first: now the whole config is in the metadata and every difference is in one error.
    path = saved[0]
    expected = da.ActorConfig.create(
        low=[-2.0, 0.0, -1.0], high=[3.0, 2.0, 1.0], layers=2, units=16, norm="rms", mean_limit=None
    )
    read = []
    real_read_items = ckpt_module._read_items
    monkeypatch.setattr(
        ckpt_module, "_read_items", lambda p, fn, **args: read.append(sorted(args)) or real_read_items(p, fn, **args)
    )
    with pytest.raises(ValueError, match="does not match what was expected") as info:
        da.restore_checkpoint(path, config=expected)
    assert "config `high`: stored [3.0, 1.0, 1.0], expected [3.0, 2.0, 1.0]" in str(info.value)
    assert "config `units`: stored 8, expected 16" in str(info.value)
    assert read == [["metadata"]]  # no array item was read


def test_the_metadata_holds_the_whole_config_and_no_config_arrays_item(saved):
    path, config, *_ = saved
    stored = json.loads((path / "metadata" / "metadata").read_text())
    assert ckpt_module.FORMAT == "dreamer_actor.checkpoint/2" and stored["format"] == ckpt_module.FORMAT
    assert stored["config"] == config.to_dict()
    assert stored["config"]["low"] == [-2.0, 0.0, -1.0] and stored["config"]["high"] == [3.0, 1.0, 1.0]
    assert "config_arrays" not in stored["specs"] and not (path / "config_arrays").exists()


def _as_format_1(path):
    """Rewrites a checkpoint's metadata and manifest to claim format /1 (manifest hashes kept consistent)."""
    victim = path / "metadata" / "metadata"
    stored = json.loads(victim.read_text())
    stored["format"] = "dreamer_actor.checkpoint/1"
    victim.write_text(json.dumps(stored))
    manifest = json.loads((path / ckpt_module.MANIFEST).read_text())
    manifest["format"] = "dreamer_actor.checkpoint/1"
    manifest["files"]["metadata/metadata"] = {"size": victim.stat().st_size, "sha256": format_module._sha256(victim)}
    (path / ckpt_module.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("verify", [True, False])
def test_a_format_1_checkpoint_is_refused_naming_its_format(saved, tmp_path, verify):
    path = _copy(saved[0], tmp_path)
    _as_format_1(path)
    message = r"has format 'dreamer_actor\.checkpoint/1'; this version reads only 'dreamer_actor\.checkpoint/2'"
    with pytest.raises(ValueError, match=message):
        da.restore_checkpoint(path, verify=verify)


def test_mismatched_templates_name_the_leaves(saved):
    path, config, params, _, _, normalizer, *_ = saved
    other = da.Actor.from_config(config).init(jax.random.key(0), jnp.zeros((1, H + 1)), jnp.zeros((1, 2, 3)))
    with pytest.raises(
        ValueError, match=r"param `params/dense_0/kernel`: stored float32\[12, 8\], expected float32\[13, 8\]"
    ):
        da.restore_checkpoint(path, params_like=other)
    sgd_state = optax.sgd(0.1, momentum=0.9).init(params)
    with pytest.raises(
        ValueError, match=r"opt_state `0/trace/params/dense_0/kernel`: expected float32\[12, 8\], not in the checkpoint"
    ):
        da.restore_checkpoint(path, opt_state_like=sgd_state)
    bare = da.save_checkpoint(path.parent / "bare", params=params, config=config)
    with pytest.raises(
        ValueError, match="`normalizer_state_like` was given but the checkpoint has no normalizer_state"
    ):
        da.restore_checkpoint(bare, normalizer_state_like=normalizer.init())


def test_save_checks_its_arguments(tmp_path, saved):
    path, config, params, *_ = saved
    with pytest.raises(FileExistsError, match="overwrite=True"):
        da.save_checkpoint(path, params=params, config=config)
    wider = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=3, layers=2, units=16, norm="rms", mean_limit=None)
    with pytest.raises(ValueError, match=r"`params` do not fit the config .*units=16"):
        da.save_checkpoint(tmp_path / "a", params=params, config=wider)
    with pytest.raises(TypeError, match="`config` must be an ActorConfig"):
        da.save_checkpoint(tmp_path / "b", params=params, config={"action_dim": 3})
    with pytest.raises(TypeError, match="`extra` must be JSON-serializable"):
        da.save_checkpoint(tmp_path / "c", params=params, config=config, extra={"x": object()})
    with pytest.raises(TypeError, match="nested dict"):
        da.save_checkpoint(tmp_path / "d", params=[params], config=config)
    assert sorted(os.listdir(tmp_path)) == []  # nothing written for a rejected save


def test_missing_directory_is_file_not_found_with_the_path(tmp_path):
    missing = tmp_path / "nope" / "step_0"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        da.restore_checkpoint(missing)


def _copy(path, tmp_path):
    import shutil

    return pathlib.Path(shutil.copytree(path, tmp_path / "copy"))


def _data_files(path):
    files = sorted(p for p in (path / "params").rglob("*") if p.is_file() and p.parent.name == "d")
    assert files, "expected orbax data files"
    return files


def test_a_deleted_file_is_named(saved, tmp_path):
    path = _copy(saved[0], tmp_path)
    victim = _data_files(path)[0]
    victim.unlink()
    rel = victim.relative_to(path).as_posix()
    with pytest.raises(ValueError, match=f"damaged:\n  `{rel}` is missing"):
        da.restore_checkpoint(path)


def test_a_truncated_file_is_named_and_without_verification_still_a_value_error(saved, tmp_path):
    path = _copy(saved[0], tmp_path)
    victim = _data_files(path)[-1]
    size = victim.stat().st_size
    victim.write_bytes(victim.read_bytes()[: size // 2])
    rel = victim.relative_to(path).as_posix()
    with pytest.raises(ValueError, match=f"`{rel}` has {size // 2} bytes, expected {size} \\(truncated\\?\\)"):
        da.restore_checkpoint(path)
    # Skipping the manifest check, orbax's own error (when it notices: truncating only the file
    # above goes unnoticed by orbax, hence the manifest) is summarized, not dumped.
    for file in _data_files(path):
        file.write_bytes(file.read_bytes()[:20])
    with pytest.raises(ValueError, match=r"could not read the checkpoint at .*OUT_OF_RANGE"):
        da.restore_checkpoint(path, verify=False)


def test_a_flipped_byte_is_named(saved, tmp_path):
    path = _copy(saved[0], tmp_path)
    victim = path / "metadata" / "metadata"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="`metadata/metadata` is corrupted"):
        da.restore_checkpoint(path)


def test_a_checkpoint_without_manifest_is_incomplete(saved, tmp_path):
    path = _copy(saved[0], tmp_path)
    (path / ckpt_module.MANIFEST).unlink()
    with pytest.raises(ValueError, match="not a complete dreamer_actor checkpoint"):
        da.restore_checkpoint(path)
    (path / ckpt_module.MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest .* is corrupted"):
        da.restore_checkpoint(path)


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("where", ["_write_manifest", "_commit"])  # the manifest, then the rename into place
def test_an_interrupted_save_leaves_nothing_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    config = CONFIGS["tanh_normal_rms"]()
    old_params, new_params = _init_params(config, seed=1), _init_params(config, seed=2)
    fresh, existing = tmp_path / "fresh", tmp_path / "existing"
    da.save_checkpoint(existing, params=old_params, config=config, step=1)

    def boom(*args, **kwargs):
        raise _Interrupted(where)

    module = format_module if where == "_write_manifest" else commit_module
    monkeypatch.setattr(module, where, boom)  # orbax has written every array when this runs
    with pytest.raises(_Interrupted):
        da.save_checkpoint(fresh, params=new_params, config=config, step=2)
    with pytest.raises(_Interrupted):
        da.save_checkpoint(existing, params=new_params, config=config, step=2, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["existing"]  # no checkpoint at `fresh`, no temporary left over
    restored = da.restore_checkpoint(existing)
    assert restored.step == 1
    _assert_trees_identical(restored.params, old_params)


def test_overwrite_replaces_the_checkpoint(tmp_path):
    config = CONFIGS["tanh_normal_rms"]()
    a, b = _init_params(config, seed=1), _init_params(config, seed=2)
    da.save_checkpoint(tmp_path / "ck", params=a, config=config, step=1)
    da.save_checkpoint(tmp_path / "ck", params=b, config=config, step=2, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["ck"]
    restored = da.restore_checkpoint(tmp_path / "ck")
    assert restored.step == 2
    _assert_trees_identical(restored.params, b)


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import jax, jax.numpy as jnp
    import dreamer_actor as da
    from dreamer_actor._src import checkpoint_commit as ck

    target, where = sys.argv[1], sys.argv[2]
    config = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=2, layers=1, units=8)
    latents = jnp.zeros((1, 6)), jnp.zeros((1, 4))
    params = {s: da.Actor.from_config(config).init(jax.random.key(s), *latents) for s in (1, 2)}
    da.save_checkpoint(target, params=params[1], config=config, step=1)

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "before_commit":  # orbax and the manifest are written, the rename has not happened
        ck._commit = die
    else:  # between moving the old checkpoint aside and moving the new one in
        renames = []
        real_rename = ck._rename_noreplace

        def rename(src, dst):
            renames.append(dst)
            if len(renames) == 2:
                die()
            real_rename(src, dst)

        ck._rename_noreplace = rename
    da.save_checkpoint(target, params=params[2], config=config, step=2, overwrite=True)
    """
)


@pytest.mark.parametrize("where", ["before_commit", "between_renames"])
def test_a_killed_save_never_leaves_a_half_written_checkpoint(tmp_path, where):
    target = tmp_path / "ck"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(target), where],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # importing jax on a loaded 2-core machine has taken over 120 s
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    config = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=2, layers=1, units=8)
    first = da.Actor.from_config(config).init(jax.random.key(1), jnp.zeros((1, 6)), jnp.zeros((1, 4)))
    names = sorted(os.listdir(tmp_path))
    if where == "before_commit":
        # The old checkpoint is untouched at the final path; the new one lies in a hidden temporary.
        assert len(names) == 2 and names[0].startswith(".ck.tmp-") and names[1] == "ck"
        restored = da.restore_checkpoint(target)
    else:
        # No checkpoint at the final path (never a half-written one); the old one is whole beside it.
        assert len(names) == 2 and names[0].startswith(".ck.old-") and names[1].startswith(".ck.tmp-")
        with pytest.raises(FileNotFoundError, match=r"previous checkpoint survives as \['\.ck\.old-"):
            da.restore_checkpoint(target)
        restored = da.restore_checkpoint(tmp_path / names[0])
    assert restored.step == 1
    _assert_trees_identical(restored.params, first)


# ----------------------------------------------------------------------------- nothing of the user's is lost


def _snapshot(root):
    """Every entry under `root` (hidden ones included): a file's bytes, a link's target, or "<dir>"."""
    tree = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = pathlib.Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            tree[rel] = (
                f"-> {os.readlink(full)}" if full.is_symlink() else "<dir>" if full.is_dir() else full.read_bytes()
            )
    return tree


def _small():
    config = CONFIGS["tanh_normal_rms"]()
    return config, _init_params(config, seed=1)


def _target(kind, tmp_path, monkeypatch):
    """Makes a non-checkpoint (holding user files) of the given kind; returns the `directory` argument to save to."""
    config, params = _small()
    work = tmp_path / "work"
    (work / "deep").mkdir(parents=True)
    (work / "notes.txt").write_bytes(b"my notes\n")
    (work / "deep" / "data.bin").write_bytes(bytes(range(256)))
    if kind in ("empty", "dot"):
        monkeypatch.chdir(work)
        return "" if kind == "empty" else "."
    if kind == "cwd_ancestor":
        monkeypatch.chdir(work / "deep")
        return work
    if kind == "home":
        monkeypatch.setenv("HOME", str(work))
        return work
    if kind == "parent_of_runs":  # a runs/ folder with the user's files and a checkpoint inside
        da.save_checkpoint(work / "step_1", params=params, config=config, step=1)
        return work
    if kind == "plain_file":
        return work / "notes.txt"
    if kind == "checkpoint_with_a_user_file":
        da.save_checkpoint(work / "step_1", params=params, config=config, step=1)
        (work / "step_1" / "my_eval.csv").write_bytes(b"return\n1.0\n")
        return work / "step_1"
    if kind == "checkpoint_with_a_user_folder":
        da.save_checkpoint(work / "step_1", params=params, config=config, step=1)
        (work / "step_1" / "videos").mkdir()
        return work / "step_1"
    if kind == "symlink_to_a_checkpoint":
        da.save_checkpoint(work / "step_1", params=params, config=config, step=1)
        (work / "latest").symlink_to(work / "step_1")
        return work / "latest"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, error, message",
    [
        ("empty", ValueError, "empty path"),
        ("dot", ValueError, "current directory or one of its ancestors"),
        ("cwd_ancestor", ValueError, "current directory or one of its ancestors"),
        ("home", ValueError, "home directory"),
        ("parent_of_runs", FileExistsError, "holds no valid `dreamer_actor_manifest.json`"),
        ("plain_file", FileExistsError, "it is not a directory"),
        ("checkpoint_with_a_user_file", FileExistsError, r"does not list \(yours\?\): \['my_eval.csv'\]"),
        ("checkpoint_with_a_user_folder", FileExistsError, r"does not list \(yours\?\): \['videos'\]"),
        ("symlink_to_a_checkpoint", FileExistsError, "symbolic link"),
    ],
)
def test_overwrite_refuses_what_is_not_a_checkpoint_and_touches_nothing(tmp_path, monkeypatch, kind, error, message):
    # The old code renamed any existing path aside and deleted it: the cwd, runs/, the home dir, a file.
    directory = _target(kind, tmp_path, monkeypatch)
    before = _snapshot(tmp_path)
    config, params = _small()
    with pytest.raises(error, match=message) as info:
        da.save_checkpoint(directory, params=params, config=config, step=2, overwrite=True)
    assert str(pathlib.Path(directory).absolute()) in str(info.value)
    assert _snapshot(tmp_path) == before  # byte for byte, no temporary left behind


@pytest.mark.parametrize("kind", ["empty", "dot"])
def test_the_current_directory_is_refused_without_overwrite_too(tmp_path, monkeypatch, kind):
    directory = _target(kind, tmp_path, monkeypatch)
    before = _snapshot(tmp_path)
    config, params = _small()
    with pytest.raises(ValueError, match=r"empty path|current directory"):
        da.save_checkpoint(directory, params=params, config=config)
    assert _snapshot(tmp_path) == before


def test_overwrite_replaces_a_checkpoint_of_format_1(tmp_path):
    config, params = _small()
    da.save_checkpoint(tmp_path / "ck", params=params, config=config, step=1)
    _as_format_1(tmp_path / "ck")
    da.save_checkpoint(tmp_path / "ck", params=params, config=config, step=2, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["ck"] and da.restore_checkpoint(tmp_path / "ck").step == 2


def _competing_save_during_the_write(monkeypatch, target, params, config):
    """After the first save's files are written (before its rename), another save completes at `target`."""
    real_write_manifest = format_module._write_manifest
    calls = []

    def write_manifest_then_compete(directory):
        real_write_manifest(directory)
        calls.append(directory)
        if len(calls) == 1:  # the outer save: let a competitor win the race
            da.save_checkpoint(target, params=params, config=config, step=1)

    monkeypatch.setattr(format_module, "_write_manifest", write_manifest_then_compete)


def test_of_two_racing_saves_the_later_one_fails_and_the_first_checkpoint_is_intact(tmp_path, monkeypatch):
    # The old code checked for an existing path only before writing, then at the rename treated the
    # competitor's checkpoint as one to overwrite: it deleted it although overwrite=False.
    config = CONFIGS["tanh_normal_rms"]()
    first, second = _init_params(config, seed=1), _init_params(config, seed=2)
    target = tmp_path / "ck"
    _competing_save_during_the_write(monkeypatch, target, first, config)
    with pytest.raises(FileExistsError, match=re.escape(f"{target} appeared while this checkpoint was written")):
        da.save_checkpoint(target, params=second, config=config, step=2)
    assert sorted(os.listdir(tmp_path)) == ["ck"]
    restored = da.restore_checkpoint(target)
    assert restored.step == 1
    _assert_trees_identical(restored.params, first)


def test_a_save_racing_an_overwrite_keeps_both_checkpoints(tmp_path, monkeypatch):
    # While an overwrite has moved the old checkpoint aside, a competitor saves to the path.
    config = CONFIGS["tanh_normal_rms"]()
    old, new, competitor = (_init_params(config, seed=s) for s in (1, 2, 3))
    target = tmp_path / "ck"
    da.save_checkpoint(target, params=old, config=config, step=1)
    real_rename = commit_module._rename_noreplace
    renames = []

    def rename(src, dst):
        real_rename(src, dst)
        renames.append(dst)
        if len(renames) == 1:  # the old checkpoint was just moved aside
            monkeypatch.setattr(commit_module, "_rename_noreplace", real_rename)
            da.save_checkpoint(target, params=competitor, config=config, step=3)
            monkeypatch.setattr(commit_module, "_rename_noreplace", rename)

    monkeypatch.setattr(commit_module, "_rename_noreplace", rename)
    with pytest.raises(FileExistsError, match="previous checkpoint is kept whole at") as info:
        da.save_checkpoint(target, params=new, config=config, step=2, overwrite=True)
    aside = renames[0]
    assert str(aside) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == sorted(["ck", aside.name])
    assert da.restore_checkpoint(target).step == 3
    restored_old = da.restore_checkpoint(aside)
    assert restored_old.step == 1
    _assert_trees_identical(restored_old.params, old)


@pytest.mark.parametrize("renameat2", ["libc", "fallback"])
@pytest.mark.parametrize("dst_kind", ["checkpoint", "file", "empty_dir"])
def test_rename_noreplace_never_replaces(tmp_path, monkeypatch, renameat2, dst_kind):
    if renameat2 == "libc" and commit_module._renameat2() is None:
        pytest.skip("renameat2 is not available here")
    if renameat2 == "fallback":
        monkeypatch.setattr(commit_module, "_renameat2", lambda: None)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "new").write_bytes(b"new")
    if dst_kind == "checkpoint":
        dst.mkdir()
        (dst / ckpt_module.MANIFEST).write_bytes(b"old")
    elif dst_kind == "file":
        dst.write_bytes(b"old")
    else:
        dst.mkdir()
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError):
        commit_module._rename_noreplace(src, dst)
    assert _snapshot(tmp_path) == before
    if renameat2 == "fallback" and dst_kind != "empty_dir":
        # The fallback's race: `dst` appears after its existence check. os.rename then fails (POSIX
        # refuses a directory onto a file or a non-empty directory); only an empty one could be replaced.
        monkeypatch.setattr(commit_module.os.path, "lexists", lambda p: False)
        with pytest.raises(FileExistsError):
            commit_module._rename_noreplace(src, dst)
        monkeypatch.undo()
        assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- storage failures


def test_a_storage_failure_inside_orbax_removes_every_temporary_and_names_the_path(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    config, params = _small()
    target = tmp_path / "ck"
    seen = []

    def save_then_fail(self, directory, *args, **kwargs):  # like orbax: a tmp folder beside `directory`, then ENOSPC
        partial = pathlib.Path(f"{directory}.orbax-checkpoint-tmp-1234")
        (partial / "params").mkdir(parents=True)
        (partial / "params" / "chunk").write_bytes(b"partial")
        seen.append(partial)
        raise ValueError(
            "RESOURCE_EXHAUSTED: Error writing local file: No space left on device\nlong tensorstore detail"
        )

    monkeypatch.setattr(ocp.Checkpointer, "save", save_then_fail)
    with pytest.raises(
        OSError, match=re.escape(f"could not write the checkpoint {target} (") + ".*No space left on device"
    ) as info:
        da.save_checkpoint(target, params=params, config=config)
    assert "long tensorstore detail" not in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    assert seen and not seen[0].exists()
    assert sorted(os.listdir(tmp_path)) == []


def test_a_staging_folder_that_a_late_writer_recreates_is_removed_again(tmp_path):
    """After a failed save, orbax's background writes can recreate the staging folder just after it was
    removed (seen under load: `.ck.tmp-*` left beside the checkpoint); the removal waits for it to stay gone."""
    import threading

    stage = tmp_path / ".ck.tmp-late"
    (stage / "params").mkdir(parents=True)
    removed = threading.Event()

    def late_writer():  # like tensorstore: creates the folders above the file it writes
        deadline = time.monotonic() + 30.0
        while stage.exists() and time.monotonic() < deadline:
            pass
        removed.set()
        threading.Event().wait(0.1)
        (stage / "params").mkdir(parents=True)
        (stage / "params" / "chunk").write_bytes(b"late")

    writer = threading.Thread(target=late_writer)
    writer.start()
    commit_module._remove_tree(stage)
    writer.join()
    assert removed.is_set() and sorted(os.listdir(tmp_path)) == []


_FSIZE_SCRIPT = textwrap.dedent(
    """
    import os, resource, signal, sys
    import jax, jax.numpy as jnp
    import dreamer_actor as da

    parent = sys.argv[1]
    config = da.ActorConfig.create(low=-1.0, high=1.0, action_dim=2, layers=2, units=256)
    params = da.Actor.from_config(config).init(jax.random.key(0), jnp.zeros((1, 6)), jnp.zeros((1, 4)))
    da.save_checkpoint(os.path.join(parent, "ck"), params=params, config=config, step=1)
    # Files over 32 KiB now fail with EFBIG (a full disk, as far as orbax can tell).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    for target, overwrite in (("new", False), ("ck", True)):
        try:
            da.save_checkpoint(os.path.join(parent, target), params=params, config=config, step=2, overwrite=overwrite)
        except OSError as error:
            print("OSError:", str(error).splitlines()[0], "| cause:", type(error.__cause__).__name__)
        else:
            print("saved")
    """
)


def test_a_real_write_failure_leaves_no_temporary_and_keeps_the_old_checkpoint(tmp_path):
    if sys.platform != "linux":
        pytest.skip("RLIMIT_FSIZE/SIGXFSZ behaviour is tested on Linux")
    proc = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(tmp_path)],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("OSError", "saved"))]
    assert len(lines) == 2, proc.stdout
    for line, name in zip(lines, ("new", "ck"), strict=True):
        assert line.startswith(f"OSError: save_checkpoint: could not write the checkpoint {tmp_path / name} ")
        assert "File too large" in line or "OUT_OF_RANGE" in line, line
        assert line.endswith("| cause: ValueError") or line.endswith("| cause: OSError"), line
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # no staging or orbax tmp folder, no `new`
    assert da.restore_checkpoint(tmp_path / "ck").step == 1
