"""The timed variants: initscope's backends and the code its users would otherwise write.

Every variant computes the classic experiment (Xavier weights, tanh, the mean and std of every
layer and a 30-bin histogram on (-1, 1)) for fresh random inputs.  A factory does its
allocations up front and returns ``run(seed)``, which computes one whole network and returns
an :class:`Outcome` (layer stds and histograms) for the checks, or None (the GEMM alone).

Imports only NumPy and initscope at import time: torch is imported by its runner.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import initscope

Shape = tuple[int, int, int]

BINS = 30
HIST_RANGE = (-1.0, 1.0)
DTYPES = ("float64", "float32")
BASELINES = ("seed", "best", "best_mt", "torch", "gemm")
#: Elements of each block of the best-NumPy statistics (NumPy calls per block cost ~10 us).
BEST_NUMPY_BLOCK = 2**18
#: Run the NumPy reference backend only below this many n*w*L: beyond it, it takes seconds
#: per network and several full-size float64 copies of every layer.
REFERENCE_LIMIT = 6_000_000
REFERENCE_LIMIT_QUICK = 600_000

LABELS = {
    "seed": "seed NumPy",
    "best": "best NumPy",
    "best_mt": "best NumPy, 2-thread RNG",
    "torch": "PyTorch CPU",
    "gemm": "GEMM alone",
}


def label(kind: str) -> str:
    """The display name of a variant: ``"initscope cpp"``, ``"best NumPy"``, ..."""
    if kind.startswith("initscope:"):
        return "initscope " + kind.split(":", 1)[1]
    return LABELS[kind]


def flops(shape: Shape) -> float:
    """Floating-point operations of the network's GEMMs: 2 n w^2 L."""
    n, w, depth = shape
    return 2.0 * n * w * w * depth


def shape_text(shape: Sequence[int]) -> str:
    """``"1000×500×10"``."""
    return "×".join(str(v) for v in shape)


@dataclass
class Outcome:
    """What one network produced: per-layer std of the activations and 30-bin histograms."""

    std: np.ndarray
    hist: np.ndarray | None


Runner = Callable[[int], "Outcome | None"]


def _initscope_runner(shape: Shape, dtype: str, backend: str) -> Runner:
    n, w, depth = shape

    def run(seed: int) -> Outcome:
        result = initscope.propagate(
            [w] * depth,
            init="xavier",
            activation="tanh",
            n_samples=n,
            seed=seed,
            dtype=dtype,
            bins=BINS,
            hist_range=HIST_RANGE,
            backend=backend,
        )
        return Outcome(np.asarray(result.std, dtype=np.float64), result.hist)

    return run


def _seed_runner(shape: Shape, dtype: str) -> Runner:
    """The seed notebook's ``forward_prop`` with ``xavier_init``, then its histograms."""
    n, w, depth = shape

    def xavier_init(fan_in: int, fan_out: int) -> np.ndarray:
        return np.random.randn(fan_in, fan_out) / np.sqrt(fan_in)  # noqa: NPY002

    def run(seed: int) -> Outcome:
        np.random.seed(seed % 2**32)  # noqa: NPY002 - the seed's legacy global generator
        hidden_layer_sizes = [w] * depth
        inputs = np.random.randn(n, hidden_layer_sizes[0])  # noqa: NPY002
        hidden_layer_acts: dict[int, np.ndarray] = {}
        for i in range(len(hidden_layer_sizes)):
            X = inputs if i == 0 else hidden_layer_acts[i - 1]
            W = xavier_init(X.shape[1], hidden_layer_sizes[i])
            H = np.dot(X, W)
            H = np.tanh(H)
            hidden_layer_acts[i] = H
        _means = [np.mean(H) for i, H in hidden_layer_acts.items()]
        stds = [np.std(H) for i, H in hidden_layer_acts.items()]
        hists = [np.histogram(H, BINS, range=HIST_RANGE)[0] for H in hidden_layer_acts.values()]
        return Outcome(np.array(stds, dtype=np.float64), np.array(hists))

    return run


