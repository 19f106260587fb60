"""The Numba backend: the C++ kernel's fused layer loop, for machines without a compiler.

Imported only when the ``numba`` backend is asked for (or detected by "auto"), so
``import initscope`` never imports numba.  It follows the C++ kernel
(``cpp/include/initscope/propagate.hpp``) step for step and gives the same numbers, bit for
bit (``tests/test_numba.py`` checks it wherever the extension is built):

- Samples go through all layers in chunks of ``plan.chunk_size`` rows (whole tiles, or all
  samples), looped over in Python, so Ctrl-C surfaces between kernel calls; memory is
  O(width² + chunk·width).
- Inputs, weights and biases are drawn by :mod:`initscope.random`'s own building blocks,
  compiled by Numba (:mod:`._numba_generator`): bit for bit the specification's numbers.
- Tile ``t`` is the samples ``[t * TILE_ROWS, min(n, (t + 1) * TILE_ROWS))``, and exactly
  one single-threaded GEMM over exactly those rows per block of columns
  (:func:`~initscope.plan.column_blocks`: one block but in wide layers and with few
  samples), by ``cblas_?gemm`` of the ``scipy-openblas32`` wheel, the C++ kernel's
  OpenBLAS: every GEMM call's shape depends on the layer and ``n_samples`` alone, so any
  OpenBLAS kernel computes each sample alike for any chunk size or thread count, and as
  the C++ kernel does.  One worker per thread takes tiles in order as it finishes (an
  atomic counter: numba's ``prange`` alone hands each thread a fixed block) and runs the
  GEMM, then, while the tile is in cache, the bias, the activation and every statistic.
  Workers that run out of tiles draw the next layer's weights.  The tiles' partial
  statistics are merged in tile order, so results are bit-identical for any number of
  threads and any chunk size.
- With ``gradients=True`` each chunk then goes back through the layers, as the C++ kernel
  does: its forward pass keeps every layer's input ``a_l`` and ``phi'(h_l)`` (computed in
  the tile, as :func:`derive`), ``delta_L = g * phi'(h_L)`` overwrites the last
  one, and per tile ``delta_{l-1} = (delta_l @ W_l.T) * phi'(h_{l-1})`` (one GEMM into the
  worker's buffer) overwrites the one before, its statistics taken while the tile is in
  cache.  ``dW_l += a_l.T @ delta_l`` runs in jobs of :data:`GRAD_ROWS` rows of ``dW_l``,
  each one GEMM per tile in tile order (the run's first tile overwrites), so that its sums
  depend neither on the threads nor on the chunks; its std and norm, and the std of
  ``W_l``, are two passes in float64, in order.  The output gradient ``g`` is
  ``output_grad`` or N(0, 1) from the GRADS stream.  Without ``grad_range``, the
  histograms of the first chunk are binned after its backward pass, over ``(-R, R)`` from
  the first tile (:func:`grad_range_rule`).  Memory: per chunk every layer's input and
  ``phi'(h)`` and the last layer's output (at most ``(2L + 1)`` chunk buffers of the widest
  layer), the weight gradients (every layer's with several chunks, the largest with one),
  and the weights, kept while they fit WEIGHT_CACHE_BYTES and otherwise drawn again for
  the way back (:func:`estimate_memory` counts all of it).
- The activations are the C++ kernel's (:mod:`._numba_activations`, a copy of
  ``activations.hpp``), not :mod:`initscope.activations`' NumPy formulas jitted: those call
  libm, which LLVM cannot vectorise, and a tanh network at the seed shape would take
  1.5 (float64) to 1.9 (float32) times as long.  So everything is bit-identical across
  the two compiled backends: random numbers, pre-activations (the same GEMM calls),
  activations, derivatives and statistics (the same merge order), gradients included.
  Against the NumPy reference, random numbers are bit-identical and the rest agrees to
  rounding (its GEMM and its activations are NumPy's).

Every kernel is ``@njit(nogil=True, cache=True)``: compiled on first use (about 40 s per
dtype on a 2-core machine, the backward kernel included) and cached on disk
(``__pycache__`` next to this file, or ``NUMBA_CACHE_DIR``), so later processes load it in
about a second.  Numba's cache checks only the source file of the kernel it loads, and
``_layer`` and ``_backward`` compile in code of ``random.py``, ``_numba_generator.py`` and
``_numba_activations.py``: after editing one of those alone, clear the cache (installing
replaces every file, which invalidates it).
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
from numba.extending import intrinsic

from .. import random as _random
from ..plan import Plan, block_column, chunk_multiple, column_blocks, gemm_tiles, grad_range_rule
from ..result import GradRaw, RawStats
from ._numba_activations import activate_and_derive_row, activate_row, activation_args, derive_row
from ._numba_generator import (
    SEGMENT,
    draw_args,
    draw_segment,
    fill_normal,
    fill_with,
    next_job,
    parallel_allowed,
)

__all__ = [
    "SEGMENT",
    "TILE_ROWS",
    "WEIGHT_CACHE_BYTES",
    "GRAD_ROWS",
    "activate",
    "check_available",
    "derive",
    "estimate_memory",
    "run",
]

# The C++ kernel's constants (kernel.hpp; _core.TILE_ROWS, ...), repeated because this
# backend runs without the extension; tests/test_numba.py checks that they agree.
#: Samples per tile, and per GEMM call.
TILE_ROWS = 240
#: Drawn weights are kept across chunks while they take at most this many bytes (else two
#: buffers rotate, and each chunk draws them again).
WEIGHT_CACHE_BYTES = 128 * 2**20

_MIN_NUMBA = (0, 59)


def check_available() -> None:
    """Raise ImportError if numba is missing or too old."""
    version = tuple(int(p) for p in numba.__version__.split(".")[:2] if p.isdigit())
    if version < _MIN_NUMBA:
        raise ImportError(
            f"numba {numba.__version__} is too old: pip install 'initscope[numba]' (numba>=0.59)"
        )


def estimate_memory(plan: Plan) -> int:
    """Bytes a run of ``plan`` holds: what :func:`run` allocates, to within a few KiB.

    Parameters
    ----------
    plan : Plan
        A checked experiment.

    Returns
    -------
    int
        The chunk's buffers, the weights as the kernels keep them, the tiles' partial
        statistics (per tile of a chunk: a few float64 rows of the widest layer and a
        histogram of ``bins + 3`` slots), the layers' accumulators and the kept
        activations.  The buffers are two of the widest layer; with gradients, every
        layer's input and ``phi'(h)`` and the last layer's output, plus the weight-gradient
        accumulators (every layer's with several chunks, the largest layer's with one) and
        a tile of ``delta @ W.T`` per thread.
    """
    item = plan.dtype.itemsize
    chunk = min(plan.chunk_size, plan.n_samples)
    depth = len(plan.layers)
    units = sum(plan.widths)
    if plan.gradients:
        inputs = sum(layer.fan_in for layer in plan.layers)
        buffers = chunk * (inputs + units + plan.widths[-1]) * item
        sizes = [layer.fan_in * layer.fan_out for layer in plan.layers]
        buffers += (sum(sizes) if plan.chunks > 1 else max(sizes)) * item
        widest = max((layer.fan_in for layer in plan.layers[1:]), default=0)
        buffers += _workers(plan) * TILE_ROWS * widest * item
        slots = max(plan.bins, plan.grad_bins) + 3
        accumulators = 8 * (6 * units + depth * (plan.bins + plan.grad_bins))
    else:
        buffers = 2 * chunk * max(plan.input_dim, *plan.widths) * item
        slots = plan.bins + 3
        accumulators = 8 * (4 * units + depth * plan.bins)
    width = max(plan.widths)
    per_tile = width * (_PARTIALS * 8 + 2 * item + 4) + (slots + _COUNTERS) * 8
    scratch = (chunk // TILE_ROWS + 2) * per_tile
    weights = plan.weight_bytes(WEIGHT_CACHE_BYTES)
    return buffers + weights + scratch + accumulators + plan.kept_bytes()


# ---- BLAS ---------------------------------------------------------------------------------

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


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
def _gemm(typingctx, address, trans_a, trans_b, m, n, k, a, a_at, lda, b, b_at, ldb, beta, c,
          c_at, ldc):  # fmt: skip
    """Row-major ``C = op(A) op(B) + beta C`` by the cblas gemm at ``address``.

    ``op(A)`` is m x k, ``op(B)`` k x n; ``trans_a``/``trans_b`` are cblas's 111 (as is) or
    112 (transposed).  Each operand is a C-contiguous array of one float dtype, read from
    its element ``*_at`` with leading dimension ``ld*``.  Calling a function pointer given as
    an integer keeps the kernels cacheable (no ctypes object is frozen in).
    """
    dtype = a.dtype
    if not (b.dtype == dtype == c.dtype and dtype in (types.float32, types.float64)):
        return None
    i64, f64 = types.int64, types.float64  # the integers and beta, converted on the call
    sig = types.void(address, i64, i64, i64, i64, i64, a, i64, i64, b, i64, i64, f64, c, i64,
                     i64)  # fmt: skip

    def codegen(context, builder, signature, args):
        (addr, ta, tb, m_val, n_val, k_val, a_val, a_at_val, lda_val, b_val, b_at_val, ldb_val,
         beta_val, c_val, c_at_val, ldc_val) = args  # fmt: skip
        fty = context.get_value_type(dtype)
        i32 = ir.IntType(32)
        arrays = [
            context.make_array(signature.args[i])(context, builder, v)
            for i, v in ((6, a_val), (9, b_val), (13, c_val))
        ]
        pa, pb, pc = (
            builder.gep(arr.data, [at])
            for arr, at in zip(arrays, (a_at_val, b_at_val, c_at_val), strict=True)
        )
        ptr = fty.as_pointer()
        fnty = ir.FunctionType(
            ir.VoidType(),
            [i32, i32, i32, i32, i32, i32, fty, ptr, i32, ptr, i32, fty, ptr, i32],
        )
        fn = builder.inttoptr(addr, fnty.as_pointer())

        def i(v):
            return builder.trunc(v, i32)

        beta_typed = context.cast(builder, beta_val, signature.args[12], dtype)
        builder.call(
            fn,
            [
                ir.Constant(i32, _ROW_MAJOR), i(ta), i(tb), i(m_val), i(n_val), i(k_val),
                ir.Constant(fty, 1.0), pa, i(lda_val), pb, i(ldb_val), beta_typed, pc,
                i(ldc_val),
            ],
        )  # fmt: skip
        return context.get_dummy_value()

    return sig, codegen


# ---- the activations -------------------------------------------------------------------------


@njit(nogil=True, cache=True, error_model="numpy")
def _activate_array(code, slope, alpha, flush, x):
    out = np.empty_like(x)
    activate_row(code, slope, alpha, flush, x, out)
    return out


@njit(nogil=True, cache=True, error_model="numpy")
def _derive_array(code, slope, alpha, x):
    out = np.empty_like(x)
    derive_row(code, slope, alpha, x, out)
    return out


def _float_array(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {x.dtype}")
    return x


def activate(activation, x: np.ndarray) -> np.ndarray:
    """The activation applied as the kernel applies it (for tests against the reference).

    Parameters
    ----------
    activation : Activation
    x : ndarray of float32 or float64

    Returns
    -------
    ndarray
        ``activation(x)``, of the shape and dtype of ``x``.
    """
    x = _float_array(x)
    out = _activate_array(*activation_args(activation, x.dtype), x.reshape(-1))  # type: ignore[call-arg]
    return out.reshape(x.shape)


def derive(activation, x: np.ndarray) -> np.ndarray:
    """The activation's derivative as the kernel computes it (for tests against the reference).

    Parameters
    ----------
    activation : Activation
    x : ndarray of float32 or float64

    Returns
    -------
    ndarray
        ``activation.derivative(x)`` as the C++ kernel evaluates it: tanh's and sigmoid's
        in ``x``'s dtype, the others in float64, rounded once to ``x``'s dtype.
    """
    x = _float_array(x)
    code, slope, alpha, _ = activation_args(activation, x.dtype)
    out = _derive_array(code, slope, alpha, x.reshape(-1))  # type: ignore[call-arg]
    return out.reshape(x.shape)


# ---- the fused layer kernel ---------------------------------------------------------------

_DBL_MAX = float(np.finfo(np.float64).max)
_INF = math.inf

# slots of the per-tile and per-layer counters
_ROWS, _BELOW, _ABOVE, _ZEROS, _SATURATED, _NONFINITE, _PRE_NONFINITE = range(7)
_COUNTERS = 7
# rows of the per-tile float64 partials (the backward pass's delta uses _PRE_K.._PRE_S2 and
# _LO, _HI)
_PRE_K, _PRE_S1, _PRE_S2, _POST_K, _POST_S1, _POST_S2, _LO, _HI, _DERIV_SQ = range(9)
_PARTIALS = 9


@njit(error_model="numpy")
def _bin_values(values, low, high, scale, index, hist):
    """Counts ``values`` into ``hist`` (its bins, then below, above and NaN).

    The reference's bin ``floor((v - low) * scale)``, the top edge in the last bin; clamped
    before the conversion, so that it is defined (NaN, inf, huge).  The loops are split so
    that the first vectorises.
    """
    bins = hist.size - 3
    last = np.float64(bins - 1)
    below, above, not_a_number = np.int32(bins), np.int32(bins + 1), np.int32(bins + 2)
    for j in range(values.size):
        a = np.float64(values[j])
        d = (a - low) * scale
        d = d if d < last else last
        d = d if d > 0.0 else 0.0
        inside = np.int32(d)  # d >= 0: truncation is floor
        outside = below if a < low else (above if a > high else not_a_number)
        index[j] = inside if (a >= low and a <= high) else outside
    for j in range(values.size):
        hist[index[j]] += 1


@njit(error_model="numpy")
def _tile_stats(y, sb, sr, bias, act, sat_low, sat_high, hist_low, hist_high, hist_scale,
                part, counts, hist, post, index, deriv, deriv_row):  # fmt: skip
    """Bias, activation, derivative and statistics of rows ``[sb, sb + sr)`` of ``y``, in place.

    ``part`` (9, width) receives the shifted sums: per column, the sums of ``x - K`` and
    ``(x - K)**2`` with K the tile's first row, which stays accurate because K lies within a
    few std of the mean; the per-column min and max over finite values; and the sum of
    ``phi'(h)**2``.  ``hist`` (bins + 3: the bins, below, above, NaN) and ``counts`` (7) are
    the tile's counters.  ``phi'(h)`` goes to the rows of ``deriv`` (kept for the backward
    pass), or to ``deriv_row`` where ``deriv`` has no rows.  The loops are split so that
    each touches few arrays, and all but the histogram's increments vectorise.
    """
    code, slope, alpha, flush = act
    width = y.shape[1]
    keep_deriv = deriv.shape[0] > 0
    pre_k, pre_s1, pre_s2 = part[_PRE_K], part[_PRE_S1], part[_PRE_S2]
    post_k, post_s1, post_s2 = part[_POST_K], part[_POST_S1], part[_POST_S2]
    lo, hi, deriv_sq = part[_LO], part[_HI], part[_DERIV_SQ]
    for j in range(width):
        pre_s1[j] = 0.0
        pre_s2[j] = 0.0
        post_s1[j] = 0.0
        post_s2[j] = 0.0
        lo[j] = _INF
        hi[j] = -_INF
        deriv_sq[j] = 0.0
    for b in range(hist.size):
        hist[b] = 0
    zeros = saturated = nonfinite = pre_nonfinite = 0
    for r in range(sb, sb + sr):
        h_row = y[r]
        if bias.size:
            for j in range(width):
                h_row[j] = h_row[j] + bias[j]
        d_row = deriv[r] if keep_deriv else deriv_row
        activate_and_derive_row(code, slope, alpha, flush, h_row, post, d_row)
        for j in range(width):
            v = np.float64(d_row[j])
            deriv_sq[j] += v * v
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
        _bin_values(post, hist_low, hist_high, hist_scale, index, hist)
        for j in range(width):
            h_row[j] = post[j]
    bins = hist.size - 3
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


_block_column = njit(block_column)


@njit(error_model="numpy")
def _layer_job(job, x, w, y, bias, tiles, group, blocks, blas, act, saturation, hist_range,
               scratch, deriv, draw_out, draw):  # fmt: skip
    """Job ``job`` of a layer: tiles ``[job * group, (job + 1) * group)`` (one GEMM call per
    block of columns, as the C++ kernel's, then each tile's bias, activation and
    statistics), or, past the tiles, a segment of the next layer's weights."""
    n_tiles = tiles.shape[0]
    n_groups = (n_tiles + group - 1) // group
    if job >= n_groups:
        normal, k0, k1, stream, layer, start, scale, shift = draw
        draw_segment(draw_out, job - n_groups, normal, k0, k1, stream, layer, start, scale,
                     shift)  # fmt: skip
        return
    part, tile_counts, tile_hist, post, index, deriv_rows = scratch
    t0, t1 = job * group, min(n_tiles, (job + 1) * group)
    if blas != 0:
        fan_in, fan_out = x.shape[1], y.shape[1]
        begin = tiles[t0, 0]
        rows = tiles[t1 - 1, 0] + tiles[t1 - 1, 1] - begin
        for b in range(blocks):
            c0 = _block_column(b, blocks, fan_out)
            c1 = _block_column(b + 1, blocks, fan_out)
            _gemm(blas, _NO_TRANS, _NO_TRANS, rows, c1 - c0, fan_in, x, begin * fan_in, fan_in,
                  w, c0, fan_out, 0.0, y, begin * fan_out + c0, fan_out)  # fmt: skip
    for t in range(t0, t1):
        _tile_stats(y, tiles[t, 0], tiles[t, 1], bias, act, saturation[0], saturation[1],
                    hist_range[0], hist_range[1], hist_range[2], part[t], tile_counts[t],
                    tile_hist[t], post[t], index[t], deriv, deriv_rows[t])  # fmt: skip


