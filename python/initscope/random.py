"""The counter-based generator: the specification every backend reproduces bit for bit.

Every random number initscope draws (inputs, weights, biases) is a pure function of
``(seed, stream, layer, index)``: no state, so the numbers never depend on thread count,
chunking or backend.

Philox4x32-10
    Salmon, Moraes, Dror & Shaw (2011), "Parallel random numbers: as easy as 1, 2, 3".
    Key ``(k0, k1)`` = the 64-bit ``seed`` split into low and high words.  Counter
    ``(c0, c1, c2, c3)`` = ``(block & 0xffffffff, block >> 32, stream, layer)``.
    Each call gives four 32-bit words.  Checked against Random123's known-answer vectors.

Streams
    ``INPUTS`` (layer 0; element ``row * input_dim + col``), ``WEIGHTS`` (element
    ``r * fan_out + c`` of the ``(fan_in, fan_out)`` matrix), ``BIASES`` (element ``c``),
    ``AUX`` (extra draws of the schemes built in Python: truncation retries, sparse masks),
    ``GRADS`` (layer 0; element ``row * widths[-1] + col``: the output gradient ``dL/da``
    of a run with ``gradients=True`` and no ``output_grad``).

Uniforms
    float64: two per block, ``u = (a * 2**26 + b) * 2**-53`` with ``a = w0 >> 5`` and
    ``b = w1 >> 6`` (words 0, 1 and then 2, 3), in ``[0, 1)``.
    float32: four per block, ``u = (w >> 8) * 2**-24``, in ``[0, 1)``.

Normals (Box-Muller)
    Four per block in both dtypes: the block's words (0, 1) give elements ``4b``, ``4b + 1``
    and words (2, 3) give ``4b + 2``, ``4b + 3``, each pair ``(r cos theta, r sin theta)``,
    the first word giving the radius ``r = sqrt(-2 log x)`` and the second the angle.
    ``log``, ``sin`` and ``cos`` are the polynomials below, written with + - * / and sqrt
    only, each operation rounded once in the array's dtype (no fused multiply-add), so that
    C++, Numba and NumPy produce the same bits.

    float64 (:func:`block_normals64`): ``x = 1 - w * 2**-32`` and ``theta = 2 pi w' 2**-32``,
    both exact functions of the 32-bit words (``x`` lies in ``[2**-32, 1]``).  So
    ``|z| <= sqrt(-2 log 2**-32) = sqrt(64 ln 2) = 6.66``: the tails are cut beyond 6.66
    sigma, where a normal lies with probability ``2.7e-11``, as PyTorch's float32 Box-Muller
    bounds its tails.  Each normal is within ``2e-14 * max(1, r)`` of ``r cos theta`` (or
    ``r sin theta``) computed exactly from the same words (tests/test_random.py checks it
    against mpmath and NumPy), far below the spacing of neighbouring values on the grid of
    the 32-bit words (about ``1.5e-9 r``).
    ``log x = e ln 2 + log f`` with ``x = f * 2**e``, ``f`` in ``[sqrt(1/2), sqrt(2))``,
    ``log f = 2 atanh(s)``, ``s = (f - 1) / (f + 1)``, a near-minimax polynomial in ``s**2``
    (5 terms); the angle is reduced in integers, ``w' + 2**29 = q 2**30 + t + 2**29`` with
    ``|t| <= 2**29``, to ``x = t * pi 2**-31`` (``|x| <= pi/4``), near-minimax polynomials
    of sin and cos in ``x**2`` (5 and 6 terms), then the quadrant ``q mod 4``.

    float32 (:func:`block_values32`): ``(v, u)`` the float32 uniforms of the two words,
    ``r = sqrt(-2 log(1 - v))`` (``1 - v`` lies in ``(0, 1]``, computed exactly),
    ``z0 = r cos(2 pi u)``, ``z1 = r sin(2 pi u)`` (:func:`box_muller`).
    log (:func:`log_unit`): ``u = f * 2**e`` with ``f`` in ``[sqrt(1/2), sqrt(2))``;
    ``log f = 2 atanh(s)``, ``s = (f - 1) / (f + 1)``, the series in ``s**2`` to 1 ulp.
    sincos(2 pi u) (:func:`sincos_2pi`): ``k = rint(4u)``, ``t = (4u - k) * pi/2`` (exact
    reduction, ``|t| <= pi/4``), Taylor series of sin and cos in ``t``, then the quadrant
    ``k mod 4``.  (:func:`log_unit` is also the log of the float64 uniforms' rejection
    tests, in float64.)

Building blocks
    The functions from :func:`philox4x32` to :func:`block_normals64` are the definition
    above, and they are written so that they mean the same on NumPy arrays (as
    :func:`normal` and :func:`uniform` call them, a block per element) and on scalars,
    where the Numba backend compiles these very functions into its kernels: typed
    constants only (a float32 times a Python float is float64 in Numba), and five
    primitives (:func:`as_bits`, :func:`from_bits`, :func:`cast`, :func:`select`,
    :func:`float_constants`) that Numba gives a scalar form of.  So the backends cannot
    drift from the specification: there is no second copy to drift.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = [
    "AUX",
    "BIASES",
    "GRADS",
    "INPUTS",
    "WEIGHTS",
    "normal",
    "philox4x32",
    "uniform",
]

INPUTS: Final = 0
WEIGHTS: Final = 1
BIASES: Final = 2
AUX: Final = 3
GRADS: Final = 4

_MASK = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_TWO = np.uint64(2)
_THREE = np.uint64(3)
_SH5 = np.uint64(5)
_SH6 = np.uint64(6)
_SH8 = np.uint64(8)

Words = tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[np.uint64], NDArray[np.uint64]]


# ---- primitives: NumPy's forms here, the Numba backend's scalar forms in its kernels -------


def as_bits(x: NDArray) -> NDArray:
    """The bits of float64 values as uint64, of float32 values as uint32."""
    return x.view(np.uint64 if x.dtype == np.float64 else np.uint32)


def from_bits(bits: NDArray, like: NDArray) -> NDArray:
    """The floats of the dtype of ``like`` whose bits are ``bits`` (of the same width)."""
    return bits.view(like.dtype)


def cast(value: NDArray, like: NDArray) -> NDArray:
    """``value`` (integers) converted to the float dtype of ``like``."""
    return np.asarray(value).astype(like.dtype)


def select(condition: NDArray, a: NDArray, b: NDArray) -> NDArray:
    """``a`` where ``condition`` holds, else ``b``."""
    return np.where(condition, a, b)


# ---- Philox4x32-10 ---------------------------------------------------------------------------


def philox4x32(counter: Words, key: tuple[np.uint64, np.uint64], rounds: int = 10) -> Words:
    """Philox4x32 on 32-bit words held in uint64 (so products do not wrap).

    Parameters
    ----------
    counter : tuple of four uint64 arrays (or scalars)
        The counter words ``(c0, c1, c2, c3)``, each below ``2**32``.
    key : tuple of two uint64
        The key words ``(k0, k1)``, each below ``2**32``.
    rounds : int, optional
        Rounds of the bijection; 10 is Philox4x32-10.

    Returns
    -------
    tuple of four uint64 arrays (or scalars)
        The output words, each below ``2**32``.
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> _SHIFT32) ^ c1 ^ k0,
            p1 & _MASK,
            (p0 >> _SHIFT32) ^ c3 ^ k1,
            p0 & _MASK,
        )
    return c0, c1, c2, c3


