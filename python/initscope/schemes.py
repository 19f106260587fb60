"""Weight-initialization schemes, with the formulas of ``torch.nn.init`` and Keras.

A scheme turns ``(fan_in, fan_out)`` into a weight matrix of shape ``(fan_in, fan_out)``,
the layout of the seed experiment's ``X @ W`` (torch stores the transpose,
``(out_features, in_features)``: see :func:`initscope.make_weights`).

Schemes that are a plain normal or uniform distribution say so through
:meth:`Scheme.distribution`; the kernels then draw them in place from the counter-based
generator.  Schemes that need the whole matrix (orthogonal, sparse, truncated normals,
user callables) are built here, in NumPy, from the same generator, and handed to the kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Final, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from . import random as _random

__all__ = [
    "SCHEMES",
    "Distribution",
    "Scheme",
    "big",
    "calculate_gain",
    "constant",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "scheme",
    "small",
    "uniform",
    "xavier",
    "zeros",
]

Mode = Literal["fan_in", "fan_out", "fan_avg"]


class Distribution(NamedTuple):
    """``kind="normal"``: ``a`` = mean, ``b`` = std; ``kind="uniform"``: on ``[a, b)``."""

    kind: Literal["normal", "uniform"]
    a: float
    b: float


def draw(
    dist: Distribution, shape: tuple[int, ...], *, seed: int, stream: int, layer: int, dtype: object
) -> NDArray:
    """Draw ``dist`` from the generator: ``z * std + mean`` or ``u * (b - a) + a``, in ``dtype``."""
    dtype = np.dtype(dtype)
    t = dtype.type
    count = math.prod(shape)
    if dist.kind == "normal":
        z = _random.normal(seed, stream, layer, 0, count, dtype)
        values = z * t(dist.b) + t(dist.a)
    else:
        u = _random.uniform(seed, stream, layer, 0, count, dtype)
        values = u * t(dist.b - dist.a) + t(dist.a)
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
        dist = self.distribution(fan_in, fan_out)
        if dist is None:  # pragma: no cover - every subclass defines one of the two
            raise NotImplementedError(f"{self.name} defines neither distribution nor sample")
        return draw(
            dist, (fan_in, fan_out), seed=seed, stream=_random.WEIGHTS, layer=layer, dtype=dtype
        )


# ---- plain distributions ----------------------------------------------------------------


@dataclass(frozen=True)
class normal(Scheme):
    """N(mean, std²), as ``torch.nn.init.normal_`` and Keras ``RandomNormal``."""

    mean: float = 0.0
    std: float = 1.0

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", self.mean, self.std)


@dataclass(frozen=True)
class uniform(Scheme):
    """U(a, b), as ``torch.nn.init.uniform_`` and Keras ``RandomUniform``."""

    a: float = 0.0
    b: float = 1.0

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("uniform", self.a, self.b)


@dataclass(frozen=True)
class constant(Scheme):
    """Every weight equal to ``value`` (``torch.nn.init.constant_``, Keras ``Constant``)."""

    value: float = 0.0

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", self.value, 0.0)  # z * 0 + value == value


def zeros() -> constant:
    """All weights zero: every unit computes the same thing (the seed's first warning)."""
    return constant(0.0)


def small() -> normal:
    """The seed's ``0.01 * randn``: the signal dies within a few layers."""
    return normal(0.0, 0.01)


def big() -> normal:
    """The seed's ``1 * randn``: tanh units saturate at ±1."""
    return normal(0.0, 1.0)


@dataclass(frozen=True)
class xavier(Scheme):
    """The seed's "Xavier": ``randn(fan_in, fan_out) / sqrt(fan_in)``.

    This is LeCun normal (std ``1/sqrt(fan_in)``).  Glorot & Bengio's own normal scheme,
    :class:`glorot_normal`, has std ``sqrt(2 / (fan_in + fan_out))``.
    """

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", 0.0, 1.0 / math.sqrt(fan_in))


# ---- variance-preserving families -------------------------------------------------------


@dataclass(frozen=True)
class glorot_normal(Scheme):
    """Glorot (Xavier) normal, std = ``gain * sqrt(2 / (fan_in + fan_out))``.

    As ``torch.nn.init.xavier_normal_``.  (Keras's ``GlorotNormal`` truncates at 2σ:
    ``variance_scaling(1.0, "fan_avg", "truncated_normal")``.)
    """

    gain: float = 1.0

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", 0.0, self.gain * math.sqrt(2.0 / (fan_in + fan_out)))


@dataclass(frozen=True)
class glorot_uniform(Scheme):
    """Glorot (Xavier) uniform, U(-a, a), ``a = gain * sqrt(6 / (fan_in + fan_out))``.

    As ``torch.nn.init.xavier_uniform_`` and Keras ``GlorotUniform``.
    """

    gain: float = 1.0

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        a = self.gain * math.sqrt(6.0 / (fan_in + fan_out))
        return Distribution("uniform", -a, a)


@dataclass(frozen=True)
class he_normal(Scheme):
    """He (Kaiming) normal, std = ``gain / sqrt(fan)``, gain = ``calculate_gain(nonlinearity, a)``.

    As ``torch.nn.init.kaiming_normal_`` (defaults a=0, mode="fan_in",
    nonlinearity="leaky_relu", so gain = sqrt 2).  Keras's ``HeNormal`` truncates:
    ``variance_scaling(2.0, "fan_in", "truncated_normal")``.
    """

    a: float = 0.0
    mode: Mode = "fan_in"
    nonlinearity: str = "leaky_relu"

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        gain = calculate_gain(self.nonlinearity, self.a)
        return Distribution("normal", 0.0, gain / math.sqrt(fan(fan_in, fan_out, self.mode)))


@dataclass(frozen=True)
class he_uniform(Scheme):
    """He (Kaiming) uniform, U(-b, b), ``b = gain * sqrt(3 / fan)``.

    As ``torch.nn.init.kaiming_uniform_`` (same defaults as :class:`he_normal`); with the
    defaults it equals Keras ``HeUniform``.
    """

    a: float = 0.0
    mode: Mode = "fan_in"
    nonlinearity: str = "leaky_relu"

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        gain = calculate_gain(self.nonlinearity, self.a)
        bound = math.sqrt(3.0) * gain / math.sqrt(fan(fan_in, fan_out, self.mode))
        return Distribution("uniform", -bound, bound)


@dataclass(frozen=True)
class lecun_normal(Scheme):
    """LeCun normal, std = ``1 / sqrt(fan_in)`` (untruncated; Keras truncates at 2σ)."""

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", 0.0, 1.0 / math.sqrt(fan_in))


@dataclass(frozen=True)
class lecun_uniform(Scheme):
    """LeCun uniform, U(-l, l), ``l = sqrt(3 / fan_in)``, as Keras ``LecunUniform``."""

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        limit = math.sqrt(3.0 / fan_in)
        return Distribution("uniform", -limit, limit)


# ---- gains -------------------------------------------------------------------------------

_LINEAR_GAIN = (
    "linear", "identity", "conv1d", "conv2d", "conv3d",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "sigmoid",
)  # fmt: skip


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, with ``torch.nn.init.calculate_gain``'s values.

    linear, conv*, sigmoid: 1; tanh: 5/3; relu: sqrt 2; leaky_relu: sqrt(2 / (1 + slope²))
    (slope ``param``, default 0.01); selu: 3/4.
    """
    if nonlinearity in _LINEAR_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, bool) or not isinstance(param, (int, float)):
            raise ValueError(f"negative_slope {param!r} is not a valid number")
        else:
            slope = float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"Unsupported nonlinearity {nonlinearity!r}")


# ---- user callables ------------------------------------------------------------------------


@dataclass(frozen=True)
class from_callable(Scheme):
    """A user function ``f(fan_in, fan_out) -> ndarray``, exactly like the seed's init functions."""

    func: Callable[[int, int], NDArray]

    @property
    def name(self) -> str:
        return getattr(self.func, "__name__", "callable")

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        w = self.func(fan_in, fan_out)
        if not isinstance(w, np.ndarray):
            raise TypeError(
                f"init function {self.name} must return a numpy array, got {type(w).__name__}"
            )
        if w.shape != (fan_in, fan_out):
            raise ValueError(
                f"init function {self.name} returned shape {w.shape} for layer {layer}, "
                f"expected (fan_in, fan_out) = ({fan_in}, {fan_out})"
            )
        if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
            raise TypeError(f"init function {self.name} returned dtype {w.dtype}, expected floats")
        w = np.ascontiguousarray(w, dtype=dtype)
        if not np.all(np.isfinite(w)):
            raise ValueError(f"init function {self.name} returned NaN or inf for layer {layer}")
        return w


# ---- registry --------------------------------------------------------------------------------

#: Scheme names accepted by ``init=``, each with its default parameters.
SCHEMES: Final[dict[str, Callable[[], Scheme]]] = {
    "zeros": zeros,
    "constant": constant,
    "normal": normal,
    "uniform": uniform,
    "small": small,
    "big": big,
    "xavier": xavier,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "kaiming_normal": he_normal,
    "kaiming_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
}


def scheme(init: object) -> Scheme:
    """Resolve ``init``: a scheme name, a :class:`Scheme`, or a callable ``f(fan_in, fan_out)``."""
    if isinstance(init, Scheme):
        return init
    if isinstance(init, str):
        try:
            return SCHEMES[init]()
        except KeyError:
            raise ValueError(
                f"init {init!r} is unknown; choose one of {', '.join(sorted(SCHEMES))}"
            ) from None
    if callable(init):
        return from_callable(init)
    raise TypeError(
        f"init must be a scheme name, a Scheme or a callable f(fan_in, fan_out), "
        f"got {type(init).__name__}"
    )
