"""The public API: exported names, their order, the version, and the docstrings' examples."""

import doctest
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import pytest

import dreamer_actor
import dreamer_actor._src as src


def test_every_name_in_all_exists_and_all_is_sorted_and_unique():
    assert dreamer_actor.__all__, "empty __all__"
    for name in dreamer_actor.__all__:
        assert hasattr(dreamer_actor, name), name
    assert list(dreamer_actor.__all__) == sorted(dreamer_actor.__all__)
    assert len(set(dreamer_actor.__all__)) == len(dreamer_actor.__all__)


def test_version_is_a_string():
    assert isinstance(dreamer_actor.__version__, str)
    assert all(part.isdigit() for part in dreamer_actor.__version__.split(".")[:2])


def test_core_names_are_exported():
    core = {
        "Actor",
        "ActorConfig",
        "ActorOutput",
        "act",
        "actor_loss",
        "as_distrax",
        "checked_act",
        "checked_log_prob",
        "entropy_estimate",
        "log_prob_with_tanh_correction",
        "mode_action",
        "sample_action",
    }
    assert core <= set(dreamer_actor.__all__)


def test_public_functions_have_docstrings():
    for name in dreamer_actor.__all__:
        assert (getattr(dreamer_actor, name).__doc__ or "").strip(), name


SRC_MODULES = sorted(m.name for m in pkgutil.iter_modules(src.__path__))


@pytest.mark.parametrize("module_name", SRC_MODULES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(f"dreamer_actor._src.{module_name}")
    globs = {"jax": jax, "jnp": jnp, **{n: getattr(dreamer_actor, n) for n in dreamer_actor.__all__}}
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module.__name__, globs=dict(globs)):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"


def test_the_core_docstrings_have_examples():
    globs = {"jax": jax, "jnp": jnp}
    finder = doctest.DocTestFinder(exclude_empty=True)
    for module_name in ("config", "tanh_normal", "losses", "act"):
        module = importlib.import_module(f"dreamer_actor._src.{module_name}")
        examples = sum(len(t.examples) for t in finder.find(module, globs=globs))
        assert examples > 0, module_name