def block_words(block, stream, layer, key):
    """The four words of block ``block`` (uint64) of ``(stream, layer)`` (uint64)."""
    return philox4x32((block & _MASK, block >> _SHIFT32, stream, layer), key)


def _key(seed: int) -> tuple[np.uint64, np.uint64]:
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


# ---- uniforms ---------------------------------------------------------------------------------


def uniform53(hi, lo):
    """``(a * 2**26 + b) * 2**-53``, ``a = hi >> 5``, ``b = lo >> 6``, in float64.

    ``a`` and ``b`` go through int32, which holds them exactly, because an int32 converts
    to float in one vector instruction and a uint64 does not.
    """
    a = np.float64(np.int32(hi >> _SH5))
    b = np.float64(np.int32(lo >> _SH6))
    return (a * 67108864.0 + b) * 2.0**-53


def uniform24(word):
    """``(word >> 8) * 2**-24`` in float32."""
    return np.float32(np.int32(word >> _SH8)) * np.float32(2.0**-24)


# ---- log and sincos: the exact operation sequences the kernels follow --------------------

# fmt: off
_LOG_C64 = tuple(float.fromhex(h) for h in (
    "0x1.5555555555555p-2", "0x1.999999999999ap-3", "0x1.2492492492492p-3",
    "0x1.c71c71c71c71cp-4", "0x1.745d1745d1746p-4", "0x1.3b13b13b13b14p-4",
    "0x1.1111111111111p-4", "0x1.e1e1e1e1e1e1ep-5", "0x1.af286bca1af28p-5",
    "0x1.8618618618618p-5",
))  # 1/3, 1/5, ..., 1/21
_SIN_C64 = tuple(float.fromhex(h) for h in (
    "-0x1.5555555555555p-3", "0x1.1111111111111p-7", "-0x1.a01a01a01a01ap-13",
    "0x1.71de3a556c734p-19", "-0x1.ae64567f544e4p-26", "0x1.6124613a86d09p-33",
    "-0x1.ae7f3e733b81fp-41", "0x1.952c77030ad4ap-49",
))  # (-1)^k / (2k+1)!, k = 1..8
_COS_C64 = tuple(float.fromhex(h) for h in (
    "-0x1.0000000000000p-1", "0x1.5555555555555p-5", "-0x1.6c16c16c16c17p-10",
    "0x1.a01a01a01a01ap-16", "-0x1.27e4fb7789f5cp-22", "0x1.1eed8eff8d898p-29",
    "-0x1.93974a8c07c9dp-37", "0x1.ae7f3e733b81fp-45", "-0x1.6827863b97d97p-53",
))  # (-1)^k / (2k)!, k = 1..9
# fmt: on


