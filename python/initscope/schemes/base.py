"""What every scheme shares: the :class:`Scheme` base class, the i.i.d. :class:`Distribution`
the kernels draw in place, the fan modes, torch's gains and the parameter checks."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from .. import random as _random
from .._checks import float_dtype, positive_int, real

Mode = Literal["fan_in", "fan_out", "fan_avg"]
MODES: Final = ("fan_in", "fan_out", "fan_avg")

#: Standard deviation of a standard normal truncated to [-2, 2]: Keras divides by it so that
#: ``variance_scaling``'s truncated weights keep the variance ``scale / fan``.
KERAS_TRUNCATED_STD: Final = 0.87962566103423978

#: Truncated normals are drawn by rejection; bounds whose best proposal is accepted less often
#: than this are refused rather than sampled slowly (each weight would cost over 100 draws).
MIN_ACCEPTANCE: Final = 0.01


class Distribution(NamedTuple):
    """``kind="normal"``: ``a`` = mean, ``b`` = std; ``kind="uniform"``: on ``[a, b)``."""

    kind: Literal["normal", "uniform"]
    a: float
    b: float

    def affine(self) -> tuple[float, float]:
        """``(scale, shift)``: a value is ``z * scale + shift`` for a standard normal ``z``, or
        ``u * scale + shift`` for a uniform ``u`` on [0, 1): the form every backend draws."""
        if self.kind == "normal":
            return self.b, self.a
        return self.b - self.a, self.a


def draw(
    dist: Distribution, shape: tuple[int, ...], *, seed: int, stream: int, layer: int, dtype: object
) -> NDArray:
    """Draw ``dist`` from the generator: ``z * std + mean`` or ``u * (b - a) + a``, in ``dtype``."""
    dtype_ = float_dtype(dtype)
    t = dtype_.type
    count = math.prod(shape)
    scale, shift = dist.affine()
    base = _random.normal if dist.kind == "normal" else _random.uniform
    values = base(seed, stream, layer, 0, count, dtype_) * t(scale) + t(shift)
    return values.reshape(shape)


def fan(fan_in: int, fan_out: int, mode: str) -> float:
    """The fan a variance-preserving scheme divides by."""
    if mode == "fan_in":
        return float(fan_in)
    if mode == "fan_out":
        return float(fan_out)
    if mode == "fan_avg":
        return (fan_in + fan_out) / 2.0
    raise ValueError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")


# ---- parameter checks ----------------------------------------------------------------------


def check_real(owner: str, name: str, value: Any, **bounds: Any) -> float:
    """``value`` as a float, or TypeError/ValueError naming ``owner``'s parameter ``name``
    (``bounds``: those of :func:`initscope._checks.real`)."""
    return real(value, f"{owner}: {name}", **bounds)


def check_choice(owner: str, name: str, value: Any, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(
            f"{owner}: {name} must be one of {', '.join(map(repr, valid))}, got {value!r}"
        )
    return value


def set_checked(obj: object, **values: Any) -> None:
    """Store checked values on a frozen dataclass."""
    for key, value in values.items():
        object.__setattr__(obj, key, value)


def check_shape(fan_in: Any, fan_out: Any) -> None:
    positive_int(fan_in, "fan_in")
    positive_int(fan_out, "fan_out")


# ---- the base class ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scheme:
    """Base class of the init schemes.

    Subclasses override :meth:`distribution` (drawn in place by the kernels) or
    :meth:`sample` (a whole matrix built in NumPy).
    """

    @property
    def name(self) -> str:
        return type(self).__name__

    def distribution(self, fan_in: int, fan_out: int) -> Distribution | None:
        """The i.i.d. distribution of the weights, or None if the scheme is not i.i.d."""
        return None

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        """The ``(fan_in, fan_out)`` weight matrix of layer ``layer`` for ``seed``."""
        check_shape(fan_in, fan_out)
        dist = self.distribution(fan_in, fan_out)
        if dist is None:  # pragma: no cover - every subclass defines one of the two
            raise NotImplementedError(f"{self.name} defines neither distribution nor sample")
        return draw(
            dist, (fan_in, fan_out), seed=seed, stream=_random.WEIGHTS, layer=layer, dtype=dtype
        )


# ---- gains -------------------------------------------------------------------------------

_LINEAR_GAIN = (
    "linear", "identity", "conv1d", "conv2d", "conv3d",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "sigmoid",
)  # fmt: skip
NONLINEARITIES: Final = (*_LINEAR_GAIN, "tanh", "relu", "leaky_relu", "selu")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, with ``torch.nn.init.calculate_gain``'s values.

    Parameters
    ----------
    nonlinearity : str
        linear, identity, conv1d/2d/3d, conv_transpose1d/2d/3d, sigmoid: 1; tanh: 5/3;
        relu: sqrt 2; leaky_relu: sqrt(2 / (1 + slope²)); selu: 3/4 (torch's empirical value).
    param : float, optional
        leaky_relu's negative slope (default 0.01); ignored by the others.

    Returns
    -------
    float
        The gain.
    """
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise ValueError(
            f"nonlinearity {nonlinearity!r} is not supported; choose one of "
            f"{', '.join(NONLINEARITIES)}"
        )
    if nonlinearity in _LINEAR_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4.0
    # leaky_relu
    if param is None:
        slope = 0.01
    elif isinstance(param, (bool, np.bool_)) or not isinstance(param, numbers.Real):
        raise ValueError(f"param (the negative_slope of leaky_relu) {param!r} is not a number")
    else:
        slope = float(param)
        if not math.isfinite(slope):
            raise ValueError(
                f"param (the negative_slope of leaky_relu) must be finite, got {slope}"
            )
    return math.sqrt(2.0 / (1 + slope**2))
