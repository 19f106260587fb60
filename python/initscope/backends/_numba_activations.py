"""The activations of the C++ kernel (``cpp/include/initscope/activations.hpp``), in Numba.

The one part of the Numba backend that is a copy, on purpose.  Jitting the formulas of
:mod:`initscope.activations` instead (``np.tanh``, ``math.erfc``, ``np.exp`` on scalars)
makes tanh networks far slower, because those are calls into libm that LLVM cannot
vectorise: at the seed shape (``propagate([500] * 10, n_samples=1000)``, 2 threads, best
of 60 runs) a run takes 46 % longer in float64 and 92 % longer in float32 with tanh, and
2-4 % longer with silu; only gelu would gain (16 % in float64, where the double-double
argument below costs more than libm's erfc).  These functions are the C++ kernel's:
vectorisable polynomials for exp and expm1 written with + - * / only, never fused, so
the two backends give the same activations and the same statistics bit for bit, on any
CPU.  Both are within 4 ulp of the correctly rounded values
(tests/test_cpp_activations.py measures it against mpmath, tests/test_numba.py compares
the two bit for bit); see activations.hpp for the method.

float32 tanh, sigmoid and the piecewise-linear activations run in float32; the others are
evaluated in float64 and rounded once, as in the C++ kernel.  So are the derivatives
(:func:`derive_row`, ``derive`` in activations.hpp): tanh's and sigmoid's in the dtype,
the others in float64 and rounded once, from the same exp polynomial.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .. import random as spec
from ..activations import ACTIVATIONS
from ._numba_generator import blocks

__all__ = ["activate_and_derive_row", "activate_row", "activation_args", "derive_row"]

as_bits = spec.as_bits  # (their scalar forms are registered by _numba_generator)
from_bits = spec.from_bits
horner = blocks.horner


def _hex(text: str) -> float:
    return float.fromhex(text)


_F32 = np.float32
# 1/n!, n = 2..14 (float32 uses n = 2..8)
_INV_FACT64 = tuple(_hex(h) for h in (
    "0x1.0000000000000p-1", "0x1.5555555555555p-3", "0x1.5555555555555p-5",
    "0x1.1111111111111p-7", "0x1.6c16c16c16c17p-10", "0x1.a01a01a01a01ap-13",
    "0x1.a01a01a01a01ap-16", "0x1.71de3a556c734p-19", "0x1.27e4fb7789f5cp-22",
    "0x1.ae64567f544e4p-26", "0x1.1eed8eff8d898p-29", "0x1.6124613a86d09p-33",
    "0x1.93974a8c07c9dp-37",
))  # fmt: skip
_INV_FACT32 = tuple(_F32(c) for c in _INV_FACT64[:7])

_INV_LN2_64 = _hex("0x1.71547652b82fep+0")
_EXP_LN2_HI64 = _hex("0x1.62e42feep-1")  # 33 bits: k * ln2_hi exact for |k| < 2**20
_EXP_LN2_LO64 = _hex("0x1.a39ef35793c76p-33")
_MAGIC64 = _hex("0x1.8p52")
_INV_LN2_32 = _F32(_hex("0x1.715476p+0"))
_EXP_LN2_HI32 = _F32(_hex("0x1.62e4p-1"))  # 17 bits: k * ln2_hi exact for |k| < 2**7
_EXP_LN2_LO32 = _F32(_hex("0x1.7f7d1cp-20"))
_MAGIC32 = _F32(_hex("0x1.8p23"))
_TANH_CAP64, _TANH_CAP32 = 20.0, _F32(10.0)  # tanh rounds to 1 beyond 19.1 / 9.02
_EXP_MIN64, _EXP_MIN32 = -760.0, _F32(-110.0)  # exp underflows to 0 below -745.2 / -103.9
_DEEP64, _DEEP32 = -1000.0, _F32(-120.0)  # 2**k below the normal range: scale twice
_DEEP_SHIFT64, _DEEP_SHIFT32 = 200.0, _F32(64.0)
_DEEP_SCALE64, _DEEP_SCALE32 = 2.0**-200, _F32(2.0**-64)
_ONE32, _TWO32, _ZERO32 = _F32(1.0), _F32(2.0), _F32(0.0)
_FOUR32, _QUARTER32 = _F32(4.0), _F32(0.25)
_SLOPE_CAP64, _SLOPE_CAP32 = 709.0, _F32(88.3)  # 2|x| for sech^2: exp stays finite / normal
_BIAS64, _SHIFT64 = np.uint64(1023), np.uint64(52)
_BIAS32, _SHIFT32 = np.uint64(127), np.uint64(23)

#: The largest -s for which the reference's 1 / (1 + exp(-s)) does not overflow, per dtype:
#: beyond it the reference's sigmoid is exactly 0, and so is ours (zero counts agree).
SIGMOID_FLUSH64 = _hex("0x1.62e42fefa39efp+9")  # log(DBL_MAX)
SIGMOID_FLUSH32 = _hex("0x1.62e42ep+6")  # the largest float below log(FLT_MAX)
_ZERO_BELOW32 = _F32(-SIGMOID_FLUSH32)

_SPLIT = 134217729.0  # 2**27 + 1
_DBL_MAX = float(np.finfo(np.float64).max)
_INF = math.inf


@njit(inline="always", error_model="numpy")
def _pow2i64(k):
    """2**k for an integral float64 k in the normal exponent range."""
    return from_bits((np.uint64(as_bits(k + _MAGIC64)) + _BIAS64) << _SHIFT64, k)


@njit(inline="always", error_model="numpy")
def _pow2i32(k):
    return from_bits((np.uint64(as_bits(k + _MAGIC32)) + _BIAS32) << _SHIFT32, k)


@njit(inline="always", error_model="numpy")
def _reduce64(x):
    """x = k ln2 + r, k = rint(x / ln2), |r| <= ln2 / 2 (plus rounding)."""
    k = (x * _INV_LN2_64 + _MAGIC64) - _MAGIC64
    return k, -k * _EXP_LN2_LO64 + (x - k * _EXP_LN2_HI64)  # k * ln2_hi, the subtraction: exact


@njit(inline="always", error_model="numpy")
def _reduce32(x):
    k = (x * _INV_LN2_32 + _MAGIC32) - _MAGIC32
    return k, -k * _EXP_LN2_LO32 + (x - k * _EXP_LN2_HI32)


@njit(inline="always", error_model="numpy")
def _expm1_poly64(r):
    """expm1(r) for |r| <= ln2 / 2: r + r^2 q(r), q in Estrin's scheme (as the C++ kernel)."""
    c = _INV_FACT64
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    q0 = (c[3] * r + c[2]) * r2 + (c[1] * r + c[0])
    q1 = (c[7] * r + c[6]) * r2 + (c[5] * r + c[4])
    q2 = (c[11] * r + c[10]) * r2 + (c[9] * r + c[8])
    q = (c[12] * r4 + q2) * r8 + (q1 * r4 + q0)
    return r2 * q + r