class FloatConstants(NamedTuple):
    """The constants of one float dtype, each of that dtype (or of its bits' integer type)."""

    one: float
    two: float
    half: float
    four: float
    minus_two: float
    sqrt2: float  # log's reduction: f in [sqrt(1/2), sqrt(2))
    ln2_hi: float  # ln 2 split so that e * ln2_hi is exact for every exponent e
    ln2_lo: float
    pio2: float
    round_magic: float  # 1.5 * 2**p: x + it - it is rint(x), ties to even, for |x| < 2**(p-1)
    log_c: tuple[float, ...]  # log's atanh series, sin's and cos's Taylor series
    sin_c: tuple[float, ...]
    cos_c: tuple[float, ...]
    exp_shift: np.unsignedinteger  # the exponent field of the bits
    exp_bias: np.signedinteger
    mantissa: np.unsignedinteger
    one_bits: np.unsignedinteger


_F32 = np.float32
# ln2_hi: e * ln2_hi is exact for |e| < 2**11 (float64) or 2**8 (float32)
_FLOAT64 = FloatConstants(
    one=1.0, two=2.0, half=0.5, four=4.0, minus_two=-2.0, sqrt2=math.sqrt(2.0),
    ln2_hi=float.fromhex("0x1.62e42feep-1"), ln2_lo=float.fromhex("0x1.a39ef35793c76p-33"),
    pio2=float.fromhex("0x1.921fb54442d18p+0"), round_magic=float.fromhex("0x1.8p52"),
    log_c=_LOG_C64, sin_c=_SIN_C64, cos_c=_COS_C64,
    exp_shift=np.uint64(52), exp_bias=np.int64(1023),
    mantissa=np.uint64(0x000FFFFFFFFFFFFF), one_bits=np.uint64(0x3FF0000000000000),
)  # fmt: skip
_FLOAT32 = FloatConstants(
    one=_F32(1.0), two=_F32(2.0), half=_F32(0.5), four=_F32(4.0), minus_two=_F32(-2.0),
    sqrt2=_F32(math.sqrt(2.0)),
    ln2_hi=_F32(float.fromhex("0x1.62ep-1")), ln2_lo=_F32(float.fromhex("0x1.0bfbe8p-15")),
    pio2=_F32(float.fromhex("0x1.921fb6p+0")), round_magic=_F32(float.fromhex("0x1.8p23")),
    log_c=tuple(_F32(c) for c in _LOG_C64[:5]),
    sin_c=tuple(_F32(c) for c in _SIN_C64[:5]),
    cos_c=tuple(_F32(c) for c in _COS_C64[:5]),
    exp_shift=np.uint32(23), exp_bias=np.int64(127),
    mantissa=np.uint32(0x007FFFFF), one_bits=np.uint32(0x3F800000),
)  # fmt: skip


