"""The benchmark suite: initscope against the code its users would write themselves.

One process times, alternating round by round, every initscope backend and four baselines on
the classic experiment (Xavier weights, tanh, a 30-bin histogram on (-1, 1) and the mean and std
of every layer):

- the seed's own NumPy code (``np.random.randn``, ``np.dot``, ``np.tanh``, ``np.mean``,
  ``np.std``, ``np.histogram``), float64 only as the seed is;
- the best plain NumPy we could write (``default_rng`` with a dtype, reused ``out=`` buffers,
  statistics by ``sum`` and ``dot``, the histogram by ``bincount`` of computed bin indices),
  and a variant drawing the random numbers on two threads;
- PyTorch on the CPU, when it is installed;
- the GEMM alone (NumPy's ``matmul`` into preallocated buffers, ``depth`` times per network):
  the hardware limit.

Peak memory of each configuration is measured in a fresh subprocess.  Every network's layer
stds and histograms are checked against the best-NumPy baseline while timing, so that a fast
but wrong run is flagged.  Run it as ``initscope bench`` or ``python bench/run.py``; the fair
command leaves OpenBLAS at its native kernels::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE initscope bench --out results.json

This module imports only NumPy and initscope at import time; torch and threadpoolctl are
imported by the functions that need them.  It uses absolute imports only, so that
``bench/run.py`` can load it from a source checkout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

import initscope

__all__ = ["FULL_SHAPES", "QUICK_SHAPES", "main", "run_suite"]

Shape = tuple[int, int, int]

#: (n_samples, width, depth) of the full suite: the seed experiment first.
FULL_SHAPES: list[Shape] = [
    (1000, 500, 10),
    (100, 500, 10),
    (1000, 2048, 10),
    (4096, 4096, 4),
    (100000, 256, 4),
]
#: The ``--quick`` suite: the seed experiment, a small batch and one width >= 1024.
QUICK_SHAPES: list[Shape] = [(1000, 500, 10), (100, 500, 10), (1000, 1024, 4)]
#: The memory target of issue 4: peak RSS under 700 MB for 2,000,000 x 256 x 4.
MEMORY_TARGET_SHAPE: Shape = (2_000_000, 256, 4)
MEMORY_TARGET_BYTES = 700e6
#: ``--quick`` checks the memory target at depth 1: initscope's memory does not grow with depth.
QUICK_MEMORY_SHAPE: Shape = (2_000_000, 256, 1)

SEED_SHAPE: Shape = (1000, 500, 10)
BINS = 30
HIST_RANGE = (-1.0, 1.0)
DTYPES = ("float64", "float32")
BASELINES = ("seed", "best", "best_mt", "torch", "gemm")

#: Run the NumPy reference backend only below this many n*w*L: beyond it, it takes seconds
#: per network and several full-size float64 copies of every layer.
REFERENCE_LIMIT = 6_000_000
REFERENCE_LIMIT_QUICK = 600_000
#: Each timed sample runs this long at least (networks back to back), as a sweep would.
BATCH_SECONDS = 0.4
BATCH_SECONDS_QUICK = 0.15
#: Pause before each timed sample, so that the previous library's spinning BLAS/OpenMP
#: workers have gone to sleep.
SETTLE_SECONDS = 0.1
SETTLE_SECONDS_QUICK = 0.03
#: Without --repeat: 3 to 15 rounds, as many as fit in this many seconds.
ROUND_BUDGET_SECONDS = 150.0
#: A configuration timed while other processes took more than this share of the CPUs is
#: timed again (at most RETRIES times, after a pause), and the least disturbed attempt kept.
BUSY_SHARE = 0.10
RETRIES = 2
RETRY_PAUSE_SECONDS = 60.0
#: Elements of each block of the best-NumPy statistics (NumPy calls per block cost ~10 us).
BEST_NUMPY_BLOCK = 2**18

_LABELS = {
    "seed": "seed NumPy",
    "best": "best NumPy",
    "best_mt": "best NumPy, 2-thread RNG",
    "torch": "PyTorch CPU",
    "gemm": "GEMM alone",
}
_OPENBLAS_SLOW_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_ENV_VARS = (
    *_OPENBLAS_SLOW_VARS,
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_THREAD_TIMEOUT",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "GOMP_SPINCOUNT",
    "INITSCOPE_BACKEND",
)
FAIR_COMMAND = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE initscope bench"


def label(kind: str) -> str:
    """The display name of a variant: ``"initscope cpp"``, ``"best NumPy"``, ..."""
    if kind.startswith("initscope:"):
        return "initscope " + kind.split(":", 1)[1]
    return _LABELS[kind]


def flops(shape: Shape) -> float:
    """Floating-point operations of the network's GEMMs: 2 n w^2 L."""
    n, w, depth = shape
    return 2.0 * n * w * w * depth


