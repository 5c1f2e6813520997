"""scripts/compare_baselines.py's bookkeeping (no training here: the runs take minutes to hours)."""

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "compare_baselines.py"
_SPEC = importlib.util.spec_from_file_location("compare_baselines", _PATH)
cb = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(cb)


@pytest.mark.parametrize(
    "argv, label",
    [
        ([], "dreamer"),
        (["--estimator", "reinforce", "--discount", "0.99", "--terminal-weight", "1"], "dreamer"),  # the defaults
        (["--estimator", "dynamics"], "dreamer-dynamics"),
        (["--terminal-weight", "10"], "dreamer-tw10"),
        (["--discount", "0.997", "--terminal-weight", "10"], "dreamer-tw10-g0.997"),
        (["--slow-target", "--optimizer", "laprop", "--repval-scale", "0"], "dreamer-laprop-slowtarget-rv0"),
        (["--no-slow-target", "--optimizer", "adam", "--action-repeat", "2"], "dreamer-ar2"),  # only the repeat differs
        (
            ["--no-predicted-start-cont", "--no-imagine-pre-update", "--norm", "layer", "--contdisc"],
            "dreamer-nopredcont-nopreupdate-contdisc-layer",
        ),  # in DREAMER_OPTIONS' order
    ],
)
def test_dreamer_runs_are_labelled_by_what_differs_from_the_defaults(argv, label):
    args = cb.parse_args(["train", "--algo", "dreamer", "--env", "CartPole-v1", "--seeds", "3", "4", *argv])
    assert cb.dreamer_label(cb.dreamer_options(args)) == label
    assert args.seeds == [3, 4] and args.eval_every == 2000 and args.eval_episodes == 20


def test_dreamer_options_are_refused_for_the_baselines(tmp_path):
    argv = ["train", "--algo", "sb3", "--env", "CartPole-v1", "--discount", "0.9", "--out", str(tmp_path)]
    args = cb.parse_args(argv)
    with pytest.raises(SystemExit, match="--discount: dreamer runs only"):
        cb.train(args)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
