"""Every fast backend against the NumPy reference, and the invariants of chunking and threads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import initscope
import invariance
from compare import assert_matches
from initscope.activations import ACTIVATIONS


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("init", ["small", "big", "xavier"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_seed_experiments_match_the_reference(fast_backend, init, activation, dtype):
    kwargs = dict(init=init, activation=activation, dtype=dtype)
    result = initscope.propagate([500] * 10, backend=fast_backend, **kwargs)
    reference = initscope.propagate([500] * 10, backend="numpy", **kwargs)
    assert_matches(result, reference, dtype, chaotic=init == "big" and dtype == "float32")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_matches_the_reference(fast_backend, activation, dtype):
    kwargs = dict(
        init="he_uniform",
        activation=activation,
        dtype=dtype,
        n_samples=257,
        bias=0.3,
        bins=17,
        hist_range=(-1.5, 2.5),
        seed=11,
    )
    result = initscope.propagate([64, 48, 33], backend=fast_backend, **kwargs)
    reference = initscope.propagate([64, 48, 33], backend="numpy", **kwargs)
    assert_matches(result, reference, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_kept_activations_match_the_reference(fast_backend, dtype):
    kwargs = dict(n_samples=100, input_dim=20, dtype=dtype, keep_activations=True, bias=0.1)
    result = initscope.propagate([30, 10], backend=fast_backend, **kwargs)
    reference = initscope.propagate([30, 10], backend="numpy", **kwargs)
    for a, b in zip(result.activations, reference.activations, strict=True):
        assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b, rtol=1e-12 if dtype == "float64" else 1e-5, atol=1e-6)


def test_user_inputs_and_matrix_schemes(fast_backend):
    x = np.random.default_rng(0).standard_normal((123, 17))
    init = ["orthogonal" if "orthogonal" in initscope.schemes.SCHEMES else "xavier",
            lambda i, o: np.full((i, o), 0.05), "glorot_uniform"]  # fmt: skip
    kwargs = dict(inputs=x, init=init, activation=["tanh", "relu", "sigmoid"])
    result = initscope.propagate([40, 40, 9], backend=fast_backend, **kwargs)
    reference = initscope.propagate([40, 40, 9], backend="numpy", **kwargs)
    assert_matches(result, reference)


@pytest.mark.parametrize("case", invariance.CASES[1:3])
def test_bit_identical_for_any_chunk_and_thread_count(fast_backend, case):
    invariance.assert_identical(invariance.results_for_every_split(fast_backend, case))


@given(
    widths=st.lists(st.integers(1, 70), min_size=1, max_size=4),
    n_samples=st.integers(1, 800),
    chunk=st.integers(1, 800),
    threads=st.integers(1, 3),
    activation=st.sampled_from(ACTIVATIONS),
    dtype=st.sampled_from(["float64", "float32"]),
    seed=st.integers(0, 2**64 - 1),
)
def test_merged_chunk_statistics_equal_the_whole(
    fast_backend, widths, n_samples, chunk, threads, activation, dtype, seed
):
    """Chunks hold whole tiles, so merging them gives the whole run's numbers bit for bit."""
    kwargs = dict(
        n_samples=n_samples,
        activation=activation,
        dtype=dtype,
        seed=seed,
        backend=fast_backend,
        init="glorot_normal",
    )
    whole = initscope.propagate(widths, chunk_size=n_samples, threads=1, **kwargs)
    chunked = initscope.propagate(widths, chunk_size=chunk, threads=threads, **kwargs)
    invariance.assert_identical([whole, chunked])
    reference = initscope.propagate(widths, backend="numpy", **{
        k: v for k, v in kwargs.items() if k != "backend"})  # fmt: skip
    assert_matches(whole, reference, dtype)
