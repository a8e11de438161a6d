// Row-major batched GEMM on cuBLAS (column-major): a row-major (M, N) product is the
// column-major (N, M) product c^T = b^T a^T, so cuBLAS gets (b, a) with m and n swapped; a
// row-major operand read column-major is already its transpose, so a transposed operand
// becomes CUBLAS_OP_T. float32 uses CUBLAS_COMPUTE_32F (no TF32) unless TF32 is allowed.
#include <mcd/kernels/cuda/gemm.h>

#include <climits>
#include <string>
#include <type_traits>

#include <mcd/kernels/cuda/check.h>
#include <mcd/kernels/cuda/library_handles.h>

namespace mcd::kernels::cuda {
namespace {

int as_int(std::int64_t v, const char* what) {
  MCD_CUDA_REQUIRE(v >= 0 && v <= INT_MAX, std::string("gemm_batched_cuda: ") + what + " = " +
                                               std::to_string(v) +
                                               " is outside cuBLAS's int range");
  return static_cast<int>(v);
}

}  // namespace

template <class T>
void gemm_batched_cuda(std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k,
                       const GemmOperand<T>& a, const GemmOperand<T>& b, T* c, int device,
                       cudaStream_t stream) {
  if (batch == 0 || m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: cuBLAS's behaviour for k = 0 is not something to rely on
    MCD_CUDA_CHECK(
        cudaMemsetAsync(c, 0, static_cast<std::size_t>(batch * m * n) * sizeof(T), stream));
    return;
  }
  constexpr bool is_float = std::is_same_v<T, float>;
  const cudaDataType_t type = is_float ? CUDA_R_32F : CUDA_R_64F;
  const cublasComputeType_t compute =
      is_float ? (allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F)
               : CUBLAS_COMPUTE_64F;
  const T alpha = 1, beta = 0;
  cublasHandle_t h = cublas_handle(device, stream);
  // Column-major: C' (n x m) = op(B') (n x k) op(A') (k x m), primes being the row-major
  // memory read column-major (B' = b^T when b is row-major).
  const cublasOperation_t op_b = b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  MCD_CUDA_CHECK(cublasGemmStridedBatchedEx(
      h, op_b, op_a, as_int(n, "N"), as_int(m, "M"), as_int(k, "K"), &alpha, b.data, type,
      as_int(b.ld, "ldb"), static_cast<long long>(b.batch_stride), a.data, type,
      as_int(a.ld, "lda"), static_cast<long long>(a.batch_stride), &beta, c, type, as_int(n, "ldc"),
      static_cast<long long>(m * n), as_int(batch, "batch"), compute, CUBLAS_GEMM_DEFAULT));
}

template void gemm_batched_cuda<float>(std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                                       const GemmOperand<float>&, const GemmOperand<float>&, float*,
                                       int, cudaStream_t);
template void gemm_batched_cuda<double>(std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                                        const GemmOperand<double>&, const GemmOperand<double>&,
                                        double*, int, cudaStream_t);

}  // namespace mcd::kernels::cuda
