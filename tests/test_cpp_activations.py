"""Accuracy of the compiled activations (initscope._core.testing.activate) against mpmath.

Every activation must be within 4 ulp of the correctly rounded value in float32 and float64.
The error is measured on a few thousand points per dtype spanning the whole range,
tails included, except where the true value is subnormal, and where the reference's
formula flushes to zero (its exp(-x) overflows or its erfc underflows): there the kernels
return the reference's zero, so that zero counts agree between backends.
Run with ``-s`` to print the table of maximum errors.
"""

from __future__ import annotations

from functools import cache

import mpmath as mp
import numpy as np
import pytest

from initscope.activations import ACTIVATIONS, SELU_ALPHA, SELU_SCALE, activation
from initscope.backends import cpp

try:
    cpp.check_available()
    from initscope import _core
except ImportError as exc:  # pragma: no cover - only without the extension
    pytest.skip(f"initscope._core unavailable: {exc}", allow_module_level=True)

MAX_ULP = 4.0
PARAMS = {"leaky_relu": 0.01, "elu": 1.0}
SELU = (mp.mpf("1.6732632423543772848170429916717"), mp.mpf("1.0507009873554804934193349852946"))


def _exact(name: str, x: mp.mpf, param: mp.mpf) -> mp.mpf:
    if name == "linear":
        return x
    if name == "tanh":
        return mp.tanh(x)
    if name == "relu":
        return max(x, mp.mpf(0))
    if name == "leaky_relu":
        return x * param if x < 0 else x
    if name == "sigmoid":
        return 1 / (1 + mp.exp(-x))
    if name == "softplus":
        return mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x))
    if name == "elu":
        return x if x > 0 else param * mp.expm1(x)
    if name == "selu":
        alpha, scale = SELU
        return scale * (x if x > 0 else alpha * mp.expm1(x))
    if name == "gelu":
        return x * mp.erfc(-x / mp.sqrt(2)) / 2
    if name == "gelu_tanh":
        y = mp.sqrt(2 / mp.pi) * (x + mp.mpf("0.044715") * x**3)
        return x / (1 + mp.exp(-2 * y))
    if name == "silu":
        return x / (1 + mp.exp(-x))
    raise AssertionError(name)


def _points(dtype: np.dtype) -> np.ndarray:
    rng = np.random.default_rng(20240611)
    tiny, top = (1e-300, 800.0) if dtype == np.float64 else (1e-37, 110.0)
    tails = np.geomspace(tiny, top, 700)
    points = np.concatenate(
        [
            tails,
            -tails,
            rng.uniform(-40, 40, 1200),
            rng.uniform(-4, 4, 800),
            rng.standard_normal(300) * 1e-4,
            [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 20.0, -20.0, 9.0, 10.0, 19.1, -37.3, -38.5],
        ]
    )
    return np.unique(points.astype(dtype))


def _ulp_errors(name: str, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Errors in ulp of the dtype, and the points, where the error is measured."""
    act = activation(name)
    x = _points(dtype)
    got = _core.testing.activate(act.code, act.param, x)
    assert got.dtype == dtype
    reference = act(x)
    param = mp.mpf(float(dtype.type(PARAMS.get(name, 0.0))))
    smallest_normal = np.finfo(dtype).tiny
    errors, kept = [], []
    with mp.workdps(50):
        for xi, gi, ri in zip(x, got, reference, strict=True):
            exact = _exact(name, mp.mpf(float(xi)), param)
            if abs(exact) < smallest_normal:
                continue  # subnormal or zero: absolute error below the dtype's tiny
            if ri == 0:
                assert gi == 0, (name, xi, gi)  # the reference's flush to zero, kept
                continue
            rounded = dtype.type(float(exact))
            ulp = float(np.spacing(np.abs(rounded)))
            errors.append(float(abs(mp.mpf(float(gi)) - exact) / ulp))
            kept.append(xi)
    return np.array(errors), np.array(kept)


@cache
def ulp_table() -> dict[tuple[str, str], tuple[float, float]]:
    """(activation, dtype) -> (max error in ulp, the point where it is reached)."""
    table = {}
    for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
        for name in ACTIVATIONS:
            errors, points = _ulp_errors(name, dtype)
            worst = int(np.argmax(errors))
            table[name, dtype.name] = (float(errors[worst]), float(points[worst]))
    return table


def _format(table: dict[tuple[str, str], tuple[float, float]]) -> str:
    lines = ["activation    float32 ulp   float64 ulp"]
    for name in ACTIVATIONS:
        lines.append(
            f"{name:<12} {table[name, 'float32'][0]:>11.2f} {table[name, 'float64'][0]:>13.2f}"
        )
    return "\n".join(lines)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_within_4_ulp(name, dtype):
    error, where = ulp_table()[name, dtype]
    assert error <= MAX_ULP, f"{name} {dtype}: {error:.2f} ulp at x={where!r}\n" + _format(
        ulp_table()
    )


def test_print_ulp_table(capsys):
    table = ulp_table()
    with capsys.disabled():
        print("\nmax error of the compiled activations vs mpmath (ulp)\n" + _format(table))
    assert max(error for error, _ in table.values()) <= MAX_ULP


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_nonfinite_inputs_follow_the_reference(name, dtype):
    act = activation(name)
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=dtype)
    got = _core.testing.activate(act.code, act.param, x)
    want = act(x)
    rtol = 4 * np.finfo(dtype).eps  # selu(-inf) = -scale * alpha, rounded once or twice
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0)  # NaN matches NaN
    assert np.array_equal(got == 0, want == 0)


def test_parameters_are_used():
    x = np.array([-2.0, 3.0])
    np.testing.assert_allclose(_core.testing.activate(3, 0.2, x), [-0.4, 3.0], rtol=1e-15)
    np.testing.assert_allclose(
        _core.testing.activate(6, 2.0, x), [2.0 * np.expm1(-2.0), 3.0], rtol=1e-15
    )
    assert SELU_ALPHA > 1 and SELU_SCALE > 1


def test_unknown_code_is_a_value_error():
    with pytest.raises(ValueError, match="activation code"):
        _core.testing.activate(len(ACTIVATIONS), 0.0, np.zeros(3))