@njit(inline="always", error_model="numpy")
def _expm1_poly32(r):
    c = _INV_FACT32
    r2 = r * r
    r4 = r2 * r2
    q0 = (c[3] * r + c[2]) * r2 + (c[1] * r + c[0])
    q1 = c[6] * r2 + (c[5] * r + c[4])
    return r2 * (q1 * r4 + q0) + r


@njit(inline="always", error_model="numpy")
def _expm1_reduced64(k, r):
    """expm1(k ln2 + r) from :func:`_reduce64`'s k and r."""
    s = _pow2i64(k)
    return s * _expm1_poly64(r) + (s - 1.0)


@njit(inline="always", error_model="numpy")
def _expm1_reduced32(k, r):
    s = _pow2i32(k)
    return s * _expm1_poly32(r) + (s - _ONE32)


@njit(inline="always", error_model="numpy")
def _expm1_bounded64(x):
    """expm1(x) for |x| <= 60 (callers clamp)."""
    k, r = _reduce64(x)
    return _expm1_reduced64(k, r)


@njit(inline="always", error_model="numpy")
def _expm1_bounded32(x):
    k, r = _reduce32(x)
    return _expm1_reduced32(k, r)


@njit(inline="always", error_model="numpy")
def _exp_nonpositive_reduced64(k, r):
    """exp(k ln2 + r) in [exp_min, 0] from :func:`_reduce64`, subnormal results rounded once."""
    m = 1.0 + _expm1_poly64(r)
    deep = k < _DEEP64
    k1 = k + _DEEP_SHIFT64 if deep else k
    s2 = _DEEP_SCALE64 if deep else 1.0
    return (m * _pow2i64(k1)) * s2