def float_constants(x: NDArray) -> FloatConstants:
    """The constants of the dtype of ``x``."""
    return _FLOAT64 if x.dtype == np.float64 else _FLOAT32


def horner(z, coefs, one):
    """``1 + z * (c[0] + z * (c[1] + ...))``, each step rounded in the dtype of ``z``."""
    p = coefs[len(coefs) - 1]
    for i in range(len(coefs) - 2, -1, -1):
        p = p * z + coefs[i]
    return p * z + one


def log_unit(u):
    """Natural log of ``u`` in ``(0, 1]`` (normal numbers), to about 1 ulp."""
    c = float_constants(u)
    bits = as_bits(u)
    e = np.int64(bits >> c.exp_shift) - c.exp_bias
    f = from_bits((bits & c.mantissa) | c.one_bits, u)
    big = f > c.sqrt2
    f = select(big, f * c.half, f)
    ef = cast(e + np.int64(big), u)
    s = (f - c.one) / (f + c.one)
    log_f = c.two * s * horner(s * s, c.log_c, c.one)
    return ef * c.ln2_hi + (ef * c.ln2_lo + log_f)


def sincos_2pi(u):
    """``(sin(2 pi u), cos(2 pi u))`` for ``u`` in ``[0, 1)``."""
    c = float_constants(u)
    v = u * c.four
    shifted = v + c.round_magic
    k = shifted - c.round_magic  # rint(v)
    x = (v - k) * c.pio2
    z = x * x
    s = x * horner(z, c.sin_c, c.one)
    co = horner(z, c.cos_c, c.one)
    quadrant = np.uint64(as_bits(shifted)) & _THREE  # k mod 4: the low bits of the mantissa
    return quarter_turns(quadrant, s, co)


def quarter_turns(quadrant, sin, cos):
    """``(sin(t + q pi/2), cos(t + q pi/2))`` from ``sin t`` and ``cos t``, ``q`` in 0..3."""
    odd = (quadrant & _ONE) != _ZERO
    negate = (quadrant & _TWO) != _ZERO
    a = select(odd, cos, sin)  # sin(t + q pi/2): s, c, -s, -c
    b = select(odd, -sin, cos)  # cos(t + q pi/2): c, -s, -c, s
    return select(negate, -a, a), select(negate, -b, b)


def box_muller(v, u):
    """``(r cos 2 pi u, r sin 2 pi u)``, ``r = sqrt(-2 log(1 - v))``."""
    c = float_constants(v)
    r = np.sqrt(c.minus_two * log_unit(c.one - v))
    sin, cos = sincos_2pi(u)
    return r * cos, r * sin


