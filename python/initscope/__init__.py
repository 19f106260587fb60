"""initscope: how weight initialization shapes the signal in deep networks, fast.

>>> import initscope
>>> result = initscope.propagate([500] * 10, init="xavier", activation="tanh")
>>> print(result)  # doctest: +SKIP
Hidden layer 1 had mean ... and std ...
"""

from __future__ import annotations

from . import calibrate, plot, schemes, theory
from .activations import ACTIVATIONS, Activation
from .api import make_weights, propagate
from .backends import available_backends
from .result import PropagationResult
from .schemes import calculate_gain
from .sweep import SweepError, load_sweep, sweep

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
