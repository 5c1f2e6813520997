"""Smoke test of the main job, `python -m dreamer_actor.demo`, with its tiny `--quick` preset.

It runs end to end in-process (imagination training, evaluation on the real gymnasium
`Pendulum-v1`, the plot and the JSON), and the policy it learned only in imagination must beat
the uniform random policy on the same fixed real-environment seeds by a clear margin.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreamer_actor import demo
from dreamer_actor.examples import evaluation

# A random policy scores about -1200 on Pendulum-v1, a swing-up-and-balance policy about -150.
# Beating random by 400 on the mean of 10 seeds is far outside seed noise (std of the random
# policy's mean over 10 episodes: about 90) yet well short of what a working run reaches.
MARGIN = 400.0


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_beats_random(tmp_path, capsys):
    result = demo.main(["--quick", "--no-progress", "--seed", "0", "--out", str(tmp_path)])

    printed = capsys.readouterr().out
    assert "uniform random policy on the same seeds" in printed and "final return" in printed
    assert (tmp_path / "pendulum_learning_curve.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "pendulum_learning_curve.json").read_text())
    assert saved["final_deterministic_mean"] == result["final_deterministic_mean"]
    assert saved["eval_seeds"] == evaluation.eval_seeds(demo.QUICK["eval_episodes"])
    assert [p["update"] for p in saved["curve"]] == list(range(0, demo.QUICK["updates"] + 1, demo.QUICK["eval_every"]))
    for point in saved["curve"]:
        assert len(point["deterministic_returns"]) == demo.QUICK["eval_episodes"]
        assert np.all(np.isfinite(point["sampled_returns"]))

    # The baseline is a real random policy on the same seeds (about -1200), not a straw man.
    assert -1500.0 < result["random_mean"] < -900.0
    assert result["final_deterministic_mean"] > result["random_mean"] + MARGIN
    assert result["final_sampled_mean"] > result["random_mean"] + MARGIN
    # Training improved the policy (the untrained one is about as bad as random).
    assert result["final_deterministic_mean"] > saved["curve"][0]["deterministic_mean"] + MARGIN


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--estimator", "--entropy-coef", "--updates", "--seed", "--out", "--starts", "--quick"):
        assert flag in text
    assert "reinforce" in text and "dynamics" in text


@pytest.mark.parametrize(
    "argv",
    [["--updates", "0"], ["--entropy-coef", "-1"], ["--rho", "2"], ["--estimator", "sac"], ["--starts", "0"]],
)
def test_bad_flags_exit_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_quick_preset_overrides_its_flags():
    args = demo.parse_args(["--quick", "--updates", "5000", "--estimator", "reinforce"])
    assert args.updates == demo.QUICK["updates"] and args.starts == demo.QUICK["starts"]
    assert args.estimator == "reinforce"  # flags outside the preset are kept


def test_an_unwritable_out_folder_fails_before_any_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        demo.parse_args(["--quick", "--out", str(blocker / "results")])
    assert exit_info.value.code == 2
    assert "is not a writable folder" in capsys.readouterr().err
    assert blocker.read_text() == "mine"
    # A writable one passes and is left without the probe file.
    args = demo.parse_args(["--quick", "--out", str(tmp_path / "new" / "results")])
    assert args.out.is_dir() and not list(args.out.iterdir())
