"""Behaviour under stress: overflow, concurrency, interrupts and the memory guard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import initscope
from initscope.plan import estimate_memory, make_plan


@pytest.mark.parametrize(
    ("activation", "dtype", "std"),
    [("relu", "float32", 1.0), ("linear", "float32", 1.0), ("relu", "float64", 1e6)],
)
def test_overflow_is_reported_not_raised(backend, activation, dtype, std):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning spam either
        result = initscope.propagate(
            [256] * 50, init=initscope.schemes.normal(std=std), activation=activation,
            dtype=dtype, n_samples=64, backend=backend,
        )  # fmt: skip
    assert result.nonfinite[-1] > 0 and result.nonfinite[0] == 0
    overflowed = result.nonfinite > 0
    assert np.all(np.isnan(result.mean[overflowed])) and np.all(np.isnan(result.std[overflowed]))
    # before the overflow, moments are finite unless squares overflow (|a| > 1e154): then inf
    early = slice(0, np.argmax(overflowed))
    small = np.maximum(np.abs(result.min[early]), np.abs(result.max[early])) < 1e150
    assert np.all(np.isfinite(result.std[early][small]))
    entries = 64 * 256
    assert np.all(result.hist.sum(axis=1) + result.below + result.above + result.nonfinite
                  >= entries)  # fmt: skip


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_statistics_of_non_finite_and_huge_values(backend, dtype):
    """NaN, +-inf and finite values whose squares overflow, placed in the first row of a
    tile (the moments' shift), in the middle of one, in its last, short block and in a
    clean tile: every count, min and max equals NumPy's own over the kept values."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((490, 8)).astype(dtype)  # tiles of 240, 240 and 10 rows
    x[100, 5] = np.nan  # mid-tile, after clean blocks
    x[240, 3] = -np.inf  # the first row of the second tile
    x[300:304] = 0.0  # a block of zeros
    x[485, 1] = np.inf  # the last tile's second block
    x[489, 2] = np.finfo(dtype).max / 4  # its short last block: finite, its square not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = initscope.propagate(
            [8], init="identity", activation="linear", inputs=x, dtype=dtype, bins=10,
            hist_range=(-2.0, 2.0), keep_activations=True, backend=backend,
        )  # fmt: skip
    a = result.activations[0]  # = H (linear); a row with an inf also has NaN (inf * 0)
    finite = np.isfinite(a)
    assert np.isnan(a[100, 5]) and np.isinf(a[485, 1]) and np.isfinite(a[489, 2])
    assert result.nonfinite[0] == result.pre_nonfinite[0] == (~finite).sum()
    assert result.min[0] == a[finite].min() and result.max[0] == a[finite].max()
    assert result.zero_fraction[0] == (a == 0).sum() / a.size
    assert result.below[0] == (a < -2).sum() and result.above[0] == (a > 2).sum()
    inside = a[(a >= -2) & (a <= 2)]
    np.testing.assert_array_equal(result.hist[0], np.histogram(inside, bins=10, range=(-2, 2))[0])
    assert np.isnan(result.mean[0]) and np.isnan(result.std[0])

    clean = initscope.propagate(
        [8], init="identity", activation="linear", inputs=x[:96], dtype=dtype, backend=backend
    )  # no non-finite value: the fast path throughout
    assert clean.nonfinite[0] == clean.pre_nonfinite[0] == 0
    assert clean.min[0] == x[:96].min() and clean.max[0] == x[:96].max()
    np.testing.assert_allclose(clean.std[0], x[:96].astype(np.float64).std(), rtol=1e-12)


def test_concurrent_calls_equal_sequential_calls(backend):
    seeds = list(range(8))

    def run(seed: int) -> initscope.PropagationResult:
        return initscope.propagate(
            [200, 100, 200], n_samples=500, seed=seed, bias=0.1, backend=backend, threads=2
        )

    sequential = [run(s) for s in seeds]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(run, seeds))
    for a, b in zip(sequential, concurrent, strict=True):
        for name in ("mean", "std", "pre_std", "hist", "channel_var", "min", "max"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), name)


def test_memory_estimate_covers_kept_activations():
    plan = make_plan([300, 200], n_samples=1000, keep_activations=True)
    kept = 1000 * (300 + 200) * 8
    buffers = 2 * plan.chunk_size * 300 * 8
    assert kept + buffers <= estimate_memory(plan) < kept + buffers + 4 * 2**20


