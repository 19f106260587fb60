// The fused layer loop: samples in chunks through every layer; each chunk's rows in tiles
// (and the columns of a wide layer, or of one with few samples, in blocks: kernel.hpp), each
// tile's GEMM followed, by the same thread while the tile is in cache, by the bias, the
// activation, its derivative and every statistic. With gradients, each chunk then goes back
// through the layers: per tile, delta_{l-1} = (delta_l W_l^T) * act'(H_{l-1}) and its
// statistics; per fixed block of a layer's inputs, dW_l += X_l^T delta_l, tile after tile.
// Tiles (kernel.hpp, kTileRows) are fixed by the number of samples alone and merged in
// order, so results are bit-identical for any chunk_size and any number of threads,
// whatever the BLAS kernel.
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
    // Chunks hold whole tiles (whole groups of them where a layer is wide), so that tiles
    // and GEMM calls do not depend on chunk_size.
    std::size_t group = 1;
    for (const LayerSpec& layer : spec.layers)
        group = std::max(group, gemm_tiles(layer.fan_in, layer.fan_out));
    require(spec.chunk_size % (kTileRows * group) == 0 || spec.chunk_size >= spec.n_samples,
            group == 1 ? "chunk_size must be a multiple of TILE_ROWS (" +
                             std::to_string(kTileRows) + ") or at least n_samples"
                       : "chunk_size must be a multiple of TILE_ROWS * WIDE_TILES (" +
                             std::to_string(kTileRows * group) +
                             ", the network has a wide layer) or at least n_samples");
    if (spec.gradients) {
        require(spec.grad_bins > 0 && spec.grad_bins < 0x7fffffff - 2,
                "grad_bins must be in [1, 2**31 - 3)");
        require(!spec.grad_range_given || spec.grad_low < spec.grad_high,
                "grad_range must have low < high");
    }
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

/// The default range of the gradients' histograms, (-R, R): R the power of two at or above
/// the largest finite |delta| of the first tile over all layers (1 if there is none), so
/// that every layer's histogram has the same bins (R = the largest |delta| itself beyond
/// 2**1023, where the next power of two is not a float). The first tile is the same rows
/// for any chunk_size, and frexp is exact, so every backend finds the same R.
inline double grad_range_rule(double max_abs) {
    if (!(max_abs > 0.0)) return 1.0;
    int e = 0;
    const double m = std::frexp(max_abs, &e);
    return (m == 0.5 || e > 1023) ? max_abs : std::ldexp(1.0, e);
}

/// One run of the experiment (see the file comment).
template <class T>
class Propagation {
public:
    Propagation(const RunSpec& spec, const InterruptCheck& check)
        : spec_(spec),
          depth_(spec.layers.size()),
          n_(spec.n_samples),
          chunk_(static_cast<std::size_t>(std::min<std::uint64_t>(spec.chunk_size, n_))),
          chunks_((n_ + chunk_ - 1) / chunk_),
          grads_(spec.gradients),
          watch_(check),
          team_(spec.threads) {
        allocate_buffers();
        allocate_weights();
        draw_biases();
        stats_.resize(depth_);
        for (std::size_t l = 0; l < depth_; ++l) stats_[l].reset(fan_out(l), spec.bins);
        hist_ = HistSpec{spec.bins, spec.hist_low, spec.hist_high,
                         static_cast<double>(spec.bins) / (spec.hist_high - spec.hist_low),
                         false, 0.0, 0.0};
        const auto threads = static_cast<std::size_t>(spec.threads);
        scratch_.resize(threads);
        deriv_scratch_.resize(threads);
        thread_hist_.resize(threads);
        const std::size_t tiles = (chunk_ + kTileRows - 1) / kTileRows;
        std::size_t blocks = 1;
        for (std::size_t l = 0; l < depth_; ++l) blocks = std::max(blocks, blocks_of(l));
        tile_stats_.resize(tiles * blocks);
        if (blocks > 1) pre_scratch_.resize(threads);
        if (grads_) {
            grad_stats_.resize(depth_);
            for (std::size_t l = 0; l < depth_; ++l)
                grad_stats_[l].reset(fan_out(l), spec.grad_bins);
            grad_tile_stats_.resize(tiles);
            first_tile_max_.assign(depth_, 0.0);
            weight_std_.assign(depth_, 0.0);
            weight_grad_std_.assign(depth_, 0.0);
            weight_grad_norm_.assign(depth_, 0.0);
            if (spec.grad_range_given) set_grad_range(spec.grad_low, spec.grad_high);
        }
    }

