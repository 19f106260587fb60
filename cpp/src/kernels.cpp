// One build of the hot code: the layer loop, the generator, the activations and the
// statistics, compiled once per instruction set (CMakeLists.txt sets -march and
// INITSCOPE_ISA), in the namespace initscope::isa_<INITSCOPE_ISA> (isa.hpp). Its only
// export is the table of entry points that dispatch.cpp chooses from.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "initscope/activations.hpp"
#include "initscope/generator.hpp"
#include "initscope/kernel.hpp"
#include "initscope/philox.hpp"
#include "initscope/propagate.hpp"

#define INITSCOPE_STR_(x) #x
#define INITSCOPE_STR(x) INITSCOPE_STR_(x)

namespace initscope {
inline namespace INITSCOPE_ISA_NAMESPACE {

namespace {

template <class T>
void generate_plain(Draw kind, std::uint64_t seed, std::uint32_t stream, std::uint32_t layer,
                    std::uint64_t start, std::size_t count, T* out) {
    generate<T>(kind, seed, stream, layer, start, count, out);
}

template <class T>
void activate_array(ActivationCode code, double param, const T* in, T* out, std::size_t n) {
    activate<T>(code, param, in, out, n);
}

template <class T>
void derive_array(ActivationCode code, double param, const T* in, T* out, std::size_t n) {
    derive<T>(code, param, in, out, n);
}

void philox_block(std::uint32_t (&counter)[4], std::uint32_t k0, std::uint32_t k1) {
    philox4x32(counter, PhiloxKey{k0, k1});
}

}  // namespace

extern const Kernels kernel_table;
const Kernels kernel_table = {
    INITSCOPE_STR(INITSCOPE_ISA),
    {&propagate<float>, &generate_plain<float>, &activate_array<float>, &derive_array<float>},
    {&propagate<double>, &generate_plain<double>, &activate_array<double>, &derive_array<double>},
    &philox_block,
};

}  // namespace INITSCOPE_ISA_NAMESPACE
}  // namespace initscope
