// The kernel's interface, the same for every instruction set: what a run is (RunSpec), what
// it returns (LayerResult), the constants initscope.plan mirrors, and the table of entry
// points that each build of the hot code fills (cpp/src/kernels.cpp, one build per
// instruction set, chosen once at run time by cpp/src/dispatch.cpp).
//
// This header holds types and constants only, no code that depends on the instruction set:
// it is compiled into every build, and the linker keeps one copy of anything inline here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace initscope {

/// Tiles are the samples [t * kTileRows, min(n, (t + 1) * kTileRows)), one GEMM call each
/// (per block of columns, below): every call's shape depends on the number of samples and
/// the layer alone (never on the chunk or the threads), so any BLAS kernel computes every
/// sample alike. 240 rows: large enough for the
/// GEMM to run near its peak, small enough to stay in L2/L3 and to balance threads.
constexpr std::size_t kTileRows = 240;
/// Wide layers (fan_in * fan_out >= kWideWeights) multiply kWideTiles tiles per GEMM call:
/// each call packs the whole weight matrix again, which 240 rows amortise poorly once it no
/// longer fits the caches (240-row calls run at 0.90 of one call's rate at 4096 x 4096 on an
/// AMD Zen 3, 960-row calls at 0.98). The statistics stay per tile; chunks hold whole groups.
constexpr std::size_t kWideTiles = 4;
constexpr std::size_t kWideWeights = std::size_t(1) << 23;

/// Tiles per GEMM call of a layer: fixed by the network alone.
constexpr std::size_t gemm_tiles(std::size_t fan_in, std::size_t fan_out) {
    return fan_in * fan_out >= kWideWeights ? kWideTiles : 1;
}
/// Layers at least 2 * kBlockColumns wide multiply, and gather their statistics, in blocks
/// of about kBlockColumns columns; so do layers with fewer than kMinJobs GEMM calls of rows
/// (few samples), in up to kMinJobs / calls blocks of kMinBlockColumns columns or more: then
/// every thread has work. The blocks are fixed by the layer and the number of samples alone
/// (as tiles are), and per-column statistics merge exactly, so the results do not depend on
/// the threads or the chunks.
constexpr std::size_t kBlockColumns = 1024;
constexpr std::size_t kMinJobs = 4;
constexpr std::size_t kMinBlockColumns = 128;
/// Blocks of a layer fan_out wide whose samples make `calls` GEMM calls of rows.
constexpr std::size_t column_blocks(std::size_t fan_out, std::size_t calls) {
    const std::size_t wide = fan_out / kBlockColumns;
    const std::size_t wanted = (kMinJobs + calls - 1) / calls;
    const std::size_t most = fan_out / kMinBlockColumns;
    const std::size_t few = wanted < most ? wanted : most;
    const std::size_t blocks = wide > few ? wide : few;
    return blocks > 1 ? blocks : 1;
}
/// The first column of block b of `blocks` of a layer fan_out wide (fan_out for b = blocks):
/// a multiple of 8, so that every block starts on a cache line.
constexpr std::size_t block_column(std::size_t b, std::size_t blocks, std::size_t fan_out) {
    return b == blocks ? fan_out : b * fan_out / blocks / 8 * 8;
}
/// Rows of a layer's inputs per weight-gradient job: a fixed partition of dW (never the
/// thread count's), so that every GEMM call's shape is fixed by the network alone.
constexpr std::size_t kGradRows = 128;
constexpr std::size_t kSegment = std::size_t(1) << 16;  // elements drawn per parallel job
/// Drawn weights of all layers are kept between chunks up to this many bytes, else redrawn.
constexpr std::size_t kWeightCacheBytes = std::size_t(128) << 20;
/// Interleaved copies of each thread's histogram (stats.hpp, HistCounts).
constexpr int kHistCopies = 8;

/// The streams of initscope.random.
enum Stream : std::uint32_t { kInputs = 0, kWeights = 1, kBiases = 2, kAux = 3, kGrads = 4 };

enum class Draw { uniform, normal };

/// Kernel codes, the order of initscope.activations.ACTIVATIONS.
enum class ActivationCode : int {
    linear = 0,
    tanh = 1,
    relu = 2,
    leaky_relu = 3,
    sigmoid = 4,
    softplus = 5,
    elu = 6,
    selu = 7,
    gelu = 8,
    gelu_tanh = 9,
    silu = 10,
};
constexpr int kActivationCount = 11;

/// The activation code as an enum, checked.
inline ActivationCode activation_code(int code) {
    if (code < 0 || code >= kActivationCount)
        throw std::invalid_argument("activation code must be in [0, " +
                                    std::to_string(kActivationCount) + "), got " +
                                    std::to_string(code));
    return static_cast<ActivationCode>(code);
}

enum class WeightSource : int { given = 0, normal = 1, uniform = 2 };

