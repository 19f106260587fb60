"""The Numba backend: the C++ kernel's fused layer loop, for machines without a compiler.

Imported only when the ``numba`` backend is asked for (or detected by "auto"), so
``import initscope`` never imports numba.  It follows the C++ kernel
(``cpp/include/initscope/propagate.hpp``) step for step and gives the same numbers, bit for
bit (``tests/test_numba.py`` checks it wherever the extension is built):

- Samples go through all layers in chunks of ``plan.chunk_size`` rows, looped over in
  Python, so Ctrl-C surfaces between kernel calls; memory is O(width² + chunk·width).
- Inputs, weights and biases come from :mod:`._jit_random`, bit for bit
  :mod:`initscope.random`.
- Each chunk's rows are cut into tiles of 240 samples fixed by the sample index (not by the
  chunk or the thread count).  One worker per thread takes tiles in order as it finishes
  (an atomic counter: numba's ``prange`` alone hands each thread a fixed block) and runs,
  per tile, a single-threaded GEMM (``cblas_?gemm`` of the ``scipy-openblas32`` wheel, the
  C++ kernel's OpenBLAS) on rows aligned to 48 samples, then, while the tile is in cache,
  the bias, the activation and every statistic.  Workers that run out of tiles draw the
  next layer's weights.  The tiles' partial statistics are merged in tile order, so results
  are bit-identical for any number of threads, and equal to rounding for any chunk size.
- The activations are the C++ kernel's (``activations.hpp``): the formulas of
  :mod:`initscope.activations`, evaluated with vectorisable exp/expm1 polynomials, within
  4 ulp of the correctly rounded values.

Every kernel is ``@njit(nogil=True, cache=True)``: compiled on first use (about 25 s per
dtype on a 2-core machine) and cached on disk (``__pycache__`` next to this file, or
``NUMBA_CACHE_DIR``), so later processes load it in about a second.  Numba's cache checks
only the source file of the kernel it loads, and ``_layer`` compiles in the generator's job
functions of ``_jit_random.py``: after editing that file alone, clear the cache
(installing replaces both files, which invalidates both).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading
from functools import cache

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .. import random as _random
from ..activations import ACTIVATIONS
from ..plan import TILE_ROWS, WEIGHT_CACHE_BYTES, Plan
from ..result import RawStats
from ._jit_random import (
    _LOG_C64,
    SEGMENT,
    _horner,
    as_bits,
    draw_args,
    draw_segment,
    fill_normal,
    fill_with,
    from_bits,
    next_job,
    parallel_allowed,
)

__all__ = ["activate", "check_available", "run"]

_MIN_NUMBA = (0, 59)


def check_available() -> None:
    """Raise ImportError if numba is missing or too old."""
    version = tuple(int(p) for p in numba.__version__.split(".")[:2] if p.isdigit())
    if version < _MIN_NUMBA:
        raise ImportError(
            f"numba {numba.__version__} is too old: pip install 'initscope[numba]' (numba>=0.59)"
        )


# ---- BLAS ---------------------------------------------------------------------------------

_ROW_MAJOR, _NO_TRANS = 101, 111


@cache
def _blas() -> tuple[int, int]:
    """Addresses of ``cblas_dgemm`` and ``cblas_sgemm`` of scipy-openblas32, or (0, 0).

    That OpenBLAS is initscope's own (NumPy bundles another): its thread count is set to 1,
    as the C++ kernel does, because each of our threads runs its own GEMM.
    """
    try:
        import scipy_openblas32

        path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True))
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        lib.scipy_openblas_set_num_threads(1)
        return (
            ctypes.cast(lib.scipy_cblas_dgemm, ctypes.c_void_p).value or 0,
            ctypes.cast(lib.scipy_cblas_sgemm, ctypes.c_void_p).value or 0,
        )
    except (ImportError, OSError, AttributeError):  # pragma: no cover - wheel missing
        return 0, 0


@intrinsic
def _gemm(typingctx, address, a, a_row, b, c, c_row, rows):
    """``c[c_row : c_row + rows] = a[a_row : a_row + rows] @ b`` by the cblas gemm at ``address``.

    ``a``, ``b``, ``c`` are C-contiguous 2-D arrays of one float dtype.  Calling a function
    pointer given as an integer keeps the kernels cacheable (no ctypes object is frozen in).
    """
    dtype = a.dtype
    if not (b.dtype == dtype == c.dtype and dtype in (types.float32, types.float64)):
        return None
    sig = types.void(address, a, a_row, b, c, c_row, rows)

    def codegen(context, builder, signature, args):
        addr, a_val, a_row_val, b_val, c_val, c_row_val, rows_val = args
        fty = context.get_value_type(dtype)
        i32 = ir.IntType(32)
        arr_a = context.make_array(signature.args[1])(context, builder, a_val)
        arr_b = context.make_array(signature.args[3])(context, builder, b_val)
        arr_c = context.make_array(signature.args[4])(context, builder, c_val)
        k = builder.extract_value(arr_a.shape, 1)
        n = builder.extract_value(arr_b.shape, 1)
        ldc = builder.extract_value(arr_c.shape, 1)
        pa = builder.gep(arr_a.data, [builder.mul(a_row_val, k)])
        pc = builder.gep(arr_c.data, [builder.mul(c_row_val, ldc)])
        ptr = fty.as_pointer()
        fnty = ir.FunctionType(
            ir.VoidType(),
            [i32, i32, i32, i32, i32, i32, fty, ptr, i32, ptr, i32, fty, ptr, i32],
        )
        fn = builder.inttoptr(addr, fnty.as_pointer())

        def i(v):
            return builder.trunc(v, i32)

        def const(v):
            return ir.Constant(i32, v)

        builder.call(
            fn,
            [
                const(_ROW_MAJOR), const(_NO_TRANS), const(_NO_TRANS),
                i(rows_val), i(n), i(k), ir.Constant(fty, 1.0), pa, i(k),
                arr_b.data, i(n), ir.Constant(fty, 0.0), pc, i(ldc),
            ],
        )  # fmt: skip
        return context.get_dummy_value()

    return sig, codegen


# ---- the activations (activations.hpp) ----------------------------------------------------


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (for exact products only, never as a contraction)."""
    if not (a == b == c == types.float64):
        return None
    sig = types.float64(a, b, c)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.DoubleType(), [ir.DoubleType()] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.f64")
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _madd(typingctx, a, b, c):
    """``a * b + c``, fused where the CPU has FMA (LLVM's fmuladd), as the C++ kernel's
    ``madd``: the activation polynomials only; the generator never fuses."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None
    sig = a(a, b, c)

    def codegen(context, builder, signature, args):
        fty = context.get_value_type(signature.return_type)
        name = "llvm.fmuladd.f64" if signature.return_type == types.float64 else "llvm.fmuladd.f32"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty] * 3), name)
        return builder.call(fn, args)

    return sig, codegen


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
_LN2_HI64 = _hex("0x1.62e42feep-1")  # 33 bits: k * ln2_hi exact for |k| < 2**20
_LN2_LO64 = _hex("0x1.a39ef35793c76p-33")
_MAGIC64 = _hex("0x1.8p52")
_INV_LN2_32 = _F32(_hex("0x1.715476p+0"))
_LN2_HI32 = _F32(_hex("0x1.62e4p-1"))  # 17 bits: k * ln2_hi exact for |k| < 2**7
_LN2_LO32 = _F32(_hex("0x1.7f7d1cp-20"))
_MAGIC32 = _F32(_hex("0x1.8p23"))
_TANH_CAP64, _TANH_CAP32 = 20.0, _F32(10.0)  # tanh rounds to 1 beyond 19.1 / 9.02
_EXP_MIN64, _EXP_MIN32 = -760.0, _F32(-110.0)  # exp underflows to 0 below -745.2 / -103.9
_DEEP64, _DEEP32 = -1000.0, _F32(-120.0)  # 2**k below the normal range: scale twice
_DEEP_SHIFT64, _DEEP_SHIFT32 = 200.0, _F32(64.0)
_DEEP_SCALE64, _DEEP_SCALE32 = 2.0**-200, _F32(2.0**-64)
_ONE32, _TWO32, _ZERO32 = _F32(1.0), _F32(2.0), _F32(0.0)
_BIAS64, _SHIFT64 = np.uint64(1023), np.uint64(52)
_BIAS32, _SHIFT32 = np.uint64(127), np.uint64(23)

#: The largest -s for which the reference's 1 / (1 + exp(-s)) does not overflow, per dtype:
#: beyond it the reference's sigmoid is exactly 0, and so is ours (zero counts agree).
SIGMOID_FLUSH64 = _hex("0x1.62e42fefa39efp+9")  # log(DBL_MAX)
SIGMOID_FLUSH32 = _hex("0x1.62e42ep+6")  # the largest float below log(FLT_MAX)
_ZERO_BELOW32 = _F32(-SIGMOID_FLUSH32)

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
    return k, _madd(-k, _LN2_LO64, x - k * _LN2_HI64)  # k * ln2_hi and the subtraction: exact


@njit(inline="always", error_model="numpy")
def _reduce32(x):
    k = (x * _INV_LN2_32 + _MAGIC32) - _MAGIC32
    return k, _madd(-k, _LN2_LO32, x - k * _LN2_HI32)


@njit(inline="always", error_model="numpy")
def _expm1_poly(r, coefs):
    """expm1(r) for |r| <= ln2 / 2: r + r^2 (1/2! + r (1/3! + ...))."""
    n = len(coefs)
    q = coefs[n - 1]
    for i in range(n - 2, -1, -1):
        q = _madd(q, r, coefs[i])
    return _madd(r * r, q, r)


@njit(inline="always", error_model="numpy")
def _expm1_bounded64(x):
    """expm1(x) for |x| <= 60 (callers clamp)."""
    k, r = _reduce64(x)
    p = _expm1_poly(r, _INV_FACT64)
    s = _pow2i64(k)
    return _madd(s, p, s - 1.0)


@njit(inline="always", error_model="numpy")
def _expm1_bounded32(x):
    k, r = _reduce32(x)
    p = _expm1_poly(r, _INV_FACT32)
    s = _pow2i32(k)
    return _madd(s, p, s - _ONE32)


@njit(inline="always", error_model="numpy")
def _exp_nonpositive64(x):
    """exp(x) for exp_min <= x <= 0 (callers clamp), subnormal results rounded once."""
    k, r = _reduce64(x)
    m = 1.0 + _expm1_poly(r, _INV_FACT64)
    deep = k < _DEEP64
    k1 = k + _DEEP_SHIFT64 if deep else k
    s2 = _DEEP_SCALE64 if deep else 1.0
    return (m * _pow2i64(k1)) * s2


@njit(inline="always", error_model="numpy")
def _exp_nonpositive32(x):
    k, r = _reduce32(x)
    m = _ONE32 + _expm1_poly(r, _INV_FACT32)
    deep = k < _DEEP32
    k1 = k + _DEEP_SHIFT32 if deep else k
    s2 = _DEEP_SCALE32 if deep else _ONE32
    return (m * _pow2i32(k1)) * s2


@njit(inline="always", error_model="numpy")
def _tanh64(x):
    ax = abs(x)
    t = ax if ax < _TANH_CAP64 else _TANH_CAP64
    e = _expm1_bounded64(t + t)  # tanh|x| = e / (e + 2), e = expm1(2|x|)
    y = math.copysign(e / (e + 2.0), x)
    return x if x != x else y


@njit(inline="always", error_model="numpy")
def _tanh32(x):
    ax = abs(x)
    t = ax if ax < _TANH_CAP32 else _TANH_CAP32
    e = _expm1_bounded32(t + t)
    y = math.copysign(e / (e + _TWO32), x)
    return x if x != x else y


@njit(inline="always", error_model="numpy")
def _sigmoid64(x):
    t = -abs(x)
    t = t if t > _EXP_MIN64 else _EXP_MIN64
    e = _exp_nonpositive64(t)  # exp(-|x|): never overflows
    num = 1.0 if x >= 0.0 else e
    y = num / (1.0 + e)
    return x if x != x else (0.0 if x < -SIGMOID_FLUSH64 else y)


@njit(inline="always", error_model="numpy")
def _sigmoid32(x):
    t = -abs(x)
    t = t if t > _EXP_MIN32 else _EXP_MIN32
    e = _exp_nonpositive32(t)
    num = _ONE32 if x >= _ZERO32 else e
    y = num / (_ONE32 + e)
    return x if x != x else (_ZERO32 if x < _ZERO_BELOW32 else y)


_SQRT2 = _hex("0x1.6a09e667f3bcdp+0")


@njit(inline="always", error_model="numpy")
def _log1p_unit(t):
    """log1p(t) for t in [0, 1]: log(1 + t) as 2 atanh(s), plus the rounding error of 1 + t."""
    u = 1.0 + t
    c = t - (u - 1.0)  # exact: the part of t that 1 + t lost
    big = u > _SQRT2
    f = u * 0.5 if big else u
    s = (f - 1.0) / (f + 1.0)
    log_f = 2.0 * s * _horner(s * s, _LOG_C64, 1.0)
    ef = 1.0 if big else 0.0
    return (ef * _LN2_HI64 + (ef * _LN2_LO64 + log_f)) + c / u


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
    m = 1.0 + _expm1_poly(r, _INV_FACT64)
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
    p = a * b
    return p, _fma(a, b, -p)


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
        arg = (1000.0 * _LN2_HI64 - 0.5 * q) + (1000.0 * _LN2_LO64 - 0.5 * qe)
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


def _tanh(x):  # typed dispatch: float32 math for float32 values, as the C++ kernel
    raise NotImplementedError


def _sigmoid(x):
    raise NotImplementedError


def _gelu(x):
    raise NotImplementedError


def _by_dtype(impl32, impl64):
    def typer(x):
        if x == types.float32:
            return lambda x: impl32(x)
        if x == types.float64:
            return lambda x: impl64(x)
        return None

    return typer


overload(_tanh, jit_options={"error_model": "numpy"})(_by_dtype(_tanh32, _tanh64))
overload(_sigmoid, jit_options={"error_model": "numpy"})(_by_dtype(_sigmoid32, _sigmoid64))
overload(_gelu, jit_options={"error_model": "numpy"})(_by_dtype(_gelu32, _gelu64))

(LINEAR, TANH, RELU, LEAKY_RELU, SIGMOID, SOFTPLUS, ELU, SELU, GELU, GELU_TANH, SILU) = (
    ACTIVATIONS.index(name)
    for name in ("linear", "tanh", "relu", "leaky_relu", "sigmoid", "softplus", "elu",
                 "selu", "gelu", "gelu_tanh", "silu")
)  # fmt: skip


@njit(error_model="numpy")
def _activate(code, slope, alpha, flush, src, dst):
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


def _activation_args(activation, dtype: np.dtype) -> tuple:
    """``(code, slope, alpha, flush)``: the parameter in the dtype, and as a float64."""
    t = dtype.type
    flush = SIGMOID_FLUSH64 if dtype == np.float64 else SIGMOID_FLUSH32
    return np.int64(activation.code), t(activation.param), float(t(activation.param)), flush


@njit(nogil=True, cache=True, error_model="numpy")
def _activate_array(code, slope, alpha, flush, x):
    out = np.empty_like(x)
    _activate(code, slope, alpha, flush, x, out)
    return out


def activate(activation, x: np.ndarray) -> np.ndarray:
    """The activation applied as the kernel applies it (for tests against the reference)."""
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {x.dtype}")
    out = _activate_array(*_activation_args(activation, x.dtype), x.reshape(-1))  # type: ignore[call-arg]
    return out.reshape(x.shape)


# ---- the fused layer kernel ---------------------------------------------------------------

#: GEMM calls start and end on multiples of 48 samples (zero rows pad the buffer), so every
#: sample meets OpenBLAS's register blocks at the same place whatever the chunk.
ROW_ALIGN = 48

# slots of the per-tile and per-layer counters
_ROWS, _BELOW, _ABOVE, _ZEROS, _SATURATED, _NONFINITE, _PRE_NONFINITE = range(7)
_COUNTERS = 7
# rows of the per-tile float64 partials
_PRE_K, _PRE_S1, _PRE_S2, _POST_K, _POST_S1, _POST_S2, _LO, _HI = range(8)
_PARTIALS = 8


@njit(error_model="numpy")
def _tile_stats(y, sb, sr, bias, act, sat_low, sat_high, hist_low, hist_high, hist_scale,
                part, counts, hist, post, index):  # fmt: skip
    """Bias, activation and statistics of rows ``[sb, sb + sr)`` of ``y``, in place.

    ``part`` (8, width) receives the shifted sums: per column, the sums of ``x - K`` and
    ``(x - K)**2`` with K the tile's first row, which stays accurate because K lies within a
    few std of the mean; and the per-column min and max over finite values.  ``hist``
    (bins + 3: the bins, below, above, NaN) and ``counts`` (7) are the tile's counters.
    The loops are split so that each touches few arrays, and all but the histogram's
    increments vectorise.
    """
    code, slope, alpha, flush = act
    width = y.shape[1]
    bins = hist.size - 3
    last = np.float64(bins - 1)
    below, above, not_a_number = np.int32(bins), np.int32(bins + 1), np.int32(bins + 2)
    pre_k, pre_s1, pre_s2 = part[_PRE_K], part[_PRE_S1], part[_PRE_S2]
    post_k, post_s1, post_s2 = part[_POST_K], part[_POST_S1], part[_POST_S2]
    lo, hi = part[_LO], part[_HI]
    for j in range(width):
        pre_s1[j] = 0.0
        pre_s2[j] = 0.0
        post_s1[j] = 0.0
        post_s2[j] = 0.0
        lo[j] = _INF
        hi[j] = -_INF
    for b in range(hist.size):
        hist[b] = 0
    zeros = saturated = nonfinite = pre_nonfinite = 0
    for r in range(sb, sb + sr):
        h_row = y[r]
        if bias.size:
            for j in range(width):
                h_row[j] = h_row[j] + bias[j]
        _activate(code, slope, alpha, flush, h_row, post)
        if r == sb:
            for j in range(width):
                pre_k[j] = np.float64(h_row[j])
                post_k[j] = np.float64(post[j])
        for j in range(width):
            h = np.float64(h_row[j])
            d = h - pre_k[j]
            pre_s1[j] += d
            pre_s2[j] += d * d
            pre_nonfinite += np.int64(not abs(h) <= _DBL_MAX)
        for j in range(width):
            d = np.float64(post[j]) - post_k[j]
            post_s1[j] += d
            post_s2[j] += d * d
        for j in range(width):
            a = np.float64(post[j])
            low_j = lo[j]
            high_j = hi[j]
            a_lo = a if a > -_INF else _INF  # NaN and -inf never lower the minimum
            a_hi = a if a < _INF else -_INF
            lo[j] = a_lo if a_lo < low_j else low_j
            hi[j] = a_hi if a_hi > high_j else high_j
            zeros += np.int64(a == 0.0)
            nonfinite += np.int64(not abs(a) <= _DBL_MAX)
            saturated += np.int64((a <= sat_low) | (a >= sat_high))  # never with NaN bounds
        for j in range(width):
            a = np.float64(post[j])
            d = (a - hist_low) * hist_scale  # the reference's floor((a - low) * scale), with
            d = d if d < last else last  # the top edge in the last bin; clamped first, so
            d = d if d > 0.0 else 0.0  # that the conversion is defined (NaN, inf, huge)
            inside = np.int32(d)  # d >= 0: truncation is floor
            outside = below if a < hist_low else (above if a > hist_high else not_a_number)
            index[j] = inside if (a >= hist_low and a <= hist_high) else outside
        for j in range(width):
            hist[index[j]] += 1
        for j in range(width):
            h_row[j] = post[j]
    counts[_ROWS] = sr
    counts[_BELOW] = hist[bins]
    counts[_ABOVE] = hist[bins + 1]
    counts[_ZEROS] = zeros
    counts[_SATURATED] = saturated
    counts[_NONFINITE] = nonfinite
    counts[_PRE_NONFINITE] = pre_nonfinite


@njit(error_model="numpy")
def _merge_moments(n, mean, m2, n_b, k, s1, s2):
    """Chan et al.'s merge of a tile (n_b rows, shifted sums k, s1, s2) into (n, mean, m2)."""
    width = mean.size
    nb = np.float64(n_b)
    if n == 0:
        for j in range(width):
            mean[j] = k[j] + s1[j] / nb
            d = s2[j] - s1[j] * s1[j] / nb
            m2[j] = d if d > 0.0 else 0.0
        return
    total = np.float64(n + n_b)
    w_b = nb / total
    w_ab = np.float64(n) * nb / total
    for j in range(width):
        mean_b = k[j] + s1[j] / nb
        d = s2[j] - s1[j] * s1[j] / nb
        m2_b = d if d > 0.0 else 0.0
        delta = mean_b - mean[j]
        mean[j] += delta * w_b
        m2[j] += m2_b + delta * delta * w_ab