def shape_text(shape: Shape) -> str:
    return "×".join(str(v) for v in shape)


# --------------------------------------------------------------------------------------------
# The variants.  Each factory does its allocations up front and returns ``run(seed)``, which
# computes one whole network and returns what it found (layer stds and histograms) or None.
# --------------------------------------------------------------------------------------------


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


class _BestNumpy:
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
        return _BestNumpy(shape, dtype)
    if kind == "best_mt":
        return _BestNumpy(shape, dtype, threads=2)
    if kind == "torch":
        return _torch_runner(shape, dtype)
    if kind == "gemm":
        return _gemm_runner(shape, dtype)
    raise ValueError(f"unknown benchmark variant {kind!r}")


# --------------------------------------------------------------------------------------------
# The machine: CPU, BLAS, environment, and how busy the other processes keep it.
# --------------------------------------------------------------------------------------------


def _cpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "os_cpu_count": os.cpu_count(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo") as handle:
            text = handle.read()
    except OSError:
        return info
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    info.update(
        model_name=fields.get("model name"),
        vendor=fields.get("vendor_id"),
        family=fields.get("cpu family"),
        model=fields.get("model"),
        simd=sorted(f for f in flags if f in {"avx", "avx2", "fma"} or f.startswith("avx512")),
        hypervisor="hypervisor" in flags,
    )
    return info


def _blas_info() -> list[dict[str, Any]] | str:
    """threadpoolctl's view of every BLAS and OpenMP runtime loaded in this process."""
    try:
        import threadpoolctl
    except ImportError:
        return "threadpoolctl is not installed (pip install threadpoolctl): BLAS unknown"
    keys = (
        "user_api", "internal_api", "prefix", "version", "architecture", "corename",
        "threading_layer", "num_threads", "filepath",
    )  # fmt: skip
    return [{k: pool[k] for k in keys if k in pool} for pool in threadpoolctl.threadpool_info()]


def _torch_info() -> dict[str, Any] | None:
    if "torch" not in sys.modules:
        return None
    torch = sys.modules["torch"]
    config = torch.__config__.show()
    lines = [ln.strip() for ln in config.splitlines()]
    return {
        "version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "blas": next((ln.lstrip("- ") for ln in lines if "Math Kernel" in ln), None),
        "cpu_capability": next((ln for ln in lines if "CPU capability" in ln), None),
    }


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _extension_info() -> dict[str, Any] | None:
    """Where the compiled ``initscope._core`` lives and when it was built."""
    import importlib.util

    spec = importlib.util.find_spec("initscope._core")
    if spec is None or not spec.origin:
        return None
    stat = os.stat(spec.origin)
    built = datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds")
    return {"path": spec.origin, "built": built, "bytes": stat.st_size}


def machine_name() -> str:
    """A short name of this machine kind for results files: ``amd-epyc-2cpu``."""
    cpu = _cpu_info()
    model = str(cpu.get("model_name") or cpu.get("processor") or platform.machine())
    words = [w for w in "".join(c if c.isalnum() else " " for c in model.lower()).split()]
    words = [w for w in words if w not in {"r", "tm", "processor", "cpu", "core"}][:4]
    return "-".join([*words, f"{cpu.get('usable_cpus', os.cpu_count())}cpu"])


class CpuMonitor:
    """CPU time the rest of the machine took while we timed (from /proc/stat, Linux only)."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float, float] | None:
        try:
            with open("/proc/stat") as handle:
                values = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        steal = values[7] if len(values) > 7 else 0
        own = os.times()
        return (
            (sum(values[:8]) - idle - steal) / tick,
            steal / tick,
            own.user + own.system,
            time.perf_counter(),
        )

    def stop(self) -> dict[str, float] | None:
        end = self._sample()
        if end is None or self.start is None:
            return None
        busy, steal, own, wall = (b - a for a, b in zip(self.start, end, strict=True))
        cpus = os.cpu_count() or 1
        return {
            "wall_s": wall,
            "own_cpu_s": own,
            "other_cpu_s": max(busy - own, 0.0),
            "other_share": max(busy - own, 0.0) / (wall * cpus) if wall > 0 else 0.0,
            "steal_share": steal / (wall * cpus) if wall > 0 else 0.0,
        }


# --------------------------------------------------------------------------------------------
# Peak memory, one configuration per fresh subprocess.
# --------------------------------------------------------------------------------------------

_PROBE_CODE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_initscope_bench_probe", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module.memory_probe(sys.argv[2])
"""


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _max_rss_bytes() -> int:
    """Peak RSS of this process image.

    Linux's ``VmHWM`` is reset by exec; ``ru_maxrss`` is not, so in a child it would count
    the parent's memory at the fork.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def memory_probe(spec: str) -> None:
    """Run one network of a variant and print its peak RSS as JSON (the subprocess side)."""
    args = json.loads(spec)
    kind, shape, dtype = args["kind"], tuple(args["shape"]), args["dtype"]
    if kind.startswith("initscope:"):
        from initscope.backends import get_backend

        get_backend(kind.split(":", 1)[1])  # load the extension and its BLAS before measuring
    elif kind == "torch":
        import torch  # noqa: F401
    runner = make_runner(kind, shape, dtype)
    ready = _rss_bytes()
    start = time.perf_counter()
    outcome = runner(1)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "rss_ready_bytes": ready,
                "peak_rss_bytes": _max_rss_bytes(),
                "seconds": seconds,
                "std": None if outcome is None else outcome.std.tolist(),
            }
        )
    )


def measure_memory(kind: str, shape: Shape, dtype: str, timeout: float = 1800) -> dict[str, Any]:
    """Peak RSS of one network of ``kind`` at ``shape``, in a fresh interpreter."""
    spec = json.dumps({"kind": kind, "shape": list(shape), "dtype": dtype})
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_CODE, os.path.abspath(__file__), spec],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Timing and checking.
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    """The results of one (shape, dtype): timings, checks and memory of every variant."""

    shape: Shape
    dtype: str
    kinds: list[str]
    warmup: dict[str, float] = field(default_factory=dict)
    batch: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)  # seconds per network
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    load: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    def median(self, kind: str) -> float | None:
        values = self.samples.get(kind)
        return float(np.median(values)) if values else None


def _std_tolerance(shape: Shape) -> float:
    """Relative tolerance of a layer std between two independent random networks.

    Across seeds a layer's std varies by about ``sqrt(L) / w + 0.5 / sqrt(n w)`` relative (the
    weights' and the inputs' sampling noise; measured with 20 seeds per shape, bench/README.md).
    The tolerance is six times that, at least 1 %: a wrong init scale or activation moves the
    stds by 10 % or more and cannot pass.
    """
    n, w, depth = shape
    return max(0.01, 6 * (math.sqrt(depth) / w + 0.5 / math.sqrt(n * w)))


def check_outcomes(config: Config, outcomes: dict[str, list[Outcome]]) -> None:
    """Compare every variant's layer stds and histograms with the best-NumPy baseline."""
    n, w, depth = config.shape
    reference_kind = next((k for k in ("best", "best_mt", "seed") if outcomes.get(k)), None)
    if reference_kind is None:
        reference_kind = next((k for k in config.kinds if outcomes.get(k)), None)
    if reference_kind is None:
        return
    ref_std = np.median([o.std for o in outcomes[reference_kind]], axis=0)
    ref_hists = [o.hist for o in outcomes[reference_kind] if o.hist is not None]
    ref_hist = np.mean([h / h.sum(axis=1, keepdims=True) for h in ref_hists], axis=0)
    tolerance = _std_tolerance(config.shape)
    for kind, results in outcomes.items():
        if not results:
            continue
        stds = np.array([o.std for o in results])
        deviation = float(np.max(np.abs(stds / ref_std - 1)))
        problems = []
        if stds.shape[1] != depth or not np.all(np.isfinite(stds)):
            problems.append("non-finite or missing layer stds")
        if deviation > tolerance:
            problems.append(f"layer std off by {deviation:.1%} (tolerance {tolerance:.1%})")
        hist_distance = 0.0
        for outcome in results:
            if outcome.hist is None:
                continue
            counts = outcome.hist.sum(axis=1)
            if not np.all(counts == n * w):
                problems.append(f"histogram holds {counts.min()} of {n * w} values")
                break
            distance = 0.5 * np.abs(outcome.hist / counts[:, None] - ref_hist).sum(axis=1)
            hist_distance = max(hist_distance, float(distance.max()))
        if hist_distance > max(0.02, 5 * tolerance):
            problems.append(f"histogram differs by {hist_distance:.1%} (total variation)")
        config.checks[kind] = {
            "against": reference_kind,
            "layer_std_median": np.median(stds, axis=0).tolist(),
            "max_std_deviation": deviation,
            "tolerance": tolerance,
            "max_hist_distance": hist_distance,
            "networks_checked": len(results),
            "ok": not problems,
            "problems": sorted(set(problems)),
        }


