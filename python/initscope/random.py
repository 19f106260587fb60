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
    ``AUX`` (extra draws of the schemes built in Python: truncation retries, sparse masks).

Uniforms
    float64: two per block, ``u = (a * 2**26 + b) * 2**-53`` with ``a = w0 >> 5`` and
    ``b = w1 >> 6`` (words 0, 1 and then 2, 3), in ``[0, 1)``.
    float32: four per block, ``u = (w >> 8) * 2**-24``, in ``[0, 1)``.

Normals (Box-Muller)
    From one pair of uniforms ``(v, u)``: ``r = sqrt(-2 log(1 - v))`` (``1 - v`` lies in
    ``(0, 1]``, computed exactly), ``z0 = r cos(2 pi u)``, ``z1 = r sin(2 pi u)``.
    float64: the block's two uniforms give elements ``2b`` and ``2b + 1``; float32: the
    block's uniforms (0, 1) and (2, 3) give elements ``4b .. 4b + 3``.
    ``log`` and ``sincos`` are the polynomials below, written with + - * / and sqrt
    only, each rounded once in the array's dtype (no fused multiply-add), so that C++,
    Numba and NumPy produce the same bits.

    log: ``u = f * 2**e`` with ``f`` in ``[sqrt(1/2), sqrt(2))``;
    ``log f = 2 atanh(s)``, ``s = (f - 1) / (f + 1)``, the series in ``s**2`` to 1 ulp.
    sincos(2 pi u): ``k = rint(4u)``, ``t = (4u - k) * pi/2`` (exact reduction, ``|t| <= pi/4``),
    Taylor series of sin and cos in ``t``, then the quadrant ``k mod 4``.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "AUX",
    "BIASES",
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

_MASK = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)

Words = tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[np.uint64], NDArray[np.uint64]]


def philox4x32(counter: Words, key: tuple[np.uint64, np.uint64], rounds: int = 10) -> Words:
    """Philox4x32 on arrays of 32-bit words held in uint64 (so products do not wrap)."""
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


def _key(seed: int) -> tuple[np.uint64, np.uint64]:
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


def _blocks(seed: int, stream: int, layer: int, first: int, count: int) -> Words:
    """The Philox words of blocks ``first .. first + count - 1``."""
    block = np.arange(first, first + count, dtype=np.uint64)
    counter = (
        block & _MASK,
        block >> _SHIFT32,
        np.full(count, stream, dtype=np.uint64),
        np.full(count, layer, dtype=np.uint64),
    )
    return philox4x32(counter, _key(seed))


# ---- uniforms -------------------------------------------------------------------------


def _uniform53(hi: NDArray[np.uint64], lo: NDArray[np.uint64]) -> NDArray[np.float64]:
    a = (hi >> np.uint64(5)).astype(np.float64)
    b = (lo >> np.uint64(6)).astype(np.float64)
    return (a * 67108864.0 + b) * 2.0**-53


def _uniform24(word: NDArray[np.uint64]) -> NDArray[np.float32]:
    return (word >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)


def _block_uniforms(words: Words, dtype: np.dtype) -> list[NDArray]:
    if dtype == np.float64:
        return [_uniform53(words[0], words[1]), _uniform53(words[2], words[3])]
    return [_uniform24(w) for w in words]


# ---- log and sincos: the exact operation sequences the kernels follow ------------------

# fmt: off
_LOG_C64 = [float.fromhex(h) for h in (
    "0x1.5555555555555p-2", "0x1.999999999999ap-3", "0x1.2492492492492p-3",
    "0x1.c71c71c71c71cp-4", "0x1.745d1745d1746p-4", "0x1.3b13b13b13b14p-4",
    "0x1.1111111111111p-4", "0x1.e1e1e1e1e1e1ep-5", "0x1.af286bca1af28p-5",
    "0x1.8618618618618p-5",
)]  # 1/3, 1/5, ..., 1/21
_SIN_C64 = [float.fromhex(h) for h in (
    "-0x1.5555555555555p-3", "0x1.1111111111111p-7", "-0x1.a01a01a01a01ap-13",
    "0x1.71de3a556c734p-19", "-0x1.ae64567f544e4p-26", "0x1.6124613a86d09p-33",
    "-0x1.ae7f3e733b81fp-41", "0x1.952c77030ad4ap-49",
)]  # (-1)^k / (2k+1)!, k = 1..8
_COS_C64 = [float.fromhex(h) for h in (
    "-0x1.0000000000000p-1", "0x1.5555555555555p-5", "-0x1.6c16c16c16c17p-10",
    "0x1.a01a01a01a01ap-16", "-0x1.27e4fb7789f5cp-22", "0x1.1eed8eff8d898p-29",
    "-0x1.93974a8c07c9dp-37", "0x1.ae7f3e733b81fp-45", "-0x1.6827863b97d97p-53",
)]  # (-1)^k / (2k)!, k = 1..9
# fmt: on
_LOG_C32 = _LOG_C64[:5]
_SIN_C32 = _SIN_C64[:5]
_COS_C32 = _COS_C64[:5]

