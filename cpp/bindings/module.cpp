// initscope._core: the Python face of the C++ kernel. The only file that knows Python:
// it checks and converts arguments holding the GIL, then runs the core without it.
#include <cblas.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "initscope/kernel.hpp"

namespace py = pybind11;
using namespace initscope;

namespace {

#ifndef INITSCOPE_CXX_FLAGS
#define INITSCOPE_CXX_FLAGS ""
#endif
#ifndef INITSCOPE_VERSION
#define INITSCOPE_VERSION "unknown"
#endif

/// True for float32, false for float64; ValueError for anything else.
bool is_float32(const py::object& dtype) {
    const py::dtype dt = py::dtype::from_args(dtype);
    if (dt.kind() == 'f' && dt.itemsize() == 4) return true;
    if (dt.kind() == 'f' && dt.itemsize() == 8) return false;
    throw py::value_error("dtype must be float32 or float64, got " +
                          py::str(py::object(dt)).cast<std::string>());
}

/// A layer as Python describes it (initscope.plan.Layer in kernel terms): typed fields, so
/// that a misspelt one is an error; weights are an array until a run converts them.
struct PyLayerSpec {
    std::size_t fan_in = 0, fan_out = 0;
    int activation = 0;  // kernel code, ACTIVATIONS order
    double param = 0.0;
    std::optional<std::pair<double, double>> saturation;
    WeightSource source = WeightSource::given;
    double scale = 1.0, shift = 0.0;
    py::object weights = py::none();
    double bias_std = 0.0;
};

/// What a run returns: the fields of initscope.result.RawStats, read-only.
struct PyGradStats {
    py::object unit_mean, unit_m2;  // see per_unit
    py::array_t<double> min, max, weight_grad_std, weight_grad_norm, weight_std;
    py::array_t<std::int64_t> hist, below, above, nonfinite;
    std::pair<double, double> hist_range;
};

struct PyRawStats {
    py::object unit_mean, unit_m2, pre_unit_mean, pre_unit_m2;  // see per_unit
    py::array_t<double> min, max, deriv_sq_sum;
    py::array_t<std::int64_t> hist, below, above, zeros, saturated, nonfinite, pre_nonfinite;
    py::object activations = py::none();
    py::object grads = py::none();  // a PyGradStats when the run had gradients
};

template <class T>
py::array_t<T> draw(Draw kind, std::uint64_t seed, std::uint32_t stream, std::uint32_t layer,
                    std::uint64_t start, std::size_t count) {
    const auto generate = kernels().typed<T>().generate;
    py::array_t<T> out(static_cast<py::ssize_t>(count));
    T* data = out.mutable_data();
    {
        py::gil_scoped_release release;  // safe: writes only into `out`, owned by this call
        generate(kind, seed, stream, layer, start, count, data);
    }
    return out;
}

py::array draw_any(Draw kind, std::uint64_t seed, std::uint32_t stream, std::uint32_t layer,
                   std::uint64_t start, std::size_t count, const py::object& dtype) {
    if (is_float32(dtype)) return draw<float>(kind, seed, stream, layer, start, count);
    return draw<double>(kind, seed, stream, layer, start, count);
}

/// `apply` (an activation or its derivative, of TypedKernels<T>) of the array x.
template <class T>
py::array_t<T> map_array(int code, double param, const py::array& x, bool derivative) {
    const auto in = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(x);
    if (!in) throw py::value_error("x must be convertible to an array of floats");
    py::array_t<T> out(in.request().shape);
    const ActivationCode act = activation_code(code);
    const auto apply =
        derivative ? kernels().typed<T>().derive : kernels().typed<T>().activate;
    const T* src = in.data();
    T* dst = out.mutable_data();
    const std::size_t size = static_cast<std::size_t>(in.size());
    {
        py::gil_scoped_release release;  // safe: reads `in` and writes `out`, both held here
        apply(act, param, src, dst, size);
    }
    return out;
}

py::tuple philox(const std::array<std::uint32_t, 4>& counter,
                 const std::array<std::uint32_t, 2>& key) {
    std::uint32_t words[4] = {counter[0], counter[1], counter[2], counter[3]};
    kernels().philox4x32(words, key[0], key[1]);
    return py::make_tuple(words[0], words[1], words[2], words[3]);
}

py::array_t<double> vector_array(const std::vector<double>& values) {
    py::array_t<double> out(static_cast<py::ssize_t>(values.size()));
    std::copy(values.begin(), values.end(), out.mutable_data());
    return out;
}

/// One float64 figure per layer, picked from each layer's result.
template <class Pick>
py::array_t<double> per_layer(const std::vector<LayerResult>& results, Pick pick) {
    std::vector<double> values;
    for (const auto& r : results) values.push_back(pick(r));
    return vector_array(values);
}

/// A per-unit accumulator of every layer, picked from each layer's result: one (depth,
/// width) array when every layer has the same width (a sweep finishes many runs at once
/// from these), else a list of one array per layer.
template <class Pick>
py::object per_unit(const std::vector<LayerResult>& results, Pick pick) {
    const std::size_t width = results.empty() ? 0 : pick(results.front()).size();
    bool uniform = !results.empty();
    for (const auto& r : results) uniform = uniform && pick(r).size() == width;
    if (!uniform) {
        py::list layers;
        for (const auto& r : results) layers.append(vector_array(pick(r)));
        return std::move(layers);
    }
    py::array_t<double> out(
        {static_cast<py::ssize_t>(results.size()), static_cast<py::ssize_t>(width)});
    double* data = out.mutable_data();
    for (const auto& r : results) data = std::copy(pick(r).begin(), pick(r).end(), data);
    return std::move(out);
}

/// One int64 count per layer, picked from each layer's result.
template <class Pick>
py::array_t<std::int64_t> per_layer_count(const std::vector<LayerResult>& results, Pick pick) {
    py::array_t<std::int64_t> out(static_cast<py::ssize_t>(results.size()));
    auto view = out.mutable_unchecked<1>();
    for (std::size_t l = 0; l < results.size(); ++l)
        view(static_cast<py::ssize_t>(l)) = pick(results[l]);
    return out;
}

/// The (depth, bins) histogram counts of every layer.
template <class Pick>
py::array_t<std::int64_t> histograms(const std::vector<LayerResult>& results, int bins,
                                     Pick pick) {
    const auto depth = static_cast<py::ssize_t>(results.size());
    py::array_t<std::int64_t> out({depth, static_cast<py::ssize_t>(bins)});
    auto view = out.mutable_unchecked<2>();
    for (py::ssize_t l = 0; l < depth; ++l) {
        const std::vector<std::int64_t>& hist = pick(results[static_cast<std::size_t>(l)]);
        for (py::ssize_t b = 0; b < bins; ++b) view(l, b) = hist[static_cast<std::size_t>(b)];
    }
    return out;
}

PyGradStats grad_stats(const std::vector<LayerResult>& results, int bins) {
    PyGradStats out;
    out.unit_mean = per_unit(results, [](const LayerResult& r) -> const auto& {
        return r.grad.unit_mean;
    });
    out.unit_m2 = per_unit(results, [](const LayerResult& r) -> const auto& {
        return r.grad.unit_m2;
    });
    out.min = per_layer(results, [](const LayerResult& r) { return r.grad.min; });
    out.max = per_layer(results, [](const LayerResult& r) { return r.grad.max; });
    out.weight_grad_std =
        per_layer(results, [](const LayerResult& r) { return r.grad.weight_grad_std; });
    out.weight_grad_norm =
        per_layer(results, [](const LayerResult& r) { return r.grad.weight_grad_norm; });
    out.weight_std = per_layer(results, [](const LayerResult& r) { return r.grad.weight_std; });
    out.hist = histograms(results, bins, [](const LayerResult& r) -> const auto& {
        return r.grad.hist;
    });
    out.below = per_layer_count(results, [](const LayerResult& r) { return r.grad.below; });
    out.above = per_layer_count(results, [](const LayerResult& r) { return r.grad.above; });
    out.nonfinite =
        per_layer_count(results, [](const LayerResult& r) { return r.grad.nonfinite; });
    out.hist_range = {results.front().grad.hist_low, results.front().grad.hist_high};
    return out;
}

/// A run's per-layer results as its RawStats.
PyRawStats raw_stats(const std::vector<LayerResult>& results, int bins, bool gradients,
                     int grad_bins) {
    PyRawStats out;
    out.unit_mean =
        per_unit(results, [](const LayerResult& r) -> const auto& { return r.unit_mean; });
    out.unit_m2 = per_unit(results, [](const LayerResult& r) -> const auto& { return r.unit_m2; });
    out.pre_unit_mean =
        per_unit(results, [](const LayerResult& r) -> const auto& { return r.pre_unit_mean; });
    out.pre_unit_m2 =
        per_unit(results, [](const LayerResult& r) -> const auto& { return r.pre_unit_m2; });
    out.min = per_layer(results, [](const LayerResult& r) { return r.min; });
    out.max = per_layer(results, [](const LayerResult& r) { return r.max; });
    out.deriv_sq_sum = per_layer(results, [](const LayerResult& r) { return r.deriv_sq_sum; });
    out.hist = histograms(results, bins, [](const LayerResult& r) -> const auto& { return r.hist; });
    out.below = per_layer_count(results, [](const LayerResult& r) { return r.below; });
    out.above = per_layer_count(results, [](const LayerResult& r) { return r.above; });
    out.zeros = per_layer_count(results, [](const LayerResult& r) { return r.zeros; });
    out.saturated = per_layer_count(results, [](const LayerResult& r) { return r.saturated; });
    out.nonfinite = per_layer_count(results, [](const LayerResult& r) { return r.nonfinite; });
    out.pre_nonfinite =
        per_layer_count(results, [](const LayerResult& r) { return r.pre_nonfinite; });
    if (gradients) out.grads = py::cast(grad_stats(results, grad_bins));
    return out;
}

/// Runs the checked plan once per seed of `seeds` (the arguments converted once), and
/// returns each run's RawStats.
template <class T>
py::list run(std::uint64_t n_samples, std::size_t input_dim,
             const std::vector<std::uint64_t>& seeds, const py::object& inputs,
             const std::vector<PyLayerSpec>& layers, int bins, double hist_low, double hist_high,
             int threads, std::size_t chunk_size, bool keep_activations, bool gradients,
             const py::object& output_grad, int grad_bins,
             std::optional<std::pair<double, double>> grad_range, std::size_t weight_cache_bytes) {
    using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;
    RunSpec spec;
    spec.n_samples = n_samples;
    spec.input_dim = input_dim;
    spec.bins = bins;
    spec.hist_low = hist_low;
    spec.hist_high = hist_high;
    spec.threads = threads;
    spec.chunk_size = chunk_size;
    spec.gradients = gradients;
    spec.grad_bins = grad_bins;
    spec.weight_cache_bytes = weight_cache_bytes;
    if (grad_range) {
        spec.grad_range_given = true;
        spec.grad_low = grad_range->first;
        spec.grad_high = grad_range->second;
    }

    std::vector<py::array> alive;  // every array the core reads or writes, held until it ends
    if (!inputs.is_none()) {
        Array data = Array::ensure(inputs);
        if (!data || data.ndim() != 2 || static_cast<std::uint64_t>(data.shape(0)) != n_samples ||
            static_cast<std::size_t>(data.shape(1)) != input_dim)
            throw py::value_error("inputs must be an array of shape (n_samples, input_dim)");
        spec.inputs = data.data();
        alive.push_back(data);
    }
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const PyLayerSpec& given = layers[l];
        const std::string name = "layer " + std::to_string(l);
        LayerSpec layer;
        layer.fan_in = given.fan_in;
        layer.fan_out = given.fan_out;
        layer.activation = activation_code(given.activation);
        layer.param = given.param;
        if (given.saturation) {
            layer.bounded = true;
            layer.sat_low = given.saturation->first;
            layer.sat_high = given.saturation->second;
        }
        layer.source = given.source;
        layer.scale = given.scale;
        layer.shift = given.shift;
        layer.bias_std = given.bias_std;
        if (given.source == WeightSource::given) {
            if (given.weights.is_none())
                throw py::value_error(name + ": source given needs weights");
            Array w = Array::ensure(given.weights);
            if (!w || w.ndim() != 2 || static_cast<std::size_t>(w.shape(0)) != layer.fan_in ||
                static_cast<std::size_t>(w.shape(1)) != layer.fan_out)
                throw py::value_error(name +
                                      ": weights must be an array of shape (fan_in, fan_out)");
            layer.weights = w.data();
            alive.push_back(w);
        } else if (!given.weights.is_none()) {
            throw py::value_error(name + ": weights are for source given only");
        }
        spec.layers.push_back(layer);
    }
    if (!output_grad.is_none()) {
        Array data = Array::ensure(output_grad);
        const std::size_t width = layers.empty() ? 0 : layers.back().fan_out;
        if (!gradients) throw py::value_error("output_grad needs gradients=True");
        if (!data || data.ndim() != 2 || static_cast<std::uint64_t>(data.shape(0)) != n_samples ||
            static_cast<std::size_t>(data.shape(1)) != width)
            throw py::value_error("output_grad must be an array of shape (n_samples, widths[-1])");
        spec.output_grad = data.data();
        alive.push_back(data);
    }
    const auto propagate = kernels().typed<T>().propagate;