@njit(inline="always", error_model="numpy")
def _exp_nonpositive_reduced32(k, r):
    m = _ONE32 + _expm1_poly32(r)
    deep = k < _DEEP32
    k1 = k + _DEEP_SHIFT32 if deep else k
    s2 = _DEEP_SCALE32 if deep else _ONE32
    return (m * _pow2i32(k1)) * s2


@njit(inline="always", error_model="numpy")
def _exp_nonpositive64(x):
    """exp(x) for exp_min <= x <= 0 (callers clamp)."""
    k, r = _reduce64(x)
    return _exp_nonpositive_reduced64(k, r)


@njit(inline="always", error_model="numpy")
def _exp_nonpositive32(x):
    k, r = _reduce32(x)
    return _exp_nonpositive_reduced32(k, r)


@njit(inline="always", error_model="numpy")
def _tanh64(x):
    ax = abs(x)
    t = ax if ax < _TANH_CAP64 else _TANH_CAP64
    e = _expm1_bounded64(t + t)  # tanh|x| = e / (e + 2), e = expm1(2|x|), one division
    y = math.copysign((e * (4.0 / (e + 2.0))) * 0.25, x)
    return x if x != x else y


@njit(inline="always", error_model="numpy")
def _tanh32(x):
    ax = abs(x)
    t = ax if ax < _TANH_CAP32 else _TANH_CAP32
    e = _expm1_bounded32(t + t)
    y = math.copysign((e * (_FOUR32 / (e + _TWO32))) * _QUARTER32, x)
    return x if x != x else y


@njit(inline="always", error_model="numpy")
def _sigmoid64(x):
    t = -abs(x)
    t = t if t > _EXP_MIN64 else _EXP_MIN64
    e = _exp_nonpositive64(t)  # exp(-|x|): never overflows
    num = 1.0 if x >= 0.0 else e
    y = num * (1.0 / (1.0 + e))
    return x if x != x else (0.0 if x < -SIGMOID_FLUSH64 else y)


@njit(inline="always", error_model="numpy")
def _sigmoid32(x):
    t = -abs(x)
    t = t if t > _EXP_MIN32 else _EXP_MIN32
    e = _exp_nonpositive32(t)
    num = _ONE32 if x >= _ZERO32 else e
    y = num * (_ONE32 / (_ONE32 + e))
    return x if x != x else (_ZERO32 if x < _ZERO_BELOW32 else y)


# tanh and sigmoid with their slopes, in the parts of activations.hpp's TanhSlope and
# SigmoidSlope: the argument of the exponential, the exponential from its reduction
# (_expm1_reduced, _exp_nonpositive_reduced), and what follows; activate_and_derive_row
# runs them as three loops, as the C++ kernel does.


@njit(inline="always", error_model="numpy")
def _tanh_argument64(x):
    two_ax = abs(x) + abs(x)
    return two_ax if two_ax < _SLOPE_CAP64 else _SLOPE_CAP64


@njit(inline="always", error_model="numpy")
def _tanh_argument32(x):
    two_ax = abs(x) + abs(x)
    return two_ax if two_ax < _SLOPE_CAP32 else _SLOPE_CAP32