/// One dense layer, H = X W (+ b), A = act(H).
struct LayerSpec {
    std::size_t fan_in = 0, fan_out = 0;
    ActivationCode activation = ActivationCode::linear;
    double param = 0.0;
    bool bounded = false;  // has a saturation range [sat_low, sat_high]
    double sat_low = 0.0, sat_high = 0.0;
    WeightSource source = WeightSource::given;
    double scale = 1.0, shift = 0.0;  // drawn weights: value * scale + shift (schemes.draw)
    const void* weights = nullptr;    // given: (fan_in, fan_out), row-major, the run's dtype
    double bias_std = 0.0;            // > 0: b = bias_std * z from the BIASES stream
    void* kept = nullptr;             // non-null: (n_samples, fan_out) for the activations
};

/// A checked experiment (initscope.plan.Plan in C++ terms).
struct RunSpec {
    std::uint64_t n_samples = 0;
    std::size_t input_dim = 0;
    std::uint64_t seed = 0;
    const void* inputs = nullptr;  // (n_samples, input_dim), or null: drawn from INPUTS
    std::vector<LayerSpec> layers;
    int bins = 30;
    double hist_low = -1.0, hist_high = 1.0;
    int threads = 1;
    std::size_t chunk_size = 0;  // a multiple of kTileRows, or >= n_samples
    std::size_t weight_cache_bytes = kWeightCacheBytes;  // drawn weights kept up to this
    /// Back-propagates an output gradient dL/dA_L: output_grad ((n_samples, widths[-1])), or
    /// N(0, 1) from the GRADS stream when null.
    bool gradients = false;
    const void* output_grad = nullptr;
    int grad_bins = 30;
    /// The gradients' histogram range; when not given, (-R, R) from the first tile
    /// (grad_range_rule in propagate.hpp).
    bool grad_range_given = false;
    double grad_low = -1.0, grad_high = 1.0;
};

/// What one layer's back-propagated gradients accumulated: delta = dL/dH per unit, and
/// the weight gradient dL/dW = X^T delta summed over all samples.
struct GradResult {
    std::vector<double> unit_mean, unit_m2;
    double min = 0.0, max = 0.0;  // over finite values; NaN where there were none
    std::vector<std::int64_t> hist;
    std::int64_t below = 0, above = 0, nonfinite = 0;
    double weight_grad_std = 0.0, weight_grad_norm = 0.0, weight_std = 0.0;
    double hist_low = 0.0, hist_high = 0.0;  // the range used
};

/// What one layer accumulated over all samples (the fields of initscope.result.RawStats).
struct LayerResult {
    std::vector<double> unit_mean, unit_m2, pre_unit_mean, pre_unit_m2;
    double min = 0.0, max = 0.0;  // over finite values; NaN where there were none
    std::vector<std::int64_t> hist;
    std::int64_t below = 0, above = 0, zeros = 0, saturated = 0, nonfinite = 0, pre_nonfinite = 0;
    double deriv_sq_sum = 0.0;  // sum of act'(H)^2 over all entries
    GradResult grad;            // filled when RunSpec::gradients
};

/// Thrown when the interrupt check asks the run to stop.
struct Interrupted : std::exception {
    const char* what() const noexcept override { return "interrupted"; }
};

/// Asked between tiles, layers and chunks, at most every few milliseconds, from the thread
/// that started the run; returning true stops the run.
using InterruptCheck = std::function<bool()>;

/// The entry points of one build for one float type.
template <class T>
struct TypedKernels {
    std::vector<LayerResult> (*propagate)(const RunSpec& spec, const InterruptCheck& check);
    /// Elements start .. start + count - 1 of (seed, stream, layer) into out.
    void (*generate)(Draw kind, std::uint64_t seed, std::uint32_t stream, std::uint32_t layer,
                     std::uint64_t start, std::size_t count, T* out);
    /// out[i] = activation(in[i]); in and out do not overlap.
    void (*activate)(ActivationCode code, double param, const T* in, T* out, std::size_t n);
    /// out[i] = activation'(in[i]); in and out do not overlap.
    void (*derive)(ActivationCode code, double param, const T* in, T* out, std::size_t n);
};

/// One build of the hot code: its instruction set and its entry points.
struct Kernels {
    const char* isa;  // "v2", "v3", "v4" (x86-64 levels), "native" or "baseline"
    TypedKernels<float> f32;
    TypedKernels<double> f64;
    void (*philox4x32)(std::uint32_t (&counter)[4], std::uint32_t k0, std::uint32_t k1);

    template <class T>
    const TypedKernels<T>& typed() const {
        if constexpr (sizeof(T) == 4) {
            return f32;
        } else {
            return f64;
        }
    }
};

/// The build in use: the one named by the environment variable INITSCOPE_ISA if set, else
/// the widest this CPU runs. Chosen at the first call (std::invalid_argument if
/// INITSCOPE_ISA names a build that is missing or that this CPU cannot run).
const Kernels& kernels();

/// Switches to the build `isa` for the runs that start afterwards (std::invalid_argument if
/// it is missing or this CPU cannot run it).
void select_isa(const std::string& isa);

/// The builds in this module, narrowest first.
std::vector<std::string> compiled_isas();

/// The builds in this module that this CPU runs, narrowest first.
std::vector<std::string> supported_isas();

}  // namespace initscope
