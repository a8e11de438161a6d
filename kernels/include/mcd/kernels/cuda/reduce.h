// Sum and argmax over the middle axis of a contiguous (outer, reduced, inner) array on the
// GPU (CPU twin: kernels/cpu/reduce.cpp). Sums accumulate in double in a fixed order, so
// results are deterministic; argmax returns the first index of the largest element, as the
// CPU. Outputs (outer, inner) are overwritten; launches go to `stream` on the current device.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace mcd::kernels::cuda {

// out = sum over the middle axis (0 where reduced = 0).
template <class T>
void sum_outer_inner_cuda(std::int64_t outer, std::int64_t reduced, std::int64_t inner, const T* in,
                          T* out, cudaStream_t stream);

// reduced > 0.
template <class T>
void argmax_outer_inner_cuda(std::int64_t outer, std::int64_t reduced, std::int64_t inner,
                             const T* in, std::int64_t* out, cudaStream_t stream);

}  // namespace mcd::kernels::cuda
