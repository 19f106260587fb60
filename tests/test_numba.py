"""The Numba backend (initscope.backends.jitted) against the NumPy reference, the specification.

Generator output must be bit-identical; statistics agree to rtol 1e-10 in float64 and 1e-4 in
float32; results do not depend on the thread count (bit for bit) nor on the chunk size (to
rounding).  The last tests hide numba and check the fallbacks.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")

import initscope  # noqa: E402
import initscope.random as spec  # noqa: E402
from initscope import backends  # noqa: E402
from initscope.activations import ACTIVATIONS, activation  # noqa: E402
from initscope.backends import _jit_random, jitted, reference  # noqa: E402
from initscope.plan import make_plan  # noqa: E402

MOMENTS = ("mean", "std", "pre_mean", "pre_std", "channel_sq_mean", "channel_var")
COUNTS = ("below", "above", "nonfinite", "pre_nonfinite")
EVERYTHING = (*MOMENTS, "min", "max", *COUNTS, "hist", "zero_fraction", "saturated_fraction")


def assert_close(result, ref, dtype: str, hist_fraction: float = 0.0) -> None:
    """float64: rtol 1e-10, float32: 1e-4 (relative to the size of the layer's values, as a
    mean can be ~0); counts equal in float64, within a few per 10**5 entries in float32, or
    ``hist_fraction`` of the entries for the histogram and fractions of a chaotic network."""
    rtol = 1e-10 if dtype == "float64" else 1e-4
    # the size of the values: a std far below the mean is known only to eps * |mean|
    scale = np.nan_to_num(
        np.max([ref.std, ref.pre_std, np.abs(ref.mean), np.abs(ref.pre_mean)], axis=0)
    )
    for name in (*MOMENTS, "min", "max"):
        got, want = getattr(result, name), getattr(ref, name)
        assert np.array_equal(np.isnan(got), np.isnan(want)), name
        ok = np.isnan(want) | (np.abs(got - want) <= rtol * (np.abs(want) + scale))
        assert ok.all(), f"{name}: {got[~ok]} != {want[~ok]} (rtol {rtol})"
    entries = ref.n_samples * np.asarray(ref.widths)
    slack = 0 if dtype == "float64" else np.maximum(3, entries // 20_000)
    for name in COUNTS:
        assert np.all(np.abs(getattr(result, name) - getattr(ref, name)) <= slack), name
    hist_slack = np.maximum(2 * slack, hist_fraction * entries)
    assert np.all(np.abs(result.hist - ref.hist).sum(axis=1) <= hist_slack), "hist"
    for name in ("zero_fraction", "saturated_fraction"):
        got, want = getattr(result, name), getattr(ref, name)
        assert np.array_equal(np.isnan(got), np.isnan(want)), name
        assert np.all(np.nan_to_num(np.abs(got - want)) <= hist_slack / entries + 1e-12), name


def assert_identical(a, b) -> None:
    for name in EVERYTHING:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def bits(values: np.ndarray) -> np.ndarray:
    return values.view(np.uint64 if values.dtype == np.float64 else np.uint32)


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
    (5, spec.WEIGHTS, 0, 3, 3 * _jit_random.SEGMENT + 5),  # several parallel segments
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["normal", "uniform"])
@pytest.mark.parametrize(("seed", "stream", "layer", "start", "count"), CASES)
def test_generator_is_bit_identical(kind, dtype, seed, stream, layer, start, count):
    want = getattr(spec, kind)(seed, stream, layer, start, count, dtype)
    got = np.full(count, np.nan, dtype=dtype)
    getattr(_jit_random, f"fill_{kind}")(got, seed, stream, layer, start)
    np.testing.assert_array_equal(bits(got), bits(want))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("init", ["xavier", "big", "glorot_uniform", "he_uniform", "zeros"])
def test_weights_biases_and_inputs_are_bit_identical(init, dtype):
    plan = make_plan([37, 64], init=init, input_dim=50, n_samples=101, bias=0.3, dtype=dtype,
                     seed=2**63 + 5)  # fmt: skip
    weights = jitted._Weights(plan, chunks=1)
    t = plan.dtype.type
    for i, layer in enumerate(plan.layers):
        weights.draw(i)
        np.testing.assert_array_equal(bits(weights(i)), bits(reference.layer_weights(plan, i)))
        got = np.empty(layer.fan_out, dtype=dtype)
        _jit_random.fill_normal(got, plan.seed, spec.BIASES, i, 0, t(layer.bias_std))
        np.testing.assert_array_equal(bits(got), bits(reference.layer_biases(plan, i)))
    inputs = reference.layer_inputs(plan)
    for r0, r1 in [(0, 101), (0, 1), (33, 34), (17, 99)]:  # as the chunks draw them
        got = np.empty((r1 - r0, plan.input_dim), dtype=dtype)
        _jit_random.fill_normal(got, plan.seed, spec.INPUTS, 0, r0 * plan.input_dim)
        np.testing.assert_array_equal(bits(got), bits(inputs[r0:r1]))


# ---- statistics against the reference --------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("init", ["small", "big", "xavier"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_seed_experiments_match_the_reference(init, act, dtype):
    kwargs = dict(init=init, activation=act, dtype=dtype, n_samples=1000)
    result = initscope.propagate([500] * 10, backend="numba", **kwargs)
    ref = initscope.propagate([500] * 10, backend="numpy", **kwargs)
    assert result.backend == "numba"
    # "big" tanh networks are chaotic: a float32 rounding difference grows about 3x per
    # layer, so that by layer 10 a few hundred of the 500,000 values change bins (in every
    # backend that does not reproduce the reference's GEMM bit for bit); the moments hold.
    chaotic = init == "big" and act == "tanh" and dtype == "float32"
    assert_close(result, ref, dtype, hist_fraction=0.005 if chaotic else 0.0)
    assert np.abs(result.hist[0] - ref.hist[0]).sum() <= (0 if dtype == "float64" else 4)
    if dtype == "float64":
        np.testing.assert_array_equal(result.hist, ref.hist)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_activation_with_bias_matches_the_reference(act, dtype):
    kwargs = dict(init="he_uniform", activation=act, dtype=dtype, n_samples=517, bias=0.5,
                  bins=17, hist_range=(-1.5, 2.5), seed=11)  # fmt: skip
    result = initscope.propagate([64, 48, 33], backend="numba", chunk_size=200, **kwargs)
    ref = initscope.propagate([64, 48, 33], backend="numpy", **kwargs)
    assert_close(result, ref, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kept_activations_are_close_to_the_reference(dtype):
    kwargs = dict(n_samples=300, input_dim=20, dtype=dtype, keep_activations=True, bias=0.1,
                  activation=["tanh", "gelu", "relu"])  # fmt: skip
    result = initscope.propagate([30, 10, 7], backend="numba", chunk_size=70, **kwargs)
    ref = initscope.propagate([30, 10, 7], backend="numpy", **kwargs)
    assert result.activations is not None and ref.activations is not None
    for got, want in zip(result.activations, ref.activations, strict=True):
        assert got.dtype == want.dtype == np.dtype(dtype) and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == "float64" else 1e-5,
                                   atol=1e-12 if dtype == "float64" else 1e-6)  # fmt: skip


def test_user_inputs_and_matrix_schemes():
    x = np.random.default_rng(0).standard_normal((123, 17))
    init = ["orthogonal", lambda i, o: np.full((i, o), 0.05), "glorot_uniform"]
    kwargs = dict(inputs=x, init=init, activation=["tanh", "relu", "sigmoid"])
    result = initscope.propagate([40, 40, 9], backend="numba", chunk_size=50, **kwargs)
    ref = initscope.propagate([40, 40, 9], backend="numpy", **kwargs)
    assert_close(result, ref, "float64")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", ["relu", "linear", "silu", "gelu"])
def test_nan_and_zero_rows_are_counted_like_the_reference(act, dtype):
    x = np.random.default_rng(1).standard_normal((90, 40))
    x[3, 5] = np.nan  # a NaN row in every layer
    x[7, :] = 0.0  # a row of exact zeros in every layer
    kwargs = dict(inputs=x, init="xavier", activation=act, dtype=dtype)
    result = initscope.propagate([200] * 6, backend="numba", chunk_size=37, **kwargs)
    ref = initscope.propagate([200] * 6, backend="numpy", **kwargs)
    assert np.all(ref.nonfinite == 200) and np.all(ref.pre_nonfinite == 200)
    assert np.all(ref.zero_fraction >= 1 / 90)
    assert_close(result, ref, dtype)


# ---- threads and chunks ----------------------------------------------------------------------


def test_bit_identical_for_any_thread_count():
    kwargs = dict(n_samples=3000, chunk_size=1000, bias=0.2, backend="numba", init="he_uniform")
    runs = [initscope.propagate([300, 200, 300], threads=t, **kwargs) for t in (1, 2, 3, 8)]
    for other in runs[1:]:
        assert_identical(other, runs[0])


def test_threads_are_restored_after_a_run():
    before = numba.get_num_threads()
    initscope.propagate([20], n_samples=10, backend="numba", threads=1)
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_chunk_size_changes_only_rounding(dtype):
    kwargs = dict(n_samples=1000, bias=0.1, dtype=dtype, backend="numba", activation="tanh")
    whole = initscope.propagate([120, 80], **kwargs)
    for chunk in (1, 7, 48, 240, 333, 999):
        chunked = initscope.propagate([120, 80], chunk_size=chunk, **kwargs)
        for name in MOMENTS:
            np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name),
                                       rtol=1e-12, atol=1e-15, err_msg=name)  # fmt: skip
        for name in ("min", "max", *COUNTS, "hist", "zero_fraction", "saturated_fraction"):
            np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), name)


def test_weights_drawn_again_per_chunk_match_kept_weights(monkeypatch):
    kwargs = dict(n_samples=700, chunk_size=100, backend="numba", init=["xavier", "he_uniform"])
    kept = initscope.propagate([64, 32], **kwargs)
    monkeypatch.setattr(jitted, "WEIGHT_CACHE_BYTES", 0)
    redrawn = initscope.propagate([64, 32], **kwargs)
    assert_identical(redrawn, kept)


def test_numpy_gemm_fallback_matches(monkeypatch):
    """Without scipy-openblas32, the GEMM is NumPy's, on the whole chunk."""
    kwargs = dict(n_samples=500, chunk_size=200, bias=0.3, backend="numba")
    with_blas = initscope.propagate([50, 60], **kwargs)
    monkeypatch.setattr(jitted, "_blas", lambda: (0, 0))
    without = initscope.propagate([50, 60], **kwargs)
    for name in MOMENTS:
        np.testing.assert_allclose(getattr(without, name), getattr(with_blas, name),
                                   rtol=1e-12, atol=1e-15, err_msg=name)  # fmt: skip


