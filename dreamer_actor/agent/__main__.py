"""`python -m dreamer_actor.agent`: train a DreamerV3 agent on a gymnasium env (see `--help`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from dreamer_actor.agent.run import RunConfig, train_agent

HELP = {
    "env": "gymnasium environment id (1-D Box observations; Box or Discrete actions)",
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
    "batch": "replayed sequences B per update",
    "length": "replayed sequence length L (B x L imagination starts)",
    "horizon": "imagination horizon",
    "discount": "discount of the lambda-returns (times the continue head's prediction)",
    "model_lr": "world-model Adam learning rate",
    "actor_lr": "actor Adam learning rate",
    "critic_lr": "critic Adam learning rate",
    "entropy_coef": "actor entropy bonus",
    "terminal_weight": "weight of terminal steps in the continue head's loss (DreamerV3: 1)",
    "overwrite": "reuse an --out folder that holds a previous run of this agent (only its own files are "
    "replaced; any other content is refused)",
    "progress": "show a tqdm progress bar (--no-progress to hide it)",
}


def parse_args(argv: list[str] | None = None) -> RunConfig:
    parser = argparse.ArgumentParser(
        prog="python -m dreamer_actor.agent",
        description="Train a compact DreamerV3 agent: a world model learned from real gymnasium interaction, "
        "an actor (dreamer_actor.act) and critic learned only in its imagination.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(RunConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=field.default, help=HELP[field.name]
            )
            continue
        kind = {"int": int, "float": float}.get(str(field.type), str)
        kwargs: dict = {"type": kind, "default": field.default, "help": HELP[field.name]}
        if field.name == "distribution":
            kwargs["choices"] = ("tanh_normal", "bounded_normal", "categorical")
        if field.name == "estimator":
            kwargs["choices"] = ("reinforce", "dynamics", "mix")
        parser.add_argument(flag, **kwargs)
    return RunConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    run = parse_args(argv)
    curve = train_agent(run)
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
