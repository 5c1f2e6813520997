"""float64 checks (x64 is process-global, so the library runs in a subprocess).

The subprocess enables `jax_enable_x64`, runs the library on fixed inputs and returns
raw numbers as JSON; the assertions below compare them, in this process, with numpy
float64 references, `scipy.integrate.quad` and Gaussian tail masses.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

REPO = Path(__file__).resolve().parents[1]

LOW, HIGH = [-2.0, 0.0, -1.0], [3.0, 0.5, 1.0]
MEAN = [[0.3, -0.5, 1.0], [0.0, 2.0, -1.0], [-3.0, 0.1, 4.0]]
LOG_STD = [[-0.2, 0.1, -1.0], [0.4, -0.5, 0.0], [-2.0, 1.0, 0.3]]
Y = [[0.5, -0.9, 0.99], [-0.999, 0.0, 0.3], [0.9999, -0.2, -0.7]]  # normalized actions in (-1, 1)
SATURATED_U = [12.0, -20.0, 35.0]
# (mean, std, low, high): a-space quadrature of the `action=` density, saturated spike included.
A_SPACE_CASES = [(0.0, 1.0, -1.0, 1.0), (0.5, 0.3, -2.0, 3.0), (5.0, 0.05, -1.0, 1.0), (-1.0, 2.0, -2.0, 3.0)]
# Substitution a = tanh(s) * scale + bias over |s| <= S_MAX (where float64 resolves a), std 5 included.
S_MAX = 12.0
SUBST_CASES = [*A_SPACE_CASES, (0.0, 5.0, -1.0, 1.0), (1.0, 5.0, -2.0, 3.0)]
ENTROPY_CASES = [(0.5, 0.3, -2.0, 3.0), (5.0, 0.05, -1.0, 1.0), (0.0, 5.0, -1.0, 1.0)]

SCRIPT = r"""
import json, math, sys, warnings
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads
from scipy import integrate
import dreamer_actor as da

inp = json.loads(sys.argv[1])
out = {"file": da.__file__}
f64 = lambda x: jnp.asarray(x, jnp.float64)
cfg = da.ActorConfig.create(low=inp["LOW"], high=inp["HIGH"])
# The bound leaves stay float32 (rounded inwards); the maths casts them to the inputs' float64. These bounds
# are exact in float32, so float64 inputs see the float64 bounds exactly (checked in the test below).
out["leaves"] = {n: [str(getattr(cfg, n).dtype), np.asarray(getattr(cfg, n), np.float64).tolist()]
                 for n in ("low", "high", "scale", "bias")}
mean, log_std = f64(inp["MEAN"]), f64(inp["LOG_STD"])
low, high = np.asarray(inp["LOW"]), np.asarray(inp["HIGH"])
action = f64(np.asarray(inp["Y"]) * (high - low) / 2 + (high + low) / 2)
lp = da.log_prob_with_tanh_correction(mean, log_std, cfg, action=action)
out["lp_action"], out["lp_dtype"] = np.asarray(lp).tolist(), str(lp.dtype)
u = jnp.broadcast_to(f64(inp["SATURATED_U"]), mean.shape)
out["lp_saturated"] = np.asarray(da.log_prob_with_tanh_correction(u, log_std, cfg, raw_sample=u)).tolist()
a, u_s = da.sample_action(jax.random.key(0), mean, log_std, cfg)
out["sample_dtypes"] = [str(a.dtype), str(u_s.dtype)]
ent = da.entropy_estimate(mean, log_std, cfg, key=jax.random.key(1), num_samples=4)
out["entropy_dtype"] = str(ent.dtype)

def one_dim(m, s, lo, hi):
    c = da.ActorConfig.create(low=lo, high=hi, action_dim=1)
    assert np.asarray(c.low, np.float64).tolist() == [lo] and np.asarray(c.high, np.float64).tolist() == [hi]
    return c, f64([m]), f64([math.log(s)])

def quad(f, lo, hi, points=None):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return integrate.quad(f, lo, hi, points=points, limit=500, epsabs=1e-10, epsrel=1e-10)[0]

out["a_space"] = []
for m, s, lo, hi in inp["A_SPACE_CASES"]:
    c, mm, ss = one_dim(m, s, lo, hi)
    logp = jax.jit(lambda x: da.log_prob_with_tanh_correction(mm, ss, c, action=jnp.reshape(x, (1,))))
    sc, b = (hi - lo) / 2, (hi + lo) / 2
    pts = sorted({float(np.tanh(m + k * s) * sc + b) for k in (-6, -3, -1, 0, 1, 3, 6)} - {lo, hi})
    pts = [p for p in pts if lo < p < hi]
    out["a_space"].append(quad(lambda x: math.exp(float(logp(x))), lo, hi, pts))

out["subst"] = []
for m, s, lo, hi in inp["SUBST_CASES"]:
    c, mm, ss = one_dim(m, s, lo, hi)
    logp = jax.jit(lambda x: da.log_prob_with_tanh_correction(mm, ss, c, action=jnp.reshape(x, (1,))))
    sc, b = (hi - lo) / 2, (hi + lo) / 2
    def integrand(t):
        # p(a(t)) * da/dt, a(t) = tanh(t) * scale + bias computed here in float64 numpy.
        log_da = math.log(sc) + math.log(4.0) - 2 * abs(t) - 2 * math.log1p(math.exp(-2 * abs(t)))
        return math.exp(float(logp(np.tanh(t) * sc + b)) + log_da)
    lo_t, hi_t = max(m - 12 * s, -inp["S_MAX"]), min(m + 12 * s, inp["S_MAX"])
    out["subst"].append(quad(integrand, lo_t, hi_t, [min(max(m, lo_t), hi_t)]))

