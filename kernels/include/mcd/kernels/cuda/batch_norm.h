// Batch normalisation on CUDA: the contracts of kernels/cpu/batch_norm.h (same formulas, the
// same float64 statistics, the same shifted one-pass variance), over a contiguous (N, C, S)
// input. Per-channel sums are block reductions in double, several blocks per channel. Outputs are
// overwritten; null optional pointers mean "absent". Everything runs on `stream`; pointers
// are device memory of the current device.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include <mcd/kernels/cpu/batch_norm.h>

namespace mcd::kernels::cuda {

// tail: the fused relu(batch_norm + residual) of the CPU contract; the VJP and JVP recompute
// the forward's mask from x, mean, invstd, weight, bias and the residual (bias and residual read
// only with the ReLU). dresidual: the masked dy, written only with the ReLU.
template <class T>
void batch_norm_forward_train_cuda(const cpu::BatchNormDims& d, const T* x, const T* weight,
                                   const T* bias, double eps, const cpu::BatchNormTail<T>& tail,
                                   T* y, double* mean, double* var, double* invstd,
                                   cudaStream_t stream);
template <class T>
void batch_norm_forward_eval_cuda(const cpu::BatchNormDims& d, const T* x, const T* weight,
                                  const T* bias, const double* mean, const double* invstd,
                                  const cpu::BatchNormTail<T>& tail, T* y, cudaStream_t stream);
template <class T>
void batch_norm_backward_cuda(const cpu::BatchNormDims& d, bool training,
                              const cpu::BatchNormTail<T>& tail, const T* dy, const T* x,
                              const T* weight, const T* bias, const double* mean,
                              const double* invstd, T* dx, T* dweight, T* dbias, T* dresidual,
                              cudaStream_t stream);
template <class T>
void batch_norm_jvp_cuda(const cpu::BatchNormDims& d, bool training,
                         const cpu::BatchNormTail<T>& tail, const T* x, const T* x_t,
                         const T* weight, const T* bias, const T* weight_t, const T* bias_t,
                         const T* residual_t, const double* mean, const double* invstd, T* y_t,
                         cudaStream_t stream);

// Running statistics R (float or double), c channels at element strides; mean, var, invstd
// double (c). mean = running_mean, invstd = 1 / sqrt(running_var + eps).
template <class R>
void batch_norm_eval_stats_cuda(std::int64_t c, const R* running_mean, std::int64_t mean_stride,
                                const R* running_var, std::int64_t var_stride, double eps,
                                double* mean, double* invstd, cudaStream_t stream);

// running = (1 - momentum) * running + momentum * batch, var unbiased by count / (count - 1).
template <class R>
void batch_norm_update_running_cuda(std::int64_t c, R* running_mean, std::int64_t mean_stride,
                                    R* running_var, std::int64_t var_stride, const double* mean,
                                    const double* var, std::int64_t count, double momentum,
                                    cudaStream_t stream);

}  // namespace mcd::kernels::cuda
