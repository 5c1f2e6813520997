"""The README's Python snippets run as written (they are the first thing a newcomer copies)."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


def test_quickstart_runs_and_produces_sane_outputs():
    (code,) = _python_blocks("Quickstart")
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