class BestNumpy:
    """The fastest plain NumPy we found for the experiment (measured; see bench/README.md).

    Buffers are allocated once and reused by every network; ``threads=2`` draws each random
    array as two halves, one per thread and Generator (NumPy releases the GIL while filling).
    Statistics run over blocks of :data:`BEST_NUMPY_BLOCK` elements that stay in cache.
    """

    def __init__(self, shape: Shape, dtype: str, threads: int = 1) -> None:
        n, w, self.depth = shape
        self.dtype = np.dtype(dtype)
        self.x = np.empty((n, w), self.dtype)
        self.h = np.empty((n, w), self.dtype)
        self.w = np.empty((w, w), self.dtype)
        block = min(BEST_NUMPY_BLOCK, n * w)
        self.scaled = np.empty(block, self.dtype)
        self.index = np.empty(block, np.intp)
        self.threads = threads
        self.pool = None
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(threads)
        low, high = HIST_RANGE
        self.hist_scale = BINS / (high - low)
        self.hist_shift = -low * self.hist_scale

    def _fill(self, rngs: list[np.random.Generator], out: np.ndarray) -> None:
        if self.pool is None:
            rngs[0].standard_normal(dtype=self.dtype, out=out)
            return
        rows = -(-out.shape[0] // len(rngs))
        parts = [(rng, out[k * rows : (k + 1) * rows]) for k, rng in enumerate(rngs)]
        list(self.pool.map(lambda p: p[0].standard_normal(dtype=self.dtype, out=p[1]), parts))

    def __call__(self, seed: int) -> Outcome:
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(self.threads)]
        x, h, weights = self.x, self.h, self.w
        self._fill(rngs, x)
        stds = np.empty(self.depth)
        hists = np.zeros((self.depth, BINS), np.int64)
        for layer in range(self.depth):
            self._fill(rngs, weights)
            weights *= self.dtype.type(1.0 / math.sqrt(weights.shape[0]))
            np.matmul(x, weights, out=h)
            np.tanh(h, out=h)
            total = total_sq = 0.0
            flat = h.reshape(-1)
            for start in range(0, flat.size, self.scaled.size):
                values = flat[start : start + self.scaled.size]
                scaled = self.scaled[: values.size]
                index = self.index[: values.size]
                total += float(values.sum())
                total_sq += float(np.dot(values, values))
                np.multiply(values, self.hist_scale, out=scaled)
                np.add(scaled, self.hist_shift, out=scaled)
                np.copyto(index, scaled, casting="unsafe")  # truncation == floor: scaled >= 0
                np.minimum(index, BINS - 1, out=index)  # tanh(x) == 1.0 goes in the top bin
                hists[layer] += np.bincount(index, minlength=BINS)
            mean = total / flat.size
            stds[layer] = math.sqrt(max(total_sq / flat.size - mean * mean, 0.0))
            x, h = h, x
        return Outcome(stds, hists)


def _torch_runner(shape: Shape, dtype: str) -> Runner:
    """Idiomatic PyTorch on the CPU, with its default threads."""
    import torch

    n, w, depth = shape
    torch_dtype = getattr(torch, dtype)

    def run(seed: int) -> Outcome:
        torch.manual_seed(seed)
        stds = []
        hists = []
        with torch.inference_mode():
            x = torch.randn(n, w, dtype=torch_dtype)
            for _ in range(depth):
                weights = torch.randn(w, w, dtype=torch_dtype) / math.sqrt(w)
                h = torch.tanh(torch.matmul(x, weights))
                _mean = h.mean()
                stds.append(h.std(correction=0))
                hists.append(torch.histc(h, bins=BINS, min=HIST_RANGE[0], max=HIST_RANGE[1]))
                x = h
            std = torch.stack(stds).double().numpy()
            hist = torch.stack(hists).numpy().astype(np.int64)
        return Outcome(std, hist)

    return run


def _gemm_runner(shape: Shape, dtype: str) -> Runner:
    """``depth`` GEMMs of the network's shape into preallocated buffers, nothing else."""
    n, w, depth = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, w), dtype=np.dtype(dtype))
    b = np.empty_like(a)
    weights = rng.standard_normal((w, w), dtype=np.dtype(dtype))
    weights *= weights.dtype.type(1.0 / math.sqrt(w))  # keeps the chained values O(1)

    def run(seed: int) -> None:
        x, h = a, b
        for _ in range(depth):
            np.matmul(x, weights, out=h)
            x, h = h, x

    return run


def make_runner(kind: str, shape: Shape, dtype: str) -> Runner:
    """The ``run(seed)`` of variant ``kind`` (``"initscope:cpp"``, ``"best"``, ...)."""
    if kind.startswith("initscope:"):
        return _initscope_runner(shape, dtype, kind.split(":", 1)[1])
    if kind == "seed":
        return _seed_runner(shape, dtype)
    if kind == "best":
        return BestNumpy(shape, dtype)
    if kind == "best_mt":
        return BestNumpy(shape, dtype, threads=2)
    if kind == "torch":
        return _torch_runner(shape, dtype)
    if kind == "gemm":
        return _gemm_runner(shape, dtype)
    raise ValueError(f"unknown benchmark variant {kind!r}")


def have_torch() -> bool:
    """Whether torch can be imported here."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def select_variants(
    shape: Shape,
    dtype: str,
    backends: Sequence[str],
    baselines: Sequence[str],
    quick: bool,
    torch_available: bool,
    notes: list[str],
) -> list[str]:
    """The variants that apply to ``(shape, dtype)``; why the others are left out goes to notes.

    The NumPy reference backend is left out of large shapes when a faster backend is timed,
    the seed's code out of float32 (it is float64 only), PyTorch when it is not installed.
    """
    n, w, depth = shape
    kinds = []
    limit = REFERENCE_LIMIT_QUICK if quick else REFERENCE_LIMIT
    for backend in backends:
        if backend == "numpy" and n * w * depth > limit and len(backends) > 1:
            notes.append(
                f"initscope numpy (the reference backend) skipped: n·w·L = {n * w * depth:,} > "
                f"{limit:,}, too slow and memory-hungry to time here"
            )
            continue
        kinds.append(f"initscope:{backend}")
    for kind in baselines:
        if kind == "seed" and dtype != "float64":
            notes.append("seed NumPy: not applicable, the seed's code is float64 only")
            continue
        if kind == "torch" and not torch_available:
            notes.append("PyTorch CPU skipped: torch is not installed (pip install torch)")
            continue
        kinds.append(kind)
    return kinds
