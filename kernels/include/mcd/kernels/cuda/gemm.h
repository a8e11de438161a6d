// Batched row-major GEMM through cuBLAS (the CUDA twin of kernels/cpu/gemm.h):
// c[i] (M, N) = a[i] (M, K) @ b[i] (K, N) for i < batch, c contiguous. Operands are read in
// place: row-major or transposed, any leading dimension, any batch stride (0 broadcasts).
// float32 products are IEEE float32 unless set_allow_tf32(true) (library_handles.h).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mcd::kernels::cuda {

// Element (r, c) of matrix i is at data[i * batch_stride + r * ld + c], or, when transposed,
// at data[i * batch_stride + c * ld + r].
template <class T>
struct GemmOperand {
  const T* data = nullptr;
  bool transposed = false;
  std::int64_t ld = 1;
  std::int64_t batch_stride = 0;
};

template <class T>
void gemm_batched_cuda(std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k,
                       const GemmOperand<T>& a, const GemmOperand<T>& b, T* c, int device,
                       cudaStream_t stream);

}  // namespace mcd::kernels::cuda
