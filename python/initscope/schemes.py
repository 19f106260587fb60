"""Weight-initialization schemes, with the formulas of ``torch.nn.init`` and Keras.

A scheme turns ``(fan_in, fan_out)`` into a weight matrix of shape ``(fan_in, fan_out)``,
the layout of the seed experiment's ``X @ W`` (torch stores the transpose,
``(out_features, in_features)``: see :func:`initscope.make_weights`).

Schemes that are a plain normal or uniform distribution say so through
:meth:`Scheme.distribution`; the kernels then draw them in place from the counter-based
generator.  Schemes that need the whole matrix (orthogonal, sparse, truncated normals,
identity, user callables) are built here by :meth:`Scheme.sample`, in NumPy, from the same
generator, and handed to the kernels.

Every random number comes from :mod:`initscope.random`: element ``r * fan_out + c`` of the
stream ``WEIGHTS`` (layer ``layer``) is the draw behind ``W[r, c]``; schemes that need more
draws (truncation retries, sparse masks) take them from the stream ``AUX`` of the same layer.

Parameters are checked when a scheme is built: a bad one raises ``TypeError`` (not a real
number) or ``ValueError`` (out of range, not finite, unknown name), naming the parameter.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from . import random as _random

__all__ = [
    "KERAS_TRUNCATED_STD",
    "MIN_ACCEPTANCE",
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
    "identity",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "scheme",
    "small",
    "sparse",
    "truncated_normal",
    "truncated_normal_keras",
    "truncation_method",
    "uniform",
    "variance_scaling",
    "xavier",
    "zeros",
]

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


def draw(
    dist: Distribution, shape: tuple[int, ...], *, seed: int, stream: int, layer: int, dtype: object
) -> NDArray:
    """Draw ``dist`` from the generator: ``z * std + mean`` or ``u * (b - a) + a``, in ``dtype``."""
    dtype_ = _float_dtype(dtype)
    t = dtype_.type
    count = math.prod(shape)
    if dist.kind == "normal":
        z = _random.normal(seed, stream, layer, 0, count, dtype_)
        values = z * t(dist.b) + t(dist.a)
    else:
        u = _random.uniform(seed, stream, layer, 0, count, dtype_)
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


# ---- parameter checks ----------------------------------------------------------------------


def _real(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    strict: bool = False,
    infinite: bool = False,
) -> float:
    """``value`` as a float, or TypeError/ValueError naming ``owner``'s parameter ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not infinite):
        raise ValueError(f"{owner}: {name} must be finite, got {value}")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{owner}: {name} must be {'>' if strict else '>='} {low}, got {value}")
    return value


