"""scripts/dmc_suite.py: task ids, run states, the commands it runs, and a suite that goes on where it stopped."""

import dataclasses
import importlib.util
import json
import pathlib
import sys

import gymnasium as gym
import pytest
import shimmy

from dreamer_actor.agent.__main__ import _parser, parse_args
from dreamer_actor.agent.run import RunConfig

_SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, _SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


suite = _load("dmc_suite")
results = _load("dmc_results")


def test_the_suite_is_the_tables_and_its_ids_are_gymnasiums():
    gym.register_envs(shimmy)
    assert suite.SUITE == results.SUITE
    for task in suite.TASKS:
        assert results.task_name(suite.env_id(task)) == task  # the table's name for the id, independently written
        assert gym.spec(suite.env_id(task)).id == suite.env_id(task)
    with pytest.raises(ValueError, match="dmc_suite: task 'cartpole'"):
        suite.env_id("cartpole")


def _write_run(folder, steps, evals_at, checkpoint):
    folder.mkdir(parents=True)
    run = json.loads(json.dumps(dataclasses.asdict(RunConfig.from_flags(steps=steps))))
    (folder / "run.json").write_text(json.dumps({"format": "x", "run": run}))
    evals = [{"env_steps": s, "frames": 2 * s, "deterministic": {"mean": 10.0 * s}} for s in evals_at]
    (folder / "curve.json").write_text(json.dumps({"evals": evals}))
    if checkpoint:
        (folder / "resume").mkdir()


def test_run_states(tmp_path):
    assert suite.run_state(tmp_path / "none") == "new"
    (tmp_path / "empty").mkdir()
    assert suite.run_state(tmp_path / "empty") == "new"
    _write_run(tmp_path / "done", 5000, [2500, 5000], checkpoint=True)
    assert suite.run_state(tmp_path / "done") == "finished"
    _write_run(tmp_path / "stopped", 5000, [2500], checkpoint=True)
    assert suite.run_state(tmp_path / "stopped") == "stopped"
    _write_run(tmp_path / "early", 5000, [], checkpoint=False)  # stopped before its first checkpoint
    assert suite.run_state(tmp_path / "early") == "started"


def test_a_fresh_command_is_the_protocol_with_the_extra_flags(tmp_path):
    folder = tmp_path / "cup_catch" / "defaults-train-ratio-192-s1"
    cmd = suite.command(folder, "new", "cup_catch", 1, ["--train-ratio", "192"], "py")
    assert cmd[:3] == ["py", "-m", "dreamer_actor.agent"]
    run, resume = parse_args(cmd[3:])  # the agent's own parser reads it
    assert not resume
    assert (run.env, run.seed, run.steps, run.action_repeat) == ("dm_control/ball_in_cup-catch-v0", 1, 50_000, 2)
    assert (run.eval_every, run.eval_episodes, run.distribution) == (5000, 5, "bounded_normal")
    assert (run.train_ratio, run.out, run.progress, run.overwrite) == (192, str(folder), False, False)
    assert parse_args(suite.command(folder, "started", "cup_catch", 1, [], "py")[3:])[0].overwrite
    assert suite.variant_name(["--train-ratio", "192", "--online-replay"]) == "defaults-train-ratio-192-online-replay"


def test_a_stopped_run_is_resumed_with_its_own_flags(tmp_path):
    folder = tmp_path / "reacher_easy" / "defaults-s0"
    cmd = suite.command(folder, "stopped", "reacher_easy", 0, ["--train-ratio", "192"], "py")
    assert cmd[3:] == ["--resume", str(folder), "--no-progress"]  # the flags are the checkpoint's own
    args = _parser().parse_args(cmd[3:])  # flags the agent knows
    assert (args.resume, args.progress) == (str(folder), False)


FAKE_AGENT = """import json, pathlib, sys
args = sys.argv[3:]  # after -m dreamer_actor.agent
with open(pathlib.Path(sys.argv[0]).with_suffix(".calls"), "a") as f:
    f.write(json.dumps(args) + "\\n")
folder = pathlib.Path(args[args.index("--resume") + 1] if "--resume" in args else args[args.index("--out") + 1])
folder.mkdir(parents=True, exist_ok=True)
steps = json.loads((folder / "run.json").read_text())["run"]["steps"] if "--resume" in args else 50000
if "--resume" not in args:
    (folder / "run.json").write_text(json.dumps({"run": {"steps": steps}}))
print("training", folder)
crash = "--seed" in args and args[args.index("--seed") + 1] == "1" and "--resume" not in args
at = steps // 2 if crash else steps  # seed 1's first start stops half-way, with a checkpoint
(folder / "curve.json").write_text(json.dumps({"evals": [{"env_steps": at, "frames": 2 * at,
                                                          "deterministic": {"mean": 7.0}}]}))
(folder / "resume").mkdir(exist_ok=True)
sys.exit(3 if crash else 0)
"""


def test_a_suite_runs_each_run_once_and_goes_on_where_it_stopped(tmp_path, capsys):
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_AGENT}")
    fake.chmod(0o755)
    out = tmp_path / "runs"
    argv = ["--out", str(out), "--tasks", "cartpole_swingup", "--seeds", "0", "1", "--python", str(fake), "--",
            "--train-ratio", "192"]  # fmt: skip
    assert suite.main(["--dry-run", *argv]) == 0
    assert not out.exists() and not fake.with_suffix(".calls").exists()
    assert suite.main(argv) == 1  # seed 1 stopped
    assert suite.main(argv) == 0  # seed 0 skipped, seed 1 resumed
    assert suite.main(argv) == 0  # nothing left to run
    calls = [json.loads(line) for line in fake.with_suffix(".calls").read_text().splitlines()]
    s0, s1 = (out / "cartpole_swingup" / f"defaults-train-ratio-192-s{seed}" for seed in (0, 1))
    assert [c[c.index("--out") + 1] if "--out" in c else c[c.index("--resume") + 1] for c in calls] == [
        str(s0), str(s1), str(s1)]  # fmt: skip
    assert "--resume" not in calls[1] and calls[2][:2] == ["--resume", str(s1)]
    assert "training" in (s1.parent / f"{s1.name}.log").read_text()
    printed = capsys.readouterr().out
    assert f"{s0}: finished (100000 frames, evaluation 7)" in printed
