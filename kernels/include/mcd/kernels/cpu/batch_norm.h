// Batch normalisation CPU kernels over a contiguous (N, C, S) view of the input, S the
// product of the spatial dims; statistics are per channel C over M = N * S elements and are
// accumulated and saved in double. Outputs are overwritten; null optional pointers mean
// "absent" (no affine weight, no tangent, gradient not wanted).
//
// A tail (BatchNormTail) fuses what follows batch norm in a ResNet: y = max(0, bn(x) + r), the
// residual r and the ReLU each optional. The forward adds r to the value it would store (in T,
// as the add op) and applies the relu op's v > 0 ? v : 0, so it equals
// relu(add(batch_norm(x), r)) bit for bit. The VJP and JVP recompute the ReLU mask,
// T(scale * (x - mean) + bias) + r > 0 with scale = weight * invstd, with the forward's
// expression from x, the saved statistics, weight, bias and r: it is the forward's mask
// exactly, and the pre-activation need not be kept.
#pragma once
#include <cstdint>

namespace mcd::kernels::cpu {

struct BatchNormDims {
  std::int64_t n = 0, c = 0, s = 1;  // x is (N, C, S)
};

// What the kernels fuse after the normalisation: y = bn(x) (+ residual) (then max(0, .)).
template <class T>
struct BatchNormTail {
  bool relu = false;
  const T* residual = nullptr;  // (N, C, S) like x, or null
};

// Training forward: batch mean, biased variance and invstd = 1 / sqrt(var + eps) per
// channel, and y = (x - mean) * invstd * weight + bias. mean, var, invstd: (C).
template <class T>
void batch_norm_forward_train_cpu(const BatchNormDims& d, const T* x, const T* weight,
                                  const T* bias, double eps, const BatchNormTail<T>& tail, T* y,
                                  double* mean, double* var, double* invstd);

// Eval forward with given (running) statistics: y = (x - mean) * invstd * weight + bias.
template <class T>
void batch_norm_forward_eval_cpu(const BatchNormDims& d, const T* x, const T* weight, const T* bias,
                                 const double* mean, const double* invstd,
                                 const BatchNormTail<T>& tail, T* y);

// VJP. Training differentiates through the batch statistics:
//   dx = weight * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat));
// eval: dx = dy * weight * invstd. Both: dweight = sum(dy * xhat), dbias = sum(dy).
// dx, dweight, dbias may each be null when not wanted. With tail.relu, dy is first masked by
// the recomputed ReLU mask (bias and the residual are read only then), and the masked dy, the
// residual's gradient, is written to dresidual when that is not null. Without the ReLU the
// residual's gradient is dy itself and dresidual is not written.
template <class T>
void batch_norm_backward_cpu(const BatchNormDims& d, bool training, const BatchNormTail<T>& tail,
                             const T* dy, const T* x, const T* weight, const T* bias,
                             const double* mean, const double* invstd, T* dx, T* dweight, T* dbias,
                             T* dresidual);

// JVP, exact through the batch statistics in training mode:
//   xhat_t = invstd * ((x_t - mean(x_t)) - xhat * mean(xhat * (x_t - mean(x_t))));
// eval: xhat_t = invstd * x_t. Then y_t = weight * xhat_t + weight_t * xhat + bias_t.
// x_t, weight_t, bias_t, residual_t may be null (zero tangent). residual_t is added (in T)
// and with tail.relu the sum is masked by the recomputed ReLU mask (bias and the residual are
// read only then).
template <class T>
void batch_norm_jvp_cpu(const BatchNormDims& d, bool training, const BatchNormTail<T>& tail,
                        const T* x, const T* x_t, const T* weight, const T* bias, const T* weight_t,
                        const T* bias_t, const T* residual_t, const double* mean,
                        const double* invstd, T* y_t);

}  // namespace mcd::kernels::cpu