def time_config(
    config: Config,
    runners: dict[str, Runner],
    repeat: int | None,
    quick: bool,
    log: Callable[[str], None],
) -> None:
    """Time every variant round-robin: a warm-up round, then ``repeat`` rounds, medians."""
    settle = SETTLE_SECONDS_QUICK if quick else SETTLE_SECONDS
    batch_seconds = BATCH_SECONDS_QUICK if quick else BATCH_SECONDS
    outcomes: dict[str, list[Outcome]] = {kind: [] for kind in config.kinds}
    seed = 1
    monitor = CpuMonitor()
    for kind in config.kinds:  # warm-up: page in buffers, JIT, BLAS threads; sizes the batch
        time.sleep(settle)
        start = time.perf_counter()
        runners[kind](seed)
        seed += 1
        config.warmup[kind] = time.perf_counter() - start
        config.batch[kind] = max(1, min(50, round(batch_seconds / config.warmup[kind])))
    round_seconds = sum(config.warmup[k] * config.batch[k] + settle for k in config.kinds)
    rounds = repeat
    if rounds is None:
        rounds = 3 if quick else max(3, min(15, int(ROUND_BUDGET_SECONDS / round_seconds)))
    log(f"  {rounds} rounds of about {round_seconds:.1f} s")
    for round_index in range(rounds):
        shift = round_index % len(config.kinds)
        for kind in config.kinds[shift:] + config.kinds[:shift]:
            time.sleep(settle)
            results = []
            start = time.perf_counter()
            for _ in range(config.batch[kind]):
                results.append(runners[kind](seed))
                seed += 1
            elapsed = time.perf_counter() - start
            config.samples.setdefault(kind, []).append(elapsed / config.batch[kind])
            outcomes[kind] += [r for r in results if r is not None]
    config.load = monitor.stop()
    for kind in config.kinds:
        first, typical = config.warmup[kind], config.median(kind)
        if typical and first > 1.0 and first > 5 * typical:
            config.notes.append(
                f"{label(kind)}: the first network took {first:.1f} s (compilation or "
                "start-up), not counted"
            )
    check_outcomes(config, outcomes)


