// The hot code (every header here but kernel.hpp) is compiled once per instruction set, by
// cpp/src/kernels.cpp with -march=<level> and INITSCOPE_ISA=<name>, and each build sits in
// its own inline namespace initscope::isa_<name>. Inline functions and templates of one
// namespace compiled with different flags in different translation units would be merged
// by the linker, which keeps one copy (say, the AVX-512 one) for all callers; namespaces
// keep the builds apart.
#pragma once

#ifndef INITSCOPE_ISA
#error "the kernel headers are compiled per instruction set: include them from kernels.cpp"
#endif

#define INITSCOPE_ISA_CAT_(a, b) a##b
#define INITSCOPE_ISA_CAT(a, b) INITSCOPE_ISA_CAT_(a, b)
/// The namespace of this build's code, e.g. isa_v3.
#define INITSCOPE_ISA_NAMESPACE INITSCOPE_ISA_CAT(isa_, INITSCOPE_ISA)
