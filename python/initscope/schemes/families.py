"""Plain distributions (normal, uniform, constant, the seed's small/big/xavier) and the
variance-preserving families (Glorot, He, LeCun): i.i.d. schemes the kernels draw in place."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import (
    MODES,
    Distribution,
    Mode,
    Scheme,
    calculate_gain,
    check_choice,
    check_real,
    fan,
    set_checked,
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
        set_checked(
            self,
            mean=check_real("normal", "mean", self.mean),
            std=check_real("normal", "std", self.std, low=0.0),
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
        a = check_real("uniform", "a", self.a)
        b = check_real("uniform", "b", self.b)
        if b < a:
            raise ValueError(f"uniform: needs a <= b, got a={a}, b={b}")
        if not math.isfinite(b - a):
            raise ValueError(f"uniform: b - a overflows, got a={a}, b={b}")
        set_checked(self, a=a, b=b)

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
        set_checked(self, value=check_real("constant", "value", self.value))

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
        set_checked(self, gain=check_real("glorot_normal", "gain", self.gain, low=0.0))

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
        set_checked(self, gain=check_real("glorot_uniform", "gain", self.gain, low=0.0))

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        limit = math.sqrt(3.0) * (self.gain * math.sqrt(2.0 / (fan_in + fan_out)))
        return Distribution("uniform", -limit, limit)


@dataclass(frozen=True)
class _he(Scheme):
    """The parameters of the He (Kaiming) schemes, ``gain = calculate_gain(nonlinearity, a)``.

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
        owner = type(self).__name__
        a = check_real(owner, "a", self.a)
        mode = check_choice(owner, "mode", self.mode, MODES)
        calculate_gain(self.nonlinearity, a)  # checks the name (and a, for leaky_relu)
        set_checked(self, a=a, mode=mode)

    def _std(self, fan_in: int, fan_out: int) -> float:
        return calculate_gain(self.nonlinearity, self.a) / math.sqrt(
            fan(fan_in, fan_out, self.mode)
        )


@dataclass(frozen=True)
class he_normal(_he):
    """He (Kaiming) normal: N(0, std²), ``std = gain / sqrt(fan)``.

    As ``torch.nn.init.kaiming_normal_`` (defaults a=0, mode="fan_in",
    nonlinearity="leaky_relu", so gain = sqrt 2); ``mode="fan_avg"`` is an extension torch
    lacks.  Keras's ``HeNormal`` truncates at 2σ: it is
    ``variance_scaling(2.0, "fan_in", "truncated_normal")``.  Parameters: see ``_he``.
    """

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        return Distribution("normal", 0.0, self._std(fan_in, fan_out))


@dataclass(frozen=True)
class he_uniform(_he):
    """He (Kaiming) uniform: U(-l, l), ``l = sqrt(3) * gain / sqrt(fan)``.

    As ``torch.nn.init.kaiming_uniform_`` (same parameters and defaults as
    :class:`he_normal`); with the defaults it equals Keras ``HeUniform``
    (``l = sqrt(6 / fan_in)``).
    """

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        bound = math.sqrt(3.0) * self._std(fan_in, fan_out)
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
