"""scripts/dmc_results.py's bookkeeping: variant labels, the training score, official's curves, the plot."""

import dataclasses
import gzip
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from dreamer_actor.agent.run import RunConfig

_PATH = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "dmc_results.py"
_SPEC = importlib.util.spec_from_file_location("dmc_results", _PATH)
dr = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(dr)

EARLIER = {"slow_target": True, "repval_scale": 0.0, "predicted_start_cont": False, "imagine_pre_update": False,
           "norm": "layer"}  # fmt: skip
OFFICIAL = {"contdisc": True, "discount": 0.997}


def _run(**flags):
    """What run.json stores under "run" for these flags."""
    return json.loads(json.dumps(dataclasses.asdict(RunConfig.from_flags(**flags))))


@pytest.mark.parametrize(
    "flags, label",
    [
        ({}, "defaults"),
        (EARLIER, "earlier rules"),
        (OFFICIAL, "official's rules"),
        ({**OFFICIAL, "norm": "layer"}, "official's rules, norm=layer"),
        ({"repval_scale": 0.0}, "defaults, repval_scale=0.0"),  # nearer the defaults (1 rule) than official's (3)
        ({**OFFICIAL, "repval_grad": True, "seed": 3}, "official's rules repval_grad=True"),  # seed: not a variant
        ({"action_repeat": 2}, "defaults action_repeat=2"),
    ],
)
def test_a_run_is_labelled_by_the_nearer_rule_set_then_its_other_flags(flags, label):
    assert dr.variant(_run(**flags)) == label


def test_the_train_score_averages_the_episodes_of_the_last_window():
    curve = {"evals": [{"frames": 30_000}],
             "episodes": [{"frames": 15_000, "return": 1000.0}, {"frames": 21_000, "return": 10.0},
                          {"frames": 30_000, "return": 20.0}]}  # fmt: skip
    assert dr.train_score(curve, window=10_000) == 15.0  # (20k, 30k]: the first episode is out


def test_official_curves_average_the_seeds_and_use_the_tasks_names(tmp_path):
    records = [
        {"task": "dmc_ball_in_cup_catch", "method": "dreamerv3", "seed": s, "xs": [1e4, 2e4, 3e4][: 3 - s],
         "ys": [s * 10.0, s * 20.0, 99.0][: 3 - s]}
        for s in (0, 1)
    ]  # fmt: skip
    path = tmp_path / "scores.json.gz"
    path.write_bytes(gzip.compress(json.dumps(records).encode()))
    xs, ys = dr.official_curves(path)["cup_catch"]
    np.testing.assert_array_equal(xs, [1e4, 2e4])  # the frames every seed reached
    np.testing.assert_array_equal(ys, [5.0, 10.0])


def test_the_plot_is_written_for_runs_with_and_without_official_curves(tmp_path):
    curve = {"evals": [{"frames": f, "env_steps": f // 2, "wall_s": f / 100, "deterministic": {"mean": f / 1e3}}
                       for f in (10_000, 20_000)],
             "episodes": [{"frames": f, "return": f / 1e3} for f in range(1_000, 20_001, 1_000)]}  # fmt: skip
    runs = [{"task": "cartpole_swingup", "variant": "defaults", "seed": s, "frames": 20_000, "curve": curve}
            for s in (0, 1)]  # fmt: skip
    official = {"cartpole_swingup": (np.array([1e4, 2e4, 3e4]), np.array([1.0, 2.0, 3.0]))}
    for name, curves in (("with.png", official), ("without.png", None)):
        dr.plot(runs, tmp_path / name, curves)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_variants_keeps_the_named_variants_and_refuses_an_unknown_name():
    runs = [{"task": t, "variant": v, "seed": 0} for t in ("cup_catch", "reacher_easy") for v in ("a", "b", "c")]
    kept = dr.select_variants(runs, ["c", "a"])
    assert [(r["task"], r["variant"]) for r in kept] == [(t, v) for t in ("cup_catch", "reacher_easy") for v in "ac"]
    with pytest.raises(ValueError, match=r"--plot-variants: no run of \['d'\]; the variants found: \['a', 'b', 'c'\]"):
        dr.select_variants(runs, ["a", "d"])


def test_the_four_task_mean_averages_each_tasks_seed_mean_over_finished_runs_only():
    def run(task, name, seed, score, done=True):
        return {"task": task, "variant": name, "seed": seed, "done": done, "eval": score, "train": score / 2}

    runs = [
        run("cartpole_swingup", "a", 0, 500.0), run("cartpole_swingup", "a", 1, 700.0),  # task mean 600
        run("pendulum_swingup", "a", 0, 900.0), run("pendulum_swingup", "a", 1, 0.0, done=False),  # stopped: out
        run("reacher_easy", "a", 0, 100.0), run("reacher_easy", "a", 1, 300.0),  # 200
        run("cup_catch", "a", 0, 730.0),  # official's 730: at it counts
        run("walker_walk", "a", 0, 1000.0),  # the stretch task: outside the mean
        run("cartpole_swingup", "b", 0, 999.0), run("pendulum_swingup", "b", 0, 999.0),  # b lacks two tasks
    ]  # fmt: skip
    (only,) = dr.suite_means(runs)
    assert only["variant"] == "a" and only["seeds"] == 1
    assert only["eval"] == (600 + 900 + 200 + 730) / 4 and only["train"] == (300 + 450 + 100 + 365) / 4
    assert only["at_official"] == ["cartpole_swingup", "pendulum_swingup", "cup_catch"]  # reacher's 200 < 693
