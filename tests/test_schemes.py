"""Every init scheme against its formula, torch's and Keras's definitions, and torch itself.

Moments are checked with tolerances of six standard errors, estimated from the sample's own
fourth moment, on fixed seeds: a failure means a wrong formula, not bad luck.  Truncated
normals are checked against closed forms computed with mpmath (itself checked by numerical
integration), not against initscope's own helpers.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

import initscope
from initscope import random as rnd
from initscope import schemes as S

FAN_IN, FAN_OUT = 400, 300  # 120_000 weights: standard errors of about 0.3% of the std
K = 6.0  # standard errors allowed
DTYPES = ["float64", "float32"]


# ---- helpers -------------------------------------------------------------------------------------


def moment_errors(w: np.ndarray) -> tuple[float, float, float, float]:
    """Sample mean, variance and their standard errors (the latter from the 4th moment)."""
    x = np.asarray(w, dtype=np.float64).ravel()
    n = x.size
    mean = x.mean()
    d = x - mean
    var = np.mean(d**2)
    m4 = np.mean(d**4)
    return mean, var, math.sqrt(var / n), math.sqrt(max(m4 - var**2, 0.0) / n)


def assert_moments(w: np.ndarray, mean: float, std: float, k: float = K) -> None:
    m, v, se_m, se_v = moment_errors(w)
    assert abs(m - mean) <= k * max(se_m, 1e-300), (m, mean, se_m)
    assert abs(v - std**2) <= k * se_v, (math.sqrt(v), std, se_v)


def assert_same_moments(x: np.ndarray, y: np.ndarray, k: float = K) -> None:
    """Two samples of the same law: means and variances agree within k joint std errors."""
    mx, vx, sx, svx = moment_errors(x)
    my, vy, sy, svy = moment_errors(y)
    assert abs(mx - my) <= k * math.hypot(sx, sy), (mx, my)
    assert abs(vx - vy) <= k * math.hypot(svx, svy), (vx, vy)


mpmath.mp.dps = 30


def truncated_moments(mean: float, std: float, a: float, b: float) -> tuple[float, float]:
    """Mean and std of N(mean, std²) truncated to [a, b]: the textbook closed form, in mpmath."""
    al = mpmath.mpf(a - mean) / std if math.isfinite(a) else -mpmath.inf
    be = mpmath.mpf(b - mean) / std if math.isfinite(b) else mpmath.inf

    def pdf(x):
        return mpmath.mpf(0) if mpmath.isinf(x) else mpmath.npdf(x)

    def xpdf(x):
        return mpmath.mpf(0) if mpmath.isinf(x) else x * mpmath.npdf(x)

    z = mpmath.ncdf(be) - mpmath.ncdf(al)
    shift = (pdf(al) - pdf(be)) / z
    var = 1 + (xpdf(al) - xpdf(be)) / z - shift**2
    return float(mean + std * shift), float(std * mpmath.sqrt(var))


def truncated_cdf(x: float, mean: float, std: float, a: float, b: float) -> float:
    al = (a - mean) / std if math.isfinite(a) else -mpmath.inf
    be = (b - mean) / std if math.isfinite(b) else mpmath.inf
    z = mpmath.ncdf(be) - mpmath.ncdf(al)
    return float((mpmath.ncdf((x - mean) / std) - mpmath.ncdf(al)) / z)


def assert_cdf(w: np.ndarray, cdf, points) -> None:
    x = np.asarray(w, dtype=np.float64).ravel()
    n = x.size
    for p in points:
        f = cdf(p)
        emp = np.count_nonzero(x <= p) / n
        assert abs(emp - f) <= K * math.sqrt(f * (1 - f) / n) + 1.0 / n, (p, emp, f)


# ---- i.i.d. schemes against their formulas -------------------------------------------------------

gain_tanh = 5.0 / 3.0
# (scheme, mean, std, kind, uniform bound) with the formulas written out from torch/Keras docs
IID = [
    ("small", S.small(), 0.0, 0.01),
    ("big", S.big(), 0.0, 1.0),
    ("xavier", S.xavier(), 0.0, 1 / math.sqrt(FAN_IN)),
    ("lecun_normal", S.lecun_normal(), 0.0, 1 / math.sqrt(FAN_IN)),
    ("normal", S.normal(0.5, 2.0), 0.5, 2.0),
    ("random_normal", S.scheme("random_normal"), 0.0, 0.05),
    ("glorot_normal", S.glorot_normal(gain=2.0), 0.0, 2.0 * math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("he_normal", S.he_normal(), 0.0, math.sqrt(2 / FAN_IN)),
    (
        "he_normal_leaky_fan_out",
        S.he_normal(a=0.2, mode="fan_out"),
        0.0,
        math.sqrt(2 / (1 + 0.2**2)) / math.sqrt(FAN_OUT),
    ),
    (
        "he_normal_tanh_fan_avg",
        S.he_normal(mode="fan_avg", nonlinearity="tanh"),
        0.0,
        gain_tanh / math.sqrt((FAN_IN + FAN_OUT) / 2),
    ),
    (
        "vs_untruncated",
        S.variance_scaling(3.0, "fan_out", "untruncated_normal"),
        0.0,
        math.sqrt(3.0 / FAN_OUT),
    ),
]
UNIFORM = [  # (id, scheme, low, high)
    ("uniform", S.uniform(-1.0, 3.0), -1.0, 3.0),
    ("random_uniform", S.scheme("random_uniform"), -0.05, 0.05),
    ("glorot_uniform", S.glorot_uniform(), *(lambda a: (-a, a))(math.sqrt(6 / (FAN_IN + FAN_OUT)))),
    (
        "glorot_uniform_gain",
        S.glorot_uniform(gain=gain_tanh),
        *(lambda a: (-a, a))(gain_tanh * math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ),
    ("he_uniform", S.he_uniform(), *(lambda a: (-a, a))(math.sqrt(6 / FAN_IN))),
    (
        "he_uniform_relu_fan_out",
        S.he_uniform(mode="fan_out", nonlinearity="relu"),
        *(lambda a: (-a, a))(math.sqrt(6 / FAN_OUT)),
    ),
    ("lecun_uniform", S.lecun_uniform(), *(lambda a: (-a, a))(math.sqrt(3 / FAN_IN))),
    (
        "vs_uniform_fan_avg",
        S.variance_scaling(0.5, "fan_avg", "uniform"),
        *(lambda a: (-a, a))(math.sqrt(3 * 0.5 / ((FAN_IN + FAN_OUT) / 2))),
    ),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "init", "mean", "std"), IID, ids=[c[0] for c in IID])
def test_normal_schemes_match_their_formula(name, init, mean, std, dtype):
    dist = init.distribution(FAN_IN, FAN_OUT)
    assert dist is not None and dist.kind == "normal"
    assert dist.a == pytest.approx(mean, abs=1e-15)
    assert dist.b == pytest.approx(std, rel=1e-14)
    w = init.sample(FAN_IN, FAN_OUT, seed=11, layer=3, dtype=dtype)
    assert w.shape == (FAN_IN, FAN_OUT) and w.dtype == np.dtype(dtype)
    assert_moments(w, mean, std)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "init", "low", "high"), UNIFORM, ids=[c[0] for c in UNIFORM])
def test_uniform_schemes_match_their_formula(name, init, low, high, dtype):
    dist = init.distribution(FAN_IN, FAN_OUT)
    assert dist is not None and dist.kind == "uniform"
    assert (dist.a, dist.b) == pytest.approx((low, high), rel=1e-14)
    w = init.sample(FAN_IN, FAN_OUT, seed=5, layer=1, dtype=dtype)
    t = np.dtype(dtype).type
    assert w.min() >= t(low) and w.max() <= t(high)
    # 120_000 uniforms reach within 1e-3 of each end (the chance they don't is e^-120)
    assert w.min() < low + 1e-3 * (high - low) and w.max() > high - 1e-3 * (high - low)
    assert_moments(w, (low + high) / 2, (high - low) / math.sqrt(12))


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_zeros_ones(dtype):
    for init, value in ((S.zeros(), 0.0), (S.ones(), 1.0), (S.constant(-0.25), -0.25)):
        w = init.sample(7, 5, seed=3, dtype=dtype)
        assert w.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(w, np.full((7, 5), value, dtype=dtype))
    assert S.scheme("ones") == S.constant(1.0) and S.scheme("zeros") == S.constant(0.0)


def test_the_seeds_xavier_is_lecun_normal_not_glorot():
    assert S.xavier().distribution(500, 100) == S.lecun_normal().distribution(500, 100)
    assert S.glorot_normal().distribution(500, 100).b == pytest.approx(math.sqrt(2 / 600))


# ---- calculate_gain ------------------------------------------------------------------------------

# torch.nn.init.calculate_gain's documented table
GAINS = {
    "linear": 1.0,
    "conv1d": 1.0,
    "conv2d": 1.0,
    "conv3d": 1.0,
    "conv_transpose1d": 1.0,
    "conv_transpose2d": 1.0,
    "conv_transpose3d": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    "leaky_relu": math.sqrt(2.0 / (1 + 0.01**2)),
    "selu": 0.75,
}


@pytest.mark.parametrize(("name", "gain"), GAINS.items())
def test_calculate_gain_has_torchs_values(name, gain):
    assert initscope.calculate_gain(name) == pytest.approx(gain, rel=1e-15)


def test_calculate_gain_leaky_relu_slope():
    assert initscope.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert initscope.calculate_gain("leaky_relu", 0) == pytest.approx(math.sqrt(2.0))
    assert initscope.calculate_gain("leaky_relu", 1) == pytest.approx(1.0)
    assert initscope.calculate_gain("tanh", 0.2) == pytest.approx(5 / 3)  # param ignored


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("swish",), "nonlinearity 'swish'.*tanh"),
        (("Tanh",), "nonlinearity"),
        ((None,), "nonlinearity"),
        (("leaky_relu", "0.2"), "negative_slope"),
        (("leaky_relu", True), "negative_slope"),
        (("leaky_relu", math.nan), "negative_slope"),
    ],
)
def test_calculate_gain_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        initscope.calculate_gain(*args)


# ---- truncated normals ---------------------------------------------------------------------------


def test_closed_form_oracle_against_numerical_integration():
    """The test's own truncated-normal formula, checked by quadrature."""
    for mean, std, a, b in ((0.3, 1.7, -1.0, 4.0), (0.0, 1.0, 0.0, math.inf), (1.0, 0.5, 1.9, 2.2)):
        m, s = truncated_moments(mean, std, a, b)

        def dens(x, mean=mean, std=std):
            return mpmath.npdf(x, mean, std)

        lo = a if math.isfinite(a) else -mpmath.inf
        hi = b if math.isfinite(b) else mpmath.inf
        z = mpmath.quad(dens, [lo, hi])
        m_q = mpmath.quad(lambda x: x * dens(x), [lo, hi]) / z
        v_q = mpmath.quad(lambda x, m_q=m_q: (x - m_q) ** 2 * dens(x), [lo, hi]) / z
        assert m == pytest.approx(float(m_q), rel=1e-12, abs=1e-14)
        assert s == pytest.approx(float(mpmath.sqrt(v_q)), rel=1e-12)