def test_keyboard_interrupt_surfaces_between_chunks(monkeypatch):
    calls = []
    layer = jitted._layer

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return layer(*args)

    monkeypatch.setattr(jitted, "_layer", interrupted)
    before = numba.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        initscope.propagate([16], n_samples=100, chunk_size=10, backend="numba", threads=1)
    assert len(calls) == 3
    assert numba.get_num_threads() == before


# ---- property test ---------------------------------------------------------------------------


@settings(deadline=None)
@given(
    widths=st.lists(st.integers(1, 90), min_size=1, max_size=4),
    n_samples=st.integers(1, 600),
    chunk=st.integers(1, 600),
    act=st.sampled_from(ACTIVATIONS),
    dtype=st.sampled_from(["float64", "float32"]),
    init=st.sampled_from(["xavier", "small", "glorot_uniform", "he_normal", "orthogonal"]),
    bias=st.sampled_from([0.0, 0.0, 0.2, 1.0]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**64 - 1),
)
def test_property_numba_equals_the_reference(
    widths, n_samples, chunk, act, dtype, init, bias, threads, seed
):
    kwargs = dict(n_samples=n_samples, activation=act, dtype=dtype, seed=seed, init=init,
                  bias=bias, bins=13, hist_range=(-2.0, 2.0))  # fmt: skip
    result = initscope.propagate(widths, backend="numba", chunk_size=chunk, threads=threads,
                                 **kwargs)  # fmt: skip
    ref = initscope.propagate(widths, backend="numpy", **kwargs)
    assert_close(result, ref, dtype)
    total = n_samples * np.asarray(widths)
    assert np.all(result.hist.sum(axis=1) + result.below + result.above + result.nonfinite
                  >= total)  # fmt: skip