@njit(inline="always", error_model="numpy")
def _tanh_finish64(x, e):
    """(tanh x, sech^2 x) from e = expm1(2|x|): the bits of :func:`_tanh64`."""
    two_ax = abs(x) + abs(x)
    q = 4.0 / (e + 2.0)  # 4, not 1: q stays normal where 2|x| nears the cap
    s = q * (((e + 1.0) * q) * 0.25)
    y = math.copysign((e * q) * 0.25, x)
    return (x if x != x else y), (x if x != x else (s if two_ax < _SLOPE_CAP64 else 0.0))


@njit(inline="always", error_model="numpy")
def _tanh_finish32(x, e):
    two_ax = abs(x) + abs(x)
    q = _FOUR32 / (e + _TWO32)
    s = q * (((e + _ONE32) * q) * _QUARTER32)
    y = math.copysign((e * q) * _QUARTER32, x)
    return (x if x != x else y), (x if x != x else (s if two_ax < _SLOPE_CAP32 else _ZERO32))


@njit(inline="always", error_model="numpy")
def _sigmoid_argument64(x):
    t = -abs(x)
    return t if t > _EXP_MIN64 else _EXP_MIN64


@njit(inline="always", error_model="numpy")
def _sigmoid_argument32(x):
    t = -abs(x)
    return t if t > _EXP_MIN32 else _EXP_MIN32


@njit(inline="always", error_model="numpy")
def _sigmoid_finish64(x, e):
    """(sigmoid x, its derivative) from e = exp(-|x|): the bits of :func:`_sigmoid64`."""
    r = 1.0 / (1.0 + e)
    num = 1.0 if x >= 0.0 else e
    y = 0.0 if x < -SIGMOID_FLUSH64 else num * r
    return (x if x != x else y), (x if x != x else (e * r) * r)


@njit(inline="always", error_model="numpy")
def _sigmoid_finish32(x, e):
    r = _ONE32 / (_ONE32 + e)
    num = _ONE32 if x >= _ZERO32 else e
    y = _ZERO32 if x < _ZERO_BELOW32 else num * r
    return (x if x != x else y), (x if x != x else (e * r) * r)


_SQRT2 = _hex("0x1.6a09e667f3bcdp+0")
_LOG_C64 = spec.float_constants(np.float64(0.0)).log_c  # the generator's log series


@njit(inline="always", error_model="numpy")
def _log1p_unit(t):
    """log1p(t) for t in [0, 1]: log(1 + t) as 2 atanh(s), plus the rounding error of 1 + t."""
    u = 1.0 + t
    c = t - (u - 1.0)  # exact: the part of t that 1 + t lost
    big = u > _SQRT2
    f = u * 0.5 if big else u
    s = (f - 1.0) / (f + 1.0)
    log_f = 2.0 * s * horner(s * s, _LOG_C64, 1.0)
    ef = 1.0 if big else 0.0
    return (ef * _EXP_LN2_HI64 + (ef * _EXP_LN2_LO64 + log_f)) + c / u


@njit(inline="always", error_model="numpy")
def _softplus(x):
    t = -abs(x)
    t = t if t > _EXP_MIN64 else _EXP_MIN64
    m = x if x > 0.0 else 0.0
    y = m + _log1p_unit(_exp_nonpositive64(t))
    return x if x != x else y


@njit(inline="always", error_model="numpy")
def _elu(x, alpha):
    t = x if x < 0.0 else 0.0
    t = t if t > -40.0 else -40.0
    y = x if x > 0.0 else alpha * _expm1_bounded64(t)
    return x if x != x else y


_SELU_SCALE = _hex("0x1.0cfabd6a91132p+0")
_SELU_SCALE_ALPHA = _hex("0x1.c212cc640f031p+0")  # scale * alpha, rounded once


@njit(inline="always", error_model="numpy")
def _selu(x):
    t = x if x < 0.0 else 0.0
    t = t if t > -40.0 else -40.0
    y = _SELU_SCALE * x if x > 0.0 else _SELU_SCALE_ALPHA * _expm1_bounded64(t)
    return x if x != x else y


