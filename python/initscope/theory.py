"""Mean-field theory of deep dense networks at initialization, for every built-in activation.

In the infinite-width limit (Poole et al. 2016, "Exponential expressivity in deep neural
networks through transient chaos"; Schoenholz et al. 2017, "Deep information propagation")
the pre-activations ``h_l = X_{l-1} @ W_l + b_l`` of a layer are Gaussian with mean 0 and a
variance ``q_l`` that follows the *length map*

    q_l = σ_w² E[φ(√q_{l-1} z)²] + σ_b²,       q_1 = σ_w² E[x²] + σ_b²,

with ``z ~ N(0, 1)``, ``σ_w² = fan_in Var(W_l)`` and ``σ_b`` the bias std.  Everything else
follows from Gaussian expectations at ``q_l``: the mean and std of the activations, the
saturated and zero fractions, ``χ₁ = σ_w² E[φ'(√q z)²]`` (the factor by which squared
gradients grow per layer), the fixed point ``q*``, the depth scales ``ξ_q`` and ``ξ_c``, the
correlation map ``c_l`` of two inputs and its fixed point ``c*``, and the critical line
``χ₁ = 1`` that separates the ordered phase (inputs collapse, gradients vanish) from the
chaotic one (inputs decorrelate, gradients explode).

- :func:`gaussian_moments`: ``E[φ]``, ``E[φ²]``, the variance, ``E[φ'²]`` and
  ``dE[φ²]/dq`` at any ``q``, vectorised;
- :func:`length_map`, :func:`correlation_map`: one step of the two maps;
- :func:`fixed_point`: ``q*``, its stability, ``χ₁``, ``ξ_q``, ``c*``, ``ξ_c``, vectorised
  over grids of ``(σ_w, σ_b)`` (a 300 × 300 phase diagram takes seconds, under one with
  ``precise=False``);
- :func:`critical_line`: the line ``χ₁ = 1`` parametrised by ``q*``;
- :func:`predict`: the per-layer prediction for a network, with the finite-width spread
  of each measured statistic; :func:`predict_result` for the network of a
  :class:`~initscope.PropagationResult`, and :func:`compare` for measured against predicted.

Accuracy
    Gaussian expectations are exact closed forms for linear, relu and leaky_relu, closed
    forms in ``exp`` and ``erfc`` for elu and selu (with a convergent series for
    ``q < 1``, where the closed forms cancel), and for tanh, sigmoid, softplus, gelu,
    gelu_tanh and silu a composite Gauss-Legendre rule on panels that follow both scales of
    the integrand: unit steps of ``z`` (where the Gaussian lives) and the points
    ``|h| = 2^-4 .. 2^6`` of ``h = √q z`` (where the activation bends or saturates), so a
    saturated layer at ``q = 10^8`` is resolved as well as a linear one at ``q = 10^-12``.
    Checked against mpmath (tanh-sinh quadrature at 20 digits) at ``q`` from ``1e-12`` to
    ``1e8``: within ``1e-13`` relative (``1e-10`` is what the tests demand) for ``E[φ]``,
    ``E[φ²]``, the variance, ``E[φ'²]`` and ``dE[φ²]/dq``, and against tanh's small- and
    large-q series.  Two-dimensional expectations (the correlation map) use the same rule
    in each dimension, the inner one centred on the conditional mean and the outer one
    broken where the inner turns sharply (``|c|`` near 1): within about ``1e-12`` of the
    arc-cosine kernels of relu and of a Mehler series for tanh (``1e-8`` for
    discontinuous integrands such as relu's ``φ'φ'`` at ``c = 1 - 1e-6``).  The network
    predictions use 8 points per panel for the correlation (about ``1e-13``).

Finite width
    :func:`predict` also gives the spread a measurement at finite width should show around
    the prediction (see :func:`predict`, "Finite-width spread"): :func:`compare` expresses
    every difference in units of it.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .activations import GELU_TANH_C, SELU_ALPHA, SELU_SCALE, Activation
from .activations import activation as resolve_activation

if TYPE_CHECKING:
    from .result import PropagationResult

__all__ = [
    "CriticalLine",
    "FixedPoint",
    "GaussianMoments",
    "Prediction",
    "compare",
    "correlation_map",
    "critical_line",
    "fixed_point",
    "gaussian_moments",
    "length_map",
    "predict",
    "predict_result",
]

Array = NDArray[np.float64]

_SQRT2: Final = math.sqrt(2.0)
_SQRT_PI: Final = math.sqrt(math.pi)
_INV_SQRT_2PI: Final = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_TANH_K: Final = 0.044715
_LOG2: Final = math.log(2.0)


# ---- erfc and erfcx, vectorised ---------------------------------------------------------------
# NumPy has no erfc.  For |x| < 1/2 the Taylor series of erf; beyond, the trapezoidal rule of
# Matta & Reichel (1971) for erfcx(x) = exp(x²) erfc(x), which is exponentially accurate in its
# step (0.45: about 1e-16) and, written for erfcx, free of cancellation; its correction term
# matters only for x < 6.  Within 1e-15 relative of math.erfc up to x = 26 (where erfc is
# about 1e-300), apart from the conditioning of exp(-x²), which is split to stay exact.

_ERF_TAYLOR: Final = tuple(
    2.0 / _SQRT_PI * (-1.0) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(16)
)
_MR_STEP: Final = 0.45
#: terms up to n h = 6.3: the rest is below 1e-17 of the sum
_MR_NH2: Final = tuple((n * _MR_STEP) ** 2 for n in range(1, 15))
_MR_EXP: Final = tuple(math.exp(-v) for v in _MR_NH2)
_MR_CORRECTION_END: Final = 6.0  # beyond, the correction term is below 1e-20 of erfcx


def _erf_small(x: Array) -> Array:
    """erf(x) for |x| <= 1/2, Taylor series to 1 ulp."""
    x2 = x * x
    total = np.full_like(x, _ERF_TAYLOR[-1])
    for c in reversed(_ERF_TAYLOR[:-1]):
        total *= x2
        total += c
    return x * total


def _erfcx_half(x: Array) -> Array:
    """erfcx(x) for x >= 1/2 (whole arrays, no masks: callers select)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        x2 = x * x
        total = 0.5 / x2
        term = np.empty_like(x)
        for e, nh2 in zip(_MR_EXP, _MR_NH2, strict=True):
            np.add(x2, nh2, out=term)
            np.divide(e, term, out=term)
            total += term
        out = total * x
        out *= 2.0 * _MR_STEP / math.pi
        near = x < _MR_CORRECTION_END
        a = (2.0 * math.pi / _MR_STEP) * x
        correction = np.zeros_like(x)
        np.exp(x2 - a, out=correction, where=near)
        np.divide(correction, np.expm1(-a, where=near, out=np.ones_like(x)), out=correction)
        out += 2.0 * correction
        huge = x > 1e150  # x² overflows: the leading term
        if huge.any():
            out[huge] = 1.0 / (_SQRT_PI * x[huge])
    return out


def _exp_minus_square(x: Array) -> Array:
    """exp(-x²) without the error of rounding x² (x >= 0)."""
    hi = np.round(np.minimum(x, 64.0) * 65536.0) / 65536.0  # hi² is exact
    with np.errstate(under="ignore"):
        return np.exp(-hi * hi) * np.exp(-(x - hi) * (x + hi))


def erfcx(x: ArrayLike) -> Array:
    """The scaled complementary error function ``exp(x²) erfc(x)`` for ``x >= 0``."""
    x = np.asarray(x, dtype=np.float64)
    small = x < 0.5
    xs = np.where(small, x, 0.0)
    with np.errstate(over="ignore"):
        near = np.exp(xs * xs) * (1.0 - _erf_small(xs))
    return np.where(small, near, _erfcx_half(np.maximum(x, 0.5)))


