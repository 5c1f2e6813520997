"""`python -m dreamer_actor.agent`: train a DreamerV3 agent on a gymnasium env (see `--help`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from dreamer_actor.agent import flags
from dreamer_actor.agent.run import NESTED, RunConfig, stored_config, train_agent


def _flag_fields() -> list[tuple[dataclasses.Field, object]]:
    """`(field, default)` of every flag: `RunConfig`'s own, then those of `RunConfig.world_model` and `.agent`."""
    defaults = RunConfig()
    parts = [(defaults, None)] + [(getattr(defaults, part), part) for part in NESTED]
    return [(f, getattr(config, f.name)) for config, _ in parts for f in dataclasses.fields(config) if flags.is_flag(f)]


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
    for field, value in _flag_fields():
        flag = flags.flag_name(field.name)
        default = argparse.SUPPRESS if suppress_defaults else value
        if field.type in ("bool", bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=field.metadata["help"]
            )
            continue
        kind = {"int": int, "float": float}.get(str(field.type), str)
        kwargs: dict = {"type": kind, "default": default, "help": field.metadata["help"]}
        choices = getattr(field.metadata["check"], "choices", None)
        if choices is not None:
            kwargs["choices"] = choices
        parser.add_argument(flag, **kwargs)
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[RunConfig, bool]:
    """`(RunConfig, resume)` of the command line; a bad value exits with argparse's usage error."""
    parser = _parser()
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    try:
        if resume is None:
            return RunConfig.from_flags(**args), False
        given = vars(_parser(suppress_defaults=True).parse_args(argv))
        given.pop("resume")
        if "out" in given and given["out"] != resume:
            parser.error(f"--resume {resume} continues that folder; --out {given['out']} must be left out")
        try:
            stored = stored_config(resume)
        except (FileNotFoundError, ValueError) as error:
            parser.error(str(error))
        return stored.with_flags(**given), True
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
