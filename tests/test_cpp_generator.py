"""The compiled generator (initscope._core) against Random123's vectors and initscope.random."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import stats

import initscope.random as spec
from initscope.backends import cpp

try:
    cpp.check_available()
    from initscope import _core
except ImportError as exc:  # pragma: no cover - only without the extension
    pytest.skip(f"initscope._core unavailable: {exc}", allow_module_level=True)

# Random123's known-answer vectors for Philox4x32-10 (kat_vectors): counter, key, output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_philox_known_answers(counter, key, expected):
    assert _core.testing.philox4x32(counter, key) == expected


def _bits(values: np.ndarray) -> np.ndarray:
    return values.view(np.uint64 if values.dtype == np.float64 else np.uint32)


CASES = [
    # seed, stream, layer, start, count: odd starts and counts cut blocks and batches
    (0, spec.INPUTS, 0, 0, 1),
    (0, spec.INPUTS, 0, 0, 1000),
    (1, spec.WEIGHTS, 3, 1, 3),
    (12345, spec.WEIGHTS, 7, 333, 2049),
    (2**32 - 1, spec.BIASES, 1, 5, 511),
    (2**32, spec.WEIGHTS, 2, 0, 17),
    (2**40 + 12345, spec.AUX, 9, 2**20 + 3, 1025),
    (2**64 - 1, spec.INPUTS, 2**32 - 1, 7, 300),
    # block counters crossing 2**32 (the counter's high word)
    (99, spec.WEIGHTS, 4, 4 * 2**32 - 517, 1103),
    (99, spec.WEIGHTS, 4, 2 * 2**32 - 3, 9),
    # every start and end within a block of four (float64 normals) or two
    (3, spec.WEIGHTS, 1, 2, 7),
    (3, spec.WEIGHTS, 1, 6, 4093),
    (3, spec.WEIGHTS, 1, 1022, 515),
    (3, spec.WEIGHTS, 1, 511, 1),
    # the last elements of a stream: start + count is 2**64, or beyond (blocks still fit)
    (5, spec.BIASES, 6, 2**64 - 517, 517),
    (5, spec.BIASES, 6, 2**64 - 3, 300),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["normal", "uniform"])
@pytest.mark.parametrize(("seed", "stream", "layer", "start", "count"), CASES)
def test_draws_are_bit_identical_to_the_specification(
    kind, dtype, seed, stream, layer, start, count
):
    got = getattr(_core.testing, kind)(seed, stream, layer, start, count, dtype)
    want = getattr(spec, kind)(seed, stream, layer, start, count, dtype)
    assert got.dtype == want.dtype == np.dtype(dtype)
    assert got.shape == (count,)
    mismatched = np.flatnonzero(_bits(got) != _bits(want))
    assert mismatched.size == 0, (
        f"{mismatched.size} of {count} differ, first at {mismatched[:5]}: "
        f"{got[mismatched[:3]]} != {want[mismatched[:3]]}"
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pieces_concatenate_to_the_whole(dtype):
    whole = _core.testing.normal(7, spec.WEIGHTS, 1, 10, 5000, dtype)
    cuts = [0, 1, 2, 255, 256, 257, 1023, 3333, 5000]
    pieces = [
        _core.testing.normal(7, spec.WEIGHTS, 1, 10 + a, b - a, dtype)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    ]
    np.testing.assert_array_equal(_bits(np.concatenate(pieces)), _bits(whole))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_draws_have_the_right_moments(dtype):
    n = 400_000
    z = _core.testing.normal(3, spec.INPUTS, 0, 0, n, dtype).astype(np.float64)
    u = _core.testing.uniform(3, spec.INPUTS, 0, 0, n, dtype).astype(np.float64)
    # 5 standard errors
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.mean(z**4) - 3) < 5 * np.sqrt(96 / n)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)


def test_streams_layers_and_seeds_differ():
    base = _core.testing.normal(5, spec.WEIGHTS, 0, 0, 64)
    for other in (
        _core.testing.normal(6, spec.WEIGHTS, 0, 0, 64),
        _core.testing.normal(5, spec.BIASES, 0, 0, 64),
        _core.testing.normal(5, spec.WEIGHTS, 1, 0, 64),
        _core.testing.normal(5 + 2**32, spec.WEIGHTS, 0, 0, 64),
    ):
        assert not np.any(other == base)


def test_bad_dtype_is_a_value_error():
    with pytest.raises(ValueError, match="float32 or float64"):
        _core.testing.normal(0, 0, 0, 0, 10, "int32")


def test_float64_normals_moments_and_ks():
    """10**7 float64 normals: mean, variance, skewness and excess kurtosis within five
    standard errors of N(0, 1)'s, and a Kolmogorov-Smirnov test on 10**6 of them."""
    n = 10**7
    z = _core.testing.normal(2024, spec.WEIGHTS, 5, 3, n, "float64")
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / n)
    assert stats.kstest(z[:1_000_000], "norm").pvalue > 1e-3
    assert np.max(np.abs(z)) <= math.sqrt(64 * math.log(2)) * (1 + 2e-14)


def _tail_counts(seed: int, start: int, count: int) -> np.ndarray:
    """#{|z| > k}, k = 1 .. 6, of float64 normals ``start .. start + count - 1``."""
    tail = np.abs(_core.testing.normal(seed, spec.INPUTS, 1, start, count, "float64"))
    counts = []
    for k in range(1, 7):
        tail = tail[tail > k]
        counts.append(tail.size)
    return np.array(counts)


@pytest.mark.slow
def test_float64_normal_tails_up_to_six_sigma():
    """P(|z| > k), k = 1 .. 6, against erfc(k / sqrt 2) within five standard errors, from
    2**31 normals drawn in chunks on two threads (the kernel and NumPy release the GIL).
    About 4 lie beyond 6 sigma: the tails, cut at 6.66 sigma, are there."""
    chunk, chunks = 1 << 24, 128
    with ThreadPoolExecutor(2) as pool:
        parts = pool.map(lambda c: _tail_counts(77, c * chunk, chunk), range(chunks))
        counts = np.sum(list(parts), axis=0)
    n = chunk * chunks
    for k in range(1, 7):
        expected = n * math.erfc(k / math.sqrt(2))
        assert abs(counts[k - 1] - expected) < 5 * math.sqrt(expected) + 1, (k, counts, expected)
    assert counts[5] > 0
