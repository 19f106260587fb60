"""The generator specification (initscope.random) against published and exact facts."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from scipy import stats

from initscope import random as R

# Random123 tests/kat_vectors, "philox4x32 10" lines: counter, key, expected output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_philox_known_answers(counter, key, expected):
    words = tuple(np.array([c], dtype=np.uint64) for c in counter)
    out = R.philox4x32(words, (np.uint64(key[0]), np.uint64(key[1])))
    assert tuple(int(w[0]) for w in out) == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("draw", [R.normal, R.uniform])
def test_any_slice_equals_the_whole(draw, dtype):
    whole = draw(2**40 + 3, R.WEIGHTS, 7, 0, 1001, dtype)
    for start, count in [(0, 1), (1, 5), (3, 998), (999, 2), (500, 0)]:
        part = draw(2**40 + 3, R.WEIGHTS, 7, start, count, dtype)
        assert part.dtype == dtype
        np.testing.assert_array_equal(part, whole[start : start + count])


def test_streams_layers_and_seeds_are_independent():
    a = R.normal(0, R.WEIGHTS, 0, 0, 1000)
    for other in (
        R.normal(1, R.WEIGHTS, 0, 0, 1000),
        R.normal(0, R.BIASES, 0, 0, 1000),
        R.normal(0, R.WEIGHTS, 1, 0, 1000),
        R.normal(2**32, R.WEIGHTS, 0, 0, 1000),
    ):
        assert abs(np.corrcoef(a, other)[0, 1]) < 0.15
        assert not np.array_equal(a, other)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normals_are_standard_normal(dtype):
    n = 400_000
    z = R.normal(12345, R.INPUTS, 0, 0, n, dtype).astype(np.float64)
    se = 1 / math.sqrt(n)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1) < 5 * math.sqrt(2) * se
    assert abs(np.mean(z**4) - 3) < 5 * math.sqrt(96) * se
    # Kolmogorov-Smirnov distance on a subsample: 1.95 / sqrt(m) is the 0.1 % critical value
    sample = np.sort(z[:20_000])
    m = sample.size
    cdf = _normal_cdf(sample)
    d = max(np.max(np.arange(1, m + 1) / m - cdf), np.max(cdf - np.arange(m) / m))
    assert d < 1.95 / math.sqrt(m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniforms_cover_the_unit_interval(dtype):
    u = R.uniform(3, R.AUX, 2, 0, 200_000, dtype)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / u.size)
    counts = np.bincount((u.astype(np.float64) * 20).astype(int), minlength=20)
    expected = u.size / 20
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 50  # chi-square, 19 degrees of freedom: p < 1e-4 above 45.4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_and_sincos_are_accurate(dtype):
    u = R.uniform(9, R.AUX, 0, 0, 100_000, dtype)
    u = u[u > 0]
    exact = np.log(u.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    assert np.max(np.abs(R.log_unit(u) - exact) / ulp) <= 3
    sin, cos = R.sincos_2pi(u)
    eps = np.finfo(dtype).eps
    assert np.max(np.abs(sin - np.sin(2 * np.pi * u.astype(np.float64)))) < 4 * eps
    assert np.max(np.abs(cos - np.cos(2 * np.pi * u.astype(np.float64)))) < 4 * eps


def test_seed_out_of_range():
    with pytest.raises(ValueError, match="seed"):
        R.normal(-1, R.WEIGHTS, 0, 0, 4)
    with pytest.raises(ValueError, match="seed"):
        R.normal(2**64, R.WEIGHTS, 0, 0, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constants_are_typed_in_their_dtype(dtype):
    """A float32 times a Python float is float32 in NumPy and float64 in Numba: every float
    constant of a dtype must be of that dtype, so that both compute alike."""
    constants = R.float_constants(np.zeros(1, dtype))
    floats = [getattr(constants, name) for name in ("one", "two", "half", "four", "minus_two",
              "sqrt2", "ln2_hi", "ln2_lo", "pio2", "round_magic")]  # fmt: skip
    floats += [*constants.log_c, *constants.sin_c, *constants.cos_c]
    assert all(np.asarray(c).dtype == dtype for c in floats)
    bits = np.uint64 if dtype == np.float64 else np.uint32
    for name in ("exp_shift", "mantissa", "one_bits"):
        assert np.asarray(getattr(constants, name)).dtype == bits, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_building_blocks_element_by_element_equal_them_on_arrays(dtype):
    """Blocks act element by element, as the Numba backend runs them; philox on scalars."""
    u = R.uniform(4, R.AUX, 1, 0, 64, dtype)
    v = R.uniform(4, R.AUX, 2, 0, 64, dtype)
    z0, z1 = R.box_muller(v, u)
    for i in range(u.size):
        a, b = R.box_muller(v[i : i + 1], u[i : i + 1])
        assert (a[0], b[0]) == (z0[i], z1[i])
    words = R.philox4x32(tuple(np.uint64(w) for w in (1, 2, 3, 4)), (np.uint64(5), np.uint64(6)))
    arrays = R.philox4x32(tuple(np.full(3, w, np.uint64) for w in (1, 2, 3, 4)),
                          (np.uint64(5), np.uint64(6)))  # fmt: skip
    assert all(int(w) == int(a[2]) for w, a in zip(words, arrays, strict=True))


# ---- float64 normals: four per block from the 32-bit words ------------------------------------

#: |z - z_exact| <= ACCURACY * max(1, r) for every float64 normal (random.py's stated bound)
ACCURACY = 2e-14
#: sqrt(-2 log 2**-32): the largest float64 normal
Z_MAX = math.sqrt(64 * math.log(2))
#: words at the ends of the ranges: x = 1 (r = 0), x = 2**-32 (r = Z_MAX), quadrant edges
EXTREME_WORDS = [0, 1, 2, 3, 2**29 - 1, 2**29, 2**30, 2**31 - 1, 2**31, 3 * 2**30 - 1,
                 2**32 - 2**29 - 1, 2**32 - 2**29, 2**32 - 2, 2**32 - 1]  # fmt: skip


def _normals_of_words(radius_words, angle_words) -> tuple[np.ndarray, np.ndarray]:
    """Elements 4b, 4b + 1 of blocks whose words 0, 1 are the given ones (2, 3 alike)."""
    w = (np.asarray(radius_words, np.uint64), np.asarray(angle_words, np.uint64))
    with np.errstate(all="ignore"):
        z0, z1, z2, z3 = R.block_normals64((w[0], w[1], w[0], w[1]))
    np.testing.assert_array_equal(z0, z2)  # words 2, 3 are a pair as words 0, 1 are
    np.testing.assert_array_equal(z1, z3)
    return z0, z1


def test_float64_normals_are_within_the_bound_of_mpmath():
    rng = np.random.default_rng(20240601)
    radius = EXTREME_WORDS + [int(w) for w in rng.integers(0, 2**32, 1500)]
    angle = EXTREME_WORDS[::-1] + [int(w) for w in rng.integers(0, 2**32, 1500)]
    pairs = [(a, b) for a in EXTREME_WORDS for b in EXTREME_WORDS] + list(
        zip(radius, angle, strict=True)
    )
    z0, z1 = _normals_of_words([a for a, _ in pairs], [b for _, b in pairs])
    worst = 0.0
    with mpmath.workdps(30):
        for (a, b), c, s in zip(pairs, z0, z1, strict=True):
            r = mpmath.sqrt(-2 * mpmath.log(1 - mpmath.mpf(a) / 2**32))
            theta = 2 * mpmath.pi * mpmath.mpf(b) / 2**32
            scale = max(1, r)
            worst = max(worst, abs(c - r * mpmath.cos(theta)) / scale)
            worst = max(worst, abs(s - r * mpmath.sin(theta)) / scale)
    assert worst <= ACCURACY
    assert worst > ACCURACY / 100  # the bound is a real one, not loose by orders


def test_float64_normals_are_within_the_bound_of_numpy():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2**32, 1_000_000, dtype=np.uint64)
    b = rng.integers(0, 2**32, 1_000_000, dtype=np.uint64)
    z0, z1 = _normals_of_words(a, b)
    r = np.sqrt(-2 * np.log(1 - a.astype(np.float64) * 2.0**-32))  # 1 - a 2**-32 is exact
    theta = 2 * np.pi * (b.astype(np.float64) * 2.0**-32)
    scale = np.maximum(1, r)
    assert np.max(np.abs(z0 - r * np.cos(theta)) / scale) <= ACCURACY
    assert np.max(np.abs(z1 - r * np.sin(theta)) / scale) <= ACCURACY


def test_float64_normals_are_bounded_by_the_32_bit_grid():
    """|z| <= sqrt(64 ln 2) = 6.66, reached at the largest radius word; r = 0 at word 0."""
    z0, z1 = _normals_of_words([2**32 - 1, 2**32 - 1, 0], [0, 2**30, 12345])
    assert abs(z0[0] - Z_MAX) <= ACCURACY * Z_MAX and abs(z1[0]) <= ACCURACY * Z_MAX
    assert abs(z1[1] - Z_MAX) <= ACCURACY * Z_MAX  # a quarter turn: sin = 1
    assert z0[2] == 0 and z1[2] == 0
    z = R.normal(99, R.INPUTS, 0, 0, 400_000)
    assert np.max(np.abs(z)) <= Z_MAX * (1 + ACCURACY)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elements_follow_the_block_rule(dtype):
    """Element ``per_block * b + j`` of a stream is value j of block b: 4 per block for
    normals of both dtypes and float32 uniforms, 2 for float64 uniforms (53 bits each)."""
    key = R._key(2**33 + 5)
    for normal, per_block in [(True, 4), (False, 4 if dtype == np.float32 else 2)]:
        assert R.values_per_block(dtype, normal) == per_block
        for b in (0, 1, 77, 2**32 + 1):
            words = R.block_words(np.array([b], np.uint64), np.uint64(1), np.uint64(3), key)
            if dtype == np.float32:
                want = R.block_values32(words, normal)
            else:
                want = R.block_normals64(words) if normal else R.block_uniforms64(words)
            draw = R.normal if normal else R.uniform
            got = draw(2**33 + 5, 1, 3, per_block * b, per_block, dtype)
            np.testing.assert_array_equal(got, np.concatenate(want))


def test_float64_normal_moments_ks_and_tails():
    """The specification's own float64 normals (10**6) against N(0, 1)."""
    n = 1_000_000
    z = R.normal(31337, R.WEIGHTS, 2, 5, n)
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / n)  # excess kurtosis
    assert stats.kstest(z, "norm").pvalue > 1e-3
    for k in (1, 2, 3, 4):
        p = math.erfc(k / math.sqrt(2))
        count = np.count_nonzero(np.abs(z) > k)
        assert abs(count - n * p) < 5 * math.sqrt(n * p * (1 - p)) + 1, k
