"""Mean-field theory: expectations against mpmath and tanh's asymptotic series, fixed points,
the correlation map, and predictions against measured runs within the finite-width spread."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import initscope
from initscope import schemes, theory
from initscope.activations import SELU_ALPHA, SELU_SCALE, activation

mp = pytest.importorskip("mpmath")

# ---- Gaussian expectations against mpmath ------------------------------------------------------

mp.mp.dps = 20
_C = mp.sqrt(2 / mp.pi)
_K = mp.mpf("0.044715")


_R = 1 / mp.sqrt(2 * mp.pi)


def _cdf(h):
    return mp.erfc(-h / mp.sqrt(2)) / 2


def _sig(h):
    return 1 / (1 + mp.exp(-h))


def _gelu_tanh(h):
    return h * _sig(2 * _C * (h + _K * h**3))


def _d_gelu_tanh(h):
    s = _sig(2 * _C * (h + _K * h**3))
    return s + h * 2 * _C * (1 + 3 * _K * h * h) * s * (1 - s)


def _piecewise(slope):
    return (
        lambda h: h if h > 0 else slope * h,
        lambda h: mp.mpf(1) if h > 0 else mp.mpf(slope),
    )


def _elu(alpha, scale=1):
    alpha, scale = mp.mpf(alpha), mp.mpf(scale)
    return (
        lambda h: scale * (h if h > 0 else alpha * mp.expm1(h)),
        lambda h: scale * (mp.mpf(1) if h > 0 else alpha * mp.exp(h)),
    )


#: (activation as initscope takes it, φ and φ' in mpmath)
MP_ACTIVATIONS = {
    "linear": ("linear", _piecewise(1)),
    "tanh": ("tanh", (mp.tanh, lambda h: mp.sech(h) ** 2)),
    "relu": ("relu", _piecewise(0)),
    "leaky_relu": ("leaky_relu", _piecewise(mp.mpf(1) / 100)),
    "leaky_relu(0.2)": (("leaky_relu", 0.2), _piecewise(mp.mpf("0.2"))),
    "sigmoid": ("sigmoid", (_sig, lambda h: _sig(h) * (1 - _sig(h)))),
    "softplus": ("softplus", (lambda h: mp.log1p(mp.exp(h)), _sig)),
    "elu": ("elu", _elu(1)),
    "elu(0.5)": (("elu", 0.5), _elu("0.5")),
    "selu": ("selu", _elu(SELU_ALPHA, SELU_SCALE)),
    "gelu": ("gelu", (lambda h: h * _cdf(h), lambda h: _cdf(h) + h * mp.exp(-h * h / 2) * _R)),
    "gelu_tanh": ("gelu_tanh", (_gelu_tanh, _d_gelu_tanh)),
    "silu": ("silu", (lambda h: h * _sig(h), lambda h: _sig(h) * (1 + h * (1 - _sig(h))))),
}
WIDE_Q = [1e-12, 1e-3, 1.0, 40.0, 3e3, 1e6, 1e8]
FEW_Q = [1e-12, 1e-3, 1.0, 1e8]  # the exact piecewise-linear ones, and elu's parameter


def _mp_expect(f, q, odd_z=False):
    """E[f(√q z)] (or E[z f(√q z)]) by mpmath's tanh-sinh quadrature at 20 digits, folded
    onto z > 0, on [0, 12] broken where h = √q z is 1 and 8."""
    s = mp.sqrt(q)
    points = [mp.mpf(0)] + [p for p in (1 / s, 8 / s) if p < 12] + [mp.mpf(12)]
    if odd_z:
        integrand = lambda z: z * (f(s * z) - f(-s * z)) * mp.npdf(z)  # noqa: E731
    else:
        integrand = lambda z: (f(s * z) + f(-s * z)) * mp.npdf(z)  # noqa: E731
    return mp.quad(integrand, points)


def _close(got, want, rtol, atol=0.0):
    want = float(want)
    return abs(got - want) <= rtol * abs(want) + atol


@pytest.mark.parametrize("label", sorted(MP_ACTIVATIONS))
def test_expectations_match_mpmath(label):
    activation, (f, d) = MP_ACTIVATIONS[label]
    qs = FEW_Q if label.startswith(("linear", "relu", "leaky", "elu(")) else WIDE_Q
    got = theory.gaussian_moments(activation, qs)
    for i, q in enumerate(qs):
        q = mp.mpf(q)
        # through g = φ - φ(0), so that the variance does not cancel (sigmoid: 1/4 - 1/4)
        phi0 = f(mp.mpf(0))
        eg = _mp_expect(lambda h, phi0=phi0: f(h) - phi0, q)
        eg2 = _mp_expect(lambda h, phi0=phi0: (f(h) - phi0) ** 2, q)
        want = {
            "mean": phi0 + eg,
            "sq_mean": eg2 + 2 * phi0 * eg + phi0**2,
            "var": eg2 - eg**2,
            "deriv_sq_mean": _mp_expect(lambda h: d(h) ** 2, q),
            # d E[φ²] / dq = E[z φ(√q z) φ'(√q z)] / √q (Stein's lemma)
            "sq_mean_slope": _mp_expect(lambda h: f(h) * d(h), q, odd_z=True) / mp.sqrt(q),
        }
        for name, value in want.items():
            if name == "mean" and label in ("tanh", "linear"):
                assert getattr(got, name)[i] == 0.0
                continue
            # a mean that cancels to ~0 (selu's E[φ] at q = 1) is compared on φ's scale
            atol = 1e-15 * math.sqrt(float(want["sq_mean"])) if name == "mean" else 0.0
            assert _close(getattr(got, name)[i], value, 1e-10, atol), (label, float(q), name)


def test_length_slope_is_the_derivative_of_the_second_moment():
    # the identity the references above use, checked by a central difference at 40 digits
    with mp.workdps(40):
        q, dq = mp.mpf(2), mp.mpf("1e-12")

        def second(qq):
            s = mp.sqrt(qq)
            return mp.quad(lambda z: mp.tanh(s * z) ** 2 * mp.npdf(z), [-14, 0, 14])

        slope = (second(q + dq) - second(q - dq)) / (2 * dq)
    assert _close(theory.gaussian_moments("tanh", 2.0).sq_mean_slope, slope, 1e-11)


def test_tanh_small_q_series():
    # E[f(√q z)] ~ Σ c_2k (2k - 1)!! q^k from the Taylor coefficients of tanh² and sech⁴: an
    # asymptotic series (the Gaussian moments outgrow the radius π/2), good to 1e-16 at 1e-3
    sq = mp.taylor(lambda x: mp.tanh(x) ** 2, 0, 16)
    d4 = mp.taylor(lambda x: mp.sech(x) ** 4, 0, 16)

    def series(coefficients, q):
        return sum(coefficients[2 * k] * mp.fac2(2 * k - 1) * q**k for k in range(9))

    for q in (1e-12, 1e-6, 1e-4, 1e-3):
        m = theory.gaussian_moments("tanh", q)
        assert _close(m.sq_mean, series(sq, mp.mpf(q)), 1e-12)
        assert _close(m.deriv_sq_mean, series(d4, mp.mpf(q)), 1e-12)
    assert theory.gaussian_moments("tanh", 1e-12).sq_mean == pytest.approx(1e-12 - 2e-24, 1e-15)


def test_tanh_large_q_series():
    # E[sech^2m(√q z)] = Σ_k (-1)^k M_k / (2^k k! q^k) / √(2π q), M_k = ∫ h^2k sech^2m dh
    def moments(power):
        return [
            mp.quad(lambda h, k=k: h ** (2 * k) * mp.sech(h) ** power, [-mp.inf, 0, mp.inf])
            for k in range(5)
        ]

    sech2, sech4 = moments(2), moments(4)

    def series(m, q):
        total = sum((-1) ** k * m[k] / (2**k * mp.factorial(k) * q**k) for k in range(5))
        return total / mp.sqrt(2 * mp.pi * q)

    for q in (1e4, 1e6, 1e8):
        m = theory.gaussian_moments("tanh", q)
        assert _close(1.0 - m.sq_mean, series(sech2, mp.mpf(q)), 1e-9)
        assert _close(m.deriv_sq_mean, series(sech4, mp.mpf(q)), 1e-10)
    # the classic 1·randn init sits at q = 500: a 25-point Gauss-Hermite rule is far off there
    x, w = np.polynomial.hermite_e.hermegauss(25)
    naive = float((w * (1 - np.tanh(math.sqrt(500) * x) ** 2) ** 2).sum() / math.sqrt(2 * math.pi))
    exact = theory.gaussian_moments("tanh", 500.0).deriv_sq_mean
    assert abs(naive / exact - 1) > 0.5


def test_fractions_and_limits():
    q = np.array([0.0, 0.25, 4.0])
    tanh = theory.gaussian_moments("tanh", q)
    threshold = math.atanh(0.99)
    for qi, s in zip(q[1:], tanh.saturated_fraction[1:], strict=True):
        assert s == pytest.approx(math.erfc(threshold / math.sqrt(2 * qi)), rel=1e-14)
    assert tanh.saturated_fraction[0] == 0.0 and np.isnan(tanh.zero_fraction).all()
    sig = theory.gaussian_moments("sigmoid", 9.0)
    assert sig.saturated_fraction == pytest.approx(math.erfc(math.log(99) / math.sqrt(18)), 1e-14)
    relu = theory.gaussian_moments("relu", q)
    assert list(relu.zero_fraction) == [1.0, 0.5, 0.5]
    assert np.isnan(relu.saturated_fraction).all()
    # q = 0: the activation's value at 0
    soft = theory.gaussian_moments("softplus", 0.0)
    assert soft.mean == pytest.approx(math.log(2)) and soft.var == 0.0
    assert np.isnan(theory.gaussian_moments("tanh", [-1.0, np.inf]).sq_mean).all()


def test_erfc_and_erfcx_are_accurate():
    x = np.concatenate([np.linspace(-6, 26, 20001), np.geomspace(1e-12, 0.5, 200)])
    want = np.array([math.erfc(v) for v in x])
    np.testing.assert_allclose(theory.erfc(x), want, rtol=3e-15, atol=0)
    with mp.workdps(40):
        for v in (1e-9, 0.3, 0.5, 2.0, 7.0, 40.0, 1e5):
            want_x = mp.erfc(mp.mpf(v)) * mp.exp(mp.mpf(v) ** 2)
            assert _close(float(theory.erfcx(np.array([v]))[0]), want_x, 2e-15)


# ---- the two maps and their fixed points --------------------------------------------------------


def test_length_map_matches_a_direct_expectation():
    q_next = theory.length_map("tanh", [0.5, 2.0], 1.5, 0.2)
    want = 2.25 * theory.gaussian_moments("tanh", [0.5, 2.0]).sq_mean + 0.04
    np.testing.assert_allclose(q_next, want, rtol=1e-15)


def test_ordered_tanh_dies_to_zero():
    fp = theory.fixed_point("tanh", 0.5)
    assert fp.q_star == 0.0 and fp.exists and fp.stable
    assert fp.chi1 == pytest.approx(0.25) and fp.c_star == 1.0
    assert fp.xi_q == pytest.approx(-1 / math.log(0.25))
    assert fp.xi_c == pytest.approx(-1 / math.log(0.25))
    edge = theory.fixed_point("tanh", 1.0)  # marginal: q decays as a power law
    assert edge.q_star == 0.0 and edge.chi1 == 1.0 and edge.xi_c == math.inf


def test_chaotic_tanh_fixed_point_is_self_consistent():
    fp = theory.fixed_point("tanh", 1.5, 0.1)
    assert theory.length_map("tanh", fp.q_star, 1.5, 0.1) == pytest.approx(fp.q_star, rel=1e-13)
    m = theory.gaussian_moments("tanh", fp.q_star)
    assert fp.chi1 == pytest.approx(2.25 * m.deriv_sq_mean, rel=1e-14) and fp.chi1 > 1
    assert fp.length_slope == pytest.approx(2.25 * m.sq_mean_slope, rel=1e-14)
    assert fp.stable and fp.xi_q == pytest.approx(-1 / math.log(fp.length_slope))
    assert 0 < fp.c_star < 1
    c_next = theory.correlation_map("tanh", fp.c_star, fp.q_star, 1.5, 0.1)
    assert c_next == pytest.approx(fp.c_star, abs=1e-10)
    assert 0 < fp.chi_c < 1 and fp.xi_c == pytest.approx(-1 / math.log(fp.chi_c))
    # odd φ without bias: the chaotic phase decorrelates completely
    assert theory.fixed_point("tanh", 2.0).c_star == 0.0


def test_relu_fixed_points():
    marginal = theory.fixed_point("relu", math.sqrt(2.0))
    assert marginal.q_star == pytest.approx(2.0, rel=1e-15)  # every q is fixed: where it starts
    assert marginal.length_slope == pytest.approx(1.0) and not marginal.stable
    ordered = theory.fixed_point("relu", 1.2, 0.3)
    assert ordered.q_star == pytest.approx(0.09 / (1 - 0.72), rel=1e-12) and ordered.stable
    chaotic = theory.fixed_point("relu", 1.5, 0.1)
    assert not chaotic.exists and chaotic.q_star == math.inf
    assert chaotic.chi1 == pytest.approx(1.125)  # its limit: σ_w²/2 for every q


def test_the_fixed_point_is_the_one_reached_from_the_start():
    # gelu below σ_w = 2: q = 0 attracts, an unstable fixed point separates it from divergence
    low = theory.fixed_point("gelu", 1.9, q_init=0.01)
    high = theory.fixed_point("gelu", 1.9, q_init=100.0)
    assert low.q_star == 0.0 and low.exists
    assert not high.exists


def test_fixed_point_is_vectorised():
    ws = np.linspace(0.3, 3.0, 31)
    bs = np.linspace(0.0, 0.8, 17)
    grid = theory.fixed_point("tanh", ws[None, :], bs[:, None], correlation=False)
    assert np.shape(grid.q_star) == (17, 31)
    finite = np.isfinite(grid.q_star)
    assert finite.all()
    w2, b2 = np.broadcast_arrays(ws[None, :] ** 2, bs[:, None] ** 2)
    again = w2 * theory.gaussian_moments("tanh", grid.q_star).sq_mean + b2
    np.testing.assert_allclose(again, grid.q_star, rtol=1e-12, atol=1e-300)
    for i, j in ((0, 0), (5, 20), (16, 30)):
        one = theory.fixed_point("tanh", ws[j], bs[i], correlation=False)
        assert one.q_star == pytest.approx(grid.q_star[i, j], rel=1e-13, abs=1e-300)
        assert one.chi1 == pytest.approx(grid.chi1[i, j], rel=1e-13)


@pytest.mark.parametrize("name", ["tanh", "gelu", "softplus"])
def test_tabulated_fixed_points_for_pictures(name):
    ws = np.linspace(0.3, 3.0, 13)
    bs = np.linspace(0.0, 1.0, 7)
    exact = theory.fixed_point(name, ws[None, :], bs[:, None], correlation=False)
    quick = theory.fixed_point(name, ws[None, :], bs[:, None], correlation=False, precise=False)
    np.testing.assert_array_equal(exact.exists, quick.exists)
    finite = np.asarray(exact.exists)
    np.testing.assert_allclose(quick.q_star[finite], exact.q_star[finite], rtol=1e-6, atol=1e-300)
    np.testing.assert_allclose(quick.chi1, exact.chi1, rtol=1e-7)
    np.testing.assert_allclose(quick.length_slope[finite], exact.length_slope[finite], rtol=1e-5)


def test_correlation_map_linear_and_tanh_limits():
    c = theory.correlation_map("linear", 0.3, 2.0, 1.2, 0.5)
    assert c == pytest.approx((1.44 * 2.0 * 0.3 + 0.25) / (1.44 * 2.0 + 0.25), rel=1e-14)
    # c = 1 maps to 1; c = 0 to E[φ]² for an odd φ without bias: 0
    assert theory.correlation_map("tanh", 1.0, 0.7, 1.3, 0.2) == pytest.approx(1.0, abs=1e-13)
    assert theory.correlation_map("tanh", 0.0, 0.7, 1.3, 0.0) == pytest.approx(0.0, abs=1e-15)


def test_bivariate_rule_against_the_relu_kernel():
    # the numeric 2-D rule on relu (kinks), against the arc-cosine kernel
    spec = theory._spec(activation("relu"))
    for q in (0.01, 1.0, 30.0, 1e4):
        for c in (-0.7, 0.0, 0.5, 0.9, 0.999):
            numeric = theory._expect_pairs(lambda h: theory._pair_values(spec, h), q, c)
            phi, dphi = theory._pair_closed(spec, q, c)
            assert numeric[0] == pytest.approx(phi, rel=1e-11)
            assert numeric[1] == pytest.approx(dphi, rel=1e-8)


def test_bivariate_rule_against_mehler_series():
    # E[φ(u1) φ(u2)] = Σ_k k! a_k² c^k with the Hermite coefficients a_k = E[φ(z) He_k(z)] / k!,
    # here by a 300-point Gauss-Hermite rule (a different rule in one dimension)
    q, c = 1.0, 0.6
    z, w = np.polynomial.hermite_e.hermegauss(300)
    w = w / math.sqrt(2 * math.pi)
    total = 0.0
    for k in range(1, 80, 2):  # tanh is odd
        basis = np.polynomial.hermite_e.hermeval(z, [0] * k + [1])
        a_k = float((w * np.tanh(z) * basis).sum()) / math.factorial(k)
        total += math.factorial(k) * a_k**2 * c**k
    spec = theory._spec(activation("tanh"))
    numeric = theory._expect_pairs(lambda h: theory._pair_values(spec, h), q, c, spec.features)
    assert numeric[0] == pytest.approx(total, rel=1e-10)


# ---- the critical line ---------------------------------------------------------------------------


def test_critical_line_of_tanh_is_where_chi1_is_one():
    line = theory.critical_line("tanh", [1e-8, 0.1, 1.0, 10.0])
    assert line.kind == "curve" and line.stable.all()
    assert line.sigma_w[0] == pytest.approx(1.0, abs=1e-7) and line.sigma_b[0] < 1e-7
    fp = theory.fixed_point("tanh", line.sigma_w[1:], line.sigma_b[1:], correlation=False)
    np.testing.assert_allclose(fp.chi1, 1.0, rtol=1e-10)
    np.testing.assert_allclose(fp.q_star, line.q_star[1:], rtol=1e-9)


def test_critical_line_kinds():
    relu = theory.critical_line("relu")
    assert relu.kind == "point" and relu.sigma_w[0] == pytest.approx(math.sqrt(2))
    assert "single point" in str(relu)
    leaky = theory.critical_line(("leaky_relu", 0.2))
    assert leaky.sigma_w[0] == pytest.approx(math.sqrt(2 / 1.04))
    assert theory.critical_line("softplus").kind == "none"
    gelu = theory.critical_line("gelu")
    # unstable at small q* (the length runs away), stable beyond
    assert not gelu.stable[0] and gelu.stable[-1] and "stable" in gelu.note


# ---- predictions against measurement -------------------------------------------------------------

SEED_INITS = ("small", "big", "xavier")
TOLERANCE = 4.0  # spreads


#: σ_w of the classic inits at fan_in 500: 0.01 · √500, 1 · √500, and 1
SEED_SIGMA_W = {"small": 0.01 * math.sqrt(500), "big": math.sqrt(500), "xavier": 1.0}


@pytest.fixture(scope="module")
def seed_predictions():
    return {
        init: theory.predict("tanh", sigma_w, widths=[500] * 10, n_samples=1000)
        for init, sigma_w in SEED_SIGMA_W.items()
    }


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("init", SEED_INITS)
def test_seed_experiments_within_the_finite_width_spread(backend, init, dtype, seed_predictions):
    result = initscope.propagate([500] * 10, init=init, dtype=dtype, backend=backend)
    table = theory.compare(result, seed_predictions[init])
    z = table["z"].to_numpy() if hasattr(table, "to_numpy") else np.asarray(table["z"])
    assert np.all(np.abs(z) <= TOLERANCE), table
    std = table.loc["std"] if hasattr(table, "loc") else None
    if std is not None:
        assert len(std) == 10 and (std["spread"] > 0).all()


def test_the_tolerance_tells_a_wrong_prediction(seed_predictions):
    # 2 % off in σ_w is far outside the spread: the check can fail
    result = initscope.propagate([500] * 10, init="xavier")
    good = seed_predictions["xavier"]
    wrong = theory.predict("tanh", 1.02, widths=[500] * 10, n_samples=1000)
    assert np.abs(theory.compare(result, good)["z"]).max() <= TOLERANCE
    assert np.abs(theory.compare(result, wrong).loc["std"]["z"]).max() > 2 * TOLERANCE


@pytest.mark.parametrize(
    ("init", "activation", "bias"),
    [("xavier", "tanh", 0.0), ("he_normal", "relu", 0.3)],
)
def test_spread_matches_the_scatter_of_repeated_runs(init, activation, bias):
    widths, runs = [100] * 5, 30
    results = [
        initscope.propagate(widths, init=init, activation=activation, bias=bias, n_samples=200,
                            seed=seed)
        for seed in range(runs)
    ]  # fmt: skip
    prediction = results[0].theory()
    for name in ("std", "pre_std", "mean", "chi1"):
        measured = np.array([getattr(r, name) for r in results])
        spread = prediction.spread[name]
        ratio = measured.std(axis=0, ddof=1) / spread
        assert 0.6 < ratio.mean() < 1.5, (name, ratio)
        shift = (measured.mean(axis=0) - getattr(prediction, name)) / spread
        assert np.all(np.abs(shift) < 1.0), (name, shift)


def test_the_first_layer_spread_follows_the_input_size():
    # four inputs per sample: layer 1's q is a mean over 4 squares, far noisier than over
    # 200; a spread that took input_dim = widths[0] would put z near 5
    z, z_wrong = [], []
    wrong = theory.predict("tanh", 1.0, widths=[200] * 3, n_samples=500)
    for seed in range(10):
        result = initscope.propagate([200] * 3, input_dim=4, n_samples=500, seed=seed)
        assert result.theory().input_dim == 4
        z.append(_first_z(result, None))
        z_wrong.append(_first_z(result, wrong))
    assert math.sqrt(np.mean(np.square(z))) < 2.0
    assert math.sqrt(np.mean(np.square(z_wrong))) > 3.0


def _first_z(result, prediction):
    """z of layer 1's pre_std, with or without pandas."""
    table = theory.compare(result, prediction)
    if hasattr(table, "reset_index"):  # a DataFrame indexed by (statistic, layer)
        table = table.reset_index()
    statistic, layer = np.asarray(table["statistic"]), np.asarray(table["layer"])
    z = np.asarray(table["z"], dtype=np.float64)
    return float(z[(statistic == "pre_std") & (layer == 1)][0])