@njit(error_model="numpy")
def _merge_tiles(n_tiles, scratch, moments, counts, extrema, deriv_sq, hist):
    """The tiles' partials into the layer's accumulators, in tile order: the same sums
    whatever thread ran which tile."""
    part, tile_counts, tile_hist, _, _, _ = scratch
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
        for j in range(width):
            deriv_sq[0] += p[_DERIV_SQ, j]
        for b in range(hist.size):
            hist[b] += tile_hist[t, b]


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _layer(x, w, y, bias, tiles, group, blocks, blas, act, saturation, hist_range, moments,
           counts, extrema, deriv_sq, hist, scratch, deriv, workers, draw_out,
           draw):  # fmt: skip
    """One layer on one chunk: per tile, GEMM then stats; then the tiles merged in order.

    ``x`` (rows, fan_in) and ``y`` (rows, fan_out) are the chunk's buffers; ``tiles``
    (T, 2) holds each tile's first row and its number of rows; ``group`` tiles share a GEMM
    call (``plan.chunk_multiple``: more than one for wide layers), one per block of columns
    of ``blocks`` (``plan.column_blocks``).  ``blas`` is the address of the cblas gemm, or 0
    when ``y`` already holds ``x @ w``.  The layer's running accumulators
    ``moments`` (4, fan_out: post mean, post M2, pre mean, pre M2), ``counts`` (7),
    ``extrema`` (min, max), ``deriv_sq`` (1) and ``hist`` (bins) are updated in place.
    ``scratch`` holds the tiles' partials (allocated by the caller: an allocation here would
    be a parallel loop); ``deriv`` (rows, fan_out) receives ``phi'(h)`` for the backward
    pass, or has no rows.

    ``workers`` threads (numba's thread count) take the jobs as they finish; those that
    finish their tiles early fill ``draw_out`` (the next layer's weights;
    ``draw`` is ``(normal, *draw_args(...))``), in the same parallel loop.
    """
    n_tiles = tiles.shape[0]
    n_jobs = (n_tiles + group - 1) // group + (draw_out.size + SEGMENT - 1) // SEGMENT
    counter = np.zeros(1, dtype=np.int64)
    for _ in prange(min(workers, n_jobs)):  # workers take jobs in order:
        job = next_job(counter)  # the tiles first, then the draws
        while job < n_jobs:
            _layer_job(job, x, w, y, bias, tiles, group, blocks, blas, act, saturation,
                       hist_range, scratch, deriv, draw_out, draw)  # fmt: skip
            job = next_job(counter)
    _merge_tiles(n_tiles, scratch, moments, counts, extrema, deriv_sq, hist)


