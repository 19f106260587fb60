"""Calibration: the critical gain (checked by a second method and by measurement), the
variance-preserving gain over deep networks, its scheme, and LSUV."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

import initscope
from initscope import calibrate, schemes, theory
from initscope.activations import SELU_ALPHA, SELU_SCALE

# ---- importing ----------------------------------------------------------------------------------


def test_import_initscope_leaves_theory_and_calibrate_for_first_use():
    code = (
        "import sys, initscope\n"
        "heavy = {'initscope.theory', 'initscope.calibrate', 'pandas', 'matplotlib', 'numba',\n"
        "         'dask'} & set(sys.modules)\n"
        "assert not heavy, sorted(heavy)\n"
        "assert {'theory', 'calibrate'} <= set(dir(initscope))\n"
        "assert {'theory', 'calibrate'} <= set(initscope.__all__)\n"
        "assert initscope.theory.fixed_point('tanh', 1.0).chi1 == 1.0\n"
        "from initscope import calibrate\n"
        "assert calibrate is sys.modules['initscope.calibrate'] is initscope.calibrate\n"
        "try:\n"
        "    initscope.no_such_name\n"
        "except AttributeError as error:\n"
        "    assert 'no_such_name' in str(error)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# ---- the critical gain ------------------------------------------------------------------------


def test_critical_gains_at_zero_bias():
    assert calibrate.critical_gain("tanh") == 1.0
    assert calibrate.critical_gain("relu") == pytest.approx(math.sqrt(2.0), rel=1e-15)
    assert calibrate.critical_gain(("leaky_relu", 0.2)) == pytest.approx(math.sqrt(2 / 1.04))
    assert calibrate.critical_gain("linear") == 1.0
    assert calibrate.critical_gain("elu") == 1.0  # the line's end at q* = 0 attracts
    # selu: E[φ'²] -> λ² (1 + α²) / 2 as q* -> 0 (φ' jumps from λα to λ at 0)
    selu = math.sqrt(2 / (SELU_SCALE**2 * (1 + SELU_ALPHA**2)))
    assert calibrate.critical_gain("selu") == pytest.approx(selu, rel=1e-14)


def _second_method(sigma_b: float) -> float:
    """σ_w with χ₁ = 1 for tanh, by another route: a 200-point Gauss-Hermite rule, the length
    map iterated to its fixed point, and bisection on σ_w."""
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / math.sqrt(2 * math.pi)

    def chi1(sigma_w):
        q = 1.0
        for _ in range(2000):
            q_new = sigma_w**2 * float((w * np.tanh(math.sqrt(q) * z) ** 2).sum()) + sigma_b**2
            if abs(q_new - q) <= 1e-15 * q:
                break
            q = q_new
        return sigma_w**2 * float((w * (1 - np.tanh(math.sqrt(q) * z) ** 2) ** 2).sum())

    lo, hi = 0.5, 3.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if chi1(mid) < 1 else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("sigma_b", [0.05, 0.2, 0.5])
def test_critical_gain_of_tanh_by_a_second_method(sigma_b):
    assert calibrate.critical_gain("tanh", sigma_b) == pytest.approx(
        _second_method(sigma_b), rel=1e-9
    )


def test_measured_chi1_changes_sign_across_the_critical_line():
    sigma_b, width = 0.3, 300
    critical = calibrate.critical_gain("tanh", sigma_b)
    chi1 = {}
    for shift in (-0.15, 0.15):
        sigma_w = critical + shift
        result = initscope.propagate(
            [width] * 30,
            init=schemes.normal(std=sigma_w / math.sqrt(width)),
            bias=sigma_b,
            n_samples=200,
        )
        chi1[shift] = result.chi1[-10:]  # the last layers, at the fixed point
    assert np.all(chi1[-0.15] < 1) and np.all(chi1[0.15] > 1)


def test_critical_gain_refuses_with_the_reason():
    with pytest.raises(ValueError, match="single point"):
        calibrate.critical_gain("relu", 0.1)
    with pytest.raises(ValueError, match="unstable.*repels"):
        calibrate.critical_gain("gelu")
    with pytest.raises(ValueError, match=r"V'\(q\*\) = 1\.09"):
        calibrate.critical_gain("gelu", 0.1)
    with pytest.raises(ValueError, match="no critical point"):
        calibrate.critical_gain("softplus", 0.1)
    assert calibrate.critical_gain("gelu", allow_unstable=True) == 2.0
    # gelu's line is stable once σ_b is large enough: then there is an answer
    assert 1.38 < calibrate.critical_gain("gelu", 1.0) < 1.42
    with pytest.raises(ValueError, match="sigma_b"):
        calibrate.critical_gain("tanh", -0.1)


def test_sigmoid_is_critical_far_out():
    sigma_w = calibrate.critical_gain("sigmoid")
    fp = theory.fixed_point("sigmoid", sigma_w, 0.0)
    assert fp.chi1 == pytest.approx(1.0, rel=1e-9) and fp.stable and fp.q_star > 10


# ---- the variance-preserving gain ----------------------------------------------------------------


def test_variance_preserving_gains():
    assert calibrate.variance_preserving_gain("relu") == pytest.approx(math.sqrt(2))
    assert calibrate.variance_preserving_gain("relu", 0.1) == pytest.approx(math.sqrt(2 * 0.99))
    # selu's constants are chosen so that E[selu(z)²] = 1: σ_w = 1 keeps q = 1
    assert calibrate.variance_preserving_gain("selu") == pytest.approx(1.0, abs=1e-9)
    z, w = np.polynomial.hermite_e.hermegauss(300)  # E[tanh(z)²] by another rule
    moment = float((w * np.tanh(z) ** 2).sum()) / math.sqrt(2 * math.pi)
    assert calibrate.variance_preserving_gain("tanh", 0.5, 1.0) == pytest.approx(
        math.sqrt((1.0 - 0.25) / moment), rel=1e-10
    )
    assert calibrate.variance_preserving_gain("tanh", 0.5, 4.0, input_sq_mean=2.0) == (
        pytest.approx(math.sqrt(3.75 / 2.0))
    )
    with pytest.raises(ValueError, match="target_q"):
        calibrate.variance_preserving_gain("tanh", 1.0, 1.0)
    with pytest.raises(ValueError, match="target_q"):
        calibrate.variance_preserving_gain("tanh", 0.0, 0.0)


WIDE, DEEP = 1000, 50


@pytest.fixture(scope="module")
def calibrated_runs():
    runs = {}
    for activation in ("tanh", "selu", "relu", "gelu", "sigmoid"):
        for sigma_b in (0.0, 0.1):
            init = calibrate.calibrated_init(DEEP, activation, sigma_b)
            runs[activation, sigma_b] = initscope.propagate(
                [WIDE] * DEEP, init=init, activation=activation, bias=sigma_b, n_samples=100
            )
    return runs


@pytest.mark.parametrize("sigma_b", [0.0, 0.1])
@pytest.mark.parametrize("activation", ["tanh", "selu"])
def test_variance_preserving_gain_keeps_the_std(calibrated_runs, activation, sigma_b):
    result = calibrated_runs[activation, sigma_b]
    assert np.all(np.abs(result.pre_std - 1.0) <= 0.05)
    predicted = theory.gaussian_moments(activation, 1.0)
    assert np.all(np.abs(result.std / math.sqrt(predicted.var) - 1.0) <= 0.05)
    np.testing.assert_allclose(result.weight_var[1:], calibrate.variance_preserving_gain(
        activation, sigma_b) ** 2)  # fmt: skip


@pytest.mark.parametrize("sigma_b", [0.0, 0.1])
@pytest.mark.parametrize("activation", ["relu", "gelu", "sigmoid"])
def test_where_finite_width_moves_the_std_the_spread_says_so(calibrated_runs, activation, sigma_b):
    # mean-field keeps q = 1 in every layer; one network at width 1000 wanders around it: as
    # a random walk for relu (V' = 1), away from it for gelu (V' > 1: the fixed point is
    # unstable), by the O(1/√width) noise of correlated samples for sigmoid (E[φ] != 0)
    result = calibrated_runs[activation, sigma_b]
    prediction = result.theory()
    np.testing.assert_allclose(prediction.pre_std, 1.0, rtol=1e-12)
    spread = prediction.spread["pre_std"]
    linear = spread < 0.1  # where the first-order spread model holds
    assert linear[:10].all()
    z = (result.pre_std - 1.0) / spread
    assert np.all(np.abs(z[linear]) <= 4.0)
    slope = theory.fixed_point(activation, calibrate.variance_preserving_gain(activation, sigma_b),
                               sigma_b, q_init=1.0).length_slope  # fmt: skip
    if activation == "gelu":
        assert slope > 1.1 and abs(result.pre_std[-1] - 1.0) > 0.05
    else:
        assert slope <= 1.0 + 1e-12


def test_calibrated_scheme():
    scheme = calibrate.calibrated("gelu", sigma_b=0.1)
    gain = calibrate.variance_preserving_gain("gelu", 0.1)
    assert scheme.gain == pytest.approx(gain)
    dist = scheme.distribution(400, 10)
    assert dist.kind == "normal" and dist.b == pytest.approx(gain / 20.0)
    uniform = calibrate.calibrated("tanh", distribution_kind="uniform").distribution(300, 7)
    assert uniform.kind == "uniform" and (uniform.b - uniform.a) ** 2 / 12 * 300 == pytest.approx(
        calibrate.variance_preserving_gain("tanh") ** 2
    )
    result = initscope.propagate([50, 50], init=scheme, activation="gelu", n_samples=20)
    np.testing.assert_allclose(result.weight_var, gain**2)
    first = calibrate.calibrated_init(3, "tanh", input_sq_mean=4.0)
    assert first[0].gain == pytest.approx(0.5) and first[1] is first[2]
    with pytest.raises(ValueError, match="distribution_kind"):
        calibrate.calibrated("tanh", distribution_kind="cauchy")
    with pytest.raises(ValueError, match="sigma_b"):
        calibrate.calibrated("tanh", sigma_b=2.0)


# ---- LSUV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_lsuv_reaches_the_target_at_every_layer(activation):
    widths, tol = [100] * 50, 0.01
    found = calibrate.lsuv(widths, activation, n_samples=300, tol=tol, seed=3)
    assert found.converged.all() and found.iterations.max() <= 3
    assert np.all(np.abs(found.std - 1.0) <= tol)
    # the schemes rebuild the calibrated network: a run of it measures what LSUV did
    result = initscope.propagate(
        widths, init=list(found.init), activation=activation, n_samples=300, seed=3
    )
    np.testing.assert_array_equal(result.pre_std, found.std)  # the same runs, bit for bit
    assert np.all(np.abs(result.pre_std - 1.0) <= tol)
    # orthogonal weights: the scales are the gains that keep the signal (relu: about √2)
    # (each layer's varies by the O(1/√width) fluctuation of its norm; their mean does not)
    if activation == "relu":
        typical = math.exp(np.log(found.scales[5:]).mean())
        assert typical == pytest.approx(math.sqrt(2), rel=0.05)
    w = initscope.make_weights(found.init[7], 100, 100, seed=3, layer=7)
    base = initscope.make_weights("orthogonal", 100, 100, seed=3, layer=7)
    np.testing.assert_array_equal(w, base * found.scales[7])


def test_lsuv_with_a_drawn_scheme_and_biases_and_the_post_activation_std():
    found = calibrate.lsuv([80] * 6, "tanh", init="xavier", bias=0.1, n_samples=200,
                           statistic="std", target_std=0.5)  # fmt: skip
    assert found.converged.all()
    dist = found.init[2].distribution(80, 80)
    assert dist is not None and dist.b == pytest.approx(found.scales[2] / math.sqrt(80))
    result = initscope.propagate([80] * 6, init=list(found.init), bias=0.1, n_samples=200)
    np.testing.assert_array_equal(result.std, found.std)
    assert np.all(np.abs(result.std / 0.5 - 1) <= 0.01)


@pytest.mark.parametrize("backend", initscope.available_backends())
def test_lsuv_runs_on_the_engine_of_every_backend(backend):
    # four inputs per sample, float32, biases, chunks of 240 samples, one thread: the runs
    # LSUV measures are the ones a propagate of its schemes makes, chunk for chunk
    config = dict(input_dim=4, n_samples=500, bias=[0.0, 0.2, 0.1], seed=5, dtype="float32")
    found = calibrate.lsuv([40, 60, 30], "tanh", **config, backend=backend, threads=1,
                           chunk_size=240)  # fmt: skip
    assert found.converged.all() and found.scales[0] > 1.5  # q of 4 inputs: far from 1
    result = initscope.propagate([40, 60, 30], init=list(found.init), **config,
                                 backend=backend, chunk_size=240)  # fmt: skip
    np.testing.assert_array_equal(result.pre_std, found.std)
    # user inputs are the batch, as in propagate
    x = np.random.default_rng(1).normal(size=(300, 7)) * 3.0
    given = calibrate.lsuv([20, 20], "relu", init="he_normal", inputs=x, backend=backend)
    again = initscope.propagate([20, 20], init=list(given.init), activation="relu", inputs=x,
                                backend=backend)  # fmt: skip
    np.testing.assert_array_equal(again.pre_std, given.std)
    assert np.all(np.abs(again.pre_std - 1.0) <= 0.01)


def test_lsuv_checks_the_memory_of_the_whole_network_first():
    with pytest.raises(ValueError, match="lsuv: .*max_memory"):
        calibrate.lsuv([30] * 3, "tanh", n_samples=50, max_memory=1000)


def test_lsuv_warns_and_refuses():
    with pytest.warns(RuntimeWarning, match="did not reach"):
        calibrate.lsuv([30] * 3, "tanh", init="xavier", n_samples=50, max_iter=0)
    with pytest.raises(ValueError, match="dead"):
        calibrate.lsuv([30] * 3, "tanh", init="zeros", n_samples=50)
    with pytest.raises(ValueError, match="tol"):
        calibrate.lsuv([30] * 3, "tanh", tol=0.0)
    with pytest.raises(ValueError, match="statistic"):
        calibrate.lsuv([30] * 3, "tanh", statistic="var")
    with pytest.raises(TypeError, match="max_iter must be an integer"):
        calibrate.lsuv([30] * 3, "tanh", max_iter=1.5)
    with pytest.raises(TypeError, match="max_iter"):
        calibrate.lsuv([30] * 3, "tanh", max_iter=True)
    with pytest.raises(ValueError, match="max_iter"):
        calibrate.lsuv([30] * 3, "tanh", max_iter=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = str(calibrate.lsuv([30] * 2, "relu", n_samples=50))
    assert text.splitlines()[0].split() == ["layer", "scale", "pre_std", "iterations"]


def test_scaled_scheme():
    s = calibrate.scaled("xavier", 2.0)
    assert s.distribution(100, 5) == schemes.Distribution("normal", 0.0, 0.2)
    assert s.name == "scaled(xavier)"
    u = calibrate.scaled(schemes.uniform(-1.0, 3.0), -0.5).distribution(4, 4)
    assert (u.a, u.b) == (-1.5, 0.5)
    orth = calibrate.scaled("orthogonal", 3.0)
    assert orth.distribution(10, 10) is None
    w = orth.sample(10, 10, seed=1, layer=2)
    np.testing.assert_allclose(w @ w.T, 9.0 * np.eye(10), atol=1e-12)
