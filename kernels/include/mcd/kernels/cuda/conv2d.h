// 2-D convolution on cuDNN (the CUDA twin of kernels/cpu/conv2d.h, same geometry, NCHW,
// contiguous, float and double). Every call overwrites its output. The algorithm for a
// (geometry, dtype, direction, TF32 setting) is chosen once from cuDNN's heuristics,
// preferring deterministic algorithms, and cached; workspace comes from the caching allocator.
// float32 runs without tensor-op (TF32) math unless set_allow_tf32(true).
#pragma once
#include <cuda_runtime.h>

#include <mcd/kernels/cpu/conv2d.h>

namespace mcd::kernels::cuda {

// y = conv(x, w) + bias; bias (out_channels) may be null.
template <class T>
void conv2d_forward_cuda(const cpu::Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y,
                         int device, cudaStream_t stream);

// dx = conv_transpose(dy, w).
template <class T>
void conv2d_backward_input_cuda(const cpu::Conv2dGeometry& g, const T* dy, const T* w, T* dx,
                                int device, cudaStream_t stream);

// dw = sum over the batch of dy * im2col(x)^T.
template <class T>
void conv2d_backward_weight_cuda(const cpu::Conv2dGeometry& g, const T* x, const T* dy, T* dw,
                                 int device, cudaStream_t stream);

// db[c] = sum over batch and positions of dy[:, c].
template <class T>
void conv2d_backward_bias_cuda(const cpu::Conv2dGeometry& g, const T* dy, T* db, int device,
                               cudaStream_t stream);

}  // namespace mcd::kernels::cuda
