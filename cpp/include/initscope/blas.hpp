// The GEMM: OpenBLAS from the scipy-openblas32 wheel (symbols prefixed scipy_), always run
// single-threaded from initscope's own threads.
#pragma once

#include <dlfcn.h>

#include <cblas.h>

#include <cstddef>
#include <mutex>

#include "isa.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace initscope {
inline namespace INITSCOPE_ISA_NAMESPACE {

namespace detail {
#if defined(__SANITIZE_ADDRESS__)
/// Under AddressSanitizer, a check that a row-major rows x cols matrix (leading dimension ld)
/// lies in addressable memory: OpenBLAS is not instrumented, so ASan does not see its reads
/// and writes. The first bad byte is read here, for ASan to report it as usual.
template <class T>
inline void check_matrix(const T* p, int rows, int cols, int ld) {
    if (rows <= 0 || cols <= 0) return;
    const std::size_t bytes = (static_cast<std::size_t>(rows - 1) * static_cast<std::size_t>(ld) +
                               static_cast<std::size_t>(cols)) *
                              sizeof(T);
    if (void* bad = __asan_region_is_poisoned(const_cast<T*>(p), bytes))
        static_cast<void>(*static_cast<volatile const char*>(bad));
}
#else
template <class T>
inline void check_matrix(const T*, int, int, int) {}
#endif

/// Which operand of a GEMM is read transposed.
enum class Op { none, trans_a, trans_b };

template <class T>
inline void check_gemm(Op op, int m, int n, int k, const T* a, int lda, const T* b, int ldb, T* c,
                       int ldc) {
    if (op == Op::trans_a) {
        check_matrix(a, k, m, lda);
    } else {
        check_matrix(a, m, k, lda);
    }
    if (op == Op::trans_b) {
        check_matrix(b, n, k, ldb);
    } else {
        check_matrix(b, k, n, ldb);
    }
    check_matrix(c, m, n, ldc);
}
}  // namespace detail

using detail::Op;

/// Row-major C (m x n, ldc) = op(A) op(B) + beta C, where op(A) is m x k and op(B) k x n:
/// A (m x k, lda) or, with Op::trans_a, A^T for A (k x m); B (k x n, ldb) or, with
/// Op::trans_b, B^T for B (n x k).
inline void gemm(Op op, int m, int n, int k, const double* a, int lda, const double* b, int ldb,
                 double beta, double* c, int ldc) {
    detail::check_gemm(op, m, n, k, a, lda, b, ldb, c, ldc);
    scipy_cblas_dgemm(CblasRowMajor, op == Op::trans_a ? CblasTrans : CblasNoTrans,
                      op == Op::trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0, a, lda, b, ldb,
                      beta, c, ldc);
}

inline void gemm(Op op, int m, int n, int k, const float* a, int lda, const float* b, int ldb,
                 double beta, float* c, int ldc) {
    detail::check_gemm(op, m, n, k, a, lda, b, ldb, c, ldc);
    scipy_cblas_sgemm(CblasRowMajor, op == Op::trans_a ? CblasTrans : CblasNoTrans,
                      op == Op::trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb,
                      static_cast<float>(beta), c, ldc);
}

/// Row-major C (m x n, ldc) = A (m x k, lda) * B (k x n, ldb).
template <class T>
inline void gemm(int m, int n, int k, const T* a, int lda, const T* b, int ldb, T* c, int ldc) {
    gemm(Op::none, m, n, k, a, lda, b, ldb, 0.0, c, ldc);
}

namespace detail {
using SetThreadsLocal = int (*)(int);

/// openblas_set_num_threads_local where this OpenBLAS exports it (declared in cblas.h, but
/// not every build has the symbol), looked up once.
inline SetThreadsLocal set_threads_local() {
    static const SetThreadsLocal fn = reinterpret_cast<SetThreadsLocal>(
        dlsym(RTLD_DEFAULT, "scipy_openblas_set_num_threads_local"));
    return fn;
}
}  // namespace detail

/// Makes GEMM calls from the calling thread run single-threaded: initscope's threads each
/// call their own GEMM, and OpenBLAS's busy-waiting pool would only compete with them.
/// Where this OpenBLAS lacks the thread-local setting, its process-wide thread count is set
/// to 1 (call `prepare_blas` from the thread that starts the run, before the workers).
class SingleThreadedBlas {
public:
    SingleThreadedBlas() {
        if (auto fn = detail::set_threads_local()) previous_ = fn(1);
    }
    ~SingleThreadedBlas() {
        if (auto fn = detail::set_threads_local()) fn(previous_);
    }
    SingleThreadedBlas(const SingleThreadedBlas&) = delete;
    SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

private:
    int previous_ = 1;
};

/// Without the thread-local setting, sets OpenBLAS's process-wide thread count to 1 (this
/// private copy of OpenBLAS serves initscope alone); serialised, as OpenBLAS's setter is
/// not safe to call from several threads at once.
inline void prepare_blas() {
    if (detail::set_threads_local()) return;
    static std::mutex mutex;
    std::lock_guard<std::mutex> lock(mutex);
    if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
}

}  // namespace INITSCOPE_ISA_NAMESPACE
}  // namespace initscope