def _choice(owner: str, name: str, value: Any, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(
            f"{owner}: {name} must be one of {', '.join(map(repr, valid))}, got {value!r}"
        )
    return value


def _set(obj: object, **values: Any) -> None:
    """Store checked values on a frozen dataclass."""
    for key, value in values.items():
        object.__setattr__(obj, key, value)


def _check_shape(fan_in: Any, fan_out: Any) -> None:
    for name, value in (("fan_in", fan_in), ("fan_out", fan_out)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def _float_dtype(dtype: object) -> np.dtype:
    try:
        resolved = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError:
        resolved = None
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


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
        _check_shape(fan_in, fan_out)
        dist = self.distribution(fan_in, fan_out)
        if dist is None:  # pragma: no cover - every subclass defines one of the two
            raise NotImplementedError(f"{self.name} defines neither distribution nor sample")
        return draw(
            dist, (fan_in, fan_out), seed=seed, stream=_random.WEIGHTS, layer=layer, dtype=dtype
        )


# ---- plain distributions ----------------------------------------------------------------


@dataclass(frozen=True)
class normal(Scheme):
    """N(mean, std²).

    ``W = mean + std * z``; as ``torch.nn.init.normal_(w, mean, std)`` and Keras
    ``RandomNormal(mean, stddev)`` (whose default stddev is 0.05; registered as
    ``"random_normal"``).

    Parameters
    ----------
    mean : float
        Mean of the weights.
    std : float
        Standard deviation, ``>= 0`` (0 gives the constant ``mean``).
    """

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        _set(
            self,
            mean=_real("normal", "mean", self.mean),
            std=_real("normal", "std", self.std, low=0.0),
        )

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", self.mean, self.std)


@dataclass(frozen=True)
class uniform(Scheme):
    """U(a, b).

    ``W = a + (b - a) * u`` with ``u`` in ``[0, 1)``; as ``torch.nn.init.uniform_(w, a, b)``
    and Keras ``RandomUniform(minval=a, maxval=b)`` (whose defaults are ±0.05; registered as
    ``"random_uniform"``).

    Parameters
    ----------
    a, b : float
        The bounds, ``a <= b``.
    """

    a: float = 0.0
    b: float = 1.0

    def __post_init__(self) -> None:
        a = _real("uniform", "a", self.a)
        b = _real("uniform", "b", self.b)
        if b < a:
            raise ValueError(f"uniform: needs a <= b, got a={a}, b={b}")
        if not math.isfinite(b - a):
            raise ValueError(f"uniform: b - a overflows, got a={a}, b={b}")
        _set(self, a=a, b=b)

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("uniform", self.a, self.b)


@dataclass(frozen=True)
class constant(Scheme):
    """Every weight equal to ``value``.

    As ``torch.nn.init.constant_(w, value)`` and Keras ``Constant(value)``.

    Parameters
    ----------
    value : float
        The value of every weight.
    """

    value: float = 0.0

    def __post_init__(self) -> None:
        _set(self, value=_real("constant", "value", self.value))

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", self.value, 0.0)  # z * 0 + value == value


def zeros() -> constant:
    """All weights zero: every unit computes the same thing (the seed's first warning).

    As ``torch.nn.init.zeros_`` and Keras ``Zeros``.
    """
    return constant(0.0)


def ones() -> constant:
    """All weights one, as ``torch.nn.init.ones_`` and Keras ``Ones``."""
    return constant(1.0)


def small() -> normal:
    """The seed's ``0.01 * randn``: N(0, 0.01²); the signal dies within a few layers."""
    return normal(0.0, 0.01)


def big() -> normal:
    """The seed's ``1 * randn``: N(0, 1); tanh units saturate at ±1."""
    return normal(0.0, 1.0)


@dataclass(frozen=True)
class xavier(Scheme):
    """The seed's "Xavier": ``randn(fan_in, fan_out) / sqrt(fan_in)``.

    This is LeCun normal (std ``1/sqrt(fan_in)``), not Glorot's scheme: Glorot & Bengio's
    normal scheme, :class:`glorot_normal`, has std ``sqrt(2 / (fan_in + fan_out))``.
    """

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", 0.0, 1.0 / math.sqrt(fan_in))


# ---- variance-preserving families -------------------------------------------------------


@dataclass(frozen=True)
class glorot_normal(Scheme):
    """Glorot (Xavier) normal: N(0, std²), ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    As ``torch.nn.init.xavier_normal_(w, gain)``.  Keras's ``GlorotNormal`` truncates at 2σ:
    it is ``variance_scaling(1.0, "fan_avg", "truncated_normal")``.

    Parameters
    ----------
    gain : float
        Scaling factor, ``>= 0`` (see :func:`calculate_gain`).
    """

    gain: float = 1.0

    def __post_init__(self) -> None:
        _set(self, gain=_real("glorot_normal", "gain", self.gain, low=0.0))

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", 0.0, self.gain * math.sqrt(2.0 / (fan_in + fan_out)))


@dataclass(frozen=True)
class glorot_uniform(Scheme):
    """Glorot (Xavier) uniform: U(-l, l), ``l = gain * sqrt(6 / (fan_in + fan_out))``.

    As ``torch.nn.init.xavier_uniform_(w, gain)`` (which computes ``sqrt(3) * std`` with
    ``std = gain * sqrt(2 / (fan_in + fan_out))``, as here) and, for gain 1, Keras
    ``GlorotUniform``.

    Parameters
    ----------
    gain : float
        Scaling factor, ``>= 0``.
    """

    gain: float = 1.0

    def __post_init__(self) -> None:
        _set(self, gain=_real("glorot_uniform", "gain", self.gain, low=0.0))

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        limit = math.sqrt(3.0) * (self.gain * math.sqrt(2.0 / (fan_in + fan_out)))
        return Distribution("uniform", -limit, limit)


def _he_check(self: he_normal | he_uniform) -> None:
    owner = type(self).__name__
    a = _real(owner, "a", self.a)
    mode = _choice(owner, "mode", self.mode, MODES)
    calculate_gain(self.nonlinearity, a)  # checks the name (and a, for leaky_relu)
    _set(self, a=a, mode=mode)


@dataclass(frozen=True)
class he_normal(Scheme):
    """He (Kaiming) normal: N(0, std²), ``std = gain / sqrt(fan)``.

    ``gain = calculate_gain(nonlinearity, a)``.  As ``torch.nn.init.kaiming_normal_`` (defaults
    a=0, mode="fan_in", nonlinearity="leaky_relu", so gain = sqrt 2); ``mode="fan_avg"`` is an
    extension torch lacks.  Keras's ``HeNormal`` truncates at 2σ: it is
    ``variance_scaling(2.0, "fan_in", "truncated_normal")``.

    Parameters
    ----------
    a : float
        Negative slope of the rectifier that follows (used when nonlinearity is leaky_relu).
    mode : {"fan_in", "fan_out", "fan_avg"}
        Which fan to divide by.
    nonlinearity : str
        A name :func:`calculate_gain` knows.
    """

    a: float = 0.0
    mode: Mode = "fan_in"
    nonlinearity: str = "leaky_relu"

    def __post_init__(self) -> None:
        _he_check(self)

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        gain = calculate_gain(self.nonlinearity, self.a)
        return Distribution("normal", 0.0, gain / math.sqrt(fan(fan_in, fan_out, self.mode)))


@dataclass(frozen=True)
class he_uniform(Scheme):
    """He (Kaiming) uniform: U(-l, l), ``l = sqrt(3) * gain / sqrt(fan)``.

    As ``torch.nn.init.kaiming_uniform_`` (same parameters and defaults as
    :class:`he_normal`); with the defaults it equals Keras ``HeUniform``
    (``l = sqrt(6 / fan_in)``).

    Parameters
    ----------
    a : float
        Negative slope of the rectifier that follows (used when nonlinearity is leaky_relu).
    mode : {"fan_in", "fan_out", "fan_avg"}
        Which fan to divide by.
    nonlinearity : str
        A name :func:`calculate_gain` knows.
    """

    a: float = 0.0
    mode: Mode = "fan_in"
    nonlinearity: str = "leaky_relu"

    def __post_init__(self) -> None:
        _he_check(self)

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        gain = calculate_gain(self.nonlinearity, self.a)
        bound = math.sqrt(3.0) * (gain / math.sqrt(fan(fan_in, fan_out, self.mode)))
        return Distribution("uniform", -bound, bound)


@dataclass(frozen=True)
class lecun_normal(Scheme):
    """LeCun normal: N(0, 1/fan_in), untruncated (the same as the seed's :class:`xavier`).

    Keras's ``LecunNormal`` truncates at 2σ: it is
    ``variance_scaling(1.0, "fan_in", "truncated_normal")``.
    """

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", 0.0, 1.0 / math.sqrt(fan_in))


@dataclass(frozen=True)
class lecun_uniform(Scheme):
    """LeCun uniform: U(-l, l), ``l = sqrt(3 / fan_in)``, as Keras ``LecunUniform``."""

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        limit = math.sqrt(3.0 * (1.0 / fan_in))  # Keras's order of operations
        return Distribution("uniform", -limit, limit)


# ---- truncated normals ----------------------------------------------------------------------


def normal_mass(low: float, high: float) -> float:
    """``P(low <= Z <= high)`` for a standard normal ``Z``, accurate in both tails."""
    r = math.sqrt(0.5)
    if low >= 0.0:
        return 0.5 * (math.erfc(low * r) - math.erfc(high * r))
    if high <= 0.0:
        return 0.5 * (math.erfc(-high * r) - math.erfc(-low * r))
    return 1.0 - 0.5 * (math.erfc(-low * r) + math.erfc(high * r))


def _uniform_proposal_rate(low: float, high: float) -> float:
    """Acceptance rate of uniform proposals on ``[low, high]`` (0 if a side is open)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return 0.0
    m = min(max(0.0, low), high)  # where the density peaks on [low, high]
    peak = math.exp(-0.5 * m * m) / math.sqrt(2.0 * math.pi)
    return normal_mass(low, high) / ((high - low) * peak)


def truncation_method(low: float, high: float) -> tuple[str, float]:
    """The proposal used for standard normals truncated to ``[low, high]``, and its rate.

    ``"normal"`` (standard normals, kept when in bounds; rate ``Φ(high) - Φ(low)``) unless
    uniform proposals on ``[low, high]`` are accepted more often (narrow bounds, or bounds in
    a tail).
    """
    by_normal = normal_mass(low, high)
    by_uniform = _uniform_proposal_rate(low, high)
    return ("normal", by_normal) if by_normal >= by_uniform else ("uniform", by_uniform)


def _candidates(
    method: str, stream: int, start: int, count: int, low: float, high: float, *,
    seed: int, layer: int, dtype: np.dtype,
) -> tuple[NDArray, NDArray]:  # fmt: skip
    """Candidates ``start .. start + count - 1`` of ``stream`` and whether each is accepted."""
    if method == "normal":
        t = dtype.type
        z = _random.normal(seed, stream, layer, start, count, dtype)
        return z, (z >= t(low)) & (z <= t(high))
    u = _random.uniform(seed, stream, layer, 2 * start, 2 * count, np.float64).reshape(count, 2)
    x = np.minimum(low + (high - low) * u[:, 0], high)
    m = min(max(0.0, low), high)
    # keep with probability φ(x) / φ(m); log_unit is + - * / only, so this is the same
    # decision on every machine (np.exp may differ in the last bit)
    accepted = _random.log_unit(1.0 - u[:, 1]) < 0.5 * (m * m - x * x)
    return x.astype(dtype), accepted


def _truncated_standard(
    count: int, low: float, high: float, *, seed: int, layer: int, dtype: np.dtype
) -> NDArray:
    """``count`` standard normals conditioned on ``low <= z <= high``, by rejection.

    Candidate ``i`` of stream ``WEIGHTS`` is tried for element ``i``; the ``k``-th element
    whose candidate is rejected (in row-major order) takes the ``k``-th accepted candidate of
    stream ``AUX``.  This is exactly "each rejected element, in order, takes the next ``AUX``
    candidates until one is accepted", computed in batches.  The candidates are those of
    :func:`truncation_method`: normal ``i`` of the stream, kept when in bounds; or, for
    uniform proposals, ``x = low + (high - low) u_2i``, kept when
    ``log(1 - u_2i+1) < (m² - x²) / 2``, ``m`` the point of ``[low, high]`` nearest 0 (float64
    uniforms ``2i`` and ``2i + 1``; ``log`` is :func:`initscope.random.log_unit`).
    """
    method, rate = truncation_method(low, high)
    opts: dict[str, Any] = dict(seed=seed, layer=layer, dtype=dtype)
    z, accepted = _candidates(method, _random.WEIGHTS, 0, count, low, high, **opts)
    rejected = ~accepted
    need = int(np.count_nonzero(rejected))
    if need == 0:
        return z
    found: list[NDArray] = []
    offset = 0
    while need > 0:
        batch = min(int(need / rate * 1.1) + 256, 1 << 22)
        more, ok = _candidates(method, _random.AUX, offset, batch, low, high, **opts)
        offset += batch
        kept = more[ok][:need]
        found.append(kept)
        need -= kept.size
    z[rejected] = np.concatenate(found)
    return z


def _truncated_matrix(
    fan_in: int,
    fan_out: int,
    *,
    mean: float,
    std: float,
    z_bounds: tuple[float, float],
    bounds: tuple[float, float],
    seed: int,
    layer: int,
    dtype: object,
) -> NDArray:
    _check_shape(fan_in, fan_out)
    dtype_ = _float_dtype(dtype)
    t = dtype_.type
    z = _truncated_standard(fan_in * fan_out, *z_bounds, seed=seed, layer=layer, dtype=dtype_)
    with np.errstate(over="ignore"):
        w = z * t(std) + t(mean)
    # z * std + mean may round one ulp past a bound; torch clamps as well
    w = np.clip(w, t(bounds[0]), t(bounds[1]))
    return w.reshape(fan_in, fan_out)


def _check_acceptance(owner: str, low: float, high: float, detail: str) -> None:
    method, rate = truncation_method(low, high)
    if rate < MIN_ACCEPTANCE:
        raise ValueError(
            f"{owner}: the bounds {detail} would accept only {rate:.3g} of the proposals "
            f"(normal mass {normal_mass(low, high):.3g}), less than {MIN_ACCEPTANCE:g}: "
            f"move a or b closer to the mean"
        )


@dataclass(frozen=True)
class truncated_normal(Scheme):
    """N(mean, std²) conditioned on ``a <= W <= b``: torch's flavour (absolute bounds).

    As ``torch.nn.init.trunc_normal_(w, mean, std, a, b)``.  ``std`` is the std of the normal
    *before* truncation; the weights' own std is smaller (the closed form is
    ``std * sqrt(1 + (α φ(α) - β φ(β)) / Z - ((φ(α) - φ(β)) / Z)**2)`` with
    ``α = (a - mean) / std``, ``β = (b - mean) / std``, ``Z = Φ(β) - Φ(α)``).
    For Keras's flavour (bounds at ``mean ± 2 stddev``) see :class:`truncated_normal_keras`;
    for Keras's variance-scaled one, :class:`variance_scaling`.

    Drawn by rejection from the generator, deterministically (exact, unlike an inverse-CDF
    method in the far tails).  Usually (whenever ``Φ(β) - Φ(α)`` is the better acceptance
    rate) element ``i`` is normal ``i`` of stream ``WEIGHTS`` if it lies in the bounds, so
    those weights are exactly the ones of ``normal(mean, std)``, and the ``k``-th element
    that does not (in row-major order) takes the ``k``-th in-bounds normal of stream
    ``AUX``.  When uniform proposals on ``[α, β]`` are accepted more often (narrow bounds,
    or bounds in a tail), they are used instead, in the same order (see
    :func:`truncation_method` and ``_truncated_standard``).

    Parameters
    ----------
    mean : float
        Mean of the normal before truncation.
    std : float
        Std of the normal before truncation, ``> 0``.
    a, b : float
        The bounds, ``a < b``; ``-inf`` / ``inf`` leave a side open.  ``ValueError`` when the
        better proposal would be accepted less often than :data:`MIN_ACCEPTANCE` (far in one
        tail and wide, e.g. ``a >= 2.4 std`` above the mean with ``b = inf``).
    """

    mean: float = 0.0
    std: float = 1.0
    a: float = -2.0
    b: float = 2.0

    def __post_init__(self) -> None:
        owner = "truncated_normal"
        mean = _real(owner, "mean", self.mean)
        std = _real(owner, "std", self.std, low=0.0, strict=True)
        a = _real(owner, "a", self.a, infinite=True)
        b = _real(owner, "b", self.b, infinite=True)
        if not a < b:
            raise ValueError(f"{owner}: needs a < b, got a={a}, b={b}")
        _set(self, mean=mean, std=std, a=a, b=b)
        low, high = self.z_bounds
        _check_acceptance(owner, low, high, f"a={a}, b={b} (mean={mean}, std={std})")

    @property
    def z_bounds(self) -> tuple[float, float]:
        """The bounds in units of std around the mean, ``(α, β)``."""
        return (self.a - self.mean) / self.std, (self.b - self.mean) / self.std

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        return _truncated_matrix(
            fan_in, fan_out, mean=self.mean, std=self.std, z_bounds=self.z_bounds,
            bounds=(self.a, self.b), seed=seed, layer=layer, dtype=dtype,
        )  # fmt: skip


@dataclass(frozen=True)
class truncated_normal_keras(Scheme):
    """N(mean, stddev²) conditioned on ``|W - mean| <= 2 stddev``: Keras's flavour.

    As Keras ``TruncatedNormal(mean, stddev)`` (same parameter names and defaults): values
    more than two stddevs from the mean are re-drawn.  The weights' std is
    ``0.8796... * stddev`` (:data:`KERAS_TRUNCATED_STD`); Keras's ``variance_scaling``
    divides by that factor, this class does not (neither does Keras's ``TruncatedNormal``).
    Equal to ``truncated_normal(mean, stddev, mean - 2 stddev, mean + 2 stddev)`` and drawn
    the same way.

    Parameters
    ----------
    mean : float
        Mean of the weights.
    stddev : float
        Std of the normal before truncation, ``> 0``.
    """

    mean: float = 0.0
    stddev: float = 0.05

    def __post_init__(self) -> None:
        owner = "truncated_normal_keras"
        mean = _real(owner, "mean", self.mean)
        stddev = _real(owner, "stddev", self.stddev, low=0.0, strict=True)
        if not math.isfinite(abs(mean) + 2.0 * stddev):
            raise ValueError(f"{owner}: mean ± 2 stddev overflows, got {mean}, {stddev}")
        _set(self, mean=mean, stddev=stddev)

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        m, s = self.mean, self.stddev
        return _truncated_matrix(
            fan_in, fan_out, mean=m, std=s, z_bounds=(-2.0, 2.0),
            bounds=(m - 2.0 * s, m + 2.0 * s), seed=seed, layer=layer, dtype=dtype,
        )  # fmt: skip


VS_DISTRIBUTIONS: Final = ("truncated_normal", "untruncated_normal", "uniform")


@dataclass(frozen=True, init=False)
class variance_scaling(Scheme):
    """Keras ``VarianceScaling(scale, mode, distribution)``, formula for formula.

    With ``n`` the fan of ``mode`` and ``s = scale / max(1, n)``:

    - ``"truncated_normal"`` (default; ``"normal"`` is Keras's alias for it): N(0, σ²)
      truncated at ±2σ, ``σ = sqrt(s) / 0.87962566103423978``, so that the weights' std
      is ``sqrt(s)``.  Drawn as :class:`truncated_normal` is.
    - ``"untruncated_normal"``: N(0, s).
    - ``"uniform"``: U(-l, l), ``l = sqrt(3 s)``.

    Keras's ``GlorotNormal`` is ``variance_scaling(1, "fan_avg")``, ``HeNormal``
    ``variance_scaling(2)``, ``LecunNormal`` ``variance_scaling(1)``; ``GlorotUniform``,
    ``HeUniform`` and ``LecunUniform`` are the same with ``"uniform"``.

    Parameters
    ----------
    scale : float
        Variance scale, ``> 0``.
    mode : {"fan_in", "fan_out", "fan_avg"}
        Which fan to divide by.
    distribution : {"truncated_normal", "untruncated_normal", "uniform", "normal"}
        Case-insensitive, as in Keras; stored as ``distribution_name`` (``"normal"`` becomes
        ``"truncated_normal"``), because ``distribution()`` is the :class:`Scheme` method.
    """

    scale: float = 1.0
    mode: Mode = "fan_in"
    distribution_name: str = field(default="truncated_normal")

    def __init__(
        self,
        scale: float = 1.0,
        mode: Mode = "fan_in",
        distribution: str = "truncated_normal",
    ) -> None:
        owner = "variance_scaling"
        scale = _real(owner, "scale", scale, low=0.0, strict=True)
        mode = _choice(owner, "mode", mode, MODES)  # type: ignore[assignment]
        name = distribution.lower() if isinstance(distribution, str) else distribution
        if name == "normal":
            name = "truncated_normal"
        name = _choice(owner, "distribution", name, VS_DISTRIBUTIONS)
        _set(self, scale=scale, mode=mode, distribution_name=name)

    def __repr__(self) -> str:
        return (
            f"variance_scaling(scale={self.scale!r}, mode={self.mode!r}, "
            f"distribution={self.distribution_name!r})"
        )

    def _scale(self, fan_in: int, fan_out: int) -> float:
        return self.scale / max(1.0, fan(fan_in, fan_out, self.mode))

    def distribution(self, fan_in: int, fan_out: int) -> Distribution | None:
        s = self._scale(fan_in, fan_out)
        if self.distribution_name == "untruncated_normal":
            return Distribution("normal", 0.0, math.sqrt(s))
        if self.distribution_name == "uniform":
            limit = math.sqrt(3.0 * s)
            return Distribution("uniform", -limit, limit)
        return None

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        if self.distribution_name != "truncated_normal":
            return super().sample(fan_in, fan_out, seed=seed, layer=layer, dtype=dtype)
        _check_shape(fan_in, fan_out)
        std = math.sqrt(self._scale(fan_in, fan_out)) / KERAS_TRUNCATED_STD
        return _truncated_matrix(
            fan_in, fan_out, mean=0.0, std=std, z_bounds=(-2.0, 2.0),
            bounds=(-2.0 * std, 2.0 * std), seed=seed, layer=layer, dtype=dtype,
        )  # fmt: skip


# ---- structured matrices ----------------------------------------------------------------------


@dataclass(frozen=True)
class orthogonal(Scheme):
    """A (semi-)orthogonal matrix times ``gain``, Haar-distributed (Saxe et al. 2013).

    As ``torch.nn.init.orthogonal_(w, gain)``, in torch's ``(out, in)`` layout: the normal
    matrix ``A`` (shape ``(fan_out, fan_in)``, transposed if it has fewer rows than columns)
    is factored ``A = QR``, the columns of ``Q`` are multiplied by ``sign(diag(R))``
    (Mezzadri 2007; a zero counts as +1) so that ``Q`` is uniform, ``Q`` is transposed back
    and scaled by ``gain``.  Returned in our ``(fan_in, fan_out)`` layout, the transpose of
    torch's, so ``W @ W.T = gain² I`` when ``fan_in <= fan_out`` and ``W.T @ W = gain² I``
    otherwise.  ``A[o, i]`` is normal ``i * fan_out + o`` of stream ``WEIGHTS``, the draw behind
    ``W[i, o]``.  Keras's ``Orthogonal(gain)`` has the same distribution.

    Parameters
    ----------
    gain : float
        Scaling factor (any finite number, as in torch).
    """

    gain: float = 1.0

    def __post_init__(self) -> None:
        _set(self, gain=_real("orthogonal", "gain", self.gain))

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        _check_shape(fan_in, fan_out)
        dtype_ = _float_dtype(dtype)
        g = _random.normal(seed, _random.WEIGHTS, layer, 0, fan_in * fan_out, dtype_)
        g = g.reshape(fan_in, fan_out).astype(np.float64)  # QR in float64, as precise as it gets
        # torch's A is g.T, (fan_out, fan_in); it factors the tall one of A and A.T
        tall = g.T if fan_out >= fan_in else g
        q, r = np.linalg.qr(tall)
        q *= np.where(np.diagonal(r) < 0, -1.0, 1.0)
        w = q.T if fan_out >= fan_in else q  # torch's Q is q or q.T; ours is its transpose
        return np.ascontiguousarray(w * self.gain, dtype=dtype_)


@dataclass(frozen=True)
class identity(Scheme):
    """``gain`` on the diagonal, zeros elsewhere, for any (rectangular) shape.

    As ``torch.nn.init.eye_`` (times ``gain``) and Keras ``Identity(gain)``: ``W[i, i] = gain``
    for ``i < min(fan_in, fan_out)``.  The transpose of an identity is an identity, so both
    layouts agree.

    Parameters
    ----------
    gain : float
        The diagonal value.
    """

    gain: float = 1.0

    def __post_init__(self) -> None:
        _set(self, gain=_real("identity", "gain", self.gain))

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        _check_shape(fan_in, fan_out)
        dtype_ = _float_dtype(dtype)
        return np.eye(fan_in, fan_out, dtype=dtype_) * dtype_.type(self.gain)


@dataclass(frozen=True)
class sparse(Scheme):
    """N(0, std²) weights with a fraction ``sparsity`` of each unit's inputs set to zero.

    As ``torch.nn.init.sparse_(w, sparsity, std)`` (Martens 2010): in torch's ``(out, in)``
    layout each column gets ``ceil(sparsity * out)`` zeros at random rows.  In our
    ``(fan_in, fan_out)`` layout: each row ``i`` has exactly ``ceil(sparsity * fan_out)``
    zeros.  The other weights are those of ``normal(0, std)``; the zeros of row ``i`` are at
    the columns of its ``n`` smallest float64 uniforms ``i * fan_out + c`` of stream ``AUX``
    (a uniformly random subset; same positions in float32 and float64).

    Parameters
    ----------
    sparsity : float
        Fraction of zeros in each row, in ``[0, 1)``.
    std : float
        Std of the non-zero weights, ``>= 0``.
    """

    sparsity: float
    std: float = 0.01

    def __post_init__(self) -> None:
        sparsity = _real("sparse", "sparsity", self.sparsity)
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparse: sparsity must be in [0, 1), got {sparsity}")
        _set(self, sparsity=sparsity, std=_real("sparse", "std", self.std, low=0.0))

    def zeros_per_row(self, fan_out: int) -> int:
        """Zeros in each row of our layout (each column of torch's): ``ceil(sparsity * out)``."""
        return math.ceil(self.sparsity * fan_out)

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        _check_shape(fan_in, fan_out)
        dtype_ = _float_dtype(dtype)
        dist = Distribution("normal", 0.0, self.std)
        w = draw(
            dist, (fan_in, fan_out), seed=seed, stream=_random.WEIGHTS, layer=layer, dtype=dtype_
        )
        n_zero = self.zeros_per_row(fan_out)
        if n_zero:
            keys = _random.uniform(seed, _random.AUX, layer, 0, fan_in * fan_out, np.float64)
            order = np.argsort(keys.reshape(fan_in, fan_out), axis=1, kind="stable")
            np.put_along_axis(w, order[:, :n_zero], dtype_.type(0.0), axis=1)
        return w


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
        w = np.ascontiguousarray(w, dtype=_float_dtype(dtype))
        if not np.all(np.isfinite(w)):
            raise ValueError(f"init function {self.name} returned NaN or inf for layer {layer}")
        return w


# ---- registry --------------------------------------------------------------------------------

#: Scheme names accepted by ``init=``, each with its default parameters.  Names follow torch
#: (``kaiming_normal``, ``trunc_normal``, ``eye``) and Keras (``random_normal`` and
#: ``random_uniform`` with Keras's defaults, std 0.05 and ±0.05); ``sparse`` has sparsity 0.1.
SCHEMES: Final[dict[str, Callable[[], Scheme]]] = {
    "zeros": zeros,
    "ones": ones,
    "constant": constant,
    "normal": normal,
    "uniform": uniform,
    "random_normal": functools.partial(normal, 0.0, 0.05),
    "random_uniform": functools.partial(uniform, -0.05, 0.05),
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
    "truncated_normal": truncated_normal,
    "trunc_normal": truncated_normal,
    "truncated_normal_keras": truncated_normal_keras,
    "variance_scaling": variance_scaling,
    "orthogonal": orthogonal,
    "identity": identity,
    "eye": identity,
    "sparse": functools.partial(sparse, 0.1),
}

# factories that users may pass uncalled, like the seed's functions: init=schemes.small
_FACTORIES: Final = (zeros, ones, small, big)


def scheme(init: object) -> Scheme:
    """Resolve ``init``: a scheme name, a :class:`Scheme`, or a callable ``f(fan_in, fan_out)``.

    A scheme class or factory passed uncalled (``init=schemes.orthogonal``,
    ``init=schemes.small``) means its defaults.
    """
    if isinstance(init, Scheme):
        return init
    if isinstance(init, str):
        try:
            factory = SCHEMES[init]
        except KeyError:
            raise ValueError(
                f"init {init!r} is unknown; choose one of {', '.join(sorted(SCHEMES))}"
            ) from None
        return factory()
    if isinstance(init, type) and issubclass(init, Scheme) and init not in (Scheme, from_callable):
        return init()
    if any(init is f for f in _FACTORIES):
        return init()  # type: ignore[operator]
    if callable(init):
        return from_callable(init)
    raise TypeError(
        f"init must be a scheme name, a Scheme or a callable f(fan_in, fan_out), "
        f"got {type(init).__name__}"
    )