out["entropy"] = []
for m, s, lo, hi in inp["ENTROPY_CASES"]:
    c, mm, ss = one_dim(m, s, lo, hi)
    k = 20000
    mk, sk = jnp.broadcast_to(mm, (k, 1)), jnp.broadcast_to(ss, (k, 1))
    _, uk = da.sample_action(jax.random.key(2), mk, sk, c)
    per = np.asarray(da.entropy_estimate(mk, sk, c, raw_sample=uk))
    out["entropy"].append([float(per.mean()), float(per.std(ddof=1) / math.sqrt(k))])

try:
    for path, given in (("raw_sample", u_s), ("action", a)):
        f = lambda m, s: da.log_prob_with_tanh_correction(m, s, cfg, **{path: given})
        check_grads(f, (mean, log_std), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
    out["check_grads"] = "ok"
except AssertionError as e:
    out["check_grads"] = str(e)[:2000]
print("JSON:" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def x64():
    inp = {k: v for k, v in globals().items() if k.isupper() and k not in ("SCRIPT", "REPO")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(inp)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("JSON:"))
    return json.loads(line[len("JSON:") :])


def test_subprocess_used_this_checkout(x64):
    assert Path(x64["file"]).resolve().is_relative_to(REPO)


def test_float64_log_prob_matches_numpy_formula(x64):
    low, high = np.asarray(LOW), np.asarray(HIGH)
    y, m, s = np.asarray(Y), np.asarray(MEAN), np.asarray(LOG_STD)
    u = np.arctanh(y)
    ref = np.sum(
        -0.5 * ((u - m) / np.exp(s)) ** 2 - s - 0.5 * np.log(2 * np.pi) - np.log((high - low) / 2) - np.log1p(-(y**2)),
        axis=-1,
    )
    assert x64["lp_dtype"] == "float64"
    # |y| up to 0.9999: atanh amplifies the float64 rounding of a by 1 / (1 - y^2) ~ 5e3.
    np.testing.assert_allclose(x64["lp_action"], ref, rtol=1e-10, atol=1e-10)


def test_float64_raw_sample_path_exact_far_in_the_tails(x64):
    low, high = np.asarray(LOW), np.asarray(HIGH)
    u = np.broadcast_to(np.asarray(SATURATED_U), (3, 3))
    s = np.asarray(LOG_STD)
    # mean = u so z = 0; log(1 - tanh(u)^2) = log 4 - 2|u| - 2 log1p(exp(-2|u|)).
    log_jac = np.log(4.0) - 2 * np.abs(u) - 2 * np.log1p(np.exp(-2 * np.abs(u)))
    ref = np.sum(-s - 0.5 * np.log(2 * np.pi) - np.log((high - low) / 2) - log_jac, axis=-1)
    np.testing.assert_allclose(x64["lp_saturated"], ref, rtol=1e-12)


def test_float32_bound_leaves_hold_these_bounds_exactly(x64):
    low, high = np.asarray(LOW), np.asarray(HIGH)
    expected = {"low": low, "high": high, "scale": (high - low) / 2, "bias": (high + low) / 2}
    for name, (dtype, value) in x64["leaves"].items():
        assert dtype == "float32", name
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


def test_float64_in_float64_out(x64):
    assert x64["sample_dtypes"] == ["float64", "float64"]
    assert x64["entropy_dtype"] == "float64"


@pytest.mark.parametrize("i", range(len(A_SPACE_CASES)))
def test_float64_action_density_integrates_to_one(x64, i):
    assert abs(x64["a_space"][i] - 1.0) < 1e-8, (A_SPACE_CASES[i], x64["a_space"][i])


@pytest.mark.parametrize("i", range(len(SUBST_CASES)))
def test_float64_action_density_integrates_to_the_mass_inside_the_resolved_range(x64, i):
    m, s, _, _ = SUBST_CASES[i]
    lo_t, hi_t = max(m - 12 * s, -S_MAX), min(m + 12 * s, S_MAX)
    mass = stats.norm.cdf(hi_t, m, s) - stats.norm.cdf(lo_t, m, s)
    assert abs(x64["subst"][i] - mass) < 1e-8, (SUBST_CASES[i], x64["subst"][i], mass)


def _quad_entropy(mean, std, low, high):
    from scipy import integrate

    scale = (high - low) / 2

    def integrand(u):
        log_n = -0.5 * ((u - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
        log_jac = math.log(4.0) - 2 * abs(u) - 2 * math.log1p(math.exp(-2 * abs(u)))
        return -math.exp(log_n) * (log_n - math.log(scale) - log_jac)

    return integrate.quad(integrand, mean - 12 * std, mean + 12 * std, limit=400, epsabs=1e-11)[0]


@pytest.mark.parametrize("i", range(len(ENTROPY_CASES)))
def test_float64_entropy_within_4_standard_errors_of_quadrature(x64, i):
    est, se = x64["entropy"][i]
    truth = _quad_entropy(*ENTROPY_CASES[i])
    assert abs(est - truth) < 4 * max(se, 1e-9), (ENTROPY_CASES[i], est, truth, se)


def test_float64_check_grads_tight(x64):
    assert x64["check_grads"] == "ok", x64["check_grads"]