    std::vector<LayerResult> run() {
        for (std::uint64_t c = 0; c < chunks_; ++c) {
            start_chunk(c);
            forward(c);
            if (!grads_) continue;
            backward(c);
            if (!grad_range_known_) bin_first_chunk();
        }
        if (grads_ && chunks_ > 1)
            for (std::size_t l = 0; l < depth_; ++l) reduce_weight_grad(l, weight_grads_[l].get());
        std::vector<LayerResult> results;
        results.reserve(depth_);
        for (std::size_t l = 0; l < depth_; ++l) {
            results.push_back(std::move(stats_[l]).result());
            if (!grads_) continue;
            GradResult& g = results.back().grad;
            g = std::move(grad_stats_[l]).result();
            g.weight_grad_std = weight_grad_std_[l];
            g.weight_grad_norm = weight_grad_norm_[l];
            g.weight_std = weight_std_[l];
            g.hist_low = grad_hist_.low;
            g.hist_high = grad_hist_.high;
        }
        return results;
    }

private:
    static constexpr std::size_t kNone = static_cast<std::size_t>(-1);

    std::size_t fan_in(std::size_t l) const { return spec_.layers[l].fan_in; }
    std::size_t fan_out(std::size_t l) const { return spec_.layers[l].fan_out; }
    /// The blocks of columns of layer l (kernel.hpp): by its shape and the run's samples.
    std::size_t blocks_of(std::size_t l) const {
        const std::size_t group = gemm_tiles(fan_in(l), fan_out(l));
        const std::size_t tiles = static_cast<std::size_t>((n_ + kTileRows - 1) / kTileRows);
        return column_blocks(fan_out(l), (tiles + group - 1) / group);
    }

    // ---- set-up ------------------------------------------------------------------------

    void allocate_buffers() {
        std::size_t width = spec_.input_dim;
        for (const auto& layer : spec_.layers) width = std::max(width, layer.fan_out);
        require(chunk_ <= SIZE_MAX / sizeof(T) / width / (grads_ ? 2 * depth_ + 1 : 2),
                "chunk_size * width is too large");
        if (!grads_) {
            // Two buffers: layer l reads one and writes the other.
            ping_ = buffer<T>(chunk_ * width);
            pong_ = buffer<T>(chunk_ * width);
            return;
        }
        // Every layer's input and act'(H) (then delta, in place) are kept for the way back.
        inputs_.resize(depth_);
        derivs_.resize(depth_);
        for (std::size_t l = 0; l < depth_; ++l) {
            inputs_[l] = buffer<T>(chunk_ * fan_in(l));
            derivs_[l] = buffer<T>(chunk_ * fan_out(l));
        }
        ping_ = buffer<T>(chunk_ * fan_out(depth_ - 1));  // the last layer's output, then dL/dA
    }

    T* input_of(std::size_t l) {
        if (grads_) return inputs_[l].get();
        return l % 2 == 0 ? ping_.get() : pong_.get();
    }
    T* output_of(std::size_t l) {
        if (grads_) return l + 1 < depth_ ? inputs_[l + 1].get() : ping_.get();
        return l % 2 == 0 ? pong_.get() : ping_.get();
    }