def test_keras_constant_is_the_std_of_a_normal_truncated_at_two_sigma():
    _, s = truncated_moments(0.0, 1.0, -2.0, 2.0)
    assert S.KERAS_TRUNCATED_STD == pytest.approx(s, rel=1e-15)


TRUNCATED = [  # (mean, std, a, b): torch's absolute bounds
    (0.0, 1.0, -2.0, 2.0),  # torch's defaults
    (0.5, 2.0, -1.0, 3.0),  # asymmetric
    (0.0, 0.02, -2.0, 2.0),  # timm's trunc_normal_(std=.02): bounds at ±100 std
    (0.0, 1.0, 0.0, math.inf),  # half-normal
    (0.0, 1.0, -math.inf, -1.5),  # one tail
    (0.0, 1.0, -0.05, 0.05),  # narrow: uniform proposals
    (1.0, 1.0, 4.0, 5.0),  # 3 to 4 std out: uniform proposals
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("mean", "std", "a", "b"), TRUNCATED)
def test_truncated_normal_matches_the_closed_form(mean, std, a, b, dtype):
    init = S.truncated_normal(mean, std, a, b)
    assert init.distribution(FAN_IN, FAN_OUT) is None  # not i.i.d. in place: built in NumPy
    w = init.sample(FAN_IN, FAN_OUT, seed=2, layer=4, dtype=dtype)
    assert w.shape == (FAN_IN, FAN_OUT) and w.dtype == np.dtype(dtype)
    t = np.dtype(dtype).type
    assert w.min() >= t(a) and w.max() <= t(b)
    m, s = truncated_moments(mean, std, a, b)
    assert_moments(w, m, s)
    lo = max(a, mean - 3 * std)
    hi = min(b, mean + 3 * std)
    points = [lo + (hi - lo) * q for q in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert_cdf(w, lambda x: truncated_cdf(x, mean, std, a, b), points)


def test_truncated_normal_keeps_the_normal_schemes_weights_inside_the_bounds():
    init = S.truncated_normal(0.1, 0.5, -0.6, 0.9)
    assert S.truncation_method(-1.4, 1.6)[0] == "normal"
    w = init.sample(60, 70, seed=9, layer=2)
    plain = S.normal(0.1, 0.5).sample(60, 70, seed=9, layer=2)
    inside = (plain >= -0.6) & (plain <= 0.9)
    assert 0.6 < inside.mean() < 0.99
    np.testing.assert_array_equal(w[inside], plain[inside])
    assert not np.any(w[~inside] == plain[~inside])


def _literal_normal_rejection(seed, layer, n, low, high, dtype):
    """The documented rule, one element at a time."""
    z = rnd.normal(seed, rnd.WEIGHTS, layer, 0, n, dtype)
    aux = rnd.normal(seed, rnd.AUX, layer, 0, 20 * n, dtype)
    out, j = [], 0
    for value in z:
        if low <= value <= high:
            out.append(value)
            continue
        while not low <= aux[j] <= high:
            j += 1
        out.append(aux[j])
        j += 1
    return np.array(out, dtype=dtype)


def _literal_uniform_rejection(seed, layer, n, low, high):
    def candidates(stream, count):
        u = rnd.uniform(seed, stream, layer, 0, 2 * count, np.float64)
        return [(low + (high - low) * u[2 * i], u[2 * i + 1]) for i in range(count)]

    m = min(max(0.0, low), high)

    def keep(x, v):
        return (1.0 - v) < math.exp(-(x * x - m * m) / 2)

    out, aux, j = [], candidates(rnd.AUX, 20 * n), 0
    for x, v in candidates(rnd.WEIGHTS, n):
        if keep(x, v):
            out.append(x)
            continue
        while not keep(*aux[j]):
            j += 1
        out.append(aux[j][0])
        j += 1
    return np.array(out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_truncated_normal_follows_its_documented_rejection_rule(dtype):
    # normal proposals: element i is normal i of WEIGHTS, else the next in-bounds AUX normals
    low, high = -1.0, 2.0
    assert S.truncation_method(low, high)[0] == "normal"
    w = S.truncated_normal(0.0, 1.0, low, high).sample(13, 17, seed=4, layer=6, dtype=dtype)
    expected = _literal_normal_rejection(4, 6, 13 * 17, low, high, np.dtype(dtype))
    np.testing.assert_array_equal(w.ravel(), expected)


def test_truncated_normal_narrow_bounds_follow_the_uniform_proposal_rule():
    low, high = 0.5, 1.0
    method, rate = S.truncation_method(low, high)
    assert method == "uniform" and rate > 0.8
    w = S.truncated_normal(0.0, 1.0, low, high).sample(11, 19, seed=8, layer=1)
    np.testing.assert_array_equal(w.ravel(), _literal_uniform_rejection(8, 1, 11 * 19, low, high))


@pytest.mark.parametrize("dtype", DTYPES)
def test_truncated_normal_keras_is_two_sigma_around_the_mean(dtype):
    init = S.truncated_normal_keras(mean=0.3, stddev=0.2)
    w = init.sample(FAN_IN, FAN_OUT, seed=1, dtype=dtype)
    t = np.dtype(dtype).type
    assert w.min() >= t(0.3 - 0.4) and w.max() <= t(0.3 + 0.4)
    assert w.min() < -0.099 and w.max() > 0.699  # the bounds are reached, not narrower
    assert_moments(w, 0.3, 0.2 * S.KERAS_TRUNCATED_STD)
    # the same law as torch's flavour with the bounds written out
    same = S.truncated_normal(0.3, 0.2, 0.3 - 0.4, 0.3 + 0.4).sample(50, 40, seed=6)
    np.testing.assert_allclose(init.sample(50, 40, seed=6), same, rtol=1e-15, atol=1e-16)
    assert S.truncated_normal_keras() == S.truncated_normal_keras(0.0, 0.05)  # Keras defaults


# ---- variance_scaling ----------------------------------------------------------------------------

FANS = {
    "fan_in": FAN_IN,
    "fan_out": FAN_OUT,
    "fan_avg": (FAN_IN + FAN_OUT) / 2,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", list(FANS))
@pytest.mark.parametrize("scale", [1.0, 2.0, 0.1])
def test_variance_scaling_truncated_std_is_sqrt_scale_over_fan(scale, mode, dtype):
    """The point of Keras's 0.8796...: after truncation the std is sqrt(scale / fan)."""
    init = S.variance_scaling(scale, mode)
    assert init.distribution(FAN_IN, FAN_OUT) is None
    w = init.sample(FAN_IN, FAN_OUT, seed=21, layer=2, dtype=dtype)
    target = math.sqrt(scale / FANS[mode])
    bound = 2 * target / 0.87962566103423978
    t = np.dtype(dtype).type
    assert np.abs(w).max() <= t(bound) and np.abs(w).max() > 0.999 * bound
    assert_moments(w, 0.0, target)
    # exactly Keras's truncated normal with stddev sqrt(scale / fan) / 0.87962566103423978
    keras = S.truncated_normal_keras(0.0, target / 0.87962566103423978)
    same = keras.sample(FAN_IN, FAN_OUT, seed=21, layer=2, dtype=dtype)
    np.testing.assert_allclose(w, same, rtol=1e-14 if dtype == "float64" else 1e-6)


def test_variance_scaling_names_and_keras_presets():
    assert S.variance_scaling(distribution="normal") == S.variance_scaling()  # Keras's alias
    assert S.variance_scaling(distribution="Uniform").distribution_name == "uniform"
    assert "distribution='truncated_normal'" in repr(S.variance_scaling())
    assert S.scheme("variance_scaling") == S.variance_scaling(1.0, "fan_in", "truncated_normal")
    # Keras's GlorotUniform / HeUniform / LecunUniform are variance_scaling with "uniform"
    for vs, ours in (
        (S.variance_scaling(1.0, "fan_avg", "uniform"), S.glorot_uniform()),
        (S.variance_scaling(2.0, "fan_in", "uniform"), S.he_uniform()),
        (S.variance_scaling(1.0, "fan_in", "uniform"), S.lecun_uniform()),
    ):
        a, b = vs.distribution(FAN_IN, FAN_OUT), ours.distribution(FAN_IN, FAN_OUT)
        assert a.kind == b.kind == "uniform"
        assert (a.a, a.b) == pytest.approx((b.a, b.b), rel=1e-14)
    # Keras's GlorotNormal: truncated with std sqrt(2 / (fan_in + fan_out)) after truncation
    w = S.variance_scaling(1.0, "fan_avg").sample(FAN_IN, FAN_OUT, seed=3)
    assert_moments(w, 0.0, math.sqrt(2 / (FAN_IN + FAN_OUT)))


# ---- orthogonal ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("fan_in", "fan_out"), [(50, 30), (30, 50), (40, 40), (1, 7), (7, 1)])
@pytest.mark.parametrize("gain", [1.0, 1.5])
def test_orthogonal_is_semi_orthogonal_times_gain(fan_in, fan_out, gain, dtype):
    w = S.orthogonal(gain).sample(fan_in, fan_out, seed=3, layer=1, dtype=dtype)
    assert w.shape == (fan_in, fan_out) and w.dtype == np.dtype(dtype)
    w64 = w.astype(np.float64)
    gram = w64 @ w64.T if fan_in <= fan_out else w64.T @ w64
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(fan_in, fan_out)), atol=tol)
    # torch's layout (out, in): orthonormal columns when out >= in, rows otherwise
    wt = initscope.make_weights(S.orthogonal(gain), fan_in, fan_out, seed=3, layer=1,
                                dtype=dtype, layout="torch").astype(np.float64)  # fmt: skip
    gram_t = wt.T @ wt if fan_out >= fan_in else wt @ wt.T
    np.testing.assert_allclose(gram_t, gain**2 * np.eye(min(fan_in, fan_out)), atol=tol)


@pytest.mark.parametrize(("fan_in", "fan_out"), [(20, 12), (12, 20)])
def test_orthogonal_is_the_sign_corrected_q_of_torchs_normal_matrix(fan_in, fan_out):
    """Q = A R^-1 with diag(R) > 0, A[o, i] the normal behind W[i, o] (torch's (out, in))."""
    w = S.orthogonal().sample(fan_in, fan_out, seed=5, layer=2)
    a = rnd.normal(5, rnd.WEIGHTS, 2, 0, fan_in * fan_out).reshape(fan_in, fan_out).T
    q_torch = w.T  # torch's layout
    if fan_out >= fan_in:  # tall A: A = Q R, R = Q^T A upper triangular with positive diagonal
        r = q_torch.T @ a
    else:  # wide: torch factors A^T = Q' R and stores Q'^T
        r = q_torch @ a.T
    np.testing.assert_allclose(np.tril(r, -1), 0.0, atol=1e-12)
    assert np.all(np.diagonal(r) > 0)


def test_orthogonal_is_haar_distributed():
    """Over many layers: E[trace Q] = 0, Var = 1 for Haar; E[W00] = 0, E[W00²] = 1/n.

    An uncorrected LAPACK Q has a strongly negative trace; this catches a missing sign fix.
    """
    n, draws = 6, 400
    traces, corner = [], []
    for layer in range(draws):
        q = S.orthogonal().sample(n, n, seed=17, layer=layer)
        traces.append(np.trace(q))
        corner.append(q[0, 0])
    assert_moments(np.array(traces), 0.0, 1.0)
    assert abs(np.mean(corner)) <= K * math.sqrt(1 / n / draws)
    assert np.mean(np.square(corner)) == pytest.approx(1 / n, rel=K * math.sqrt(2 / draws))


# ---- identity and sparse -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("fan_in", "fan_out"), [(5, 5), (3, 6), (6, 3)])
def test_identity_is_exact(fan_in, fan_out, dtype):
    for init, g in ((S.identity(), 1.0), (S.identity(gain=2.5), 2.5), (S.scheme("eye"), 1.0)):
        w = init.sample(fan_in, fan_out, seed=123, dtype=dtype)
        expected = np.zeros((fan_in, fan_out), dtype=dtype)
        for i in range(min(fan_in, fan_out)):
            expected[i, i] = g
        np.testing.assert_array_equal(w, expected)
        assert w.dtype == np.dtype(dtype)
        wt = initscope.make_weights(init, fan_in, fan_out, dtype=dtype, layout="torch")
        np.testing.assert_array_equal(wt, expected.T)  # torch's eye_ on (out, in)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("sparsity", "fan_out"), [(0.1, 300), (0.3, 10), (0.5, 7), (0.9, 50)])
def test_sparse_zeros_per_unit_exactly_as_torch(sparsity, fan_out, dtype):
    fan_in = 400
    w = S.sparse(sparsity, std=0.2).sample(fan_in, fan_out, seed=7, layer=3, dtype=dtype)
    n_zero = math.ceil(sparsity * fan_out)  # torch: ceil(sparsity * rows), rows = out
    assert n_zero == S.sparse(sparsity).zeros_per_row(fan_out)
    np.testing.assert_array_equal(np.count_nonzero(w == 0, axis=1), n_zero)
    # the other weights are normal(0, std)'s, drawn in place
    plain = S.normal(0.0, 0.2).sample(fan_in, fan_out, seed=7, layer=3, dtype=dtype)
    keep = w != 0
    np.testing.assert_array_equal(w[keep], plain[keep])
    # torch's layout: each column has n_zero zeros
    wt = initscope.make_weights(S.sparse(sparsity, 0.2), fan_in, fan_out, seed=7, layer=3,
                                dtype=dtype, layout="torch")  # fmt: skip
    np.testing.assert_array_equal(np.count_nonzero(wt == 0, axis=0), n_zero)
    # zero positions are uniform over the outputs: per-column counts are
    # hypergeometric-like sums with mean fan_in * n_zero / fan_out
    p = n_zero / fan_out
    per_col = np.count_nonzero(w == 0, axis=0)
    assert np.abs(per_col - fan_in * p).max() <= K * math.sqrt(fan_in * p * (1 - p)) + 1


def test_sparse_values_and_zero_pattern():
    w = S.sparse(0.25, std=0.5).sample(FAN_IN, FAN_OUT, seed=1)
    nonzero = w[w != 0]
    assert nonzero.size == FAN_IN * (FAN_OUT - math.ceil(0.25 * FAN_OUT))
    assert_moments(nonzero, 0.0, 0.5)
    same_pattern = S.sparse(0.25, std=0.5).sample(FAN_IN, FAN_OUT, seed=1, dtype="float32")
    np.testing.assert_array_equal(w == 0, same_pattern == 0)
    np.testing.assert_array_equal(  # sparsity 0 is normal(0, std)
        S.sparse(0.0, 0.5).sample(20, 30, seed=2), S.normal(0.0, 0.5).sample(20, 30, seed=2)
    )


# ---- registry, make_weights, determinism ---------------------------------------------------------


def test_registry_names_build_with_defaults():
    expected = {"truncated_normal", "variance_scaling", "orthogonal", "identity", "sparse", "ones"}
    assert expected <= set(S.SCHEMES)
    for name in S.SCHEMES:
        assert isinstance(S.scheme(name), S.Scheme)
    assert S.scheme("trunc_normal") == S.truncated_normal(0.0, 1.0, -2.0, 2.0)
    assert S.scheme("sparse") == S.sparse(0.1, 0.01)
    assert S.scheme("kaiming_normal") == S.he_normal()


def test_scheme_resolves_uncalled_classes_and_factories():
    assert S.scheme(S.orthogonal) == S.orthogonal()
    assert S.scheme(S.small) == S.normal(0.0, 0.01)
    assert S.scheme(S.he_uniform) == S.he_uniform()
    user = S.scheme(lambda i, o: np.ones((i, o)))
    assert isinstance(user, S.from_callable)


@pytest.mark.parametrize("name", sorted(S.SCHEMES))
def test_make_weights_torch_layout_is_the_transpose_and_deterministic(name):
    w = initscope.make_weights(name, 23, 17, seed=4, layer=2)
    assert w.shape == (23, 17)
    wt = initscope.make_weights(name, 23, 17, seed=4, layer=2, layout="torch")
    assert wt.shape == (17, 23) and wt.flags.c_contiguous
    np.testing.assert_array_equal(wt, w.T)
    np.testing.assert_array_equal(w, initscope.make_weights(name, 23, 17, seed=4, layer=2))
    if np.ptp(w) > 0 and name not in ("identity", "eye"):  # random schemes
        assert not np.array_equal(w, initscope.make_weights(name, 23, 17, seed=4, layer=3))
        assert not np.array_equal(w, initscope.make_weights(name, 23, 17, seed=5, layer=2))
    # float32 weights come from the generator's float32 normals: other numbers, same law
    w32 = initscope.make_weights(name, 23, 17, seed=4, layer=2, dtype="float32")
    assert w32.dtype == np.float32
    np.testing.assert_array_equal(w32, initscope.make_weights(name, 23, 17, seed=4, layer=2,
                                                              dtype="float32"))  # fmt: skip


@pytest.mark.parametrize(
    "init",
    [
        "orthogonal",
        S.sparse(0.3, 0.1),
        S.truncated_normal(0.0, 0.2, -0.1, 0.3),
        S.variance_scaling(2.0),
        S.identity(0.5),
        "glorot_uniform",
    ],
    ids=repr,
)
def test_make_weights_is_what_propagate_uses(init):
    """Identity inputs through linear layers return the weights (and their products)."""
    fan_in = 12
    result = initscope.propagate([9, 14], init=init, inputs=np.eye(fan_in), activation="linear",
                                 seed=31, keep_activations=True, backend="numpy")  # fmt: skip
    w0 = initscope.make_weights(init, fan_in, 9, seed=31, layer=0)
    w1 = initscope.make_weights(init, 9, 14, seed=31, layer=1)
    np.testing.assert_array_equal(result.activations[0], w0)
    np.testing.assert_allclose(result.activations[1], w0 @ w1, rtol=1e-12, atol=1e-15)


def test_orthogonal_layers_preserve_the_signal_exactly():
    """Linear network with square orthogonal weights: every layer keeps the inputs' E[x²]."""
    result = initscope.propagate([64] * 6, init="orthogonal", activation="linear",
                                 n_samples=300, seed=2, backend="numpy")  # fmt: skip
    second_moment = result.mean**2 + result.std**2
    np.testing.assert_allclose(second_moment, second_moment[0], rtol=1e-12)


# ---- bad parameters ------------------------------------------------------------------------------

BAD = [
    (lambda: S.normal(std=-1.0), ValueError, "std"),
    (lambda: S.normal(mean=math.nan), ValueError, "mean"),
    (lambda: S.normal(std="1"), TypeError, "std"),
    (lambda: S.uniform(2.0, 1.0), ValueError, "a <= b"),
    (lambda: S.uniform(a=-math.inf), ValueError, "a must be finite"),
    (lambda: S.constant(math.inf), ValueError, "value"),
    (lambda: S.constant(None), TypeError, "value"),
    (lambda: S.glorot_normal(gain=-1.0), ValueError, "gain"),
    (lambda: S.glorot_uniform(gain=True), TypeError, "gain"),
    (lambda: S.he_normal(mode="fan_avgx"), ValueError, "mode.*'fan_in', 'fan_out', 'fan_avg'"),
    (lambda: S.he_uniform(nonlinearity="swish"), ValueError, "nonlinearity"),
    (lambda: S.he_normal(a=math.nan), ValueError, "a must be finite"),
    (lambda: S.truncated_normal(std=0.0), ValueError, "std must be > 0"),
    (lambda: S.truncated_normal(a=1.0, b=1.0), ValueError, "a < b"),
    (lambda: S.truncated_normal(a=3.0, b=2.0), ValueError, "a < b"),
    (lambda: S.truncated_normal(a=math.nan), ValueError, "a must be finite"),
    (lambda: S.truncated_normal(a=3.0, b=math.inf), ValueError, "a=3.0, b=inf"),
    (lambda: S.truncated_normal(mean=10.0, a=-math.inf, b=5.0), ValueError, "a=-inf, b=5.0"),
    (lambda: S.truncated_normal_keras(stddev=-0.1), ValueError, "stddev"),
    (lambda: S.truncated_normal_keras(mean="0"), TypeError, "mean"),
    (lambda: S.variance_scaling(scale=0.0), ValueError, "scale must be > 0"),
    (lambda: S.variance_scaling(mode="avg"), ValueError, "mode.*'fan_avg'"),
    (
        lambda: S.variance_scaling(distribution="gaussian"),
        ValueError,
        "distribution.*'truncated_normal', 'untruncated_normal', 'uniform'",
    ),
    (lambda: S.variance_scaling(distribution=None), ValueError, "distribution"),
    (lambda: S.orthogonal(gain=math.inf), ValueError, "gain"),
    (lambda: S.identity(gain="2"), TypeError, "gain"),
    (lambda: S.sparse(1.0), ValueError, r"sparsity must be in \[0, 1\)"),
    (lambda: S.sparse(-0.1), ValueError, "sparsity"),
    (lambda: S.sparse(0.5, std=-1.0), ValueError, "std"),
    (lambda: S.sparse(True), TypeError, "sparsity"),
    (lambda: S.scheme("nope"), ValueError, "init 'nope' is unknown.*orthogonal"),
    (lambda: S.scheme(3), TypeError, "init must be"),
    (lambda: S.orthogonal().sample(0, 5), ValueError, "fan_in must be positive"),
    (lambda: S.sparse(0.1).sample(5, 2.5), TypeError, "fan_out"),
    (lambda: S.identity().sample(3, 3, dtype="int32"), ValueError, "dtype"),
    (lambda: S.truncated_normal().sample(3, 3, dtype="float16"), ValueError, "dtype"),
    (lambda: initscope.make_weights("orthogonal", 3, 3, layout="keras"), ValueError, "layout"),
]


@pytest.mark.parametrize(("make", "error", "match"), BAD, ids=range(len(BAD)))
def test_bad_parameters_name_the_parameter(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_parameters_are_stored_as_floats():
    s = S.truncated_normal(0, 1, -1, 2)
    assert all(isinstance(v, float) for v in (s.mean, s.std, s.a, s.b))
    assert S.normal(1, 2) == S.normal(1.0, 2.0)


# ---- against torch itself ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(20240601)
    return torch


def _torch_weights(torch, fill, fan_in=FAN_IN, fan_out=FAN_OUT) -> np.ndarray:
    """Our (fan_in, fan_out) layout of a torch (out, in) tensor filled by ``fill``."""
    t = torch.empty(fan_out, fan_in, dtype=torch.float64)
    fill(t)
    return t.numpy().T


@pytest.mark.parametrize(
    ("ours", "fill"),
    [
        (S.normal(0.3, 0.7), lambda init, t: init.normal_(t, 0.3, 0.7)),
        (S.uniform(-1.0, 3.0), lambda init, t: init.uniform_(t, -1.0, 3.0)),
        (S.glorot_normal(gain=2.0), lambda init, t: init.xavier_normal_(t, gain=2.0)),
        (S.glorot_uniform(), lambda init, t: init.xavier_uniform_(t)),
        (S.he_normal(), lambda init, t: init.kaiming_normal_(t)),
        (
            S.he_normal(a=0.2, mode="fan_out"),
            lambda init, t: init.kaiming_normal_(t, a=0.2, mode="fan_out"),
        ),
        (
            S.he_uniform(mode="fan_out", nonlinearity="relu"),
            lambda init, t: init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu"),
        ),
        (S.truncated_normal(), lambda init, t: init.trunc_normal_(t)),
        (
            S.truncated_normal(0.5, 2.0, -1.0, 3.0),
            lambda init, t: init.trunc_normal_(t, 0.5, 2.0, -1.0, 3.0),
        ),
        (
            S.truncated_normal(1.0, 1.0, 4.0, 5.0),
            lambda init, t: init.trunc_normal_(t, 1.0, 1.0, 4.0, 5.0),
        ),
    ],
    ids=lambda v: repr(v) if isinstance(v, S.Scheme) else "",
)
@pytest.mark.filterwarnings("ignore:mean is more than 2 std:UserWarning")
def test_moments_match_torch_init(torch, ours, fill):
    theirs = _torch_weights(torch, lambda t: fill(torch.nn.init, t))
    w = ours.sample(FAN_IN, FAN_OUT, seed=10, layer=1)
    assert_same_moments(w, theirs)


def test_exact_schemes_match_torch(torch):
    init = torch.nn.init
    for ours, fill in (
        (S.zeros(), init.zeros_),
        (S.ones(), init.ones_),
        (S.constant(0.3), lambda t: init.constant_(t, 0.3)),
        (S.identity(), init.eye_),
    ):
        for fan_in, fan_out in ((5, 8), (8, 5)):
            np.testing.assert_array_equal(
                ours.sample(fan_in, fan_out), _torch_weights(torch, fill, fan_in, fan_out)
            )


@pytest.mark.parametrize("name", list(GAINS) + ["leaky_relu_0.2"])
def test_calculate_gain_matches_torch(torch, name):
    if name == "leaky_relu_0.2":
        assert initscope.calculate_gain("leaky_relu", 0.2) == pytest.approx(
            torch.nn.init.calculate_gain("leaky_relu", 0.2), rel=1e-15
        )
    else:
        expected = torch.nn.init.calculate_gain(name)
        assert initscope.calculate_gain(name) == pytest.approx(expected, rel=1e-15)
    with pytest.raises(ValueError):
        torch.nn.init.calculate_gain("swish")


def test_orthogonal_matches_torch(torch):
    """Same Gram identities in torch's layout, and the same law of a corner entry."""
    fan_in, fan_out, draws = 6, 4, 400
    ours, theirs = [], []
    for layer in range(draws):
        w = S.orthogonal(1.3).sample(fan_in, fan_out, seed=1, layer=layer)
        t = _torch_weights(torch, lambda x: torch.nn.init.orthogonal_(x, 1.3), fan_in, fan_out)
        np.testing.assert_allclose(t.T @ t, 1.69 * np.eye(fan_out), atol=1e-12)
        np.testing.assert_allclose(w.T @ w, 1.69 * np.eye(fan_out), atol=1e-12)
        ours.append(w[0, 0])
        theirs.append(t[0, 0])
    assert_same_moments(np.array(ours), np.array(theirs))


def test_sparse_matches_torch(torch):
    fan_in, fan_out = 200, 30
    for sparsity in (0.1, 0.3, 0.75):
        t = _torch_weights(torch, lambda x, s=sparsity: torch.nn.init.sparse_(x, s, 0.2),
                           fan_in, fan_out)  # fmt: skip
        w = S.sparse(sparsity, 0.2).sample(fan_in, fan_out, seed=3)
        np.testing.assert_array_equal(
            np.count_nonzero(w == 0, axis=1), np.count_nonzero(t == 0, axis=1)
        )
        assert_same_moments(w[w != 0], t[t != 0])