def _variants(
    shape: Shape,
    dtype: str,
    contenders: list[str],
    baselines: Sequence[str],
    quick: bool,
    have_torch: bool,
    notes: list[str],
) -> list[str]:
    n, w, depth = shape
    kinds = []
    limit = REFERENCE_LIMIT_QUICK if quick else REFERENCE_LIMIT
    for backend in contenders:
        if backend == "numpy" and n * w * depth > limit and len(contenders) > 1:
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
        if kind == "torch" and not have_torch:
            notes.append("PyTorch CPU skipped: torch is not installed (pip install torch)")
            continue
        kinds.append(kind)
    return kinds


def _have_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Reports: JSON, the markdown table, the targets.
# --------------------------------------------------------------------------------------------


def _fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 1000 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _fmt_mb(entry: dict[str, Any] | None) -> str:
    """Peak RSS, and in parentheses how much of it the network added to the ready process."""
    if not entry:
        return "–"
    if "error" in entry:
        return "error"
    peak, ready = entry["peak_rss_bytes"], entry["rss_ready_bytes"]
    return f"{peak / 1e6:.0f} (+{max(peak - ready, 0) / 1e6:.0f})"


def _best_numpy_time(config: Config) -> tuple[str, float] | None:
    """The faster of the two best-NumPy variants (the multithreaded generator included)."""
    timed: list[tuple[str, float]] = []
    for kind in ("best", "best_mt"):
        median = config.median(kind)
        if median:
            timed.append((kind, median))
    return min(timed, key=lambda item: item[1]) if timed else None


