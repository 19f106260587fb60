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
