"""The Python snippets of the README and docs/ run as written (they are the first thing a newcomer copies)."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
INSIDE_AN_AGENT = ROOT / "docs" / "inside_an_agent.md"


def _python_blocks(path: Path, section: str) -> list[str]:
    text = path.read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


def test_quickstart_runs_and_produces_sane_outputs():
    (code,) = _python_blocks(README, "Quickstart")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    config = namespace["config"]
    action = namespace["action"]
    assert action.shape == (16, 2)
    low, high = jnp.broadcast_to(config.low, action.shape), jnp.broadcast_to(config.high, action.shape)
    assert bool(jnp.all((action >= low) & (action <= high)))
    grads = namespace["grads"]
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


def test_dreamer_agent_snippet_runs_one_update_that_changes_the_policy():
    (code,) = _python_blocks(INSIDE_AN_AGENT, "Using it inside a Dreamer agent")
    namespace: dict = {}
    exec(compile(code, str(INSIDE_AN_AGENT), "exec"), namespace)
    metrics, T, B = namespace["metrics"], namespace["T"], namespace["B"]
    assert all(bool(jnp.isfinite(v)) for v in jax.tree.leaves(metrics))
    # The normalizer saw one batch of [T, B] returns: its statistics moved off their init.
    norm_state = namespace["norm_state"]
    assert int(norm_state.count) == 1 and float(norm_state.hi) > float(norm_state.lo)
    # The update moved the actor (Adam's first step moves every entry with a nonzero gradient).
    before = namespace["actor"].init(jax.random.key(0), namespace["starts_h"], namespace["starts_z"])
    moved = [
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(namespace["params"]), jax.tree.leaves(before), strict=True)
    ]
    assert max(moved) > 1e-6
    # The imagined trajectory had the documented shapes: one loss term per (t, b).
    out = namespace["da"].act(
        before, namespace["config"], jnp.zeros((T, B, 32)), jnp.zeros((T, B, 4, 4)), jax.random.key(0), training=True
    )
    assert out.log_prob.shape == (T, B) and out.entropy.shape == (T, B)


def test_agent_docs_python_snippet_makes_the_run_it_says(monkeypatch):
    """docs/agent.md's `RunConfig.from_flags` snippet, with `train_agent` standing in (no training here)."""
    from dreamer_actor.agent import run as agent_run

    (code,) = _python_blocks(ROOT / "docs" / "agent.md", "How it works")
    monkeypatch.setattr(agent_run, "train_agent", lambda run: {"run": run})
    namespace: dict = {}
    exec(compile(code, "docs/agent.md", "exec"), namespace)
    run = namespace["curve"]["run"]
    assert (run.env, run.out, run.world_model.units, run.agent.batch) == ("CartPole-v1", "runs/cartpole", 64, 8)
    assert run == agent_run.RunConfig.from_flags(env="CartPole-v1", units=64, batch=8, out="runs/cartpole")