@njit(error_model="numpy")
def _layer_job(job, x, w, y, bias, tiles, blas, act, saturation, hist_range, scratch, draw_out,
               draw):  # fmt: skip
    """Job ``job`` of a layer: tile ``job`` (GEMM, then bias, activation and statistics), or,
    past the tiles, a segment of the next layer's weights."""
    n_tiles = tiles.shape[0]
    if job >= n_tiles:
        normal, k0, k1, stream, layer, start, scale, shift = draw
        draw_segment(draw_out, job - n_tiles, normal, k0, k1, stream, layer, start, scale, shift)
        return
    part, tile_counts, tile_hist, post, index = scratch
    call_begin = tiles[job, 0]
    if blas != 0:
        _gemm(blas, x, call_begin, w, y, call_begin, tiles[job, 1])
    _tile_stats(y, tiles[job, 2], tiles[job, 3], bias, act, saturation[0], saturation[1],
                hist_range[0], hist_range[1], hist_range[2], part[job], tile_counts[job],
                tile_hist[job], post[job], index[job])  # fmt: skip


@njit(error_model="numpy")
def _merge_tiles(n_tiles, scratch, moments, counts, extrema, hist):
    """The tiles' partials into the layer's accumulators, in tile order: the same sums
    whatever thread ran which tile."""
    part, tile_counts, tile_hist, _, _ = scratch
    width = moments.shape[1]
    for t in range(n_tiles):
        n = counts[_ROWS]
        n_b = tile_counts[t, _ROWS]
        p = part[t]
        _merge_moments(n, moments[0], moments[1], n_b, p[_POST_K], p[_POST_S1], p[_POST_S2])
        _merge_moments(n, moments[2], moments[3], n_b, p[_PRE_K], p[_PRE_S1], p[_PRE_S2])
        for c in range(_COUNTERS):
            counts[c] += tile_counts[t, c]
        for j in range(width):
            extrema[0] = p[_LO, j] if p[_LO, j] < extrema[0] else extrema[0]
            extrema[1] = p[_HI, j] if p[_HI, j] > extrema[1] else extrema[1]
        for b in range(hist.size):
            hist[b] += tile_hist[t, b]


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _layer(x, w, y, bias, tiles, blas, act, saturation, hist_range, moments, counts, extrema,
           hist, scratch, workers, draw_out, draw):  # fmt: skip
    """One layer on one chunk: per tile, GEMM then stats; then the tiles merged in order.

    ``x`` (rows, fan_in) and ``y`` (rows, fan_out) are the chunk's padded buffers; ``tiles``
    (T, 4) holds each tile's GEMM rows and statistics rows.  ``blas`` is the address of the
    cblas gemm, or 0 when ``y`` already holds ``x @ w``.  The layer's running accumulators
    ``moments`` (4, fan_out: post mean, post M2, pre mean, pre M2), ``counts`` (7),
    ``extrema`` (min, max) and ``hist`` (bins) are updated in place.  ``scratch`` holds the
    tiles' partials (allocated by the caller: an allocation here would be a parallel loop).

    ``workers`` threads (numba's thread count) take the jobs as they finish; those that
    finish their tiles early fill ``draw_out`` (the next layer's weights;
    ``draw`` is ``(normal, *draw_args(...))``), in the same parallel loop.
    """
    n_tiles = tiles.shape[0]
    n_jobs = n_tiles + (draw_out.size + SEGMENT - 1) // SEGMENT
    counter = np.zeros(1, dtype=np.int64)
    for _ in prange(min(workers, n_jobs)):  # workers take jobs in order:
        job = next_job(counter)  # the tiles first, then the draws
        while job < n_jobs:
            _layer_job(job, x, w, y, bias, tiles, blas, act, saturation, hist_range, scratch,
                       draw_out, draw)  # fmt: skip
            job = next_job(counter)
    _merge_tiles(n_tiles, scratch, moments, counts, extrema, hist)