    void allocate_weights() {
        // Drawn weights are kept for all chunks (and the way back) if they fit a modest
        // budget, else redrawn. A layer's weights are drawn while the previous layer's tiles
        // run (threads that finish their tiles early draw them), so uncached weights rotate
        // between two buffers.
        std::size_t drawn_bytes = 0, largest = 0;
        for (const auto& layer : spec_.layers) {
            if (layer.source == WeightSource::given) continue;
            drawn_bytes += layer.fan_in * layer.fan_out * sizeof(T);
            largest = std::max(largest, layer.fan_in * layer.fan_out);
        }
        cache_weights_ = (chunks_ > 1 || grads_) && drawn_bytes <= spec_.weight_cache_bytes;
        weights_.resize(depth_);
        weights_ready_.assign(depth_, false);
        for (std::size_t l = 0; l < depth_; ++l)
            if (spec_.layers[l].source != WeightSource::given && cache_weights_)
                weights_[l] = buffer<T>(fan_in(l) * fan_out(l));
        if (!cache_weights_ && largest > 0) {
            rotating_[0] = buffer<T>(largest);
            rotating_[1] = buffer<T>(largest);
        }
        if (!grads_) return;
        // Weight gradients: one buffer reused layer by layer when the run has one chunk,
        // else one per layer, summed over the chunks.
        std::size_t largest_layer = 0;
        for (const auto& layer : spec_.layers)
            largest_layer = std::max(largest_layer, layer.fan_in * layer.fan_out);
        weight_grads_.resize(chunks_ > 1 ? depth_ : 1);
        for (std::size_t l = 0; l < weight_grads_.size(); ++l)
            weight_grads_[l] =
                buffer<T>(chunks_ > 1 ? fan_in(l) * fan_out(l) : largest_layer);
    }

    void draw_biases() {
        biases_.resize(depth_);
        for (std::size_t l = 0; l < depth_; ++l) {
            const LayerSpec& layer = spec_.layers[l];
            if (!(layer.bias_std > 0.0)) continue;
            biases_[l].resize(layer.fan_out);
            generate<T>(Draw::normal, spec_.seed, kBiases, static_cast<std::uint32_t>(l), 0,
                        layer.fan_out, biases_[l].data());
            const T bias_std = static_cast<T>(layer.bias_std);
            for (auto& b : biases_[l]) b = b * bias_std;  // random.normal(...) * dtype(bias_std)
        }
    }

    void set_grad_range(double low, double high) {
        grad_hist_ = HistSpec{spec_.grad_bins, low, high,
                              static_cast<double>(spec_.grad_bins) / (high - low),
                              false, 0.0, 0.0};
        grad_range_known_ = true;
    }

    // ---- weights -----------------------------------------------------------------------

    const T* weights_of(std::size_t l) const {
        const LayerSpec& layer = spec_.layers[l];
        if (layer.source == WeightSource::given) return static_cast<const T*>(layer.weights);
        return cache_weights_ ? weights_[l].get() : rotating_[l % 2].get();
    }

    bool needs_draw(std::size_t l) const {
        if (spec_.layers[l].source == WeightSource::given) return false;
        return cache_weights_ ? !weights_ready_[l] : rotating_holds_[l % 2] != l;
    }

    /// Appends the jobs that draw layer l's weights (if l is a layer and they are missing).
    void add_weight_draws(std::size_t l) {
        if (l >= depth_ || !needs_draw(l)) return;
        const LayerSpec& layer = spec_.layers[l];
        const std::size_t count = layer.fan_in * layer.fan_out;
        const Draw kind = layer.source == WeightSource::normal ? Draw::normal : Draw::uniform;
        T* out = cache_weights_ ? weights_[l].get() : rotating_[l % 2].get();
        for (std::size_t first = 0; first < count; first += kSegment)
            draws_.push_back({kind, kWeights, static_cast<std::uint32_t>(l), first,
                              std::min(kSegment, count - first), out + first, true,
                              static_cast<T>(layer.scale), static_cast<T>(layer.shift)});
        if (cache_weights_) {
            weights_ready_[l] = true;
        } else {
            rotating_holds_[l % 2] = l;
        }
    }

    /// Appends the jobs that draw `count` normals of `stream` from element `first` into out.
    void add_normal_draws(std::uint32_t stream, std::uint64_t first, std::size_t count, T* out) {
        for (std::size_t done = 0; done < count; done += kSegment)
            draws_.push_back({Draw::normal, stream, 0, first + done,
                              std::min(kSegment, count - done), out + done, false, T(1), T(0)});
    }

    // ---- the team ----------------------------------------------------------------------