# ---- the activations -------------------------------------------------------------------------


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
    got = jitted.activate(act, x)
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


def test_activation_is_bit_identical_to_the_compiled_kernel():
    try:
        importlib.import_module("initscope.backends.compiled").check_available()
        from initscope import _core
    except ImportError:
        pytest.skip("initscope._core is not built here")
    x = np.random.default_rng(3).uniform(-50, 50, 5000)
    for dtype in ("float32", "float64"):
        for name in ACTIVATIONS:
            act = activation(name)
            got = jitted.activate(act, x.astype(dtype))
            want = _core.activate(act.code, act.param, x.astype(dtype))
            np.testing.assert_array_equal(bits(got), bits(want), f"{name} {dtype}")


def test_bit_identical_to_the_compiled_kernel():
    """The same tiles, GEMM calls, activations and merge order as the C++ kernel."""
    if "cpp" not in initscope.available_backends():
        pytest.skip("initscope._core is not built here")
    for dtype in ("float64", "float32"):
        for act in ACTIVATIONS:
            kwargs = dict(init=["xavier", "he_uniform", "orthogonal"], activation=act,
                          dtype=dtype, n_samples=700, chunk_size=300, bias=0.2, seed=3)  # fmt: skip
            cpp = initscope.propagate([90, 64, 70], backend="cpp", **kwargs)
            assert_identical(initscope.propagate([90, 64, 70], backend="numba", **kwargs), cpp)


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
        print("numba" in sys.modules, "initscope.backends.jitted" in sys.modules)
    """)
    assert out.split() == ["False", "False"]


def test_kernels_load_from_the_disk_cache_in_a_new_process():
    initscope.propagate([8], n_samples=4, backend="numba")  # compiled and cached by now
    out = _run("""
        import initscope
        from initscope.backends import jitted
        initscope.propagate([8], n_samples=4, backend="numba")
        print(sum(jitted._layer.stats.cache_hits.values()),
              sum(jitted._layer.stats.cache_misses.values()))
    """)
    hits, misses = map(int, out.split())
    assert (hits, misses) == (1, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_process_forked_after_a_run_runs_again():
    """numba's OpenMP layer kills a child forked after it ran: there the kernels run serially."""
    out = _run("""
        import os
        import numpy as np
        import initscope
        kwargs = dict(n_samples=300, chunk_size=100, bias=0.1, backend="numba",
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
    for name in ("initscope.backends.jitted", "initscope.backends._jit_random"):
        monkeypatch.delitem(sys.modules, name, raising=False)
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


@pytest.mark.usefixtures("without_numba")
def test_without_numba_asking_for_it_says_what_to_install(monkeypatch):
    with pytest.raises(ImportError, match=r"pip install 'initscope\[numba\]'"):
        initscope.propagate([5], n_samples=3, backend="numba")
    assert "numba" not in initscope.available_backends()
    monkeypatch.delenv("INITSCOPE_BACKEND", raising=False)
    fallback = "cpp" if "cpp" in initscope.available_backends() else "numpy"
    assert initscope.propagate([5], n_samples=3, backend="auto").backend == fallback
