"""The checks of user input that every part of initscope shares.

Each returns the checked value in its plain Python (or NumPy) form, or raises TypeError for a
value of the wrong kind and ValueError for one out of range, naming the parameter.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import numpy as np

__all__ = ["float_dtype", "positive_int", "real"]


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int > 0 (bools are not integers here)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = operator.index(value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    strict: bool = False,
    infinite: bool = False,
) -> float:
    """``value`` as a float: finite (unless ``infinite``), never NaN, and ``>= low``
    (``> low`` if ``strict``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not infinite):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value}")
    return value


def float_dtype(value: Any, name: str = "dtype") -> np.dtype:
    """``value`` as ``np.dtype(float32)`` or ``np.dtype(float64)``, the dtypes of a run."""
    try:
        resolved = np.dtype(value)
    except TypeError:
        resolved = None
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"{name} must be 'float32' or 'float64', got {value!r}")
    return resolved
