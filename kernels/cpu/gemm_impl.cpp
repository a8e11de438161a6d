// One build of the Eigen GEMM. CMake compiles this file once per instruction-set variant with
// MCD_GEMM_VARIANT set to a namespace name; gemm.cpp picks the variant at run time.
#include <cstdint>

#include <Eigen/Core>

#ifndef MCD_GEMM_VARIANT
#error "MCD_GEMM_VARIANT must name the variant namespace"
#endif

namespace mcd::kernels::cpu::MCD_GEMM_VARIANT {

template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, T alpha,
          const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C,
          std::int64_t ldc) {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  using ConstMap = Eigen::Map<const Mat, Eigen::Unaligned, Stride>;
  Eigen::Map<Mat, Eigen::Unaligned, Stride> c(C, M, N, Stride(ldc));
  if (beta == T(0)) {
    c.setZero();
  } else if (beta != T(1)) {
    c *= beta;
  }
  if (M == 0 || N == 0 || K == 0) return;
  // A stored as (M, K) or, when transposed, as (K, M); likewise B.
  ConstMap a(A, trans_a ? K : M, trans_a ? M : K, Stride(lda));
  ConstMap b(B, trans_b ? N : K, trans_b ? K : N, Stride(ldb));
  if (!trans_a && !trans_b)
    c.noalias() += alpha * a * b;
  else if (trans_a && !trans_b)
    c.noalias() += alpha * a.transpose() * b;
  else if (!trans_a && trans_b)
    c.noalias() += alpha * a * b.transpose();
  else
    c.noalias() += alpha * a.transpose() * b.transpose();
}

template void gemm<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*,
                          std::int64_t, const float*, std::int64_t, float, float*, std::int64_t);
template void gemm<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, double,
                           const double*, std::int64_t, const double*, std::int64_t, double,
                           double*, std::int64_t);

}  // namespace mcd::kernels::cpu::MCD_GEMM_VARIANT
