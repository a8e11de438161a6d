// Run-time choice of the GEMM build (see gemm_impl.cpp).
#include <mcd/kernels/cpu/gemm.h>

namespace mcd::kernels::cpu {

#define MCD_DECLARE_VARIANT(ns)                                                              \
  namespace ns {                                                                             \
  template <class T>                                                                         \
  void gemm(bool, bool, std::int64_t, std::int64_t, std::int64_t, T, const T*, std::int64_t, \
            const T*, std::int64_t, T, T*, std::int64_t);                                    \
  }
MCD_DECLARE_VARIANT(avx512)
MCD_DECLARE_VARIANT(avx2)
MCD_DECLARE_VARIANT(baseline)
#undef MCD_DECLARE_VARIANT

namespace {
enum class Variant { Avx512, Avx2, Baseline };
Variant detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    return Variant::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Variant::Avx2;
#endif
  return Variant::Baseline;
}
const Variant kVariant = detect();
}  // namespace

const char* gemm_variant() {
  switch (kVariant) {
    case Variant::Avx512:
      return "avx512";
    case Variant::Avx2:
      return "avx2";
    default:
      return "baseline";
  }
}

template <class T>
void gemm_cpu(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, T alpha,
              const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C,
              std::int64_t ldc) {
  switch (kVariant) {
    case Variant::Avx512:
      return avx512::gemm<T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    case Variant::Avx2:
      return avx2::gemm<T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    default:
      return baseline::gemm<T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

template void gemm_cpu<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, float,
                              const float*, std::int64_t, const float*, std::int64_t, float, float*,
                              std::int64_t);
template void gemm_cpu<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, double,
                               const double*, std::int64_t, const double*, std::int64_t, double,
                               double*, std::int64_t);

}  // namespace mcd::kernels::cpu