def targets(configs: list[Config], contenders: list[str], memory: dict[str, Any]) -> list[dict]:
    """Issue 4's targets, one row per (target, initscope backend), with the measured ratio."""
    rows: list[dict[str, Any]] = []
    by_key = {(c.shape, c.dtype): c for c in configs}

    def add(target: str, backend: str, measured: float | None, required: float, unit: str,
            larger_is_better: bool = True, note: str = "") -> None:  # fmt: skip
        if measured is None:
            status = "not measured"
        elif larger_is_better:
            status = "met" if measured >= required else "NOT MET"
        else:
            status = "met" if measured < required else "NOT MET"
        rows.append(
            {"target": target, "backend": backend, "measured": measured, "required": required,
             "unit": unit, "status": status, "note": note}
        )  # fmt: skip

    for backend in contenders:
        kind = f"initscope:{backend}"
        for dtype, wanted in (
            ("float64", [("seed", 3.8), ("best", 2.2), ("torch", 3.5)]),
            ("float32", [("torch", 3.0), ("best numpy incl. 2-thread", 1.8)]),
        ):
            config = by_key.get((SEED_SHAPE, dtype))
            mine = config.median(kind) if config else None
            for base, required in wanted:
                note = ""
                if config is None or mine is None:
                    other = None
                elif base == "best numpy incl. 2-thread":
                    fastest = _best_numpy_time(config)
                    other = fastest[1] if fastest else None
                    note = f"fastest is {label(fastest[0])}" if fastest else ""
                else:
                    other = config.median(base)
                ratio = other / mine if other and mine else None
                name = label(base) if base in _LABELS else "best NumPy (fastest variant)"
                add(f"seed experiment {dtype}: speed-up vs {name}", backend, ratio, required,
                    "×", note=note)  # fmt: skip
        for config in configs:
            if config.shape[1] < 1024:
                continue
            mine, gemm = config.median(kind), config.median("gemm")
            add(f"{shape_text(config.shape)} {config.dtype}: GFLOP/s vs GEMM alone", backend,
                gemm / mine if mine and gemm else None, 0.9, "of GEMM")  # fmt: skip
        for dtype in DTYPES:
            entry = memory.get(f"{kind}|{dtype}")
            if entry is None:
                continue
            shape = tuple(entry["shape"])
            peak = entry.get("peak_rss_bytes")
            note = "" if shape == MEMORY_TARGET_SHAPE else "quick mode: depth 1 stands for depth 4"
            if "error" in entry:
                note = entry["error"]
            add(f"{shape_text(shape)} {dtype}: peak RSS", backend,
                peak / 1e6 if peak else None, MEMORY_TARGET_BYTES / 1e6, "MB",
                larger_is_better=False, note=note)  # fmt: skip
    return rows


def _blas_lines(blas: list[dict[str, Any]] | str) -> list[str]:
    if isinstance(blas, str):
        return [blas]
    lines = []
    for pool in blas:
        parts = [f"{pool.get('internal_api')} {pool.get('version') or ''}".strip()]
        if pool.get("architecture") or pool.get("corename"):
            parts.append(f"kernels {pool.get('architecture') or pool.get('corename')}")
        parts.append(f"{pool.get('num_threads')} threads")
        parts.append(f"`{pool.get('filepath')}`")
        lines.append(f"{pool.get('user_api')} runtime: " + ", ".join(parts))
    return lines