def block_uniforms64(words):
    """float64 uniforms ``2b, 2b + 1`` from the words of block ``b``."""
    return uniform53(words[0], words[1]), uniform53(words[2], words[3])


def block_values32(words, normal):
    """float32 elements ``4b .. 4b + 3`` from the words of block ``b``."""
    u0 = uniform24(words[0])
    u1 = uniform24(words[1])
    u2 = uniform24(words[2])
    u3 = uniform24(words[3])
    if normal:
        z0, z1 = box_muller(u0, u1)
        z2, z3 = box_muller(u2, u3)
        return z0, z1, z2, z3
    return u0, u1, u2, u3


# ---- float64 normals: four per block, from the 32-bit words ------------------------------

# fmt: off
# -4 times the polynomial of atanh(s) / s in z = s**2, |s| <= (sqrt 2 - 1)/(sqrt 2 + 1); then
# those of (sin(x) / x - 1) / z and (cos(x) - 1) / z, z = x**2, |x| <= pi/4: near-minimax
# (Lawson's algorithm at 50 digits), before rounding within 3e-14 (relative), 5e-15 (relative)
# and 5e-17 (absolute).  Fewer terms than full precision needs: the words have 32 bits.
_RADIUS_Q = tuple(-4.0 * float.fromhex(h) for h in (
    "0x1.555555561d96ep-2", "0x1.999996ab08450p-3", "0x1.2494113ae1df3p-3",
    "0x1.c62b4d76ec470p-4", "0x1.9112747b926d8p-4",
))
_ANGLE_SIN = tuple(float.fromhex(h) for h in (
    "-0x1.5555555552233p-3", "0x1.1111110c86c11p-7", "-0x1.a019f938cd31dp-13",
    "0x1.71d76cc38e32bp-19", "-0x1.a96183450633ap-26",
))
_ANGLE_COS = tuple(float.fromhex(h) for h in (
    "-0x1.fffffffffffa3p-2", "0x1.555555554f948p-5", "-0x1.6c16c16489f8dp-10",
    "0x1.a019f8838ae45p-16", "-0x1.27df6bccd4555p-22", "0x1.1b95ed604801ep-29",
))
# fmt: on
_MINUS_TWO_LN2 = float.fromhex("-0x1.62e42fefa39efp+0")  # -2 ln 2: e * it is within 2e-15
_PI_2M31 = float.fromhex("0x1.921fb54442d18p-30")  # pi * 2**-31: an angle's unit of t
_SQRT_HALF_BITS = np.uint64(0x3FE6A09E667F3BCD)  # float64(sqrt(1/2))
_TO_SQRT_HALF = np.uint64(0x3FF0000000000000 - 0x3FE6A09E667F3BCD)
_EXP_SHIFT = np.uint64(52)
_MANTISSA64 = np.uint64(0x000FFFFFFFFFFFFF)
_TWO52_BITS = np.uint64(0x4330000000000000)  # float64(2**52): 2**52 + n has n in its mantissa
_TWO52_PLUS_BIAS = float(2**52 + 1023)
_TWO31 = np.int64(2**31)
_TWO29 = np.int64(2**29)
_TWO29_U = np.uint64(2**29)
_LOW30 = np.uint64(2**30 - 1)
_SH30 = np.uint64(30)


def signed_word(word):
    """``word - 2**31`` (a 32-bit word) in float64, through int32 (one vector instruction)."""
    return np.float64(np.int32(np.int64(word) - _TWO31))


