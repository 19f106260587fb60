"""Checking the arguments of :func:`initscope.propagate` once, for every backend.

:func:`make_plan` turns user arguments into a :class:`Plan`: plain numbers, resolved
activations, each layer's weight distribution (or its ready-made matrix), all checked
before any heavy work, so every backend raises the same errors.
"""

from __future__ import annotations

import numbers
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .activations import Activation, activation
from .schemes import Distribution, Scheme, scheme

__all__ = ["Layer", "Plan", "estimate_memory", "make_plan"]

#: Rows of samples a backend holds at once, by default, is chosen so that the two
#: activation buffers of a chunk take about this many bytes.
CHUNK_BYTES = 128 * 2**20
#: ...but never fewer than min(widest layer, this) rows: weights too large to keep are drawn
#: again for every chunk, at a cost of about 90 / rows of the chunk's GEMM time.
CHUNK_MIN_ROWS = 4096
#: Tiles of the compiled backends: fixed runs of this many samples (a multiple of the 48-row
#: alignment of their GEMM calls).
TILE_ROWS = 240
#: The C++ kernel's histogram: this many interleaved copies of the bins per thread.
HIST_COPIES = 8
#: The compiled backends keep drawn weights across chunks while they take at most this many
#: bytes (else two buffers rotate and each chunk draws them again).
WEIGHT_CACHE_BYTES = 128 * 2**20

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
    widths: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(layer.fan_out for layer in self.layers))

    def with_weights(self) -> Plan:
        """This plan with the matrices of the schemes that are not i.i.d. built."""
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


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = operator.index(value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _widths(widths: Any) -> tuple[int, ...]:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence | np.ndarray):
        raise TypeError(f"widths must be a sequence of layer sizes, got {widths!r}")
    if len(widths) == 0:
        raise ValueError("widths must name at least one layer, got an empty sequence")
    return tuple(_positive_int(w, f"widths[{i}]") for i, w in enumerate(widths))


def _per_layer(value: Any, depth: int, name: str) -> list[Any]:
    """A list gives one value per layer; anything else is used for every layer."""
    if isinstance(value, list):
        if len(value) != depth:
            raise ValueError(f"{name} has {len(value)} entries for {depth} layers")
        return list(value)
    return [value] * depth


def _dtype(dtype: Any) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _threads(threads: Any) -> int:
    if threads is None:
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    return _positive_int(threads, "threads")


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