@njit(nogil=True, cache=True, error_model="numpy")
def _layer_serial(x, w, y, bias, tiles, group, blocks, blas, act, saturation, hist_range,
                  moments, counts, extrema, deriv_sq, hist, scratch, deriv, workers, draw_out,
                  draw):  # fmt: skip
    """:func:`_layer` on the calling thread alone (in a process forked after OpenMP ran)."""
    n_tiles = tiles.shape[0]
    for job in range((n_tiles + group - 1) // group + (draw_out.size + SEGMENT - 1) // SEGMENT):
        _layer_job(job, x, w, y, bias, tiles, group, blocks, blas, act, saturation,
                   hist_range, scratch, deriv, draw_out, draw)  # fmt: skip
    _merge_tiles(n_tiles, scratch, moments, counts, extrema, deriv_sq, hist)


# ---- the backward kernel ------------------------------------------------------------------

#: Rows of a layer's inputs per weight-gradient job (the C++ kernel's kGradRows,
#: ``_core.GRAD_ROWS``): a fixed partition of dW, never the thread count's, so every GEMM
#: call's shape is the network's.
GRAD_ROWS = 128

# what the tile jobs of the backward kernel do: nothing (only dW); delta *= a given array
# (the output gradient); delta_{l-1} = (delta_l @ W_l.T) * phi'(h_{l-1}); bin delta only
_NO_TILES, _SCALE, _BACK, _BIN = range(4)


@njit(error_model="numpy")
def _grad_rows(delta, sb, sr, product, at, binned, low, high, scale, part, counts, hist,
               index):  # fmt: skip
    """Rows ``[sb, sb + sr)`` of ``delta`` times the rows of ``product`` (flat, from element
    ``at``, row stride = width), in place, then their statistics.

    ``part`` receives the shifted sums of delta (rows _PRE_K, _PRE_S1, _PRE_S2), its min and
    max over finite values (_LO, _HI); ``counts`` the rows and the non-finite count;
    ``hist`` the histogram when ``binned``.
    """
    width = delta.shape[1]
    k, s1, s2 = part[_PRE_K], part[_PRE_S1], part[_PRE_S2]
    lo, hi = part[_LO], part[_HI]
    for j in range(width):
        s1[j] = 0.0
        s2[j] = 0.0
        lo[j] = _INF
        hi[j] = -_INF
    for b in range(hist.size):
        hist[b] = 0
    nonfinite = 0
    for r in range(sb, sb + sr):
        row = delta[r]
        first = at + (r - sb) * width
        for j in range(width):
            row[j] = product[first + j] * row[j]
        if r == sb:
            for j in range(width):
                k[j] = np.float64(row[j])
        for j in range(width):
            x = np.float64(row[j])
            d = x - k[j]
            s1[j] += d
            s2[j] += d * d
            finite = abs(x) <= _DBL_MAX
            x_lo = x if finite else _INF
            x_hi = x if finite else -_INF
            lo[j] = x_lo if x_lo < lo[j] else lo[j]
            hi[j] = x_hi if x_hi > hi[j] else hi[j]
            nonfinite += np.int64(not finite)
        if binned:
            _bin_values(row, low, high, scale, index, hist)
    counts[_ROWS] = sr
    counts[_NONFINITE] = nonfinite


@njit(error_model="numpy")
def _bin_rows(delta, sb, sr, low, high, scale, hist, index):
    """The histogram of rows ``[sb, sb + sr)`` of ``delta``."""
    for b in range(hist.size):
        hist[b] = 0
    for r in range(sb, sb + sr):
        _bin_values(delta[r], low, high, scale, index, hist)


@njit(error_model="numpy")
def _backward_job(me, job, mode, tiles, blas, delta, w, delta_out, given, x, grad_w, n_blocks,
                  first_chunk, grad_hist, binned, scratch, product, draw_out, draw):  # fmt: skip
    """Job ``job`` of a backward step, run by worker ``me``: a block of dW's rows, a tile of
    ``delta_out`` (see :func:`_backward`), or a segment of the next step's weights."""
    if job < n_blocks:  # rows [i0, i0 + m) of dW += x^T delta, tile after tile, in order
        fan_in, fan_out = x.shape[1], delta.shape[1]
        i0 = job * GRAD_ROWS
        m = min(GRAD_ROWS, fan_in - i0)
        for t in range(tiles.shape[0]):
            begin, rows = tiles[t, 0], tiles[t, 1]
            beta = 0.0 if (first_chunk and t == 0) else 1.0  # the run's first tile overwrites
            _gemm(blas, _TRANS, _NO_TRANS, m, fan_out, rows, x, begin * fan_in + i0, fan_in,
                  delta, begin * fan_out, fan_out, beta, grad_w, i0 * fan_out, fan_out)  # fmt: skip
        return
    job -= n_blocks
    n_tiles = 0 if mode == _NO_TILES else tiles.shape[0]
    if job >= n_tiles:
        normal, k0, k1, stream, layer, start, scale, shift = draw
        draw_segment(draw_out, job - n_tiles, normal, k0, k1, stream, layer, start, scale, shift)
        return
    part, tile_counts, tile_hist, _, index, _ = scratch
    begin, rows = tiles[job, 0], tiles[job, 1]
    low, high, hist_scale = grad_hist
    width = delta_out.shape[1]
    if mode == _BIN:
        _bin_rows(delta_out, begin, rows, low, high, hist_scale, tile_hist[job], index[job])
        return
    if mode == _BACK:  # the tile of delta @ W^T, in this worker's buffer
        buffer = product[me]
        fan_out = delta.shape[1]
        _gemm(blas, _NO_TRANS, _TRANS, rows, width, fan_out, delta, begin * fan_out, fan_out,
              w, 0, fan_out, 0.0, buffer, 0, width)  # fmt: skip
        _grad_rows(delta_out, begin, rows, buffer, 0, binned, low, high, hist_scale, part[job],
                   tile_counts[job], tile_hist[job], index[job])  # fmt: skip
    else:
        _grad_rows(delta_out, begin, rows, given, begin * width, binned, low, high, hist_scale,
                   part[job], tile_counts[job], tile_hist[job], index[job])  # fmt: skip


@njit(error_model="numpy")
def _merge_grad_tiles(mode, n_tiles, first_chunk, binned, scratch, moments, counts, extrema,
                      hist):  # fmt: skip
    """The tiles' partials into the layer's gradient accumulators, in tile order; on the
    first chunk, the first tile's largest finite |delta| into ``extrema[2]``."""
    if mode == _NO_TILES:
        return
    part, tile_counts, tile_hist, _, _, _ = scratch
    width = moments.shape[1]
    bins = hist.size
    for t in range(n_tiles):
        if mode != _BIN:
            n = counts[_ROWS]
            n_b = tile_counts[t, _ROWS]
            p = part[t]
            _merge_moments(n, moments[0], moments[1], n_b, p[_PRE_K], p[_PRE_S1], p[_PRE_S2])
            counts[_ROWS] += n_b
            counts[_NONFINITE] += tile_counts[t, _NONFINITE]
            for j in range(width):
                extrema[0] = p[_LO, j] if p[_LO, j] < extrema[0] else extrema[0]
                extrema[1] = p[_HI, j] if p[_HI, j] > extrema[1] else extrema[1]
        if mode == _BIN or binned:
            for b in range(bins):
                hist[b] += tile_hist[t, b]
            counts[_BELOW] += tile_hist[t, bins]
            counts[_ABOVE] += tile_hist[t, bins + 1]
    if first_chunk and mode != _BIN and n_tiles > 0:
        p = part[0]
        largest = 0.0
        for j in range(width):
            if p[_LO, j] <= p[_HI, j]:  # the column has a finite value
                m = -p[_LO, j] if -p[_LO, j] > p[_HI, j] else p[_HI, j]
                largest = m if m > largest else largest
        extrema[2] = largest


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _backward(mode, tiles, blas, delta, w, delta_out, given, x, grad_w, n_blocks, first_chunk,
              grad_hist, binned, moments, counts, extrema, hist, scratch, product, workers,
              draw_out, draw):  # fmt: skip
    """One step of the backward pass on one chunk, its tiles then merged in order.

    Jobs, taken in order by ``workers`` threads as they finish:

    - ``n_blocks`` blocks of GRAD_ROWS rows of ``grad_w`` (fan_in, fan_out):
      ``grad_w += x.T @ delta`` tile after tile, each block one GEMM per tile;
    - per tile of ``delta_out``, by ``mode``: ``_SCALE``: ``delta_out *= given`` (the output
      gradient, flat); ``_BACK``: ``delta_out *= delta @ w.T`` (the GEMM into the worker's
      row of ``product``); then the statistics (the histogram where ``binned``);
      ``_BIN``: the histogram of ``delta_out`` alone; ``_NO_TILES``: none;
    - the segments of ``draw_out`` (the weights of the next step).

    ``moments`` (2, width: mean, M2), ``counts`` (7), ``extrema`` (min, max, the first
    tile's largest |delta|) and ``hist`` (grad_bins) are the layer's running accumulators;
    ``grad_hist`` is ``(low, high, bins / (high - low))``.
    """
    n_tiles = 0 if mode == _NO_TILES else tiles.shape[0]
    n_jobs = n_blocks + n_tiles + (draw_out.size + SEGMENT - 1) // SEGMENT
    counter = np.zeros(1, dtype=np.int64)
    for me in prange(min(workers, n_jobs)):
        job = next_job(counter)
        while job < n_jobs:
            _backward_job(me, job, mode, tiles, blas, delta, w, delta_out, given, x, grad_w,
                          n_blocks, first_chunk, grad_hist, binned, scratch, product, draw_out,
                          draw)  # fmt: skip
            job = next_job(counter)
    _merge_grad_tiles(mode, n_tiles, first_chunk, binned, scratch, moments, counts, extrema,
                      hist)  # fmt: skip


@njit(nogil=True, cache=True, error_model="numpy")
def _backward_serial(mode, tiles, blas, delta, w, delta_out, given, x, grad_w, n_blocks,
                     first_chunk, grad_hist, binned, moments, counts, extrema, hist, scratch,
                     product, workers, draw_out, draw):  # fmt: skip
    """:func:`_backward` on the calling thread alone (in a process forked after OpenMP ran)."""
    n_tiles = 0 if mode == _NO_TILES else tiles.shape[0]
    for job in range(n_blocks + n_tiles + (draw_out.size + SEGMENT - 1) // SEGMENT):
        _backward_job(0, job, mode, tiles, blas, delta, w, delta_out, given, x, grad_w,
                      n_blocks, first_chunk, grad_hist, binned, scratch, product, draw_out,
                      draw)  # fmt: skip
    _merge_grad_tiles(mode, n_tiles, first_chunk, binned, scratch, moments, counts, extrema,
                      hist)  # fmt: skip


@njit(nogil=True, cache=True, error_model="numpy")
def _two_pass_std(values):
    """``(std, sum of squares)`` of ``values``, in float64 and in order (stats.hpp's
    two_pass_std): the population std about the mean of a first pass."""
    n = values.size
    total = 0.0
    for i in range(n):
        total += np.float64(values[i])
    mean = total / n
    m2 = 0.0
    sq = 0.0
    for i in range(n):
        v = np.float64(values[i])
        m2 += (v - mean) * (v - mean)
        sq += v * v
    return math.sqrt(m2 / n), sq


# ---- the driver -----------------------------------------------------------------------------


def _tiles(rows: int) -> np.ndarray:
    """``(first row, rows)`` of each tile of a chunk of ``rows`` samples that starts a tile."""
    first = np.arange(0, rows, TILE_ROWS, dtype=np.int64)
    return np.ascontiguousarray(np.stack([first, np.minimum(rows - first, TILE_ROWS)], axis=1))


_workqueue_lock = threading.Lock()


def _launch_guard() -> contextlib.AbstractContextManager:
    """Numba's workqueue threading layer aborts the process when two threads launch parallel
    kernels at once: serialise runs then (tbb and omp allow concurrent launches)."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        return _workqueue_lock
    return _workqueue_lock if layer == "workqueue" else contextlib.nullcontext()


def _workers(plan: Plan) -> int:
    """Threads a run of ``plan`` uses."""
    return max(1, min(plan.threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]


class _Weights:
    """Each layer's (fan_in, fan_out) matrix: given, or drawn in place from WEIGHTS.

    A layer's weights are drawn while the previous layer's tiles run (by threads that finish
    their tiles early), so with one chunk and no backward pass, or matrices too large to
    keep, they rotate between two buffers (each drawn again only when the other layer's
    took its place); with several chunks or a backward pass they are kept while they fit
    WEIGHT_CACHE_BYTES, and drawn once.
    """

    def __init__(self, plan: Plan, chunks: int, gradients: bool = False) -> None:
        self.plan = plan
        self.drawn = [layer.weights is None and layer.distribution is not None
                      for layer in plan.layers]  # fmt: skip
        sizes = [layer.fan_in * layer.fan_out for layer in plan.layers]
        drawn_sizes = [n for n, d in zip(sizes, self.drawn, strict=True) if d]
        fits = sum(drawn_sizes) * plan.dtype.itemsize <= WEIGHT_CACHE_BYTES
        self.keep = (chunks > 1 or gradients) and fits
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
        self.holds = [-1, -1]  # the layer each rotating buffer holds
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
        if not 0 <= index < len(self.drawn) or not self.drawn[index]:
            return self.nothing
        if self.keep:
            if self.ready[index]:
                return self.nothing
            self.ready[index] = True
        else:
            if self.holds[index % 2] == index:
                return self.nothing
            self.holds[index % 2] = index
        dist = self.plan.layers[index].distribution
        assert dist is not None
        t = self.plan.dtype.type
        scale, shift = dist.affine()
        args = draw_args(self.plan.seed, _random.WEIGHTS, index, 0, t(scale), t(shift), t)
        return self.buffers[index], (dist.kind == "normal", *args)

    def draw(self, index: int) -> None:
        """Draws layer ``index``'s matrix now, if it is due."""
        out, (normal, *args) = self.job(index)
        fill_with(out, normal, tuple(args))


class _Scratch:
    """Flat buffers for the tiles' partials, viewed per layer as contiguous arrays."""

    def __init__(self, chunk: int, width: int, bins: int, dtype: np.dtype) -> None:
        tiles = chunk // TILE_ROWS + 2
        self.part = np.empty(tiles * _PARTIALS * width)
        self.counts = np.empty((tiles, _COUNTERS), dtype=np.int64)
        self.hist = np.empty(tiles * (bins + 3), dtype=np.int64)
        self.post = np.empty(tiles * width, dtype=dtype)
        self.index = np.empty(tiles * width, dtype=np.int32)
        self.deriv = np.empty(tiles * width, dtype=dtype)

    def __call__(self, tiles: int, width: int, bins: int) -> tuple[np.ndarray, ...]:
        return (
            self.part[: tiles * _PARTIALS * width].reshape(tiles, _PARTIALS, width),
            self.counts[:tiles],
            self.hist[: tiles * (bins + 3)].reshape(tiles, bins + 3),
            self.post[: tiles * width].reshape(tiles, width),
            self.index[: tiles * width].reshape(tiles, width),
            self.deriv[: tiles * width].reshape(tiles, width),
        )


class _Buffers:
    """A chunk's arrays, flat.

    Without gradients, two buffers of the widest layer: layer ``l`` reads one and writes
    the other.  With gradients, what the backward pass needs: every layer's input ``a_l``,
    every layer's ``phi'(h_l)`` (overwritten in place by ``delta_l``), and the last layer's
    output, which the output gradient then replaces.
    """

    def __init__(self, plan: Plan, chunk: int) -> None:
        self.plan = plan
        dtype = plan.dtype
        self.gradients = plan.gradients
        if not self.gradients:
            width = max(plan.input_dim, *plan.widths)
            self.rotating = [np.empty(chunk * width, dtype) for _ in range(2)]
            return
        self.inputs = [np.empty(chunk * layer.fan_in, dtype) for layer in plan.layers]
        self.derivs = [np.empty(chunk * layer.fan_out, dtype) for layer in plan.layers]
        self.top = np.empty(chunk * plan.widths[-1], dtype)

    def input_of(self, index: int, rows: int) -> np.ndarray:
        """Layer ``index``'s input rows: (rows, fan_in)."""
        fan_in = self.plan.layers[index].fan_in
        flat = self.inputs[index] if self.gradients else self.rotating[index % 2]
        return flat[: rows * fan_in].reshape(rows, fan_in)

    def output_of(self, index: int, rows: int) -> np.ndarray:
        """Where layer ``index`` writes its activations: (rows, fan_out)."""
        fan_out = self.plan.layers[index].fan_out
        if not self.gradients:
            flat = self.rotating[(index + 1) % 2]
        elif index + 1 < len(self.plan.layers):
            flat = self.inputs[index + 1]
        else:
            flat = self.top
        return flat[: rows * fan_out].reshape(rows, fan_out)

    def deriv_of(self, index: int, rows: int) -> np.ndarray:
        """Layer ``index``'s ``phi'(h)``, then ``delta``: (rows, fan_out); without gradients,
        no rows (the kernel keeps no derivative)."""
        fan_out = self.plan.layers[index].fan_out
        if not self.gradients:
            return np.empty((0, fan_out), self.plan.dtype)
        return self.derivs[index][: rows * fan_out].reshape(rows, fan_out)


class _Backward:
    """The backward pass of each chunk and its accumulators (per layer, ``delta_l``)."""

    def __init__(self, plan: Plan, buffers: _Buffers, weights: _Weights, scratch: _Scratch,
                 chunks: int, workers: int, blas: int) -> None:  # fmt: skip
        self.plan = plan
        self.buffers = buffers
        self.weights = weights
        self.scratch = scratch
        self.chunks = chunks
        self.workers = workers
        self.blas = blas
        self.kernel = _backward if parallel_allowed() else _backward_serial
        depth = len(plan.layers)
        dtype = plan.dtype
        self.moments = [np.zeros((2, width)) for width in plan.widths]
        self.counts = np.zeros((depth, _COUNTERS), dtype=np.int64)
        self.extrema = np.tile(np.array([_INF, -_INF, 0.0]), (depth, 1))
        self.hist = np.zeros((depth, plan.grad_bins), dtype=np.int64)
        self.weight_std = np.zeros(depth)
        self.weight_grad_std = np.zeros(depth)
        self.weight_grad_norm = np.zeros(depth)
        sizes = [layer.fan_in * layer.fan_out for layer in plan.layers]
        # summed over the chunks: one per layer; with one chunk, one reused layer by layer
        self.grad_w = [np.empty(n, dtype) for n in (sizes if chunks > 1 else [max(sizes)])]
        widest = max((layer.fan_in for layer in plan.layers[1:]), default=0)
        self.product = np.empty((workers, TILE_ROWS * widest), dtype)
        self.hist_range = plan.grad_range
        self.none = np.empty((0, 0), dtype)
        self.flat_none = np.empty(0, dtype)

    def grad_w_of(self, index: int) -> np.ndarray:
        layer = self.plan.layers[index]
        flat = self.grad_w[index if self.chunks > 1 else 0]
        return flat[: layer.fan_in * layer.fan_out].reshape(layer.fan_in, layer.fan_out)

    def _step(self, mode: int, tiles: np.ndarray, first: bool, index: int, *, delta=None, w=None,
              delta_out=None, given=None, x=None, grad_w=None, blocks: int = 0,
              draw: tuple | None = None) -> None:  # fmt: skip
        """One kernel call; ``index`` is the layer whose accumulators ``delta_out`` feeds."""
        plan = self.plan
        low, high = self.hist_range or (-1.0, 1.0)
        grad_hist = (float(low), float(high), plan.grad_bins / (high - low))
        width = plan.widths[index]
        self.kernel(
            mode, tiles, self.blas,
            self.none if delta is None else delta, self.none if w is None else w,
            self.none if delta_out is None else delta_out,
            self.flat_none if given is None else given, self.none if x is None else x,
            self.none if grad_w is None else grad_w, blocks, first, grad_hist,
            self.hist_range is not None, self.moments[index], self.counts[index],
            self.extrema[index], self.hist[index],
            self.scratch(len(tiles), width, plan.grad_bins), self.product, self.workers,
            *(draw or self.weights.nothing),
        )  # fmt: skip

    def chunk(self, c: int, r0: int, rows: int, tiles: np.ndarray) -> None:
        """Back-propagates chunk ``c`` (rows ``[r0, r0 + rows)``) through every layer."""
        plan, buffers = self.plan, self.buffers
        depth = len(plan.layers)
        first = c == 0
        top = depth - 1
        width = plan.widths[-1]
        given = buffers.top[: rows * width]  # dL/da of the last layer, over its output
        if plan.output_grad is not None:
            given.reshape(rows, width)[:] = plan.output_grad[r0 : r0 + rows]
        else:
            fill_normal(given, plan.seed, _random.GRADS, 0, r0 * width)
        self._step(_SCALE, tiles, first, top, delta_out=buffers.deriv_of(top, rows),
                   given=given)  # fmt: skip
        for i in range(top, -1, -1):
            layer = plan.layers[i]
            delta = buffers.deriv_of(i, rows)
            x = buffers.input_of(i, rows)
            grad_w = self.grad_w_of(i)
            # the weights of the next step's GEMM (not kept, or kept but not drawn yet)
            draw = self.weights.job(i - 1) if i > 1 else None
            if i > 0:
                self.weights.draw(i)  # a no-op: drawn by the step before, or still there
                w = self.weights(i)
            blocks = -(-layer.fan_in // GRAD_ROWS)
            if self.blas == 0:  # pragma: no cover - without scipy-openblas32
                self._numpy_step(i, first, delta, x, grad_w, rows, tiles, draw)
            elif i > 0:
                self._step(_BACK, tiles, first, i - 1, delta=delta, w=w,
                           delta_out=buffers.deriv_of(i - 1, rows), x=x, grad_w=grad_w,
                           blocks=blocks, draw=draw)  # fmt: skip
            else:
                self._step(_NO_TILES, tiles, first, 0, delta=delta, x=x, grad_w=grad_w,
                           blocks=blocks)  # fmt: skip
            if self.chunks == 1:
                self._reduce(i)
        if self.hist_range is None:  # the first chunk, binned once its range is known
            largest = max(0.0, float(self.extrema[:, 2].max()))
            r = grad_range_rule(largest)
            self.hist_range = (-r, r)
            for i in range(depth):
                self._step(_BIN, tiles, first, i, delta_out=buffers.deriv_of(i, rows))

    def _numpy_step(self, i, first, delta, x, grad_w, rows, tiles, draw):  # pragma: no cover
        """A backward step with NumPy's GEMM on the whole chunk (no scipy-openblas32)."""
        if first:
            np.matmul(x.T, delta, out=grad_w)
        else:
            grad_w += x.T @ delta
        if draw is not None:
            out, (normal, *args) = draw
            fill_with(out, normal, tuple(args))
        if i > 0:
            product = delta @ self.weights(i).T
            self._step(_SCALE, tiles, first, i - 1, delta_out=self.buffers.deriv_of(i - 1, rows),
                       given=product.reshape(-1))  # fmt: skip

    def _reduce(self, index: int) -> None:
        std, sum_sq = _two_pass_std(self.grad_w_of(index).reshape(-1))
        self.weight_grad_std[index] = std
        self.weight_grad_norm[index] = math.sqrt(sum_sq)

    def result(self) -> GradRaw:
        """The accumulators as a run returns them (the weight gradients reduced)."""
        if self.chunks > 1:
            for i in range(len(self.plan.layers)):
                self._reduce(i)
        finite = np.isfinite(self.extrema[:, :2])
        assert self.hist_range is not None
        low, high = self.hist_range
        return GradRaw(
            unit_mean=[m[0] for m in self.moments],
            unit_m2=[m[1] for m in self.moments],
            min=np.where(finite[:, 0], self.extrema[:, 0], np.nan),
            max=np.where(finite[:, 1], self.extrema[:, 1], np.nan),
            hist=self.hist,
            below=self.counts[:, _BELOW].copy(),
            above=self.counts[:, _ABOVE].copy(),
            nonfinite=self.counts[:, _NONFINITE].copy(),
            hist_range=(float(low), float(high)),
            weight_grad_std=self.weight_grad_std,
            weight_grad_norm=self.weight_grad_norm,
            weight_std=self.weight_std,
        )


def run(plan: Plan) -> RawStats:
    """Propagate ``plan`` with the Numba kernels and return its raw accumulators."""
    dtype = plan.dtype
    t = dtype.type
    n = plan.n_samples
    chunk = min(plan.chunk_size, n)
    multiple = chunk_multiple((plan.input_dim, *plan.widths))
    if chunk % multiple and chunk < n:  # make_plan rounds it; a hand-made plan may not
        raise ValueError(
            f"chunk_size must be a multiple of {multiple} or at least n_samples, got {chunk}"
        )
    chunks = -(-n // chunk)
    dim = plan.input_dim
    depth = len(plan.layers)
    blas = _blas()[0 if dtype == np.float64 else 1]

    buffers = _Buffers(plan, chunk)
    weights = _Weights(plan, chunks, plan.gradients)
    biases = []
    for i, layer in enumerate(plan.layers):
        b = np.empty(layer.fan_out if layer.bias_std > 0 else 0, dtype=dtype)
        fill_normal(b, plan.seed, _random.BIASES, i, 0, t(layer.bias_std))  # z * bias_std
        biases.append(b)
    acts = [activation_args(layer.activation, dtype) for layer in plan.layers]
    saturation = [layer.activation.saturation or (math.nan, math.nan) for layer in plan.layers]
    low, high = plan.hist_range
    hist_range = (float(low), float(high), plan.bins / (high - low))

    bins = max(plan.bins, plan.grad_bins) if plan.gradients else plan.bins
    scratch = _Scratch(chunk, max(plan.widths), bins, dtype)
    moments = [np.zeros((4, layer.fan_out)) for layer in plan.layers]
    counts = np.zeros((depth, _COUNTERS), dtype=np.int64)
    extrema = np.tile(np.array([_INF, -_INF]), (depth, 1))
    deriv_sq = np.zeros(depth)
    hist = np.zeros((depth, plan.bins), dtype=np.int64)
    kept = (
        [np.empty((n, layer.fan_out), dtype=dtype) for layer in plan.layers]
        if plan.keep_activations
        else None
    )

    layer_kernel = _layer if parallel_allowed() else _layer_serial
    previous_threads = numba.get_num_threads()
    workers = _workers(plan)
    backward = (
        _Backward(plan, buffers, weights, scratch, chunks, workers, blas)
        if plan.gradients
        else None
    )
    numba.set_num_threads(workers)
    try:
        with _launch_guard():
            for c in range(chunks):
                r0, r1 = c * chunk, min(n, (c + 1) * chunk)
                rows = r1 - r0
                tiles = _tiles(rows)
                x = buffers.input_of(0, rows)
                if plan.inputs is None:
                    fill_normal(x, plan.seed, _random.INPUTS, 0, r0 * dim)
                else:
                    x[:] = plan.inputs[r0:r1]
                weights.draw(0)
                for i, layer in enumerate(plan.layers):
                    w = weights(i)
                    y = buffers.output_of(i, rows)
                    if blas == 0:  # pragma: no cover - without scipy-openblas32
                        np.matmul(x, w, out=y)
                    group = gemm_tiles(layer.fan_in, layer.fan_out)
                    blocks = column_blocks(layer.fan_in, layer.fan_out, n)
                    layer_kernel(x, w, y, biases[i], tiles, group, blocks, blas, acts[i],
                                 saturation[i], hist_range, moments[i], counts[i], extrema[i],
                                 deriv_sq[i : i + 1], hist[i],
                                 scratch(len(tiles), layer.fan_out, plan.bins),
                                 buffers.deriv_of(i, rows), workers,
                                 *weights.job(i + 1))  # fmt: skip
                    if backward is not None and c == 0:
                        backward.weight_std[i] = _two_pass_std(w.reshape(-1))[0]
                    if kept is not None:
                        kept[i][r0:r1] = y
                    x = y
                if backward is not None:
                    backward.chunk(c, r0, rows, tiles)
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
        deriv_sq_sum=deriv_sq,
        grads=None if backward is None else backward.result(),
    )
