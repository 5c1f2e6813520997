"""The training loop: act in a real gymnasium env, store transitions, update in imagination, evaluate.

`train_agent(RunConfig(...))` is what `python -m dreamer_actor.agent` runs; it returns the curve
(also written to `DIR/curve.json`) and saves the agent for `dreamer_actor.agent.load(DIR)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import time
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

import dreamer_actor as da
from dreamer_actor.agent import checkpoint as run_checkpoint
from dreamer_actor.agent import envs as envs_lib
from dreamer_actor.agent import evaluation, flags, spaces
from dreamer_actor.agent import policy as agent_policy
from dreamer_actor.agent import train as agent_train
from dreamer_actor.agent import world_model as wm

RUN_FILE = "run.json"  # written when a run claims its folder: what marks the folder as one of this agent's runs
RUN_FILES = (
    RUN_FILE,
    run_checkpoint.LOCK_FILE,
    run_checkpoint.CHECKPOINT_DIR,
    "curve.json",
    "curve.png",
    agent_policy.AGENT_FILE,
    agent_policy.WORLD_MODEL_FILE,
    agent_policy.ACTOR_DIR,
)
_STAGING = re.compile(r"^\.(resume|actor|agent\.json|world_model\.msgpack|curve\.json)\.(tmp|old)-")


def _is_previous_run(out: pathlib.Path) -> bool:
    """True for a folder that one of this agent's runs wrote: a `run.json` (or an older run's `agent.json`) of ours."""
    for name, key in ((RUN_FILE, "format"), (agent_policy.AGENT_FILE, "world_model_config")):
        try:
            content = json.loads((out / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and (content.get(key) == RUN_FORMAT if key == "format" else key in content):
            return True
    return False


def check_out_dir(out: pathlib.Path, *, overwrite: bool, claimed: bool = False) -> None:
    """Refuses a run folder that holds anything but a previous run's files (nothing a user owns is replaced).

    A missing or empty folder is fine. With `overwrite`, a folder holding only `RUN_FILES` (and
    hidden staging folders of an interrupted save) is reused when it is one of this agent's runs:
    its `run.json`, or an older run's `agent.json`, says so. Anything else raises
    `FileExistsError` naming the folder, and so does a folder another running run has claimed
    (`claimed=True`: this process holds the claim itself).
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"dreamer_actor.agent: `out` {str(out)!r} exists and is not a folder.")
    holder = None if claimed else run_checkpoint.holder(out)
    if holder is not None:
        raise FileExistsError(f"dreamer_actor.agent: the run folder {out} is in use by another run ({holder}).")
    # A claim alone (a run that stopped before it wrote anything) is no content.
    entries = sorted(p.name for p in out.iterdir() if p.name != run_checkpoint.LOCK_FILE)
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"dreamer_actor.agent: `out` folder {str(out)!r} is not empty ({', '.join(entries[:5])}); "
            "pass a new folder, --resume to continue the run there, or --overwrite to replace a previous run of "
            "this agent there."
        )
    foreign = [name for name in entries if name not in RUN_FILES and not _STAGING.match(name)]
    if foreign or not _is_previous_run(out):
        raise FileExistsError(
            f"dreamer_actor.agent: `out` folder {str(out)!r} is not a previous run of this agent "
            f"(it holds {', '.join(foreign[:5]) or f'no {RUN_FILE} or agent.json of this agent'}); --overwrite only "
            "replaces a run's own files. Pass a new folder."
        )


def _remove_previous_run(out: pathlib.Path) -> None:
    """Deletes a previous run's own files from `out` (checked by `check_out_dir` first), the lock kept."""
    for entry in out.iterdir():
        if entry.name == run_checkpoint.LOCK_FILE:
            continue
        if entry.name in RUN_FILES or _STAGING.match(entry.name):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