# ln 2 split so that e * LN2_HI is exact for |e| < 2**11 (float64) or 2**8 (float32)
_LN2_HI64 = float.fromhex("0x1.62e42feep-1")
_LN2_LO64 = float.fromhex("0x1.a39ef35793c76p-33")
_LN2_HI32 = float.fromhex("0x1.62ep-1")
_LN2_LO32 = float.fromhex("0x1.0bfbe8p-15")
_PIO2_64 = float.fromhex("0x1.921fb54442d18p+0")
_PIO2_32 = float.fromhex("0x1.921fb6p+0")


def _horner(z: NDArray, coefs: list[float], dtype: np.dtype) -> NDArray:
    """``1 + z * (c[0] + z * (c[1] + ...))``, each step rounded in ``dtype``."""
    t = dtype.type
    p = np.full_like(z, t(coefs[-1]))
    for c in reversed(coefs[:-1]):
        p = p * z + t(c)
    return p * z + t(1.0)


def log_unit(u: NDArray) -> NDArray:
    """Natural log of ``u`` in ``(0, 1]`` (normal numbers), to about 1 ulp."""
    dtype = u.dtype
    t = dtype.type
    if dtype == np.float64:
        bits = u.view(np.uint64)
        e = (bits >> np.uint64(52)).astype(np.int64) - 1023
        f = ((bits & np.uint64(0x000FFFFFFFFFFFFF)) | np.uint64(0x3FF0000000000000)).view(
            np.float64
        )
        coefs, ln2_hi, ln2_lo, sqrt2 = _LOG_C64, _LN2_HI64, _LN2_LO64, math.sqrt(2.0)
    else:
        bits32 = u.view(np.uint32)
        e = (bits32 >> np.uint32(23)).astype(np.int32) - 127
        f = ((bits32 & np.uint32(0x007FFFFF)) | np.uint32(0x3F800000)).view(np.float32)
        coefs, ln2_hi, ln2_lo = _LOG_C32, _LN2_HI32, _LN2_LO32
        sqrt2 = float(np.float32(math.sqrt(2.0)))
    big = f > t(sqrt2)
    f = np.where(big, f * t(0.5), f)
    ef = (e + big).astype(dtype)
    s = (f - t(1.0)) / (f + t(1.0))
    log_f = t(2.0) * s * _horner(s * s, coefs, dtype)
    return ef * t(ln2_hi) + (ef * t(ln2_lo) + log_f)


def sincos_2pi(u: NDArray) -> tuple[NDArray, NDArray]:
    """``(sin(2 pi u), cos(2 pi u))`` for ``u`` in ``[0, 1)``."""
    dtype = u.dtype
    t = dtype.type
    if dtype == np.float64:
        sin_c, cos_c, pio2 = _SIN_C64, _COS_C64, _PIO2_64
    else:
        sin_c, cos_c, pio2 = _SIN_C32, _COS_C32, _PIO2_32
    v = u * t(4.0)
    k = np.rint(v)
    x = (v - k) * t(pio2)
    z = x * x
    s = x * _horner(z, sin_c, dtype)
    c = _horner(z, cos_c, dtype)
    q = k.astype(np.int64) & 3
    sin = np.where(q == 0, s, np.where(q == 1, c, np.where(q == 2, -s, -c)))
    cos = np.where(q == 0, c, np.where(q == 1, -s, np.where(q == 2, -c, s)))
    return sin, cos


def _box_muller(v: NDArray, u: NDArray) -> tuple[NDArray, NDArray]:
    t = v.dtype.type
    r = np.sqrt(t(-2.0) * log_unit(t(1.0) - v))
    sin, cos = sincos_2pi(u)
    return r * cos, r * sin


# ---- public draws -----------------------------------------------------------------------


def _draw(kind: str, seed: int, stream: int, layer: int, start: int, count: int, dtype) -> NDArray:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if count == 0:
        return np.empty(0, dtype=dtype)
    per_block = 2 if dtype == np.float64 else 4
    first = start // per_block
    last = (start + count - 1) // per_block
    words = _blocks(seed, stream, layer, first, last - first + 1)
    us = _block_uniforms(words, dtype)
    if kind == "uniform":
        values = us
    else:
        values = []
        for v, u in zip(us[0::2], us[1::2], strict=True):
            values.extend(_box_muller(v, u))
    out = np.stack(values, axis=1).reshape(-1)  # element per_block*b + j
    offset = start - first * per_block
    return out[offset : offset + count]


def normal(
    seed: int, stream: int, layer: int, start: int, count: int, dtype: object = np.float64
) -> NDArray:
    """Standard normals ``start .. start + count - 1`` of one stream."""
    with np.errstate(all="ignore"):
        return _draw("normal", seed, stream, layer, start, count, dtype)


def uniform(
    seed: int, stream: int, layer: int, start: int, count: int, dtype: object = np.float64
) -> NDArray:
    """Uniforms on ``[0, 1)``, elements ``start .. start + count - 1`` of one stream."""
    return _draw("uniform", seed, stream, layer, start, count, dtype)
