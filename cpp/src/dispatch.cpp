// Chooses, once, the build of the hot code (kernels.cpp) that runs: the widest instruction
// set this CPU has among those compiled in, or the one named by INITSCOPE_ISA. Compiled
// for the baseline, like everything outside kernels.cpp.
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "initscope/kernel.hpp"

// CMakeLists.txt defines INITSCOPE_WITH_<isa> for every build of kernels.cpp it links in.
#define INITSCOPE_DECLARE(isa)             \
    namespace initscope {                  \
    inline namespace isa_##isa {           \
        extern const Kernels kernel_table; \
    }                                      \
    }
#if defined(INITSCOPE_WITH_baseline)
INITSCOPE_DECLARE(baseline)
#endif
#if defined(INITSCOPE_WITH_native)
INITSCOPE_DECLARE(native)
#endif
#if defined(INITSCOPE_WITH_v2)
INITSCOPE_DECLARE(v2)
#endif
#if defined(INITSCOPE_WITH_v3)
INITSCOPE_DECLARE(v3)
#endif
#if defined(INITSCOPE_WITH_v4)
INITSCOPE_DECLARE(v4)
#endif

namespace initscope {

namespace {

/// The builds, narrowest first.
const std::vector<const Kernels*>& builds() {
    static const std::vector<const Kernels*> all = {
#if defined(INITSCOPE_WITH_baseline)
        &isa_baseline::kernel_table,
#endif
#if defined(INITSCOPE_WITH_native)
        &isa_native::kernel_table,
#endif
#if defined(INITSCOPE_WITH_v2)
        &isa_v2::kernel_table,
#endif
#if defined(INITSCOPE_WITH_v3)
        &isa_v3::kernel_table,
#endif
#if defined(INITSCOPE_WITH_v4)
        &isa_v4::kernel_table,
#endif
    };
    return all;
}

/// Whether this CPU (and its operating system, which must save the wide registers) runs
/// the build `isa`; the x86-64 microarchitecture levels are those of the psABI.
bool cpu_runs(const std::string& isa) {
    if (isa == "baseline" || isa == "native") return true;
#if defined(__x86_64__) && (defined(__clang__) ? __clang_major__ >= 16 : __GNUC__ >= 12)
    __builtin_cpu_init();
    if (isa == "v2") return __builtin_cpu_supports("x86-64-v2");
    if (isa == "v3") return __builtin_cpu_supports("x86-64-v3");
    if (isa == "v4") return __builtin_cpu_supports("x86-64-v4");
#elif defined(__x86_64__)
    __builtin_cpu_init();
    if (isa == "v2") return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt");
    if (isa == "v3")
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("bmi2");
    if (isa == "v4")
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
    return false;
}

const Kernels* find(const std::string& isa, const char* origin) {
    for (const Kernels* k : builds()) {
        if (isa != k->isa) continue;
        if (!cpu_runs(isa))
            throw std::invalid_argument(std::string(origin) + ": this CPU cannot run the " + isa +
                                        " build");
        return k;
    }
    std::string names;
    for (const Kernels* k : builds()) names += std::string(names.empty() ? "" : ", ") + k->isa;
    throw std::invalid_argument(std::string(origin) + ": no build " + isa + " (builds: " + names +
                                ")");
}

std::atomic<const Kernels*> active{nullptr};

}  // namespace

const Kernels& kernels() {
    if (const Kernels* k = active.load(std::memory_order_acquire)) return *k;
    static std::mutex mutex;
    std::lock_guard<std::mutex> lock(mutex);
    if (const Kernels* k = active.load(std::memory_order_acquire)) return *k;
    const Kernels* chosen = nullptr;
    if (const char* name = std::getenv("INITSCOPE_ISA"); name != nullptr && *name != '\0') {
        chosen = find(name, "INITSCOPE_ISA");
    } else {
        for (const Kernels* k : builds())
            if (cpu_runs(k->isa)) chosen = k;  // the widest: builds are narrowest first
        if (chosen == nullptr) throw std::runtime_error("this CPU runs none of the builds");
    }
    active.store(chosen, std::memory_order_release);
    return *chosen;
}

void select_isa(const std::string& isa) {
    active.store(find(isa, "isa"), std::memory_order_release);
}

std::vector<std::string> compiled_isas() {
    std::vector<std::string> names;
    for (const Kernels* k : builds()) names.emplace_back(k->isa);
    return names;
}

std::vector<std::string> supported_isas() {
    std::vector<std::string> names;
    for (const Kernels* k : builds())
        if (cpu_runs(k->isa)) names.emplace_back(k->isa);
    return names;
}

}  // namespace initscope