RUN_FORMAT = "dreamer_actor.agent_run/1"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run: the run's own fields, and its `world_model` and `agent` configs nested.

    Every field with help text is a flag of `python -m dreamer_actor.agent` (see `--help`), named after
    the field wherever it is nested: `RunConfig.from_flags(env="CartPole-v1", units=64, batch=8)` is
    the run of `--env CartPole-v1 --units 64 --batch 8`. Every field is checked when its config is
    made: a bad value is a `ValueError` naming its flag, before any env is made or any file written.
    """

    env: str = flags.flag(
        "Pendulum-v1",
        "gymnasium environment id (1-D Box or Dict-of-Box observations; Box or Discrete actions); "
        "dm_control/<domain>-<task>-v0 for DeepMind Control (the dmc extra)",
        flags.text,
    )
    steps: int = flags.flag(20_000, "real environment steps in total (warm-up included)", flags.int_at_least(1))
    seed: int = flags.flag(
        0, "seed of the networks, the env resets, the warm-up actions and the replay sampling", flags.int_at_least(0)
    )
    out: str | None = flags.flag(
        None,
        "run folder: curve.json, curve.png, actor/ (da.save_checkpoint), world_model.msgpack, agent.json",
        flags.optional_text,
    )
    distribution: str | None = flags.flag(
        None,
        "actor family: tanh_normal (Box default), bounded_normal (Box, official DreamerV3), categorical "
        "(Discrete, the only choice there)",
        flags.choice(da.distributions.names(), none=True),
    )
    actor_output_scale: float = flags.flag(
        0.01,
        "variance scale of the actor's output layer at init (official DreamerV3: 0.01, a near-constant initial "
        "mean); larger makes the initial policy's mean depend on the state",
        flags.number(positive=True),
    )
    train_ratio: float = flags.flag(
        64.0, "replayed steps per env step; one update replays batch x length steps", flags.number(positive=True)
    )
    model_extra_ratio: float = flags.flag(
        0.0,
        "replayed steps per env step for world-model-only updates on top of --train-ratio (not in official "
        "DreamerV3): the world model trains at the sum, actor and critic at --train-ratio",
        flags.number(low=0.0),
    )
    warmup: int = flags.flag(1000, "uniform random env steps before the first update", flags.int_at_least(0))
    eval_every: int = flags.flag(
        2000, "env steps between evaluations on the real env (and one at the end)", flags.int_at_least(1)
    )
    eval_episodes: int = flags.flag(
        20,
        "evaluation episodes (fixed reset seeds 10000 + i), deterministic and sampled each",
        flags.int_at_least(1),
    )
    replay_capacity: int = flags.flag(
        1_000_000, "maximum stored steps (the oldest are overwritten)", flags.int_at_least(1)
    )
    online_replay: bool = flags.flag(
        False,
        "every --length fresh steps of an env form a window that the next update replays before its uniform "
        "draws (official DreamerV3's replay.online: True)",
        flags.boolean,
    )
    action_repeat: int = flags.flag(
        1,
        "frames each action is repeated for (rewards summed; official DreamerV3 uses 2 on DMC); --steps, "
        "--warmup, --eval-every and --save-every count policy steps, the curve also frames",
        flags.int_at_least(1),
    )
    envs: int = flags.flag(
        1,
        "env copies stepped together (gymnasium vector env); the actor acts on all of them in one call",
        flags.int_at_least(1),
    )
    vector: str = flags.flag(
        "sync",
        "how the copies run: sync (in this process) or async (a worker process each)",
        flags.choice(envs_lib.VECTOR_MODES),
    )
    devices: int = flags.flag(
        1,
        "data parallel update over the first N of jax.devices(): the replayed batch (and the imagination "
        "starts) split along B over them, the parameters replicated; N must divide --batch",
        flags.int_at_least(1),
    )
    save_every: int = flags.flag(
        5000,
        "env steps between checkpoints of the whole run in OUT/resume/ (also at the end and on "
        "SIGINT/SIGTERM); continue one with --resume OUT",
        flags.int_at_least(1),
    )
    max_skips: int = flags.flag(
        10,
        "updates in a row with a non-finite loss or gradient (each skipped) that stop the run",
        flags.int_at_least(1),
    )
    overwrite: bool = flags.flag(
        False,
        "reuse an --out folder that holds a previous run of this agent (only its own files are replaced; any "
        "other content is refused)",
        flags.boolean,
    )
    progress: bool = flags.flag(True, "show a tqdm progress bar (--no-progress to hide it)", flags.boolean)
    world_model: wm.WorldModelConfig = dataclasses.field(default_factory=wm.WorldModelConfig)
    agent: agent_train.AgentConfig = dataclasses.field(default_factory=agent_train.AgentConfig)

    def __post_init__(self):
        flags.check_fields(self)
        if not isinstance(self.world_model, wm.WorldModelConfig) or not isinstance(self.agent, agent_train.AgentConfig):
            raise ValueError("RunConfig: `world_model` and `agent` must be a WorldModelConfig and an AgentConfig.")
        derived = {"obs_dim": None, "action_dim": None, "cont_discount": 1.0}
        if any(getattr(self.world_model, name) != value for name, value in derived.items()):
            raise ValueError(
                "RunConfig: `world_model.obs_dim`, `action_dim` and `cont_discount` come from the env and "
                f"`--contdisc`; leave them at {derived}."
            )
        batch, length = self.agent.batch, self.agent.length
        if self.devices > 1 and (self.devices > jax.device_count() or batch % self.devices):
            raise ValueError(
                f"RunConfig: `--devices` {self.devices} must be at most jax.device_count() ({jax.device_count()}) "
                f"and divide `--batch` {batch}."
            )
        if self.model_extra_ratio > 0 and (self.agent.replay_context or self.agent.repval_grad or self.devices > 1):
            raise ValueError(
                "RunConfig: `--model-extra-ratio` is built for one device without --replay-context and --repval-grad "
                "(its world-model-only updates would neither store replay latents nor take the replay value "
                f"loss's gradient); got --devices {self.devices}, --replay-context {self.agent.replay_context}, "
                f"--repval-grad {self.agent.repval_grad}."
            )
        # Every stream must hold a whole replayed window when the first update comes, and keep one (with
        # --replay-context a window is one row longer).
        window = length + int(self.agent.replay_context)
        needs = "`--length`" + (" + 1 (--replay-context)" if self.agent.replay_context else "")
        if self.warmup // self.envs < window:
            raise ValueError(
                f"RunConfig: `--warmup` {self.warmup} gives each of the {self.envs} env(s) {self.warmup // self.envs} "
                f"steps before the first update, fewer than {needs} {window}; raise --warmup to at least "
                f"{window * self.envs}."
            )
        if self.stream_capacity() < window:
            raise ValueError(
                f"RunConfig: `--replay-capacity` {self.replay_capacity} gives each of the {self.envs} env(s) "
                f"{self.stream_capacity()} steps, fewer than {needs} {window}."
            )
        if self.warmup >= self.steps:
            raise ValueError(
                f"RunConfig: `--warmup` {self.warmup} is not below `--steps` {self.steps}: the run would never update."
            )

    @classmethod
    def from_flags(cls, **flags_: Any) -> RunConfig:
        """The run of these command-line flags (by field name, `model_lr=1e-4`), today's defaults elsewhere."""
        return cls().with_flags(**flags_)

    def with_flags(self, **flags_: Any) -> RunConfig:
        """This run with these flags changed (by field name); an unknown name is a TypeError naming it."""
        owner = {name: part for part in (None, *NESTED) for name in _flag_names(self, part)}
        unknown = sorted(set(flags_) - set(owner))
        if unknown:
            raise TypeError(f"RunConfig.with_flags: no flag named {unknown}; the flags are {sorted(owner)}.")
        nested = {
            part: dataclasses.replace(getattr(self, part), **{k: v for k, v in flags_.items() if owner[k] == part})
            for part in NESTED
        }
        return dataclasses.replace(self, **{k: v for k, v in flags_.items() if owner[k] is None}, **nested)

    def flag_values(self) -> dict[str, Any]:
        """Every flag's value by field name (`from_flags(**run.flag_values())`: the run, but fields without a flag)."""
        return {name: getattr(self if part is None else getattr(self, part), name)
                for part in (None, *NESTED) for name in _flag_names(self, part)}  # fmt: skip

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> RunConfig:
        """The config of `dataclasses.asdict(run)` (a `run.json`'s, checkpoint's or curve's `"run"`/`"config"`).

        Files written before 6 December 2026 hold every flag at one level; they read as the same run.
        A learning rule such a run predates is the value it was trained with (`agent_train.EARLIER_RULES`,
        LayerNorm), not today's default.
        """
        if "agent" not in fields:  # the flat layout of earlier files
            return cls.from_flags(**{**agent_train.EARLIER_RULES, "norm": wm.EARLIER_NORM, **fields})
        own = {k: v for k, v in fields.items() if k not in NESTED}
        return cls(
            **own,
            world_model=wm.WorldModelConfig.from_dict(fields["world_model"]),
            agent=agent_train.AgentConfig.from_dict(fields["agent"]),
        )

    def stream_capacity(self) -> int:
        """Replay steps kept per env copy (a run never stores more than twice its steps)."""
        return min(self.replay_capacity, self.steps * 2 + 10) // self.envs

    def model_configs(self, env: Any) -> tuple[Any, wm.WorldModelConfig]:
        """`(ActorConfig, WorldModelConfig)` for a gymnasium env's (or `envs.Envs`') spaces and this run's sizes."""
        action_space = getattr(env, "single_action_space", None) or env.action_space
        observation_space = getattr(env, "single_observation_space", None) or env.observation_space
        model = self.world_model
        actor_config = spaces.actor_config_for(
            action_space,
            distribution=self.distribution,
            layers=2,
            units=model.units,
            norm=model.norm,
            output_scale=self.actor_output_scale,
        )
        wm_config = dataclasses.replace(
            model,
            obs_dim=spaces.obs_dim_for(observation_space),
            action_dim=spaces.model_action_dim(actor_config),
            cont_discount=self.agent.discount if self.agent.contdisc else 1.0,
        )
        return actor_config, wm_config