    // Runs on the thread that released the GIL; it takes the GIL back only to let Python
    // handle pending signals (Ctrl-C sets KeyboardInterrupt and stops the run).
    const InterruptCheck check = [] {
        py::gil_scoped_acquire acquire;
        return PyErr_CheckSignals() != 0;
    };
    py::list runs;
    for (const std::uint64_t seed : seeds) {
        spec.seed = seed;
        py::list kept;  // this run's activations, one (n_samples, width) array per layer
        if (keep_activations)
            for (LayerSpec& layer : spec.layers) {
                py::array_t<T> out({static_cast<py::ssize_t>(n_samples),
                                    static_cast<py::ssize_t>(layer.fan_out)});
                layer.kept = out.mutable_data();
                kept.append(out);
            }
        std::vector<LayerResult> results;
        try {
            py::gil_scoped_release release;  // safe: the core reads and writes only the buffers
                                             // of arrays held in `alive` and `kept`, and its own
            results = propagate(spec, check);
        } catch (const Interrupted&) {
            throw py::error_already_set();  // the KeyboardInterrupt PyErr_CheckSignals raised
        }
        PyRawStats out = raw_stats(results, bins, gradients, grad_bins);
        if (keep_activations) out.activations = kept;
        runs.append(std::move(out));
    }
    return runs;
}

