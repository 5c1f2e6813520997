"""The public API, pinned: exported names, one path per verb, public signatures, the docstrings' examples."""

import doctest
import importlib
import inspect
import pkgutil

import jax
import jax.numpy as jnp
import pytest

import dreamer_actor
import dreamer_actor._src as src

TOP_LEVEL = (
    "Actor",
    "ActorConfig",
    "ActorOutput",
    "Checkpoint",
    "ReturnNormalizer",
    "ReturnNormalizerState",
    "act",
    "actor_loss",
    "bounded_normal",
    "categorical",
    "checked_act",
    "checked_log_prob",
    "distributions",
    "entropy_estimate",
    "imagination_weights",
    "lambda_returns",
    "log_prob_with_tanh_correction",
    "make_actor_train_step",
    "networks",
    "normalize_advantage",
    "policy_entropy",
    "policy_head",
    "policy_log_prob",
    "policy_loss",
    "policy_mode",
    "policy_sample",
    "restore_checkpoint",
    "sample_action",
    "save_checkpoint",
    "tanh_normal",
    "train",
)
FAMILIES = ("tanh_normal", "bounded_normal", "categorical")
VERBS = ("head", "sample", "log_prob", "entropy", "mode")  # one public path each: `policy_<verb>`
SUBMODULES = {
    "tanh_normal": {
        "Params",
        "as_distrax",
        "entropy_estimate",
        "gaussian_entropy",
        "log1m_tanh_sq",
        "log_prob_with_tanh_correction",
        "mode_action",
        "sample_action",
        "squash",
        "unsquash",
    },
    "bounded_normal": {"Params"},
    "categorical": {"Params", "log_probs", "probs"},
    "distributions": {"get", "names", "register", "unregister"},
    "networks": {"MLP", "Actor", "RMSNorm", "flatten_latent"},
    "train": {"ESTIMATORS", "act_per_example", "example_keys", "make_actor_loss_fn", "make_actor_train_step"},
}


def test_the_top_level_surface_is_exactly_the_pinned_one():
    assert tuple(dreamer_actor.__all__) == TOP_LEVEL
    assert list(TOP_LEVEL) == sorted(TOP_LEVEL)
    for name in TOP_LEVEL:
        assert hasattr(dreamer_actor, name), name
    # The programs beside the library (not API) appear as attributes once something imports them.
    programs = {"agent", "demo", "examples"}
    public = {n for n in vars(dreamer_actor) if not n.startswith("_")} - programs
    assert public == set(TOP_LEVEL), public ^ set(TOP_LEVEL)


@pytest.mark.parametrize("module_name", sorted(SUBMODULES))
def test_each_namespace_exports_exactly_its_pinned_names(module_name):
    module = getattr(dreamer_actor, module_name)
    assert set(module.__all__) == SUBMODULES[module_name]
    public = {n for n in vars(module) if not n.startswith("_")}
    assert public == SUBMODULES[module_name], public ^ SUBMODULES[module_name]
    for name in module.__all__:
        assert (getattr(module, name).__doc__ or "").strip(), f"{module_name}.{name} has no docstring"


@pytest.mark.parametrize("family", FAMILIES)
def test_each_verb_has_one_public_path_the_policy_function(family):
    # The family modules hold their parameters and their own maths, not a second copy of the verbs.
    module = getattr(dreamer_actor, family)
    for verb in VERBS:
        assert not hasattr(module, verb), (family, verb)
        assert callable(getattr(dreamer_actor, f"policy_{verb}"))


def _public_callables():
    for module in (dreamer_actor, *(getattr(dreamer_actor, name) for name in SUBMODULES)):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and not inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj


def test_no_public_signature_carries_a_private_keyword():
    for name, obj in _public_callables():
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        assert not [p for p in params if p.startswith("_")], name


def test_one_vocabulary_raw_sample_not_pre_tanh():
    for name in TOP_LEVEL:
        obj = getattr(dreamer_actor, name)
        if callable(obj) and not inspect.isclass(obj):
            try:
                params = inspect.signature(obj).parameters
            except (TypeError, ValueError):
                continue
            assert "pre_tanh" not in params, name


def test_version_is_a_string():
    assert isinstance(dreamer_actor.__version__, str)
    assert all(part.isdigit() for part in dreamer_actor.__version__.split(".")[:2])


def test_public_functions_have_docstrings():
    for name in dreamer_actor.__all__:
        assert (getattr(dreamer_actor, name).__doc__ or "").strip(), name


SRC_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(src.__path__, prefix="dreamer_actor._src.")
    if not m.ispkg or m.name.endswith("distributions")
)


@pytest.mark.parametrize("module_name", SRC_MODULES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    globs = {**vars(module), "jax": jax, "jnp": jnp, **{n: getattr(dreamer_actor, n) for n in dreamer_actor.__all__}}
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module.__name__, globs=dict(globs)):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"


def test_the_core_docstrings_have_examples():
    globs = {"jax": jax, "jnp": jnp}
    finder = doctest.DocTestFinder(exclude_empty=True)
    for module_name in ("config", "tanh_normal_api", "policy", "losses", "act"):
        module = importlib.import_module(f"dreamer_actor._src.{module_name}")
        examples = sum(len(t.examples) for t in finder.find(module, globs=globs))
        assert examples > 0, module_name


def test_importing_the_package_does_not_import_distrax_or_orbax():
    """distrax (and the tfp-nightly it pulls in) loads only for `as_distrax`; orbax only for checkpoints."""
    import subprocess
    import sys

    modules = "('distrax', 'orbax', 'tensorflow_probability')"
    code = f"import sys, dreamer_actor; print(sorted(m for m in {modules} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