NESTED = ("world_model", "agent")  # RunConfig's nested configs, whose flag fields are flags of the run


def _flag_names(run: RunConfig, part: str | None) -> list[str]:
    config = run if part is None else getattr(run, part)
    return [f.name for f in dataclasses.fields(config) if flags.is_flag(f)]


def evaluate_policy(env_id: str, act: Any, *, episodes: int, action_repeat: int = 1) -> np.ndarray:
    """Returns `[episodes]` returns of `act` on the real env, episode `i` reset with seed `EVAL_SEED_BASE + i`.

    The protocol of `evaluation.run_episodes` (every agent in this project is scored with it: the
    Dreamer agent here, SAC/DQN in `scripts/compare_baselines.py`), on `envs.make_env(env_id,
    action_repeat)`: flat observations, each action repeated. `act(obs [episodes, O] float32, first
    [episodes] bool)` returns one env action per episode (`first` is true at the resets).
    """
    return evaluation.run_episodes(
        lambda obs, t: act(obs, np.full(episodes, t == 0)),
        evaluation.eval_seeds(episodes),
        lambda: envs_lib.make_env(env_id, action_repeat),
    )


def random_act(env_id: str, episodes: int, seed: int) -> Any:
    """An `evaluate_policy` act function of uniform random actions (episode `i`'s space seeded `1000 seed + i`)."""
    action_spaces = [envs_lib.make_env(env_id).action_space for _ in range(episodes)]
    for i, space in enumerate(action_spaces):
        space.seed(seed * 1000 + i)
    return lambda obs, first: [space.sample() for space in action_spaces]


