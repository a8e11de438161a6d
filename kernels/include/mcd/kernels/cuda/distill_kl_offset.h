// A teacher mixture's KL offset added to the fused loss's outputs on the device (CPU twin:
// add_kl_offset in distill/src/fused_loss.cpp): kl[s, i] += offset[i] and
// loss[s] += tau^2 / B * sum_i beta[s, i] offset[i], the sum in double in row order.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mcd::kernels::cuda {

// offset (B), beta (K, B), kl (K, B), loss (K): device memory; runs on `stream`.
template <class T>
void distill_add_kl_offset_cuda(std::int64_t k, std::int64_t b, const T* offset, const T* beta,
                                double tau, T* kl, T* loss, cudaStream_t stream);

}  // namespace mcd::kernels::cuda
