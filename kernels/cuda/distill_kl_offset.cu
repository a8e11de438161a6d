// One thread per student walks its B rows in order, as the CPU loop does: K and B are small
// (students x batch), and the sequential double sum, every product and sum rounded on its own
// (never contracted into a fused multiply-add), keeps the result equal to the CPU's.
#include <mcd/kernels/cuda/distill_kl_offset.h>

#include <mcd/kernels/cuda/check.h>

#include "exact_arith.cuh"

namespace mcd::kernels::cuda {
namespace {

template <class T>
__global__ void distill_add_kl_offset_kernel(std::int64_t k, std::int64_t b, const T* offset,
                                             const T* beta, double scale, T* kl, T* loss) {
  const std::int64_t s = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (s >= k) return;
  double extra = 0.0;
  for (std::int64_t i = 0; i < b; ++i) {
    kl[s * b + i] += offset[i];
    extra = exact::add(
        extra, exact::mul(static_cast<double>(beta[s * b + i]), static_cast<double>(offset[i])));
  }
  loss[s] = static_cast<T>(exact::add(static_cast<double>(loss[s]), exact::mul(scale, extra)));
}

}  // namespace

template <class T>
void distill_add_kl_offset_cuda(std::int64_t k, std::int64_t b, const T* offset, const T* beta,
                                double tau, T* kl, T* loss, cudaStream_t stream) {
  if (k == 0) return;
  const double scale = tau * tau / static_cast<double>(b);
  distill_add_kl_offset_kernel<T><<<static_cast<unsigned>((k + 31) / 32), 32, 0, stream>>>(
      k, b, offset, beta, scale, kl, loss);
  MCD_CUDA_CHECK_LAUNCH("distill_add_kl_offset_kernel");
}

template void distill_add_kl_offset_cuda<float>(std::int64_t, std::int64_t, const float*,
                                                const float*, double, float*, float*, cudaStream_t);
template void distill_add_kl_offset_cuda<double>(std::int64_t, std::int64_t, const double*,
                                                 const double*, double, double*, double*,
                                                 cudaStream_t);

}  // namespace mcd::kernels::cuda
