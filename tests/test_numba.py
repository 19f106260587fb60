"""What only the Numba backend (initscope.backends.numba) has: its generator kernels, its
activations, its constants and memory estimate, its chunk loop, and how it loads.

The comparisons every fast backend shares (against the reference, across thread counts and
chunk sizes) run on numba through the ``fast_backend`` fixture: test_backends.py,
test_fuzz.py, invariance.py.  Here: the random numbers, bit for bit against the
specification; activations and whole runs bit for bit against the C++ kernel (the two
compiled backends share GEMM calls, activations and merge order); the memory a run
allocates, measured, against its estimate; fork, interrupts, and the fallbacks when numba
or scipy-openblas32 is missing.  The backward pass: test_numba_gradients.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

numba = pytest.importorskip("numba")

import initscope  # noqa: E402
import initscope.random as spec  # noqa: E402
from compare import MOMENTS, assert_matches  # noqa: E402
from initscope import backends  # noqa: E402
from initscope.activations import ACTIVATIONS, activation  # noqa: E402
from initscope.backends import _numba_generator as generator  # noqa: E402
from initscope.backends import numba as jit  # noqa: E402
from initscope.backends import numpy as reference  # noqa: E402
from initscope.plan import column_blocks, make_plan  # noqa: E402

#: Every array of a result, and of its gradients.
EVERYTHING = (*initscope.PropagationResult.LAYER_FIELDS, "hist")
GRADS = (*initscope.PropagationResult.GRAD_FIELDS, "grad_hist", "grad_range")


def assert_identical(a, b) -> None:
    for name in EVERYTHING + (GRADS if b.has_gradients else ()):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def bits(values: np.ndarray) -> np.ndarray:
    return values.view(np.uint64 if values.dtype == np.float64 else np.uint32)


def _core():
    """initscope._core, or a skip where the extension is not built."""
    if "cpp" not in initscope.available_backends():
        pytest.skip("initscope._core is not built here")
    from initscope import _core

    return _core


# ---- the generator, bit for bit --------------------------------------------------------------

CASES = [
    # seed, stream, layer, start, count: odd starts and counts cut blocks and segments
    (0, spec.INPUTS, 0, 0, 1),
    (0, spec.INPUTS, 0, 0, 1000),
    (1, spec.WEIGHTS, 3, 1, 3),
    (1, spec.WEIGHTS, 3, 2, 1),
    (12345, spec.WEIGHTS, 7, 333, 2049),
    (2**32 - 1, spec.BIASES, 1, 5, 511),
    (2**32, spec.WEIGHTS, 2, 0, 17),
    (2**40 + 12345, spec.AUX, 9, 2**20 + 3, 1025),
    (2**64 - 1, spec.INPUTS, 2**32 - 1, 7, 300),
    (99, spec.WEIGHTS, 4, 4 * 2**32 - 517, 1103),  # block counters crossing 2**32
    (99, spec.WEIGHTS, 4, 2 * 2**32 - 3, 9),
    (5, spec.WEIGHTS, 0, 3, 3 * generator.SEGMENT + 5),  # several parallel segments
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["normal", "uniform"])
@pytest.mark.parametrize(("seed", "stream", "layer", "start", "count"), CASES)
def test_generator_is_bit_identical(kind, dtype, seed, stream, layer, start, count):
    want = getattr(spec, kind)(seed, stream, layer, start, count, dtype)
    got = np.full(count, np.nan, dtype=dtype)
    getattr(generator, f"fill_{kind}")(got, seed, stream, layer, start)
    np.testing.assert_array_equal(bits(got), bits(want))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("init", ["xavier", "big", "glorot_uniform", "he_uniform", "zeros"])
def test_weights_biases_and_inputs_are_bit_identical(init, dtype):
    plan = make_plan([37, 64], init=init, input_dim=50, n_samples=101, bias=0.3, dtype=dtype,
                     seed=2**63 + 5)  # fmt: skip
    weights = jit._Weights(plan, chunks=1)
    t = plan.dtype.type
    for i, layer in enumerate(plan.layers):
        weights.draw(i)
        np.testing.assert_array_equal(bits(weights(i)), bits(reference.layer_weights(plan, i)))
        got = np.empty(layer.fan_out, dtype=dtype)
        generator.fill_normal(got, plan.seed, spec.BIASES, i, 0, t(layer.bias_std))
        np.testing.assert_array_equal(bits(got), bits(reference.layer_biases(plan, i)))
    inputs = reference.layer_inputs(plan)
    for r0, r1 in [(0, 101), (0, 1), (33, 34), (17, 99)]:  # as the chunks draw them
        got = np.empty((r1 - r0, plan.input_dim), dtype=dtype)
        generator.fill_normal(got, plan.seed, spec.INPUTS, 0, r0 * plan.input_dim)
        np.testing.assert_array_equal(bits(got), bits(inputs[r0:r1]))


# ---- constants, memory, chunks ---------------------------------------------------------------


def test_constants_are_the_cpp_kernels():
    core = _core()
    assert jit.TILE_ROWS == core.TILE_ROWS == initscope.plan.TILE_ROWS
    assert jit.WEIGHT_CACHE_BYTES == core.WEIGHT_CACHE_BYTES
    assert jit.SEGMENT == generator.SEGMENT == core.SEGMENT
    assert (core.BLOCK_COLUMNS, core.MIN_JOBS, core.MIN_BLOCK_COLUMNS) == (
        initscope.plan.BLOCK_COLUMNS,
        initscope.plan.MIN_JOBS,
        initscope.plan.MIN_BLOCK_COLUMNS,
    )


def _peak_bytes(plan) -> int:
    """What a run of ``plan`` allocates at its peak (NumPy's allocations are traced)."""
    jit.run(plan)  # compiled and loaded before tracing
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        jit.run(plan)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("chunk_size", [None, 240])
def test_weights_that_do_not_fit_the_cache_are_drawn_again(monkeypatch, chunk_size):
    """Rotating weight buffers, drawn again for the way back: the same bits as kept weights,
    and the run's peak memory is its estimate."""
    kwargs = dict(widths=[256, 200, 256, 128], n_samples=700, chunk_size=chunk_size,
                  init=["xavier", "he_uniform", "glorot_uniform", "xavier"], bias=0.1,
                  gradients=True, dtype="float32")  # fmt: skip
    kept = initscope.propagate(backend="numba", **kwargs)
    plan = make_plan(**kwargs)
    all_weights = sum(layer.fan_in * layer.fan_out for layer in plan.layers) * 4
    monkeypatch.setattr(jit, "WEIGHT_CACHE_BYTES", all_weights - 1)
    assert not jit._Weights(plan, plan.chunks, gradients=True).keep
    assert_identical(initscope.propagate(backend="numba", **kwargs), kept)
    estimate = jit.estimate_memory(plan)
    assert plan.weight_bytes(jit.WEIGHT_CACHE_BYTES) == 2 * 256 * 256 * 4  # two buffers
    peak = _peak_bytes(plan)
    assert 0 <= peak - estimate <= 32 * 1024, (peak, estimate)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(widths=[300, 200], n_samples=1000),
        dict(widths=[300, 200], n_samples=1000, chunk_size=240, keep_activations=True),
        dict(widths=[50] * 3, n_samples=5000, chunk_size=480),
        dict(widths=[300, 200], n_samples=1000, gradients=True),
        dict(widths=[120, 200, 90], n_samples=1500, chunk_size=480, gradients=True,
             grad_bins=500, dtype="float32"),
    ],
)  # fmt: skip
def test_memory_estimate_is_what_a_run_allocates(kwargs):
    plan = make_plan(bins=1000, **kwargs)
    estimate = jit.estimate_memory(plan)
    peak = _peak_bytes(plan)
    assert 0 <= peak - estimate <= 32 * 1024, (peak, estimate)


