"""The walkthrough notebook: one jupytext percent source, on the 1.0 API, and it runs.

`notebooks/dreamer_actor_walkthrough.py` is the only source (`# %%` code cells, `# %%
[markdown]` cells); the `.ipynb` is built from it (`make notebook`, into the git-ignored
`build/notebooks/`) and never committed. The slow test here executes it with `nbclient` in a
subprocess (its own Jupyter kernel, started from this interpreter's environment) with
`DREAMER_ACTOR_NOTEBOOK_QUICK=1`, and also checks what the cells print and display. The
cells carry their own checks against independent references (quadrature of the densities, a
Monte-Carlo value of the naive integral, the Gaussian approximation of the bandit's optimal
spread, a pendulum policy that beats random), so a wrong number fails a cell and therefore
this test.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = ROOT / "notebooks" / "dreamer_actor_walkthrough.py"

# Names the 1.0 API removed or moved off the top level: the notebook must not use them.
_REMOVED = re.compile(
    r"\bpre_tanh\b"
    r"|\bda\.(squash|unsquash|log1m_tanh_sq|gaussian_entropy|mode_action|as_distrax|standard_normal"
    r"|example_keys|act_per_example|make_actor_loss_fn|RMSNorm|flatten_latent)\b"
    r"|\bda\.(bounded_normal|categorical)_\w+"
)


@pytest.fixture(scope="module")
def notebook():
    return jupytext.read(SOURCE)


def _cells(notebook, kind: str) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == kind]


def test_source_is_a_percent_notebook(notebook):
    text = SOURCE.read_text()
    assert jupytext.formats.guess_format(text, ".py")[0] == "percent"
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    code, markdown = _cells(notebook, "code"), _cells(notebook, "markdown")
    assert len(code) >= 8 and len(markdown) >= 8
    assert len(notebook.cells) == len(code) + len(markdown), "only code and markdown cells"
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    # Every cell comes from an explicit marker (no implicit cell before the first `# %%`, no
    # code swallowed into a markdown cell).
    assert text.count("\n# %%") == len(notebook.cells)
    for cell in code:
        assert cell.source.strip(), "empty code cell"
        ast.parse(cell.source)
    headings = [line for cell in markdown for line in cell.source.splitlines() if line.startswith("## ")]
    assert [h.split()[1] for h in headings[:5]] == ["1.", "2.", "3.", "4.", "5."], headings


def test_round_trip_is_stable(notebook):
    # What Jupyter (with jupytext) writes back parses to the same cells: no drift on a save.
    again = jupytext.reads(jupytext.writes(notebook, fmt="py:percent"), fmt="py:percent")
    assert [(c.cell_type, c.source) for c in again.cells] == [(c.cell_type, c.source) for c in notebook.cells]
    built = jupytext.reads(jupytext.writes(notebook, fmt="ipynb"), fmt="ipynb")
    assert [(c.cell_type, c.source) for c in built.cells] == [(c.cell_type, c.source) for c in notebook.cells]
    assert all(c.outputs == [] and c.execution_count is None for c in _cells(built, "code"))


def test_uses_the_1_0_api_and_the_quick_switch(notebook):
    code = "\n".join(cell.source for cell in _cells(notebook, "code"))
    removed = sorted({m.group(0) for m in _REMOVED.finditer(code)})
    assert not removed, f"the notebook uses names the 1.0 API removed: {removed}"
    for piece in (
        "da.policy_head(",
        "raw_sample=",
        ".raw_sample",
        "da.tanh_normal.unsquash(",
        "da.tanh_normal.mode_action(",
        "da.log_prob_with_tanh_correction(",
        "da.entropy_estimate(",
        "da.actor_loss(",
        "training=True",
        "deterministic=True",
        "plt.show()",
    ):
        assert piece in code, f"the notebook no longer shows {piece!r}"
    assert 'os.environ.get("DREAMER_ACTOR_NOTEBOOK_QUICK"' in code
    assert "quick={QUICK}" in code  # what the run test looks for in the output


def test_no_generated_copies_are_tracked():
    # One source of truth: neither the old builder nor a committed .ipynb next to the source.
    assert not (ROOT / "notebooks" / "build_notebook.py").exists()
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    listed = subprocess.run(["git", "ls-files", "notebooks"], cwd=ROOT, capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    assert not [p for p in listed.stdout.split() if p.endswith(".ipynb")], listed.stdout


_EXECUTE = textwrap.dedent(
    """
    import sys
    import jupytext
    import nbclient
    import nbformat

    notebook = jupytext.read(sys.argv[1])
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": sys.argv[3]}}
    )
    client.execute()
    nbformat.write(notebook, sys.argv[2])
    """
)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
    executed = tmp_path / "executed.ipynb"
    env = dict(os.environ)
    env["DREAMER_ACTOR_NOTEBOOK_QUICK"] = "1"
    env["JAX_NUMPY_RANK_PROMOTION"] = "raise"  # the suite's strict numerics, in the kernel too
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("MPLBACKEND", None)  # let the kernel use its inline backend
    # The "python3" kernelspec launches `python`; put this interpreter's environment first on PATH
    # (jupyter_client also maps a bare `python` to the launching interpreter).
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(
        [sys.executable, "-c", _EXECUTE, str(SOURCE), str(executed), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"notebook failed:\n{result.stdout[-5000:]}\n{result.stderr[-10000:]}"

    notebook = json.loads(executed.read_text())
    cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["execution_count"] is not None for cell in cells)
    outputs = [output for cell in cells for output in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    stderr = "".join("".join(o["text"]) for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr")
    assert "Warning" not in stderr, f"the notebook's cells emit warnings:\n{stderr[-5000:]}"
    figures = [o for o in outputs if o["output_type"] == "display_data" and "image/png" in o["data"]]
    assert len(figures) >= 3, f"expected the density, bandit and pendulum figures, got {len(figures)}"
    text = "".join("".join(o["text"]) for o in outputs if o["output_type"] == "stream")
    assert "quick=True" in text
