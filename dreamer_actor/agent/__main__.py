"""`python -m dreamer_actor.agent`: train a DreamerV3 agent on a gymnasium env (see `--help`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import dreamer_actor as da
from dreamer_actor.agent import envs as envs_lib
from dreamer_actor.agent import optimizers
from dreamer_actor.agent import world_model as wm
from dreamer_actor.agent.run import RunConfig, stored_config, train_agent

HELP = {
    "env": "gymnasium environment id (1-D Box or Dict-of-Box observations; Box or Discrete actions); "
    "dm_control/<domain>-<task>-v0 for DeepMind Control (the dmc extra)",
    "steps": "real environment steps in total (warm-up included)",
    "seed": "seed of the networks, the env resets, the warm-up actions and the replay sampling",
    "out": "run folder: curve.json, curve.png, actor/ (da.save_checkpoint), world_model.msgpack, agent.json",
    "distribution": "actor family: tanh_normal (Box default), bounded_normal (Box, official DreamerV3), "
    "categorical (Discrete, the only choice there)",
    "estimator": "actor gradient: reinforce (DreamerV3), dynamics (backprop through the world model), mix",
    "train_ratio": "replayed steps per env step; one update replays batch x length steps",
    "warmup": "uniform random env steps before the first update",
    "eval_every": "env steps between evaluations on the real env (and one at the end)",
    "eval_episodes": "evaluation episodes (fixed reset seeds 10000 + i), deterministic and sampled each",
    "replay_capacity": "maximum stored steps (the oldest are overwritten)",
    "deter": "RSSM GRU width D",
    "stoch": "number S of categorical latents",
    "classes": "classes C per latent",
    "units": "width of every MLP (encoder, decoder, heads, actor, critic)",
    "layers": "hidden layers of encoder, decoder and heads (actor and critic have 2)",
    "norm": "layer (LayerNorm) or rms (official DreamerV3's RMSNorm) in every network: world model, GRU, actor, critic",
    "batch": "replayed sequences B per update",
    "length": "replayed sequence length L (B x L imagination starts)",
    "horizon": "imagination horizon",
    "discount": "discount of the lambda-returns (times the continue head's prediction)",
    "optimizer": "adam (global-norm clip 100) or laprop (official DreamerV3's: adaptive clip 0.3, LaProp, "
    "1,000-update warm-up; official lr 4e-5)",
    "model_lr": "world-model learning rate",
    "actor_lr": "actor learning rate",
    "critic_lr": "critic learning rate",
    "slow_target": "lambda-returns bootstrap and advantage baseline from the slow critic (--no-slow-target: "
    "the online critic, as official DreamerV3)",
    "predicted_start_cont": "weight imagination starts by the continue head's prediction (official DreamerV3) "
    "instead of the replayed 1 - terminated",
    "repval_scale": "weight of the replay value loss: the critic also learns lambda-returns along the replayed "
    "posteriors (official DreamerV3: 0.3; 0 is off)",
    "contdisc": "the discount goes into the continue head's target, (1 - terminated) * discount, and "
    "imagination discounts by the predicted continue alone (official DreamerV3 with --discount 0.997)",
    "imagine_pre_update": "roll imagination out in the world model that made the starts, before this update's "
    "step (official DreamerV3), instead of the updated one",
    "entropy_coef": "actor entropy bonus",
    "terminal_weight": "weight of terminal steps in the continue head's loss (DreamerV3: 1)",
    "action_repeat": "frames each action is repeated for (rewards summed; official DreamerV3 uses 2 on DMC); "
    "--steps, --warmup, --eval-every and --save-every count policy steps, the curve also frames",
    "envs": "env copies stepped together (gymnasium vector env); the actor acts on all of them in one call",
    "vector": "how the copies run: sync (in this process) or async (a worker process each)",
    "devices": "data parallel update over the first N of jax.devices(): the replayed batch (and the imagination "
    "starts) split along B over them, the parameters replicated; N must divide --batch",
    "save_every": "env steps between checkpoints of the whole run in OUT/resume/ (also at the end and on "
    "SIGINT/SIGTERM); continue one with --resume OUT",
    "max_skips": "updates in a row with a non-finite loss or gradient (each skipped) that stop the run",
    "overwrite": "reuse an --out folder that holds a previous run of this agent (only its own files are "
    "replaced; any other content is refused)",
    "progress": "show a tqdm progress bar (--no-progress to hide it)",
}


# The values each string flag takes, from the modules that define them.
CHOICES = {
    "distribution": da.distributions.names(),
    "estimator": da.train.ESTIMATORS,
    "vector": envs_lib.VECTOR_MODES,
    "norm": wm.NORMS,
    "optimizer": optimizers.OPTIMIZERS,
}


def _parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dreamer_actor.agent",
        description="Train a compact DreamerV3 agent: a world model learned from real gymnasium interaction, "
        "an actor (dreamer_actor.act) and critic learned only in its imagination.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        default=argparse.SUPPRESS if suppress_defaults else None,
        help="continue the run checkpointed in DIR (its own flags; any flag given with it must agree)",
    )
    for field in dataclasses.fields(RunConfig):
        flag = "--" + field.name.replace("_", "-")
        default = argparse.SUPPRESS if suppress_defaults else field.default
        if field.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=HELP[field.name])
            continue
        kind = {"int": int, "float": float}.get(str(field.type), str)
        kwargs: dict = {"type": kind, "default": default, "help": HELP[field.name]}
        if field.name in CHOICES:
            kwargs["choices"] = CHOICES[field.name]
        parser.add_argument(flag, **kwargs)
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[RunConfig, bool]:
    """`(RunConfig, resume)` of the command line; a bad value exits with argparse's usage error."""
    parser = _parser()
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    try:
        if resume is None:
            return RunConfig(**args), False
        given = vars(_parser(suppress_defaults=True).parse_args(argv))
        given.pop("resume")
        if "out" in given and given["out"] != resume:
            parser.error(f"--resume {resume} continues that folder; --out {given['out']} must be left out")
        try:
            stored = stored_config(resume)
        except (FileNotFoundError, ValueError) as error:
            parser.error(str(error))
        return dataclasses.replace(stored, **given), True
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> int:
    run, resume = parse_args(argv)
    try:
        curve = train_agent(run, resume=resume)
    except KeyboardInterrupt:  # before the loop's own handler (start-up, compilation): nothing to save yet
        print(
            "error: interrupted before training began: nothing to resume; start it again (--overwrite to reuse --out).",
            file=sys.stderr,
        )
        return 130
    except (ValueError, FileExistsError, FileNotFoundError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        import gymnasium

        if isinstance(error, gymnasium.error.Error):  # an unknown env id, a missing env package
            print(f"error: {error}", file=sys.stderr)
            return 1
        raise
    if "interrupted" in curve:
        stop = curve["interrupted"]
        print(
            f"{run.env} seed {run.seed}: stopped by {stop['signal']} at {stop['env_steps']} of {run.steps} env steps"
            + (
                f"; saved. Continue with: python -m dreamer_actor.agent --resume {run.out}"
                if run.out
                else " (no --out, so nothing was saved)."
            )
        )
        return 0
    final = curve["evals"][-1]
    print(
        f"{run.env} seed {run.seed}: {final['env_steps']} env steps, {curve['updates']} updates, "
        f"{curve['wall_s']:.0f} s; deterministic {final['deterministic']['mean']:.1f} +- "
        f"{final['deterministic']['std']:.1f}, sampled {final['sampled']['mean']:.1f} +- "
        f"{final['sampled']['std']:.1f}, "
        f"random {curve['random']['mean']:.1f}" + (f"; saved to {run.out}" if run.out else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