def test_a_chunk_of_partial_tiles_is_refused():
    """A chunk that is not whole tiles would cut a GEMM call: make_plan never makes one."""
    plan = make_plan([20], n_samples=1000)
    with pytest.raises(ValueError, match="chunk_size"):
        jit.run(replace(plan, chunk_size=100))


def test_weights_drawn_again_per_chunk_match_kept_weights(monkeypatch):
    """Three layers: two rotating buffers then hold two of them, and each chunk draws again."""
    kwargs = dict(n_samples=700, chunk_size=240, backend="numba",
                  init=["xavier", "he_uniform", "glorot_uniform"])  # fmt: skip
    kept = initscope.propagate([64, 32, 48], **kwargs)
    monkeypatch.setattr(jit, "WEIGHT_CACHE_BYTES", 0)
    redrawn = initscope.propagate([64, 32, 48], **kwargs)
    assert_identical(redrawn, kept)


def test_numpy_gemm_fallback_matches(monkeypatch):
    """Without scipy-openblas32, the GEMM is NumPy's, on the whole chunk."""
    kwargs = dict(n_samples=500, chunk_size=240, bias=0.3, backend="numba")
    with_blas = initscope.propagate([50, 60], **kwargs)
    monkeypatch.setattr(jit, "_blas", lambda: (0, 0))
    without = initscope.propagate([50, 60], **kwargs)
    for name in MOMENTS:
        np.testing.assert_allclose(getattr(without, name), getattr(with_blas, name),
                                   rtol=1e-12, atol=1e-15, err_msg=name)  # fmt: skip


