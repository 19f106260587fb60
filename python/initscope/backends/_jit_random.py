"""The counter-based generator of :mod:`initscope.random`, in Numba, bit for bit.

Scalar transcriptions of ``random.philox4x32``, ``_uniform53``, ``_uniform24``,
``log_unit``, ``sincos_2pi`` and ``_box_muller``: the same operations in the same order,
each rounded once in the array's dtype.  The polynomial coefficients and the split
constants are read from :mod:`initscope.random` itself, so the two cannot drift apart.

Numba typing traps this module avoids: a ``uint64`` mixed with a Python ``int`` becomes
``float64``, so every integer constant is a typed ``np.uint64``; a ``float32`` mixed with a
Python ``float`` becomes ``float64``, so the float32 path uses ``np.float32`` constants
only.  No ``fastmath``: LLVM must not fuse a multiply and an add.  ``rint`` is the
round-to-nearest-even of adding ``1.5 * 2**52`` (``2**23`` in float32), exact for the
arguments here, as in the C++ kernel.

Imported only by the numba backend (``initscope.backends.jitted``).
"""

from __future__ import annotations

import os

import numba
import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, types
from numba.extending import intrinsic, overload

from .. import random as _spec

__all__ = [
    "SEGMENT",
    "as_bits",
    "draw_args",
    "draw_segment",
    "fill_normal",
    "fill_uniform",
    "fill_with",
    "from_bits",
    "next_job",
    "parallel_allowed",
    "philox4x32",
    "philox_block",
]

# ---- bit casts ---------------------------------------------------------------------------


@intrinsic
def as_bits(typingctx, x):
    """The bits of a float64 as uint64, of a float32 as uint32."""
    if x == types.float64:
        sig = types.uint64(x)
    elif x == types.float32:
        sig = types.uint32(x)
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(signature.args[0].bitwidth))

    return sig, codegen


@intrinsic
def from_bits(typingctx, bits, like):
    """The float of the dtype of ``like`` whose bits are the low bits of integer ``bits``."""
    if not isinstance(bits, types.Integer) or like not in (types.float32, types.float64):
        return None
    sig = like(bits, like)

    def codegen(context, builder, signature, args):
        width = signature.return_type.bitwidth
        value = args[0]
        if signature.args[0].bitwidth > width:
            value = builder.trunc(value, ir.IntType(width))
        elif signature.args[0].bitwidth < width:
            value = builder.zext(value, ir.IntType(width))
        return builder.bitcast(value, context.get_value_type(signature.return_type))

    return sig, codegen


@intrinsic
def next_job(typingctx, counter):
    """``counter[0]++`` atomically (its old value).

    A ``prange`` over one worker per thread, whose workers take jobs in order as they
    finish (as OpenMP's ``schedule(dynamic, 1)`` hands them out): numba's own scheduling
    gives each thread one contiguous block of iterations, fixed in advance.
    """
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None
    sig = types.int64(counter)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        one = ir.Constant(ir.IntType(64), 1)
        return builder.atomic_rmw("add", array.data, one, "monotonic")

    return sig, codegen


# ---- fork safety --------------------------------------------------------------------------

_forked_after_openmp = False


def _after_fork_in_child() -> None:
    """GNU OpenMP cannot run in a process forked after it ran (numba's omp layer kills the
    child): there, the kernels run serially.  Other layers (tbb, workqueue) are fork-safe."""
    global _forked_after_openmp
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel ran before the fork: the child may launch one
        return
    _forked_after_openmp = _forked_after_openmp or layer == "omp"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def parallel_allowed() -> bool:
    """False in a process forked after numba's OpenMP threads ran."""
    return not _forked_after_openmp


# ---- Philox4x32-10 -----------------------------------------------------------------------

_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_M0 = np.uint64(_spec._M0)
_M1 = np.uint64(_spec._M1)
_W0 = np.uint64(_spec._W0)
_W1 = np.uint64(_spec._W1)
_ZERO_U64 = np.uint64(0)
_ONE_U64 = np.uint64(1)
_TWO_U64 = np.uint64(2)
_THREE_U64 = np.uint64(3)