def test_prediction_of_a_mixed_network():
    widths = [60, 80, 40]
    result = initscope.propagate(
        widths,
        init=["he_normal", schemes.normal(std=0.2), "xavier"],
        activation=["relu", ("elu", 0.5), "tanh"],
        bias=[0.0, 0.2, 0.1],
        n_samples=300,
    )
    prediction = result.theory()
    assert prediction.activation_names == ("relu", "elu", "tanh")
    assert prediction.activation_params[1] == 0.5
    np.testing.assert_allclose(prediction.weight_var, [2.0, 60 * 0.04, 1.0])
    q1 = 2.0
    q2 = 2.4 * theory.gaussian_moments("relu", q1).sq_mean + 0.04
    q3 = 1.0 * theory.gaussian_moments(("elu", 0.5), q2).sq_mean + 0.01
    np.testing.assert_allclose(prediction.q, [q1, q2, q3], rtol=1e-14)
    assert prediction.fixed is None
    table = result.compare_theory()
    assert np.all(np.abs(table["z"]) <= TOLERANCE)
    # a statistic only where the layer's activation defines it
    assert list(table.loc["zero_fraction"].index) == [1]
    assert list(table.loc["saturated_fraction"].index) == [3]


def test_predict_table_and_frame():
    p = theory.predict("tanh", 1.0, depth=4)
    text = str(p)
    assert text.splitlines()[0].split() == ["layer", "pre_std", "mean", "std", "saturated", "chi1"]
    assert "fixed point" in text and "q* = 0" in text
    assert p.spread is None and p.pre_std[0] == 1.0
    pd = pytest.importorskip("pandas")
    frame = theory.predict("relu", 2**0.5, widths=[50] * 3, n_samples=10).to_frame()
    assert isinstance(frame, pd.DataFrame) and "std_spread" in frame.columns
    np.testing.assert_allclose(frame["zero_fraction"], 0.5)