def test_threads_are_restored_after_a_run():
    before = numba.get_num_threads()
    initscope.propagate([20], n_samples=10, backend="numba", threads=1)
    assert numba.get_num_threads() == before


def test_keyboard_interrupt_surfaces_between_chunks(monkeypatch):
    calls = []
    layer = jit._layer

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return layer(*args)

    monkeypatch.setattr(jit, "_layer", interrupted)
    before = numba.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        initscope.propagate([16], n_samples=2400, chunk_size=240, backend="numba", threads=1)
    assert len(calls) == 3
    assert numba.get_num_threads() == before


# ---- the activations and the C++ kernel ------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_follows_the_reference(name, dtype):
    """Within a few ulp of the reference's formula, with its zeros and non-finite values."""
    rng = np.random.default_rng(7)
    top = 800.0 if dtype == "float64" else 110.0
    tails = np.geomspace(1e-30, top, 400)
    x = np.concatenate([tails, -tails, rng.uniform(-40, 40, 2000), rng.standard_normal(500),
                        [0.0, -0.0, np.nan, np.inf, -np.inf]]).astype(dtype)  # fmt: skip
    act = activation(name)
    got = jit.activate(act, x)
    want = act(x)
    assert got.dtype == want.dtype == np.dtype(dtype)
    assert np.array_equal(got == 0, want == 0), "zeros differ"
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaNs differ"
    finite = np.isfinite(want) & (np.abs(want) > np.finfo(dtype).tiny)
    # The reference itself is a few ulp off, and far more in the tails of the two gelus,
    # whose computed argument's rounding error the tail amplifies (by 2 z**2 for erfc(z)).
    rtol = (1e-13 if dtype == "float64" else 1e-5) * (1e4 if "gelu" in name else 1)
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=0)
    infinite = np.isinf(want)
    np.testing.assert_array_equal(got[infinite], want[infinite])
    subnormal = ~finite & ~infinite & ~np.isnan(want)
    np.testing.assert_allclose(got[subnormal], want[subnormal], rtol=0,
                               atol=np.finfo(dtype).tiny)  # fmt: skip