    /// Runs job(thread, index) for index in [0, jobs) on the team, each thread taking the
    /// next index as it finishes; rethrows the first error; stops on an interrupt.
    template <class Job>
    void parallel(std::size_t jobs, Job&& job) {
        if (jobs == 0) return;
        if (watch_.poll()) throw Interrupted();
        ErrorSlot errors;
        JobCounter counter(jobs);
        team_.run([&](int me) {
            SingleThreadedBlas single_threaded;
            for (std::size_t index; counter.next(index);) {
                if (errors.failed() || watch_.stop()) break;
                try {
                    job(static_cast<std::size_t>(me), index);
                } catch (...) {
                    errors.capture();
                }
                if (me == 0) watch_.poll();
            }
        });
        errors.rethrow();
        if (watch_.stop()) throw Interrupted();
    }

    /// Runs the draw jobs queued in draws_ and, first, `jobs` others.
    template <class Job>
    void parallel_with_draws(std::size_t jobs, Job&& job) {
        parallel(jobs + draws_.size(), [&](std::size_t me, std::size_t index) {
            if (index < jobs) {
                job(me, index);
            } else {
                draws_[index - jobs].run(spec_.seed);
            }
        });
        draws_.clear();
    }

    void reset_thread_hist(int bins) {
        for (auto& counts : thread_hist_) counts.reset(bins);
    }

    // ---- forward -----------------------------------------------------------------------

    void start_chunk(std::uint64_t c) {
        r0_ = c * chunk_;
        rows_ = static_cast<std::size_t>(std::min<std::uint64_t>(n_, r0_ + chunk_) - r0_);
        // r0 is a multiple of kTileRows (check_spec), so the chunk's tiles are whole ones.
        tiles_.clear();
        for (std::size_t begin = 0; begin < rows_; begin += kTileRows)
            tiles_.push_back({begin, std::min(kTileRows, rows_ - begin)});
        first_tiles_ = c == 0;
    }

    void forward(std::uint64_t c) {
        // Layer 0's input rows; its weights if not drawn yet.
        T* x = input_of(0);
        const std::size_t dim = spec_.input_dim;
        if (spec_.inputs != nullptr) {
            const T* src = static_cast<const T*>(spec_.inputs) + r0_ * dim;
            std::memcpy(x, src, rows_ * dim * sizeof(T));
        } else {
            add_normal_draws(kInputs, r0_ * dim, rows_ * dim, x);
        }
        add_weight_draws(0);
        parallel_with_draws(0, [](std::size_t, std::size_t) {});

        for (std::size_t l = 0; l < depth_; ++l) {
            add_weight_draws(l + 1);  // after this layer's tiles, the next layer's weights
            const LayerSpec& layer = spec_.layers[l];
            hist_.bounded = layer.bounded;
            hist_.sat_low = layer.sat_low;
            hist_.sat_high = layer.sat_high;
            reset_thread_hist(spec_.bins);
            // jobs: every GEMM group of tiles times every block of columns
            const std::size_t group = gemm_tiles(fan_in(l), fan_out(l));
            const std::size_t blocks = blocks_of(l);
            parallel_with_draws(
                (tiles_.size() + group - 1) / group * blocks, [&](std::size_t me, std::size_t job) {
                    const std::size_t g = job / blocks;
                    forward_tiles(me, l, g * group, std::min(tiles_.size(), (g + 1) * group),
                                  job % blocks, blocks);
                });
            for (std::size_t t = 0; t < tiles_.size(); ++t)
                for (std::size_t b = 0; b < blocks; ++b)
                    stats_[l].merge(tile_stats_[t * blocks + b],
                                    block_column(b, blocks, fan_out(l)), b + 1 == blocks);
            for (const auto& counts : thread_hist_) stats_[l].merge(counts);
            if (grads_ && c == 0)
                weight_std_[l] = two_pass_std(weights_of(l), fan_in(l) * fan_out(l));
            if (layer.kept != nullptr) {
                T* dst = static_cast<T*>(layer.kept) + r0_ * fan_out(l);
                std::memcpy(dst, output_of(l), rows_ * fan_out(l) * sizeof(T));
            }
        }
    }