def default_chunk(n_samples: int, widths: Sequence[int], itemsize: int) -> int:
    """Rows held at once: all of them if they fit in :data:`CHUNK_BYTES`, else a bounded slice.

    A slice has at least ``min(max(widths), CHUNK_MIN_ROWS)`` rows, so that redrawing the
    weights for each slice stays a few % of its GEMM, while the two chunk buffers take no
    more memory than the two weight buffers a wide network needs anyway.
    """
    width = max(widths)
    rows = max(CHUNK_BYTES // (2 * width * itemsize), min(width, CHUNK_MIN_ROWS), 256)
    return max(1, min(n_samples, rows))


def estimate_memory(plan: Plan, backend: str = "cpp") -> int:
    """Bytes a run needs beyond the interpreter: buffers, weights, kept activations.

    The reference backend holds whole layers (about six float64 copies of the widest one);
    the others hold two chunk buffers, and drawn weights as the kernels keep them: all layers'
    when there are several chunks and they fit :data:`WEIGHT_CACHE_BYTES`, else two rotating
    buffers of the largest.  Matrices of schemes built in NumPy count in full, and so do the
    histograms' counters (a lot of memory only for millions of bins).
    """
    item = plan.dtype.itemsize
    width = max(plan.input_dim, *plan.widths)
    if backend == "numpy":
        buffers = 6 * plan.n_samples * width * 8
    else:
        buffers = 2 * plan.chunk_size * width * item
    sizes = [layer.fan_in * layer.fan_out * item for layer in plan.layers]
    is_drawn = [layer.distribution is not None for layer in plan.layers]
    drawn = [size for size, d in zip(sizes, is_drawn, strict=True) if d]
    chunks = -(-plan.n_samples // plan.chunk_size)
    if backend != "numpy" and chunks > 1 and sum(drawn) <= WEIGHT_CACHE_BYTES:
        weights = sum(drawn)
    else:
        weights = 2 * max(drawn, default=0)
    weights += sum(size for size, d in zip(sizes, is_drawn, strict=True) if not d)
    # histogram slots (bins, below, above, NaN) of 8 bytes: per thread and copy in the C++
    # kernel, per tile of a chunk in the numba one, per layer in the reference
    slots = (plan.bins + 3) * 8
    if backend == "cpp":
        hist = plan.threads * HIST_COPIES * slots
    elif backend == "numba":
        hist = (plan.chunk_size // TILE_ROWS + 2) * slots
    else:
        hist = 2 * slots
    kept = plan.n_samples * sum(plan.widths) * item if plan.keep_activations else 0
    return buffers + weights + hist + kept


def make_plan(
    widths: Any,
    *,
    init: Any = "xavier",
    activation_: Any = "tanh",
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
    build_weights: bool = True,
) -> Plan:
    """Check every argument and resolve schemes and activations into a :class:`Plan`."""
    sizes = _widths(widths)
    depth = len(sizes)
    dtype_ = _dtype(dtype)
    seed_ = _seed(seed)
    n = _positive_int(n_samples, "n_samples")
    dim = None if input_dim is None else _positive_int(input_dim, "input_dim")
    data = None
    if inputs is not None:
        data = _inputs(inputs, dim, dtype_)
        n, dim = data.shape
    if dim is None:
        dim = sizes[0]
    bins_ = _positive_int(bins, "bins")
    if bins_ > MAX_BINS:
        raise ValueError(f"bins must be at most 2**31 - 4, got {bins_}")
    try:
        low, high = hist_range
    except (TypeError, ValueError):
        raise TypeError(f"hist_range must be a pair (low, high), got {hist_range!r}") from None
    low, high = _real(low, "hist_range[0]"), _real(high, "hist_range[1]")
    if not low < high:
        raise ValueError(f"hist_range must have low < high, got ({low}, {high})")
    threads_ = _threads(threads)
    acts = [
        activation(a) if not isinstance(a, tuple) else activation(*a)
        for a in _per_layer(activation_, depth, "activation")
    ]
    inits = _per_layer(init, depth, "init")
    schemes = [scheme(s) for s in inits]
    biases = [_real(b, "bias") for b in _per_layer(bias, depth, "bias")]
    for b in biases:
        if b < 0:
            raise ValueError(f"bias is the std of the biases and must be >= 0, got {b}")
    chunk = (
        default_chunk(n, (dim, *sizes), dtype_.itemsize)
        if chunk_size is None
        else min(_positive_int(chunk_size, "chunk_size"), n)
    )
    if not isinstance(keep_activations, (bool, np.bool_)):
        raise TypeError(f"keep_activations must be True or False, got {keep_activations!r}")

    layers = []
    fan_in = dim
    for i, (fan_out, act, sch, b, given) in enumerate(
        zip(sizes, acts, schemes, biases, inits, strict=True)
    ):
        dist = sch.distribution(fan_in, fan_out)
        weights = None
        if dist is None and build_weights:
            weights = sch.sample(fan_in, fan_out, seed=seed_, layer=i, dtype=dtype_)
        if dist is not None and not (np.isfinite(dist.a) and np.isfinite(dist.b)):
            raise ValueError(f"init {sch.name} gives non-finite parameters for layer {i}")
        name = given if isinstance(given, str) else sch.name
        layers.append(Layer(fan_in, fan_out, act, sch, dist, weights, b, name))
        fan_in = fan_out
    return Plan(
        n_samples=n,
        input_dim=dim,
        layers=tuple(layers),
        seed=seed_,
        dtype=dtype_,
        inputs=data,
        bins=bins_,
        hist_range=(low, high),
        threads=threads_,
        chunk_size=chunk,
        keep_activations=bool(keep_activations),
    )