def test_activation_is_bit_identical_to_the_cpp_kernel():
    core = _core()
    rng = np.random.default_rng(3)
    tails = np.geomspace(1e-30, 800.0, 300)
    x = np.concatenate([rng.uniform(-50, 50, 5000), tails, -tails, [0.0, -0.0, np.inf, -np.inf]])
    for dtype in ("float32", "float64"):
        for name in ACTIVATIONS:
            act = activation(name)
            with np.errstate(over="ignore"):
                values = x.astype(dtype)
            got = jit.activate(act, values)
            want = core.testing.activate(act.code, act.param, values)
            np.testing.assert_array_equal(bits(got), bits(want), f"{name} {dtype}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bit_identical_to_the_cpp_kernel(dtype):
    """The same tiles, GEMM calls, activations and merge order as the C++ kernel."""
    _core()
    for act in ACTIVATIONS:
        kwargs = dict(init=["xavier", "he_uniform", "orthogonal"], activation=act,
                      dtype=dtype, n_samples=700, chunk_size=480, bias=0.2, seed=3)  # fmt: skip
        cpp = initscope.propagate([90, 64, 70], backend="cpp", **kwargs)
        assert_identical(initscope.propagate([90, 64, 70], backend="numba", **kwargs), cpp)


@pytest.mark.parametrize(
    ("widths", "n_samples", "blocks"),
    [([520, 300], 200, [4, 2]), ([2100], 1000, [2])],
    ids=["few samples", "wide"],
)
def test_layers_in_blocks_of_columns_are_bit_identical_to_the_cpp_kernel(widths, n_samples, blocks):
    """Layers that the C++ kernel multiplies in blocks of columns: with one tile, up to 4
    blocks of 128 columns or more; 2100 units, in 2 blocks of about 1024. Their float32
    GEMM calls round otherwise than whole rows do, so the blocks must be the same."""
    fan_ins = [64, *widths[:-1]]
    assert [column_blocks(a, b, n_samples) for a, b in zip(fan_ins, widths, strict=True)] == blocks
    kwargs = dict(input_dim=64, n_samples=n_samples, dtype="float32", bias=0.2, seed=4)
    cpp = initscope.propagate(widths, backend="cpp", **kwargs)
    assert_identical(initscope.propagate(widths, backend="numba", threads=2, **kwargs), cpp)


# ---- loading, caching and hiding numba -------------------------------------------------------


def _run(code: str) -> str:
    """Run ``code`` in a new interpreter that imports this same initscope."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(initscope.__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=600, check=True, env=env)  # fmt: skip
    return out.stdout


def test_import_initscope_does_not_import_numba():
    out = _run("""
        import sys, initscope
        initscope.propagate([8], n_samples=4, backend="numpy")
        print("numba" in sys.modules, "initscope.backends.numba" in sys.modules)
    """)
    assert out.split() == ["False", "False"]


def test_kernels_load_from_the_disk_cache_in_a_new_process():
    initscope.propagate([8, 8], n_samples=4, backend="numba", gradients=True)  # cached by now
    out = _run("""
        import initscope
        from initscope.backends import numba as jit
        initscope.propagate([8, 8], n_samples=4, backend="numba", gradients=True)
        for kernel in (jit._layer, jit._backward):
            print(sum(kernel.stats.cache_hits.values()),
                  sum(kernel.stats.cache_misses.values()))
    """)
    assert [tuple(map(int, line.split())) for line in out.splitlines()] == [(1, 0), (1, 0)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_process_forked_after_a_run_runs_again():
    """numba's OpenMP layer kills a child forked after it ran: there the kernels run serially."""
    out = _run("""
        import os
        import numpy as np
        import initscope
        kwargs = dict(n_samples=300, chunk_size=240, bias=0.1, backend="numba",
                      init=["xavier", "he_uniform"], dtype="float32")
        before = initscope.propagate([64, 64], **kwargs)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            after = initscope.propagate([64, 64], **kwargs)
            same = all(np.array_equal(getattr(before, name), getattr(after, name))
                       for name in ("mean", "std", "pre_std", "min", "max", "hist"))
            os.write(write, b"same" if same else b"different")
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.read(read, 100).decode(), status)
    """)
    assert out.split() == ["same", "0"]


@pytest.fixture
def without_numba(monkeypatch):
    """numba made unimportable, and the backends detected again; restored afterwards."""
    monkeypatch.setitem(sys.modules, "numba", None)
    for name in [m for m in sys.modules if m.startswith("initscope.backends.") and "numba" in m]:
        monkeypatch.delitem(sys.modules, name)
    backends._load.cache_clear()
    yield
    backends._load.cache_clear()


def test_auto_takes_numba_without_the_compiled_extension(monkeypatch):
    load = backends._load
    monkeypatch.setattr(backends, "_load", lambda name: None if name == "cpp" else load(name))
    monkeypatch.delenv("INITSCOPE_BACKEND", raising=False)
    auto = initscope.propagate([40, 30], n_samples=200, bias=0.1, backend="auto")
    assert auto.backend == "numba"
    assert_identical(auto, initscope.propagate([40, 30], n_samples=200, bias=0.1, backend="numba"))
    assert_matches(auto, initscope.propagate([40, 30], n_samples=200, bias=0.1, backend="numpy"))


@pytest.mark.usefixtures("without_numba")
def test_without_numba_asking_for_it_says_what_to_install(monkeypatch):
    with pytest.raises(ImportError, match=r"pip install 'initscope\[numba\]'"):
        initscope.propagate([5], n_samples=3, backend="numba")
    assert "numba" not in initscope.available_backends()
    monkeypatch.delenv("INITSCOPE_BACKEND", raising=False)
    fallback = "cpp" if "cpp" in initscope.available_backends() else "numpy"
    assert initscope.propagate([5], n_samples=3, backend="auto").backend == fallback