def agent_act(
    env_id: str,
    policy_step: Any,
    wm_params: Any,
    actor_params: Any,
    wm_config: wm.WorldModelConfig,
    actor_config: Any,
    *,
    episodes: int,
    deterministic: bool,
    seed: int = 0,
) -> Any:
    """An `evaluate_policy` act function of the agent: one batched `policy_step` per step, its own latents."""
    action_space = envs_lib.make_env(env_id).action_space
    state = {
        "latent": wm.initial_latent(wm_config, (episodes,)),
        "prev": jnp.zeros((episodes, spaces.model_action_dim(actor_config))),
        "counter": 0,
    }
    key = jax.random.key(seed)

    def act(obs: np.ndarray, first: np.ndarray) -> list[Any]:
        state["latent"], actions, state["prev"] = policy_step(
            wm_params, actor_params, state["latent"], state["prev"], obs, first, key, state["counter"],
            deterministic=deterministic,
        )  # fmt: skip
        state["counter"] += 1
        actions = np.asarray(actions)
        return [spaces.env_action(actor_config, a, action_space) for a in actions]

    return act


def loop_act(
    policy_step: Any,
    wm_params: Any,
    actor_params: Any,
    latent: Any,
    prev: Any,
    obs: np.ndarray,
    is_first: np.ndarray,
    key: jax.Array,
    step: int,
) -> tuple[Any, jax.Array, np.ndarray, np.ndarray]:
    """The training loop's acting step on `N` envs: `(latent, model action [N, A], action [N, A], model action [N, A])`.

    `obs [N, O]` and `is_first [N]` go into the jitted step as NumPy arrays, and the actions come
    back with one copy each: `jnp.asarray` on the inputs and indexing on the device are calls into
    JAX of their own, which nearly doubled this step's time on one env (the `agent-act` probe; the
    numbers are in benchmarks/README.md, "Round two, evening", **The agent's acting step**).
    """
    latent, action, model_action = policy_step(
        wm_params, actor_params, latent, prev, np.asarray(obs, np.float32), np.asarray(is_first, bool), key, step,
        deterministic=False,
    )  # fmt: skip
    return latent, model_action, np.asarray(action), np.asarray(model_action)


