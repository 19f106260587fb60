"""The generator of :mod:`initscope.random`, compiled by Numba from its own building blocks.

Nothing of the specification is written again here.  As iminuit's Numba path jits the very
NumPy functions it speeds up, the kernels below call random.py's building blocks
(``philox4x32``, ``uniform53``, ``log_unit``, ``box_muller``, ...) jitted as they are
written, on scalars.  Only the five primitives that NumPy spells on arrays (``as_bits``,
``from_bits``, ``cast``, ``select``, ``float_constants``) get a scalar form here.  No
``fastmath``: LLVM must not fuse a multiply and an add, and the numbers are the
specification's bit for bit (tests/test_numba.py checks every case).

What is left is how the kernels cut a fill into parallel jobs of :data:`SEGMENT` elements,
and the fork guard of numba's OpenMP layer.  Imported only by the numba backend.
"""

from __future__ import annotations

import os
from types import FunctionType, SimpleNamespace

import numba
import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, types
from numba.extending import intrinsic, overload

from .. import random as spec

__all__ = [
    "SEGMENT",
    "blocks",
    "draw_args",
    "draw_segment",
    "fill_normal",
    "fill_uniform",
    "fill_with",
    "next_job",
    "parallel_allowed",
]

#: Elements drawn per parallel job (``_core.SEGMENT``, the C++ kernel's kSegment).
SEGMENT = 1 << 16

# ---- the primitives on scalars ---------------------------------------------------------------


@intrinsic
def _bitcast(typingctx, x):
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
def _bitcast_to(typingctx, bits, like):
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


@overload(spec.as_bits, inline="always")
def _as_bits(x):
    if isinstance(x, types.Float):
        return lambda x: _bitcast(x)
    return None


@overload(spec.from_bits, inline="always")
def _from_bits(bits, like):
    if isinstance(bits, types.Integer) and isinstance(like, types.Float):
        return lambda bits, like: _bitcast_to(bits, like)
    return None


@overload(spec.cast, inline="always")
def _cast(value, like):
    convert = {types.float64: np.float64, types.float32: np.float32}.get(like)
    if convert is None:
        return None
    return lambda value, like: convert(value)


@intrinsic
def _choose(typingctx, condition, a, b):
    """LLVM's ``select``: no branch, and no phi node for Numba's inliner to get wrong."""
    common = typingctx.unify_types(a, b)
    if not isinstance(condition, types.Boolean) or common is None:
        return None
    sig = common(condition, a, b)

    def codegen(context, builder, signature, args):
        flag = context.is_true(builder, signature.args[0], args[0])
        x = context.cast(builder, args[1], signature.args[1], common)
        y = context.cast(builder, args[2], signature.args[2], common)
        return builder.select(flag, x, y)

    return sig, codegen


@overload(spec.select, inline="always")
def _select(condition, a, b):
    return lambda condition, a, b: _choose(condition, a, b)


@overload(spec.float_constants, inline="always")
def _float_constants(x):
    like = {types.float64: np.float64(0.0), types.float32: np.float32(0.0)}.get(x)
    if like is None:
        return None
    table = spec.float_constants(like)  # frozen into the kernel as constants
    return lambda x: table


def _jit_building_blocks(*names: str) -> SimpleNamespace:
    """The named building blocks of :mod:`initscope.random`, jitted as they are written.

    Numba resolves a function's global names when it compiles it, and a block calls other
    blocks: so each is compiled from a clone that shares one copy of random.py's globals,
    in which the blocks are replaced by their jitted forms.  ``inline="always"``: Numba
    puts them into the kernels' loops, which LLVM then vectorises.  (Registering the blocks
    as inlined overloads instead trips Numba's inliner, which loses the scope of a loop's
    variables when it inlines a function with a loop twice into one caller.)
    """
    namespace = dict(vars(spec))
    for name in names:
        fn = namespace[name]
        clone = FunctionType(fn.__code__, namespace, name, fn.__defaults__, fn.__closure__)
        namespace[name] = njit(inline="always")(clone)
    return SimpleNamespace(**{name: namespace[name] for name in names})


blocks = _jit_building_blocks(
    "philox4x32", "block_words", "uniform53", "uniform24", "horner", "log_unit", "quarter_turns",
    "sincos_2pi", "box_muller", "block_uniforms64", "signed_word", "normal_radius",
    "normal_angle", "block_normals64", "block_values32",
)  # fmt: skip
block_words = blocks.block_words
block_uniforms64 = blocks.block_uniforms64
block_normals64 = blocks.block_normals64
block_values32 = blocks.block_values32


def _four_values(words, normal, like):
    """The four values of a block (float64 normals, float32 normals or uniforms), in the
    dtype of ``like``."""
    raise NotImplementedError("_four_values is called from jitted code only")


@overload(_four_values, inline="always")
def _four_values_impl(words, normal, like):
    if like == types.float64:
        return lambda words, normal, like: block_normals64(words)
    if like == types.float32:
        return lambda words, normal, like: block_values32(words, normal)
    return None


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


# ---- filling arrays ----------------------------------------------------------------------

_ONE_U64 = np.uint64(1)
_TWO_U64 = np.uint64(2)
_THREE_U64 = np.uint64(3)


@njit(error_model="numpy")
def _head_tail2(out, b, lo, hi, normal, k0, k1, stream, layer, start, scale, shift):
    """The values of block ``b`` that lie in ``[lo, hi)`` (a block cut by a segment's ends),
    two per block (float64 uniforms).

    Not inlined: a few values per segment, so compiled once rather than vectorised twice.
    """
    words = block_words(np.uint64(b), stream, layer, (k0, k1))
    z0, z1 = block_uniforms64(words)
    if lo <= 2 * b < hi:
        out[2 * b - start] = z0 * scale + shift
    if lo <= 2 * b + 1 < hi:
        out[2 * b + 1 - start] = z1 * scale + shift