    /// Tiles [t0, t1) of layer l (one GEMM group), columns of block b of `blocks`: one GEMM
    /// call over their rows, then each tile's statistics.
    void forward_tiles(std::size_t me, std::size_t l, std::size_t t0, std::size_t t1, std::size_t b,
                       std::size_t blocks) {
        const std::size_t n_in = fan_in(l), n_out = fan_out(l);
        const std::size_t begin = tiles_[t0].begin;
        const std::size_t rows = tiles_[t1 - 1].begin + tiles_[t1 - 1].rows - begin;
        const std::size_t c0 = block_column(b, blocks, n_out);
        const std::size_t c1 = block_column(b + 1, blocks, n_out);
        gemm(static_cast<int>(rows), static_cast<int>(c1 - c0), static_cast<int>(n_in),
             input_of(l) + begin * n_in, static_cast<int>(n_in), weights_of(l) + c0,
             static_cast<int>(n_out), output_of(l) + begin * n_out + c0, static_cast<int>(n_out));
        for (std::size_t t = t0; t < t1; ++t) finish_tile(me, l, t, b, blocks);
    }

    /// Columns of block b (of `blocks`) of tile t of layer l after its GEMM: a few rows at a
    /// time the bias, the activation and its derivative (kept for the way back), and every
    /// statistic; the activations replace H in place (the next layer's input). A block
    /// narrower than the layer is copied out first, so that the work runs on whole rows.
    void finish_tile(std::size_t me, std::size_t l, std::size_t t, std::size_t b,
                     std::size_t blocks) {
        const LayerSpec& layer = spec_.layers[l];
        const std::size_t n_out = layer.fan_out;
        const std::size_t c0 = block_column(b, blocks, n_out);
        const std::size_t width = block_column(b + 1, blocks, n_out) - c0;
        const bool whole = width == n_out;
        const Tile& tile = tiles_[t];
        T* y = output_of(l) + c0;
        constexpr std::size_t block = TileStats::kBlock;
        std::vector<T>& post = scratch_[me];
        post.resize(block * width);
        std::vector<T>& deriv = deriv_scratch_[me];
        if (!grads_ || !whole) deriv.resize(block * width);
        if (!whole) pre_scratch_[me].resize(block * width);
        TileStats& ts = tile_stats_[t * blocks + b];
        ts.reset(width);
        HistCounts& counts = thread_hist_[me];
        const T* bias = biases_[l].empty() ? nullptr : biases_[l].data() + c0;
        for (std::size_t r = 0; r < tile.rows; r += block) {
            const std::size_t count = std::min(block, tile.rows - r);
            T* h = y + (tile.begin + r) * n_out;
            T* x = whole ? h : pre_scratch_[me].data();  // H of these rows, row stride width
            if (!whole) copy_rows(h, n_out, x, width, count, width);
            if (bias != nullptr)
                for (std::size_t i = 0; i < count; ++i)
                    for (std::size_t j = 0; j < width; ++j)
                        x[i * width + j] = x[i * width + j] + bias[j];
            T* d = grads_ && whole ? derivs_[l].get() + (tile.begin + r) * n_out : deriv.data();
            activate_and_derive(layer.activation, layer.param, x, post.data(), d, count * width);
            ts.add_rows(x, post.data(), count, hist_, counts);
            ts.add_derivatives(d, count);
            copy_rows(post.data(), width, h, n_out, count, width);
            if (grads_ && !whole)
                copy_rows(d, width, derivs_[l].get() + (tile.begin + r) * n_out + c0, n_out, count,
                          width);
        }
    }

    /// Copies `count` rows of `width` values from src (row stride src_stride) to dst.
    static void copy_rows(const T* src, std::size_t src_stride, T* dst, std::size_t dst_stride,
                          std::size_t count, std::size_t width) {
        if (src_stride == width && dst_stride == width) {
            std::memcpy(dst, src, count * width * sizeof(T));
            return;
        }
        for (std::size_t i = 0; i < count; ++i)
            std::memcpy(dst + i * dst_stride, src + i * src_stride, width * sizeof(T));
    }

    // ---- backward ----------------------------------------------------------------------

