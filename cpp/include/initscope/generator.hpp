// Uniforms and Box-Muller normals from Philox4x32-10, bit for bit as initscope.random
// specifies them: the same operations in the same order, each rounded once in the
// array's dtype. The build compiles with -ffp-contract=off so no multiply-add is fused.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "isa.hpp"
#include "kernel.hpp"
#include "philox.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace initscope {
inline namespace INITSCOPE_ISA_NAMESPACE {

namespace detail {

template <class To, class From>
inline To bit_cast(From from) {
    static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
    To to;
    std::memcpy(&to, &from, sizeof(To));
    return to;
}

// 1/3, 1/5, ..., 1/21; (-1)^k/(2k+1)!, k = 1..8; (-1)^k/(2k)!, k = 1..9 (random.py).
constexpr double kLogC[10] = {0x1.5555555555555p-2, 0x1.999999999999ap-3, 0x1.2492492492492p-3,
                              0x1.c71c71c71c71cp-4, 0x1.745d1745d1746p-4, 0x1.3b13b13b13b14p-4,
                              0x1.1111111111111p-4, 0x1.e1e1e1e1e1e1ep-5, 0x1.af286bca1af28p-5,
                              0x1.8618618618618p-5};
constexpr double kSinC[8] = {-0x1.5555555555555p-3,  0x1.1111111111111p-7,   -0x1.a01a01a01a01ap-13,
                             0x1.71de3a556c734p-19,  -0x1.ae64567f544e4p-26, 0x1.6124613a86d09p-33,
                             -0x1.ae7f3e733b81fp-41, 0x1.952c77030ad4ap-49};
constexpr double kCosC[9] = {
    -0x1.0000000000000p-1,  0x1.5555555555555p-5,   -0x1.6c16c16c16c17p-10,
    0x1.a01a01a01a01ap-16,  -0x1.27e4fb7789f5cp-22, 0x1.1eed8eff8d898p-29,
    -0x1.93974a8c07c9dp-37, 0x1.ae7f3e733b81fp-45,  -0x1.6827863b97d97p-53};

/// Per-dtype constants: float32 keeps the first 5 coefficients, each rounded to float.
template <class T>
struct GenConst;

template <>
struct GenConst<double> {
    static constexpr int log_n = 10, sin_n = 8, cos_n = 9;
    static constexpr double ln2_hi = 0x1.62e42feep-1;
    static constexpr double ln2_lo = 0x1.a39ef35793c76p-33;
    static constexpr double pio2 = 0x1.921fb54442d18p+0;
    static constexpr double sqrt2 = 0x1.6a09e667f3bcdp+0;  // math.sqrt(2.0)
    static constexpr double round_magic = 0x1.8p52;
};

template <>
struct GenConst<float> {
    static constexpr int log_n = 5, sin_n = 5, cos_n = 5;
    static constexpr float ln2_hi = 0x1.62ep-1f;
    static constexpr float ln2_lo = 0x1.0bfbe8p-15f;
    static constexpr float pio2 = 0x1.921fb6p+0f;
    static constexpr float sqrt2 = 0x1.6a09e6p+0f;  // float32(math.sqrt(2.0))
    static constexpr float round_magic = 0x1.8p23f;
};

/// Elements per Philox block (random.values_per_block): float64 uniforms take 53 bits
/// from two words, every other value one or two words of 32 bits.
template <class T, Draw D>
constexpr std::size_t kPerBlock = (sizeof(T) == 8 && D == Draw::uniform) ? 2 : 4;

/// `one + z * (c[0] + z * (c[1] + ...))` with the first N coefficients, each step rounded
/// in T (random.horner).
template <class T, int N, int M>
inline T horner_n(T z, const double (&c)[M], T one = T(1)) {
    static_assert(N <= M, "too many coefficients");
    T p = static_cast<T>(c[N - 1]);
#pragma GCC unroll 16
    for (int i = N - 2; i >= 0; --i) p = p * z + static_cast<T>(c[i]);
    return p * z + one;
}

/// random.log_unit: log of u in (0, 1], a normal number.
inline double log_unit(double u) {
    using C = GenConst<double>;
    const std::uint64_t bits = bit_cast<std::uint64_t>(u);
    // The exponent as a double without an int64 conversion (none in AVX2): 2**52 + e.
    const double e = bit_cast<double>((bits >> 52) | 0x4330000000000000ull) - (0x1p52 + 1023.0);
    double f = bit_cast<double>((bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);
    const bool big = f > C::sqrt2;
    const double half = f * 0.5;  // computed unconditionally so that the select vectorises
    f = big ? half : f;
    const double ef = e + (big ? 1.0 : 0.0);
    const double s = (f - 1.0) / (f + 1.0);
    const double log_f = 2.0 * s * horner_n<double, C::log_n>(s * s, kLogC);
    return ef * C::ln2_hi + (ef * C::ln2_lo + log_f);
}

inline float log_unit(float u) {
    using C = GenConst<float>;
    const std::uint32_t bits = bit_cast<std::uint32_t>(u);
    const std::int32_t e = static_cast<std::int32_t>(bits >> 23) - 127;
    float f = bit_cast<float>((bits & 0x007FFFFFu) | 0x3F800000u);
    const bool big = f > C::sqrt2;
    const float half = f * 0.5f;
    f = big ? half : f;
    const float ef = static_cast<float>(e + (big ? 1 : 0));
    const float s = (f - 1.0f) / (f + 1.0f);
    const float log_f = 2.0f * s * horner_n<float, C::log_n>(s * s, kLogC);
    return ef * C::ln2_hi + (ef * C::ln2_lo + log_f);
}

template <class T>
using UInt = std::conditional_t<sizeof(T) == 8, std::uint64_t, std::uint32_t>;

/// random.quarter_turns: (sin(t + q pi/2), cos(t + q pi/2)) from s = sin t, c = cos t.
template <class T, class Q>
inline void quarter_turns(Q q, T s, T c, T& sin_out, T& cos_out) {
    const bool odd = (q & 1u) != 0;
    const bool neg = (q & 2u) != 0;
    const T a = odd ? c : s;
    const T b = odd ? -s : c;
    sin_out = neg ? -a : a;
    cos_out = neg ? -b : b;
}

/// random.sincos_2pi: (sin 2 pi u, cos 2 pi u) for u in [0, 1).
template <class T>
inline void sincos_2pi(T u, T& sin_out, T& cos_out) {
    using C = GenConst<T>;
    const T v = u * T(4);
    // rint(v) by the round-to-nearest-even of an add; its low mantissa bits are k mod 4.
    const T shifted = v + C::round_magic;
    const T k = shifted - C::round_magic;
    const UInt<T> q = bit_cast<UInt<T>>(shifted);
    const T x = (v - k) * C::pio2;
    const T z = x * x;
    const T s = x * horner_n<T, C::sin_n>(z, kSinC);
    const T c = horner_n<T, C::cos_n>(z, kCosC);
    quarter_turns(q, s, c, sin_out, cos_out);
}

inline double uniform53(std::uint32_t hi, std::uint32_t lo) {
    const double a = static_cast<double>(static_cast<std::int32_t>(hi >> 5));
    const double b = static_cast<double>(static_cast<std::int32_t>(lo >> 6));
    return (a * 67108864.0 + b) * 0x1p-53;
}

inline float uniform24(std::uint32_t w) {
    return static_cast<float>(static_cast<std::int32_t>(w >> 8)) * 0x1p-24f;
}

// random.normal_radius and random.normal_angle (float64 normals): near-minimax polynomials.
constexpr double kRadiusQ[5] = {-4.0 * 0x1.555555561d96ep-2, -4.0 * 0x1.999996ab08450p-3,
                                -4.0 * 0x1.2494113ae1df3p-3, -4.0 * 0x1.c62b4d76ec470p-4,
                                -4.0 * 0x1.9112747b926d8p-4};
constexpr double kAngleSin[5] = {-0x1.5555555552233p-3, 0x1.1111110c86c11p-7,
                                 -0x1.a019f938cd31dp-13, 0x1.71d76cc38e32bp-19,
                                 -0x1.a96183450633ap-26};
constexpr double kAngleCos[6] = {-0x1.fffffffffffa3p-2,  0x1.555555554f948p-5,
                                 -0x1.6c16c16489f8dp-10, 0x1.a019f8838ae45p-16,
                                 -0x1.27df6bccd4555p-22, 0x1.1b95ed604801ep-29};
constexpr double kMinusTwoLn2 = -0x1.62e42fefa39efp+0;
constexpr double kPi2m31 = 0x1.921fb54442d18p-30;  // pi * 2**-31
constexpr std::uint64_t kSqrtHalfBits = 0x3FE6A09E667F3BCDull;

/// random.signed_word: word - 2**31 in double (an int32 converts in one vector instruction).
inline double signed_word(std::uint32_t word) {
    return static_cast<double>(static_cast<std::int32_t>(word ^ 0x80000000u));
}

// random.normal_radius and random.normal_angle, each cut in two stages (see batch_values).

/// random.normal_radius up to the division: x = 1 - word 2**-32 = f 2**e, s = (f-1)/(f+1).
inline void radius_reduced(std::uint32_t word, double& e, double& s) {
    const double x = 0.5 - signed_word(word) * 0x1p-32;  // exact
    const std::uint64_t bits = bit_cast<std::uint64_t>(x) + (0x3FF0000000000000ull - kSqrtHalfBits);
    e = bit_cast<double>((bits >> 52) | 0x4330000000000000ull) - (0x1p52 + 1023.0);
    const double f = bit_cast<double>((bits & 0x000FFFFFFFFFFFFFull) + kSqrtHalfBits);
    s = (f - 1.0) / (f + 1.0);
}

/// The rest of random.normal_radius but its square root: -2 log x = e (-2 ln 2) + s Q(s**2).
inline double radius_squared(double e, double s) {
    const double q = horner_n<double, 5>(s * s, kRadiusQ, -4.0);
    return e * kMinusTwoLn2 + s * q;
}

/// random.normal_angle up to its polynomials: x = t pi 2**-31 and the quadrant q.
inline void angle_reduced(std::uint32_t word, double& x, std::uint64_t& quadrant) {
    const std::uint32_t shifted = word + 0x20000000u;  // wraps as q mod 4 does
    const std::int32_t t = static_cast<std::int32_t>(shifted & 0x3FFFFFFFu) - 0x20000000;
    x = static_cast<double>(t) * kPi2m31;
    quadrant = shifted >> 30;
}

/// The rest of random.normal_angle: sin and cos of x, then random.quarter_turns, whose
/// selects of -s and -c are written here as flips of the sign bit (the same bits).
inline void angle_from_reduced(double x, std::uint64_t q, double& sin_out, double& cos_out) {
    const double z = x * x;
    const double s = x * horner_n<double, 5>(z, kAngleSin);
    const double c = horner_n<double, 6>(z, kAngleCos);
    const bool odd = (q & 1u) != 0;
    const double a = odd ? c : s;  // sin(x + q pi/2) is +-a, cos(x + q pi/2) +-b
    const double b = odd ? s : c;
    sin_out = bit_cast<double>(bit_cast<std::uint64_t>(a) ^ ((q & 2u) << 62));        // q = 2, 3
    cos_out = bit_cast<double>(bit_cast<std::uint64_t>(b) ^ (((q + 1) & 2u) << 62));  // q = 1, 2
}

/// out[4i .. 4i + 3] = (a[i], b[i], c[i], d[i]) for i < n: four arrays interleaved.
template <std::size_t n>
inline void interleave4(const double* __restrict a, const double* __restrict b,
                        const double* __restrict c, const double* __restrict d,
                        double* __restrict out) {
#if defined(__AVX2__)
    static_assert(n % 4 == 0, "whole groups of four");
    for (std::size_t i = 0; i < n; i += 4) {  // 4 x 4 transposes: GCC makes 24 shuffles of 8
        const __m256d va = _mm256_loadu_pd(a + i), vb = _mm256_loadu_pd(b + i);
        const __m256d vc = _mm256_loadu_pd(c + i), vd = _mm256_loadu_pd(d + i);
        const __m256d ab_even = _mm256_unpacklo_pd(va, vb);  // a0 b0 a2 b2
        const __m256d ab_odd = _mm256_unpackhi_pd(va, vb);   // a1 b1 a3 b3
        const __m256d cd_even = _mm256_unpacklo_pd(vc, vd);
        const __m256d cd_odd = _mm256_unpackhi_pd(vc, vd);
        _mm256_storeu_pd(out + 4 * i, _mm256_permute2f128_pd(ab_even, cd_even, 0x20));
        _mm256_storeu_pd(out + 4 * i + 4, _mm256_permute2f128_pd(ab_odd, cd_odd, 0x20));
        _mm256_storeu_pd(out + 4 * i + 8, _mm256_permute2f128_pd(ab_even, cd_even, 0x31));
        _mm256_storeu_pd(out + 4 * i + 12, _mm256_permute2f128_pd(ab_odd, cd_odd, 0x31));
    }
#else
    for (std::size_t i = 0; i < n; ++i) {
        out[4 * i] = a[i];
        out[4 * i + 1] = b[i];
        out[4 * i + 2] = c[i];
        out[4 * i + 3] = d[i];
    }
#endif
}

/// Batches of this many Philox blocks are computed at once (structure of arrays).
constexpr std::size_t kBatch = 128;

/// Values of blocks `first .. first + kBatch - 1` into out[kBatch * per_block], element
/// `per_block * b + j` of the stream at out[per_block * (b - first) + j]. Each stage is a
/// loop of its own, which the compiler vectorises: a loop short enough that the CPU works
/// on many of its iterations at once, where one long loop would wait on its latencies.
template <Draw D>
inline void batch_values(PhiloxKey key, std::uint32_t stream, std::uint32_t layer,
                         std::uint64_t first, double* __restrict out) {
    constexpr std::size_t B = kBatch;
    if constexpr (D == Draw::uniform) {
        std::uint32_t w0[B], w1[B], w2[B], w3[B];
        philox_blocks<B>(key, stream, layer, first, w0, w1, w2, w3);
        for (std::size_t i = 0; i < B; ++i) {
            out[2 * i] = uniform53(w0[i], w1[i]);
            out[2 * i + 1] = uniform53(w2[i], w3[i]);
        }
    } else {
        // Words 0 and 2 of each block give radii, words 1 and 3 angles: 2B pairs, in stages
        // that pair the division and the square root, each, with other work that keeps the
        // CPU's other units busy while its divider works.
        alignas(64) std::uint32_t radius_words[2][B], angle_words[2][B];
        philox_blocks<B>(key, stream, layer, first, radius_words[0], angle_words[0],
                         radius_words[1], angle_words[1]);
        const std::uint32_t* rw = radius_words[0];
        const std::uint32_t* aw = angle_words[0];
        alignas(64) double e[2 * B], s[2 * B], x[2 * B];
        alignas(64) std::uint64_t q[2 * B];
        for (std::size_t i = 0; i < 2 * B; ++i) {
            radius_reduced(rw[i], e[i], s[i]);
            angle_reduced(aw[i], x[i], q[i]);
        }
        for (std::size_t i = 0; i < 2 * B; ++i) e[i] = radius_squared(e[i], s[i]);  // r**2
        for (std::size_t i = 0; i < 2 * B; ++i) {  // the normals over s and x
            const double r = std::sqrt(e[i]);
            double sin, cos;
            angle_from_reduced(x[i], q[i], sin, cos);
            s[i] = r * cos;
            x[i] = r * sin;
        }
        interleave4<B>(s, x, s + B, x + B, out);
    }
}

template <Draw D>
inline void batch_values(PhiloxKey key, std::uint32_t stream, std::uint32_t layer,
                         std::uint64_t first, float* __restrict out) {
    constexpr std::size_t B = kBatch;
    alignas(64) std::uint32_t w0[B], w1[B], w2[B], w3[B];
    philox_blocks<B>(key, stream, layer, first, w0, w1, w2, w3);
    if constexpr (D == Draw::uniform) {
        for (std::size_t i = 0; i < B; ++i) {
            out[4 * i] = uniform24(w0[i]);
            out[4 * i + 1] = uniform24(w1[i]);
            out[4 * i + 2] = uniform24(w2[i]);
            out[4 * i + 3] = uniform24(w3[i]);
        }
    } else {
        // Pairs (u0, u1) and (u2, u3) of each block, as one array of 2B pairs.
        alignas(64) float v[2 * B], u[2 * B], zc[2 * B], zs[2 * B];
        for (std::size_t i = 0; i < B; ++i) {
            v[i] = uniform24(w0[i]);
            u[i] = uniform24(w1[i]);
            v[B + i] = uniform24(w2[i]);
            u[B + i] = uniform24(w3[i]);
        }
        // random.box_muller in two stages: the one with the division, then the square root
        // with the angle's polynomials (r**2 over v)
        for (std::size_t i = 0; i < 2 * B; ++i) v[i] = -2.0f * log_unit(1.0f - v[i]);
        for (std::size_t i = 0; i < 2 * B; ++i) {
            const float r = std::sqrt(v[i]);
            float s, c;
            sincos_2pi(u[i], s, c);
            zc[i] = r * c;
            zs[i] = r * s;
        }
        for (std::size_t i = 0; i < B; ++i) {
            out[4 * i] = zc[i];
            out[4 * i + 1] = zs[i];
            out[4 * i + 2] = zc[B + i];
            out[4 * i + 3] = zs[B + i];
        }
    }
}

/// generate for one kind of value (elements per block a constant).
template <class T, Draw D>
void generate_as(std::uint64_t seed, std::uint32_t stream, std::uint32_t layer, std::uint64_t start,
                 std::size_t count, T* out, bool affine, T scale, T shift) {
    constexpr std::uint64_t per_block = kPerBlock<T, D>;
    constexpr std::size_t batch_elems = kBatch * per_block;
    const PhiloxKey key = philox_key(seed);
    alignas(64) T values[batch_elems];
    // Counts elements written, not up to start + count: that wraps at the end of the stream.
    std::uint64_t block = start / per_block;
    std::size_t skip = static_cast<std::size_t>(start % per_block);  // in the first batch
    for (std::size_t done = 0; done < count;) {
        T* dst = out + done;
        const std::size_t n = std::min<std::size_t>(batch_elems - skip, count - done);
        if (!affine && n == batch_elems) {
            batch_values<D>(key, stream, layer, block, dst);  // a whole batch: in place
        } else {
            batch_values<D>(key, stream, layer, block, values);
            const T* src = values + skip;
            if (affine) {
                for (std::size_t i = 0; i < n; ++i) dst[i] = src[i] * scale + shift;
            } else {
                std::memcpy(dst, src, n * sizeof(T));
            }
        }
        done += n;
        skip = 0;
        block += kBatch;
    }
}

}  // namespace detail

/// Elements `start .. start + count - 1` of (seed, stream, layer): uniforms on [0, 1) or
/// standard normals, written as `value * scale + shift` in T when `affine` (schemes.draw),
/// else as they are.
template <class T>
void generate(Draw kind, std::uint64_t seed, std::uint32_t stream, std::uint32_t layer,
              std::uint64_t start, std::size_t count, T* out, bool affine = false, T scale = T(1),
              T shift = T(0)) {
    if (count == 0) return;
    if (kind == Draw::normal)
        detail::generate_as<T, Draw::normal>(seed, stream, layer, start, count, out, affine, scale,
                                             shift);
    else
        detail::generate_as<T, Draw::uniform>(seed, stream, layer, start, count, out, affine, scale,
                                              shift);
}

}  // namespace INITSCOPE_ISA_NAMESPACE
}  // namespace initscope