@njit(inline="always", error_model="numpy")
def _times_sigmoid(x, sh, sl, flush):
    """x * sigmoid(s), s = sh + sl in double-double, flushed to x * 0 where s < -flush.

    exp(-|s|) is carried times 2**200 when tiny, so that x * exp(s) is rounded once even
    where exp(s) alone would be subnormal.
    """
    neg = sh < 0.0
    t = sh if neg else -sh  # -|s|
    tl = sl if neg else -sl
    zero = neg and t < -flush
    t = t if t > _EXP_MIN64 else _EXP_MIN64
    k, r = _reduce64(t)
    m = 1.0 + _expm1_poly64(r)
    deep = k < -800.0  # exp(t) < 2**-800: 1 + exp(t) == 1
    es = m * _pow2i64(k + 200.0 if deep else k)
    es = es + es * tl  # exp(t + tl) = exp(t) (1 + tl)
    es = 0.0 if zero else es
    den = 1.0 + (0.0 if deep else es)
    num = x * es if neg else x
    y = num / den
    return y * 2.0**-200 if (deep and neg) else y


@njit(inline="always", error_model="numpy")
def _silu(x, flush):
    y = _times_sigmoid(x, x, 0.0, flush)
    return x if x != x else y


@njit(inline="always", error_model="numpy")
def _two_prod(a, b):
    """``a * b = p + e`` exactly: Dekker's product, each factor split into 26-bit halves."""
    p = a * b
    ta = _SPLIT * a
    tb = _SPLIT * b
    ah = ta - (ta - a)
    al = a - ah
    bh = tb - (tb - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@njit(inline="always", error_model="numpy")
def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


_GELU_C2_HI = _hex("0x1.9884533d43651p+0")  # 2 sqrt(2 / pi), double-double
_GELU_C2_LO = _hex("-0x1.cbc0d30ebfd15p-54")
_GELU_K_HI = _hex("0x1.6e4e26d4801f7p-5")  # 0.044715, double-double
_GELU_K_LO = _hex("0x1.441355475a31ap-59")


@njit(inline="always", error_model="numpy")
def _gelu_tanh(x, flush):
    """x sigmoid(2y), 2y = 2 sqrt(2/pi) x (1 + 0.044715 x^2) computed in double-double."""
    xc = x if x < 60.0 else 60.0  # beyond, sigmoid(2y) is 0 or 1
    xc = xc if xc > -60.0 else -60.0
    p, pe = _two_prod(xc, xc)
    bh, be = _two_prod(_GELU_K_HI, p)
    be = be + (_GELU_K_HI * pe + _GELU_K_LO * p)
    ch, ce = _two_sum(1.0, bh)
    ce = ce + be
    dh, de = _two_prod(xc, ch)
    de = de + xc * ce
    yh, ye = _two_prod(_GELU_C2_HI, dh)
    ye = ye + (_GELU_C2_HI * de + _GELU_C2_LO * dh)
    y = _times_sigmoid(x, yh, ye, flush)
    return x if x != x else y


_RSQRT2_HI = _hex("0x1.6a09e667f3bcdp-1")  # 1 / sqrt 2, double-double
_RSQRT2_LO = _hex("-0x1.bdd3413b26456p-55")
_TWO_OVER_SQRT_PI = _hex("0x1.20dd750429b6dp+0")
_INV_SQRT_2PI = _hex("0x1.9884533d43651p-2")
_ASYMPTOTIC = (1.0, -1.0, 3.0, -15.0, 105.0, -945.0, 10395.0, -135135.0, 2027025.0)


@njit(inline="always", error_model="numpy")
def _gelu64(x):
    """0.5 x erfc(-x / sqrt 2), the argument carried in double-double.

    erfc(zh + zl) ~ erfc(zh) - 2/sqrt(pi) exp(-zh^2) zl.  Where erfc nears underflow
    (x < -37.3) the asymptotic series of exp(-x^2/2) / sqrt(2 pi) is evaluated scaled by
    2**1000, so the subnormal result is rounded once.
    """
    if not abs(x) <= _DBL_MAX:
        return 0.5 * x * math.erfc(-x * _RSQRT2_HI)  # NaN and inf as the reference
    if x < -37.3:
        # Where the reference's erfc underflows to 0, so does its gelu (and zero counts).
        if x < -40.0 or math.erfc(-x * _RSQRT2_HI) == 0.0:
            return -0.0
        q, qe = _two_prod(x, x)
        # -x^2/2 + 1000 ln2; 1000 ln2_hi is exact and the subtraction is exact (Sterbenz).
        arg = (1000.0 * _EXP_LN2_HI64 - 0.5 * q) + (1000.0 * _EXP_LN2_LO64 - 0.5 * qe)
        w = 1.0 / q  # 1 / x^2 = 1 / (2 z^2)
        series = _ASYMPTOTIC[-1]  # 1 - w + 3 w^2 - 15 w^3 + ... ((2k-1)!! (-w)^k)
        for i in range(len(_ASYMPTOTIC) - 2, -1, -1):
            series = _ASYMPTOTIC[i] + w * series
        return -(_INV_SQRT_2PI * math.exp(arg) * series) * 2.0**-1000
    zh, zl = _two_prod(-x, _RSQRT2_HI)
    zl = zl + (-x) * _RSQRT2_LO
    tail = math.erfc(zh) - _TWO_OVER_SQRT_PI * math.exp(-zh * zh) * zl
    return 0.5 * x * tail


@njit(inline="always", error_model="numpy")
def _gelu32(x):
    # float32: z = -x / sqrt 2 in float64 is accurate far beyond float32's ulp.  Zero where
    # the reference's float32 erfc is (the tail below float32's range).
    xd = np.float64(x)
    tail = math.erfc(-xd * _RSQRT2_HI)
    return 0.0 * xd if np.float32(tail) == _ZERO32 else 0.5 * xd * tail


# ---- derivatives (activations.hpp, math::d_*), in float64 --------------------------------


@njit(inline="always", error_model="numpy")
def _exp_le0(x):
    """exp(x) for x <= 0, any x (zero below the clamp)."""
    t = x if x > _EXP_MIN64 else _EXP_MIN64
    return _exp_nonpositive64(t)


@njit(inline="always", error_model="numpy")
def _sigmoid_slope(s):
    """e / (1 + e)^2 for e = exp(-|s|): sigmoid'(s), without overflow or cancellation."""
    e = _exp_le0(-abs(s))
    d = 1.0 + e
    return e / (d * d)


_GELU_C = _hex("0x1.9884533d43651p-1")  # sqrt(2 / pi)
_GELU_K = 0.044715


@njit(inline="always", error_model="numpy")
def _d_gelu(x):
    if x < -40.0:
        return 0.0 * x  # both terms underflow
    return 0.5 * math.erfc(-x * _RSQRT2_HI) + x * (_INV_SQRT_2PI * _exp_le0(-0.5 * x * x))


@njit(inline="always", error_model="numpy")
def _d_gelu_tanh(x):
    xc = x if x > -60.0 else -60.0  # beyond, sigmoid(2u) is 0 or 1
    xc = xc if xc < 60.0 else 60.0
    x2 = xc * xc
    two_u = 2.0 * _GELU_C * (xc + _GELU_K * x2 * xc)
    du = 2.0 * _GELU_C * (1.0 + 3.0 * _GELU_K * x2)
    return _sigmoid64(two_u) + xc * du * _sigmoid_slope(two_u)  # xc: finite where 0


def _tanh(x):  # typed dispatch: float32 math for float32 values, as the C++ kernel
    raise NotImplementedError


def _sigmoid(x):
    raise NotImplementedError


def _gelu(x):
    raise NotImplementedError


def _reduce(x):
    raise NotImplementedError


def _tanh_argument(x):
    raise NotImplementedError


def _sigmoid_argument(x):
    raise NotImplementedError


def _expm1_reduced(k, r):
    raise NotImplementedError


def _exp_nonpositive_reduced(k, r):
    raise NotImplementedError


def _tanh_finish(x, e):
    raise NotImplementedError


def _sigmoid_finish(x, e):
    raise NotImplementedError


def _by_dtype(impl32, impl64):
    def typer(x):
        if x == types.float32:
            return lambda x: impl32(x)
        if x == types.float64:
            return lambda x: impl64(x)
        return None

    return typer


def _by_dtype2(impl32, impl64):
    """:func:`_by_dtype` for functions of two values of the same dtype."""

    def typer(x, y):
        if x == types.float32:
            return lambda x, y: impl32(x, y)
        if x == types.float64:
            return lambda x, y: impl64(x, y)
        return None

    return typer


for _generic, _impl32, _impl64, _typer in (
    (_tanh, _tanh32, _tanh64, _by_dtype),
    (_sigmoid, _sigmoid32, _sigmoid64, _by_dtype),
    (_gelu, _gelu32, _gelu64, _by_dtype),
    (_reduce, _reduce32, _reduce64, _by_dtype),
    (_tanh_argument, _tanh_argument32, _tanh_argument64, _by_dtype),
    (_sigmoid_argument, _sigmoid_argument32, _sigmoid_argument64, _by_dtype),
    (_expm1_reduced, _expm1_reduced32, _expm1_reduced64, _by_dtype2),
    (_exp_nonpositive_reduced, _exp_nonpositive_reduced32, _exp_nonpositive_reduced64,
     _by_dtype2),
    (_tanh_finish, _tanh_finish32, _tanh_finish64, _by_dtype2),
    (_sigmoid_finish, _sigmoid_finish32, _sigmoid_finish64, _by_dtype2),
):  # fmt: skip
    overload(_generic, jit_options={"error_model": "numpy"})(_typer(_impl32, _impl64))


@njit(inline="always", error_model="numpy")
def _tanh_slope(x):
    """sech^2 x in x's dtype, from the parts activate_and_derive_row runs as loops."""
    k, r = _reduce(_tanh_argument(x))
    return _tanh_finish(x, _expm1_reduced(k, r))[1]


@njit(inline="always", error_model="numpy")
def _typed_sigmoid_slope(x):
    """sigmoid'(x) in x's dtype, likewise."""
    k, r = _reduce(_sigmoid_argument(x))
    return _sigmoid_finish(x, _exp_nonpositive_reduced(k, r))[1]


(LINEAR, TANH, RELU, LEAKY_RELU, SIGMOID, SOFTPLUS, ELU, SELU, GELU, GELU_TANH, SILU) = (
    ACTIVATIONS.index(name)
    for name in ("linear", "tanh", "relu", "leaky_relu", "sigmoid", "softplus", "elu",
                 "selu", "gelu", "gelu_tanh", "silu")
)  # fmt: skip


@njit(error_model="numpy")
def activate_row(code, slope, alpha, flush, src, dst):
    """``dst[j] = act(src[j])``: float32 tanh, sigmoid and the piecewise-linear ones in
    float32, the others evaluated in float64 and rounded once (activations.hpp)."""
    n = src.size
    zero = slope - slope  # 0 in the dtype (the slope is finite)
    if code == TANH:
        for j in range(n):
            dst[j] = _tanh(src[j])
    elif code == RELU:
        for j in range(n):
            x = src[j]
            dst[j] = x if (x >= zero or x != x) else zero  # np.maximum(x, 0)
    elif code == LEAKY_RELU:
        for j in range(n):
            x = src[j]
            dst[j] = x * slope if x < zero else x
    elif code == SIGMOID:
        for j in range(n):
            dst[j] = _sigmoid(src[j])
    elif code == SOFTPLUS:
        for j in range(n):
            dst[j] = _softplus(np.float64(src[j]))
    elif code == ELU:
        for j in range(n):
            dst[j] = _elu(np.float64(src[j]), alpha)
    elif code == SELU:
        for j in range(n):
            dst[j] = _selu(np.float64(src[j]))
    elif code == GELU:
        for j in range(n):
            dst[j] = _gelu(src[j])
    elif code == GELU_TANH:
        for j in range(n):
            dst[j] = _gelu_tanh(np.float64(src[j]), flush)
    elif code == SILU:
        for j in range(n):
            dst[j] = _silu(np.float64(src[j]), flush)
    else:  # LINEAR
        for j in range(n):
            dst[j] = src[j]


@njit(error_model="numpy")
def derive_row(code, slope, alpha, src, dst):
    """``dst[j] = act'(src[j])``: tanh and sigmoid in ``dst``'s dtype, the others evaluated in
    float64 and rounded once; NaN stays NaN (activations.hpp, ``derive``).  ``slope`` and
    ``alpha`` as :func:`activation_args` gives them."""
    n = src.size
    if code == TANH:  # in the dtype, as the activation
        for j in range(n):
            dst[j] = _tanh_slope(src[j])
    elif code == RELU:
        for j in range(n):
            x = np.float64(src[j])
            dst[j] = x if x != x else (1.0 if x > 0.0 else 0.0)
    elif code == LEAKY_RELU:
        other = np.float64(slope)
        for j in range(n):
            x = np.float64(src[j])
            dst[j] = x if x != x else (1.0 if x > 0.0 else other)
    elif code == SIGMOID:
        for j in range(n):
            dst[j] = _typed_sigmoid_slope(src[j])
    elif code == SOFTPLUS:
        for j in range(n):
            x = np.float64(src[j])
            d = _sigmoid64(x)
            dst[j] = x if x != x else d
    elif code == ELU:
        for j in range(n):
            x = np.float64(src[j])
            d = 1.0 if x > 0.0 else alpha * _exp_le0(x)
            dst[j] = x if x != x else d
    elif code == SELU:
        for j in range(n):
            x = np.float64(src[j])
            d = _SELU_SCALE if x > 0.0 else _SELU_SCALE_ALPHA * _exp_le0(x)
            dst[j] = x if x != x else d
    elif code == GELU:
        for j in range(n):
            x = np.float64(src[j])
            dst[j] = x if x != x else _d_gelu(x)
    elif code == GELU_TANH:
        for j in range(n):
            x = np.float64(src[j])
            d = _d_gelu_tanh(x)
            dst[j] = x if x != x else d
    elif code == SILU:
        for j in range(n):
            x = np.float64(src[j])
            d = _sigmoid64(x) + x * _sigmoid_slope(x)
            dst[j] = x if x != x else d
    else:  # LINEAR
        for j in range(n):
            x = np.float64(src[j])
            dst[j] = x if x != x else 1.0


@njit(error_model="numpy")
def activate_and_derive_row(code, slope, alpha, flush, src, dst, deriv):
    """:func:`activate_row` into ``dst`` and :func:`derive_row` into ``deriv``, the same
    bits; tanh and sigmoid from one exp per value (activations.hpp, activate_and_derive)."""
    n = src.size
    # tanh and sigmoid in three loops, dst and deriv holding what is between (activations.hpp,
    # with_slope_staged: one loop over a value's whole chain keeps too few values in flight)
    if code == TANH:
        for j in range(n):
            deriv[j], dst[j] = _reduce(_tanh_argument(src[j]))
        for j in range(n):
            deriv[j] = _expm1_reduced(deriv[j], dst[j])
        for j in range(n):
            dst[j], deriv[j] = _tanh_finish(src[j], deriv[j])
    elif code == SIGMOID:
        for j in range(n):
            deriv[j], dst[j] = _reduce(_sigmoid_argument(src[j]))
        for j in range(n):
            deriv[j] = _exp_nonpositive_reduced(deriv[j], dst[j])
        for j in range(n):
            dst[j], deriv[j] = _sigmoid_finish(src[j], deriv[j])
    else:
        derive_row(code, slope, alpha, src, deriv)
        activate_row(code, slope, alpha, flush, src, dst)


def activation_args(activation, dtype: np.dtype) -> tuple:
    """``(code, slope, alpha, flush)`` of :func:`activate_row`: the parameter in the dtype,
    and as a float64."""
    t = dtype.type
    flush = SIGMOID_FLUSH64 if dtype == np.float64 else SIGMOID_FLUSH32
    return np.int64(activation.code), t(activation.param), float(t(activation.param)), flush