    void backward(std::uint64_t c) {
        const std::size_t top = depth_ - 1;
        const std::size_t width = fan_out(top);
        T* g = ping_.get();  // dL/dA of the last layer, over its output (no longer needed)
        if (spec_.output_grad != nullptr) {
            const T* src = static_cast<const T*>(spec_.output_grad) + r0_ * width;
            std::memcpy(g, src, rows_ * width * sizeof(T));
        } else {
            add_normal_draws(kGrads, r0_ * width, rows_ * width, g);
        }
        parallel_with_draws(0, [](std::size_t, std::size_t) {});

        // delta of the last layer: dL/dA * act'(H), in place of act'(H).
        reset_thread_hist(spec_.grad_bins);
        parallel(tiles_.size(), [&](std::size_t me, std::size_t t) {
            const Tile& tile = tiles_[t];
            T* delta = derivs_[top].get() + tile.begin * width;
            const T* dl = g + tile.begin * width;
            for (std::size_t i = 0; i < tile.rows * width; ++i) delta[i] = delta[i] * dl[i];
            grad_tile(me, t, top, delta);
        });
        merge_grad_tiles(top);

        for (std::size_t l = depth_; l-- > 0;) {
            // dW_l in fixed blocks of its inputs; delta_{l-1} per tile; the weights of layer
            // l - 1 for the next step, where they were not kept.
            const std::size_t blocks = (fan_in(l) + kGradRows - 1) / kGradRows;
            const std::size_t tiles = l > 0 ? tiles_.size() : 0;
            if (l > 1) add_weight_draws(l - 1);
            T* dw = weight_grads_[chunks_ > 1 ? l : 0].get();
            reset_thread_hist(spec_.grad_bins);
            parallel_with_draws(blocks + tiles, [&](std::size_t me, std::size_t job) {
                if (job < blocks) {
                    weight_grad_block(l, job, dw, c);
                } else {
                    back_tile(me, l, job - blocks);
                }
            });
            if (l > 0) merge_grad_tiles(l - 1);
            if (chunks_ == 1) reduce_weight_grad(l, dw);
        }
    }

    /// The statistics of tile t of delta_l (at `delta`), binned where the range is known.
    void grad_tile(std::size_t me, std::size_t t, std::size_t l, const T* delta) {
        const std::size_t rows = tiles_[t].rows;
        GradTileStats& ts = grad_tile_stats_[t];
        ts.reset(fan_out(l));
        ts.add_rows(delta, rows);
        if (grad_range_known_) ts.bin(delta, rows * fan_out(l), grad_hist_, thread_hist_[me]);
    }

    void merge_grad_tiles(std::size_t l) {
        for (std::size_t t = 0; t < tiles_.size(); ++t) grad_stats_[l].merge(grad_tile_stats_[t]);
        if (grad_range_known_)
            for (const auto& counts : thread_hist_) grad_stats_[l].merge(counts);
        if (first_tiles_) first_tile_max_[l] = grad_tile_stats_[0].max_abs();
    }

    /// Tile t of delta_{l-1} = (delta_l W_l^T) * act'(H_{l-1}), in place of act'(H_{l-1}).
    void back_tile(std::size_t me, std::size_t l, std::size_t t) {
        const std::size_t n_in = fan_in(l), n_out = fan_out(l);
        const Tile& tile = tiles_[t];
        std::vector<T>& product = scratch_[me];
        product.resize(tile.rows * n_in);
        gemm(Op::trans_b, static_cast<int>(tile.rows), static_cast<int>(n_in),
             static_cast<int>(n_out), derivs_[l].get() + tile.begin * n_out,
             static_cast<int>(n_out), weights_of(l), static_cast<int>(n_out), 0.0,
             product.data(), static_cast<int>(n_in));
        T* delta = derivs_[l - 1].get() + tile.begin * n_in;
        const T* p = product.data();
        for (std::size_t i = 0; i < tile.rows * n_in; ++i) delta[i] = p[i] * delta[i];
        grad_tile(me, t, l - 1, delta);
    }

