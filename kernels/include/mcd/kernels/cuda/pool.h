// 2-D pooling on CUDA: the contracts of kernels/cpu/pool.h (NCHW, contiguous, float and
// double; argmax int64 indices inside each input plane, first on ties, NaN propagating).
// Forward kernels run one thread per output element; backward kernels one thread per input
// element, gathering from the windows that cover it in the CPU's order, so they need no
// atomics and repeat bit for bit. Outputs are overwritten; everything runs on `stream`.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include <mcd/kernels/cpu/pool.h>

namespace mcd::kernels::cuda {

template <class T>
void max_pool2d_forward_cuda(const cpu::Pool2dGeometry& g, const T* x, T* y, std::int64_t* argmax,
                             cudaStream_t stream);
template <class T>
void max_pool2d_backward_cuda(const cpu::Pool2dGeometry& g, const T* dy, const std::int64_t* argmax,
                              T* dx, cudaStream_t stream);
template <class T>
void max_pool2d_gather_cuda(const cpu::Pool2dGeometry& g, const T* v, const std::int64_t* argmax,
                            T* y, cudaStream_t stream);
template <class T>
void avg_pool2d_forward_cuda(const cpu::Pool2dGeometry& g, const T* x, T* y, cudaStream_t stream);
template <class T>
void avg_pool2d_backward_cuda(const cpu::Pool2dGeometry& g, const T* dy, T* dx,
                              cudaStream_t stream);
template <class T>
void adaptive_avg_pool2d_forward_cuda(const cpu::Pool2dGeometry& g, const T* x, T* y,
                                      cudaStream_t stream);
template <class T>
void adaptive_avg_pool2d_backward_cuda(const cpu::Pool2dGeometry& g, const T* dy, T* dx,
                                       cudaStream_t stream);

}  // namespace mcd::kernels::cuda
