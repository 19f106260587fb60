"""initscope: how weight initialization shapes the signal in deep networks, fast.

>>> import initscope
>>> result = initscope.propagate([500] * 10, init="xavier", activation="tanh")
>>> print(result)  # doctest: +SKIP
Hidden layer 1 had mean ... and std ...
"""

from __future__ import annotations

from . import schemes
from .activations import ACTIVATIONS, Activation
from .api import make_weights, propagate
from .backends import available_backends
from .result import PropagationResult
from .schemes import calculate_gain

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "PropagationResult",
    "available_backends",
    "calculate_gain",
    "make_weights",
    "propagate",
    "schemes",
]

__version__ = "0.1.0"