def erfc(x: ArrayLike) -> Array:
    """The complementary error function, vectorised, within about 1e-15 relative."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    small = a < 0.5
    centre = 1.0 - _erf_small(np.where(small, x, 0.0))
    with np.errstate(under="ignore", invalid="ignore"):
        tail = _exp_minus_square(a) * _erfcx_half(np.maximum(a, 0.5))
    return np.where(small, centre, np.where(x < 0, 2.0 - tail, tail))


# ---- the activations, as the integrals see them ------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """What the quadrature needs of an activation.

    ``values(h)`` gives ``(φ(h) - φ(0), φ'(h))`` in float64, in forms without cancellation
    (``φ(h) - φ(0)`` directly, not as a difference); ``second(h)`` gives ``φ''(h)`` where
    ``φ(0) != 0`` (needed for ``dE[φ²]/dq``).  ``features`` are points of ``h`` the rules
    break at besides the built-in scales: kinks, saturation thresholds.
    """

    act: Activation
    phi0: float
    values: Callable[[Array], tuple[Array, Array]]
    second: Callable[[Array], Array] | None
    #: φ'(0±)² averaged over both sides, and d E[φ²]/dq at q = 0: the q -> 0 limits
    deriv_sq0: float
    slope0: float
    odd: bool
    features: tuple[float, ...] = ()
    closed: Callable[[Array], dict[str, Array]] | None = None
    #: (a, b) when φ(h) = a h for h > 0 and b h for h < 0 (linear, relu, leaky_relu)
    slopes: tuple[float, float] | None = None
    saturation_h: tuple[float, float] | None = None
    #: (g(h) + g(-h)) / 2 without cancellation, for E[φ] of activations that are not odd
    even: Callable[[Array], Array] | None = None

    @property
    def name(self) -> str:
        return self.act.name


def _sigmoid_parts(h: Array) -> tuple[Array, Array]:
    """(sigmoid(h), sigmoid'(h)) without overflow."""
    e = np.exp(-np.abs(h))
    s = np.where(h >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return s, e / ((1.0 + e) * (1.0 + e))


def _v_tanh(h: Array) -> tuple[Array, Array]:
    # (1 - t)(1 + t) is off by at most 2 ulp of 1 where sech² is tiny: a relative error of
    # about 1e-16 in every expectation that weights φ' (their integrands live where it is not)
    t = np.tanh(h)
    return t, (1.0 - t) * (1.0 + t)


def _v_sigmoid(h: Array) -> tuple[Array, Array]:
    _, d = _sigmoid_parts(h)
    return 0.5 * np.tanh(0.5 * h), d


def _d2_sigmoid(h: Array) -> Array:
    _, d = _sigmoid_parts(h)
    return -d * np.tanh(0.5 * h)


def _v_softplus(h: Array) -> tuple[Array, Array]:
    s, _ = _sigmoid_parts(h)
    with np.errstate(over="ignore"):
        g = np.maximum(h, 0.0) + np.log1p(np.exp(-np.abs(h))) - _LOG2
        near = np.abs(h) < 1.0
        g = np.where(near, np.log1p(0.5 * np.expm1(np.where(near, h, 0.0))), g)
    return g, s


def _d2_softplus(h: Array) -> Array:
    return _sigmoid_parts(h)[1]


def _erf(x: Array) -> Array:
    """erf(x), accurate near 0 (unlike 1 - erfc(x))."""
    small = np.abs(x) < 0.5
    return np.where(
        small, _erf_small(np.where(small, x, 0.0)), np.sign(x) * (1.0 - erfc(np.abs(x)))
    )


def _even_gelu(h: Array) -> Array:
    return 0.5 * h * _erf(h / _SQRT2)


def _even_gelu_tanh(h: Array) -> Array:
    hc = np.clip(h, -60.0, 60.0)
    return 0.5 * h * np.tanh(GELU_TANH_C * (hc + _GELU_TANH_K * hc * hc * hc))


def _even_silu(h: Array) -> Array:
    return 0.5 * h * np.tanh(0.5 * h)


def _even_softplus(h: Array) -> Array:
    # (softplus(h) + softplus(-h)) / 2 - log 2 = log cosh(h/2) = log1p(2 sinh²(h/4))
    a = np.abs(h)
    s = np.sinh(0.25 * np.minimum(a, 1.0))
    with np.errstate(over="ignore"):
        far = 0.5 * a + np.log1p(np.exp(-a)) - _LOG2
    return np.where(a < 1.0, np.log1p(2.0 * s * s), far)


def _v_gelu(h: Array) -> tuple[Array, Array]:
    tail = erfc(-h / _SQRT2)
    density = np.exp(-0.5 * h * h) * _INV_SQRT_2PI
    return 0.5 * h * tail, 0.5 * tail + h * density


def _v_gelu_tanh(h: Array) -> tuple[Array, Array]:
    hc = np.clip(h, -60.0, 60.0)  # beyond, sigmoid(2u) is 0 or 1 and u³ only overflows
    u = GELU_TANH_C * (hc + _GELU_TANH_K * hc * hc * hc)
    s, d = _sigmoid_parts(2.0 * u)
    du = GELU_TANH_C * (1.0 + 3.0 * _GELU_TANH_K * hc * hc)
    return h * s, s + h * 2.0 * du * d


def _v_silu(h: Array) -> tuple[Array, Array]:
    s, d = _sigmoid_parts(h)
    return h * s, s + h * d


def _exp_half_tail(c: float, q: Array) -> Array:
    """E[exp(c h); h < 0] for h ~ N(0, q), c > 0: erfcx(c √(q/2)) / 2."""
    return 0.5 * erfcx(c * np.sqrt(0.5 * q))


_SERIES_TERMS: Final = 40


@functools.cache
def _abs_moments() -> Array:
    """E|z|^k for k = 0 .. _SERIES_TERMS."""
    k = np.arange(_SERIES_TERMS + 1, dtype=np.float64)
    return np.array([2 ** (j / 2) * math.gamma((j + 1) / 2) / _SQRT_PI for j in k])


def _negative_series(coefficients: Array, q: Array) -> Array:
    """E[Σ_k c_k h^k; h < 0] for h ~ N(0, q): Σ_k c_k (-1)^k q^(k/2) E|z|^k / 2."""
    m = _abs_moments()
    total = np.zeros_like(q)
    root = np.sqrt(q)
    for k in range(len(coefficients) - 1, -1, -1):
        total = total * root + coefficients[k] * (-1.0) ** k * m[k] / 2.0
    return total


def _elu_closed(alpha: float, scale: float) -> Callable[[Array], dict[str, Array]]:
    """Moments of φ(h) = scale * (h if h > 0 else alpha * expm1(h)) under h ~ N(0, q)."""
    inv_fact = np.array([1.0 / math.factorial(k) for k in range(_SERIES_TERMS + 1)])
    pow2 = 2.0 ** np.arange(_SERIES_TERMS + 1)
    c_mean = alpha * inv_fact
    c_mean[0] = 0.0
    c_mean[1] = 0.0  # the √q term of the negative side joins the positive side's, exactly
    c_sq = alpha**2 * (pow2 - 2.0) * inv_fact
    c_sq[0] = 0.0
    root_2pi = math.sqrt(2.0 * math.pi)

    def moments(q: Array) -> dict[str, Array]:
        root = np.sqrt(q)
        e1 = _exp_half_tail(1.0, q)  # E[e^h; h < 0]
        e2 = _exp_half_tail(2.0, q)  # E[e^2h; h < 0]
        positive_mean = root / root_2pi  # E[h; h > 0]
        mean = positive_mean + alpha * (e1 - 0.5)
        sq = 0.5 * q + alpha**2 * (e2 - 2.0 * e1 + 0.5)
        small = q < 1.0
        if small.any():  # the closed forms cancel to O(q): the series in √q does not
            qs = q[small]
            mean[small] = (1.0 - alpha) * positive_mean[small] + _negative_series(c_mean, qs)
            sq[small] = 0.5 * qs + _negative_series(c_sq, qs)
        deriv_sq = 0.5 + alpha**2 * e2
        # dE[φ²]/dq = E[φ'² + φ φ''] = 1/2 + α² E[2 e^2h - e^h; h < 0]
        slope = 0.5 + alpha**2 * (2.0 * e2 - e1)
        return {
            "mean": scale * mean,
            "sq_mean": scale**2 * sq,
            "deriv_sq_mean": scale**2 * deriv_sq,
            "sq_mean_slope": scale**2 * slope,
        }

    return moments


def _piecewise_linear_closed(a: float, b: float) -> Callable[[Array], dict[str, Array]]:
    """Moments of φ(h) = a h (h > 0), b h (h < 0)."""
    k = 0.5 * (a * a + b * b)

    def moments(q: Array) -> dict[str, Array]:
        return {
            "mean": (a - b) * np.sqrt(q) * _INV_SQRT_2PI,
            "sq_mean": k * q,
            "deriv_sq_mean": np.full_like(q, k),
            "sq_mean_slope": np.full_like(q, k),
        }

    return moments


@functools.lru_cache(maxsize=64)
def _spec(act: Activation) -> _Spec:
    name, p = act.name, act.param
    sat = None
    if act.saturation is not None:
        low, high = act.saturation
        if name == "tanh":
            sat = (math.atanh(low), math.atanh(high))
        else:  # sigmoid
            sat = (math.log(low / (1 - low)), math.log(high / (1 - high)))
    extra = tuple(abs(v) for v in sat) if sat else ()
    none: tuple[float, ...] = ()
    if name in ("linear", "relu", "leaky_relu"):
        a, b = {"linear": (1.0, 1.0), "relu": (1.0, 0.0), "leaky_relu": (1.0, p)}[name]
        k = 0.5 * (a * a + b * b)

        def values(h: Array, a: float = a, b: float = b) -> tuple[Array, Array]:
            return np.where(h > 0, a * h, b * h), np.where(h > 0, a, b) + 0.0 * h

        return _Spec(
            act, 0.0, values, None, k, k, a == b, none, _piecewise_linear_closed(a, b), (a, b)
        )
    if name in ("elu", "selu"):
        alpha, scale = (p, 1.0) if name == "elu" else (SELU_ALPHA, SELU_SCALE)

        def values_elu(h: Array, alpha: float = alpha, scale: float = scale) -> tuple[Array, Array]:
            neg = np.minimum(h, 0.0)
            return (
                scale * np.where(h > 0, h, alpha * np.expm1(neg)),
                scale * np.where(h > 0, 1.0, alpha * np.exp(neg)),
            )

        k0 = scale**2 * 0.5 * (1.0 + alpha**2)
        return _Spec(act, 0.0, values_elu, None, k0, k0, False, none, _elu_closed(alpha, scale))
    table: dict[str, tuple[Any, ...]] = {
        # name: (φ(0), values, φ'' where φ(0) != 0, φ'(0)², dE[φ²]/dq at 0, odd, even part)
        "tanh": (0.0, _v_tanh, None, 1.0, 1.0, True, None),
        "sigmoid": (0.5, _v_sigmoid, _d2_sigmoid, 1 / 16, 1 / 16, True, None),
        # softplus: φ'(0) = 1/2, φ''(0) = 1/4: φ'(0)² + φ(0) φ''(0)
        "softplus": (
            _LOG2, _v_softplus, _d2_softplus, 0.25, 0.25 + _LOG2 / 4, False, _even_softplus
        ),
        "gelu": (0.0, _v_gelu, None, 0.25, 0.25, False, _even_gelu),
        "gelu_tanh": (0.0, _v_gelu_tanh, None, 0.25, 0.25, False, _even_gelu_tanh),
        "silu": (0.0, _v_silu, None, 0.25, 0.25, False, _even_silu),
    }  # fmt: skip
    phi0, values_n, second, d0, s0, odd, even = table[name]
    return _Spec(act, phi0, values_n, second, d0, s0, odd, extra, None, None, sat, even)


def _resolve(activation: Any, param: float | None = None) -> Activation:
    if isinstance(activation, tuple):
        return resolve_activation(*activation)
    return resolve_activation(activation, param)


# ---- quadrature -------------------------------------------------------------------------------

#: Gauss-Legendre points per panel; 10 gives about 1e-14 on the panels below, 8 about 1e-12.
_ORDER: Final = 10
#: Panels end at |z| = 9: the Gaussian mass beyond is 2e-19 (4e-17 weighted by z⁴).
_ZMAX: Final = 9.0
#: Points of h where panels break, besides the unit steps of z and 0: where φ bends.
_SCALES: Final = tuple(2.0**j for j in range(-4, 7))
#: Nodes evaluated at once (memory of a chunk: a few arrays of this many doubles).
_CHUNK_NODES: Final = 1 << 20


@functools.cache
def _gauss_legendre(order: int) -> tuple[Array, Array]:
    x, w = np.polynomial.legendre.leggauss(order)
    return (x + 1.0) / 2.0, w / 2.0


def _panels(breaks: Array, order: int) -> tuple[Array, Array]:
    """Gauss-Legendre nodes and weights on the panels between sorted breakpoints (per row)."""
    x, w = _gauss_legendre(order)
    a, b = breaks[:, :-1, None], breaks[:, 1:, None]
    nodes = (a + (b - a) * x).reshape(breaks.shape[0], -1)
    weights = ((b - a) * w).reshape(breaks.shape[0], -1)
    return nodes, weights


def _half_rule(root: Array, points: Array, order: int) -> tuple[Array, Array]:
    """Nodes z in [0, ZMAX] and weights 2 N(z) dz for rows of √q > 0 whose breakpoints
    ``points / √q`` all lie below ZMAX: a rule for E[f(√q z)] of an even f (callers fold)."""
    steps = np.arange(0.0, _ZMAX + 0.5)
    breaks = np.concatenate(
        [np.broadcast_to(steps, (root.size, steps.size)), points[None, :] / root[:, None]],
        axis=1,
    )
    breaks.sort(axis=1)
    z, w = _panels(breaks, order)
    return z, w * (2.0 * _INV_SQRT_2PI) * np.exp(-0.5 * z * z)


def _expect(
    integrand: Callable[[Array, Array], Sequence[Array]],
    q: Array,
    features: Sequence[float] = (),
    order: int = _ORDER,
    *,
    even: bool = False,
) -> Array:
    """``E[f_k(√q z)]`` for each output ``f_k`` of ``integrand(h, z)``, for q > 0 (1-D array).

    The rule folds: it evaluates ``integrand`` at ``(h, z)`` and ``(-h, -z)``, or only at
    the first when every output is ``even`` in ``(h, z)``.  Rows are
    grouped by how many of the points of h fall inside ``|z| < ZMAX``, so that no panel is
    empty.  Returns an array of shape ``(K, q.size)``.
    """
    root = np.sqrt(q)
    points = np.unique(np.asarray((*_SCALES, *features), dtype=np.float64))
    inside = np.searchsorted(points, _ZMAX * root, side="left")  # points below ZMAX √q
    out: Array | None = None
    for count in np.unique(inside):
        rows_of = np.flatnonzero(inside == count)
        per_row = (1 if even else 2) * (int(_ZMAX) + 1 + int(count)) * order
        step = max(1, _CHUNK_NODES // per_row)
        for start in range(0, rows_of.size, step):
            rows = rows_of[start : start + step]
            r = root[rows]
            z, w = _half_rule(r, points[:count], order)
            h = r[:, None] * z
            if even:
                values = np.stack([(f * w).sum(axis=1) for f in integrand(h, z)])
            else:
                both = integrand(np.concatenate([h, -h], axis=1), np.concatenate([z, -z], axis=1))
                n = z.shape[1]
                values = np.stack([((f[:, :n] + f[:, n:]) * w).sum(axis=1) for f in both]) * 0.5
            if out is None:
                out = np.empty((values.shape[0], q.size))
            out[:, rows] = values
    assert out is not None
    return out


def _line_rule(
    center: Array,
    scale: Array,
    features: Sequence[float],
    order: int,
    zmax: float = _ZMAX,
    extra: Sequence[float] = (),
) -> tuple[Array, Array]:
    """Nodes h and weights for E[f(center + scale z)], rows of scale > 0, on z in ±zmax,
    broken at unit steps of z and at the points ``0, ±_SCALES, ±features, extra`` of h.

    Points outside ±zmax in every row are left out (and, for one row, duplicates), so that
    few panels are empty."""
    steps = np.arange(-math.floor(zmax), math.floor(zmax) + 0.5)
    steps = np.unique(np.concatenate([[-zmax], steps, [zmax]]))
    points = np.asarray((*_SCALES, *features), dtype=np.float64)
    points = np.concatenate([-points, [0.0], points, np.asarray(extra, dtype=np.float64)])
    inside = (points[None, :] - center[:, None]) / scale[:, None]
    used = (np.abs(inside) < zmax).any(axis=0)
    inside = np.clip(inside[:, used], -zmax, zmax)
    breaks = np.concatenate([np.broadcast_to(steps, (center.size, steps.size)), inside], axis=1)
    breaks.sort(axis=1)
    if center.size == 1:
        breaks = np.unique(breaks)[None, :]
    z, w = _panels(breaks, order)
    return center[:, None] + scale[:, None] * z, w * _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _expect_pairs(
    funcs: Callable[[Array], Array],
    q: float,
    c: float,
    features: Sequence[float] = (),
    order: int = _ORDER,
    zmax: float = _ZMAX,
) -> Array:
    """``E[f_k(u1) f_k(u2)]`` for ``u1, u2`` of variance ``q`` and correlation ``c``.

    ``funcs(h)`` returns the stacked values ``(K, *h.shape)``.  ``u1 = √q z1`` on the outer
    rule, ``u2 = √q (c z1 + √(1 - c²) z2)`` on an inner rule centred at ``√q c z1``.  Near
    ``|c| = 1`` the inner expectation turns sharply where ``c u1`` crosses a kink or
    threshold of f, over a width ``√q √(1 - c²) / |c|`` of ``u1``: the outer rule breaks
    there too.
    """
    root = math.sqrt(q)
    s = math.sqrt(max(0.0, 1.0 - c * c))
    extra: list[float] = []
    sharp = root * s / abs(c) if c != 0 else math.inf
    if 0 < sharp < _SCALES[0]:
        for f in (0.0, *features, *(-v for v in features)):
            extra.extend(f / c + k * sharp for k in (-4.0, -1.0, -0.25, 0.25, 1.0, 4.0))
    h1, w1 = _line_rule(np.zeros(1), np.array([root]), features, order, zmax, extra)
    h1, w1 = h1[0], w1[0]
    outer = funcs(h1)  # (K, N1)
    if s * root == 0.0:
        inner = funcs(c * h1)
    else:
        h2, w2 = _line_rule(c * h1, np.full(h1.size, root * s), features, order, zmax)
        inner = (funcs(h2) * w2).sum(axis=-1)
    result: Array = (outer * inner * w1).sum(axis=-1)
    return result


# ---- one-dimensional moments ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GaussianMoments:
    """Gaussian expectations of an activation at pre-activation variance ``q``.

    Attributes
    ----------
    q
        The variance of ``h = √q z``.
    mean, sq_mean, var
        ``E[φ(h)]``, ``E[φ(h)²]`` and ``Var φ(h)``.
    deriv_sq_mean
        ``E[φ'(h)²]``; ``χ₁ = σ_w² deriv_sq_mean``.
    sq_mean_slope
        ``d E[φ(√q z)²] / dq = E[φ'² + φ φ'']``; the slope of the length map is
        ``σ_w² sq_mean_slope``.
    saturated_fraction
        ``P(φ(h) <= low or φ(h) >= high)`` for the bounds of a bounded activation
        (tanh: ``|φ| >= 0.99``; sigmoid: ``φ <= 0.01`` or ``>= 0.99``), else NaN.
    zero_fraction
        ``P(φ(h) = 0)``: 1/2 for relu (1 at q = 0); NaN for the others, whose zeros are
        isolated points (a measurement counts only underflow there).
    """

    q: Array
    mean: Array
    sq_mean: Array
    var: Array
    deriv_sq_mean: Array
    sq_mean_slope: Array
    saturated_fraction: Array
    zero_fraction: Array


def _numeric_moments(spec: _Spec, q: Array) -> dict[str, Array]:
    phi0 = spec.phi0
    second = spec.second

    odd = spec.odd  # g odd: g², φ'², z g φ' are even, E[g] and E[φ''] vanish

    even = spec.even

    def integrand(h: Array, z: Array) -> list[Array]:
        g, d = spec.values(h)
        out = [g * g, d * d, z * g * d]
        if not odd:
            # the folded g(h) + g(-h) cancels to O(h²) near 0: its even part does not
            out.append(g if even is None else even(h))
            if second is not None:
                out.append(second(h))
        return out

    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        e = _expect(integrand, q, spec.features, even=odd)
    eg2, ed2, ezgd = e[0], e[1], e[2]
    eg = np.zeros_like(eg2) if odd else e[3]
    slope = ezgd / np.sqrt(q)
    if second is not None and not odd:
        slope = slope + phi0 * e[4]
    return {
        "mean": phi0 + eg,
        "sq_mean": phi0 * phi0 + 2.0 * phi0 * eg + eg2,
        "var": np.maximum(eg2 - eg * eg, 0.0),
        "deriv_sq_mean": ed2,
        "sq_mean_slope": slope,
    }


def _moments(spec: _Spec, q: Array) -> dict[str, Array]:
    """The moments of :class:`GaussianMoments` (without the fractions) for a 1-D array q."""
    out = {
        key: np.full(q.shape, np.nan)
        for key in ("mean", "sq_mean", "var", "deriv_sq_mean", "sq_mean_slope")
    }
    positive = np.isfinite(q) & (q > 0)
    zero = q == 0
    if positive.any():
        qp = q[positive]
        if spec.closed is not None:
            values = spec.closed(qp)
            values["var"] = np.maximum(values["sq_mean"] - values["mean"] ** 2, 0.0)
        else:
            values = _numeric_moments(spec, qp)
        for key, value in values.items():
            out[key][positive] = value
    if zero.any():
        out["mean"][zero] = spec.phi0
        out["sq_mean"][zero] = spec.phi0**2
        out["var"][zero] = 0.0
        out["deriv_sq_mean"][zero] = spec.deriv_sq0
        out["sq_mean_slope"][zero] = spec.slope0
    return out


def _fractions(spec: _Spec, q: Array) -> tuple[Array, Array]:
    with np.errstate(divide="ignore", invalid="ignore"):
        if spec.saturation_h is not None:
            low, high = spec.saturation_h
            root = np.sqrt(2.0 * q)
            saturated = 0.5 * erfc(-low / root) + 0.5 * erfc(high / root)
            saturated = np.where(q == 0, 0.0, saturated)
        else:
            saturated = np.full(q.shape, np.nan)
        if spec.name == "relu":
            zero = np.where(q == 0, 1.0, 0.5)
        else:
            zero = np.full(q.shape, np.nan)
    bad = ~(np.isfinite(q) & (q >= 0))
    return np.where(bad, np.nan, saturated), np.where(bad, np.nan, zero)


def _as_float_array(value: ArrayLike, name: str) -> Array:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a real number or an array of them, got {value!r}"
        ) from None
    return array


def gaussian_moments(
    activation: Any, q: ArrayLike, *, param: float | None = None
) -> GaussianMoments:
    """Gaussian expectations of an activation at pre-activation variance ``q``.

    Parameters
    ----------
    activation
        A name in ``initscope.ACTIVATIONS``, an ``Activation`` or a ``(name, param)`` pair.
    q
        Variances ``>= 0`` (any shape); NaN where negative or not finite.
    param
        leaky_relu's slope or elu's alpha (default: the activation's default).

    Returns
    -------
    GaussianMoments
        Arrays of ``q``'s shape: ``mean``, ``sq_mean``, ``var``, ``deriv_sq_mean``,
        ``sq_mean_slope``, ``saturated_fraction``, ``zero_fraction``.

    Examples
    --------
    >>> m = gaussian_moments("relu", 2.0)
    >>> float(m.sq_mean), float(m.deriv_sq_mean)
    (1.0, 0.5)
    """
    spec = _spec(_resolve(activation, param))
    qa = _as_float_array(q, "q")
    flat = qa.reshape(-1)
    values = _moments(spec, flat)
    saturated, zero = _fractions(spec, flat)
    shape = qa.shape
    return GaussianMoments(
        q=qa,
        saturated_fraction=saturated.reshape(shape),
        zero_fraction=zero.reshape(shape),
        **{key: value.reshape(shape) for key, value in values.items()},
    )


def length_map(
    activation: Any, q: ArrayLike, sigma_w: ArrayLike, sigma_b: ArrayLike = 0.0
) -> Array:
    """One step of the length map: ``σ_w² E[φ(√q z)²] + σ_b²`` (broadcast over the arguments).

    Parameters
    ----------
    activation
        A name, an ``Activation`` or a ``(name, param)`` pair.
    q
        The previous layer's pre-activation variance.
    sigma_w, sigma_b
        Weight scale (``σ_w² = fan_in Var W``) and bias std.

    Returns
    -------
    ndarray
        The next layer's pre-activation variance.
    """
    q_, w, b = np.broadcast_arrays(
        *(_as_float_array(v, n) for v, n in ((q, "q"), (sigma_w, "sigma_w"), (sigma_b, "sigma_b")))
    )
    sq = gaussian_moments(activation, q_).sq_mean
    return np.asarray(w * w * sq + b * b, dtype=np.float64)


# ---- two-dimensional expectations -------------------------------------------------------------


def _pair_values(spec: _Spec, h: Array) -> Array:
    """(φ, φ') stacked, for the correlation map and its slope."""
    g, d = spec.values(h)
    return np.stack([g + spec.phi0, d])


def _pair_closed(spec: _Spec, q: float, c: float) -> tuple[float, float] | None:
    """E[φ(u1) φ(u2)] and E[φ'(u1) φ'(u2)] in closed form (linear, relu, leaky_relu)."""
    if spec.slopes is None:
        return None
    a, b = spec.slopes
    c = min(1.0, max(-1.0, c))
    s = math.sqrt(max(0.0, 1.0 - c * c))
    theta = math.acos(c)
    # the arc-cosine kernel of degree 1 (Cho & Saul 2009) and degree 0
    kernel = q / (2.0 * math.pi) * (s + (math.pi - theta) * c)  # E[relu(u1) relu(u2)]
    kernel_flip = q / (2.0 * math.pi) * (s - theta * c)  # E[relu(u1) relu(-u2)]
    same = (math.pi - theta) / (2.0 * math.pi)  # P(u1 > 0, u2 > 0)
    cross = theta / (2.0 * math.pi)  # P(u1 > 0, u2 < 0)
    phi = (a * a + b * b) * kernel - 2.0 * a * b * kernel_flip
    dphi = (a * a + b * b) * same + 2.0 * a * b * cross
    return phi, dphi


def _pair_expectations(spec: _Spec, q: float, c: float) -> tuple[float, float]:
    closed = _pair_closed(spec, q, c)
    if closed is not None:
        return closed
    if q == 0.0:
        return spec.phi0**2, spec.deriv_sq0
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        e = _expect_pairs(lambda h: _pair_values(spec, h), q, c, spec.features)
    return float(e[0]), float(e[1])


def correlation_map(
    activation: Any,
    c: ArrayLike,
    q: ArrayLike,
    sigma_w: ArrayLike,
    sigma_b: ArrayLike = 0.0,
) -> Array:
    """One step of the correlation map of two inputs whose pre-activations have variance ``q``.

    ``c_next = (σ_w² E[φ(u1) φ(u2)] + σ_b²) / q_next`` with ``u1, u2`` of variance ``q``
    and correlation ``c``, and ``q_next`` the length map of ``q``.  At the fixed point
    ``q = q*`` this is the map ``c -> C(c)`` of Poole et al. (2016).

    Parameters
    ----------
    activation
        A name, an ``Activation`` or a ``(name, param)`` pair.
    c
        Correlations in ``[-1, 1]``.
    q
        The pre-activation variance of both inputs.
    sigma_w, sigma_b
        Weight scale and bias std.

    Returns
    -------
    ndarray
        The next layer's correlation (broadcast shape of the arguments); NaN where
        ``q_next`` is 0.
    """
    spec = _spec(_resolve(activation))
    arrays = np.broadcast_arrays(
        *(
            _as_float_array(v, n)
            for v, n in ((c, "c"), (q, "q"), (sigma_w, "sigma_w"), (sigma_b, "sigma_b"))
        )
    )
    cc, qq, ww, bb = (a.reshape(-1) for a in arrays)
    out = np.full(cc.shape, np.nan)
    sq = _moments(spec, qq)["sq_mean"]
    for i in range(cc.size):
        q_next = ww[i] ** 2 * sq[i] + bb[i] ** 2
        if not (np.isfinite(q_next) and q_next > 0 and -1.0 <= cc[i] <= 1.0):
            continue
        phi, _ = _pair_expectations(spec, float(qq[i]), float(cc[i]))
        out[i] = (ww[i] ** 2 * phi + bb[i] ** 2) / q_next
    return out.reshape(arrays[0].shape)


# ---- fixed points ---------------------------------------------------------------------------

#: The grid of q on which fixed points are bracketed: 40 points per decade over 1e-30 .. 1e30.
_TABLE_DECADES: Final = (-30, 30)
_TABLE_PER_DECADE: Final = 40
#: Roots are bracketed on every 8th point of it (5 per decade).
_BRACKET_STRIDE: Final = 8
#: |V(q) - q| below this fraction of q counts as "q is a fixed point" (relu at σ_w = √2),
#: and a sign of V(q) - q is trusted only beyond it (rounding decides it below).
_FIXED_TOL: Final = 1e-12


@functools.lru_cache(maxsize=64)
def _table(act: Activation) -> tuple[Array, Array, Array]:
    """q, E[φ²] and dE[φ²]/dq on the bracketing grid."""
    low, high = _TABLE_DECADES
    q = np.logspace(low, high, (high - low) * _TABLE_PER_DECADE + 1)
    m = _moments(_spec(act), q)
    return q, m["sq_mean"], m["sq_mean_slope"]


@functools.lru_cache(maxsize=64)
def _deriv_table(act: Activation) -> tuple[Array, Array, Array]:
    """q, E[φ'²] and its q-derivative ``E[(z² - 1)(φ'² - φ'(0)²)] / (2q)`` (the heat
    equation's identity, with the value at 0 taken out so that small q does not cancel)."""
    spec = _spec(act)
    q = _table(act)[0]
    d0 = spec.values(np.zeros(1))[1][0] ** 2

    def integrand(h: Array, z: Array) -> list[Array]:
        d = spec.values(h)[1]
        return [d * d, (z * z - 1.0) * (d * d - d0)]

    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        e = _expect(integrand, q, spec.features)
    return q, e[0], e[1] / (2.0 * q)


def _interpolated_sq_mean(act: Activation, q: Array) -> tuple[Array, Array]:
    """E[φ²] and its q-derivative from the table: cubic Hermite in log q (about 1e-7)."""
    return _hermite(*_table(act), q)


def _hermite(qt: Array, ft: Array, dt: Array, q: Array) -> tuple[Array, Array]:
    """Cubic Hermite interpolation in log q of values ft and q-derivatives dt at qt."""
    s = np.log(np.clip(q, qt[0], qt[-1]))
    st = np.log(qt)
    j = np.clip(np.searchsorted(st, s) - 1, 0, st.size - 2)
    h = st[j + 1] - st[j]
    t = (s - st[j]) / h
    f0, f1 = ft[j], ft[j + 1]
    g0, g1 = dt[j] * qt[j] * h, dt[j + 1] * qt[j + 1] * h  # dF/dt
    t2, t3 = t * t, t * t * t
    value = (2 * t3 - 3 * t2 + 1) * f0 + (t3 - 2 * t2 + t) * g0 + (-2 * t3 + 3 * t2) * f1
    value = value + (t3 - t2) * g1
    dvalue = (6 * t2 - 6 * t) * f0 + (3 * t2 - 4 * t + 1) * g0 + (-6 * t2 + 6 * t) * f1
    dvalue = (dvalue + (3 * t2 - 2 * t) * g1) / (h * np.exp(s))
    return value, dvalue


@dataclass(frozen=True, eq=False)
class FixedPoint:
    """The fixed point of the length map reached from the first layer, and what it implies.

    Attributes (arrays of the broadcast shape of the inputs, or plain numbers for scalars)
    ----------
    sigma_w, sigma_b
        The weight scale and bias std.
    q_star
        ``q* = σ_w² E[φ(√q* z)²] + σ_b²``, the limit of the length map started at the first
        layer's ``q``; ``inf`` where the length grows without bound.
    exists
        Whether the length map converges to a finite ``q*``.
    length_slope
        ``V'(q*) = σ_w² dE[φ(√q z)²]/dq`` at ``q*``: the fixed point is stable where it is
        below 1; 1 is marginal (relu at σ_w = √2: every q is a fixed point).
    stable
        ``length_slope < 1``.
    chi1
        ``χ₁ = σ_w² E[φ'(√q* z)²]``: below 1 ordered (gradients vanish, ``c* = 1``), above
        1 chaotic.  Where the length diverges, its limit as ``q -> ∞``.
    xi_q
        ``-1 / log V'(q*)``: the depth over which ``q_l - q*`` shrinks by ``e`` (Schoenholz
        et al. 2017, eq. 5: ``ξ_q⁻¹ = -log(χ₁ + σ_w² E[φ''φ])``, the same number); 0 where
        ``V' = 0``, inf where it is 1, NaN where the point is unstable.
    c_star
        The stable fixed point of the correlation map of two inputs: 1 where ``χ₁ <= 1``,
        below 1 in the chaotic phase.  NaN when not computed (``correlation=False``) there.
    chi_c
        ``σ_w² E[φ'(u1) φ'(u2)]`` at ``c*``: the slope of the correlation map there (χ₁ at
        ``c* = 1``).
    xi_c
        ``-1 / log chi_c``: the depth over which the correlation of two inputs approaches
        ``c*`` (eq. 9 of Schoenholz et al.), which diverges on the critical line.
    """

    sigma_w: Any
    sigma_b: Any
    q_star: Any
    exists: Any
    length_slope: Any
    stable: Any
    chi1: Any
    xi_q: Any
    c_star: Any
    chi_c: Any
    xi_c: Any

    def __str__(self) -> str:
        if np.ndim(self.q_star) != 0:
            return f"FixedPoint over an array of shape {np.shape(self.q_star)}"
        if not self.exists:
            return (
                f"σ_w = {self.sigma_w:g}, σ_b = {self.sigma_b:g}: no fixed point, the length "
                f"grows without bound (χ₁ -> {self.chi1:.6g})"
            )
        if abs(self.length_slope - 1.0) <= 4e-15:
            kind = "marginal"
        else:
            kind = "stable" if self.stable else "unstable"
        return (
            f"σ_w = {self.sigma_w:g}, σ_b = {self.sigma_b:g}: q* = {self.q_star:.6g} ({kind}, "
            f"V'(q*) = {self.length_slope:.6g}), χ₁ = {self.chi1:.6g}, ξ_q = {self.xi_q:.4g}, "
            f"c* = {self.c_star:.6g}, ξ_c = {self.xi_c:.4g}"
        )


def _depth_scale(slope: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((slope > 0) & (slope < 1), -1.0 / np.log(slope), np.nan)
    out = np.where(slope == 0, 0.0, out)
    return np.where(np.abs(slope - 1.0) <= 4e-15, np.inf, out)


def _bracket_roots(
    act: Activation, a: Array, b: Array, q0: Array, d0: Array
) -> tuple[Array, Array, Array]:
    """The cell [lo, hi] of the table holding the fixed point reached from q0 (NaN: none).

    ``D(q) = a E[φ²] + b - q``; the length map moves up where ``D(q0) > 0`` (to the first
    root above) and down where ``D(q0) < 0`` (to the last root below).  Returns lo, hi, and
    whether the length diverges.
    """
    qt, ft, _ = _table(act)
    qt, ft = qt[::_BRACKET_STRIDE], ft[::_BRACKET_STRIDE]  # the fine grid only interpolates
    n = a.size
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    diverges = np.zeros(n, dtype=bool)
    rows = max(1, (1 << 21) // qt.size)
    for start in range(0, n, rows):
        sl = slice(start, start + rows)
        d = a[sl, None] * ft[None, :] + b[sl, None] - qt[None, :]
        up = d0[sl] > 0
        above = qt[None, :] > q0[sl, None]
        # up: the first table point above q0 with D <= 0
        tol = _FIXED_TOL * qt[None, :]
        hit = above & (d <= -tol)
        first = np.argmax(hit, axis=1)
        found = hit.any(axis=1)
        # down: the last table point below q0 with D >= 0
        hit_down = ~above & (qt[None, :] < q0[sl, None]) & (d >= tol)
        last = qt.size - 1 - np.argmax(hit_down[:, ::-1], axis=1)
        found_down = hit_down.any(axis=1)
        rows_lo = np.where(
            up,
            np.where(first > 0, qt[np.maximum(first - 1, 0)], qt[0]),
            np.where(found_down, qt[last], np.nan),
        )
        rows_hi = np.where(
            up,
            qt[first],
            np.where(found_down, qt[np.minimum(last + 1, qt.size - 1)], np.nan),
        )
        q0s = q0[sl]
        rows_lo = np.where(up, np.maximum(rows_lo, q0s), rows_lo)
        rows_hi = np.where(~up, np.minimum(rows_hi, q0s), rows_hi)
        ok_up = up & found
        ok_down = ~up & found_down
        lo[sl] = np.where(ok_up | ok_down, rows_lo, np.nan)
        hi[sl] = np.where(ok_up | ok_down, rows_hi, np.nan)
        diverges[sl] = up & ~found
    return lo, hi, diverges


def _interpolated_moments(act: Activation, q: Array) -> dict[str, Array]:
    """E[φ'²] and dE[φ²]/dq from the tables (q = 0 exactly)."""
    spec = _spec(act)
    _, slope = _interpolated_sq_mean(act, q)
    deriv_sq, _ = _hermite(*_deriv_table(act), q)
    zero = q == 0
    return {
        "deriv_sq_mean": np.where(zero, spec.deriv_sq0, deriv_sq),
        "sq_mean_slope": np.where(zero, spec.slope0, slope),
    }


def _solve_in_cells(
    act: Activation, a: Array, b: Array, lo: Array, hi: Array, *, exact: bool = True
) -> tuple[Array, dict[str, Array]]:
    """The root of D in each cell [lo, hi] (D(lo) >= 0 >= D(hi)): Newton on the table's
    interpolant, safeguarded by bisection in log q, then one exact Newton step (the
    interpolant is good to ~1e-7 relative: one step squares that).  Returns the root and
    the exact moments at it."""
    spec = _spec(act)
    x = np.sqrt(lo * hi)
    lo_, hi_ = lo.copy(), hi.copy()
    for _ in range(40):
        f, df = _interpolated_sq_mean(act, x)
        d = a * f + b - x
        dd = a * df - 1.0
        lo_ = np.where(d >= 0, x, lo_)
        hi_ = np.where(d < 0, x, hi_)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = x - d / dd
        inside = np.isfinite(step) & (step > lo_) & (step < hi_)
        new = np.where(inside, step, np.sqrt(lo_ * hi_))
        if np.all(np.abs(new - x) <= 1e-13 * x):
            x = new
            break
        x = new
    if not exact:
        return x, _interpolated_moments(act, x)
    m = _moments(spec, x)
    d = a * m["sq_mean"] + b - x
    dd = a * m["sq_mean_slope"] - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        step = x - d / dd
    ok = np.isfinite(step) & (step > 0) & (np.abs(step - x) <= 1e-3 * x)
    x = np.where(ok, step, x)
    # the moments at x moved by a relative 1e-7 at most: one more exact evaluation
    return x, _moments(spec, x)


def _correlation_fixed_point(spec: _Spec, q: float, a: float, b: float) -> tuple[float, float]:
    """c* < 1 and the map's slope there, for a chaotic fixed point (χ₁ > 1) at length q."""

    def residual(c: float) -> float:
        phi, _ = _pair_expectations(spec, q, c)
        return (a * phi + b) / q - c

    lo, r_lo = 0.0, residual(0.0)
    if r_lo <= 1e-14:  # odd φ without bias: c = 0 is the fixed point (to rounding)
        c = 0.0
    else:
        hi = 0.5
        r_hi = residual(hi)
        k = 1
        while r_hi >= 0.0 and k < 40:
            k += 1
            hi = 1.0 - 2.0**-k
            r_hi = residual(hi)
        if r_hi >= 0.0:
            c = 1.0
        else:
            # Illinois regula falsi, safeguarded: the residual is smooth and convex-ish
            side = 0
            c = hi
            for _ in range(200):
                c = (lo * r_hi - hi * r_lo) / (r_hi - r_lo)
                if not lo < c < hi:
                    c = 0.5 * (lo + hi)
                r = residual(c)
                if r == 0.0 or hi - lo <= 1e-14:
                    break
                if r > 0:
                    lo, r_lo = c, r
                    if side == 1:
                        r_hi *= 0.5
                    side = 1
                else:
                    hi, r_hi = c, r
                    if side == -1:
                        r_lo *= 0.5
                    side = -1
                if hi - lo <= 1e-14:
                    break
    _, dphi = _pair_expectations(spec, q, c)
    return c, a * dphi


def _scalar_or_array(value: Array, shape: tuple[int, ...]) -> Any:
    value = value.reshape(shape)
    if shape == ():
        item = value.item()
        return item
    return value


def fixed_point(
    activation: Any,
    sigma_w: ArrayLike,
    sigma_b: ArrayLike = 0.0,
    *,
    input_sq_mean: float = 1.0,
    q_init: ArrayLike | None = None,
    correlation: bool = True,
    precise: bool = True,
) -> FixedPoint:
    """The fixed point ``q*`` of the length map, its stability, ``χ₁``, ``c*`` and depth scales.

    Vectorised: ``sigma_w`` and ``sigma_b`` broadcast (a 300 × 300 grid of tanh takes about
    3 s with ``correlation=False``, and well under a second with ``precise=False`` too).

    Parameters
    ----------
    activation
        A name in ``initscope.ACTIVATIONS``, an ``Activation`` or a ``(name, param)`` pair.
    sigma_w, sigma_b
        Weight scale (``σ_w² = fan_in Var W``) and bias std, ``>= 0``.
    input_sq_mean
        The inputs' second moment: the first layer's length is
        ``q_1 = σ_w² input_sq_mean + σ_b²``, where the map starts.
    q_init
        Start the map here instead (broadcast with the other arguments).
    correlation
        Compute ``c*`` and ``ξ_c`` in the chaotic phase, a 2-D quadrature per point (about
        0.1 s each); with False they are NaN there (and exact, 1 and ``-1/log χ₁``, in the
        ordered phase).
    precise
        With False, ``q*``, ``χ₁`` and ``V'(q*)`` come from the tabulated moments of each
        activation (cubic interpolation in log q, 40 points per decade): to about 1e-7
        relative for ``q*``, 1e-8 for ``χ₁``, 3e-6 for ``V'``, for pictures of large grids
        (300 × 300 in under a second for every activation); closed forms stay exact.

    Returns
    -------
    FixedPoint
        ``q_star``, ``exists``, ``length_slope``, ``stable``, ``chi1``, ``xi_q``,
        ``c_star``, ``chi_c``, ``xi_c``.

    Notes
    -----
    The map ``V(q) = σ_w² E[φ(√q z)²] + σ_b²`` is increasing, so from ``q_1`` it moves
    monotonically to the nearest root of ``V(q) = q`` in the direction of ``V(q_1) - q_1``.
    Roots are bracketed on a grid of 20 points per decade over ``1e-30 .. 1e30`` (two roots
    closer than that, near a tangency, can be missed) and solved to full precision.
    ``q* = 0`` where ``σ_b = 0`` and the signal dies (tanh with ``σ_w < 1``).

    Examples
    --------
    >>> fp = fixed_point("tanh", 1.5, 0.1)
    >>> round(fp.q_star, 6), fp.stable, fp.chi1 > 1
    (0.813322, True, True)
    """
    act = _resolve(activation)
    spec = _spec(act)
    arrays = [_as_float_array(sigma_w, "sigma_w"), _as_float_array(sigma_b, "sigma_b")]
    if q_init is not None:
        arrays.append(_as_float_array(q_init, "q_init"))
    if not isinstance(input_sq_mean, numbers.Real) or not (
        math.isfinite(input_sq_mean) and input_sq_mean >= 0
    ):
        raise ValueError(f"input_sq_mean must be a finite number >= 0, got {input_sq_mean!r}")
    broadcast = np.broadcast_arrays(*arrays)
    shape = broadcast[0].shape
    w = broadcast[0].reshape(-1).astype(np.float64)
    bias = broadcast[1].reshape(-1).astype(np.float64)
    if np.any(~np.isfinite(w) | (w < 0)):
        raise ValueError("sigma_w must be finite and >= 0")
    if np.any(~np.isfinite(bias) | (bias < 0)):
        raise ValueError("sigma_b must be finite and >= 0")
    a, b = w * w, bias * bias
    q0 = a * float(input_sq_mean) + b if q_init is None else broadcast[2].reshape(-1).copy()
    if np.any(~np.isfinite(q0) | (q0 < 0)):
        raise ValueError("q_init must be finite and >= 0")
    n = a.size
    q_star = np.full(n, np.nan)

    f0, _ = _interpolated_sq_mean(act, q0)
    d0 = a * f0 + b - q0
    table_q = _table(act)[0]
    close = np.abs(d0) <= 1e-6 * np.maximum(q0 + b + a * f0, 1e-300)
    close |= (q0 < table_q[0]) | (q0 > table_q[-1])  # off the table: exact values
    if close.any():  # the interpolant cannot tell the direction here: exact values
        exact = _moments(spec, q0[close])["sq_mean"]
        d0[close] = a[close] * exact + b[close] - q0[close]
        scale = q0[close] + b[close] + a[close] * exact
        fixed_here = np.abs(d0[close]) <= _FIXED_TOL * np.maximum(scale, 1e-300)
        index = np.flatnonzero(close)[fixed_here]
        q_star[index] = q0[index]
        d0[index] = 0.0
    dead = (q0 == 0) & (b == 0) & (spec.phi0 == 0.0)
    q_star[dead] = 0.0
    todo = np.isnan(q_star)
    lo, hi, diverges = _bracket_roots(act, a[todo], b[todo], q0[todo], d0[todo])
    idx = np.flatnonzero(todo)
    q_star[idx[diverges]] = np.inf
    cells = np.isfinite(lo) & np.isfinite(hi)
    solved: dict[str, Array] | None = None
    interpolate = not precise and spec.closed is None
    if cells.any():
        sel = idx[cells]
        q_star[sel], solved = _solve_in_cells(
            act, a[sel], b[sel], lo[cells], hi[cells], exact=not interpolate
        )
    below = ~diverges & ~cells  # moving down past the table: q* below 1e-30
    if below.any():
        sel = idx[below]
        level = a[sel] * spec.phi0**2 + b[sel]
        with np.errstate(divide="ignore", invalid="ignore"):
            tiny = np.where(level == 0, 0.0, level / (1.0 - a[sel] * spec.slope0))
        q_star[sel] = np.where(tiny >= 0, tiny, 0.0)

    finite = np.isfinite(q_star)
    rest = np.ones(n, dtype=bool)
    m = {key: np.full(n, np.nan) for key in ("deriv_sq_mean", "sq_mean_slope")}
    if solved is not None:
        for key in m:
            m[key][idx[cells]] = solved[key]
        rest[idx[cells]] = False
    if rest.any():  # where the length diverges: the limit q -> ∞, as the table's end
        where = np.where(finite[rest], q_star[rest], _table(act)[0][-1])
        other = _interpolated_moments(act, where) if interpolate else _moments(spec, where)
        for key in m:
            m[key][rest] = other[key]
    chi1 = a * m["deriv_sq_mean"]
    slope = np.where(finite, a * m["sq_mean_slope"], np.nan)
    stable = finite & (slope < 1.0 - 4e-15)
    xi_q = np.where(stable | (np.abs(slope - 1) <= 4e-15), _depth_scale(slope), np.nan)
    c_star = np.where(finite & (chi1 <= 1.0), 1.0, np.nan)
    chi_c = np.where(finite & (chi1 <= 1.0), chi1, np.nan)
    if correlation:
        for i in np.flatnonzero(finite & (chi1 > 1.0) & (q_star > 0)):
            c_star[i], chi_c[i] = _correlation_fixed_point(spec, q_star[i], a[i], b[i])
    xi_c = _depth_scale(chi_c)
    return FixedPoint(
        sigma_w=_scalar_or_array(w, shape),
        sigma_b=_scalar_or_array(bias, shape),
        q_star=_scalar_or_array(q_star, shape),
        exists=_scalar_or_array(finite, shape),
        length_slope=_scalar_or_array(slope, shape),
        stable=_scalar_or_array(stable, shape),
        chi1=_scalar_or_array(chi1, shape),
        xi_q=_scalar_or_array(xi_q, shape),
        c_star=_scalar_or_array(c_star, shape),
        chi_c=_scalar_or_array(chi_c, shape),
        xi_c=_scalar_or_array(xi_c, shape),
    )


# ---- the critical line ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CriticalLine:
    """Where ``χ₁ = 1`` at the fixed point, parametrised by ``q*``.

    Attributes
    ----------
    activation
        The activation's name.
    kind
        ``"curve"``: points ``(sigma_w[i], sigma_b[i])`` for the ``q_star[i]`` where
        ``σ_b² >= 0``; ``"point"``: a single point (linear, relu, leaky_relu, whose
        ``E[φ'²]`` does not depend on q: every ``q*`` gives the same ``σ_w`` and
        ``σ_b = 0``, and ``q_star`` is NaN: every q is a fixed point there); ``"none"``:
        no ``q*`` gives ``σ_b² >= 0`` (softplus).
    q_star, sigma_w, sigma_b
        The line: ``σ_w² = 1 / E[φ'(√q* z)²]``, ``σ_b² = q* - σ_w² E[φ(√q* z)²]``.
    length_slope, stable
        ``V'(q*)`` and whether it is below 1: where it is not (gelu and silu at small
        ``q*``), the length runs away from ``q*`` and the network is not critical in
        practice.
    note
        A sentence saying what the line is, for a reader.
    """

    activation: str
    kind: str
    q_star: Array
    sigma_w: Array
    sigma_b: Array
    length_slope: Array
    stable: NDArray[np.bool_]
    note: str

    def __str__(self) -> str:
        return self.note


def critical_line(activation: Any, q_star: ArrayLike | None = None) -> CriticalLine:
    """The critical line ``χ₁ = 1`` (the edge of chaos) in the ``(σ_w, σ_b)`` plane.

    Parametrised by the fixed point: for each ``q*``, ``σ_w² = 1 / E[φ'(√q* z)²]`` makes
    ``χ₁ = 1`` and ``σ_b² = q* - σ_w² E[φ(√q* z)²]`` makes ``q*`` the fixed point; points
    with ``σ_b² < 0`` are left out.  No nested root finding.

    Parameters
    ----------
    activation
        A name, an ``Activation`` or a ``(name, param)`` pair.
    q_star
        The fixed points to take (default: 481 points from ``1e-8`` to ``1e4``,
        log-spaced).

    Returns
    -------
    CriticalLine
        ``kind`` is ``"curve"``, ``"point"`` (relu-like: ``σ_w = √(2 / (1 + slope²))``,
        ``σ_b = 0``) or ``"none"``.

    Examples
    --------
    >>> line = critical_line("tanh", [1e-6, 1.0])
    >>> [round(float(v), 4) for v in line.sigma_w], [round(float(v), 4) for v in line.sigma_b]
    ([1.0, 1.4674], [0.0, 0.3885])
    """
    act = _resolve(activation)
    spec = _spec(act)
    label = act.name if act.name not in ("leaky_relu", "elu") else f"{act.name}({act.param:g})"
    if spec.slopes is not None:
        a, b = spec.slopes
        gain = 1.0 / math.sqrt(0.5 * (a * a + b * b))
        note = (
            f"{label}: E[φ'²] does not depend on q, so the critical line is the single point "
            f"σ_w = {gain:.6g}, σ_b = 0, where every q is a fixed point (V' = 1); with σ_b > 0 "
            "at that σ_w the length grows by σ_b² every layer"
        )
        one = np.ones(1)
        return CriticalLine(label, "point", one * np.nan, one * gain, one * 0.0, one, one < 0, note)
    q = (
        np.geomspace(1e-8, 1e4, 481)
        if q_star is None
        else np.asarray(_as_float_array(q_star, "q_star"), dtype=np.float64).reshape(-1)
    )
    if np.any(~np.isfinite(q) | (q <= 0)):
        raise ValueError("q_star must hold finite numbers > 0")
    m = _moments(spec, q)
    w2 = 1.0 / m["deriv_sq_mean"]
    b2 = q - w2 * m["sq_mean"]
    keep = b2 >= -1e-14 * q
    slope = w2 * m["sq_mean_slope"]
    q, w2, b2, slope = q[keep], w2[keep], np.maximum(b2[keep], 0.0), slope[keep]
    stable = slope < 1.0
    if q.size == 0:
        note = (
            f"{label} has no critical line for these q*: σ_b² = q* - σ_w² E[φ²] < 0 for all of them"
        )
        kind = "none"
    else:
        kind = "curve"
        note = (
            f"{label}: critical line over σ_w = {np.sqrt(w2).min():.4g} .. "
            f"{np.sqrt(w2).max():.4g}, σ_b = {np.sqrt(b2).min():.4g} .. {np.sqrt(b2).max():.4g}"
        )
        if not stable.all():
            if stable.any():
                note += (
                    f"; stable (V'(q*) < 1) only for σ_b >= "
                    f"{np.sqrt(b2[stable]).min():.4g} (q* >= {q[stable].min():.4g})"
                )
            else:
                note += "; unstable (V'(q*) > 1) everywhere"
    return CriticalLine(label, kind, q, np.sqrt(w2), np.sqrt(b2), slope, stable, note)


@dataclass(frozen=True)
class _CriticalPoint:
    q_star: float
    sigma_w: float
    length_slope: float
    stable: bool


def _critical_points(act: Activation, sigma_b: float) -> list[_CriticalPoint]:
    """Every point of the critical line at this σ_b, for q* in [1e-12, 1e12] (and q* = 0
    where σ_b = 0 and φ(0) = 0), with its stability."""
    spec = _spec(act)
    target = sigma_b * sigma_b
    found: list[_CriticalPoint] = []
    if sigma_b == 0.0 and spec.phi0 == 0.0 and spec.deriv_sq0 > 0:
        # the line's end at q* -> 0: σ_w = 1/|φ'(0)| and V'(0) = 1; it attracts when the
        # map stays below the diagonal just above 0 (tanh, elu), repels when above (gelu)
        gain = 1.0 / math.sqrt(spec.deriv_sq0)
        probe = 1e-4
        level = gain * gain * float(_moments(spec, np.array([probe]))["sq_mean"][0])
        attracting = (level - probe) / probe <= 1e-12
        found.append(_CriticalPoint(0.0, gain, 1.0, bool(attracting)))
    if spec.slopes is not None:
        return found

    def excess(q: Array) -> tuple[Array, dict[str, Array]]:
        m = _moments(spec, q)
        return q - m["sq_mean"] / m["deriv_sq_mean"] - target, m

    grid = np.geomspace(1e-12, 1e12, 24 * 40 + 1)
    values, _ = excess(grid)
    # where σ_b² is within rounding of the target its sign says nothing (tanh at σ_b = 0:
    # q* - σ_w² E[φ²] = O(q*³) is below 1e-16 q* there): only trusted signs bracket
    trusted = np.abs(values) > 1e-10 * (grid + target)
    grid, values = grid[trusted], values[trusted]
    sign = values > 0
    cross = np.flatnonzero(sign[:-1] != sign[1:])
    if cross.size:
        lo, hi = grid[cross].copy(), grid[cross + 1].copy()
        lo_positive = sign[cross]
        for _ in range(64):  # bisection in log q: plain and sure
            mid = np.sqrt(lo * hi)
            v, _ = excess(mid)
            move_lo = (v > 0) == lo_positive
            lo = np.where(move_lo, mid, lo)
            hi = np.where(move_lo, hi, mid)
        q = np.sqrt(lo * hi)
        _, m = excess(q)
        w2 = 1.0 / m["deriv_sq_mean"]
        slope = w2 * m["sq_mean_slope"]
        for qi, wi, si in zip(q, w2, slope, strict=True):
            found.append(_CriticalPoint(float(qi), math.sqrt(wi), float(si), bool(si < 1.0)))
    return found


# ---- predictions for a network ------------------------------------------------------------------

#: Gauss-Legendre points per panel of the 2-D rules: for the correlation map, and for the
#: finite-width spreads (which need a few digits only).
_PAIR_ORDER: Final = 8
_SPREAD_ORDER: Final = 6
_SPREAD_ZMAX: Final = 7.0
#: Relative step of the finite differences in q of the spread model.
_DQ: Final = 1e-4


def _layer_list(value: Any, depth: int, name: str) -> list[Any]:
    if isinstance(value, list | tuple) and not (
        name == "activation"
        and isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and not isinstance(value[1], str)
    ):
        if len(value) != depth:
            raise ValueError(f"{name} has {len(value)} entries for {depth} layers")
        return list(value)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        if value.size != depth:
            raise ValueError(f"{name} has {value.size} entries for {depth} layers")
        return list(value)
    return [value] * depth


def _nonnegative(values: list[Any], name: str) -> Array:
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must hold real numbers, got {v!r}")
        if not (math.isfinite(float(v)) and float(v) >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
        out[i] = float(v)
    return out


@dataclass(frozen=True, eq=False)
class Prediction:
    """The mean-field prediction for a network, per layer (arrays of length L = depth).

    Attributes
    ----------
    activation_names, activation_params
        Each layer's activation and its parameter.
    weight_var, bias_std
        σ_w² and σ_b per layer; ``input_sq_mean`` the inputs' second moment.
    q
        The pre-activation variance ``q_l`` of the length map.
    pre_mean, pre_std
        0 and ``√q_l``.
    mean, std, sq_mean
        Of the activations: ``E[φ]``, ``√Var φ`` and ``E[φ²]`` at ``q_l``.
    saturated_fraction, zero_fraction
        As :class:`GaussianMoments` (NaN where the activation does not define them).
    chi1
        ``σ_w,l² E[φ_l'(√q_l z)²]``: the same-layer convention of ``PropagationResult.chi1``
        (in a homogeneous network, the per-layer factor of the squared gradients).
    correlation
        The correlation ``c_l`` of the pre-activations of two inputs whose correlation is
        ``input_correlation`` (0: independent, as generated inputs are).
    widths, n_samples, input_dim
        The network's shape, when given; they set the spreads.
    spread
        ``{statistic: array}``: the expected finite-width spread (one standard deviation) of
        each measured statistic around the prediction, or None without widths and
        n_samples (see :func:`predict`).
    fixed
        The :class:`FixedPoint` when every layer has the same activation, σ_w and σ_b.
    """

    activation_names: tuple[str, ...]
    activation_params: tuple[float, ...]
    weight_var: Array
    bias_std: Array
    input_sq_mean: float
    q: Array
    pre_mean: Array
    pre_std: Array
    mean: Array
    std: Array
    sq_mean: Array
    saturated_fraction: Array
    zero_fraction: Array
    chi1: Array
    correlation: Array
    widths: tuple[int, ...] | None = None
    n_samples: int | None = None
    input_dim: int | None = None
    spread: Mapping[str, Array] | None = field(default=None, repr=False)
    fixed: FixedPoint | None = None

    #: The statistics that have a measured counterpart in ``PropagationResult``.
    STATISTICS = (
        "pre_mean", "pre_std", "mean", "std", "saturated_fraction", "zero_fraction", "chi1",
    )  # fmt: skip
    LAYER_FIELDS = ("q", *STATISTICS, "sq_mean", "correlation")

    @property
    def depth(self) -> int:
        return int(self.q.size)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the per-layer arrays (and ``<statistic>_spread``) as lists."""
        out: dict[str, Any] = {
            "activation": list(self.activation_names),
            "activation_params": list(self.activation_params),
            "weight_var": self.weight_var.tolist(),
            "bias_std": self.bias_std.tolist(),
            "input_sq_mean": self.input_sq_mean,
        }
        for name in self.LAYER_FIELDS:
            out[name] = np.asarray(getattr(self, name)).tolist()
        if self.spread is not None:
            for name, values in self.spread.items():
                out[f"{name}_spread"] = np.asarray(values).tolist()
        return out

    def to_frame(self) -> Any:
        """A DataFrame, one row per layer (needs pandas)."""
        import pandas as pd

        data: dict[str, Any] = {"layer": np.arange(1, self.depth + 1)}
        data["activation"] = list(self.activation_names)
        for name in self.LAYER_FIELDS:
            data[name] = getattr(self, name)
        if self.spread is not None:
            for name, values in self.spread.items():
                data[f"{name}_spread"] = values
        return pd.DataFrame(data).set_index("layer")

    def __str__(self) -> str:
        columns = ["pre_std", "mean", "std"]
        if np.isfinite(self.saturated_fraction).any():
            columns.append("saturated_fraction")
        if np.isfinite(self.zero_fraction).any():
            columns.append("zero_fraction")
        columns.append("chi1")
        heads = {"saturated_fraction": "saturated", "zero_fraction": "zeros"}
        header = f"{'layer':>5}  " + "  ".join(f"{heads.get(c, c):>12}" for c in columns)
        lines = [header]
        for i in range(self.depth):
            cells = "  ".join(f"{_cell(getattr(self, c)[i]):>12}" for c in columns)
            lines.append(f"{i + 1:>5}  {cells}")
        if self.fixed is not None:
            lines.append("")
            lines.append(f"fixed point: {self.fixed}")
        return "\n".join(lines)


def _cell(value: float) -> str:
    if not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.4e}"
    return f"{value:.6f}"


def _spread_functions(spec: _Spec, mean: float) -> Callable[[Array], Array]:
    """The per-entry functions whose block means the spread model follows, stacked:
    φ², (φ - μ)², φ, φ'², the saturation indicator, the zero indicator (relu)."""
    sat = spec.saturation_h
    relu = spec.name == "relu"

    def funcs(h: Array) -> Array:
        g, d = spec.values(h)
        phi = g + spec.phi0
        centred = phi - mean
        if sat is not None:
            saturated = ((h <= sat[0]) | (h >= sat[1])).astype(np.float64)
        else:
            saturated = np.zeros_like(h)
        zero = (h <= 0).astype(np.float64) if relu else np.zeros_like(h)
        return np.stack([phi * phi, centred * centred, phi, d * d, saturated, zero])

    return funcs


def _block_expectations(spec: _Spec, q: float, mean: float) -> tuple[Array, Array]:
    """E[f] and E[f²] of the spread functions at q."""
    funcs = _spread_functions(spec, mean)

    def integrand(h: Array, z: Array) -> list[Array]:
        values = funcs(h)
        return [*values, *(values * values)]

    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        e = _expect(integrand, np.array([q]), (*spec.features, *(spec.features or ())))[:, 0]
    k = e.size // 2
    return e[:k], e[k:]


def _spreads(
    specs: list[_Spec],
    a: Array,
    b: Array,
    q: Array,
    mean: Array,
    std: Array,
    corr: Array,
    widths: tuple[int, ...],
    n: int,
    input_dim: int,
    input_sq_mean: float,
    input_correlation: float,
    centres: list[Array | None],
) -> dict[str, Array]:
    """The finite-width spread of each statistic (see :func:`predict`); ``centres[l]`` holds
    ``E[φφ]``, ``E[φ'φ']`` and ``E[φ²φ²]`` of two inputs at layer l's mean correlation."""
    depth = len(specs)
    out = {name: np.zeros(depth) for name in Prediction.STATISTICS}
    m = input_sq_mean
    c0 = input_correlation
    common = a[0] ** 2 * 2.0 * m * m / (n * input_dim)  # D: variance of the layer's mean q
    pairs = (a[0] * m) ** 2 * (1.0 + c0 * c0) / input_dim  # variance of a pair's K_rs
    for i, spec in enumerate(specs):
        qi, ci, w = float(q[i]), float(corr[i]), widths[i]
        if not (np.isfinite(qi) and qi > 0):
            for name in out:
                out[name][i] = 0.0 if qi == 0 else np.nan
            continue
        spread_c = pairs / (qi * qi)  # variance of a pair's correlation
        ef, ef2 = _block_expectations(spec, qi, float(mean[i]))
        up, _ = _block_expectations(spec, qi * (1 + _DQ), float(mean[i]))
        down, _ = _block_expectations(spec, qi * (1 - _DQ), float(mean[i]))
        slope = (up - down) / (2.0 * _DQ * qi)
        var_f = np.maximum(ef2 - ef * ef, 0.0)
        funcs = _spread_functions(spec, float(mean[i]))
        root = math.sqrt(spread_c)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            pair = 0.5 * sum(
                _expect_pairs(
                    funcs,
                    qi,
                    float(np.clip(ci + sign * root, -1.0, 1.0)),
                    spec.features,
                    _SPREAD_ORDER,
                    _SPREAD_ZMAX,
                )
                for sign in (1.0, -1.0)
            )
        centre = centres[i]
        cov = pair - ef * ef
        sampling = np.maximum(var_f / n + (1.0 - 1.0 / n) * cov, 0.0) / w
        total = sampling + slope * slope * common
        out["mean"][i] = math.sqrt(total[2])
        out["std"][i] = math.sqrt(total[1]) / (2.0 * std[i]) if std[i] > 0 else 0.0
        out["chi1"][i] = a[i] * math.sqrt(total[3])
        out["saturated_fraction"][i] = (
            math.sqrt(total[4]) if spec.saturation_h is not None else np.nan
        )
        out["zero_fraction"][i] = math.sqrt(total[5]) if spec.name == "relu" else np.nan
        pre_cov = 2.0 * qi * qi * (ci * ci + spread_c)
        pre = max(2.0 * qi * qi / n + (1.0 - 1.0 / n) * pre_cov, 0.0) / w + common
        out["pre_std"][i] = math.sqrt(pre) / (2.0 * math.sqrt(qi))
        out["pre_mean"][i] = math.sqrt(max(qi / n + (1.0 - 1.0 / n) * qi * ci, 0.0) / w)
        if i + 1 < depth and centre is not None:
            e_phi, e_dphi, e_sq = centre
            q_next = float(q[i + 1])
            common = a[i + 1] ** 2 * total[0]
            pair_var = max(e_sq - e_phi * e_phi, 0.0)
            pairs = a[i + 1] ** 2 * (e_dphi**2 * spread_c * qi * qi + pair_var / w)
            if not (np.isfinite(q_next) and q_next > 0):
                pairs = 0.0
    return out


def _pair_values_sq(spec: _Spec, h: Array) -> Array:
    """(φ, φ', φ²) stacked: E[φφ], E[φ'φ'] and E[φ²φ²] of a pair."""
    g, d = spec.values(h)
    phi = g + spec.phi0
    return np.stack([phi, d, phi * phi])


def predict(
    activation: Any = "tanh",
    sigma_w: Any = 1.0,
    sigma_b: Any = 0.0,
    *,
    depth: int | None = None,
    widths: Sequence[int] | None = None,
    n_samples: int | None = None,
    input_dim: int | None = None,
    input_sq_mean: float = 1.0,
    input_correlation: float = 0.0,
) -> Prediction:
    """The mean-field prediction for every layer of a dense network.

    Parameters
    ----------
    activation
        A name, an ``Activation``, a ``(name, param)`` pair, or a list with one per layer.
    sigma_w
        ``σ_w = √(fan_in Var W)``, one for all layers or a list (σ_w = 1 is the seed's
        "xavier", ``std * √fan_in`` for ``normal(std=...)``).
    sigma_b
        The bias std, one or a list.
    depth, widths
        The number of layers, or the layer widths (which also set the spreads).
    n_samples, input_dim
        The samples of a run, and the input size (default: ``widths[0]``), for the spreads;
        they need ``widths`` (without the widths there is no spread to scale).
    input_sq_mean
        The inputs' second moment, ``E[x²]`` (1 for generated inputs).
    input_correlation
        The correlation of two inputs, for the correlation map (0 for independent ones).

    Returns
    -------
    Prediction
        Per layer: ``q``, ``pre_mean``, ``pre_std``, ``mean``, ``std``, ``sq_mean``,
        ``saturated_fraction``, ``zero_fraction``, ``chi1``, ``correlation``; ``spread``
        when ``widths`` and ``n_samples`` are given; ``fixed`` for a homogeneous network.
        ``print(prediction)`` prints a table.

    Notes
    -----
    **Finite-width spread.**  A run measures each statistic over ``n`` samples and ``w_l``
    units of a network with finitely many weights, so it scatters around the infinite-width
    prediction.  To first order in the fluctuations (a delta method, for i.i.d. weights
    and inputs), a statistic that is the mean of ``f(h)`` over the layer's ``n × w_l``
    entries has variance

    ``Var = [Var f / n + (1 - 1/n) Cov_pairs(f)] / w_l + (dE[f]/dq)² D_l``.

    The bracket is the sampling of the layer's units given the previous layer: the ``w_l``
    columns are independent, but within a column the ``n`` samples are correlated through
    the shared weights and bias, ``Cov_pairs(f) = E[Cov(f(u1), f(u2))]`` over the
    correlation ``c_rs`` of two samples' pre-activations, whose mean is the mean-field
    ``c_l`` and whose spread ``S_l`` (pairs of inputs are not exactly orthogonal at finite
    width) enters through the two points ``c_l ± √S_l`` (exact for a quadratic ``Cov``):
    with ``σ_b = 0`` and an odd φ, ``c_l = 0`` and it is ``S_l`` alone that correlates the
    samples, by ``O(1/w)``, as much as ``1/n`` does at the seed's shape.  ``D_l`` is the
    variance of the layer's measured ``q``, accumulated over the layers before:
    ``D_{l+1} = σ_w⁴ Var(mean of φ_l²)`` (the same formula with ``f = φ²``), starting from the
    ``n × input_dim`` generated inputs, ``D_1 = σ_w⁴ 2 E[x²]² / (n input_dim)``; ``S_l``
    follows ``S_{l+1} q_{l+1}² = σ_w⁴ (E[φ'(u1)φ'(u2)]² S_l q_l² + Var(φ(u1)φ(u2)) / w_l)``
    from ``S_1 = σ_w⁴ E[x²]² / (input_dim q_1²)``.  A std is the square root of the mean of
    ``(φ - μ)²``: its spread is that of the mean over ``2 std``.

    What it leaves out: terms of order ``1/w`` in the *mean* of a statistic (the finite-width
    corrections of Roberts, Yaida & Hanin's effective theory), and second-order terms in
    the fluctuations, which matter where a spread is not small against the value (a signal
    dying, layer after layer, towards 0).  Structured weights (orthogonal) fluctuate less
    than i.i.d. ones.  The tests check the spread against the scatter of repeated runs.
    """
    if widths is not None:
        if isinstance(widths, str) or not isinstance(widths, Sequence | np.ndarray):
            raise TypeError(f"widths must be a sequence of layer sizes, got {widths!r}")
        sizes = tuple(int(v) for v in widths)
        if not sizes or any(v <= 0 for v in sizes):
            raise ValueError(f"widths must hold positive sizes, got {widths!r}")
        if depth is not None and depth != len(sizes):
            raise ValueError(f"depth is {depth} but widths has {len(sizes)} layers")
        depth = len(sizes)
    else:
        sizes = None
        if depth is None:
            for value in (activation, sigma_w, sigma_b):
                if isinstance(value, list) or (isinstance(value, np.ndarray) and value.ndim):
                    depth = len(value)
                    break
        if depth is None:
            raise ValueError("predict needs depth, widths, or per-layer lists")
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth <= 0:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        depth = int(depth)
    acts = [_resolve(v) for v in _layer_list(activation, depth, "activation")]
    w = _nonnegative(_layer_list(sigma_w, depth, "sigma_w"), "sigma_w")
    bias = _nonnegative(_layer_list(sigma_b, depth, "sigma_b"), "sigma_b")
    m = float(_nonnegative([input_sq_mean], "input_sq_mean")[0])
    if not isinstance(input_correlation, numbers.Real) or not -1 <= input_correlation <= 1:
        raise ValueError(f"input_correlation must be in [-1, 1], got {input_correlation!r}")
    for name, value in (("n_samples", n_samples), ("input_dim", input_dim)):
        if value is not None and sizes is None:
            raise ValueError(
                f"{name} needs widths: it only sets the finite-width spreads, which need "
                f"the layer widths (pass widths=, or drop {name})"
            )
    if n_samples is not None and (
        isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples <= 0
    ):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if input_dim is not None and (
        isinstance(input_dim, bool) or not isinstance(input_dim, numbers.Integral) or input_dim <= 0
    ):
        raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}")
    a, b = w * w, bias * bias
    return _predict(
        acts, a, b, m, float(input_correlation), sizes,
        None if n_samples is None else int(n_samples),
        None if input_dim is None else int(input_dim),
    )  # fmt: skip


def _predict(
    acts: list[Activation],
    a: Array,
    b: Array,
    m: float,
    input_correlation: float,
    widths: tuple[int, ...] | None,
    n_samples: int | None,
    input_dim: int | None,
) -> Prediction:
    depth = len(acts)
    specs = [_spec(act) for act in acts]
    q = np.empty(depth)
    keys = ("mean", "sq_mean", "var", "deriv_sq_mean")
    values = {key: np.empty(depth) for key in keys}
    saturated = np.empty(depth)
    zero = np.empty(depth)
    corr = np.empty(depth)
    q_prev = m
    c_prev_k = m * input_correlation  # the inputs' cross second moment
    want_spread = widths is not None and n_samples is not None
    centres: list[Array | None] = [None] * depth
    for i, spec in enumerate(specs):
        # layer i's pre-activations: q_i = σ_w² E[a_{i-1}²] + σ_b², K_i = σ_w² E[a a'] + σ_b²
        q[i] = a[i] * q_prev + b[i]
        k = a[i] * c_prev_k + b[i]
        corr[i] = k / q[i] if q[i] > 0 else 1.0
        if not np.isfinite(q[i]):
            q[i:] = np.inf
            for key in keys:
                values[key][i:] = np.nan
            saturated[i:], zero[i:], corr[i:] = np.nan, np.nan, np.nan
            break
        mom = _moments(spec, q[i : i + 1])
        for key in keys:
            values[key][i] = mom[key][0]
        s, z = _fractions(spec, q[i : i + 1])
        saturated[i], zero[i] = s[0], z[0]
        q_prev = float(mom["sq_mean"][0])
        if q[i] > 0:
            if want_spread:  # one rule for the correlation map and the spread's pair terms
                with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                    centre = _expect_pairs(
                        functools.partial(_pair_values_sq, spec),
                        float(q[i]),
                        float(corr[i]),
                        spec.features,
                        _PAIR_ORDER,
                    )
                centres[i] = centre
                closed = _pair_closed(spec, float(q[i]), float(corr[i]))
                c_prev_k = float(centre[0]) if closed is None else closed[0]
            else:
                phi, _ = _pair_expectations_order(spec, float(q[i]), float(corr[i]), _PAIR_ORDER)
                c_prev_k = phi
        else:
            c_prev_k = spec.phi0**2
    std = np.sqrt(values["var"])
    chi1 = a * values["deriv_sq_mean"]
    spread = None
    if widths is not None and n_samples is not None:
        spread = _spreads(
            specs, a, b, q, values["mean"], std, corr, widths, n_samples,
            input_dim if input_dim is not None else widths[0], m, input_correlation, centres,
        )  # fmt: skip
    fixed = None
    if len(set(acts)) == 1 and np.all(a == a[0]) and np.all(b == b[0]):
        fixed = fixed_point(acts[0], math.sqrt(a[0]), math.sqrt(b[0]), input_sq_mean=m)
    return Prediction(
        activation_names=tuple(act.name for act in acts),
        activation_params=tuple(act.param for act in acts),
        weight_var=a.copy(),
        bias_std=np.sqrt(b),
        input_sq_mean=m,
        q=q,
        pre_mean=np.zeros(depth),
        pre_std=np.sqrt(q),
        mean=values["mean"],
        std=std,
        sq_mean=values["sq_mean"],
        saturated_fraction=saturated,
        zero_fraction=zero,
        chi1=chi1,
        correlation=corr,
        widths=widths,
        n_samples=n_samples,
        input_dim=input_dim if input_dim is not None or widths is None else widths[0],
        spread=spread,
        fixed=fixed,
    )


def _pair_expectations_order(spec: _Spec, q: float, c: float, order: int) -> tuple[float, float]:
    closed = _pair_closed(spec, q, c)
    if closed is not None:
        return closed
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        e = _expect_pairs(lambda h: _pair_values(spec, h), q, c, spec.features, order)
    return float(e[0]), float(e[1])


# ---- measured against predicted -----------------------------------------------------------------

_PARAMETRISED: Final = ("leaky_relu", "elu")
#: Spreads are at least this many units of rounding of the run's dtype, relative.
_ROUNDING_ULPS: Final = 4.0


def predict_result(result: PropagationResult) -> Prediction:
    """The prediction for the network a :class:`~initscope.PropagationResult` measured.

    The same configuration: each layer's activation (and parameter), ``σ_w² =
    result.weight_var`` (``fan_in Var W`` of the scheme, or of the matrix for schemes built
    as matrices), ``σ_b = result.bias_std``, the inputs' second moment
    ``result.input_sq_mean``, and the widths, ``n_samples`` and ``input_dim`` for the
    spreads.

    Parameters
    ----------
    result
        A run.

    Returns
    -------
    Prediction
        With ``spread`` set.
    """
    from .result import PropagationResult

    if not isinstance(result, PropagationResult):
        raise TypeError(f"result must be a PropagationResult, got {type(result).__name__}")
    acts = [
        resolve_activation(name, param if name in _PARAMETRISED else None)
        for name, param in zip(result.activation_names, result.activation_params, strict=True)
    ]
    a = np.asarray(result.weight_var, dtype=np.float64)
    b = np.asarray(result.bias_std, dtype=np.float64) ** 2
    if not np.all(np.isfinite(a)):
        raise ValueError("result.weight_var is not finite for every layer: cannot predict")
    return _predict(
        acts, a, b, float(result.input_sq_mean), 0.0, tuple(result.widths),
        int(result.n_samples), int(result.input_dim),
    )  # fmt: skip


class _Table(dict):  # type: ignore[type-arg]
    """A dict of equal-length arrays that prints as a table (the pandas-free comparison)."""

    def __str__(self) -> str:
        names = list(self)
        rows = len(self[names[0]]) if names else 0
        cells = [
            [str(v) if not isinstance(v, float | np.floating) else _cell(float(v)) for v in self[k]]
            for k in names
        ]
        widths = [max(len(k), *(len(c) for c in col)) for k, col in zip(names, cells, strict=True)]
        lines = ["  ".join(f"{k:>{w}}" for k, w in zip(names, widths, strict=True))]
        for r in range(rows):
            lines.append("  ".join(f"{col[r]:>{w}}" for col, w in zip(cells, widths, strict=True)))
        return "\n".join(lines)

    __repr__ = __str__


def compare(result: PropagationResult, prediction: Prediction | None = None) -> Any:
    """Measured against predicted, per statistic and layer, in units of the finite-width spread.

    Parameters
    ----------
    result
        A run.
    prediction
        Default: :func:`predict_result` of the run.

    Returns
    -------
    pandas.DataFrame or dict
        One row per (statistic, layer) with ``measured``, ``predicted``, ``difference``,
        ``spread`` (see :func:`predict`) and ``z = difference / spread``; ``|z|`` up to
        about 3 is what finite width explains.  Statistics: ``pre_mean``, ``pre_std``,
        ``mean``, ``std``, and where the activation defines them ``saturated_fraction``
        (tanh, sigmoid) and ``zero_fraction`` (relu), and ``chi1`` when the run measured
        it; rows only for the layers whose prediction is defined.  The spread is at
        least the binomial one of a fraction, and 4 units of rounding of the run's dtype.
        A DataFrame indexed by ``(statistic, layer)`` when pandas is installed, else a dict
        of arrays with ``statistic`` and ``layer`` columns; both print as a table.
    """
    if prediction is None:
        prediction = predict_result(result)
    if not isinstance(prediction, Prediction):
        raise TypeError(f"prediction must be a Prediction, got {type(prediction).__name__}")
    if prediction.depth != result.depth:
        raise ValueError(
            f"prediction has {prediction.depth} layers but the result has {result.depth}"
        )
    depth = result.depth
    rows: dict[str, list[Any]] = {
        key: [] for key in ("statistic", "layer", "measured", "predicted", "difference")
    }
    rows["spread"], rows["z"] = [], []
    spread = prediction.spread or {}
    entries = np.array([result.n_samples * w for w in result.widths], dtype=np.float64)
    eps = float(np.finfo(np.dtype(result.dtype)).eps)
    for name in Prediction.STATISTICS:
        predicted = np.asarray(getattr(prediction, name), dtype=np.float64)
        measured = np.asarray(getattr(result, name, np.full(depth, np.nan)), dtype=np.float64)
        if not np.isfinite(predicted).any() or not np.isfinite(measured).any():
            continue
        sp = np.asarray(spread.get(name, np.full(depth, np.nan)), dtype=np.float64)
        if name in ("saturated_fraction", "zero_fraction"):
            # at least the binomial spread of a count of n·w entries
            floor = np.sqrt(np.clip(predicted * (1.0 - predicted), 0.0, None) / entries)
            sp = np.fmax(sp, floor)
        # and at least the rounding of the run's dtype: a statistic of values that all
        # round alike (chi1 of a dying signal is σ_w² (1 - O(q))) cannot resolve finer
        sp = np.hypot(sp, _ROUNDING_ULPS * eps * np.abs(predicted))
        diff = measured - predicted
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sp > 0, diff / sp, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
        z = np.where(np.isfinite(diff), z, np.nan)
        for i in range(depth):
            if not np.isfinite(predicted[i]):
                continue  # not defined for this layer's activation (or the length diverged)
            rows["statistic"].append(name)
            rows["layer"].append(i + 1)
            rows["measured"].append(float(measured[i]))
            rows["predicted"].append(float(predicted[i]))
            rows["difference"].append(float(diff[i]))
            rows["spread"].append(float(sp[i]))
            rows["z"].append(float(z[i]))
    try:
        import pandas as pd
    except ImportError:
        table = _Table()
        for key, values in rows.items():
            table[key] = np.asarray(values, dtype=object if key == "statistic" else None)
        return table
    frame = pd.DataFrame(rows).set_index(["statistic", "layer"])
    return frame