    /// Rows [b * kGradRows, ...) of dW_l += X_l^T delta_l, tile after tile in order (the
    /// first tile of the run overwrites).
    void weight_grad_block(std::size_t l, std::size_t b, T* dw, std::uint64_t c) {
        const std::size_t n_in = fan_in(l), n_out = fan_out(l);
        const std::size_t i0 = b * kGradRows, rows = std::min(kGradRows, n_in - i0);
        const T* x = input_of(l);
        const T* delta = derivs_[l].get();
        for (std::size_t t = 0; t < tiles_.size(); ++t) {
            const Tile& tile = tiles_[t];
            const double beta = (c == 0 && t == 0) ? 0.0 : 1.0;
            gemm(Op::trans_a, static_cast<int>(rows), static_cast<int>(n_out),
                 static_cast<int>(tile.rows), x + tile.begin * n_in + i0, static_cast<int>(n_in),
                 delta + tile.begin * n_out, static_cast<int>(n_out), beta, dw + i0 * n_out,
                 static_cast<int>(n_out));
        }
    }

    void reduce_weight_grad(std::size_t l, const T* dw) {
        double sum_sq = 0.0;
        weight_grad_std_[l] = two_pass_std(dw, fan_in(l) * fan_out(l), &sum_sq);
        weight_grad_norm_[l] = std::sqrt(sum_sq);
    }

    /// The first chunk's gradients, binned once their range is known (grad_range_rule).
    void bin_first_chunk() {
        double max_abs = 0.0;
        for (double m : first_tile_max_) max_abs = std::max(max_abs, m);
        const double r = grad_range_rule(max_abs);
        set_grad_range(-r, r);
        for (std::size_t l = 0; l < depth_; ++l) {
            reset_thread_hist(spec_.grad_bins);
            parallel(tiles_.size(), [&](std::size_t me, std::size_t t) {
                const Tile& tile = tiles_[t];
                grad_tile_stats_[t].bin(derivs_[l].get() + tile.begin * fan_out(l),
                                        tile.rows * fan_out(l), grad_hist_, thread_hist_[me]);
            });
            for (const auto& counts : thread_hist_) grad_stats_[l].merge(counts);
        }
    }

    const RunSpec& spec_;
    const std::size_t depth_;
    const std::uint64_t n_;
    const std::size_t chunk_;
    const std::uint64_t chunks_;
    const bool grads_;
    Watch watch_;
    Team team_;  // joined when the run ends, normally or by an exception

    // The chunk in flight: rows [r0_, r0_ + rows_) in tiles.
    std::uint64_t r0_ = 0;
    std::size_t rows_ = 0;
    std::vector<Tile> tiles_;
    bool first_tiles_ = false;

    Buffer<T> ping_, pong_;
    std::vector<Buffer<T>> inputs_, derivs_;  // with gradients: X_l and act'(H_l), then delta_l

    bool cache_weights_ = false;
    std::vector<Buffer<T>> weights_;
    std::vector<bool> weights_ready_;
    Buffer<T> rotating_[2];
    std::size_t rotating_holds_[2] = {kNone, kNone};
    std::vector<std::vector<T>> biases_;
    std::vector<DrawJob<T>> draws_;

    HistSpec hist_{}, grad_hist_{};
    bool grad_range_known_ = false;
    std::vector<LayerStats> stats_;
    std::vector<TileStats> tile_stats_;
    std::vector<GradLayerStats> grad_stats_;
    std::vector<GradTileStats> grad_tile_stats_;
    std::vector<HistCounts> thread_hist_;
    std::vector<std::vector<T>> scratch_, deriv_scratch_, pre_scratch_;

    std::vector<Buffer<T>> weight_grads_;
    std::vector<double> first_tile_max_, weight_std_, weight_grad_std_, weight_grad_norm_;
};

}  // namespace detail

/// Runs the experiment: per layer, the accumulators of stats.hpp over all samples.
template <class T>
std::vector<LayerResult> propagate(const RunSpec& spec, const InterruptCheck& check) {
    detail::check_spec(spec);
    prepare_blas();
    return detail::Propagation<T>(spec, check).run();
}

}  // namespace INITSCOPE_ISA_NAMESPACE
}  // namespace initscope