@njit(inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Ten rounds on 32-bit words held in uint64 (random.philox4x32)."""
    for r in range(10):
        if r:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> _S32) ^ c1 ^ k0,
            p1 & _MASK,
            (p0 >> _S32) ^ c3 ^ k1,
            p0 & _MASK,
        )
    return c0, c1, c2, c3


@njit(inline="always")
def philox_block(block, stream, layer, k0, k1):
    """The four words of block ``block`` (uint64) of ``(stream, layer)`` (random._blocks)."""
    return philox4x32(block & _MASK, block >> _S32, stream, layer, k0, k1)


# ---- uniforms ----------------------------------------------------------------------------

_SH5 = np.uint64(5)
_SH6 = np.uint64(6)
_SH8 = np.uint64(8)
_2P26 = 67108864.0
_2M53 = 2.0**-53
_2M24_F32 = np.float32(2.0**-24)


@njit(inline="always")
def uniform53(hi, lo):
    """random._uniform53: ``(a * 2**26 + b) * 2**-53``; a and b fit int32 exactly."""
    a = np.float64(np.int32(hi >> _SH5))
    b = np.float64(np.int32(lo >> _SH6))
    return (a * _2P26 + b) * _2M53


@njit(inline="always")
def uniform24(word):
    """random._uniform24: ``(w >> 8) * 2**-24`` in float32."""
    return np.float32(np.int32(word >> _SH8)) * _2M24_F32


# ---- log and sincos ----------------------------------------------------------------------

_LOG_C64 = tuple(_spec._LOG_C64)
_SIN_C64 = tuple(_spec._SIN_C64)
_COS_C64 = tuple(_spec._COS_C64)
_LOG_C32 = tuple(np.float32(c) for c in _spec._LOG_C32)
_SIN_C32 = tuple(np.float32(c) for c in _spec._SIN_C32)
_COS_C32 = tuple(np.float32(c) for c in _spec._COS_C32)

_LN2_HI64 = _spec._LN2_HI64
_LN2_LO64 = _spec._LN2_LO64
_LN2_HI32 = np.float32(_spec._LN2_HI32)
_LN2_LO32 = np.float32(_spec._LN2_LO32)
_PIO2_64 = _spec._PIO2_64
_PIO2_32 = np.float32(_spec._PIO2_32)
_SQRT2_64 = float(np.sqrt(2.0))
_SQRT2_32 = np.float32(np.sqrt(2.0))

_ONE32 = np.float32(1.0)
_TWO32 = np.float32(2.0)
_HALF32 = np.float32(0.5)
_FOUR32 = np.float32(4.0)
_MTWO32 = np.float32(-2.0)
_MAGIC64 = float.fromhex("0x1.8p52")
_MAGIC32 = np.float32(float.fromhex("0x1.8p23"))

_EXP_SHIFT64 = np.uint64(52)
_EXP_BIAS64 = np.int64(1023)
_MANT64 = np.uint64(0x000FFFFFFFFFFFFF)
_ONE_BITS64 = np.uint64(0x3FF0000000000000)
_EXP_SHIFT32 = np.uint32(23)
_EXP_BIAS32 = np.int32(127)
_MANT32 = np.uint32(0x007FFFFF)
_ONE_BITS32 = np.uint32(0x3F800000)
_QUADRANT = np.uint64(3)


@njit(inline="always")
def _horner(z, coefs, one):
    """random._horner: ``1 + z * (c[0] + z * (c[1] + ...))``, each step rounded."""
    n = len(coefs)
    p = coefs[n - 1]
    for i in range(n - 2, -1, -1):
        p = p * z + coefs[i]
    return p * z + one


@njit(inline="always")
def log_unit64(u):
    """random.log_unit for a float64 in (0, 1]."""
    bits = as_bits(u)
    e = np.int64(bits >> _EXP_SHIFT64) - _EXP_BIAS64
    f = from_bits((bits & _MANT64) | _ONE_BITS64, u)
    big = f > _SQRT2_64
    if big:
        f = f * 0.5
    ef = np.float64(e + np.int64(big))
    s = (f - 1.0) / (f + 1.0)
    log_f = 2.0 * s * _horner(s * s, _LOG_C64, 1.0)
    return ef * _LN2_HI64 + (ef * _LN2_LO64 + log_f)


@njit(inline="always")
def log_unit32(u):
    """random.log_unit for a float32 in (0, 1]."""
    bits = as_bits(u)
    e = np.int32(bits >> _EXP_SHIFT32) - _EXP_BIAS32
    f = from_bits((bits & _MANT32) | _ONE_BITS32, u)
    big = f > _SQRT2_32
    if big:
        f = f * _HALF32
    ef = np.float32(e + np.int32(big))
    s = (f - _ONE32) / (f + _ONE32)
    log_f = _TWO32 * s * _horner(s * s, _LOG_C32, _ONE32)
    return ef * _LN2_HI32 + (ef * _LN2_LO32 + log_f)


@njit(inline="always")
def _quadrant(shifted):
    """``rint(v) & 3`` from ``v + 1.5 * 2**p``: the low bits of its mantissa."""
    return np.uint64(as_bits(shifted)) & _QUADRANT


_ODD = np.uint64(1)
_NEGATE = np.uint64(2)


@njit(inline="always")
def _rotate(s, c, q):
    """``(sin, cos)`` of ``t + q pi / 2`` from ``s = sin t``, ``c = cos t`` (q mod 4)."""
    odd = (q & _ODD) != _ZERO_U64
    neg = (q & _NEGATE) != _ZERO_U64
    a = c if odd else s
    b = -s if odd else c
    return (-a if neg else a), (-b if neg else b)


@njit(inline="always")
def sincos_2pi64(u):
    """random.sincos_2pi for a float64 in [0, 1)."""
    v = u * 4.0
    shifted = v + _MAGIC64
    k = shifted - _MAGIC64  # np.rint(v)
    x = (v - k) * _PIO2_64
    z = x * x
    s = x * _horner(z, _SIN_C64, 1.0)
    c = _horner(z, _COS_C64, 1.0)
    return _rotate(s, c, _quadrant(shifted))


@njit(inline="always")
def sincos_2pi32(u):
    """random.sincos_2pi for a float32 in [0, 1)."""
    v = u * _FOUR32
    shifted = v + _MAGIC32
    k = shifted - _MAGIC32
    x = (v - k) * _PIO2_32
    z = x * x
    s = x * _horner(z, _SIN_C32, _ONE32)
    c = _horner(z, _COS_C32, _ONE32)
    return _rotate(s, c, _quadrant(shifted))


@njit(inline="always")
def box_muller64(v, u):
    """random._box_muller: ``(r cos 2 pi u, r sin 2 pi u)``, ``r = sqrt(-2 log(1 - v))``."""
    r = np.sqrt(-2.0 * log_unit64(1.0 - v))
    sin, cos = sincos_2pi64(u)
    return r * cos, r * sin


@njit(inline="always")
def box_muller32(v, u):
    r = np.sqrt(_MTWO32 * log_unit32(_ONE32 - v))
    sin, cos = sincos_2pi32(u)
    return r * cos, r * sin


# ---- filling arrays ----------------------------------------------------------------------

#: Elements drawn per parallel job.
SEGMENT = 1 << 16


@njit(inline="always")
def _block_values64(block, stream, layer, k0, k1, normal):
    w0, w1, w2, w3 = philox_block(np.uint64(block), stream, layer, k0, k1)
    v = uniform53(w0, w1)
    u = uniform53(w2, w3)
    if normal:
        return box_muller64(v, u)
    return v, u


@njit(inline="always")
def _block_values32(block, stream, layer, k0, k1, normal):
    w0, w1, w2, w3 = philox_block(np.uint64(block), stream, layer, k0, k1)
    u0 = uniform24(w0)
    u1 = uniform24(w1)
    u2 = uniform24(w2)
    u3 = uniform24(w3)
    if normal:
        a, b = box_muller32(u0, u1)
        c, d = box_muller32(u2, u3)
        return a, b, c, d
    return u0, u1, u2, u3


@njit(error_model="numpy")
def _head_tail64(out, b, lo, hi, normal, k0, k1, stream, layer, start, scale, shift):
    """The values of block ``b`` that lie in ``[lo, hi)`` (a block cut by a segment's ends).

    Not inlined: a few values per segment, so compiled once rather than vectorised twice.
    """
    z0, z1 = _block_values64(b, stream, layer, k0, k1, normal)
    if lo <= 2 * b < hi:
        out[2 * b - start] = z0 * scale + shift
    if lo <= 2 * b + 1 < hi:
        out[2 * b + 1 - start] = z1 * scale + shift


@njit(error_model="numpy")
def _head_tail32(out, b, lo, hi, normal, k0, k1, stream, layer, start, scale, shift):
    values = _block_values32(b, stream, layer, k0, k1, normal)
    for j in range(4):
        e = 4 * b + j
        if lo <= e < hi:
            out[e - start] = values[j] * scale + shift


@njit(inline="always")
def _segment64(out, job, normal, k0, k1, stream, layer, start, scale, shift):
    """Elements ``[lo, hi)`` of job ``job``: ``value * scale + shift`` in float64."""
    lo = start + job * SEGMENT
    hi = min(start + out.size, lo + SEGMENT)
    first = (lo + 1) // 2  # blocks [first, last) lie inside [lo, hi)
    last = hi // 2
    if lo % 2:
        _head_tail64(out, lo // 2, lo, hi, normal, k0, k1, stream, layer, start, scale, shift)
    for b in range(first, last):
        z0, z1 = _block_values64(b, stream, layer, k0, k1, normal)
        i = np.uint64(2 * b - start)  # unsigned: no negative-index wraparound, which
        out[i] = z0 * scale + shift  # would keep LLVM from vectorizing the loop
        out[i + _ONE_U64] = z1 * scale + shift
    if hi % 2 and hi // 2 >= first:  # (a block cut at both ends was done above)
        _head_tail64(out, hi // 2, lo, hi, normal, k0, k1, stream, layer, start, scale, shift)


@njit(inline="always")
def _segment32(out, job, normal, k0, k1, stream, layer, start, scale, shift):
    """As :func:`_segment64`, four values per block, in float32."""
    lo = start + job * SEGMENT
    hi = min(start + out.size, lo + SEGMENT)
    first = (lo + 3) // 4  # blocks [first, last) lie inside [lo, hi)
    last = hi // 4
    if lo % 4:
        _head_tail32(out, lo // 4, lo, hi, normal, k0, k1, stream, layer, start, scale, shift)
    for b in range(first, last):
        a0, a1, a2, a3 = _block_values32(b, stream, layer, k0, k1, normal)
        i = np.uint64(4 * b - start)
        out[i] = a0 * scale + shift
        out[i + _ONE_U64] = a1 * scale + shift
        out[i + _TWO_U64] = a2 * scale + shift
        out[i + _THREE_U64] = a3 * scale + shift
    if hi % 4 and hi // 4 >= first:
        _head_tail32(out, hi // 4, lo, hi, normal, k0, k1, stream, layer, start, scale, shift)


# One job function per (dtype, kind), so that LLVM sees a constant kind and vectorises the
# loops; not inlined, so each is compiled once and shared by the kernels that call it.


@njit(error_model="numpy")
def _normal64_job(out, job, k0, k1, stream, layer, start, scale, shift):
    _segment64(out, job, True, k0, k1, stream, layer, start, scale, shift)


@njit(error_model="numpy")
def _uniform64_job(out, job, k0, k1, stream, layer, start, scale, shift):
    _segment64(out, job, False, k0, k1, stream, layer, start, scale, shift)


@njit(error_model="numpy")
def _normal32_job(out, job, k0, k1, stream, layer, start, scale, shift):
    _segment32(out, job, True, k0, k1, stream, layer, start, scale, shift)


@njit(error_model="numpy")
def _uniform32_job(out, job, k0, k1, stream, layer, start, scale, shift):
    _segment32(out, job, False, k0, k1, stream, layer, start, scale, shift)


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _normal64(out, workers, k0, k1, stream, layer, start, scale, shift):
    jobs = (out.size + SEGMENT - 1) // SEGMENT
    counter = np.zeros(1, dtype=np.int64)
    for _ in prange(min(workers, jobs)):
        job = next_job(counter)
        while job < jobs:
            _normal64_job(out, job, k0, k1, stream, layer, start, scale, shift)
            job = next_job(counter)


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _uniform64(out, workers, k0, k1, stream, layer, start, scale, shift):
    jobs = (out.size + SEGMENT - 1) // SEGMENT
    counter = np.zeros(1, dtype=np.int64)
    for _ in prange(min(workers, jobs)):
        job = next_job(counter)
        while job < jobs:
            _uniform64_job(out, job, k0, k1, stream, layer, start, scale, shift)
            job = next_job(counter)


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _normal32(out, workers, k0, k1, stream, layer, start, scale, shift):
    jobs = (out.size + SEGMENT - 1) // SEGMENT
    counter = np.zeros(1, dtype=np.int64)
    for _ in prange(min(workers, jobs)):
        job = next_job(counter)
        while job < jobs:
            _normal32_job(out, job, k0, k1, stream, layer, start, scale, shift)
            job = next_job(counter)


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _uniform32(out, workers, k0, k1, stream, layer, start, scale, shift):
    jobs = (out.size + SEGMENT - 1) // SEGMENT
    counter = np.zeros(1, dtype=np.int64)
    for _ in prange(min(workers, jobs)):
        job = next_job(counter)
        while job < jobs:
            _uniform32_job(out, job, k0, k1, stream, layer, start, scale, shift)
            job = next_job(counter)


@njit(nogil=True, cache=True, error_model="numpy")
def _serial(out, normal, k0, k1, stream, layer, start, scale, shift):
    """The fill on the calling thread alone (in a process forked after OpenMP ran)."""
    for job in range((out.size + SEGMENT - 1) // SEGMENT):
        draw_segment(out, job, normal, k0, k1, stream, layer, start, scale, shift)


_KERNELS = {
    (True, "float64"): _normal64,
    (False, "float64"): _uniform64,
    (True, "float32"): _normal32,
    (False, "float32"): _uniform32,
}


def draw_segment(out, job, normal, k0, k1, stream, layer, start, scale, shift):
    """Job ``job`` of a fill of ``out`` (its elements ``job * SEGMENT ..``), in jitted code.

    For kernels that draw between other work (the layer kernel draws the next layer's
    weights); the arguments after ``normal`` are those :func:`draw_args` makes.
    """
    raise NotImplementedError("draw_segment is called from jitted code only")


@overload(draw_segment, jit_options={"error_model": "numpy"})
def _draw_segment(out, job, normal, k0, k1, stream, layer, start, scale, shift):
    jobs = {
        types.float64: (_normal64_job, _uniform64_job),
        types.float32: (_normal32_job, _uniform32_job),
    }.get(out.dtype)
    if jobs is None:
        return None
    normal_job, uniform_job = jobs

    def impl(out, job, normal, k0, k1, stream, layer, start, scale, shift):
        if normal:
            normal_job(out, job, k0, k1, stream, layer, start, scale, shift)
        else:
            uniform_job(out, job, k0, k1, stream, layer, start, scale, shift)

    return impl


def draw_args(seed, stream, layer, start, scale, shift, dtype) -> tuple:
    """``(k0, k1, stream, layer, start, scale, shift)`` typed for the kernels.

    The key is the seed's two 32-bit words; ``value * scale + shift`` is rounded in the
    dtype, and ``scale=None`` / ``shift=None`` leave the values as they are.
    """
    t = np.dtype(dtype).type
    return (
        np.uint64(seed & 0xFFFFFFFF),
        np.uint64(seed >> 32),
        np.uint64(stream),
        np.uint64(layer),
        np.int64(start),
        t(1.0 if scale is None else scale),
        t(-0.0 if shift is None else shift),  # x + -0.0 == x for every x, -0.0 included
    )


def fill_with(out, normal: bool, args: tuple) -> None:
    """Fills ``out`` with normals or uniforms, ``args`` as :func:`draw_args` makes them."""
    if out.size == 0:
        return
    if out.dtype not in (np.float32, np.float64) or not out.flags.c_contiguous:
        raise ValueError(f"the generator fills contiguous float arrays, got {out.dtype}")
    if not parallel_allowed():
        _serial(out.reshape(-1), normal, *args)
        return
    # the thread count read here: numba's get_num_threads in a kernel would not be cacheable
    _KERNELS[normal, out.dtype.name](out.reshape(-1), get_num_threads(), *args)


def _fill(out, normal, seed, stream, layer, start, scale, shift) -> None:
    fill_with(out, normal, draw_args(seed, stream, layer, start, scale, shift, out.dtype))


def fill_normal(out, seed, stream, layer, start=0, scale=None, shift=None) -> None:
    """``out.flat[i] = random.normal(seed, stream, layer, start, out.size)[i]``, in place.

    With ``scale`` (and ``shift``), ``z * scale (+ shift)`` rounded in the dtype, as
    ``schemes.draw`` and the reference's biases compute it.
    """
    _fill(out, True, seed, stream, layer, start, scale, shift)


def fill_uniform(out, seed, stream, layer, start=0, scale=None, shift=None) -> None:
    """``out.flat[i] = random.uniform(seed, stream, layer, start, out.size)[i]``, in place."""
    _fill(out, False, seed, stream, layer, start, scale, shift)