@pytest.mark.parametrize(
    ("widths", "n_samples", "chunk_size", "weights"),
    [
        ([300, 200], 1000, None, 2 * 300 * 300),  # one chunk: two rotating buffers
        ([300, 200], 1000, 100, 300 * 300 + 300 * 200),  # chunks: every layer's, kept
        ([4096] * 3, 5000, None, 2 * 4096 * 4096),  # too large to keep: rotating
    ],
)
def test_memory_estimate_counts_weights_as_the_kernels_hold_them(
    widths, n_samples, chunk_size, weights
):
    plan = make_plan(widths, n_samples=n_samples, chunk_size=chunk_size)
    buffers = 2 * plan.chunk_size * max(widths) * 8
    hist = plan.threads * 8 * (30 + 3) * 8  # per thread, 8 copies of the slots
    assert estimate_memory(plan, "cpp") == buffers + weights * 8 + hist


def test_memory_guard_counts_the_histograms(backend):
    # 10**8 bins: 0.8 GB of counters per copy, refused before anything is allocated
    with pytest.raises(ValueError, match="bins"):
        initscope.propagate([4], n_samples=10, bins=10**8, backend=backend, max_memory=2**29)
    result = initscope.propagate([4], n_samples=10, bins=10**5, backend=backend)
    assert (
        result.hist.shape == (1, 10**5)
        and result.hist.sum() + result.below.sum() + (result.above.sum()) == 40
    )


def test_default_chunk_amortises_redrawn_weights():
    # weights too large to keep are redrawn per chunk: a chunk holds at least min(w, 4096)
    # rows, in whole tiles of 240 (4096 -> 18 tiles), in whole groups of four tiles where a
    # layer is wide (4096 x 4096 weights: 4096 -> 5 groups)
    assert make_plan([2048] * 4, n_samples=10**5).chunk_size == 18 * 240
    assert make_plan([4096] * 4, n_samples=10**5).chunk_size == 5 * 4 * 240
    assert make_plan([4096] * 4, n_samples=10**5, dtype="float32").chunk_size == 5 * 4 * 240
    # 128 MiB of two float64 buffers of 256 units: 32768 rows -> 137 tiles
    assert make_plan([256] * 4, n_samples=10**7).chunk_size == 137 * 240
    assert make_plan([500] * 10, n_samples=1000).chunk_size == 1000


def test_memory_guard_names_what_to_change(backend):
    with pytest.raises(ValueError, match="chunk_size.*bins.*keep_activations=False.*max_memory"):
        initscope.propagate(
            [4096] * 4, n_samples=10**6, keep_activations=True, backend=backend,
            max_memory=2**30,
        )  # fmt: skip
    # the same run without kept activations fits in bounded memory (compiled backends)
    if backend != "numpy":
        plan = make_plan([4096] * 4, n_samples=10**6)
        assert estimate_memory(plan, backend) < 2**30


LONG_RUN = textwrap.dedent(
    """
    import signal, sys, initscope
    # a shell that starts jobs in the background leaves SIGINT ignored: Python's handler back
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("start", flush=True)
    initscope.propagate([1024] * 8, n_samples=10**7, backend=sys.argv[1], chunk_size=4096)
    print("finished", flush=True)
    """
)


def test_ctrl_c_stops_a_long_run(backend):
    if backend == "numpy":
        pytest.skip("the reference holds whole layers; interrupts are checked between them")
    proc = subprocess.Popen(
        [sys.executable, "-c", LONG_RUN, backend],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "start"
    time.sleep(1.5)  # inside the kernel by now (imports and JIT are done)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    elapsed = time.monotonic() - sent
    assert "KeyboardInterrupt" in err
    assert proc.returncode != 0
    # The kernel checks for signals between chunks of 4096 rows (a few ms each here); allow
    # for a loaded machine, far below the minutes the whole run would take.
    assert elapsed < 3.0, f"took {elapsed:.2f} s to stop"


def test_interrupt_leaves_nothing_running(backend, request):
    if backend == "numpy":
        pytest.skip("checked between layers only")
    psutil = pytest.importorskip("psutil")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))  # as ignored
    proc = psutil.Process()
    initscope.propagate([64], n_samples=10, backend=backend)  # warm up: load, JIT
    threads_before = threading.active_count()
    rss_before = proc.memory_info().rss
    for _ in range(3):
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            initscope.propagate([1024] * 8, n_samples=10**7, backend=backend, chunk_size=4096)
        timer.join()
    assert threading.active_count() == threads_before
    cpu = proc.cpu_times()
    time.sleep(0.5)
    busy = sum(proc.cpu_times()[:2]) - sum(cpu[:2])
    assert busy < 0.2, f"{busy:.2f} s of CPU in 0.5 s idle: threads still running"
    grown = proc.memory_info().rss - rss_before
    assert grown < 64 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB over 3 interrupted runs"