def _plot(curve: dict[str, Any], run: RunConfig, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = curve["evals"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, x_name, label in ((axes[0], "env_steps", "environment steps"), (axes[1], "wall_s", "wall time (s)")):
        x = np.array([e[x_name] for e in evals])
        for mode, color in (("deterministic", "C0"), ("sampled", "C1")):
            mean = np.array([e[mode]["mean"] for e in evals])
            std = np.array([e[mode]["std"] for e in evals])
            ax.plot(x, mean, "o-", color=color, label=mode)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
        ax.axhline(curve["random"]["mean"], color="gray", ls="--", label="random policy")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"return ({len(evals[0]['deterministic']['returns'])} fixed-seed episodes)")
    axes[0].legend()
    fig.suptitle(f"DreamerV3 agent, {run.env}, seed {run.seed}, {run.agent.estimator}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _stats(returns: np.ndarray) -> dict[str, Any]:
    return {"mean": float(np.mean(returns)), "std": float(np.std(returns)), "returns": [float(r) for r in returns]}


def make_replay(run: RunConfig, wm_config: wm.WorldModelConfig) -> Any:
    """The run's replay: one stream of `run.stream_capacity()` steps per env copy (with latents for
    `--replay-context`, an online queue for `--online-replay`)."""
    from dreamer_actor.agent.replay import ReplayStreams

    context = run.agent.replay_context
    latents = (wm_config.deter, wm_config.stoch) if context else None
    online = run.agent.length + int(context) if run.online_replay else None
    return ReplayStreams(
        run.envs, run.stream_capacity(), wm_config.obs_dim, wm_config.action_dim, seed=run.seed, latents=latents,
        online=online,
    )  # fmt: skip


class _Signals:
    """Turns the first SIGINT / SIGTERM into a flag the loop checks after each step (a second one acts at once)."""

    def __init__(self):
        self.received: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        for sig, handler in self.previous.items():  # a second signal is not deferred
            signal.signal(sig, handler)

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def provenance() -> dict[str, Any]:
    """What produced a run, for `run.json`: package and jax versions, the git commit of the code (None outside a
    git checkout; `git_dirty` when the checkout has uncommitted changes), the CPU model and Python."""
    import platform
    import subprocess

    import dreamer_actor

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=pathlib.Path(dreamer_actor.__file__).parent, capture_output=True, text=True,
                timeout=10,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "dreamer_actor": dreamer_actor.__version__,
        "git_commit": commit,
        "git_dirty": None if commit is None else bool(git("status", "--porcelain", "--untracked-files=no")),
        "jax": jax.__version__,
        "cpu": cpu,
        "python": platform.python_version(),
    }


def _write_json(path: pathlib.Path, content: Any) -> None:
    """Writes JSON through a temporary file and a rename: a reader never sees half a file."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(content, indent=1))
    os.replace(tmp, path)


def _config_differences(stored: dict[str, Any], run: RunConfig) -> list[str]:
    """Each field where `run` differs from the stored run, as its flag (or `agent.rho`, a field without one)."""
    ignored = {"progress", "overwrite", "out"}
    have, given = RunConfig.from_dict(stored), run
    differences = []
    for part in (None, *NESTED):
        old, new = (have, given) if part is None else (getattr(have, part), getattr(given, part))
        for f in dataclasses.fields(old):
            if f.name in ignored or f.name in NESTED or getattr(old, f.name) == getattr(new, f.name):
                continue
            name = flags.flag_name(f.name) if flags.is_flag(f) else f"{part}.{f.name}"
            differences.append(f"{name} {getattr(new, f.name)!r} (the run has {getattr(old, f.name)!r})")
    return differences


def stored_config(out: str | pathlib.Path) -> RunConfig:
    """The `RunConfig` of the run checkpointed in `out` (for `--resume`)."""
    state = run_checkpoint.read_state(pathlib.Path(out))
    return RunConfig.from_dict({**state["run"], "out": str(out)})


class _Loop:
    """Everything the training loop carries between steps, and its conversion to and from a checkpoint."""

    def __init__(self, run: RunConfig, envs: envs_lib.Envs, actor_config: Any, wm_config: wm.WorldModelConfig):
        self.run, self.envs = run, envs
        self.actor_config, self.wm_config = actor_config, wm_config
        self.config = run.agent
        self.state = agent_train.init_agent(jax.random.key(run.seed), wm_config, actor_config, self.config)
        self.replay = make_replay(run, wm_config)
        self.rng = np.random.default_rng(run.seed)
        n = run.envs
        self.latent = wm.initial_latent(wm_config, (n,))
        self.prev = jnp.zeros((n, wm_config.action_dim))
        self.obs = np.zeros((n, wm_config.obs_dim), np.float32)
        self.is_first = np.ones(n, bool)
        self.ep_return, self.ep_len, self.ep_frames = np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.counters = {
            "vector_steps": 0, "env_steps": 0, "frames": 0, "updates": 0, "owed": 0.0, "skipped": 0, "skips_in_row": 0,
            "model_updates": 0, "model_owed": 0.0,
        }  # fmt: skip
        self.wall_before = 0.0  # wall time of earlier sessions of this run
        self.curve: dict[str, Any] = {}

    def start(self) -> None:
        """A fresh run: reset the envs and store their first observations."""
        self.obs = self.envs.reset().astype(np.float32)
        for i in range(self.run.envs):
            self.replay.add(i, self.obs[i], np.zeros(self.wm_config.action_dim), 0.0, True, False)

    def _arrays(self, log: np.ndarray) -> dict[str, Any]:
        agent = flax.serialization.to_state_dict(self.state.replace(key=jax.random.key_data(self.state.key)))
        return {
            "agent": agent,
            "replay": self.replay.state_dict(),
            "loop": {
                "h": self.latent.h, "z": self.latent.z, "prev": self.prev, "obs": self.obs, "is_first": self.is_first,
                "ep_return": self.ep_return, "ep_len": self.ep_len, "ep_frames": self.ep_frames, "env_actions": log,
            },
        }  # fmt: skip

    def _set_agent(self, arrays: dict[str, Any]) -> None:
        like = self.state.replace(key=jax.random.key_data(self.state.key))
        agent = jax.tree.map(jnp.asarray, flax.serialization.from_state_dict(like, arrays))
        self.state = agent.replace(key=jax.random.wrap_key_data(agent.key))

    def restore_params(self, out: pathlib.Path) -> None:
        """Only the agent's state from `out`'s checkpoint (for `load` of a run stopped before its end)."""
        like = {"agent": flax.serialization.to_state_dict(self.state.replace(key=jax.random.key_data(self.state.key)))}
        arrays, _ = run_checkpoint.restore(out, like, subset=True)
        self._set_agent(arrays["agent"])

    def _log(self) -> np.ndarray:
        if self.envs.log:
            return np.stack(self.envs.log)
        space = self.envs.single_action_space
        return np.zeros((0, self.run.envs, *space.shape), space.dtype)

    def save(self, out: pathlib.Path, wall_s: float) -> None:
        state = {
            "run": dataclasses.asdict(self.run),
            "counters": self.counters,
            "rng": self.rng.bit_generator.state,
            "replay_rng": self.replay.rng.bit_generator.state,
            "wall_s": wall_s,
            "curve": self.curve,
        }
        run_checkpoint.save(out, self._arrays(self._log()), state)

    def restore(self, out: pathlib.Path) -> None:
        stored = run_checkpoint.read_state(out)
        differences = _config_differences(stored["run"], self.run)
        if differences:
            raise ValueError(
                f"dreamer_actor.agent: --resume {out}: the flags differ from the run's: {'; '.join(differences)}."
            )
        space = self.envs.single_action_space
        log_like = np.zeros((stored["counters"]["vector_steps"], self.run.envs, *space.shape), space.dtype)
        arrays, stored = run_checkpoint.restore(out, self._arrays(log_like))
        self._set_agent(arrays["agent"])
        self.replay.load_state_dict(arrays["replay"])
        loop = arrays["loop"]
        self.latent = wm.Latent(jnp.asarray(loop["h"]), jnp.asarray(loop["z"]))
        self.prev = jnp.asarray(loop["prev"])
        self.obs, self.is_first = np.asarray(loop["obs"]), np.asarray(loop["is_first"])
        self.ep_return, self.ep_len = np.array(loop["ep_return"]), np.array(loop["ep_len"])
        self.ep_frames = np.array(loop["ep_frames"])
        # Checkpoints from before --model-extra-ratio lack its counters.
        self.counters = {**self.counters, **stored["counters"]}
        self.curve, self.wall_before = stored["curve"], stored["wall_s"]
        self.curve.pop("interrupted", None)
        self.curve.setdefault("resumed", []).append({"env_steps": self.counters["env_steps"]})
        self.rng.bit_generator.state = stored["rng"]
        self.replay.rng.bit_generator.state = stored["replay_rng"]
        obs = self.envs.fast_forward(np.asarray(loop["env_actions"])).astype(np.float32)
        if not np.array_equal(obs, self.obs):
            raise RuntimeError(
                f"dreamer_actor.agent: --resume {out}: re-stepping {self.run.env} with the run's "
                f"{len(loop['env_actions'])} recorded action batches did not reach the observations it had "
                "(the env is not deterministic given its seed and actions), so this run cannot continue exactly."
            )


def _fresh_curve(run: RunConfig, random_returns: np.ndarray) -> dict[str, Any]:
    return {
        "config": dataclasses.asdict(run),
        "random": _stats(random_returns),
        "evals": [],
        "episodes": [],
        "losses": [],
        "skipped_updates": [],
    }


def _agent_meta(run: RunConfig, loop: _Loop) -> dict[str, Any]:
    space = loop.envs.single_action_space
    return {
        "env": run.env,
        "seed": run.seed,
        "world_model_config": dataclasses.asdict(loop.wm_config),
        "actor_config": loop.actor_config.to_dict(),
        "agent_config": dataclasses.asdict(loop.config),
        "discrete_start": int(space.start) if loop.actor_config.distribution == "categorical" else None,
        "action_dtype": str(space.dtype),
        "action_repeat": run.action_repeat,
        "run": dataclasses.asdict(run),
    }


def train_agent(run: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Trains one agent (see the package docstring); returns the curve dict (also `DIR/curve.json`).

    With `run.out`, the whole run is checkpointed to `DIR/resume/` every `save_every` env steps,
    at the end, when a SIGINT or SIGTERM arrives (the run then stops after the current step, and
    the curve has `"interrupted"`), and before a run is stopped by an error; `resume=True`
    continues the run checkpointed in `run.out` (its config must be `run`'s, `progress` aside)
    and ends as the same run never stopped would.

    Raises:
      ValueError: an env, folder or checkpoint that does not fit, before any training; or a
        non-finite observation or reward from the env (the last good state is saved first).
      FileExistsError: `run.out` holds something that is not this agent's run, or another run is using it.
      RuntimeError: `run.max_skips` updates in a row had a non-finite loss or gradient (saved first).
    """
    start_time = time.perf_counter()
    out = pathlib.Path(run.out) if run.out else None
    if resume and (out is None or not run_checkpoint.exists(out)):
        raise FileNotFoundError(
            f"dreamer_actor.agent: --resume {run.out}: no run checkpoint there (a run saves one every --save-every "
            "env steps, and when it is stopped)."
        )
    if out is not None and not resume:  # before the envs start: a bad folder fails in a second
        check_out_dir(out, overwrite=run.overwrite)
    if out is not None and resume and run_checkpoint.holder(out) is not None:
        raise FileExistsError(f"dreamer_actor.agent: the run folder {out} is in use by another run.")
    envs = envs_lib.Envs(run.env, run.envs, run.vector, run.seed, run.action_repeat)  # an unknown id fails here
    claim, created = None, out is not None and not out.exists()
    try:
        loop = _Loop(run, envs, *run.model_configs(envs))
        if out is not None:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise OSError(f"dreamer_actor.agent: cannot create the run folder {out} ({error.strerror}).") from error
            claim = run_checkpoint.Claim(out)
            if not resume:
                # Again, now that the folder is ours: nothing appeared meanwhile that is not a run's.
                check_out_dir(out, overwrite=run.overwrite, claimed=True)
                _remove_previous_run(out)
                _write_json(
                    out / RUN_FILE, {"format": RUN_FORMAT, "run": dataclasses.asdict(run), "written_by": provenance()}
                )
        if resume:
            loop.restore(out)
        else:
            random_returns = evaluate_policy(
                run.env,
                random_act(run.env, run.eval_episodes, run.seed),
                episodes=run.eval_episodes,
                action_repeat=run.action_repeat,
            )
            loop.curve = _fresh_curve(run, random_returns)
            loop.start()
        curve = _train(run, loop, out, start_time)
    except BaseException:
        if created and claim is not None and not (out / RUN_FILE).exists():  # failed before it began: no trace
            (out / run_checkpoint.LOCK_FILE).unlink(missing_ok=True)
            if not any(out.iterdir()):
                out.rmdir()
        raise
    finally:
        envs.close()
        if claim is not None:
            claim.release()
    return curve


def _train(run: RunConfig, loop: _Loop, out: pathlib.Path | None, start_time: float) -> dict[str, Any]:
    update = agent_train.make_update(loop.wm_config, loop.actor_config, loop.config, devices=run.devices)
    model_update = agent_train.make_model_update(loop.wm_config, loop.config)
    policy_step = agent_train.make_policy_step(loop.wm_config, loop.actor_config)
    act_key = jax.random.key(run.seed + 1)
    replayed_per_update = loop.config.batch * loop.config.length
    curve, c, n = loop.curve, loop.counters, run.envs
    action_dim, space = loop.wm_config.action_dim, loop.envs.single_action_space

    def wall() -> float:
        return loop.wall_before + time.perf_counter() - start_time

    def record_totals() -> None:
        curve["wall_s"], curve["updates"] = wall(), c["updates"]
        if run.model_extra_ratio:
            curve["model_updates"] = c["model_updates"]

    def save() -> None:
        if out is not None:
            record_totals()
            loop.save(out, wall())
            _write_json(out / "curve.json", curve)

    def do_eval() -> dict[str, Any]:
        began = time.perf_counter()
        entry = {"env_steps": c["env_steps"], "frames": c["frames"], "updates": c["updates"], "skipped": c["skipped"]}
        if run.model_extra_ratio:
            entry["model_updates"] = c["model_updates"]
        for mode in ("deterministic", "sampled"):
            act = agent_act(
                run.env, policy_step, loop.state.wm_params, loop.state.actor_params, loop.wm_config, loop.actor_config,
                episodes=run.eval_episodes, deterministic=mode == "deterministic", seed=run.seed,
            )  # fmt: skip
            returns = evaluate_policy(run.env, act, episodes=run.eval_episodes, action_repeat=run.action_repeat)
            entry[mode] = _stats(returns)
        entry["wall_s"], entry["eval_s"] = wall(), time.perf_counter() - began
        curve["evals"].append(entry)
        if out is not None:
            _write_json(out / "curve.json", curve)
        return entry

    def check_skip(m: dict[str, jax.Array]) -> bool:
        """Counts a skipped update (non-finite loss or gradient); stops the run after `max_skips` in a row."""
        if float(m["skipped"]) == 0:
            c["skips_in_row"] = 0
            return False
        c["skipped"] += 1
        c["skips_in_row"] += 1
        curve["skipped_updates"].append({"env_steps": c["env_steps"], "updates": c["updates"]})
        if c["skips_in_row"] >= run.max_skips:
            save()
            raise RuntimeError(
                f"dreamer_actor.agent: {c['skips_in_row']} updates in a row had a non-finite loss or "
                f"gradient (at env step {c['env_steps']}, update {c['updates']}); the run stops"
                + (f", and its last good state is saved in {out}." if out else ".")
            )
        return True

    metrics: dict[str, float] = {}
    bar = None
    if run.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.steps, initial=c["env_steps"], desc=run.env, unit="step", dynamic_ncols=True)
    with _Signals() as signals:
        while c["env_steps"] < run.steps:
            before, rng_state = c["env_steps"], loop.rng.bit_generator.state
            c["vector_steps"] += 1
            latent, model_action, actions, model_np = loop_act(
                policy_step, loop.state.wm_params, loop.state.actor_params, loop.latent, loop.prev, loop.obs,
                loop.is_first, act_key, c["vector_steps"],
            )  # fmt: skip
            if before < run.warmup:
                drawn = [spaces.random_actions(loop.actor_config, loop.rng) for _ in range(n)]
                actions, model_np = np.stack([d[0] for d in drawn]), np.stack([d[1] for d in drawn])
                model_action = jnp.asarray(model_np)
            env_actions = np.stack([spaces.env_action(loop.actor_config, a, space) for a in actions])
            step = loop.envs.step(env_actions)
            bad = ~(np.isfinite(step.obs).all(-1) & np.isfinite(step.reward))
            if step.reset_obs is not None:
                bad |= ~np.isfinite(step.reset_obs).all(-1)
            if bad.any():
                i = int(np.argmax(bad))
                loop.envs.log.pop()  # the checkpoint is the state before this step
                c["vector_steps"] -= 1
                loop.rng.bit_generator.state = rng_state
                save()
                raise ValueError(
                    f"dreamer_actor.agent: {run.env} (env copy {i}) returned a non-finite observation or reward at "
                    f"env step {before + i + 1} (reward {step.reward[i]!r}, observation {step.obs[i]!r}); the run "
                    "stops here so that no parameter learns from it"
                    + (f"; the last good state is in {out}." if out else ".")
                )  # fmt: skip
            loop.latent = latent
            if loop.config.replay_context:  # the posterior of the newest rows (the observations it just read)
                loop.replay.write_newest(np.asarray(latent.h), np.asarray(latent.z))
            done = step.terminated | step.truncated
            for i in range(n):
                loop.replay.add(i, step.obs[i], model_np[i], step.reward[i], False, step.terminated[i])
            loop.ep_return += step.reward
            loop.ep_len += 1
            loop.ep_frames += step.frames
            c["env_steps"] += n
            c["frames"] += int(step.frames.sum())
            for i in np.flatnonzero(done):
                episode = {"env_steps": c["env_steps"], "frames": c["frames"], "return": float(loop.ep_return[i])}
                curve["episodes"].append(
                    {**episode, "length": int(loop.ep_len[i]), "episode_frames": int(loop.ep_frames[i]), "env": int(i)}
                )
                loop.replay.add(i, step.reset_obs[i], np.zeros(action_dim), 0.0, True, False)
                loop.ep_return[i], loop.ep_len[i], loop.ep_frames[i] = 0.0, 0, 0
            loop.obs = (step.obs if step.reset_obs is None else step.reset_obs).astype(np.float32)
            loop.prev, loop.is_first = model_action, done
            if c["env_steps"] >= run.warmup:
                c["owed"] += n * run.train_ratio / replayed_per_update
                while c["owed"] >= 1.0:
                    if loop.config.replay_context:
                        batch, where = loop.replay.sample_with_context(
                            loop.config.batch, loop.config.length, loop.wm_config.classes
                        )
                    else:
                        batch = loop.replay.sample(loop.config.batch, loop.config.length)
                    loop.state, m, post = update(loop.state, batch)
                    c["owed"] -= 1.0
                    c["updates"] += 1
                    if check_skip(m):
                        continue
                    if loop.config.replay_context:  # the rows' latents as this update's world model filtered them
                        loop.replay.write_latents(where, np.asarray(post.h), np.asarray(post.z))
                    if c["updates"] % 25 == 1:
                        metrics = {k: float(v) for k, v in m.items()}
                        curve["losses"].append({"env_steps": c["env_steps"], "updates": c["updates"], **metrics})
                c["model_owed"] += n * run.model_extra_ratio / replayed_per_update
                while c["model_owed"] >= 1.0:
                    batch = loop.replay.sample(loop.config.batch, loop.config.length)
                    loop.state, m = model_update(loop.state, batch)
                    c["model_owed"] -= 1.0
                    c["model_updates"] += 1
                    check_skip(m)
            finished = c["env_steps"] >= run.steps
            if c["env_steps"] // run.eval_every > before // run.eval_every or finished:
                last = do_eval()
                metrics["eval"] = last["deterministic"]["mean"]
            if c["env_steps"] // run.save_every > before // run.save_every and not finished:
                save()
            if bar is not None:
                bar.update(n)
                if c["vector_steps"] % 50 == 0 or finished:
                    post = {"ep_ret": curve["episodes"][-1]["return"] if curve["episodes"] else float("nan")}
                    post.update({k: metrics[k] for k in ("wm_loss", "kl", "entropy", "eval") if k in metrics})
                    if c["skipped"]:
                        post["skipped"] = c["skipped"]
                    bar.set_postfix({k: f"{v:.3g}" for k, v in post.items()}, refresh=False)
            if signals.received and not finished:
                curve["interrupted"] = {"signal": signals.received, "env_steps": c["env_steps"]}
                save()
                break
    if bar is not None:
        bar.close()
    record_totals()
    if out is not None and "interrupted" not in curve:
        save()
        _plot(curve, run, out / "curve.png")
        agent_policy.save_agent(out, loop.state, _agent_meta(run, loop))
    curve = dict(curve)
    curve["state"] = loop.state
    return curve
