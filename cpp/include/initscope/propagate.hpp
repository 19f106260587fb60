// The fused layer loop: samples in chunks through every layer; each chunk's rows in tiles,
// each tile's GEMM followed, by the same thread while the tile is in cache, by the bias,
// the activation and every statistic. Tiles (kernel.hpp, kTileRows) are fixed by the number
// of samples alone and merged in order, so results are bit-identical for any chunk_size and
// any number of threads, whatever the BLAS kernel.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "activations.hpp"
#include "blas.hpp"
#include "generator.hpp"
#include "isa.hpp"
#include "kernel.hpp"
#include "stats.hpp"
#include "team.hpp"

namespace initscope {
inline namespace INITSCOPE_ISA_NAMESPACE {

namespace detail {

constexpr auto kCheckEvery = std::chrono::milliseconds(20);

inline void require(bool ok, const std::string& message) {
    if (!ok) throw std::invalid_argument(message);
}

inline void check_spec(const RunSpec& spec) {
    require(spec.n_samples > 0, "n_samples must be positive");
    require(spec.input_dim > 0, "input_dim must be positive");
    require(!spec.layers.empty(), "the network needs at least one layer");
    // Histogram slot indices are int32, up to bins + 2 (stats.hpp, bin_kernel).
    require(spec.bins > 0 && spec.bins < 0x7fffffff - 2, "bins must be in [1, 2**31 - 3)");
    require(spec.hist_low < spec.hist_high, "hist_range must have low < high");
    require(spec.threads > 0, "threads must be positive");
    require(spec.chunk_size > 0, "chunk_size must be positive");
    // Chunks hold whole tiles, so that tiles (and GEMM calls) do not depend on chunk_size.
    require(spec.chunk_size % kTileRows == 0 || spec.chunk_size >= spec.n_samples,
            "chunk_size must be a multiple of TILE_ROWS (" + std::to_string(kTileRows) +
                ") or at least n_samples");
    constexpr std::size_t int_max = 0x7fffffff;
    std::size_t fan_in = spec.input_dim;
    for (std::size_t l = 0; l < spec.layers.size(); ++l) {
        const LayerSpec& layer = spec.layers[l];
        const std::string name = "layer " + std::to_string(l);
        require(layer.fan_in == fan_in, name + ": fan_in does not match the previous width");
        require(layer.fan_out > 0 && layer.fan_out <= int_max && layer.fan_in <= int_max,
                name + ": widths must be in [1, 2**31)");
        require(layer.source != WeightSource::given || layer.weights != nullptr,
                name + ": weights missing");
        require(!(layer.bias_std < 0.0), name + ": bias_std must be >= 0");
        fan_in = layer.fan_out;
    }
}

/// One tile: the chunk buffer's rows [begin, begin + rows), one GEMM call.
struct Tile {
    std::size_t begin, rows;
};

/// A slice of one stream drawn by one thread: inputs, or weights as value * scale + shift.
template <class T>
struct DrawJob {
    Draw kind;
    std::uint32_t stream, layer;
    std::uint64_t first;
    std::size_t count;
    T* out;
    bool affine;
    T scale, shift;

    void run(std::uint64_t seed) const {
        generate<T>(kind, seed, stream, layer, first, count, out, affine, scale, shift);
    }
};

/// Rate-limited calls of the interrupt check, from the thread that started the run only.
class Watch {
public:
    explicit Watch(const InterruptCheck& check) : check_(check), last_(Clock::now()) {}

    /// Asks the check if it is due; true once the run must stop.
    bool poll() {
        if (stop_.load(std::memory_order_relaxed)) return true;
        if (!check_) return false;
        const auto now = Clock::now();
        if (now - last_ < kCheckEvery) return false;
        last_ = now;
        if (check_()) stop_.store(true, std::memory_order_relaxed);
        return stop();
    }
    bool stop() const { return stop_.load(std::memory_order_relaxed); }

private:
    using Clock = std::chrono::steady_clock;
    const InterruptCheck& check_;
    Clock::time_point last_;
    std::atomic<bool> stop_{false};
};

struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};

template <class T>
using Buffer = std::unique_ptr<T[], FreeDeleter>;

/// An uninitialised array. Large ones are 2 MiB aligned and asked to be backed by huge pages:
/// a fresh buffer per run otherwise costs a page fault per 4 KiB (a few % of a short run).
template <class T>
Buffer<T> buffer(std::size_t count) {
    constexpr std::size_t huge = std::size_t(2) << 20;
    const std::size_t bytes = std::max<std::size_t>(count * sizeof(T), sizeof(T));
    void* p = nullptr;
    if (bytes >= huge) {
#if defined(__SANITIZE_ADDRESS__)
        const std::size_t rounded = bytes;  // not rounded up, so that ASan sees any overrun
#else
        const std::size_t rounded = (bytes + huge - 1) / huge * huge;
#endif
        if (posix_memalign(&p, huge, rounded) == 0) {
#if defined(MADV_HUGEPAGE)
            madvise(p, rounded, MADV_HUGEPAGE);  // a hint: ignored where unsupported
#endif
        } else {
            p = nullptr;
        }
    } else {
        p = std::malloc(bytes);
    }
    if (p == nullptr) throw std::bad_alloc();
    return Buffer<T>(static_cast<T*>(p));
}

}  // namespace detail

/// Runs the experiment: per layer, the accumulators of stats.hpp over all samples.
template <class T>
std::vector<LayerResult> propagate(const RunSpec& spec, const InterruptCheck& check) {
    using namespace detail;
    check_spec(spec);
    prepare_blas();

    const std::size_t depth = spec.layers.size();
    const std::uint64_t n = spec.n_samples;
    const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(spec.chunk_size, n));
    const std::uint64_t chunks = (n + chunk - 1) / chunk;
    std::size_t width = spec.input_dim;
    for (const auto& layer : spec.layers) width = std::max(width, layer.fan_out);

