// Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as
// 1, 2, 3"), the counter-based generator of initscope.random.
#pragma once

#include <cstddef>
#include <cstdint>

#include "isa.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace initscope {
inline namespace INITSCOPE_ISA_NAMESPACE {

struct PhiloxKey {
    std::uint32_t k0, k1;
};

/// The key of a 64-bit seed: its low and high words.
inline PhiloxKey philox_key(std::uint64_t seed) {
    return {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
}

namespace detail {
constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;

inline void philox_round(std::uint32_t& c0, std::uint32_t& c1, std::uint32_t& c2, std::uint32_t& c3,
                         std::uint32_t k0, std::uint32_t k1) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(kPhiloxM0) * c0;
    const std::uint64_t p1 = static_cast<std::uint64_t>(kPhiloxM1) * c2;
    const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const std::uint32_t n1 = static_cast<std::uint32_t>(p1);
    const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3 ^ k1;
    const std::uint32_t n3 = static_cast<std::uint32_t>(p0);
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
}
}  // namespace detail

/// One Philox4x32-10 block: the four output words of counter `ctr` under `key`.
inline void philox4x32(std::uint32_t ctr[4], PhiloxKey key) {
    std::uint32_t k0 = key.k0, k1 = key.k1;
    for (int r = 0; r < 10; ++r) {
        if (r) {
            k0 += detail::kPhiloxW0;
            k1 += detail::kPhiloxW1;
        }
        detail::philox_round(ctr[0], ctr[1], ctr[2], ctr[3], k0, k1);
    }
}

#if defined(__AVX2__)
namespace detail {
/// High words of the 32x32-bit products of 8 lanes (even and odd lanes multiplied apart).
inline __m256i mulhi_epu32(__m256i a, __m256i m) {
    const __m256i even = _mm256_mul_epu32(a, m);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    return _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

/// Ten rounds on G independent groups of 8 blocks (independent chains hide latency).
template <int G>
inline void philox_rounds_avx2(__m256i (&c0)[G], __m256i (&c1)[G], __m256i (&c2)[G],
                               __m256i (&c3)[G], const __m256i (&k0)[10], const __m256i (&k1)[10]) {
    const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
    const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
    // Unrolled: a rolled loop moves the four words between registers every round.
#pragma GCC unroll 10
    for (int r = 0; r < 10; ++r) {
        for (int g = 0; g < G; ++g) {
            const __m256i hi0 = mulhi_epu32(c0[g], m0);
            const __m256i lo0 = _mm256_mullo_epi32(c0[g], m0);
            const __m256i hi1 = mulhi_epu32(c2[g], m1);
            const __m256i lo1 = _mm256_mullo_epi32(c2[g], m1);
            c0[g] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[g]), k0[r]);
            c1[g] = lo1;
            c2[g] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[g]), k1[r]);
            c3[g] = lo0;
        }
    }
}
}  // namespace detail
#endif

/// Philox words of `B` consecutive blocks `first .. first + B - 1` of (stream, layer), in
/// structure-of-arrays form (AVX2: 32 blocks at a time; otherwise a loop the compiler
/// vectorises).
template <std::size_t B>
inline void philox_blocks(PhiloxKey key, std::uint32_t stream, std::uint32_t layer,
                          std::uint64_t first, std::uint32_t (&w0)[B], std::uint32_t (&w1)[B],
                          std::uint32_t (&w2)[B], std::uint32_t (&w3)[B]) {
    const std::uint32_t lo = static_cast<std::uint32_t>(first);
    const std::uint32_t hi = static_cast<std::uint32_t>(first >> 32);
#if defined(__AVX2__)
    constexpr int G = 2;
    static_assert(B % (8 * G) == 0, "batch must hold whole groups of 32 blocks");
    __m256i k0[10], k1[10];
    std::uint32_t kk0 = key.k0, kk1 = key.k1;
    for (int r = 0; r < 10; ++r) {
        if (r) {
            kk0 += detail::kPhiloxW0;
            kk1 += detail::kPhiloxW1;
        }
        k0[r] = _mm256_set1_epi32(static_cast<int>(kk0));
        k1[r] = _mm256_set1_epi32(static_cast<int>(kk1));
    }
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    const __m256i lo_signed = _mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(lo)), sign);
    for (std::size_t i = 0; i < B; i += 8 * G) {
        __m256i c0[G], c1[G], c2[G], c3[G];
        for (int g = 0; g < G; ++g) {
            const std::uint32_t base = lo + static_cast<std::uint32_t>(i + 8 * g);
            c0[g] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(base)), iota);
            // Lanes whose low word wrapped (unsigned c0 < lo) carry into the high word.
            const __m256i wrapped = _mm256_cmpgt_epi32(lo_signed, _mm256_xor_si256(c0[g], sign));
            c1[g] = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int>(hi)), wrapped);
            c2[g] = _mm256_set1_epi32(static_cast<int>(stream));
            c3[g] = _mm256_set1_epi32(static_cast<int>(layer));
        }
        detail::philox_rounds_avx2<G>(c0, c1, c2, c3, k0, k1);
        for (int g = 0; g < G; ++g) {
            const std::size_t j = i + 8 * static_cast<std::size_t>(g);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0 + j), c0[g]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1 + j), c1[g]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(w2 + j), c2[g]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(w3 + j), c3[g]);
        }
    }
#else
    std::uint32_t k0[10], k1[10];
    k0[0] = key.k0;
    k1[0] = key.k1;
    for (int r = 1; r < 10; ++r) {
        k0[r] = k0[r - 1] + detail::kPhiloxW0;
        k1[r] = k1[r - 1] + detail::kPhiloxW1;
    }
    for (std::size_t i = 0; i < B; ++i) {
        // The low word wraps into the high word only when a batch crosses 2**32 blocks.
        const std::uint32_t c_lo = lo + static_cast<std::uint32_t>(i);
        std::uint32_t c0 = c_lo;
        std::uint32_t c1 = hi + (c_lo < lo ? 1u : 0u);
        std::uint32_t c2 = stream, c3 = layer;
        for (int r = 0; r < 10; ++r) detail::philox_round(c0, c1, c2, c3, k0[r], k1[r]);
        w0[i] = c0;
        w1[i] = c1;
        w2[i] = c2;
        w3[i] = c3;
    }
#endif
}

}  // namespace INITSCOPE_ISA_NAMESPACE
}  // namespace initscope
