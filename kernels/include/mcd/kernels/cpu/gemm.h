// Row-major GEMM: C = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T.
// A is (M, K) after op, B is (K, N) after op, C is (M, N); ld* are row strides.
// Dispatches at run time to a build for the CPU's widest vector unit (AVX-512, AVX2+FMA or
// the baseline), so one binary runs everywhere and is fast where it can be.
#pragma once
#include <cstdint>

namespace mcd::kernels::cpu {

template <class T>
void gemm_cpu(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, T alpha,
              const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C,
              std::int64_t ldc);

// Name of the variant gemm_cpu runs on this CPU ("avx512", "avx2", "baseline").
const char* gemm_variant();

}  // namespace mcd::kernels::cpu
