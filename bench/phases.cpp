// The kernel's work per element besides the GEMM, phase by phase: the activation with its
// slope, the statistics of a block (moments, extremes, counts, histogram) and the sum of
// the squared slopes, each timed alone on a tile that stays in cache, in ns per element
// (the best of several rounds, one thread). It compiles the kernel's own headers with the
// kernel's flags (CMakeLists.txt, INITSCOPE_FLAGS) and -march of the build to measure
// (x86-64-v2, -v3 or -v4), in one line:
//
//   g++ -std=c++17 -O3 -ffp-contract=off -fno-math-errno -fno-trapping-math -march=x86-64-v3
//   -Icpp/include bench/phases.cpp -o /tmp/phases && /tmp/phases
//
// Under `valgrind --tool=callgrind /tmp/phases 1`, a phase's function (phase_activation,
// phase_statistics, phase_slopes; inclusive) over the elements printed, times the six rows,
// is its instructions per element.
#define INITSCOPE_ISA phases
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "initscope/activations.hpp"
#include "initscope/stats.hpp"

namespace {

using namespace initscope;
using Clock = std::chrono::steady_clock;

// One tile of the 100000 x 256 x 4 shape.
constexpr std::size_t kWidth = 256, kRows = 240;

// One function a phase, never inlined, so that callgrind counts each apart.
template <class T>
__attribute__((noinline)) void phase_activation(ActivationCode code, const T* h, T* post, T* slope,
                                                std::size_t n) {
    activate_and_derive(code, 0.0, h, post, slope, n);
}

template <class T>
__attribute__((noinline)) void phase_statistics(TileStats& stats, const T* h, const T* post,
                                                const HistSpec& spec, HistCounts& counts) {
    stats.add_rows(h, post, TileStats::kBlock, spec, counts);
}

template <class T>
__attribute__((noinline)) void phase_slopes(TileStats& stats, const T* slope) {
    stats.add_derivatives(slope, TileStats::kBlock);
}

template <class T>
void run(const char* dtype, ActivationCode code, const char* name, int rounds) {
    constexpr std::size_t block = TileStats::kBlock;
    std::vector<T> h(kRows * kWidth), post(block * kWidth), slope(block * kWidth);
    std::mt19937_64 rng(1);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (T& x : h) x = static_cast<T>(normal(rng));
    const HistSpec spec{30, -1.0, 1.0, 15.0, true, -0.999, 0.999};
    TileStats stats;
    HistCounts counts;
    counts.reset(spec.bins);
    double best[3] = {1e30, 1e30, 1e30};
    for (int round = 0; round < rounds; ++round) {
        double seconds[3] = {0.0, 0.0, 0.0};
        for (int pass = 0; pass < 20; ++pass) {
            stats.reset(kWidth);
            for (std::size_t r = 0; r < kRows; r += block) {
                const T* tile = h.data() + r * kWidth;
                const auto t0 = Clock::now();
                phase_activation(code, tile, post.data(), slope.data(), block * kWidth);
                const auto t1 = Clock::now();
                phase_statistics(stats, tile, post.data(), spec, counts);
                const auto t2 = Clock::now();
                phase_slopes(stats, slope.data());
                const auto t3 = Clock::now();
                seconds[0] += std::chrono::duration<double>(t1 - t0).count();
                seconds[1] += std::chrono::duration<double>(t2 - t1).count();
                seconds[2] += std::chrono::duration<double>(t3 - t2).count();
            }
        }
        for (int p = 0; p < 3; ++p) best[p] = std::min(best[p], seconds[p]);
    }
    const double elements = 20.0 * static_cast<double>(kRows * kWidth);
    std::printf("%-8s %-8s %9.2f %8.2f %8.2f %8.2f   (%.0f elements a round; sum %g)\n", dtype,
                name, best[0] / elements * 1e9, best[1] / elements * 1e9, best[2] / elements * 1e9,
                (best[0] + best[1] + best[2]) / elements * 1e9, elements,
                stats.post_s1[0] + stats.deriv_sq[0]);
}

}  // namespace

int main(int argc, char** argv) {
    const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 15;
    std::printf("ns per element, best of %d rounds, tile %zu x %zu\n", rounds, kRows, kWidth);
    std::printf("%-8s %-8s %9s %8s %8s %8s\n", "dtype", "act", "act+slope", "stats", "sum sq",
                "total");
    run<double>("float64", ActivationCode::tanh, "tanh", rounds);
    run<float>("float32", ActivationCode::tanh, "tanh", rounds);
    run<double>("float64", ActivationCode::sigmoid, "sigmoid", rounds);
    run<float>("float32", ActivationCode::sigmoid, "sigmoid", rounds);
    run<double>("float64", ActivationCode::relu, "relu", rounds);
    run<float>("float32", ActivationCode::relu, "relu", rounds);
}
