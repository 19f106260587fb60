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
  one single-threaded GEMM over exactly those rows (``cblas_?gemm`` of the
  ``scipy-openblas32`` wheel, the C++ kernel's OpenBLAS): every GEMM call's shape depends
  on ``n_samples`` alone, so any OpenBLAS kernel computes each sample alike for any chunk
  size or thread count.  One worker per thread takes tiles in order as it finishes (an
  atomic counter: numba's ``prange`` alone hands each thread a fixed block) and runs the
  GEMM, then, while the tile is in cache, the bias, the activation and every statistic.
  Workers that run out of tiles draw the next layer's weights.  The tiles' partial
  statistics are merged in tile order, so results are bit-identical for any number of
  threads and any chunk size.
- The activations are the C++ kernel's (:mod:`._numba_activations`, a copy of
  ``activations.hpp``), not :mod:`initscope.activations`' NumPy formulas jitted: those call
  libm, which LLVM cannot vectorise, and a tanh network at the seed shape would take
  1.5 (float64) to 1.9 (float32) times as long.  So everything is bit-identical across
  the two compiled backends: random numbers, pre-activations (the same GEMM calls),
  activations and statistics (the same merge order).  Against the NumPy reference, random
  numbers are bit-identical and the rest agrees to rounding (its GEMM and its activations
  are NumPy's).

Every kernel is ``@njit(nogil=True, cache=True)``: compiled on first use (about 25 s per
dtype on a 2-core machine) and cached on disk (``__pycache__`` next to this file, or
``NUMBA_CACHE_DIR``), so later processes load it in about a second.  Numba's cache checks
only the source file of the kernel it loads, and ``_layer`` compiles in code of
``random.py``, ``_numba_generator.py`` and ``_numba_activations.py``: after editing one of
those alone, clear the cache (installing replaces every file, which invalidates it).
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
from ..plan import Plan
from ..result import RawStats
from ._numba_activations import activate_row, activation_args
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
    "activate",
    "check_available",
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
        Two chunk buffers of the widest layer, the weights as the kernels keep them, one
        histogram of ``bins + 3`` slots per tile of a chunk, and the kept activations.
    """
    width = max(plan.input_dim, *plan.widths)
    buffers = 2 * plan.chunk_size * width * plan.dtype.itemsize
    hist = (plan.bins + 3) * 8 * (plan.chunk_size // TILE_ROWS + 2)
    return buffers + plan.weight_bytes(WEIGHT_CACHE_BYTES) + hist + plan.kept_bytes()


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


# ---- the activations -------------------------------------------------------------------------


@njit(nogil=True, cache=True, error_model="numpy")
def _activate_array(code, slope, alpha, flush, x):
    out = np.empty_like(x)
    activate_row(code, slope, alpha, flush, x, out)
    return out


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
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {x.dtype}")
    out = _activate_array(*activation_args(activation, x.dtype), x.reshape(-1))  # type: ignore[call-arg]
    return out.reshape(x.shape)


# ---- the fused layer kernel ---------------------------------------------------------------

_DBL_MAX = float(np.finfo(np.float64).max)
_INF = math.inf

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
        activate_row(code, slope, alpha, flush, h_row, post)
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
    begin, rows = tiles[job, 0], tiles[job, 1]
    if blas != 0:
        _gemm(blas, x, begin, w, y, begin, rows)
    _tile_stats(y, begin, rows, bias, act, saturation[0], saturation[1],
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

    ``x`` (rows, fan_in) and ``y`` (rows, fan_out) are the chunk's buffers; ``tiles``
    (T, 2) holds each tile's first row and its number of rows.  ``blas`` is the address of the
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
    if chunk % TILE_ROWS and chunk < n:  # make_plan rounds it; a hand-made plan may not
        raise ValueError(
            f"chunk_size must be a multiple of {TILE_ROWS} or at least n_samples, got {chunk}"
        )
    chunks = -(-n // chunk)
    dim = plan.input_dim
    width = max(dim, *plan.widths)
    depth = len(plan.layers)
    blas = _blas()[0 if dtype == np.float64 else 1]

    buffers = [np.empty(chunk * width, dtype=dtype) for _ in range(2)]
    weights = _Weights(plan, chunks)
    biases = []
    for i, layer in enumerate(plan.layers):
        b = np.empty(layer.fan_out if layer.bias_std > 0 else 0, dtype=dtype)
        fill_normal(b, plan.seed, _random.BIASES, i, 0, t(layer.bias_std))  # z * bias_std
        biases.append(b)
    acts = [activation_args(layer.activation, dtype) for layer in plan.layers]
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
                tiles = _tiles(rows)
                x = buffers[0][: rows * dim].reshape(rows, dim)
                if plan.inputs is not None:
                    x[:] = plan.inputs[r0:r1]
                else:
                    fill_normal(x, plan.seed, _random.INPUTS, 0, r0 * dim)
                weights.draw(0)
                for i, layer in enumerate(plan.layers):
                    w = weights(i)
                    y = buffers[1][: rows * layer.fan_out].reshape(rows, layer.fan_out)
                    if blas == 0:  # pragma: no cover - without scipy-openblas32
                        np.matmul(x, w, out=y)
                    layer_kernel(x, w, y, biases[i], tiles, blas, acts[i], saturation[i],
                                 hist_range, moments[i], counts[i], extrema[i], hist[i],
                                 scratch(len(tiles), layer.fan_out), workers,
                                 *weights.job(i + 1))  # fmt: skip
                    if kept is not None:
                        kept[i][r0:r1] = y
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