@njit(nogil=True, cache=True, error_model="numpy")
def _layer_serial(x, w, y, bias, tiles, blas, act, saturation, hist_range, moments, counts,
                  extrema, hist, scratch, workers, draw_out, draw):  # fmt: skip
    """:func:`_layer` on the calling thread alone (in a process forked after OpenMP ran)."""
    n_tiles = tiles.shape[0]
    for job in range(n_tiles + (draw_out.size + SEGMENT - 1) // SEGMENT):
        _layer_job(job, x, w, y, bias, tiles, blas, act, saturation, hist_range, scratch,
                   draw_out, draw)  # fmt: skip
    _merge_tiles(n_tiles, scratch, moments, counts, extrema, hist)


# ---- the driver -----------------------------------------------------------------------------


def _tiles(r0: int, r1: int, base: int) -> np.ndarray:
    """The tiles of samples ``[r0, r1)`` in buffer rows (buffer row 0 is sample ``base``)."""
    first = np.arange(r0 // TILE_ROWS, (r1 - 1) // TILE_ROWS + 1, dtype=np.int64) * TILE_ROWS
    start = np.maximum(first, r0)
    end = np.minimum(first + TILE_ROWS, r1)
    call_begin = start // ROW_ALIGN * ROW_ALIGN
    call_end = -(-end // ROW_ALIGN) * ROW_ALIGN
    return np.ascontiguousarray(
        np.stack([call_begin - base, call_end - call_begin, start - base, end - start], axis=1)
    )


_workqueue_lock = threading.Lock()


def _launch_guard() -> contextlib.AbstractContextManager:
    """Numba's workqueue threading layer aborts the process when two threads launch parallel
    kernels at once: serialise runs then (tbb and omp allow concurrent launches)."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        return _workqueue_lock
    return _workqueue_lock if layer == "workqueue" else contextlib.nullcontext()


class _Weights:
    """Each layer's (fan_in, fan_out) matrix: given, or drawn in place from WEIGHTS.

    A layer's weights are drawn while the previous layer's tiles run (by threads that finish
    their tiles early), so with one chunk, or matrices too large to keep, they rotate
    between two buffers; with several chunks they are kept while they fit
    WEIGHT_CACHE_BYTES, and drawn once.
    """

    def __init__(self, plan: Plan, chunks: int) -> None:
        self.plan = plan
        self.drawn = [layer.weights is None and layer.distribution is not None
                      for layer in plan.layers]  # fmt: skip
        sizes = [layer.fan_in * layer.fan_out for layer in plan.layers]
        drawn_sizes = [n for n, d in zip(sizes, self.drawn, strict=True) if d]
        self.keep = chunks > 1 and sum(drawn_sizes) * plan.dtype.itemsize <= WEIGHT_CACHE_BYTES
        dtype = plan.dtype
        if self.keep:
            self.buffers = [
                np.empty(n if d else 0, dtype) for n, d in zip(sizes, self.drawn, strict=True)
            ]
        else:
            largest = max(drawn_sizes, default=0)
            rotating = [np.empty(largest, dtype), np.empty(largest, dtype)]
            self.buffers = [
                rotating[i % 2][: n if d else 0]
                for i, (n, d) in enumerate(zip(sizes, self.drawn, strict=True))
            ]
        self.ready = [False] * len(sizes)
        self.nothing = (np.empty(0, dtype), (False, *draw_args(0, 0, 0, 0, None, None, dtype)))

    def __call__(self, index: int) -> np.ndarray:
        """Layer ``index``'s matrix (drawn by a :meth:`job` run before)."""
        layer = self.plan.layers[index]
        if not self.drawn[index]:
            if layer.weights is None:
                raise ValueError(
                    f"layer of {layer.scheme.name} has no weights: call with_weights()"
                )
            return np.ascontiguousarray(layer.weights, dtype=self.plan.dtype)
        return self.buffers[index].reshape(layer.fan_in, layer.fan_out)

    def job(self, index: int) -> tuple[np.ndarray, tuple]:
        """``(out, draw)``: what the kernels draw for layer ``index``, if anything is due."""
        if index >= len(self.drawn) or not self.drawn[index] or self.ready[index]:
            return self.nothing
        self.ready[index] = self.keep
        dist = self.plan.layers[index].distribution
        assert dist is not None
        t = self.plan.dtype.type
        if dist.kind == "normal":  # schemes.draw: z * std + mean
            scale, shift = t(dist.b), t(dist.a)
        else:  # u * (b - a) + a
            scale, shift = t(dist.b - dist.a), t(dist.a)
        args = draw_args(self.plan.seed, _random.WEIGHTS, index, 0, scale, shift, t)
        return self.buffers[index], (dist.kind == "normal", *args)

    def draw(self, index: int) -> None:
        """Draws layer ``index``'s matrix now, if it is due."""
        out, (normal, *args) = self.job(index)
        fill_with(out, normal, tuple(args))


class _Scratch:
    """Flat buffers for the tiles' partials, viewed per layer as contiguous arrays."""

    def __init__(self, chunk: int, width: int, bins: int, dtype: np.dtype) -> None:
        tiles = chunk // TILE_ROWS + 2
        self.bins = bins
        self.part = np.empty(tiles * _PARTIALS * width)
        self.counts = np.empty((tiles, _COUNTERS), dtype=np.int64)
        self.hist = np.empty((tiles, bins + 3), dtype=np.int64)
        self.post = np.empty(tiles * width, dtype=dtype)
        self.index = np.empty(tiles * width, dtype=np.int32)

    def __call__(self, tiles: int, width: int) -> tuple[np.ndarray, ...]:
        return (
            self.part[: tiles * _PARTIALS * width].reshape(tiles, _PARTIALS, width),
            self.counts[:tiles],
            self.hist[:tiles],
            self.post[: tiles * width].reshape(tiles, width),
            self.index[: tiles * width].reshape(tiles, width),
        )


def run(plan: Plan) -> RawStats:
    """Propagate ``plan`` with the Numba kernels and return its raw accumulators."""
    dtype = plan.dtype
    t = dtype.type
    n = plan.n_samples
    chunk = min(plan.chunk_size, n)
    chunks = -(-n // chunk)
    dim = plan.input_dim
    width = max(dim, *plan.widths)
    depth = len(plan.layers)
    blas = _blas()[0 if dtype == np.float64 else 1]

    buffers = [np.empty((chunk + 2 * ROW_ALIGN) * width, dtype=dtype) for _ in range(2)]
    weights = _Weights(plan, chunks)
    biases = []
    for i, layer in enumerate(plan.layers):
        b = np.empty(layer.fan_out if layer.bias_std > 0 else 0, dtype=dtype)
        fill_normal(b, plan.seed, _random.BIASES, i, 0, t(layer.bias_std))  # z * bias_std
        biases.append(b)
    acts = [_activation_args(layer.activation, dtype) for layer in plan.layers]
    saturation = [layer.activation.saturation or (math.nan, math.nan) for layer in plan.layers]
    low, high = plan.hist_range
    hist_range = (float(low), float(high), plan.bins / (high - low))

    scratch = _Scratch(chunk, max(plan.widths), plan.bins, dtype)
    moments = [np.zeros((4, layer.fan_out)) for layer in plan.layers]
    counts = np.zeros((depth, _COUNTERS), dtype=np.int64)
    extrema = np.tile(np.array([_INF, -_INF]), (depth, 1))
    hist = np.zeros((depth, plan.bins), dtype=np.int64)
    kept = (
        [np.empty((n, layer.fan_out), dtype=dtype) for layer in plan.layers]
        if plan.keep_activations
        else None
    )

    layer_kernel = _layer if parallel_allowed() else _layer_serial
    previous_threads = numba.get_num_threads()
    workers = max(1, min(plan.threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    numba.set_num_threads(workers)
    try:
        with _launch_guard():
            for c in range(chunks):
                r0, r1 = c * chunk, min(n, (c + 1) * chunk)
                rows = r1 - r0
                base = r0 // ROW_ALIGN * ROW_ALIGN  # the sample of buffer row 0
                front = r0 - base
                padded = -(-r1 // ROW_ALIGN) * ROW_ALIGN - base
                tiles = _tiles(r0, r1, base)
                x = buffers[0][: padded * dim].reshape(padded, dim)
                x[:front] = 0
                x[front + rows :] = 0
                if plan.inputs is not None:
                    x[front : front + rows] = plan.inputs[r0:r1]
                else:
                    fill_normal(x[front : front + rows], plan.seed, _random.INPUTS, 0, r0 * dim)
                weights.draw(0)
                for i, layer in enumerate(plan.layers):
                    w = weights(i)
                    y = buffers[1][: padded * layer.fan_out].reshape(padded, layer.fan_out)
                    if blas == 0:  # pragma: no cover - without scipy-openblas32
                        np.matmul(x, w, out=y)
                    layer_kernel(x, w, y, biases[i], tiles, blas, acts[i], saturation[i],
                                 hist_range, moments[i], counts[i], extrema[i], hist[i],
                                 scratch(len(tiles), layer.fan_out), workers,
                                 *weights.job(i + 1))  # fmt: skip
                    if kept is not None:
                        kept[i][r0:r1] = y[front : front + rows]
                    buffers.reverse()
                    x = y
    finally:
        numba.set_num_threads(previous_threads)

    finite = np.isfinite(extrema)
    return RawStats(
        unit_mean=[m[0] for m in moments],
        unit_m2=[m[1] for m in moments],
        pre_unit_mean=[m[2] for m in moments],
        pre_unit_m2=[m[3] for m in moments],
        min=np.where(finite[:, 0], extrema[:, 0], np.nan),
        max=np.where(finite[:, 1], extrema[:, 1], np.nan),
        hist=hist,
        below=counts[:, _BELOW],
        above=counts[:, _ABOVE],
        zeros=counts[:, _ZEROS],
        saturated=counts[:, _SATURATED],
        nonfinite=counts[:, _NONFINITE],
        pre_nonfinite=counts[:, _PRE_NONFINITE],
        activations=kept,
    )
