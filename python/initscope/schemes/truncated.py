"""Truncated normals (torch's and Keras's) and Keras's ``variance_scaling``: whole matrices
drawn by rejection from the counter-based generator."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from .. import random as _random
from .._checks import float_dtype
from .base import (
    KERAS_TRUNCATED_STD,
    MIN_ACCEPTANCE,
    MODES,
    Distribution,
    Mode,
    Scheme,
    check_choice,
    check_real,
    check_shape,
    fan,
    set_checked,
)

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
    check_shape(fan_in, fan_out)
    dtype_ = float_dtype(dtype)
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
        mean = check_real(owner, "mean", self.mean)
        std = check_real(owner, "std", self.std, low=0.0, strict=True)
        a = check_real(owner, "a", self.a, infinite=True)
        b = check_real(owner, "b", self.b, infinite=True)
        if not a < b:
            raise ValueError(f"{owner}: needs a < b, got a={a}, b={b}")
        set_checked(self, mean=mean, std=std, a=a, b=b)
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
        mean = check_real(owner, "mean", self.mean)
        stddev = check_real(owner, "stddev", self.stddev, low=0.0, strict=True)
        if not math.isfinite(abs(mean) + 2.0 * stddev):
            raise ValueError(f"{owner}: mean ± 2 stddev overflows, got {mean}, {stddev}")
        set_checked(self, mean=mean, stddev=stddev)

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
        scale = check_real(owner, "scale", scale, low=0.0, strict=True)
        mode = check_choice(owner, "mode", mode, MODES)  # type: ignore[assignment]
        name = distribution.lower() if isinstance(distribution, str) else distribution
        if name == "normal":
            name = "truncated_normal"
        name = check_choice(owner, "distribution", name, VS_DISTRIBUTIONS)
        set_checked(self, scale=scale, mode=mode, distribution_name=name)

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
        check_shape(fan_in, fan_out)
        std = math.sqrt(self._scale(fan_in, fan_out)) / KERAS_TRUNCATED_STD
        return _truncated_matrix(
            fan_in, fan_out, mean=0.0, std=std, z_bounds=(-2.0, 2.0),
            bounds=(-2.0 * std, 2.0 * std), seed=seed, layer=layer, dtype=dtype,
        )  # fmt: skip