def normal_radius(word):
    """``sqrt(-2 log x)``, ``x = 1 - word * 2**-32`` in ``[2**-32, 1]``, in float64.

    ``x = f * 2**e`` with ``f`` in ``[sqrt(1/2), sqrt(2))`` by moving ``x``'s bits by those of
    ``sqrt(1/2)`` (so the exponent field is ``e``); ``e`` in float64 as ``(2**52 + e + 1023) -
    (2**52 + 1023)``, with no int64 conversion (AVX2 has none).  Then
    ``-2 log x = e * (-2 ln 2) + s * Q(s**2)``, ``s = (f - 1) / (f + 1)``.
    """
    x = 0.5 - signed_word(word) * 2.0**-32  # exact
    bits = as_bits(x) + _TO_SQRT_HALF
    e = from_bits((bits >> _EXP_SHIFT) | _TWO52_BITS, x) - _TWO52_PLUS_BIAS
    f = from_bits((bits & _MANTISSA64) + _SQRT_HALF_BITS, x)
    s = (f - 1.0) / (f + 1.0)
    q = horner(s * s, _RADIUS_Q, -4.0)
    return np.sqrt(e * _MINUS_TWO_LN2 + s * q)


def normal_angle(word):
    """``(sin theta, cos theta)``, ``theta = 2 pi word 2**-32``, in float64.

    ``word + 2**29 = q 2**30 + (t + 2**29)`` with ``t`` in ``[-2**29, 2**29)``: ``theta``
    is ``q`` quarter turns plus ``x = t * pi 2**-31``, ``|x| <= pi/4``.
    """
    shifted = word + _TWO29_U
    t = np.float64(np.int32(np.int64(shifted & _LOW30) - _TWO29))
    x = t * _PI_2M31
    z = x * x
    s = x * horner(z, _ANGLE_SIN, 1.0)
    c = horner(z, _ANGLE_COS, 1.0)
    return quarter_turns((shifted >> _SH30) & _THREE, s, c)


def block_normals64(words):
    """float64 normals ``4b .. 4b + 3`` from the words of block ``b``: words (0, 1) and (2, 3)
    each give a radius and an angle."""
    r0 = normal_radius(words[0])
    s0, c0 = normal_angle(words[1])
    r1 = normal_radius(words[2])
    s1, c1 = normal_angle(words[3])
    return r0 * c0, r0 * s0, r1 * c1, r1 * s1


# ---- public draws -----------------------------------------------------------------------


def values_per_block(dtype: DTypeLike, normal: bool) -> int:
    """Elements per Philox block: 2 for float64 uniforms (53 bits each), else 4."""
    return 2 if np.dtype(dtype) == np.float64 and not normal else 4


def _draw(normal: bool, seed: int, stream: int, layer: int, start: int, count: int, dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if count == 0:
        return np.empty(0, dtype=dtype)
    per_block = values_per_block(dtype, normal)
    first = start // per_block
    last = (start + count - 1) // per_block
    block = np.arange(first, last + 1, dtype=np.uint64)
    words = block_words(block, np.uint64(stream), np.uint64(layer), _key(seed))
    if dtype == np.float32:
        values = block_values32(words, normal)
    else:
        values = block_normals64(words) if normal else block_uniforms64(words)
    out = np.stack(values, axis=1).reshape(-1)  # element per_block*b + j
    offset = start - first * per_block
    return out[offset : offset + count]


def normal(
    seed: int, stream: int, layer: int, start: int, count: int, dtype: object = np.float64
) -> NDArray:
    """Standard normals ``start .. start + count - 1`` of one stream.

    Parameters
    ----------
    seed : int
        The key, in ``[0, 2**64)``.
    stream, layer : int
        The counter's high words (``INPUTS``, ``WEIGHTS``, ``BIASES``, ``AUX`` or ``GRADS``,
        and the layer index).
    start, count : int
        The first element and the number of elements.
    dtype : float32 or float64, optional

    Returns
    -------
    ndarray
        ``count`` normals of ``dtype``.
    """
    with np.errstate(all="ignore"):
        return _draw(True, seed, stream, layer, start, count, dtype)


def uniform(
    seed: int, stream: int, layer: int, start: int, count: int, dtype: object = np.float64
) -> NDArray:
    """Uniforms on ``[0, 1)``, elements ``start .. start + count - 1`` of one stream.

    The parameters are those of :func:`normal`.
    """
    return _draw(False, seed, stream, layer, start, count, dtype)
