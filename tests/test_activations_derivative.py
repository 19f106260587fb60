"""Activation.derivative against a central finite difference and against mpmath."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from initscope.activations import ACTIVATIONS, SELU_ALPHA, SELU_SCALE, activation

mp = mpmath.mp


def _mp_function(name: str, param: float):
    """The activation in mpmath, from its textbook definition (not from our formulas)."""
    p = mpmath.mpf(param)
    definitions = {
        "linear": lambda x: x,
        "tanh": mpmath.tanh,
        "relu": lambda x: x if x > 0 else mpmath.mpf(0),
        "leaky_relu": lambda x: x if x > 0 else p * x,
        "sigmoid": lambda x: 1 / (1 + mpmath.exp(-x)),
        "softplus": lambda x: mpmath.log(1 + mpmath.exp(x)),
        "elu": lambda x: x if x > 0 else p * (mpmath.exp(x) - 1),
        "selu": lambda x: (
            mpmath.mpf(SELU_SCALE) * (x if x > 0 else mpmath.mpf(SELU_ALPHA) * (mpmath.exp(x) - 1))
        ),
        "gelu": lambda x: x / 2 * mpmath.erfc(-x / mpmath.sqrt(2)),
        "gelu_tanh": lambda x: (
            x
            / 2
            * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (x + mpmath.mpf("0.044715") * x**3)))
        ),
        "silu": lambda x: x / (1 + mpmath.exp(-x)),
    }
    return definitions[name]


#: Points on both sides of 0 and in both tails; none on a kink.
POINTS = np.array([-30.0, -9.0, -4.0, -1.7, -0.6, -0.05, 0.03, 0.4, 1.1, 2.5, 6.0, 11.0, 30.0])

PARAMS = {"leaky_relu": [0.01, 0.3], "elu": [1.0, 0.7]}


def _cases() -> list:
    return [
        pytest.param(name, param, id=f"{name}-{param}" if param is not None else name)
        for name in ACTIVATIONS
        for param in PARAMS.get(name, [None])
    ]


@pytest.mark.parametrize(("name", "param"), _cases())
def test_derivative_matches_a_central_difference(name, param):
    act = activation(name, param)
    x = POINTS
    step = 1e-5 * np.maximum(1.0, np.abs(x))
    with np.errstate(all="ignore"):
        difference = (act(x + step) - act(x - step)) / (2 * step)
    derivative = act.derivative(x)
    assert derivative.dtype == np.float64 and derivative.shape == x.shape
    # the difference's own error: truncation ~ step**2 |f'''|, rounding ~ eps |f| / step
    scale = np.maximum(1.0, np.abs(act(x)))
    np.testing.assert_allclose(derivative, difference, rtol=1e-7, atol=1e-9 * scale.max())


@pytest.mark.parametrize(("name", "param"), _cases())
def test_derivative_matches_mpmath(name, param):
    act = activation(name, param)
    f = _mp_function(name, act.param)
    with mp.workdps(50):
        for x in POINTS:
            want = float(mpmath.diff(f, mpmath.mpf(float(x))))
            got = float(act.derivative(np.array([x]))[0])
            # relative to the value, also deep in the tails (4e-26 for tanh at 30); gelu_tanh's
            # exp(-2|u|) turns the rounding of u into a relative error of up to 2|u| ulp
            rel = 1e-13 if name == "gelu_tanh" else 4e-15
            assert got == pytest.approx(want, rel=rel, abs=1e-300), (x, got, want)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_float32_is_the_float64_value_rounded_once(name):
    act = activation(name)
    x = np.linspace(-12, 12, 2001).astype(np.float32)
    got = act.derivative(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, act.derivative(x.astype(np.float64)).astype(np.float32))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_nan_gives_nan_and_infinities_their_limits(name):
    act = activation(name)
    d = act.derivative(np.array([np.nan, np.inf, -np.inf]))
    assert math.isnan(d[0])
    # the derivative at +-inf is its limit, except where the formula multiplies inf by 0
    want_pos = {"tanh": 0.0, "sigmoid": 0.0, "selu": SELU_SCALE}.get(name, 1.0)
    want_neg = {"leaky_relu": 0.01, "linear": 1.0}.get(name, 0.0)
    if name in ("gelu", "silu"):
        assert math.isnan(d[1]) and math.isnan(d[2])
    else:
        assert d[1] == want_pos and d[2] == pytest.approx(want_neg, rel=1e-15)


def test_no_overflow_for_huge_finite_inputs():
    x = np.array([-1.7e308, -1e300, -1e120, -700.0, 700.0, 1e120, 1e300, 1.7e308])
    for name in ACTIVATIONS:
        d = activation(name).derivative(x)
        assert np.isfinite(d).all(), name


def test_known_values():
    x = np.array([0.0])
    assert activation("tanh").derivative(x)[0] == 1.0
    assert activation("sigmoid").derivative(x)[0] == 0.25
    assert activation("softplus").derivative(x)[0] == 0.5
    assert activation("gelu").derivative(x)[0] == 0.5
    assert activation("gelu_tanh").derivative(x)[0] == 0.5
    assert activation("silu").derivative(x)[0] == 0.5
    assert activation("relu").derivative(x)[0] == 0.0  # the kink belongs to the left side
    assert activation("elu", 0.5).derivative(x)[0] == 0.5
    assert activation("selu").derivative(x)[0] == pytest.approx(SELU_SCALE * SELU_ALPHA)
    # integers are read as float64
    assert activation("tanh").derivative(np.array([1])).dtype == np.float64
