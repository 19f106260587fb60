// initscope._core: the Python face of the C++ kernel. The only file that knows Python:
// it checks and converts arguments holding the GIL, then runs the core without it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "initscope/activations.hpp"
#include "initscope/blas.hpp"
#include "initscope/generator.hpp"
#include "initscope/philox.hpp"
#include "initscope/propagate.hpp"

namespace py = pybind11;
using namespace initscope;

namespace {

#ifndef INITSCOPE_CXX_FLAGS
#define INITSCOPE_CXX_FLAGS ""
#endif

/// True for float32, false for float64; ValueError for anything else.
bool is_float32(const py::object& dtype) {
    const py::dtype dt = py::dtype::from_args(dtype);
    if (dt.kind() == 'f' && dt.itemsize() == 4) return true;
    if (dt.kind() == 'f' && dt.itemsize() == 8) return false;
    throw py::value_error("dtype must be float32 or float64, got " +
                          py::str(py::object(dt)).cast<std::string>());
}

template <class T>
py::array_t<T> draw(Draw kind, std::uint64_t seed, std::uint32_t stream, std::uint32_t layer,
                    std::uint64_t start, std::size_t count) {
    py::array_t<T> out(static_cast<py::ssize_t>(count));
    T* data = out.mutable_data();
    {
        py::gil_scoped_release release;  // safe: writes only into `out`, owned by this call
        generate<T>(kind, seed, stream, layer, start, count, data);
    }
    return out;
}

py::array draw_any(Draw kind, std::uint64_t seed, std::uint32_t stream, std::uint32_t layer,
                   std::uint64_t start, std::size_t count, const py::object& dtype) {
    if (is_float32(dtype)) return draw<float>(kind, seed, stream, layer, start, count);
    return draw<double>(kind, seed, stream, layer, start, count);
}

template <class T>
py::array_t<T> activate_array(int code, double param, const py::array& x) {
    const auto in = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(x);
    if (!in) throw py::value_error("x must be convertible to an array of floats");
    py::array_t<T> out(in.request().shape);
    const ActivationCode act = activation_code(code);
    const T* src = in.data();
    T* dst = out.mutable_data();
    const std::size_t size = static_cast<std::size_t>(in.size());
    {
        py::gil_scoped_release release;  // safe: reads `in` and writes `out`, both held here
        activate(act, param, src, dst, size);
    }
    return out;
}

py::tuple philox(const std::array<std::uint32_t, 4>& counter,
                 const std::array<std::uint32_t, 2>& key) {
    std::uint32_t words[4] = {counter[0], counter[1], counter[2], counter[3]};
    philox4x32(words, PhiloxKey{key[0], key[1]});
    return py::make_tuple(words[0], words[1], words[2], words[3]);
}

template <class T>
py::array_t<std::int64_t> int_array(const std::vector<LayerStats>& stats,
                                    std::int64_t LayerStats::* field) {
    py::array_t<std::int64_t> out(static_cast<py::ssize_t>(stats.size()));
    auto view = out.mutable_unchecked<1>();
    for (std::size_t l = 0; l < stats.size(); ++l) view(l) = stats[l].*field;
    return out;
}

py::array_t<double> vector_array(const std::vector<double>& values) {
    py::array_t<double> out(static_cast<py::ssize_t>(values.size()));
    std::copy(values.begin(), values.end(), out.mutable_data());
    return out;
}

template <class T>
py::dict run(std::uint64_t n_samples, std::size_t input_dim, std::uint64_t seed,
             const py::object& inputs, const py::list& layers, int bins, double hist_low,
             double hist_high, int threads, std::size_t chunk_size, bool keep_activations) {
    using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;
    RunSpec spec;
    spec.n_samples = n_samples;
    spec.input_dim = input_dim;
    spec.seed = seed;
    spec.bins = bins;
    spec.hist_low = hist_low;
    spec.hist_high = hist_high;
    spec.threads = threads;
    spec.chunk_size = chunk_size;

    std::vector<py::array> alive;  // every array the core reads or writes, held until it ends
    if (!inputs.is_none()) {
        Array data = Array::ensure(inputs);
        if (!data || data.ndim() != 2 || static_cast<std::uint64_t>(data.shape(0)) != n_samples ||
            static_cast<std::size_t>(data.shape(1)) != input_dim)
            throw py::value_error("inputs must be an array of shape (n_samples, input_dim)");
        spec.inputs = data.data();
        alive.push_back(data);
    }
    py::list kept;
    for (const py::handle item : layers) {
        const py::dict d = py::reinterpret_borrow<py::dict>(item);
        LayerSpec layer;
        layer.fan_in = d["fan_in"].cast<std::size_t>();
        layer.fan_out = d["fan_out"].cast<std::size_t>();
        layer.activation = activation_code(d["activation"].cast<int>());
        layer.param = d["param"].cast<double>();
        const py::object saturation = d["saturation"];
        if (!saturation.is_none()) {
            const auto range = saturation.cast<std::pair<double, double>>();
            layer.bounded = true;
            layer.sat_low = range.first;
            layer.sat_high = range.second;
        }
        const auto source = d["source"].cast<std::string>();
        if (source == "given") {
            Array w = Array::ensure(d["weights"]);
            if (!w || w.ndim() != 2 || static_cast<std::size_t>(w.shape(0)) != layer.fan_in ||
                static_cast<std::size_t>(w.shape(1)) != layer.fan_out)
                throw py::value_error("weights must be an array of shape (fan_in, fan_out)");
            layer.source = WeightSource::given;
            layer.weights = w.data();
            alive.push_back(w);
        } else if (source == "normal" || source == "uniform") {
            layer.source = source == "normal" ? WeightSource::normal : WeightSource::uniform;
            layer.scale = d["scale"].cast<double>();
            layer.shift = d["shift"].cast<double>();
        } else {
            throw py::value_error("weight source must be given, normal or uniform, got " + source);
        }
        layer.bias_std = d["bias_std"].cast<double>();
        if (keep_activations) {
            py::array_t<T> out(
                {static_cast<py::ssize_t>(n_samples), static_cast<py::ssize_t>(layer.fan_out)});
            layer.kept = out.mutable_data();
            kept.append(out);
        }
        spec.layers.push_back(layer);
    }

    // Runs on the thread that released the GIL; it takes the GIL back only to let Python
    // handle pending signals (Ctrl-C sets KeyboardInterrupt and stops the run).
    const InterruptCheck check = [] {
        py::gil_scoped_acquire acquire;
        return PyErr_CheckSignals() != 0;
    };
    std::vector<LayerStats> stats;
    try {
        py::gil_scoped_release release;  // safe: the core reads and writes only the buffers of
                                         // arrays held in `alive` and `kept`, and its own
        stats = propagate<T>(spec, check);
    } catch (const Interrupted&) {
        throw py::error_already_set();  // the KeyboardInterrupt PyErr_CheckSignals raised
    }

    const std::size_t depth = stats.size();
    py::list unit_mean, unit_m2, pre_unit_mean, pre_unit_m2;
    py::array_t<double> min_values(static_cast<py::ssize_t>(depth));
    py::array_t<double> max_values(static_cast<py::ssize_t>(depth));
    py::array_t<std::int64_t> hist(
        {static_cast<py::ssize_t>(depth), static_cast<py::ssize_t>(bins)});
    auto hist_view = hist.mutable_unchecked<2>();
    for (std::size_t l = 0; l < depth; ++l) {
        const LayerStats& s = stats[l];
        unit_mean.append(vector_array(s.post.mean));
        unit_m2.append(vector_array(s.post.m2));
        pre_unit_mean.append(vector_array(s.pre.mean));
        pre_unit_m2.append(vector_array(s.pre.m2));
        min_values.mutable_at(l) = s.finite_min();
        max_values.mutable_at(l) = s.finite_max();
        for (int b = 0; b < bins; ++b) hist_view(l, b) = s.hist[static_cast<std::size_t>(b)];
    }
    py::dict out;
    out["unit_mean"] = unit_mean;
    out["unit_m2"] = unit_m2;
    out["pre_unit_mean"] = pre_unit_mean;
    out["pre_unit_m2"] = pre_unit_m2;
    out["min"] = min_values;
    out["max"] = max_values;
    out["hist"] = hist;
    out["below"] = int_array<T>(stats, &LayerStats::below);
    out["above"] = int_array<T>(stats, &LayerStats::above);
    out["zeros"] = int_array<T>(stats, &LayerStats::zeros);
    out["saturated"] = int_array<T>(stats, &LayerStats::saturated);
    out["nonfinite"] = int_array<T>(stats, &LayerStats::nonfinite);
    out["pre_nonfinite"] = int_array<T>(stats, &LayerStats::pre_nonfinite);
    out["activations"] = keep_activations ? py::object(kept) : py::object(py::none());
    return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "initscope's C++ kernel: counter-based generator, activations, fused layer loop";

    m.def(
        "propagate",
        [](std::uint64_t n_samples, std::size_t input_dim, std::uint64_t seed,
           const py::object& dtype, const py::object& inputs, const py::list& layers, int bins,
           double hist_low, double hist_high, int threads, std::size_t chunk_size,
           bool keep_activations) -> py::dict {
            if (is_float32(dtype))
                return run<float>(n_samples, input_dim, seed, inputs, layers, bins, hist_low,
                                  hist_high, threads, chunk_size, keep_activations);
            return run<double>(n_samples, input_dim, seed, inputs, layers, bins, hist_low,
                               hist_high, threads, chunk_size, keep_activations);
        },
        py::kw_only(), py::arg("n_samples"), py::arg("input_dim"), py::arg("seed"),
        py::arg("dtype"), py::arg("inputs"), py::arg("layers"), py::arg("bins"),
        py::arg("hist_low"), py::arg("hist_high"), py::arg("threads"), py::arg("chunk_size"),
        py::arg("keep_activations"),
        "Run a checked plan; returns the fields of initscope.result.RawStats as a dict.");

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
    m.def(
        "activate",
        [](int code, double param, const py::array& x) -> py::array {
            if (py::dtype(x.dtype()).kind() == 'f' && x.itemsize() == 4)
                return activate_array<float>(code, param, x);
            return activate_array<double>(code, param, x);
        },
        py::arg("code"), py::arg("param"), py::arg("x"),
        "The activation of kernel code `code` applied to x (float32 stays float32).");
    m.def(
        "blas_info",
        [] {
            py::dict info;
            info["openblas_config"] = blas_config();
            info["openblas_corename"] = blas_corename();
            info["compiler"] = std::string(__VERSION__);
            info["cxx_flags"] = std::string(INITSCOPE_CXX_FLAGS);
#if defined(__AVX2__)
            info["avx2"] = true;
#else
            info["avx2"] = false;
#endif
            return info;
        },
        "OpenBLAS's configuration and core, and how this module was compiled.");
}
