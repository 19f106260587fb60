"""Checking the arguments of :func:`initscope.propagate` once, for every backend.

:func:`make_plan` turns user arguments into a :class:`Plan`: plain numbers, resolved
activations, each layer's weight distribution (or its ready-made matrix), all checked
before any heavy work, so every backend raises the same errors.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._checks import float_dtype, positive_int, real
from .activations import Activation
from .activations import activation as resolve_activation
from .schemes import Distribution, Scheme, scheme

__all__ = ["Layer", "Plan", "estimate_memory", "make_plan"]

#: Rows of samples a backend holds at once, by default, is chosen so that the two
#: activation buffers of a chunk take about this many bytes (with gradients: the ``2L + 2``
#: buffers of the forward and backward passes, see :func:`default_chunk`).
CHUNK_BYTES = 128 * 2**20
#: ...but never fewer than min(widest layer, this) rows: weights too large to keep are drawn
#: again for every chunk, at a cost of about 90 / rows of the chunk's GEMM time.
CHUNK_MIN_ROWS = 4096
#: Samples ``[t * TILE_ROWS, (t + 1) * TILE_ROWS)`` are tile ``t`` of the compiled backends,
#: one GEMM call each, and chunks hold whole tiles: every GEMM call's shape then depends on
#: the number of samples alone, never on the chunk or the threads, so every BLAS kernel
#: computes each sample alike.  The C++ header (``kernel.hpp``, ``_core.TILE_ROWS``) is
#: the source of this number; it is repeated here for machines without the extension.
TILE_ROWS = 240
#: Wide layers (``fan_in * fan_out >= WIDE_WEIGHTS``) multiply ``WIDE_TILES`` tiles per GEMM
#: call (each call packs the whole weight matrix again); chunks then hold whole groups of
#: tiles.  The statistics stay per tile.  ``kernel.hpp`` (``_core.WIDE_TILES``) is the source.
WIDE_TILES = 4
WIDE_WEIGHTS = 2**23


def gemm_tiles(fan_in: int, fan_out: int) -> int:
    """Tiles per GEMM call of a layer (``kernel.hpp``, ``gemm_tiles``)."""
    return WIDE_TILES if fan_in * fan_out >= WIDE_WEIGHTS else 1


#: Layers ``2 * BLOCK_COLUMNS`` units wide or more multiply in blocks of about
#: ``BLOCK_COLUMNS`` columns, one GEMM call per tile (group) and block; so do layers whose
#: samples make fewer than ``MIN_JOBS`` GEMM calls of rows, in up to ``MIN_JOBS / calls``
#: blocks of ``MIN_BLOCK_COLUMNS`` columns or more.  ``kernel.hpp`` (``_core.BLOCK_COLUMNS``,
#: ``_core.MIN_JOBS``, ``_core.MIN_BLOCK_COLUMNS``) is the source.
BLOCK_COLUMNS = 1024
MIN_JOBS = 4
MIN_BLOCK_COLUMNS = 128


def column_blocks(fan_in: int, fan_out: int, n_samples: int) -> int:
    """Blocks of columns of a layer (``kernel.hpp``, ``column_blocks``): by its shape and
    the number of samples alone, never by the chunk or the threads."""
    tiles = -(-n_samples // TILE_ROWS)
    calls = -(-tiles // gemm_tiles(fan_in, fan_out))  # GEMM calls of rows
    few = min(-(-MIN_JOBS // calls), fan_out // MIN_BLOCK_COLUMNS)
    return max(fan_out // BLOCK_COLUMNS, few, 1)


def block_column(b: int, blocks: int, fan_out: int) -> int:
    """The first column of block ``b`` of ``blocks`` (``fan_out`` for ``b == blocks``): a
    multiple of 8 (``kernel.hpp``, ``block_column``)."""
    return fan_out if b == blocks else b * fan_out // blocks // 8 * 8


def chunk_multiple(widths: Sequence[int]) -> int:
    """Rows a chunk is a multiple of (unless it holds every sample): :data:`TILE_ROWS`, times
    :data:`WIDE_TILES` where a layer is wide.  ``widths`` are the input's and every layer's."""
    return TILE_ROWS * max(gemm_tiles(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))


#: More bins than the C++ kernel's int histogram slots (bins plus below, above, NaN) hold.
MAX_BINS = 2**31 - 4


@dataclass(frozen=True)
class Layer:
    """One dense layer: ``H = act(X @ W + b)``."""

    fan_in: int
    fan_out: int
    activation: Activation
    scheme: Scheme
    distribution: Distribution | None  # drawn in place by the kernels, or
    weights: NDArray | None  # a ready-made (fan_in, fan_out) matrix
    bias_std: float
    init_name: str = ""


@dataclass(frozen=True)
class Plan:
    """A checked experiment, the input of every backend."""

    n_samples: int
    input_dim: int
    layers: tuple[Layer, ...]
    seed: int
    dtype: np.dtype
    inputs: NDArray | None
    bins: int
    hist_range: tuple[float, float]
    threads: int
    chunk_size: int
    keep_activations: bool
    gradients: bool
    output_grad: NDArray | None  # (n_samples, widths[-1]) in the run's dtype, or drawn
    grad_bins: int
    grad_range: tuple[float, float] | None  # None: chosen from the first tile's gradients
    widths: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(layer.fan_out for layer in self.layers))

    def with_weights(self) -> Plan:
        """This plan with the matrices of the schemes that are not i.i.d. built (the plan
        itself when every layer's weights are drawn by the kernels or given)."""
        if all(
            layer.distribution is not None or layer.weights is not None for layer in self.layers
        ):
            return self
        layers = tuple(
            replace(
                layer,
                weights=layer.scheme.sample(
                    layer.fan_in, layer.fan_out, seed=self.seed, layer=i, dtype=self.dtype
                ),
            )
            if layer.distribution is None and layer.weights is None
            else layer
            for i, layer in enumerate(self.layers)
        )
        return replace(self, layers=layers)

    def weight_bytes(self, cache_bytes: int) -> int:
        """Bytes of weights as a chunked kernel keeps them: drawn weights of every layer when
        there are several chunks (or a backward pass) and they take at most ``cache_bytes``,
        else two rotating buffers of the largest; matrices of schemes built in NumPy always
        in full."""
        item = self.dtype.itemsize
        sizes = [(layer.fan_in * layer.fan_out * item, layer) for layer in self.layers]
        drawn = [size for size, layer in sizes if layer.distribution is not None]
        built = [size for size, layer in sizes if layer.distribution is None]
        kept_drawn = (self.chunks > 1 or self.gradients) and sum(drawn) <= cache_bytes
        return (sum(drawn) if kept_drawn else 2 * max(drawn, default=0)) + sum(built)

    @property
    def chunks(self) -> int:
        """Chunks of ``chunk_size`` samples the run is cut into."""
        return -(-self.n_samples // self.chunk_size)

    def gradient_bytes(self) -> int:
        """Bytes a chunked kernel holds for a run with gradients (0 without ``gradients``),
        in place of the forward pass's two chunk buffers.

        Per chunk of samples, in the run's dtype: every layer's input ``a_0 .. a_{L-1}``,
        every layer's ``phi'(h_l)`` (which ``delta_l`` overwrites) and the last layer's
        output (then the output gradient); and the weight-gradient accumulators, every
        layer's when the run has several chunks (summed over chunks in a fixed order), the
        largest layer's when it has one.
        """
        if not self.gradients:
            return 0
        item = self.dtype.itemsize
        rows = min(self.chunk_size, self.n_samples)
        values = sum(layer.fan_in + layer.fan_out for layer in self.layers) + self.widths[-1]
        sizes = [layer.fan_in * layer.fan_out * item for layer in self.layers]
        accumulators = sum(sizes) if self.chunks > 1 else max(sizes)
        return rows * values * item + accumulators

    def kept_bytes(self) -> int:
        """Bytes of the activations ``keep_activations`` returns (0 without it)."""
        if not self.keep_activations:
            return 0
        return self.n_samples * sum(self.widths) * self.dtype.itemsize


def _widths(widths: Any) -> tuple[int, ...]:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence | np.ndarray):
        raise TypeError(f"widths must be a sequence of layer sizes, got {widths!r}")
    if len(widths) == 0:
        raise ValueError("widths must name at least one layer, got an empty sequence")
    return tuple(positive_int(w, f"widths[{i}]") for i, w in enumerate(widths))


def _per_layer(value: Any, depth: int, name: str, resolve: Any = None) -> list[Any]:
    """A list gives one value per layer; anything else is used for every layer.  With
    ``resolve``, each value is passed through it, a value shared by every layer once."""
    if isinstance(value, list):
        if len(value) != depth:
            raise ValueError(f"{name} has {len(value)} entries for {depth} layers")
        return [resolve(v) for v in value] if resolve is not None else list(value)
    return [value if resolve is None else resolve(value)] * depth


def _activation(value: Any) -> Activation:
    return resolve_activation(*value) if isinstance(value, tuple) else resolve_activation(value)


def _bias_std(value: Any) -> float:
    b = real(value, "bias")
    if b < 0:
        raise ValueError(f"bias is the std of the biases and must be >= 0, got {b}")
    return b


def _threads(threads: Any) -> int:
    if threads is None:
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    return positive_int(threads, "threads")


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed


def _inputs(inputs: Any, input_dim: int | None, dtype: np.dtype) -> NDArray:
    if not isinstance(inputs, np.ndarray):
        raise TypeError(f"inputs must be a numpy array, got {type(inputs).__name__}")
    if inputs.ndim != 2 or inputs.shape[0] == 0 or inputs.shape[1] == 0:
        raise ValueError(f"inputs must have shape (n_samples, input_dim), got {inputs.shape}")
    if input_dim is not None and inputs.shape[1] != input_dim:
        raise ValueError(f"inputs has {inputs.shape[1]} columns but input_dim is {input_dim}")
    if not (np.issubdtype(inputs.dtype, np.floating) or np.issubdtype(inputs.dtype, np.integer)):
        raise TypeError(f"inputs must hold real numbers, got dtype {inputs.dtype}")
    return np.ascontiguousarray(inputs, dtype=dtype)


def _output_grad(value: Any, n_samples: int, width: int, dtype: np.dtype) -> NDArray:
    """The user's ``dL/da`` of the last layer, checked and in the run's dtype."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"output_grad must be a numpy array, got {type(value).__name__}")
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise TypeError(f"output_grad must hold real numbers, got dtype {value.dtype}")
    if value.ndim != 2 or value.shape[1] != width:
        raise ValueError(
            f"output_grad must have shape (n_samples, widths[-1]) = ({n_samples}, {width}), "
            f"got {value.shape}"
        )
    if value.shape[0] != n_samples:
        raise ValueError(
            f"output_grad has {value.shape[0]} rows but the run has {n_samples} samples"
        )
    with np.errstate(over="ignore"):  # what overflows the run's dtype is refused below
        grad = np.ascontiguousarray(value, dtype=dtype)
    if not np.isfinite(grad).all():
        raise ValueError(f"output_grad must be finite (in {dtype.name}), got NaN or inf")
    return grad


def _range(value: Any, name: str) -> tuple[float, float]:
    """A histogram range ``(low, high)`` with ``low < high``."""
    try:
        low, high = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}") from None
    low, high = real(low, f"{name}[0]"), real(high, f"{name}[1]")
    if not low < high:
        raise ValueError(f"{name} must have low < high, got ({low}, {high})")
    return low, high


def _bins(value: Any, name: str) -> int:
    n_bins = positive_int(value, name)
    if n_bins > MAX_BINS:
        raise ValueError(f"{name} must be at most 2**31 - 4, got {n_bins}")
    return n_bins


def grad_range_rule(max_abs: float) -> float:
    """R of the default gradient histogram range ``(-R, R)``: the power of two at or above
    ``max_abs`` (the largest finite ``|delta|`` of the first tile over all layers), 1 if that
    is 0, and ``max_abs`` itself beyond 2**1023 (where the next power of two is not a float).
    ``frexp`` is exact, so every backend finds the same R (propagate.hpp, grad_range_rule)."""
    if not max_abs > 0.0:
        return 1.0
    mantissa, exponent = math.frexp(max_abs)
    return max_abs if mantissa == 0.5 or exponent > 1023 else math.ldexp(1.0, exponent)


def default_chunk(
    n_samples: int, widths: Sequence[int], itemsize: int, gradients: bool = False
) -> int:
    """Rows held at once: all of them if they fit in :data:`CHUNK_BYTES`, else a bounded slice.

    ``widths`` are the input's and every layer's.  A slice has at least
    ``min(max(widths), CHUNK_MIN_ROWS)`` rows, so that redrawing the weights for each slice
    stays a few % of its GEMM, while the two chunk buffers take no more memory than the two
    weight buffers a wide network needs anyway; it holds whole tiles (:data:`TILE_ROWS`).
    With ``gradients`` a row costs ``2L + 2`` buffers of the widest layer (``L`` layers: the
    forward buffers and what the backward pass keeps, see :meth:`Plan.gradient_bytes`)
    instead of two.
    """
    width = max(widths)
    buffers = 2 * (len(widths) - 1) + 2 if gradients else 2
    rows = max(CHUNK_BYTES // (buffers * width * itemsize), min(width, CHUNK_MIN_ROWS), TILE_ROWS)
    return whole_tiles(rows, n_samples, widths)


def whole_tiles(rows: int, n_samples: int, widths: Sequence[int]) -> int:
    """``rows`` rounded up to whole tiles (:func:`chunk_multiple`), at most ``n_samples``: the
    chunk a run uses."""
    multiple = chunk_multiple(widths)
    return min(n_samples, -(-rows // multiple) * multiple)


def estimate_memory(plan: Plan, backend: str = "cpp") -> int:
    """Bytes a run of ``plan`` on ``backend`` needs beyond the interpreter: buffers, weights,
    histograms and kept activations, as that backend holds them (its ``estimate_memory``)."""
    from .backends import get_backend

    return int(get_backend(backend)[1].estimate_memory(plan))


def make_plan(
    widths: Any,
    *,
    init: Any = "xavier",
    activation: Any = "tanh",
    n_samples: Any = 1000,
    input_dim: Any = None,
    inputs: Any = None,
    bias: Any = 0.0,
    seed: Any = 0,
    dtype: Any = "float64",
    bins: Any = 30,
    hist_range: Any = (-1.0, 1.0),
    threads: Any = None,
    chunk_size: Any = None,
    keep_activations: bool = False,
    gradients: Any = False,
    output_grad: Any = None,
    grad_bins: Any = None,
    grad_range: Any = None,
    build_weights: bool = True,
) -> Plan:
    """Check every argument and resolve schemes and activations into a :class:`Plan`.

    The arguments are :func:`initscope.propagate`'s; ``build_weights=False`` leaves the
    matrices of schemes built in NumPy to :meth:`Plan.with_weights`, after the memory check.
    """
    sizes = _widths(widths)
    depth = len(sizes)
    run_dtype = float_dtype(dtype)
    run_seed = _seed(seed)
    n = positive_int(n_samples, "n_samples")
    dim = None if input_dim is None else positive_int(input_dim, "input_dim")
    data = None
    if inputs is not None:
        data = _inputs(inputs, dim, run_dtype)
        n, dim = data.shape
    if dim is None:
        dim = sizes[0]
    n_bins = _bins(bins, "bins")
    low, high = _range(hist_range, "hist_range")
    if not isinstance(gradients, (bool, np.bool_)):
        raise TypeError(f"gradients must be True or False, got {gradients!r}")
    gradients = bool(gradients)
    grad = None
    if output_grad is not None:
        if not gradients:
            raise ValueError(
                "output_grad is given but gradients is False: pass gradients=True to "
                "back-propagate it"
            )
        grad = _output_grad(output_grad, n, sizes[-1], run_dtype)
    n_grad_bins = n_bins if grad_bins is None else _bins(grad_bins, "grad_bins")
    run_grad_range = None if grad_range is None else _range(grad_range, "grad_range")
    n_threads = _threads(threads)
    acts = _per_layer(activation, depth, "activation", _activation)
    inits = _per_layer(init, depth, "init")
    schemes = _per_layer(init, depth, "init", scheme)
    biases = _per_layer(bias, depth, "bias", _bias_std)
    chunk = (
        default_chunk(n, (dim, *sizes), run_dtype.itemsize, gradients)
        if chunk_size is None
        else whole_tiles(positive_int(chunk_size, "chunk_size"), n, (dim, *sizes))
    )
    if not isinstance(keep_activations, (bool, np.bool_)):
        raise TypeError(f"keep_activations must be True or False, got {keep_activations!r}")

    layers = []
    fan_in = dim
    # a deep network repeats its layers: each distinct (scheme, shape) is resolved once
    distributions: dict[tuple[int, int, int], Distribution | None] = {}
    for i, (fan_out, act, sch, b, given) in enumerate(
        zip(sizes, acts, schemes, biases, inits, strict=True)
    ):
        key = (id(sch), fan_in, fan_out)
        if key not in distributions:
            distributions[key] = sch.distribution(fan_in, fan_out)
        dist = distributions[key]
        weights = None
        if dist is None and build_weights:
            weights = sch.sample(fan_in, fan_out, seed=run_seed, layer=i, dtype=run_dtype)
        if dist is not None and not (np.isfinite(dist.a) and np.isfinite(dist.b)):
            raise ValueError(f"init {sch.name} gives non-finite parameters for layer {i}")
        name = given if isinstance(given, str) else sch.name
        layers.append(Layer(fan_in, fan_out, act, sch, dist, weights, b, name))
        fan_in = fan_out
    return Plan(
        n_samples=n,
        input_dim=dim,
        layers=tuple(layers),
        seed=run_seed,
        dtype=run_dtype,
        inputs=data,
        bins=n_bins,
        hist_range=(low, high),
        threads=n_threads,
        chunk_size=chunk,
        keep_activations=bool(keep_activations),
        gradients=gradients,
        output_grad=grad,
        grad_bins=n_grad_bins,
        grad_range=run_grad_range,
    )
