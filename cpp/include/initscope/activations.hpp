// The activation functions of initscope.activations, vectorisable and accurate to a few ulp.
//
// exp and expm1 use the classic reduction x = k ln2 + r, |r| <= ln2/2, with ln2 split in two
// so that k * ln2_hi is exact, and a Taylor polynomial of expm1(r) whose truncation error is
// far below an ulp. Results are rounded a handful of times, which keeps every activation
// within 4 ulp of the correctly rounded value (tests/test_cpp_activations.py measures
// it against mpmath). float32 tanh, sigmoid and the piecewise-linear ones run in float32;
// the others are evaluated in float64 and rounded once. Functions whose argument is itself
// computed (gelu_tanh's cubic, gelu's x / sqrt 2) carry that argument in double-double,
// because their tails amplify its rounding error by up to |2y| (hundreds of ulp otherwise).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "generator.hpp"
#include "isa.hpp"
#include "kernel.hpp"

namespace initscope {
inline namespace INITSCOPE_ISA_NAMESPACE {

namespace math {

using detail::bit_cast;

/// Forced inline: these run inside the activation loops, which vectorise only when every
/// call in them is inlined (GCC's size limits otherwise leave exp out of line in the big
/// translation unit of the kernels, and sigmoid 3.5 times slower).
#define INITSCOPE_INLINE inline __attribute__((always_inline))

// 1/n!, n = 2..14 (float32 uses n = 2..8): expm1_poly's coefficients.
constexpr double kInvFact[13] = {
    0x1.0000000000000p-1,  0x1.5555555555555p-3,  0x1.5555555555555p-5,  0x1.1111111111111p-7,
    0x1.6c16c16c16c17p-10, 0x1.a01a01a01a01ap-13, 0x1.a01a01a01a01ap-16, 0x1.71de3a556c734p-19,
    0x1.27e4fb7789f5cp-22, 0x1.ae64567f544e4p-26, 0x1.1eed8eff8d898p-29, 0x1.6124613a86d09p-33,
    0x1.93974a8c07c9dp-37};

template <class T>
struct ExpConst;

template <>
struct ExpConst<double> {
    static constexpr double inv_ln2 = 0x1.71547652b82fep+0;
    static constexpr double ln2_hi = 0x1.62e42feep-1;  // 33 bits: k * ln2_hi exact for |k| < 2**20
    static constexpr double ln2_lo = 0x1.a39ef35793c76p-33;
    static constexpr double round_magic = 0x1.8p52;
    static constexpr double tanh_cap = 20.0;    // tanh rounds to 1 beyond 19.1
    static constexpr double slope_cap = 709.0;  // 2|x| for sech^2: exp(709) is finite
    static constexpr double exp_min = -760.0;   // exp underflows to 0 below -745.2
    static constexpr double deep = -1000.0;     // 2**k below the normal range: scale twice
    static constexpr double deep_shift = 200.0;
    static constexpr double deep_scale = 0x1p-200;
};

template <>
struct ExpConst<float> {
    static constexpr float inv_ln2 = 0x1.715476p+0f;
    static constexpr float ln2_hi = 0x1.62e4p-1f;  // 17 bits: k * ln2_hi exact for |k| < 2**7
    static constexpr float ln2_lo = 0x1.7f7d1cp-20f;
    static constexpr float round_magic = 0x1.8p23f;
    static constexpr float tanh_cap = 10.0f;   // tanh rounds to 1 beyond 9.02
    static constexpr float slope_cap = 88.3f;  // 2|x| for sech^2: 2**k stays normal
    static constexpr float exp_min = -110.0f;
    static constexpr float deep = -120.0f;
    static constexpr float deep_shift = 64.0f;
    static constexpr float deep_scale = 0x1p-64f;
};

/// a * b + c, never fused: every build (and instruction set) gives the same bits.
INITSCOPE_INLINE double madd(double a, double b, double c) {
    return a * b + c;
}
INITSCOPE_INLINE float madd(float a, float b, float c) {
    return a * b + c;
}

/// 2**k for an integral k (given as T) within the normal exponent range.
INITSCOPE_INLINE double pow2i(double k) {
    const std::uint64_t bits = bit_cast<std::uint64_t>(k + ExpConst<double>::round_magic);
    return bit_cast<double>((bits + 1023u) << 52);
}

INITSCOPE_INLINE float pow2i(float k) {
    const std::uint32_t bits = bit_cast<std::uint32_t>(k + ExpConst<float>::round_magic);
    return bit_cast<float>((bits + 127u) << 23);
}

/// x = k ln2 + r with k = rint(x / ln2) and |r| <= ln2 / 2 (plus rounding).
template <class T>
INITSCOPE_INLINE void reduce(T x, T& k, T& r) {
    using C = ExpConst<T>;
    const T shifted = x * C::inv_ln2 + C::round_magic;
    k = shifted - C::round_magic;
    r = madd(-k, C::ln2_lo, x - k * C::ln2_hi);  // k * ln2_hi and the subtraction are exact
}

/// expm1(r) for |r| <= ln2 / 2: r + r^2 q(r), q(r) = 1/2! + r/3! + ..., q in Estrin's
/// scheme: pairs, then pairs of pairs, so that its chain of dependent steps is four deep
/// instead of twelve (the loops around it are bound by that latency, not by its operations).
INITSCOPE_INLINE double expm1_poly(double r) {
    const double* c = kInvFact;
    const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const double q0 = madd(madd(c[3], r, c[2]), r2, madd(c[1], r, c[0]));
    const double q1 = madd(madd(c[7], r, c[6]), r2, madd(c[5], r, c[4]));
    const double q2 = madd(madd(c[11], r, c[10]), r2, madd(c[9], r, c[8]));
    const double q = madd(madd(c[12], r4, q2), r8, madd(q1, r4, q0));
    return madd(r2, q, r);
}

INITSCOPE_INLINE float expm1_poly(float r) {
    const auto c = [](int i) { return static_cast<float>(kInvFact[i]); };
    const float r2 = r * r, r4 = r2 * r2;
    const float q0 = madd(madd(c(3), r, c(2)), r2, madd(c(1), r, c(0)));
    const float q1 = madd(c(6), r2, madd(c(5), r, c(4)));
    return madd(r2, madd(q1, r4, q0), r);
}

/// expm1(k ln2 + r) from reduce's k and r.
template <class T>
INITSCOPE_INLINE T expm1_reduced(T k, T r) {
    const T s = pow2i(k);
    return madd(s, expm1_poly(r), s - T(1));
}

/// expm1(x) for |x| <= 60 (callers clamp).
template <class T>
INITSCOPE_INLINE T expm1_bounded(T x) {
    T k, r;
    reduce(x, k, r);
    return expm1_reduced(k, r);
}

/// exp(k ln2 + r) from reduce's k and r, x = k ln2 + r in [exp_min, 0], subnormal results
/// rounded once.
template <class T>
INITSCOPE_INLINE T exp_nonpositive_reduced(T k, T r) {
    using C = ExpConst<T>;
    const T m = T(1) + expm1_poly(r);
    const bool deep = k < C::deep;
    const T k1 = deep ? k + C::deep_shift : k;
    const T s2 = deep ? C::deep_scale : T(1);
    return (m * pow2i(k1)) * s2;
}

/// exp(x) for exp_min <= x <= 0 (callers clamp).
template <class T>
INITSCOPE_INLINE T exp_nonpositive(T x) {
    T k, r;
    reduce(x, k, r);
    return exp_nonpositive_reduced(k, r);
}

// ---- double-double helpers -------------------------------------------------------------

INITSCOPE_INLINE void two_prod(double a, double b, double& p, double& e) {
    p = a * b;
    // Dekker's product: split each factor into 26-bit halves (not std::fma, which is a
    // library call without FMA instructions and must give the same bits everywhere).
    const double split = 134217729.0;  // 2**27 + 1
    const double ta = split * a, tb = split * b;
    const double ah = ta - (ta - a), al = a - ah;
    const double bh = tb - (tb - b), bl = b - bh;
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
}

INITSCOPE_INLINE void two_sum(double a, double b, double& s, double& e) {
    s = a + b;
    const double bb = s - a;
    e = (a - (s - bb)) + (b - bb);
}

// ---- the activations -------------------------------------------------------------------

/// The largest -s for which the reference's 1 / (1 + exp(-s)) does not overflow, per dtype:
/// beyond it the reference's sigmoid is exactly 0, and so is ours (in zero counts too).
constexpr double kSigmoidFlush64 = 0x1.62e42fefa39efp+9;  // log(DBL_MAX)
constexpr float kSigmoidFlush32 = 0x1.62e42ep+6f;         // largest float below log(FLT_MAX)

template <class T>
INITSCOPE_INLINE T relu(T x) {
    return (x >= T(0) || x != x) ? x : T(0);  // np.maximum(x, 0): NaN and -0.0 pass through
}

template <class T>
INITSCOPE_INLINE T tanh(T x) {
    using C = ExpConst<T>;
    const T ax = std::abs(x);
    const T t = ax < C::tanh_cap ? ax : C::tanh_cap;
    const T e = expm1_bounded(t + t);  // tanh|x| = e / (e + 2), e = expm1(2|x|)
    const T y = std::copysign((e * (T(4) / (e + T(2)))) * T(0.25), x);  // as TanhSlope
    return x != x ? x : y;
}

template <class T>
INITSCOPE_INLINE T sigmoid(T x) {
    using C = ExpConst<T>;
    T t = -std::abs(x);
    t = t > C::exp_min ? t : C::exp_min;
    const T e = exp_nonpositive(t);  // exp(-|x|): never overflows
    const T num = x >= T(0) ? T(1) : e;
    const T y = num * (T(1) / (T(1) + e));  // one division, as SigmoidSlope
    const T zero_below = -static_cast<T>(sizeof(T) == 8 ? kSigmoidFlush64 : kSigmoidFlush32);
    return x != x ? x : (x < zero_below ? T(0) : y);  // where the reference's exp(-x) overflows
}

/// log1p(t) for t in [0, 1]: log(1 + t) as 2 atanh(s) plus the rounding error of 1 + t.
INITSCOPE_INLINE double log1p_unit(double t) {
    const double u = 1.0 + t;
    const double c = t - (u - 1.0);  // exact: the part of t that 1 + t lost
    const bool big = u > 0x1.6a09e667f3bcdp+0;
    const double half = u * 0.5;
    const double f = big ? half : u;
    const double s = (f - 1.0) / (f + 1.0);
    const double log_f = 2.0 * s * detail::horner_n<double, 10>(s * s, detail::kLogC);
    const double ef = big ? 1.0 : 0.0;
    return (ef * ExpConst<double>::ln2_hi + (ef * ExpConst<double>::ln2_lo + log_f)) + c / u;
}

INITSCOPE_INLINE double softplus(double x) {
    double t = -std::abs(x);
    t = t > ExpConst<double>::exp_min ? t : ExpConst<double>::exp_min;
    const double m = x > 0.0 ? x : 0.0;
    const double y = m + log1p_unit(exp_nonpositive(t));
    return x != x ? x : y;
}

INITSCOPE_INLINE double elu(double x, double alpha) {
    double t = x < 0.0 ? x : 0.0;
    t = t > -40.0 ? t : -40.0;
    const double y = x > 0.0 ? x : alpha * expm1_bounded(t);
    return x != x ? x : y;
}

constexpr double kSeluScale = 0x1.0cfabd6a91132p+0;
constexpr double kSeluScaleAlpha = 0x1.c212cc640f031p+0;  // scale * alpha, rounded once

INITSCOPE_INLINE double selu(double x) {
    double t = x < 0.0 ? x : 0.0;
    t = t > -40.0 ? t : -40.0;
    const double y = x > 0.0 ? kSeluScale * x : kSeluScaleAlpha * expm1_bounded(t);
    return x != x ? x : y;
}

/// x * sigmoid(s), s = sh + sl in double-double, flushed to x * 0 where s < -flush (as the
/// reference's formula). exp(-|s|) is carried times 2**200 when tiny, so that x * exp(s)
/// is rounded once even where exp(s) alone would be subnormal.
INITSCOPE_INLINE double times_sigmoid(double x, double sh, double sl, double flush) {
    using C = ExpConst<double>;
    const bool neg = sh < 0.0;
    double t = neg ? sh : -sh;  // -|s|
    const double tl = neg ? sl : -sl;
    const bool zero = neg && t < -flush;
    t = t > C::exp_min ? t : C::exp_min;
    double k, r;
    reduce(t, k, r);
    const double m = 1.0 + expm1_poly(r);
    const bool deep = k < -800.0;  // exp(t) < 2**-800: 1 + exp(t) == 1
    double es = m * pow2i(deep ? k + 200.0 : k);
    es = es + es * tl;  // exp(t + tl) = exp(t) (1 + tl)
    es = zero ? 0.0 : es;
    const double den = 1.0 + (deep ? 0.0 : es);
    const double num = neg ? x * es : x;
    const double y = num / den;
    return (deep && neg) ? y * 0x1p-200 : y;
}

INITSCOPE_INLINE double silu(double x, double flush) {
    const double y = times_sigmoid(x, x, 0.0, flush);
    return x != x ? x : y;
}

constexpr double kGeluC2Hi = 0x1.9884533d43651p+0;  // 2 sqrt(2 / pi), double-double
constexpr double kGeluC2Lo = -0x1.cbc0d30ebfd15p-54;
constexpr double kGeluKHi = 0x1.6e4e26d4801f7p-5;  // 0.044715, double-double
constexpr double kGeluKLo = 0x1.441355475a31ap-59;

/// x sigmoid(2y), 2y = 2 sqrt(2/pi) x (1 + 0.044715 x^2) computed in double-double.
INITSCOPE_INLINE double gelu_tanh(double x, double flush) {
    double xc = x < 60.0 ? x : 60.0;  // beyond, sigmoid(2y) is 0 or 1
    xc = xc > -60.0 ? xc : -60.0;
    double p, pe, bh, be, ch, ce, dh, de, yh, ye;
    two_prod(xc, xc, p, pe);
    two_prod(kGeluKHi, p, bh, be);
    be = be + (kGeluKHi * pe + kGeluKLo * p);
    two_sum(1.0, bh, ch, ce);
    ce = ce + be;
    two_prod(xc, ch, dh, de);
    de = de + xc * ce;
    two_prod(kGeluC2Hi, dh, yh, ye);
    ye = ye + (kGeluC2Hi * de + kGeluC2Lo * dh);
    const double y = times_sigmoid(x, yh, ye, flush);
    return x != x ? x : y;
}

constexpr double kRsqrt2Hi = 0x1.6a09e667f3bcdp-1;  // 1 / sqrt 2, double-double
constexpr double kRsqrt2Lo = -0x1.bdd3413b26456p-55;
constexpr double kTwoOverSqrtPi = 0x1.20dd750429b6dp+0;
constexpr double kInvSqrt2Pi = 0x1.9884533d43651p-2;  // 1 / sqrt(2 pi)

/// 0.5 x erfc(-x / sqrt 2). The argument z = -x / sqrt 2 is carried in double-double and
/// erfc(zh + zl) ~ erfc(zh) - 2/sqrt(pi) exp(-zh^2) zl. Where erfc nears underflow
/// (x < -37.3) the asymptotic series of exp(-x^2/2) / sqrt(2 pi) is evaluated scaled by
/// 2**1000, so the subnormal result is rounded once; zero where the reference's erfc is.
INITSCOPE_INLINE double gelu(double x) {
    if (!(std::abs(x) <= std::numeric_limits<double>::max()))
        return 0.5 * x * std::erfc(-x * kRsqrt2Hi);  // NaN and inf as the reference
    if (x < -37.3) {
        // Where the reference's erfc underflows to 0, so does its gelu (and zero counts).
        if (x < -40.0 || std::erfc(-x * kRsqrt2Hi) == 0.0) return -0.0;
        double q, qe;
        two_prod(x, x, q, qe);
        // -x^2/2 + 1000 ln2; 1000 ln2_hi is exact and the subtraction is exact (Sterbenz).
        const double arg = (1000.0 * ExpConst<double>::ln2_hi - 0.5 * q) +
                           (1000.0 * ExpConst<double>::ln2_lo - 0.5 * qe);
        const double w = 1.0 / q;  // 1 / x^2 = 1 / (2 z^2)
        // The asymptotic series 1 - w + 3 w^2 - 15 w^3 + ..., (2k-1)!! (-w)^k.
        constexpr double coefs[9] = {1.0,    -1.0,    3.0,       -15.0,    105.0,
                                     -945.0, 10395.0, -135135.0, 2027025.0};
        double series = coefs[8];
        for (int k = 7; k >= 0; --k) series = series * w + coefs[k];
        return -(kInvSqrt2Pi * std::exp(arg) * series) * 0x1p-1000;
    }
    double zh, zl;
    two_prod(-x, kRsqrt2Hi, zh, zl);
    zl = zl + (-x) * kRsqrt2Lo;
    const double tail = std::erfc(zh) - kTwoOverSqrtPi * std::exp(-zh * zh) * zl;
    return 0.5 * x * tail;
}

// ---- derivatives (initscope.activations.Activation.derivative), in float64 ----------------

/// exp(x) for x <= 0, any x (zero below the clamp).
INITSCOPE_INLINE double exp_le0(double x) {
    const double t = x > ExpConst<double>::exp_min ? x : ExpConst<double>::exp_min;
    return exp_nonpositive(t);
}

/// e / (1 + e)^2 for e = exp(-|s|): sigmoid'(s), without overflow or cancellation.
INITSCOPE_INLINE double sigmoid_slope(double s) {
    const double e = exp_le0(-std::abs(s));
    const double d = 1.0 + e;
    return e / (d * d);
}

/// tanh x and its derivative sech^2 x from one e = expm1(2|x|) and one division,
/// q = 4 / (e + 2): tanh|x| = e q / 4 (the bits of tanh above), sech^2 x = q (e + 1) q / 4,
/// accurate in T everywhere (0 where 2|x| > slope_cap: below T's normal range). In parts for
/// the staged loop of activate_and_derive: the argument of expm1, expm1 from its reduction,
/// and what follows.
struct TanhSlope {
    template <class T>
    static INITSCOPE_INLINE T argument(T x) {
        const T two_ax = std::abs(x) + std::abs(x);
        return two_ax < ExpConst<T>::slope_cap ? two_ax : ExpConst<T>::slope_cap;
    }
    template <class T>
    static INITSCOPE_INLINE T exp(T k, T r) {
        return expm1_reduced(k, r);
    }
    template <class T>
    static INITSCOPE_INLINE void finish(T x, T e, T& y, T& d) {
        const T two_ax = std::abs(x) + std::abs(x);
        const T q = T(4) / (e + T(2));  // 4, not 1: q stays normal where 2|x| nears slope_cap
        const T s = q * (((e + T(1)) * q) * T(0.25));
        y = x != x ? x : std::copysign((e * q) * T(0.25), x);
        d = x != x ? x : (two_ax < ExpConst<T>::slope_cap ? s : T(0));
    }
};

/// sigmoid x (the bits of sigmoid above) and its derivative e / (1 + e)^2, e = exp(-|x|),
/// from one exp and one division, r = 1 / (1 + e): e r^2, in T. In parts, as TanhSlope.
struct SigmoidSlope {
    template <class T>
    static INITSCOPE_INLINE T argument(T x) {
        const T t = -std::abs(x);
        return t > ExpConst<T>::exp_min ? t : ExpConst<T>::exp_min;
    }
    template <class T>
    static INITSCOPE_INLINE T exp(T k, T r) {
        return exp_nonpositive_reduced(k, r);
    }
    template <class T>
    static INITSCOPE_INLINE void finish(T x, T e, T& y, T& d) {
        const T r = T(1) / (T(1) + e);  // the one division
        const T num = x >= T(0) ? T(1) : e;
        const T zero_below = -static_cast<T>(sizeof(T) == 8 ? kSigmoidFlush64 : kSigmoidFlush32);
        y = x != x ? x : (x < zero_below ? T(0) : num * r);
        d = x != x ? x : (e * r) * r;
    }
};

/// The activation of x and its derivative, with the parts of F (TanhSlope, SigmoidSlope).
template <class F, class T>
INITSCOPE_INLINE void with_slope(T x, T& y, T& d) {
    T k, r;
    reduce(F::argument(x), k, r);
    F::finish(x, F::exp(k, r), y, d);
}

/// with_slope over n values, one loop per part, out and slope holding what is between:
/// a value's whole chain of dependent steps is about a hundred cycles long, and one loop
/// over all of it keeps too few values in flight for the CPU to overlap them (its FP
/// scheduler fills with one value's steps); three short loops run about 1.4 times faster.
/// The same bits as with_slope.
template <class F, class T>
void with_slope_staged(const T* __restrict in, T* __restrict out, T* __restrict slope,
                       std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) reduce(F::argument(in[i]), slope[i], out[i]);
    for (std::size_t i = 0; i < n; ++i) slope[i] = F::exp(slope[i], out[i]);
    for (std::size_t i = 0; i < n; ++i) F::finish(in[i], slope[i], out[i], slope[i]);
}

INITSCOPE_INLINE double d_softplus(double x) {
    return sigmoid(x);
}

INITSCOPE_INLINE double d_elu(double x, double alpha) {
    return x > 0.0 ? 1.0 : alpha * exp_le0(x);
}

INITSCOPE_INLINE double d_selu(double x) {
    return x > 0.0 ? kSeluScale : kSeluScaleAlpha * exp_le0(x);
}

INITSCOPE_INLINE double d_gelu(double x) {
    if (x < -40.0) return 0.0 * x;  // both terms underflow
    return 0.5 * std::erfc(-x * kRsqrt2Hi) + x * (kInvSqrt2Pi * exp_le0(-0.5 * x * x));
}

constexpr double kGeluC = 0x1.9884533d43651p-1;  // sqrt(2 / pi)

INITSCOPE_INLINE double d_gelu_tanh(double x) {
    const double xc = std::min(60.0, std::max(-60.0, x));  // beyond, sigmoid(2u) is 0 or 1
    const double x2 = xc * xc;
    const double two_u = 2.0 * kGeluC * (xc + 0.044715 * x2 * xc);
    const double du = 2.0 * kGeluC * (1.0 + 3.0 * 0.044715 * x2);
    return sigmoid(two_u) + xc * du * sigmoid_slope(two_u);  // xc: finite where the slope is 0
}

INITSCOPE_INLINE double d_silu(double x) {
    return sigmoid(x) + x * sigmoid_slope(x);
}

}  // namespace math

namespace detail {

template <class T, class F>
inline void map(const T* __restrict in, T* __restrict out, std::size_t n, F f) {
    for (std::size_t i = 0; i < n; ++i) out[i] = f(in[i]);
}

/// float32 values through a float64 function, rounded once.
template <class F>
inline void map_in_double(const float* __restrict in, float* __restrict out, std::size_t n, F f) {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(f(static_cast<double>(in[i])));
}

template <class F>
inline void map_in_double(const double* __restrict in, double* __restrict out, std::size_t n, F f) {
    for (std::size_t i = 0; i < n; ++i) out[i] = f(in[i]);
}

}  // namespace detail

/// out[i] = activation(in[i]) for i < n; `param` is leaky_relu's slope or elu's alpha.
/// `in` and `out` must not overlap.
template <class T>
void activate(ActivationCode code, double param, const T* __restrict in, T* __restrict out,
              std::size_t n) {
    using detail::map;
    using detail::map_in_double;
    // Where the reference's sigmoid (in T) flushes to zero.
    constexpr double flush = sizeof(T) == 8 ? math::kSigmoidFlush64 : math::kSigmoidFlush32;
    switch (code) {
        case ActivationCode::linear:
            for (std::size_t i = 0; i < n; ++i) out[i] = in[i];
            return;
        case ActivationCode::tanh:
            map(in, out, n, [](T x) { return math::tanh(x); });
            return;
        case ActivationCode::relu:
            map(in, out, n, [](T x) { return math::relu(x); });
            return;
        case ActivationCode::leaky_relu: {
            const T slope = static_cast<T>(param);
            map(in, out, n, [slope](T x) { return x < T(0) ? x * slope : x; });
            return;
        }
        case ActivationCode::sigmoid:
            map(in, out, n, [](T x) { return math::sigmoid(x); });
            return;
        case ActivationCode::softplus:
            map_in_double(in, out, n, [](double x) { return math::softplus(x); });
            return;
        case ActivationCode::elu: {
            const double alpha = static_cast<double>(static_cast<T>(param));
            map_in_double(in, out, n, [alpha](double x) { return math::elu(x, alpha); });
            return;
        }
        case ActivationCode::selu:
            map_in_double(in, out, n, [](double x) { return math::selu(x); });
            return;
        case ActivationCode::gelu:
            if (sizeof(T) == 4) {
                // float32: z = -x / sqrt 2 in float64 is accurate far beyond float32's ulp.
                // Zero where the reference's float32 erfc is (tail below float32's range).
                map_in_double(in, out, n, [](double x) {
                    const double tail = std::erfc(-x * math::kRsqrt2Hi);
                    return static_cast<float>(tail) == 0.0f ? 0.0 * x : 0.5 * x * tail;
                });
            } else {
                map_in_double(in, out, n, [](double x) { return math::gelu(x); });
            }
            return;
        case ActivationCode::gelu_tanh:
            map_in_double(in, out, n, [](double x) { return math::gelu_tanh(x, flush); });
            return;
        case ActivationCode::silu:
            map_in_double(in, out, n, [](double x) { return math::silu(x, flush); });
            return;
    }
    throw std::invalid_argument("unknown activation code " +
                                std::to_string(static_cast<int>(code)));
}

/// out[i] = activation'(in[i]) for i < n; NaN stays NaN. tanh and sigmoid are evaluated in
/// T (as the activations), the others in float64 and rounded once. `in` and `out` must not
/// overlap.
template <class T>
void derive(ActivationCode code, double param, const T* __restrict in, T* __restrict out,
            std::size_t n) {
    using detail::map_in_double;
    // Each derivative f(x) of a finite or infinite x; NaN passes through.
    auto apply = [&](auto f) {
        map_in_double(in, out, n, [f](double x) { return x != x ? x : f(x); });
    };
    switch (code) {
        case ActivationCode::linear:
            apply([](double) { return 1.0; });
            return;
        case ActivationCode::tanh:  // in T, as the activation
            detail::map(in, out, n, [](T x) {
                T y, d;
                math::with_slope<math::TanhSlope>(x, y, d);
                return d;
            });
            return;
        case ActivationCode::relu:
            apply([](double x) { return x > 0.0 ? 1.0 : 0.0; });
            return;
        case ActivationCode::leaky_relu: {
            const double slope = static_cast<double>(static_cast<T>(param));
            apply([slope](double x) { return x > 0.0 ? 1.0 : slope; });
            return;
        }
        case ActivationCode::sigmoid:
            detail::map(in, out, n, [](T x) {
                T y, d;
                math::with_slope<math::SigmoidSlope>(x, y, d);
                return d;
            });
            return;
        case ActivationCode::softplus:
            apply([](double x) { return math::d_softplus(x); });
            return;
        case ActivationCode::elu: {
            const double alpha = static_cast<double>(static_cast<T>(param));
            apply([alpha](double x) { return math::d_elu(x, alpha); });
            return;
        }
        case ActivationCode::selu:
            apply([](double x) { return math::d_selu(x); });
            return;
        case ActivationCode::gelu:
            apply([](double x) { return math::d_gelu(x); });
            return;
        case ActivationCode::gelu_tanh:
            apply([](double x) { return math::d_gelu_tanh(x); });
            return;
        case ActivationCode::silu:
            apply([](double x) { return math::d_silu(x); });
            return;
    }
    throw std::invalid_argument("unknown activation code " +
                                std::to_string(static_cast<int>(code)));
}

/// activate and derive in one pass: out[i] = activation(in[i]), slope[i] = activation'(in[i])
/// (the same bits as the two), tanh and sigmoid from one exp each. No two arrays overlap.
template <class T>
void activate_and_derive(ActivationCode code, double param, const T* __restrict in,
                         T* __restrict out, T* __restrict slope, std::size_t n) {
    switch (code) {
        case ActivationCode::tanh:
            math::with_slope_staged<math::TanhSlope>(in, out, slope, n);
            return;
        case ActivationCode::sigmoid:
            math::with_slope_staged<math::SigmoidSlope>(in, out, slope, n);
            return;
        default:
            activate(code, param, in, out, n);
            derive(code, param, in, slope, n);
    }
}

}  // namespace INITSCOPE_ISA_NAMESPACE
}  // namespace initscope