    // Two activation buffers of a chunk.
    require(chunk <= SIZE_MAX / sizeof(T) / width, "chunk_size * width is too large");
    auto x_buffer = buffer<T>(chunk * width);
    auto y_buffer = buffer<T>(chunk * width);

    // Weights drawn in place: kept for all chunks if they fit a modest budget, else redrawn.
    std::size_t drawn_bytes = 0, largest = 0;
    for (const auto& layer : spec.layers) {
        if (layer.source == WeightSource::given) continue;
        drawn_bytes += layer.fan_in * layer.fan_out * sizeof(T);
        largest = std::max(largest, layer.fan_in * layer.fan_out);
    }
    // A layer's weights are drawn while the previous layer's tiles run (threads that finish
    // their tiles early draw them), so uncached weights rotate between two buffers.
    const bool cache_weights = chunks > 1 && drawn_bytes <= kWeightCacheBytes;
    std::vector<Buffer<T>> weights(depth);
    std::vector<bool> weights_ready(depth, false);
    Buffer<T> rotating[2];
    for (std::size_t l = 0; l < depth; ++l) {
        const LayerSpec& layer = spec.layers[l];
        if (layer.source != WeightSource::given && cache_weights)
            weights[l] = buffer<T>(layer.fan_in * layer.fan_out);
    }
    if (!cache_weights && largest > 0) {
        rotating[0] = buffer<T>(largest);
        rotating[1] = buffer<T>(largest);
    }
    auto weights_of = [&](std::size_t l) -> T* {
        return cache_weights ? weights[l].get() : rotating[l % 2].get();
    };
    auto needs_draw = [&](std::size_t l) {
        return spec.layers[l].source != WeightSource::given && !(cache_weights && weights_ready[l]);
    };

    // Biases: small, drawn once.
    std::vector<std::vector<T>> biases(depth);
    for (std::size_t l = 0; l < depth; ++l) {
        const LayerSpec& layer = spec.layers[l];
        if (!(layer.bias_std > 0.0)) continue;
        biases[l].resize(layer.fan_out);
        generate<T>(Draw::normal, spec.seed, kBiases, static_cast<std::uint32_t>(l), 0,
                    layer.fan_out, biases[l].data());
        const T bias_std = static_cast<T>(layer.bias_std);
        for (auto& b : biases[l]) b = b * bias_std;  // random.normal(...) * dtype(bias_std)
    }

    std::vector<LayerStats> stats(depth);
    for (std::size_t l = 0; l < depth; ++l) stats[l].reset(spec.layers[l].fan_out, spec.bins);
    HistSpec hist{spec.bins,
                  spec.hist_low,
                  spec.hist_high,
                  static_cast<double>(spec.bins) / (spec.hist_high - spec.hist_low),
                  false,
                  0.0,
                  0.0};

    const int threads = spec.threads;
    std::vector<std::vector<T>> scratch(static_cast<std::size_t>(threads));
    std::vector<TileStats> tile_stats((chunk + kTileRows - 1) / kTileRows);
    std::vector<HistCounts> thread_hist(static_cast<std::size_t>(threads));
    std::vector<Tile> tiles;
    std::vector<DrawJob<T>> draws;
    Watch watch(check);
    Team team(threads);  // joined when the run ends, normally or by an exception

    // Appends the jobs that draw layer l's weights.
    auto add_weight_draws = [&](std::size_t l) {
        if (l >= depth || !needs_draw(l)) return;
        const LayerSpec& layer = spec.layers[l];
        const std::size_t count = layer.fan_in * layer.fan_out;
        const Draw kind = layer.source == WeightSource::normal ? Draw::normal : Draw::uniform;
        for (std::size_t first = 0; first < count; first += kSegment)
            draws.push_back({kind, kWeights, static_cast<std::uint32_t>(l), first,
                             std::min(kSegment, count - first), weights_of(l) + first, true,
                             static_cast<T>(layer.scale), static_cast<T>(layer.shift)});
    };
    auto mark_drawn = [&](std::size_t l) {
        if (l < depth && cache_weights) weights_ready[l] = true;
    };