@njit(error_model="numpy")
def _head_tail4(out, b, lo, hi, normal, k0, k1, stream, layer, start, scale, shift):
    """As :func:`_head_tail2`, four values per block (float64 normals, float32)."""
    words = block_words(np.uint64(b), stream, layer, (k0, k1))
    values = _four_values(words, normal, scale)
    for j in range(4):
        e = 4 * b + j
        if lo <= e < hi:
            out[e - start] = values[j] * scale + shift


@njit(inline="always")
def _segment2(out, job, normal, k0, k1, stream, layer, start, scale, shift):
    """Elements ``[lo, hi)`` of job ``job``: ``value * scale + shift``, two per block."""
    lo = start + job * SEGMENT
    hi = min(start + out.size, lo + SEGMENT)
    first = (lo + 1) // 2  # blocks [first, last) lie inside [lo, hi)
    last = hi // 2
    if lo % 2:
        _head_tail2(out, lo // 2, lo, hi, normal, k0, k1, stream, layer, start, scale, shift)
    for b in range(first, last):
        words = block_words(np.uint64(b), stream, layer, (k0, k1))
        z0, z1 = block_uniforms64(words)
        i = np.uint64(2 * b - start)  # unsigned: no negative-index wraparound, which
        out[i] = z0 * scale + shift  # would keep LLVM from vectorizing the loop
        out[i + _ONE_U64] = z1 * scale + shift
    if hi % 2 and hi // 2 >= first:  # (a block cut at both ends was done above)
        _head_tail2(out, hi // 2, lo, hi, normal, k0, k1, stream, layer, start, scale, shift)


@njit(inline="always")
def _segment4(out, job, normal, k0, k1, stream, layer, start, scale, shift):
    """As :func:`_segment2`, four values per block."""
    lo = start + job * SEGMENT
    hi = min(start + out.size, lo + SEGMENT)
    first = (lo + 3) // 4  # blocks [first, last) lie inside [lo, hi)
    last = hi // 4
    if lo % 4:
        _head_tail4(out, lo // 4, lo, hi, normal, k0, k1, stream, layer, start, scale, shift)
    for b in range(first, last):
        words = block_words(np.uint64(b), stream, layer, (k0, k1))
        a0, a1, a2, a3 = _four_values(words, normal, scale)
        i = np.uint64(4 * b - start)
        out[i] = a0 * scale + shift
        out[i + _ONE_U64] = a1 * scale + shift
        out[i + _TWO_U64] = a2 * scale + shift
        out[i + _THREE_U64] = a3 * scale + shift
    if hi % 4 and hi // 4 >= first:
        _head_tail4(out, hi // 4, lo, hi, normal, k0, k1, stream, layer, start, scale, shift)


# One job function per (dtype, kind), so that LLVM sees a constant kind and vectorises the
# loops; not inlined, so each is compiled once and shared by the kernels that call it.


@njit(error_model="numpy")
def _normal64_job(out, job, k0, k1, stream, layer, start, scale, shift):
    _segment4(out, job, True, k0, k1, stream, layer, start, scale, shift)


@njit(error_model="numpy")
def _uniform64_job(out, job, k0, k1, stream, layer, start, scale, shift):
    _segment2(out, job, False, k0, k1, stream, layer, start, scale, shift)


@njit(error_model="numpy")
def _normal32_job(out, job, k0, k1, stream, layer, start, scale, shift):
    _segment4(out, job, True, k0, k1, stream, layer, start, scale, shift)


@njit(error_model="numpy")
def _uniform32_job(out, job, k0, k1, stream, layer, start, scale, shift):
    _segment4(out, job, False, k0, k1, stream, layer, start, scale, shift)


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


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _fill(out, workers, normal, k0, k1, stream, layer, start, scale, shift):
    jobs = (out.size + SEGMENT - 1) // SEGMENT
    counter = np.zeros(1, dtype=np.int64)
    for _ in prange(min(workers, jobs)):
        job = next_job(counter)
        while job < jobs:
            draw_segment(out, job, normal, k0, k1, stream, layer, start, scale, shift)
            job = next_job(counter)


@njit(nogil=True, cache=True, error_model="numpy")
def _fill_serial(out, normal, k0, k1, stream, layer, start, scale, shift):
    """The fill on the calling thread alone (in a process forked after OpenMP ran)."""
    for job in range((out.size + SEGMENT - 1) // SEGMENT):
        draw_segment(out, job, normal, k0, k1, stream, layer, start, scale, shift)


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
        _fill_serial(out.reshape(-1), normal, *args)
        return
    # the thread count read here: numba's get_num_threads in a kernel would not be cacheable
    _fill(out.reshape(-1), get_num_threads(), normal, *args)


def fill_normal(out, seed, stream, layer, start=0, scale=None, shift=None) -> None:
    """``out.flat[i] = random.normal(seed, stream, layer, start, out.size)[i]``, in place.

    With ``scale`` (and ``shift``), ``z * scale (+ shift)`` rounded in the dtype, as
    ``schemes.draw`` and the reference's biases compute it.
    """
    fill_with(out, True, draw_args(seed, stream, layer, start, scale, shift, out.dtype))


def fill_uniform(out, seed, stream, layer, start=0, scale=None, shift=None) -> None:
    """``out.flat[i] = random.uniform(seed, stream, layer, start, out.size)[i]``, in place."""
    fill_with(out, False, draw_args(seed, stream, layer, start, scale, shift, out.dtype))