void bind_testing(py::module_& m) {
    m.def(
        "normal",
        [](std::uint64_t seed, std::uint32_t stream, std::uint32_t layer, std::uint64_t start,
           std::size_t count, const py::object& dtype) {
            return draw_any(Draw::normal, seed, stream, layer, start, count, dtype);
        },
        py::arg("seed"), py::arg("stream"), py::arg("layer"), py::arg("start"), py::arg("count"),
        py::arg("dtype") = "float64",
        "Standard normals start .. start + count - 1 of a stream (initscope.random.normal).");
    m.def(
        "uniform",
        [](std::uint64_t seed, std::uint32_t stream, std::uint32_t layer, std::uint64_t start,
           std::size_t count, const py::object& dtype) {
            return draw_any(Draw::uniform, seed, stream, layer, start, count, dtype);
        },
        py::arg("seed"), py::arg("stream"), py::arg("layer"), py::arg("start"), py::arg("count"),
        py::arg("dtype") = "float64",
        "Uniforms on [0, 1), elements start .. start + count - 1 (initscope.random.uniform).");
    m.def("philox4x32", &philox, py::arg("counter"), py::arg("key"),
          "One Philox4x32-10 block: the four output words of a counter and a key.");
    for (const bool derivative : {false, true}) {
        m.def(
            derivative ? "derive" : "activate",
            [derivative](int code, double param, const py::array& x) -> py::array {
                if (py::dtype(x.dtype()).kind() == 'f' && x.itemsize() == 4)
                    return map_array<float>(code, param, x, derivative);
                return map_array<double>(code, param, x, derivative);
            },
            py::arg("code"), py::arg("param"), py::arg("x"),
            derivative ? "The derivative of the activation of kernel code `code` at x (float32 "
                         "stays float32)."
                       : "The activation of kernel code `code` applied to x (float32 stays "
                         "float32).");
    }
    m.def("set_isa", &select_isa, py::arg("isa"),
          "Run the build for instruction set `isa` (one of build_info()['supported_isas']) "
          "from now on.");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "initscope's C++ kernel: counter-based generator, activations, fused layer loop";
    m.attr("__version__") = INITSCOPE_VERSION;
    m.attr("TILE_ROWS") = kTileRows;
    m.attr("WIDE_TILES") = kWideTiles;
    m.attr("WIDE_WEIGHTS") = kWideWeights;
    m.attr("BLOCK_COLUMNS") = kBlockColumns;
    m.attr("MIN_JOBS") = kMinJobs;
    m.attr("MIN_BLOCK_COLUMNS") = kMinBlockColumns;
    m.attr("GRAD_ROWS") = kGradRows;
    m.attr("SEGMENT") = kSegment;
    m.attr("WEIGHT_CACHE_BYTES") = kWeightCacheBytes;
    m.attr("HIST_COPIES") = kHistCopies;

    py::enum_<WeightSource>(m, "WeightSource", "Where a layer's weights come from.")
        .value("given", WeightSource::given, "an array (LayerSpec.weights)")
        .value("normal", WeightSource::normal, "normals of the WEIGHTS stream, z * scale + shift")
        .value("uniform", WeightSource::uniform,
               "uniforms of the WEIGHTS stream, u * scale + shift");

    py::class_<PyLayerSpec>(m, "LayerSpec", "One dense layer of a run, in kernel terms.")
        .def(py::init([](std::size_t fan_in, std::size_t fan_out, int activation, double param,
                         std::optional<std::pair<double, double>> saturation, WeightSource source,
                         double scale, double shift, py::object weights, double bias_std) {
                 PyLayerSpec layer;
                 layer.fan_in = fan_in;
                 layer.fan_out = fan_out;
                 layer.activation = activation;
                 layer.param = param;
                 layer.saturation = saturation;
                 layer.source = source;
                 layer.scale = scale;
                 layer.shift = shift;
                 layer.weights = std::move(weights);
                 layer.bias_std = bias_std;
                 return layer;
             }),
             py::kw_only(), py::arg("fan_in"), py::arg("fan_out"), py::arg("activation") = 0,
             py::arg("param") = 0.0, py::arg("saturation") = py::none(),
             py::arg("source") = WeightSource::given, py::arg("scale") = 1.0,
             py::arg("shift") = 0.0, py::arg("weights") = py::none(), py::arg("bias_std") = 0.0)
        .def_readwrite("fan_in", &PyLayerSpec::fan_in)
        .def_readwrite("fan_out", &PyLayerSpec::fan_out)
        .def_readwrite("activation", &PyLayerSpec::activation)
        .def_readwrite("param", &PyLayerSpec::param)
        .def_readwrite("saturation", &PyLayerSpec::saturation)
        .def_readwrite("source", &PyLayerSpec::source)
        .def_readwrite("scale", &PyLayerSpec::scale)
        .def_readwrite("shift", &PyLayerSpec::shift)
        .def_readwrite("weights", &PyLayerSpec::weights)
        .def_readwrite("bias_std", &PyLayerSpec::bias_std);

    py::class_<PyRawStats>(m, "RawStats", "What a run returns (initscope.result.RawStats).")
        .def_readonly("unit_mean", &PyRawStats::unit_mean)
        .def_readonly("unit_m2", &PyRawStats::unit_m2)
        .def_readonly("pre_unit_mean", &PyRawStats::pre_unit_mean)
        .def_readonly("pre_unit_m2", &PyRawStats::pre_unit_m2)
        .def_readonly("min", &PyRawStats::min)
        .def_readonly("max", &PyRawStats::max)
        .def_readonly("hist", &PyRawStats::hist)
        .def_readonly("below", &PyRawStats::below)
        .def_readonly("above", &PyRawStats::above)
        .def_readonly("zeros", &PyRawStats::zeros)
        .def_readonly("saturated", &PyRawStats::saturated)
        .def_readonly("nonfinite", &PyRawStats::nonfinite)
        .def_readonly("pre_nonfinite", &PyRawStats::pre_nonfinite)
        .def_readonly("deriv_sq_sum", &PyRawStats::deriv_sq_sum)
        .def_readonly("activations", &PyRawStats::activations)
        .def_readonly("grads", &PyRawStats::grads);

    py::class_<PyGradStats>(m, "GradStats",
                            "What a run with gradients returns (initscope.result.GradRaw).")
        .def_readonly("unit_mean", &PyGradStats::unit_mean)
        .def_readonly("unit_m2", &PyGradStats::unit_m2)
        .def_readonly("min", &PyGradStats::min)
        .def_readonly("max", &PyGradStats::max)
        .def_readonly("hist", &PyGradStats::hist)
        .def_readonly("below", &PyGradStats::below)
        .def_readonly("above", &PyGradStats::above)
        .def_readonly("nonfinite", &PyGradStats::nonfinite)
        .def_readonly("hist_range", &PyGradStats::hist_range)
        .def_readonly("weight_grad_std", &PyGradStats::weight_grad_std)
        .def_readonly("weight_grad_norm", &PyGradStats::weight_grad_norm)
        .def_readonly("weight_std", &PyGradStats::weight_std);

    m.def(
        "propagate",
        [](std::uint64_t n_samples, std::size_t input_dim,
           const std::vector<std::uint64_t>& seeds, const py::object& dtype,
           const py::object& inputs, const std::vector<PyLayerSpec>& layers, int bins,
           double hist_low, double hist_high, int threads, std::size_t chunk_size,
           bool keep_activations, bool gradients, const py::object& output_grad, int grad_bins,
           std::optional<std::pair<double, double>> grad_range, std::size_t weight_cache_bytes) {
            if (is_float32(dtype))
                return run<float>(n_samples, input_dim, seeds, inputs, layers, bins, hist_low,
                                  hist_high, threads, chunk_size, keep_activations, gradients,
                                  output_grad, grad_bins, grad_range, weight_cache_bytes);
            return run<double>(n_samples, input_dim, seeds, inputs, layers, bins, hist_low,
                               hist_high, threads, chunk_size, keep_activations, gradients,
                               output_grad, grad_bins, grad_range, weight_cache_bytes);
        },
        py::kw_only(), py::arg("n_samples"), py::arg("input_dim"), py::arg("seeds"),
        py::arg("dtype"), py::arg("inputs"), py::arg("layers"), py::arg("bins"),
        py::arg("hist_low"), py::arg("hist_high"), py::arg("threads"), py::arg("chunk_size"),
        py::arg("keep_activations"), py::arg("gradients") = false,
        py::arg("output_grad") = py::none(), py::arg("grad_bins") = 30,
        py::arg("grad_range") = py::none(), py::arg("weight_cache_bytes") = kWeightCacheBytes,
        "Run a checked plan once per seed; returns each run's RawStats.");

    m.def(
        "blas_info",
        [] {
            py::dict info;
            info["openblas_config"] = std::string(scipy_openblas_get_config());
            info["openblas_corename"] = std::string(scipy_openblas_get_corename());
            return info;
        },
        "OpenBLAS's configuration and the kernel family it picked for this CPU.");
    m.def(
        "build_info",
        [] {
            py::dict info;
            info["version"] = INITSCOPE_VERSION;
            info["compiler"] = std::string(__VERSION__);
            info["cxx_flags"] = std::string(INITSCOPE_CXX_FLAGS);
            info["isa"] = std::string(kernels().isa);
            info["compiled_isas"] = compiled_isas();
            info["supported_isas"] = supported_isas();
            return info;
        },
        "How this module was compiled, and which build of the kernel runs (isa).");

    py::module_ testing = m.def_submodule("testing", "Entry points for tests of the kernel.");
    bind_testing(testing);
}