def markdown(report: dict[str, Any], configs: list[Config], contenders: list[str]) -> str:
    """The human summary: environment, one table row per variant, notes, the targets."""
    meta = report["metadata"]
    cpu = meta["cpu"]
    lines = [f"# initscope benchmark: {report['machine']}", ""]
    for warning in report["warnings"]:
        lines += [f"> **WARNING** {warning}", ""]
    lines += [
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}, initscope {meta['initscope_version']}"
        + (f" (git {meta['git_commit']})" if meta.get("git_commit") else "")
        + (
            f", extension built {meta['initscope_extension']['built']}"
            if meta.get("initscope_extension")
            else ""
        )
        + f", NumPy {meta['numpy_version']}, Python {meta['python_version']}",
        f"- CPU: {cpu.get('model_name')} (family {cpu.get('family')} model {cpu.get('model')}),"
        f" {cpu.get('usable_cpus')} usable CPUs, SIMD {' '.join(cpu.get('simd', []))}"
        + (", virtual machine" if cpu.get("hypervisor") else ""),
        f"- initscope backends: {', '.join(meta['available_backends'])}; threads "
        f"{meta['initscope_threads']}",
    ]
    lines += [f"- {line}" for line in _blas_lines(meta["blas"])]
    torch_info = meta.get("torch")
    if torch_info:
        lines.append(
            f"- torch {torch_info['version']}, {torch_info['num_threads']} threads, "
            f"{torch_info.get('blas')}"
        )
    env = {k: v for k, v in meta["environment"].items() if v is not None}
    lines.append(f"- environment: {env if env else 'no BLAS/OpenMP variables set'}")
    lines.append(f"- load average at start / end: {meta['loadavg_start']} / {meta['loadavg_end']}")
    if meta["quick"]:
        lines.append("- `--quick`: small shapes, 3 rounds; peak RSS of the memory target only")
    lines += [
        "",
        "ms per network: median over rounds (networks run back to back, variants alternating). "
        "GFLOP/s = 2·n·w²·L / time. *of GEMM* = GEMM-alone time / this time. "
        + " ".join(f"*×{b}* = this time / initscope {b}'s." for b in contenders)
        + " Peak RSS: of a fresh process running one network (VmHWM, MB = 10⁶ bytes); in"
        " parentheses, what the network added after the imports and setup.",
        "",
    ]
    head = ["shape n×w×L", "dtype", "variant", "ms/network", "spread", "GFLOP/s", "of GEMM",
            "peak RSS MB (+run)", *[f"×{b}" for b in contenders], "check"]  # fmt: skip
    align = ["---"] * 3 + ["---:"] * (len(head) - 4) + ["---"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for config in configs:
        gemm = config.median("gemm")
        for kind in config.kinds:
            t = config.median(kind)
            samples = config.samples.get(kind, [])
            spread = (max(samples) - min(samples)) / t if t and len(samples) > 1 else None
            check = config.checks.get(kind)
            row = [
                shape_text(config.shape),
                config.dtype,
                label(kind),
                _fmt_ms(t),
                f"±{spread / 2:.0%}" if spread is not None else "–",
                f"{flops(config.shape) / t / 1e9:.1f}" if t else "–",
                f"{gemm / t:.0%}" if gemm and t else "–",
                _fmt_mb(config.memory.get(kind)),
            ]
            for backend in contenders:
                mine = config.median(f"initscope:{backend}")
                row.append(f"{t / mine:.2f}" if t and mine else "–")
            if check is None:
                row.append("–")
            else:
                row.append("ok" if check["ok"] else "**WRONG**: " + "; ".join(check["problems"]))
            lines.append("| " + " | ".join(row) + " |")
    notes = sorted({f"{shape_text(c.shape)} {c.dtype}: {n}" for c in configs for n in c.notes})
    busy = [
        f"{shape_text(c.shape)} {c.dtype}: other processes used {c.load['other_share']:.0%} of "
        "the CPUs while timing"
        for c in configs
        if c.load and c.load["other_share"] > 0.05
    ]
    if notes or busy:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes + busy]
    lines += ["", "## Targets of issue 4", ""]
    lines += ["| target | backend | measured | required | status |", "|---|---|---:|---:|---|"]
    for row in report["targets"]:
        measured = row["measured"]
        if measured is None:
            shown = "–"
        elif row["unit"] == "×":
            shown = f"{measured:.2f}×"
        elif row["unit"] == "of GEMM":
            shown = f"{measured:.0%}"
        else:
            shown = f"{measured:.0f} MB"
        required = row["required"]
        need = (
            f"≥ {required:.1f}×" if row["unit"] == "×"
            else f"≥ {required:.0%}" if row["unit"] == "of GEMM"
            else f"< {required:.0f} MB"
        )  # fmt: skip
        status = row["status"] if row["status"] != "NOT MET" else "**NOT MET**"
        if row["note"]:
            status += f" ({row['note']})"
        lines.append(f"| {row['target']} | {row['backend']} | {shown} | {need} | {status} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The suite.
# --------------------------------------------------------------------------------------------


def run_suite(
    shapes: Sequence[Shape],
    dtypes: Sequence[str] = DTYPES,
    backends: Sequence[str] | None = None,
    baselines: Sequence[str] = BASELINES,
    repeat: int | None = None,
    quick: bool = False,
    memory: bool = True,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole suite and return the report (JSON-ready), with ``report["markdown"]``."""
    from initscope.backends import resolve

    warnings = []
    for name in _OPENBLAS_SLOW_VARS:
        if os.environ.get(name):
            warnings.append(
                f"{name}={os.environ[name]} is set: it forces OpenBLAS kernels that can be much "
                f"slower than the native ones. The fair command is `{FAIR_COMMAND}`."
            )
    for warning in warnings:
        log("!" * 78 + f"\n!! WARNING: {warning}\n" + "!" * 78)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load_start and load_start[0] > 0.5:
        log(f"note: load average {load_start[0]:.2f}: the machine is busy, timings may be noisy")

    available = initscope.available_backends()  # loads the compiled backend and its BLAS
    notes: list[str] = []
    if backends is None:
        contenders = [b for b in available if b != "numpy"] or ["numpy"]
        if "numpy" in available and "numpy" not in contenders:
            reference = ["numpy"]  # timed where small enough, never the contender of ratios
        else:
            reference = []
    else:
        contenders, reference = [], []
        for backend in backends:
            if backend not in available:
                notes.append(f"initscope {backend} skipped: backend not available here")
            elif backend == "numpy" and len(backends) > 1:
                reference.append(backend)
            else:
                contenders.append(backend)
        if not contenders:
            contenders, reference = reference, []
    for backend in contenders + reference:
        resolve(backend)
    have_torch = "torch" in baselines and _have_torch()

    configs: list[Config] = []
    failed = False
    for shape in shapes:
        for dtype in dtypes:
            config_notes = list(notes)
            kinds = _variants(shape, dtype, contenders + reference, baselines, quick,
                              have_torch, config_notes)  # fmt: skip
            log(f"{shape_text(shape)} {dtype}: {', '.join(label(k) for k in kinds)}")
            runners = {kind: make_runner(kind, shape, dtype) for kind in kinds}
            attempts: list[Config] = []
            share = 0.0
            for attempt in range(1 if quick else 1 + RETRIES):
                if attempt:
                    log(f"  other processes took {share:.0%} of the CPUs: timing again")
                    time.sleep(RETRY_PAUSE_SECONDS)
                config = Config(shape=shape, dtype=dtype, kinds=kinds, notes=list(config_notes))
                time_config(config, runners, repeat, quick, log)
                attempts.append(config)
                share = config.load["other_share"] if config.load else 0.0
                if share <= BUSY_SHARE:
                    break
            del runners
            config = min(attempts, key=lambda c: c.load["other_share"] if c.load else 0.0)
            if len(attempts) > 1:
                config.notes.append(
                    f"timed {len(attempts)} times because other processes were busy (CPU share "
                    + ", ".join(f"{c.load['other_share']:.0%}" for c in attempts if c.load)
                    + "); the least disturbed attempt is reported"
                )
            for kind in kinds:
                check = config.checks.get(kind)
                failed |= bool(check and not check["ok"])
                wrong = "" if not check or check["ok"] else "; ".join(check["problems"])
                log(f"  {label(kind):26s} {_fmt_ms(config.median(kind)):>8s} ms  {wrong}")
            configs.append(config)

    memory_results: dict[str, Any] = {}
    if memory:
        log("peak memory, one fresh process per configuration:")
        for config in [] if quick else configs:  # --quick: the memory target only
            for kind in config.kinds:
                config.memory[kind] = measure_memory(kind, config.shape, config.dtype)
                log(f"  {shape_text(config.shape)} {config.dtype} {label(kind)}: "
                    f"{_fmt_mb(config.memory[kind])} MB")  # fmt: skip
        target_shape = QUICK_MEMORY_SHAPE if quick else MEMORY_TARGET_SHAPE
        for backend in contenders:
            for dtype in ("float64",) if quick else DTYPES:
                if dtype not in dtypes:
                    continue
                kind = f"initscope:{backend}"
                entry = measure_memory(kind, target_shape, dtype)
                entry["shape"] = list(target_shape)
                if "seconds" in entry:
                    entry["gflops"] = flops(target_shape) / entry["seconds"] / 1e9
                memory_results[f"{kind}|{dtype}"] = entry
                log(f"  memory target {shape_text(target_shape)} {dtype} {label(kind)}: "
                    f"{_fmt_mb(entry)} MB")  # fmt: skip

    from initscope.plan import make_plan

    metadata = {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "initscope_version": initscope.__version__,
        "initscope_file": initscope.__file__,
        "initscope_extension": _extension_info(),
        "git_commit": _git_commit(),
        "available_backends": available,
        "initscope_threads": make_plan([1], n_samples=1).threads,
        "cpu": _cpu_info(),
        "environment": {name: os.environ.get(name) for name in _ENV_VARS},
        "blas": _blas_info(),
        "torch": _torch_info(),
        "loadavg_start": [round(v, 2) for v in load_start] if load_start else None,
        "loadavg_end": [round(v, 2) for v in os.getloadavg()] if load_start else None,
        "main_process_peak_rss_bytes": _max_rss_bytes(),
    }
    report: dict[str, Any] = {
        "machine": machine_name(),
        "warnings": warnings,
        "metadata": metadata,
        "contenders": contenders,
        "configs": [_config_json(c, contenders) for c in configs],
        "memory_target": memory_results,
        "results_ok": not failed,
    }
    report["targets"] = targets(configs, contenders, memory_results)
    report["markdown"] = markdown(report, configs, contenders)
    return report


def _config_json(config: Config, contenders: list[str]) -> dict[str, Any]:
    gemm = config.median("gemm")
    variants = {}
    for kind in config.kinds:
        t = config.median(kind)
        variants[kind] = {
            "label": label(kind),
            "median_s": t,
            "samples_s": config.samples.get(kind, []),
            "warmup_s": config.warmup.get(kind),
            "networks_per_sample": config.batch.get(kind),
            "gflops": flops(config.shape) / t / 1e9 if t else None,
            "fraction_of_gemm": gemm / t if gemm and t else None,
            "speedup_of": {
                b: t / other for b in contenders if t and (other := config.median(f"initscope:{b}"))
            },
            "check": config.checks.get(kind),
            "memory": config.memory.get(kind),
        }
    return {
        "shape": {"n_samples": config.shape[0], "width": config.shape[1], "depth": config.shape[2]},
        "dtype": config.dtype,
        "flops": flops(config.shape),
        "variants": variants,
        "cpu_load": config.load,
        "notes": config.notes,
    }


def _parse_shapes(text: str) -> list[Shape]:
    shapes = []
    for part in text.split(","):
        try:
            n, w, depth = (int(v) for v in part.strip().lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--shapes: cannot read {part!r}; write n_samples x width x depth, "
                "e.g. 1000x500x10,100x500x10"
            ) from None
        shapes.append((n, w, depth))
    return shapes


def _parse_list(choices: Sequence[str] | None) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if choices is not None and (bad := [item for item in items if item not in choices]):
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items

    return parse


def parser() -> argparse.ArgumentParser:
    """The options of ``initscope bench`` and ``bench/run.py``."""
    p = argparse.ArgumentParser(
        prog="initscope bench",
        description="Time initscope against the seed's NumPy, the best plain NumPy, PyTorch "
        "and the GEMM alone; write JSON and a markdown table. Fair command: "
        f"{FAIR_COMMAND}",
    )
    p.add_argument("--quick", action="store_true", help="small shapes, under a minute")
    p.add_argument("--out", metavar="PATH", help="JSON results file; the table goes to PATH.md")
    p.add_argument("--shapes", type=_parse_shapes, metavar="NxWxL,...",
                   help="shapes to time instead of the defaults, e.g. 1000x500x10")  # fmt: skip
    p.add_argument("--backends", type=_parse_list(None), metavar="NAME,...",
                   help="initscope backends to time (default: every available one)")  # fmt: skip
    p.add_argument("--baselines", type=_parse_list(BASELINES), default=list(BASELINES),
                   metavar="NAME,...", help=f"baselines among {', '.join(BASELINES)}")  # fmt: skip
    p.add_argument("--dtypes", type=_parse_list(DTYPES), default=list(DTYPES), metavar="DTYPE,...")
    p.add_argument("--repeat", type=int, default=None, metavar="N",
                   help="timed rounds per shape (default: 3 to 7, by time)")  # fmt: skip
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite from the command line; 0 on success, 1 if a result was wrong."""
    args = parser().parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser().error("--repeat must be at least 1")
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    unset = " ".join(f"-u {name}" for name in _OPENBLAS_SLOW_VARS if name not in os.environ)
    program = [os.path.basename(sys.argv[0]) or "python", *sys.argv[1:]]
    if program[0].endswith(".py"):
        program = [os.path.basename(sys.executable), sys.argv[0], *sys.argv[1:]]
    command = " ".join(program)
    if unset == " ".join(f"-u {name}" for name in _OPENBLAS_SLOW_VARS):
        command = f"env {unset} {command}"  # the variables were unset: that is the fair command
    report = run_suite(
        shapes,
        dtypes=args.dtypes,
        backends=args.backends,
        baselines=args.baselines,
        repeat=args.repeat,
        quick=args.quick,
        memory=not args.no_memory,
        command=command,
        log=lambda text: print(text, file=sys.stderr, flush=True),
    )
    print(report["markdown"])
    if args.out:
        base = args.out[:-5] if args.out.endswith(".json") else args.out
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump({k: v for k, v in report.items() if k != "markdown"}, handle, indent=1)
            handle.write("\n")
        with open(base + ".md", "w") as handle:
            handle.write(report["markdown"])
        print(f"wrote {args.out} and {base}.md", file=sys.stderr)
    if not report["results_ok"]:
        print("some results were WRONG: see the check column", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
