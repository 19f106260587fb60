"""Activation functions: names, parameters, and their NumPy definitions (the specification).

Every backend applies the same formulas; the forms below are chosen to be accurate over
the whole real line (no cancellation in the tails), and the kernels follow them.

Unlike the random numbers (:mod:`initscope.random`, bit-identical in every backend), the
activations are specified as functions, not as bits: NumPy's ``tanh``, ``exp`` and
``erfc`` differ from one library to another by an ulp or so.  The two compiled backends
share one implementation, vectorisable polynomials for exp and expm1 within 4 ulp of the
correctly rounded values (``cpp/include/initscope/activations.hpp``, and its copy in
``backends/_numba_activations.py``), so they agree with each other bit for bit, and with
these formulas to a few ulp.  The Numba backend does not jit the formulas below: on
scalars they are calls into libm that LLVM cannot vectorise, which makes a tanh network
at the seed shape 1.5 (float64) to 1.9 (float32) times slower.

:meth:`Activation.derivative` gives ``phi'(h)`` for the backward pass, evaluated in float64
and rounded once to the run's dtype.  The compiled backends evaluate tanh's and sigmoid's
in the run's dtype, from the exp of the activation itself (within 4 ulp of these in
float32), and the others as these.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["ACTIVATIONS", "Activation", "activation"]

SELU_ALPHA: Final = 1.6732632423543772848170429916717
SELU_SCALE: Final = 1.0507009873554804934193349852946
GELU_TANH_C: Final = math.sqrt(2.0 / math.pi)

_erfc = np.frompyfunc(math.erfc, 1, 1)


def _sigmoid(x: NDArray) -> NDArray:
    return 1 / (1 + np.exp(-x))


def _linear(x: NDArray, p: float) -> NDArray:
    return x


def _tanh(x: NDArray, p: float) -> NDArray:
    return np.tanh(x)


def _relu(x: NDArray, p: float) -> NDArray:
    return np.maximum(x, 0)  # propagates NaN


def _leaky_relu(x: NDArray, p: float) -> NDArray:
    return np.where(x < 0, x * x.dtype.type(p), x)


def _sigmoid_act(x: NDArray, p: float) -> NDArray:
    return _sigmoid(x)


def _softplus(x: NDArray, p: float) -> NDArray:
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _elu(x: NDArray, p: float) -> NDArray:
    return np.where(x > 0, x, x.dtype.type(p) * np.expm1(x))


def _selu(x: NDArray, p: float) -> NDArray:
    t = x.dtype.type
    return t(SELU_SCALE) * np.where(x > 0, x, t(SELU_ALPHA) * np.expm1(x))


def _gelu(x: NDArray, p: float) -> NDArray:
    # 0.5 x erfc(-x / sqrt 2) == 0.5 x (1 + erf(x / sqrt 2)), without cancellation for x << 0
    t = x.dtype.type
    tail = np.asarray(_erfc(-x.astype(np.float64) / math.sqrt(2.0)), dtype=np.float64)
    tail = tail.astype(x.dtype)
    return t(0.5) * x * tail


def _gelu_tanh(x: NDArray, p: float) -> NDArray:
    # 0.5 x (1 + tanh(y)) == x sigmoid(2y), y = sqrt(2/pi) (x + 0.044715 x^3)
    t = x.dtype.type
    y = t(GELU_TANH_C) * (x + t(0.044715) * x * x * x)
    return x * _sigmoid(t(2.0) * y)


def _silu(x: NDArray, p: float) -> NDArray:
    return x * _sigmoid(x)


# ---- derivatives: float64 in, one rounding to the run's dtype at the end -------------------
# The forms avoid overflow and cancellation in the tails: exp(-|h|) never overflows.

_SQRT2: Final = math.sqrt(2.0)
_INV_SQRT_2PI: Final = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_TANH_K: Final = 0.044715


def _step(x: NDArray[np.float64], positive: float, other: float) -> NDArray[np.float64]:
    """``positive`` where ``x > 0``, else ``other``; NaN where ``x`` is NaN."""
    return np.where(np.isnan(x), np.nan, np.where(x > 0, positive, other))


def _d_linear(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    return np.where(np.isnan(x), np.nan, 1.0)


def _d_tanh(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    e = np.exp(-2.0 * np.abs(x))
    return 4.0 * e / ((1.0 + e) * (1.0 + e))


def _d_relu(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    return _step(x, 1.0, 0.0)


def _d_leaky_relu(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    return _step(x, 1.0, p)


def _d_sigmoid(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    e = np.exp(-np.abs(x))
    return e / ((1.0 + e) * (1.0 + e))


def _d_softplus(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-x))


def _d_elu(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    return np.where(x > 0, 1.0, p * np.exp(x))  # exp(NaN) is NaN


def _d_selu(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    return SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(x))


def _d_gelu(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    tail = np.asarray(_erfc(-x / _SQRT2), dtype=np.float64)
    return 0.5 * tail + x * np.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _d_gelu_tanh(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    # beyond |h| = 60, e is 0 and s is 0 or 1: clamping keeps x**3 from overflowing there
    xc = np.clip(x, -60.0, 60.0)
    u = GELU_TANH_C * (xc + _GELU_TANH_K * xc * xc * xc)
    s = 1.0 / (1.0 + np.exp(-2.0 * u))
    e = np.exp(-2.0 * np.abs(u))
    du = 2.0 * GELU_TANH_C * (1.0 + 3.0 * _GELU_TANH_K * xc * xc)
    return s + xc * du * e / ((1.0 + e) * (1.0 + e))  # xc: finite where e is 0


def _d_silu(x: NDArray[np.float64], p: float) -> NDArray[np.float64]:
    s = 1.0 / (1.0 + np.exp(-x))
    e = np.exp(-np.abs(x))
    return s + x * e / ((1.0 + e) * (1.0 + e))


@dataclass(frozen=True)
class Activation:
    """An activation function with its parameter.

    ``code`` is the number the compiled kernels know it by. ``saturation`` is
    ``(low, high)``: a value ``a`` counts as saturated when ``a <= low`` or ``a >= high``
    (``None`` for unbounded activations, whose saturated fraction is NaN).
    """

    name: str
    code: int
    param: float = 0.0
    saturation: tuple[float, float] | None = None

    def __call__(self, x: NDArray) -> NDArray:
        with np.errstate(all="ignore"):
            return _FUNCTIONS[self.name](x, self.param)

    def derivative(self, h: NDArray) -> NDArray:
        """The derivative ``phi'(h)``, computed in float64 and rounded once to ``h``'s dtype
        (the specification; see the module docstring for the compiled backends).

        Parameters
        ----------
        h : ndarray
            Pre-activations (float32 or float64; other dtypes give float64).

        Returns
        -------
        ndarray
            ``phi'(h)`` of ``h``'s shape.  NaN gives NaN, for the piecewise activations
            too; at ``h = ±inf`` the formulas of gelu and silu give NaN
            (``inf * 0``), as in every backend.
        """
        x = np.asarray(h)
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        param = float(dtype.type(self.param))  # the slope or alpha the forward pass applies
        with np.errstate(all="ignore"):
            d = _DERIVATIVES[self.name](x.astype(np.float64), param)
        return np.asarray(d, dtype=np.float64).astype(dtype)


_FUNCTIONS: dict[str, Callable[[NDArray, float], NDArray]] = {
    "linear": _linear,
    "tanh": _tanh,
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "sigmoid": _sigmoid_act,
    "softplus": _softplus,
    "elu": _elu,
    "selu": _selu,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": _silu,
}
_DERIVATIVES: dict[str, Callable[[NDArray[np.float64], float], NDArray[np.float64]]] = {
    "linear": _d_linear,
    "tanh": _d_tanh,
    "relu": _d_relu,
    "leaky_relu": _d_leaky_relu,
    "sigmoid": _d_sigmoid,
    "softplus": _d_softplus,
    "elu": _d_elu,
    "selu": _d_selu,
    "gelu": _d_gelu,
    "gelu_tanh": _d_gelu_tanh,
    "silu": _d_silu,
}
_CODES = {name: code for code, name in enumerate(_FUNCTIONS)}
_DEFAULT_PARAM = {"leaky_relu": 0.01, "elu": 1.0}
_SATURATION = {"tanh": (-0.99, 0.99), "sigmoid": (0.01, 0.99)}

#: The activation names, in the order of their kernel codes.
ACTIVATIONS: Final = tuple(_FUNCTIONS)


def activation(name: str | Activation, param: float | None = None) -> Activation:
    """Look up an activation by name (``param`` is leaky_relu's slope or elu's alpha)."""
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str):
        raise TypeError(f"activation must be a name or an Activation, got {type(name).__name__}")
    if name not in _FUNCTIONS:
        raise ValueError(f"activation {name!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")
    if param is None:
        param = _DEFAULT_PARAM.get(name, 0.0)
    elif name not in _DEFAULT_PARAM:
        raise ValueError(f"activation {name!r} takes no parameter")
    param = float(param)
    if not math.isfinite(param):
        raise ValueError(f"activation parameter must be finite, got {param}")
    return Activation(name, _CODES[name], param, _SATURATION.get(name))
