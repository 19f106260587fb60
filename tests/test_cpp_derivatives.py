"""Accuracy of the compiled activations' derivatives (initscope._core.testing.derive).

The exact derivative is mpmath's numerical derivative (``mp.diff``) of the activation at
50 digits, independent of any formula of ours. tanh's and sigmoid's are evaluated in the
run's dtype, as the activations, within ``MAX_ULP_32`` ulp in float32; the others in float64
and rounded once, within 1 ulp of the exact value rounded. In
float64 the error is bounded by the rounding of the arguments the formulas compute
(``2x`` is exact, ``x^2 / 2`` and gelu_tanh's cubic are not), relative ``MAX_REL_64``.
Run with ``-s`` to print the table of maximum errors.
"""

from __future__ import annotations

from functools import cache

import mpmath as mp
import numpy as np
import pytest

from initscope.activations import ACTIVATIONS, activation
from initscope.backends import cpp
from test_cpp_activations import PARAMS, _exact

try:
    cpp.check_available()
    from initscope import _core
except ImportError as exc:  # pragma: no cover - only without the extension
    pytest.skip(f"initscope._core unavailable: {exc}", allow_module_level=True)

# ~1000 ulp: exp(-2|u|) of gelu_tanh's cubic u, and exp(-x^2 / 2) of gelu, multiply the
# rounding error of their computed arguments by the argument (hundreds in the tails).
MAX_REL_64 = 2e-13
MAX_ULP_32 = 4.0
#: tanh's slope is 0 below about 2.2 times the dtype's smallest normal (activations.hpp,
#: slope_cap): below that, values are compared absolutely, against this many smallest normals.
FLUSHED = 4.0
IN_DTYPE = {"tanh", "sigmoid"}
KINKED = {"relu", "leaky_relu", "elu", "selu"}  # derivative jumps at 0 (or, elu, its 2nd)


def _points() -> np.ndarray:
    rng = np.random.default_rng(20261201)
    tails = np.geomspace(1e-6, 300.0, 60)
    points = np.concatenate([tails, -tails, rng.uniform(-40, 40, 60), rng.uniform(-4, 4, 60)])
    return np.unique(points)


def _exact_derivative(name: str, x: float, param: mp.mpf) -> mp.mpf:
    # Enough digits that f(x + h) - f(x) keeps 40 of them where f saturates: tanh(x) is
    # 1 - 2 exp(-2x), about 0.87 |x| digits below 1.
    with mp.workdps(50 + int(abs(x))):
        return mp.diff(lambda t: _exact(name, t, param), mp.mpf(x))


@cache
def error_table() -> dict[tuple[str, str], tuple[float, float]]:
    """(activation, dtype) -> (max relative error or ulp, the point where it is reached)."""
    table = {}
    x64 = _points()
    for name in ACTIVATIONS:
        act = activation(name)
        param = mp.mpf(PARAMS.get(name, 0.0))
        worst = {"float64": (0.0, 0.0), "float32": (0.0, 0.0)}
        got64 = _core.testing.derive(act.code, act.param, x64)
        x32 = x64.astype(np.float32)
        got32 = _core.testing.derive(act.code, act.param, x32)
        assert got64.dtype == np.float64 and got32.dtype == np.float32
        with mp.workdps(50):
            for xi, gi in zip(x64, got64, strict=True):
                if name in KINKED and abs(xi) < 1e-3:
                    continue
                exact = _exact_derivative(name, float(xi), param)
                if abs(exact) < FLUSHED * np.finfo(np.float64).tiny:
                    continue
                error = float(abs(mp.mpf(float(gi)) - exact) / abs(exact))
                worst["float64"] = max(worst["float64"], (error, float(xi)))
            p32 = mp.mpf(float(np.float32(PARAMS.get(name, 0.0))))
            for xi, gi in zip(x32, got32, strict=True):
                if name in KINKED and abs(xi) < 1e-3:
                    continue
                exact = _exact_derivative(name, float(xi), p32)
                if abs(exact) < FLUSHED * np.finfo(np.float32).tiny:
                    continue
                ulp = float(np.spacing(np.float32(float(exact))))
                error = float(abs(mp.mpf(float(gi)) - exact) / abs(ulp))
                worst["float32"] = max(worst["float32"], (error, float(xi)))
        for dtype, value in worst.items():
            table[name, dtype] = value
    return table


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_derivative_matches_mpmath(name):
    table = error_table()
    rel64, at64 = table[name, "float64"]
    ulp32, at32 = table[name, "float32"]
    assert rel64 <= MAX_REL_64, f"{name} float64: relative error {rel64:.2e} at x={at64!r}"
    bound = MAX_ULP_32 if name in IN_DTYPE else 1.0
    assert ulp32 <= bound, f"{name} float32: {ulp32:.2f} ulp at x={at32!r}"


def test_print_error_table(capsys):
    table = error_table()
    lines = ["activation    float64 rel    float32 ulp"]
    for name in ACTIVATIONS:
        rel, ulp = table[name, "float64"][0], table[name, "float32"][0]
        lines.append(f"{name:<12} {rel:>11.2e} {ulp:>14.2f}")
    with capsys.disabled():
        print("\nmax error of the compiled derivatives vs mpmath\n" + "\n".join(lines))
    assert max(table[name, "float32"][0] for name in ACTIVATIONS) <= MAX_ULP_32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_derivatives_agree_with_the_reference(name, dtype):
    act = activation(name)
    x = np.concatenate([np.linspace(-50, 50, 2001), [np.nan, np.inf, -np.inf, 0.0]]).astype(dtype)
    got = _core.testing.derive(act.code, act.param, x)
    want = act.derivative(x)
    rtol = 1e-12 if dtype == "float64" else MAX_ULP_32 * np.finfo(np.float32).eps
    tiny = FLUSHED * float(np.finfo(dtype).tiny)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=tiny)  # NaN matches NaN
    assert np.isnan(got[-4])  # NaN stays NaN, in the piecewise ones too


def test_parameters_are_used_in_derivatives():
    x = np.array([-2.0, 3.0])
    np.testing.assert_allclose(_core.testing.derive(3, 0.2, x), [0.2, 1.0], rtol=1e-15)
    np.testing.assert_allclose(
        _core.testing.derive(6, 2.0, x), [2.0 * np.exp(-2.0), 1.0], rtol=1e-15
    )