def test_compare_theory_reads_well_with_and_without_pandas(monkeypatch):
    pd = pytest.importorskip("pandas")
    result = initscope.propagate([40] * 3, init="big", n_samples=100)
    table = result.compare_theory()
    assert isinstance(table, pd.DataFrame)
    assert table.index.names == ["statistic", "layer"]
    assert list(table.columns) == ["measured", "predicted", "difference", "spread", "z"]
    assert set(table.index.get_level_values(0)) == {
        "pre_mean", "pre_std", "mean", "std", "saturated_fraction", "chi1",
    }  # fmt: skip
    text = str(table)
    assert "statistic" in text and "saturated_fraction" in text
    monkeypatch.setitem(sys.modules, "pandas", None)
    plain = result.compare_theory()
    assert isinstance(plain, dict) and not isinstance(plain, pd.DataFrame)
    assert list(plain) == ["statistic", "layer", "measured", "predicted", "difference",
                           "spread", "z"]  # fmt: skip
    lines = str(plain).splitlines()
    assert lines[0].split() == list(plain) and len(lines) == 1 + len(plain["z"])
    np.testing.assert_allclose(np.asarray(plain["z"], dtype=float), table["z"].to_numpy())


# ---- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: theory.fixed_point("tanh", -1.0), ValueError, "sigma_w"),
        (lambda: theory.fixed_point("tanh", 1.0, np.nan), ValueError, "sigma_b"),
        (lambda: theory.fixed_point("tanh", 1.0, input_sq_mean=-1), ValueError, "input_sq_mean"),
        (lambda: theory.gaussian_moments("swish", 1.0), ValueError, "swish"),
        (lambda: theory.gaussian_moments("tanh", "x"), TypeError, "q"),
        (lambda: theory.predict("tanh", 1.0), ValueError, "depth"),
        (lambda: theory.predict("tanh", [1.0, 2.0], depth=3), ValueError, "sigma_w"),
        (lambda: theory.predict("tanh", -1.0, depth=3), ValueError, "sigma_w"),
        (lambda: theory.predict("tanh", 1.0, widths=[10, 0]), ValueError, "widths"),
        (
            lambda: theory.predict("tanh", 1.0, depth=3, n_samples=10),
            ValueError,
            "n_samples .*needs widths",
        ),
        (
            lambda: theory.predict("tanh", 1.0, depth=3, input_dim=4),
            ValueError,
            "input_dim .*needs widths",
        ),
        (lambda: theory.critical_line("tanh", [-1.0]), ValueError, "q_star"),
        (lambda: theory.predict_result("not a result"), TypeError, "PropagationResult"),
    ],
)
def test_bad_arguments_name_the_parameter(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_compare_needs_a_matching_prediction():
    result = initscope.propagate([20] * 3, n_samples=30)
    with pytest.raises(ValueError, match="layers"):
        theory.compare(result, theory.predict("tanh", 1.0, depth=2))


# ---- pictures and the command line ---------------------------------------------------------------


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def test_plot_draws_the_prediction_over_the_measurement(plt):
    result = initscope.propagate([60] * 5, init="xavier", n_samples=100)
    figure = result.plot(theory=True)
    std_axes = next(ax for ax in figure.axes if ax.get_title() == "layer std")
    line = next(line for line in std_axes.get_lines() if line.get_label() == "theory")
    np.testing.assert_allclose(line.get_ydata(), result.theory().std)
    with pytest.raises(TypeError, match="theory"):
        result.plot(theory="yes")


def test_phase_diagram_over_measured_chi1(plt):
    pd = pytest.importorskip("pandas")
    rows = []
    for sigma_w in (0.6, 1.2, 1.8):
        for sigma_b in (0.0, 0.2, 0.4):
            result = initscope.propagate(
                [40] * 4, init=schemes.normal(std=sigma_w / math.sqrt(40)), bias=sigma_b,
                n_samples=50,
            )  # fmt: skip
            frame = result.to_frame()
            frame["sigma_w"], frame["sigma_b"] = sigma_w, sigma_b
            rows.append(frame)
    figure = initscope.plot.phase_diagram(pd.concat(rows), chi1_levels=(0.5, 2.0))
    ax = figure.axes[0]
    line = next(line for line in ax.get_lines() if line.get_label() == "χ₁ = 1 (theory)")
    w, b = line.get_xdata(), line.get_ydata()
    inside = np.isfinite(w) & (b > 0.05) & (b < 0.4)
    assert inside.sum() > 10
    fp = theory.fixed_point("tanh", w[inside][::10], b[inside][::10], correlation=False)
    np.testing.assert_allclose(fp.chi1, 1.0, rtol=1e-8)
    assert ax.collections  # the heatmap and the contours
    relu = initscope.plot.phase_diagram(activation="relu")
    marker = next(line for line in relu.axes[0].get_lines() if "theory" in line.get_label())
    assert marker.get_xdata()[0] == pytest.approx(math.sqrt(2))
    none = initscope.plot.phase_diagram(activation="softplus", chi1_levels=None)
    labels = [t.get_text() for t in none.axes[0].get_legend().get_texts()]
    assert labels == ["softplus: no critical line"]


def test_phase_diagram_refuses_a_frame_that_is_not_a_table():
    with pytest.raises(TypeError, match=r"frame must be a pandas DataFrame.*got str.*activation"):
        initscope.plot.phase_diagram("tanh")
    with pytest.raises(TypeError, match="frame .*got list"):
        initscope.plot.phase_diagram([1, 2, 3], "tanh")


def test_cli_theory(capsys):
    from initscope.cli import main

    assert main(["theory", "--activation", "tanh", "--sigma-w", "1.0", "--depth", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["layer", "pre_std", "mean"] and len(lines) == 13
    assert lines[-1].startswith("fixed point:") and "q* = 0" in lines[-1]
    assert main(["theory", "--activation", "relu", "--sigma-w", "1.2", "--sigma-b", "0.3",
                 "--depth", "3", "--json"]) == 0  # fmt: skip
    import json

    document = json.loads(capsys.readouterr().out)
    assert document["fixed_point"]["q_star"] == pytest.approx(0.09 / 0.28)
    assert main(["theory", "--activation", "swish"]) == 2
    assert "swish" in capsys.readouterr().err


def test_cli_run_theory_and_calibrate(capsys):
    import json

    from initscope.cli import main

    run = ["run", "--widths", "50x3", "--samples", "100", "--init", "big", "--theory"]
    assert main(run) == 0
    out = capsys.readouterr().out
    assert "measured against predicted" in out and "saturated_fraction" in out
    assert main([*run, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {row["statistic"] for row in document["theory"]} >= {"std", "chi1"}
    assert main(["calibrate", "--activation", "gelu", "--sigma-b", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "critical sigma_w (chi1 = 1 at sigma_b = 0.1): none (gelu has only an unstable" in out
    assert f"{calibrate_gain('gelu', 0.1):.6g} (V'(q*)" in out and "unstable" in out
    assert main(["calibrate", "--activation", "relu", "--widths", "40x3", "--samples", "60"]) == 0
    out = capsys.readouterr().out
    assert "critical sigma_w (chi1 = 1 at sigma_b = 0): 1.41421" in out and "LSUV" in out
    assert "first layer's sigma_w for inputs with E[x^2] = 1: 1\n" in out  # q = 1 from x


def test_cli_run_theory_says_when_the_figure_has_no_overlay(capsys, tmp_path, plt):
    from initscope.cli import main

    run = ["run", "--widths", "30x3", "--samples", "50", "--theory"]
    assert main([*run, "--plot", str(tmp_path / "one.png")]) == 0
    assert "no theory overlay" not in capsys.readouterr().err
    assert main([*run, "--gradients", "--plot", str(tmp_path / "grad.png")]) == 0
    captured = capsys.readouterr()
    assert "--plot draws the gradient figure, which has no theory overlay" in captured.err
    assert "measured against predicted" in captured.out and (tmp_path / "grad.png").exists()
    assert main([*run, "--init", "small,xavier", "--plot", str(tmp_path / "two.png")]) == 0
    assert "one line per init, which has no theory overlay" in capsys.readouterr().err


def calibrate_gain(activation, sigma_b):
    from initscope.calibrate import variance_preserving_gain

    return variance_preserving_gain(activation, sigma_b)