    for (std::uint64_t c = 0; c < chunks; ++c) {
        const std::uint64_t r0 = c * chunk;
        const std::uint64_t r1 = std::min<std::uint64_t>(n, r0 + chunk);
        const std::size_t rows = static_cast<std::size_t>(r1 - r0);

        // r0 is a multiple of kTileRows (check_spec), so the chunk's tiles are whole ones.
        tiles.clear();
        for (std::size_t begin = 0; begin < rows; begin += kTileRows)
            tiles.push_back({begin, std::min(kTileRows, rows - begin)});

        // Layer 0's input rows; its weights if not drawn yet.
        T* x = x_buffer.get();
        T* y = y_buffer.get();
        const std::size_t dim = spec.input_dim;
        draws.clear();
        if (spec.inputs != nullptr) {
            const T* src = static_cast<const T*>(spec.inputs) + r0 * dim;
            std::memcpy(x, src, rows * dim * sizeof(T));
        } else {
            const std::size_t count = rows * dim;
            for (std::size_t first = 0; first < count; first += kSegment)
                draws.push_back({Draw::normal, kInputs, 0, r0 * dim + first,
                                 std::min(kSegment, count - first), x + first, false, T(1), T(0)});
        }
        add_weight_draws(0);
        if (!draws.empty()) {
            if (watch.poll()) throw Interrupted();
            ErrorSlot errors;
            JobCounter counter(draws.size());
            team.run([&](int) {
                for (std::size_t job; counter.next(job) && !errors.failed();) {
                    try {
                        draws[job].run(spec.seed);
                    } catch (...) {
                        errors.capture();
                    }
                }
            });
            errors.rethrow();
            mark_drawn(0);
        }

        for (std::size_t l = 0; l < depth; ++l) {
            if (watch.poll()) throw Interrupted();
            const LayerSpec& layer = spec.layers[l];
            const std::size_t fan_in = layer.fan_in, fan_out = layer.fan_out;
            const T* w = layer.source == WeightSource::given ? static_cast<const T*>(layer.weights)
                                                             : weights_of(l);
            // After this layer's tiles, the next layer's weights (into the other buffer).
            draws.clear();
            add_weight_draws(l + 1);

            const T* bias = biases[l].empty() ? nullptr : biases[l].data();
            hist.bounded = layer.bounded;
            hist.sat_low = layer.sat_low;
            hist.sat_high = layer.sat_high;
            for (auto& counts : thread_hist) counts.reset(spec.bins);
            const std::size_t jobs = tiles.size() + draws.size();
            ErrorSlot errors;

            JobCounter counter(jobs);
            team.run([&](int me) {
                SingleThreadedBlas single_threaded;
                for (std::size_t job; counter.next(job);) {
                    if (errors.failed() || watch.stop()) break;
                    try {
                        if (job >= tiles.size()) {
                            draws[job - tiles.size()].run(spec.seed);
                            continue;
                        }
                        const Tile& tile = tiles[job];
                        gemm(static_cast<int>(tile.rows), static_cast<int>(fan_out),
                             static_cast<int>(fan_in), x + tile.begin * fan_in,
                             static_cast<int>(fan_in), w, static_cast<int>(fan_out),
                             y + tile.begin * fan_out, static_cast<int>(fan_out));
                        // A few rows at a time: bias, activation, statistics, then the
                        // activations replace H in place (the next layer's input).
                        constexpr std::size_t block = TileStats::kBlock;
                        std::vector<T>& post = scratch[static_cast<std::size_t>(me)];
                        post.resize(block * fan_out);
                        TileStats& ts = tile_stats[job];
                        ts.reset(fan_out);
                        HistCounts& hist_counts = thread_hist[static_cast<std::size_t>(me)];
                        for (std::size_t r = 0; r < tile.rows; r += block) {
                            const std::size_t count = std::min(block, tile.rows - r);
                            T* h = y + (tile.begin + r) * fan_out;
                            if (bias != nullptr)
                                for (std::size_t i = 0; i < count; ++i)
                                    for (std::size_t j = 0; j < fan_out; ++j)
                                        h[i * fan_out + j] = h[i * fan_out + j] + bias[j];
                            activate(layer.activation, layer.param, h, post.data(),
                                     count * fan_out);
                            ts.add_rows(h, post.data(), count, hist, hist_counts);
                            std::memcpy(h, post.data(), count * fan_out * sizeof(T));
                        }
                    } catch (...) {
                        errors.capture();
                    }
                    if (me == 0) watch.poll();
                }
            });
            errors.rethrow();
            if (watch.stop()) throw Interrupted();
            mark_drawn(l + 1);

            for (std::size_t t = 0; t < tiles.size(); ++t) stats[l].merge(tile_stats[t]);
            for (const auto& counts : thread_hist) stats[l].merge(counts);
            if (layer.kept != nullptr) {
                T* dst = static_cast<T*>(layer.kept) + r0 * fan_out;
                std::memcpy(dst, y, rows * fan_out * sizeof(T));
            }
            std::swap(x, y);
        }
    }
    std::vector<LayerResult> results;
    results.reserve(depth);
    for (auto& layer_stats : stats) results.push_back(std::move(layer_stats).result());
    return results;
}

}  // namespace INITSCOPE_ISA_NAMESPACE
}  // namespace initscope
