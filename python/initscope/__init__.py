"""initscope: how weight initialization shapes the signal in deep networks, fast.

>>> import initscope
>>> result = initscope.propagate([500] * 10, init="xavier", activation="tanh")
>>> print(result)  # doctest: +SKIP
Hidden layer 1 had mean ... and std ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import plot, schemes
from .activations import ACTIVATIONS, Activation
from .api import make_weights, propagate
from .backends import available_backends
from .result import PropagationResult
from .schemes import calculate_gain
from .sweep import SweepError, load_sweep, sweep

if TYPE_CHECKING:
    from . import calibrate, theory

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "PropagationResult",
    "SweepError",
    "available_backends",
    "calculate_gain",
    "calibrate",
    "load_sweep",
    "make_weights",
    "plot",
    "propagate",
    "schemes",
    "sweep",
    "theory",
]

__version__ = "0.1.0"

#: Submodules imported on first use: the theory's quadrature tables and the calibration
#: cost an import that a program which only propagates should not pay.
_LAZY = ("calibrate", "theory")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        # importing binds the submodule in this namespace: the next access is a plain one
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
