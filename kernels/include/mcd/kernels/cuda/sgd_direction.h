// The SGD lookahead direction on CUDA (CPU twin: Sgd::lookahead_direction in
// engine/src/optim/sgd.cpp), the same arithmetic as sgd_step_cuda without writing any state:
//   d0 = g + weight_decay * p; with momentum, b = has_buffer ? momentum * buf +
//   (1 - dampening) * d0 : d0 and d = nesterov ? d0 + momentum * b : b.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include <mcd/kernels/cuda/multi_tensor_optim.h>

namespace mcd::kernels::cuda {

// p, g, out: n elements; buf: n elements, read only with momentum and args.has_buffer.
template <class T>
void sgd_direction_cuda(std::int64_t n, const T* p, const T* g, const T* buf,
                        const SgdStepArgs& args, T* out, cudaStream_t stream);

}  // namespace mcd::kernels::cuda
